//! https through rustls against a TLS server on 127.0.0.1:0 with a certificate made for the
//! test: trusted through `ca_file`, refused without it, accepted with `insecure`; HTTP/2 chosen
//! by ALPN unless `http1` is asked for.

use bytes::Bytes;
use http_body_util::Full;
use shakedown_load::{Report, RunOptions, run};
use shakedown_model::LoadSpec;
use shakedown_testkit::tls::TlsServer;

/// A server that answers every request with the HTTP version it was made in.
async fn tls_server() -> TlsServer {
    TlsServer::start(|req| async move {
        hyper::Response::new(Full::new(Bytes::from(format!("{:?}", req.version()))))
    })
    .await
    .unwrap()
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
}

#[tokio::test]
async fn an_unreadable_ca_file_is_an_error_before_any_request() {
    // A port nothing listens on: the run must stop at the CA file, before any connection.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = LoadSpec::load(
        "tls.yaml",
        &format!("target: https://127.0.0.1:{port}/\nscenario: {{executor: constant-vus, vus: 1, duration: 1s}}\nhttp: {{ca_file: /nonexistent/ca.pem}}\n"),
    )
    .unwrap();
    let err = run(&spec, RunOptions::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}
