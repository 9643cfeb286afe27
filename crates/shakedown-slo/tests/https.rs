//! The Prometheus client over https with a CA file and a bearer token, against a TLS server on
//! 127.0.0.1:0 that answers like Prometheus only to the right token.

use bytes::Bytes;
use http_body_util::Full;
use shakedown_model::slo::PrometheusTarget;
use shakedown_slo::{PromError, Prometheus, QueryResult};
use shakedown_testkit::tls::TlsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_ca_file_and_a_bearer_token() {
    let dir = std::env::temp_dir().join(format!("shakedown-slo-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let server = TlsServer::start(|req| async move {
        let authorized = req
            .headers()
            .get("authorization")
            .is_some_and(|v| v == "Bearer s3cret");
        let (status, body) = if authorized {
            (200, r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}"#)
        } else {
            (401, "Unauthorized")
        };
        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        resp
    })
    .await
    .unwrap();
    let (addr, ca) = (server.addr, server.ca_file.clone());

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
