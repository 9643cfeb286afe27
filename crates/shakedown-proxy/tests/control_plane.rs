//! The control path: the fault API, `/config_dump` versions, deadlines, reloads that keep
//! connections and reject bad files, graceful shutdown.

mod fixture;

use std::time::Duration;

use fixture::{Env, eventually};
use http::Method;
use shakedown_proxy::ProxyOptions;

const SEED_000: &str = r#"{"envoy": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
  "abort": {"httpStatus": 503, "percentage": {"numerator": 100, "denominator": "HUNDRED"}}}}"#;

#[tokio::test]
async fn put_creates_then_replaces_and_every_change_bumps_the_version() {
    let env = Env::with_faults("", 1).await;
    let v0 = env.config_version().await;
    let r = env
        .admin_call(Method::PUT, "/faults/seed-000", SEED_000)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v1 = r.json()["version"].as_u64().unwrap();
    assert!(v1 > v0);
    assert_eq!(env.get("/").await.status, 503);

    let r = env
        .admin_call(
            Method::PUT,
            "/faults/seed-000",
            r#"{"abort": {"http_status": 418}}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let v2 = r.json()["version"].as_u64().unwrap();
    assert!(v2 > v1);
    assert_eq!(env.get("/").await.status, 418);

    let dump = env.admin_call(Method::GET, "/config_dump", "").await.json();
    assert_eq!(dump["version"].as_u64(), Some(v2));
    let faults = &dump["configs"][3]["faults"];
    assert_eq!(faults[0]["name"], "seed-000");
    assert_eq!(
        faults[0]["http_fault"]["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    );
    assert_eq!(faults[0]["http_fault"]["abort"]["http_status"], 418);

    let r = env.admin_call(Method::DELETE, "/faults/seed-000", "").await;
    assert_eq!(r.status, 200);
    assert!(r.json()["version"].as_u64().unwrap() > v2);
    assert_eq!(env.get("/").await.status, 200);
}

#[tokio::test]
async fn post_list_get_and_clear() {
    let env = Env::with_faults("", 1).await;
    let r = env
        .admin_call(
            Method::POST,
            "/faults",
            r#"{"name": "a", "delay": {"fixed_delay": "1ms"}}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let r = env
        .admin_call(
            Method::POST,
            "/faults",
            r#"{"name": "a", "delay": {"fixed_delay": "2ms"}}"#,
        )
        .await;
    assert_eq!(r.status, 409);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    env.admin_call(
        Method::POST,
        "/faults",
        "name: b\nabort: {http_status: 500, percentage: 0}\n",
    )
    .await;
    assert_eq!(
        env.admin_call(Method::GET, "/faults", "").await.json()["faults"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        env.admin_call(Method::GET, "/faults/b", "").await.json()["fault"]["form"],
        "native"
    );
    assert_eq!(
        env.admin_call(Method::GET, "/faults/zzz", "").await.status,
        404
    );
    assert_eq!(
        env.admin_call(Method::DELETE, "/faults/zzz", "")
            .await
            .status,
        404
    );
    let r = env.admin_call(Method::DELETE, "/faults", "").await;
    assert_eq!(r.json()["removed"], serde_json::json!(["a", "b"]));
}

#[tokio::test]
async fn bad_bodies_get_400_with_a_reason_and_change_nothing() {
    let env = Env::with_faults("", 1).await;
    env.admin_call(
        Method::PUT,
        "/faults/keep",
        r#"{"abort": {"http_status": 503}}"#,
    )
    .await;
    let before = env.config_version().await;
    let cases = [
        (
            r#"{"abort": {"http_status": 700}}"#,
            "abort.http_status: 700 is not in [200, 600)",
        ),
        (
            r#"{"abort": {"http_status": 503}, "colour": "red"}"#,
            "unknown field `colour`",
        ),
        (
            r#"{"abort": {"http_status": 503"#,
            "request body:2:1: while parsing a flow mapping",
        ),
        (
            r#"{"upstream_cluster": "ghost", "abort": {"http_status": 503}}"#,
            "no cluster named `ghost`",
        ),
        (r#"{"delay": {"fixed_delay": "-1s"}}"#, "negative"),
        (
            r#"{"delay": {"fixed_delay": "1s", "percentage": 150}}"#,
            "outside 0-100",
        ),
        (
            r#"{"name": "other", "abort": {"http_status": 503}}"#,
            "URL names `keep`",
        ),
        (
            r#"{"expires_at": "2001-01-01T00:00:00Z", "abort": {"http_status": 503}}"#,
            "expires in the past",
        ),
    ];
    for (body, reason) in cases {
        let r = env.admin_call(Method::PUT, "/faults/keep", body).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(r.text().contains(reason), "{body}: {}", r.text());
    }
    assert_eq!(env.config_version().await, before, "nothing changed");
    assert_eq!(
        env.get("/").await.status,
        503,
        "the old fault still applies"
    );
}

#[tokio::test]
async fn a_fault_with_a_ttl_dies_on_time_by_itself() {
    let env = Env::with_faults("", 1).await;
    let r = env
        .admin_call(
            Method::PUT,
            "/faults/short",
            r#"{"ttl": "700ms", "abort": {"http_status": 503}}"#,
        )
        .await;
    assert!(r.json()["version"].as_u64().is_some());
    let listed = env
        .admin_call(Method::GET, "/faults/short", "")
        .await
        .json();
    assert!(listed["fault"]["expires_at"].is_string());
    assert_eq!(env.get("/").await.status, 503);
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert_eq!(
        env.get("/").await.status,
        200,
        "expired faults stop applying at once"
    );
    let gone = eventually(Duration::from_secs(5), async || {
        env.admin_call(Method::GET, "/faults/short", "")
            .await
            .status
            == 404
    })
    .await;
    assert!(gone, "the reaper removed it from the config");
}

#[tokio::test]
async fn reloads_reject_bad_files_keep_serving_and_keep_connections() {
    let stub = shakedown_testkit::Stub::start().await.unwrap();
    let dir = fixture::temp_dir("reload");
    let path = dir.join("proxy.yaml");
    let good = fixture::base_config(stub.addr(), 1);
    std::fs::write(&path, &good).unwrap();
    let options = ProxyOptions {
        config_path: Some(path.clone()),
        ..Default::default()
    };
    let env = Env::from_config(stub, &good, options).await;
    assert_eq!(env.get("/").await.status, 200);
    let v0 = env.config_version().await;
    let connections = env.out_metric("envoy_http_downstream_cx_total").await;

    std::fs::write(&path, good.replace("cluster: up\n", "cluster: missing\n")).unwrap();
    let err = env.proxy.reload().await.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "{}:8:18: listeners[0].routes[0].cluster: no cluster named `missing`",
            path.display()
        )),
        "{err}"
    );
    let r = env.admin_call(Method::POST, "/reload", "").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        env.config_version().await,
        v0,
        "a rejected reload changes nothing"
    );
    assert_eq!(
        env.get("/").await.status,
        200,
        "the old config keeps serving"
    );
    let dump = env.admin_call(Method::GET, "/config_dump", "").await.json();
    assert_eq!(dump["configs"][0]["last_reload"]["ok"], false);

    std::fs::write(
        &path,
        format!("{good}faults:\n  - name: f\n    abort: {{http_status: 418}}\n"),
    )
    .unwrap();
    let v1 = env.proxy.reload().await.unwrap();
    assert!(v1 > v0);
    assert_eq!(env.get("/").await.status, 418, "the new config applies");
    assert_eq!(
        env.out_metric("envoy_http_downstream_cx_total").await,
        connections,
        "the keep-alive connection opened before the reloads is still the one in use"
    );
    // A file fault removed from the file goes away; an API fault stays.
    env.admin_call(
        Method::PUT,
        "/faults/api",
        r#"{"delay": {"fixed_delay": "1ms"}}"#,
    )
    .await;
    std::fs::write(&path, &good).unwrap();
    env.proxy.reload().await.unwrap();
    let names: Vec<String> = env.admin_call(Method::GET, "/faults", "").await.json()["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["api"]);
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight_and_refuses_new_ones() {
    let env = Env::with_faults("", 1).await;
    let addr = env.listen();
    let client = env.http1.clone();
    let in_flight = tokio::spawn(async move {
        fixture::send(
            &client,
            Method::GET,
            addr,
            "/?delay_ms=500",
            &[],
            bytes::Bytes::new(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    env.proxy.shutdown().await;
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the request in flight completed");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn server_info_and_ready() {
    let env = Env::with_faults("", 5).await;
    assert_eq!(
        env.admin_call(Method::GET, "/ready", "").await.text(),
        "LIVE\n"
    );
    let info = env.admin_call(Method::GET, "/server_info", "").await.json();
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["seed"], 5);
}
