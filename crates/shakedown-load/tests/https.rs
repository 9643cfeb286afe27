//! https through rustls against a TLS server on 127.0.0.1:0 with a certificate made for the
//! test: trusted through `ca_file`, refused without it, accepted with `insecure`; HTTP/2 chosen
//! by ALPN unless `http1` is asked for.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use shakedown_load::{Report, RunOptions, run};
use shakedown_model::LoadSpec;
use tokio::net::TcpListener;

struct TlsServer {
    addr: std::net::SocketAddr,
    ca_file: std::path::PathBuf,
}

/// A server that answers every request with the HTTP version it was made in.
async fn tls_server() -> TlsServer {
    let key =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let ca_file = std::env::temp_dir().join(format!(
        "shakedown-load-test-{}-{}.pem",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&ca_file, key.cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(key.cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let v = format!("{:?}", req.version());
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(v))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsServer { addr, ca_file }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn load(server: &TlsServer, http: &str, body: &str) -> Report {
    let yaml = format!(
        "target: https://{}/\nscenario: {{executor: constant-vus, vus: 2, duration: 300ms}}\nhttp: {http}\nchecks: [{{name: version, body_contains: '{body}'}}]\n",
        server.addr
    );
    let spec = LoadSpec::load("tls.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    run(&spec, RunOptions::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_verifies_the_certificate_and_negotiates_http2() {
    let server = tls_server().await;
    let ca = server.ca_file.display().to_string();

    let h2 = load(&server, &format!("{{ca_file: '{ca}'}}"), "HTTP/2.0").await;
    assert!(h2.samples.http_reqs > 10);
    assert_eq!(h2.samples.failed.trues, 0, "{:?}", h2.samples.errors);
    assert_eq!(
        h2.samples.checks.trues, h2.samples.checks.total,
        "ALPN picked h2"
    );
    assert!(
        h2.samples.data_received > 1000,
        "TLS bytes on the wire are counted"
    );

    let h1 = load(
        &server,
        &format!("{{ca_file: '{ca}', version: http1}}"),
        "HTTP/1.1",
    )
    .await;
    assert_eq!(h1.samples.failed.trues, 0, "{:?}", h1.samples.errors);
    assert_eq!(h1.samples.checks.trues, h1.samples.checks.total);

    let untrusted = load(&server, "{}", "HTTP").await;
    assert_eq!(untrusted.samples.failed.trues, untrusted.samples.http_reqs);
    assert_eq!(
        untrusted.samples.errors.get("tls"),
        Some(&untrusted.samples.http_reqs)
    );

    let insecure = load(&server, "{insecure: true}", "HTTP/2.0").await;
    assert_eq!(insecure.samples.failed.trues, 0);
    let _ = std::fs::remove_file(&server.ca_file);
}

#[tokio::test]
async fn an_unreadable_ca_file_is_an_error_before_any_request() {
    let spec = LoadSpec::load(
        "tls.yaml",
        "target: https://127.0.0.1:1/\nscenario: {executor: constant-vus, vus: 1, duration: 1s}\nhttp: {ca_file: /nonexistent/ca.pem}\n",
    )
    .unwrap();
    let err = run(&spec, RunOptions::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}
