//! Toxiproxy compatibility, checked with a client library nobody here wrote: Toxiproxy's Node
//! client (`toxiproxy-node-client`, installed by `scripts/setup.sh` from the lockfile in
//! `tests/toxiproxy-client/`) drives `shakedown toxiproxy` through create → toxic → observed
//! effect → update → refused bad input → down/up → reset → remove (see `drive.js`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn toxiproxy_node_client_drives_shakedown_toxiproxy() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/toxiproxy-client");
    assert!(
        dir.join("node_modules/toxiproxy-node-client").is_dir(),
        "toxiproxy-node-client is not installed: run scripts/setup.sh"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .args([
            "--log",
            "warn",
            "toxiproxy",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seed",
            "5",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shakedown starts");
    let stderr = child.stderr.take().expect("stderr");
    let server = Server(child);
    // A start-up line names the API address (port 0: the kernel chose it); log lines (RUST_LOG)
    // may come first.
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("shakedown toxiproxy printed its address")
            .expect("stderr");
        if let Some(url) = line
            .strip_prefix("shakedown toxiproxy: API on ")
            .and_then(|rest| rest.split_whitespace().next())
        {
            break url.to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let mut node = Command::new("node")
        .arg(dir.join("drive.js"))
        .arg(&url)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (scripts/setup.sh installs it)");
    // Bounded: the script's own waits are a few seconds at most.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while node.try_wait().expect("wait").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the client script hung"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = node.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["ok"], true);
    assert!(report["latency_ms"].as_f64().unwrap() >= 200.0, "{report}");
    assert!(report["updated_ms"].as_f64().unwrap() >= 300.0, "{report}");
    drop(server);
}
