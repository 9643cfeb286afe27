//! JSON-lines access log with Envoy's response flags.
//!
//! The data path formats one line and hands it to a writer task with `try_send`; it never waits
//! on the disk. When the writer falls behind, lines are dropped and counted
//! (`shakedown_access_log_dropped`) rather than slowing requests.

use std::path::PathBuf;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::ctx::FailureSource;
use crate::metrics::{Counter, Registry};

/// One line of the log.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339 with milliseconds.
    pub start_time: String,
    /// Listener name.
    pub listener: &'a str,
    /// Route name (`-` if none matched).
    pub route: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path with query.
    pub path: &'a str,
    /// `:authority` / Host.
    pub authority: &'a str,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'a str,
    /// Status sent.
    pub response_code: u16,
    /// Envoy's `%RESPONSE_FLAGS%`: `FI`, `DI`, `UF`, `UT`, `URX`, `NR`, … or `-`.
    pub response_flags: String,
    /// `injected`, `upstream`, `local` or `none`.
    pub failure_source: FailureSource,
    /// Cluster name.
    pub upstream_cluster: &'a str,
    /// Endpoint tried last.
    pub upstream_host: &'a str,
    /// First byte in to last byte out.
    pub duration_ms: f64,
}

/// A handle to the writer task.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<String>,
    dropped: Counter,
}

impl AccessLog {
    /// Starts a writer appending to `path` (`-` = standard output).
    pub async fn start(path: &str, registry: &Registry) -> std::io::Result<Self> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = if path == "-" {
            Box::new(tokio::io::stdout())
        } else {
            Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(PathBuf::from(path))
                    .await?,
            )
        };
        let (tx, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(write_lines(rx, BufWriter::new(out)));
        Ok(Self {
            tx,
            dropped: registry.counter(
                "shakedown_access_log_dropped",
                "Access log lines dropped because the writer fell behind",
                &[],
            ),
        })
    }

    /// Queues one entry.
    pub fn log(&self, entry: &Entry<'_>) {
        match serde_json::to_string(entry) {
            Ok(mut line) => {
                line.push('\n');
                if self.tx.try_send(line).is_err() {
                    self.dropped.inc();
                }
            }
            Err(e) => tracing::warn!("access log entry not serialisable: {e}"),
        }
    }
}

async fn write_lines(
    mut rx: mpsc::Receiver<String>,
    mut out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
) {
    while let Some(line) = rx.recv().await {
        let mut ok = out.write_all(line.as_bytes()).await.is_ok();
        // Drain what is already queued, then flush once.
        while let Ok(line) = rx.try_recv() {
            ok &= out.write_all(line.as_bytes()).await.is_ok();
        }
        ok &= out.flush().await.is_ok();
        if !ok {
            tracing::warn!("access log write failed");
        }
    }
}
