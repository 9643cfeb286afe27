//! Caller-controlled faults (`x-envoy-fault-*`), honoured only where the fault enables them, and
//! gRPC aborts as trailers-only responses over h2c.

mod fixture;

use std::time::Duration;

use bytes::Bytes;
use fixture::{Env, send};
use http::{Method, StatusCode};

const HEADER_FAULT: &str = "  - name: h\n    envoy:\n      abort: {header_abort: {}, percentage: {numerator: 100}}\n      delay: {header_delay: {}, percentage: {numerator: 100}}\n      response_rate_limit: {header_limit: {}, percentage: {numerator: 100}}\n";

#[tokio::test]
async fn abort_headers_follow_envoy() {
    let env = Env::with_faults(HEADER_FAULT, 1).await;
    let abort = |v: &'static str| [("x-envoy-fault-abort-request", v)];
    assert_eq!(env.get_with("/", &abort("418")).await.status, 418);
    assert_eq!(env.get_with("/", &abort("+503")).await.status, 503);
    for ignored in ["700", "199", "abc", "503abc", "", "503, 418"] {
        assert_eq!(
            env.get_with("/", &abort(ignored)).await.status,
            200,
            "{ignored:?} is ignored"
        );
    }
    let r = env
        .get_with(
            "/",
            &[
                ("x-envoy-fault-abort-request", "503"),
                ("x-envoy-fault-abort-request-percentage", "0"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "percentage header 0 turns the abort off");
    let r = env
        .get_with(
            "/",
            &[
                ("x-envoy-fault-abort-request", "503"),
                ("x-envoy-fault-abort-request-percentage", "junk"),
            ],
        )
        .await;
    assert_eq!(
        r.status, 503,
        "an unparsable percentage keeps the configured one"
    );
    assert_eq!(env.get("/").await.status, 200, "no header, no fault");
}

#[tokio::test]
async fn only_the_first_header_value_counts() {
    let env = Env::with_faults(HEADER_FAULT, 1).await;
    let r = env
        .get_with(
            "/",
            &[
                ("x-envoy-fault-abort-request", "418"),
                ("x-envoy-fault-abort-request", "503"),
            ],
        )
        .await;
    assert_eq!(r.status, 418);
}

#[tokio::test]
async fn delay_and_throughput_headers() {
    let env = Env::with_faults(HEADER_FAULT, 1).await;
    let r = env
        .get_with("/", &[("x-envoy-fault-delay-request", "300")])
        .await;
    assert!(
        r.elapsed >= Duration::from_millis(300) && r.elapsed < Duration::from_millis(600),
        "{:?}",
        r.elapsed
    );
    for ignored in ["0", "-5", "soon"] {
        let r = env
            .get_with("/", &[("x-envoy-fault-delay-request", ignored)])
            .await;
        assert!(r.elapsed < Duration::from_millis(200), "{ignored:?}");
    }
    let r = env
        .get_with(
            "/",
            &[
                ("x-envoy-fault-delay-request", "300"),
                ("x-envoy-fault-delay-request-percentage", "0"),
            ],
        )
        .await;
    assert!(r.elapsed < Duration::from_millis(200));
    let r = env
        .get_with(
            "/?size=32768",
            &[("x-envoy-fault-throughput-response", "32")],
        )
        .await;
    assert_eq!(r.body.len(), 32768);
    assert!(r.elapsed >= Duration::from_millis(850), "{:?}", r.elapsed);
    assert_eq!(
        env.out_metric("envoy_http_fault_response_rl_injected")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn headers_do_nothing_where_header_control_is_off() {
    let env = Env::with_faults("  - name: fixed\n    abort: {http_status: 503, percentage: 0}\n    delay: {fixed_delay: 1s, percentage: 0}\n", 1).await;
    let r = env
        .get_with(
            "/",
            &[
                ("x-envoy-fault-abort-request", "418"),
                ("x-envoy-fault-delay-request", "500"),
                ("x-envoy-fault-throughput-response", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.elapsed < Duration::from_millis(300));
    let plain = Env::with_faults("", 1).await;
    assert_eq!(
        plain
            .get_with("/", &[("x-envoy-fault-abort-request", "418")])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn fault_headers_are_forwarded_unchanged() {
    let env = Env::with_faults(HEADER_FAULT, 1).await;
    let r = env
        .get_with(
            "/echo",
            &[
                ("x-envoy-fault-abort-request", "700"),
                ("x-envoy-fault-delay-request", "1"),
            ],
        )
        .await;
    let headers = &r.json()["headers"];
    assert_eq!(headers["x-envoy-fault-abort-request"], "700");
    assert_eq!(headers["x-envoy-fault-delay-request"], "1");
}

async fn grpc(env: &Env, extra: &[(&str, &str)]) -> fixture::Reply {
    let mut headers = vec![("content-type", "application/grpc"), ("te", "trailers")];
    headers.extend_from_slice(extra);
    send(
        &env.h2,
        Method::POST,
        env.listen(),
        "/pkg.Service/Call",
        &headers,
        Bytes::from_static(&[0, 0, 0, 0, 0]),
    )
    .await
}

#[tokio::test]
async fn a_grpc_abort_is_a_trailers_only_response() {
    let env = Env::with_faults("  - name: g\n    abort: {grpc_status: 14}\n", 1).await;
    let r = grpc(&env, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["grpc-status"], "14");
    assert_eq!(r.headers["grpc-message"], "fault filter abort");
    assert_eq!(r.headers["content-type"], "application/grpc");
    assert!(r.body.is_empty(), "no DATA frame");
    assert!(
        r.trailers.is_none(),
        "the status rides on the headers frame that ends the stream"
    );
    assert_eq!(env.stub.requests(), 0);
}

#[tokio::test]
async fn an_http_abort_of_a_grpc_request_is_mapped_to_a_grpc_status() {
    for (http, grpc_status) in [
        (503, "14"),
        (429, "14"),
        (404, "12"),
        (403, "7"),
        (418, "2"),
    ] {
        let env = Env::with_faults(
            &format!("  - name: g\n    abort: {{http_status: {http}}}\n"),
            1,
        )
        .await;
        let r = grpc(&env, &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["grpc-status"], grpc_status, "{http}");
    }
}

#[tokio::test]
async fn a_grpc_abort_over_http1_has_no_body_and_closes_the_connection_like_envoy() {
    let env = Env::with_faults("  - name: g\n    abort: {grpc_status: 14}\n", 1).await;
    let headers = [("content-type", "application/grpc")];
    let r = send(
        &env.http1,
        Method::POST,
        env.listen(),
        "/pkg.Service/Call",
        &headers,
        Bytes::from_static(&[0, 0, 0, 0, 0]),
    )
    .await;
    assert_eq!(
        (
            r.status.as_u16(),
            r.headers["grpc-status"].to_str().unwrap()
        ),
        (200, "14")
    );
    assert!(r.body.is_empty());
    assert_eq!(r.headers["content-length"], "0");
    assert_eq!(r.headers["connection"], "close");
}

#[tokio::test]
async fn grpc_header_abort_and_precedence() {
    let env = Env::with_faults(HEADER_FAULT, 1).await;
    let r = grpc(&env, &[("x-envoy-fault-abort-grpc-request", "4")]).await;
    assert_eq!(
        (
            r.status.as_u16(),
            r.headers["grpc-status"].to_str().unwrap()
        ),
        (200, "4")
    );
    let r = grpc(
        &env,
        &[
            ("x-envoy-fault-abort-grpc-request", "4"),
            ("x-envoy-fault-abort-request", "404"),
        ],
    )
    .await;
    assert_eq!(
        r.headers["grpc-status"], "12",
        "the HTTP header wins, mapped 404 -> UNIMPLEMENTED"
    );
}

#[tokio::test]
async fn grpc_passes_through_with_its_trailers_when_not_faulted() {
    let env = Env::with_faults("", 1).await;
    let r = grpc(&env, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_ref(), &[0, 0, 0, 0, 0]);
    assert_eq!(r.trailers.expect("trailers arrive")["grpc-status"], "0");
    assert_eq!(env.stub.requests(), 1);
}

#[tokio::test]
async fn http2_and_http1_share_the_listener() {
    let env = Env::with_faults("", 1).await;
    let h2 = send(
        &env.h2,
        Method::GET,
        env.listen(),
        "/echo",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        h2.json()["version"],
        "HTTP/2.0",
        "auto protocol keeps HTTP/2 upstream"
    );
    let h1 = env.get("/echo").await;
    assert_eq!(h1.json()["version"], "HTTP/1.1");
    assert_eq!(
        env.out_metric("envoy_http_downstream_rq_http2_total").await,
        Some(1.0)
    );
    assert_eq!(
        env.out_metric("envoy_http_downstream_rq_http1_total").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn raw_h2_shows_end_stream_on_the_headers_frame() {
    let env = Env::with_faults("  - name: g\n    abort: {grpc_status: 14}\n", 1).await;
    let tcp = tokio::net::TcpStream::connect(env.listen()).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}/pkg.Service/Call", env.listen()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "14");
    assert!(
        response.body().is_end_stream(),
        "HEADERS carried END_STREAM: a trailers-only response"
    );
}
