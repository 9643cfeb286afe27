//! Services the experiment starts: processes with their output in log files, readiness
//! probes, the signals of process faults, and stopping them.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use shakedown_model::experiment::{Service, ServiceKind};
use tokio::process::{Child, Command};

/// A running service process.
#[derive(Debug)]
pub struct Running {
    /// The service.
    pub service: Service,
    /// The child (None once it exited and was reaped).
    pub child: Option<Child>,
    /// Its pid.
    pub pid: u32,
    /// Its start time in ticks since boot.
    pub start_ticks: u64,
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Spawning failed.
    #[error("service `{name}`: cannot start `{command}`: {source}")]
    Spawn {
        /// Service.
        name: String,
        /// Program.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// It did not become ready.
    #[error("service `{name}` was not ready within {timeout:?}: {why} (its output: {log})")]
    NotReady {
        /// Service.
        name: String,
        /// Allowed.
        timeout: Duration,
        /// Last failure.
        why: String,
        /// Log file.
        log: String,
    },
}

/// Starts a service process (`shakedown` means this very binary), output to `logs/<name>.log`.
pub fn spawn(service: &Service, logs: &Path) -> Result<Running, ServiceError> {
    let ServiceKind::Process { command, args, env } = &service.kind else {
        unreachable!("only process services are spawned");
    };
    let program = if command == "shakedown" {
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| command.clone())
    } else {
        command.clone()
    };
    let err = |source| ServiceError::Spawn {
        name: service.name.clone(),
        command: program.clone(),
        source,
    };
    std::fs::create_dir_all(logs).map_err(err)?;
    let log = std::fs::File::create(logs.join(format!("{}.log", service.name))).map_err(err)?;
    let log2 = log.try_clone().map_err(err)?;
    let child = Command::new(&program)
        .args(args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Its own process group: a Ctrl-C at the terminal reaches the run, which stops the
        // services itself, after rolling back.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(err)?;
    let pid = child.id().unwrap_or(0);
    Ok(Running {
        service: service.clone(),
        child: Some(child),
        pid,
        start_ticks: start_ticks(pid).unwrap_or(0),
    })
}

/// Waits until the service answers: its HTTP readiness path with a 2xx, or a TCP connect.
pub async fn wait_ready(service: &Service, log: &Path) -> Result<(), ServiceError> {
    let deadline = Instant::now() + service.ready_timeout;
    let mut why = String::from("not tried");
    while Instant::now() < deadline {
        let ok = match &service.ready_http {
            Some(path) => {
                let url = format!("http://{}{}", service.address, path);
                match crate::probe::http_get(&url, Duration::from_secs(1)).await {
                    Ok((status, _)) if (200..300).contains(&status) => true,
                    Ok((status, _)) => {
                        why = format!("{url} answered {status}");
                        false
                    }
                    Err(e) => {
                        why = format!("{url}: {e}");
                        false
                    }
                }
            }
            None => match tokio::net::TcpStream::connect(service.address.as_str()).await {
                Ok(_) => true,
                Err(e) => {
                    why = format!("connect {}: {e}", service.address);
                    false
                }
            },
        };
        if ok {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(ServiceError::NotReady {
        name: service.name.clone(),
        timeout: service.ready_timeout,
        why,
        log: log.display().to_string(),
    })
}

/// Sends a signal, only if `pid` is still the process that was started (same start time).
pub fn signal(pid: u32, start: u64, sig: Signal) -> std::io::Result<bool> {
    if start_ticks(pid) != Some(start) {
        return Ok(false);
    }
    let pid = Pid::from_raw(pid as i32).ok_or(std::io::ErrorKind::InvalidInput)?;
    kill_process(pid, sig)?;
    Ok(true)
}

/// Whether `pid` runs and is the process started at `start`.
pub fn alive(pid: u32, start: u64) -> bool {
    start_ticks(pid) == Some(start) && state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Whether it is stopped (SIGSTOP).
pub fn stopped(pid: u32) -> bool {
    state(pid).is_some_and(|s| s == 'T' || s == 't')
}

/// Stops a running service: SIGCONT (a paused one must be able to die), SIGTERM, and SIGKILL
/// after `grace`.
pub async fn stop(r: &mut Running, grace: Duration) {
    let Some(child) = r.child.as_mut() else {
        return;
    };
    let _ = signal(r.pid, r.start_ticks, Signal::CONT);
    let _ = signal(r.pid, r.start_ticks, Signal::TERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
    r.child = None;
}

fn stat(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// `/proc/PID/stat` field 22 (after the parenthesized command, which may hold spaces).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let s = stat(pid)?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn state(pid: u32) -> Option<char> {
    let s = stat(pid)?;
    s[s.rfind(')')? + 2..].chars().next()
}
