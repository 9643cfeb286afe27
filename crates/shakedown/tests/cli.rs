//! Black-box tests of the `shakedown` binary: exit codes, error messages, signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shakedown"))
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shakedown-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = "\
admin: {address: 127.0.0.1:0}
listeners:
  - name: out
    address: 127.0.0.1:0
    routes:
      - match: {prefix: /}
        cluster: up
clusters:
  - name: up
    endpoints: [127.0.0.1:9]
";

#[test]
fn validate_accepts_a_good_file() {
    let path = temp_file("good", GOOD);
    let out = bin().arg("validate").arg(&path).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK (1 listeners, 1 clusters, 0 faults)")
    );
}

#[test]
fn validate_names_file_line_and_column_and_exits_4() {
    let bad = GOOD
        .replace("cluster: up", "cluster: down")
        .replace("[127.0.0.1:9]", "[nowhere]");
    let path = temp_file("bad", &bad);
    let out = bin().arg("validate").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    assert!(
        err.contains(&format!(
            "{p}:7:18: listeners[0].routes[0].cluster: no cluster named `down`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:10:17: clusters[0].endpoints[0]: `nowhere` is not host:port"
        )),
        "{err}"
    );
}

#[test]
fn proxy_refuses_an_invalid_file_with_exit_4() {
    let path = temp_file("refuse", "listeners: 3\n");
    let out = bin()
        .arg("proxy")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":1:12: listeners: invalid type"));
}

/// A minimal HTTP/1.1 GET returning the status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

fn json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (_, body) = get(addr, path);
    // `Connection: close` responses from hyper are not chunked for fixed bodies.
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn proxy_reloads_on_sighup_rejects_bad_files_and_drains_on_sigterm() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in upstream.incoming().flatten().take(64) {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                );
            });
        }
    });
    let config = GOOD.replace("127.0.0.1:9", &upstream_addr.to_string());
    let path = temp_file("signals", &config);
    let mut child = bin()
        .arg("proxy")
        .arg("--config")
        .arg(&path)
        .arg("--seed")
        .arg("1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let admin: SocketAddr = {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut line = String::new();
        loop {
            line.clear();
            assert!(Instant::now() < deadline, "no admin line");
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("proxy exited early");
            }
            if let Some(rest) = line.split("admin on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
    };
    std::thread::spawn(move || for _ in stderr.lines() {});

    let dump = json(admin, "/config_dump");
    let listen: SocketAddr = dump["configs"][2]["listeners"][0]["bound_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let v0 = dump["version"].as_u64().unwrap();
    assert_eq!(get(listen, "/").0, 200);

    // A broken file is rejected on SIGHUP; the old config keeps serving.
    std::fs::write(&path, "listeners:\n  - name: out\n    address: nope\n").unwrap();
    signal(&child, "HUP");
    let rejected = wait_for(|| {
        let d = json(admin, "/config_dump");
        d["configs"][0]["last_reload"]["ok"] == false
    });
    assert!(rejected, "reload result never reported");
    let d = json(admin, "/config_dump");
    let err = d["configs"][0]["last_reload"]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.contains(&format!("{}:3:14: listeners[0].address", path.display())),
        "{err}"
    );
    assert_eq!(
        d["version"].as_u64().unwrap(),
        v0,
        "a rejected reload changes nothing"
    );
    assert_eq!(get(listen, "/").0, 200);

    // A good file with a fault is applied on SIGHUP.
    let with_fault = format!("{config}faults:\n  - name: f\n    abort: {{http_status: 418}}\n");
    std::fs::write(&path, with_fault).unwrap();
    signal(&child, "HUP");
    assert!(wait_for(|| json(admin, "/config_dump")["version"]
        .as_u64()
        .unwrap()
        > v0));
    let (status, body) = get(listen, "/");
    assert_eq!((status, body.as_str()), (418, "fault filter abort"));

    signal(&child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "proxy did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn proxy_with_watch_reloads_when_the_file_changes() {
    let path = temp_file("watch", GOOD);
    let mut child = bin()
        .arg("proxy")
        .arg("--config")
        .arg(&path)
        .arg("--watch")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let admin: SocketAddr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "proxy exited early"
        );
        if let Some(rest) = line.split("admin on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in stderr.lines() {});
    let v0 = json(admin, "/config_dump")["version"].as_u64().unwrap();
    std::fs::write(
        &path,
        format!("{GOOD}faults:\n  - name: watched\n    delay: {{fixed_delay: 1ms}}\n"),
    )
    .unwrap();
    let applied = wait_for(|| {
        let d = json(admin, "/config_dump");
        d["version"].as_u64().unwrap() > v0 && d["configs"][3]["faults"][0]["name"] == "watched"
    });
    signal(&child, "TERM");
    let _ = child.wait();
    assert!(applied, "--watch picked up the change");
}

#[test]
fn a_bad_toxic_in_a_config_file_is_named_with_its_line() {
    let dir = std::env::temp_dir().join(format!("shakedown-cli-toxic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tcp.yaml");
    // Never started: an ephemeral port this test holds, never a fixed one.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = held.local_addr().unwrap();
    std::fs::write(
        &path,
        format!("tcp_proxies:\n  - name: db\n    upstream: {upstream}\n    toxics:\n      - {{type: latency, attributes: {{latency: -5}}}}\n      - {{type: lag}}\n      - {{type: bandwidth, toxicity: 2, attributes: {{rte: 1}}}}\n"),
    )
    .unwrap();
    let out = bin().arg("validate").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "tcp.yaml:5:",
        "tcp_proxies[0].toxics[0].attributes.latency: must not be negative",
        "tcp.yaml:6:",
        "tcp_proxies[0].toxics[1].type: invalid toxic type `lag`",
        "tcp_proxies[0].toxics[2].toxicity: 2 is not a probability",
        "tcp_proxies[0].toxics[2].attributes.rte: unknown attribute",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_example_file_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        for file in std::fs::read_dir(entry.path()).unwrap().flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let out = bin().arg("validate").arg(&path).output().unwrap();
                assert!(out.status.success(), "{}: {out:?}", path.display());
                seen += 1;
            }
        }
    }
    assert!(seen >= 3, "examples found: {seen}");
}
