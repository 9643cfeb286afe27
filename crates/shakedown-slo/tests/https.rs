//! The Prometheus client over https with a CA file and a bearer token, against a TLS server on
//! 127.0.0.1:0 that answers like Prometheus only to the right token.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use shakedown_model::slo::PrometheusTarget;
use shakedown_slo::{PromError, Prometheus, QueryResult};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_ca_file_and_a_bearer_token() {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("shakedown-slo-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, token) = (dir.join("ca.pem"), dir.join("token"));
    std::fs::write(&ca, key.cert.pem()).unwrap();
    std::fs::write(&token, "s3cret\n").unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(key.cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let authorized = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v == "Bearer s3cret");
                    let (status, body) = if authorized {
                        (
                            200,
                            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}"#,
                        )
                    } else {
                        (401, "Unauthorized")
                    };
                    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });

    let target = |bearer: bool, ca_file: bool| PrometheusTarget {
        url: format!("https://{addr}").parse().unwrap(),
        timeout: std::time::Duration::from_secs(5),
        retries: 0,
        bearer_token_file: bearer.then(|| token.display().to_string()),
        ca_file: ca_file.then(|| ca.display().to_string()),
        basic_auth: None,
    };
    let ok = Prometheus::new(&target(true, true))
        .unwrap()
        .query("up", None)
        .await
        .unwrap();
    assert_eq!(
        ok,
        QueryResult::Vector(vec![(Default::default(), 1.0, 0.25)])
    );
    let denied = Prometheus::new(&target(false, true))
        .unwrap()
        .query("up", None)
        .await
        .unwrap_err();
    assert_eq!(
        denied,
        PromError::Http {
            status: 401,
            message: "Unauthorized".into()
        }
    );
    let untrusted = Prometheus::new(&target(true, false))
        .unwrap()
        .query("up", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&untrusted, PromError::Unreachable { reason, .. } if reason.contains("certificate")),
        "{untrusted:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
