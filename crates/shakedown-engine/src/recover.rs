//! `shakedown recover`: undoes what a killed run left, from its journal.

use std::path::Path;
use std::time::Duration;

use rustix::process::Signal;

use crate::journal::{self, Undo};
use crate::services;

/// What recovery did.
#[derive(Debug, Default)]
pub struct Recovered {
    /// One line per item.
    pub lines: Vec<String>,
    /// Items that could not be undone.
    pub failures: Vec<String>,
    /// Whether there was a journal at all.
    pub found: bool,
}

/// Reads the journal in `state_dir`, undoes every pending fault and stops every leftover
/// service; the journal is archived when everything is undone.
pub async fn recover(state_dir: &Path) -> Recovered {
    let path = journal::path_in(state_dir);
    let mut out = Recovered::default();
    if !path.exists() {
        out.lines.push(format!(
            "no journal at {}: nothing to recover",
            path.display()
        ));
        return out;
    }
    out.found = true;
    let pending = match journal::read(&path) {
        Ok(p) => p,
        Err(e) => {
            out.failures
                .push(format!("cannot read {}: {e}", path.display()));
            return out;
        }
    };
    if let Some(pid) = pending.pid
        && pid != std::process::id()
        && Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.contains("shakedown") && c.contains("run"))
    {
        out.failures.push(format!(
            "the run that wrote the journal (pid {pid}) is still running; stop it first"
        ));
        return out;
    }
    out.lines.push(format!(
        "journal of {} (pid {}): {} fault(s), {} service(s) pending",
        pending
            .experiment
            .as_deref()
            .unwrap_or("an unknown experiment"),
        pending.pid.map_or("?".into(), |p| p.to_string()),
        pending.faults.len(),
        pending.services.len()
    ));
    for (fault, undo, deadline) in &pending.faults {
        match undo_one(undo).await {
            Ok(how) => out.lines.push(format!(
                "fault {fault}: {how} (its deadline was {deadline})"
            )),
            Err(e) => out.failures.push(format!("fault {fault}: {e}")),
        }
    }
    for (name, pid, ticks) in &pending.services {
        if !services::alive(*pid, *ticks) {
            out.lines
                .push(format!("service {name} (pid {pid}): already gone"));
            continue;
        }
        let _ = services::signal(*pid, *ticks, Signal::CONT);
        let _ = services::signal(*pid, *ticks, Signal::TERM);
        let mut gone = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !services::alive(*pid, *ticks) {
                gone = true;
                break;
            }
        }
        if !gone {
            let _ = services::signal(*pid, *ticks, Signal::KILL);
            tokio::time::sleep(Duration::from_millis(200)).await;
            gone = !services::alive(*pid, *ticks);
        }
        if gone {
            out.lines
                .push(format!("service {name} (pid {pid}): stopped"));
        } else {
            out.failures
                .push(format!("service {name} (pid {pid}): still running"));
        }
    }
    if out.failures.is_empty() {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', "");
        let archived = state_dir.join(format!("journal.recovered-{stamp}.jsonl"));
        match std::fs::rename(&path, &archived) {
            Ok(()) => out
                .lines
                .push(format!("journal cleared (kept as {})", archived.display())),
            Err(e) => out.failures.push(format!("cannot clear the journal: {e}")),
        }
    }
    out
}

async fn undo_one(undo: &Undo) -> Result<String, String> {
    match undo {
        Undo::HttpFault { admin, name } => delete(&format!("{admin}/faults/{name}")).await,
        Undo::Toxic { admin, proxy, name } => {
            delete(&format!("{admin}/proxies/{proxy}/toxics/{name}")).await
        }
        Undo::Process {
            pid,
            start_ticks,
            action,
        } => {
            if action == "pause" && services::alive(*pid, *start_ticks) && services::stopped(*pid) {
                services::signal(*pid, *start_ticks, Signal::CONT).map_err(|e| e.to_string())?;
                Ok(format!("pid {pid} continued (SIGCONT)"))
            } else {
                Ok(format!("{action} of pid {pid}: nothing left to undo"))
            }
        }
    }
}

/// DELETE on a proxy's control API: removed, already gone (its deadline passed), or the proxy
/// itself is gone (an embedded proxy dies with its run, faults and all).
async fn delete(url: &str) -> Result<String, String> {
    match crate::probe::request("DELETE", url, Duration::from_secs(5)).await {
        Ok((200..=299, _)) => Ok(format!("removed ({url})")),
        Ok((404, _)) => Ok(format!("already gone ({url} answered 404)")),
        Ok((status, body)) => Err(format!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        )),
        Err(e)
            if e.contains("onnection refused")
                || e.contains("Connect")
                || e.contains("connect") =>
        {
            Ok(format!(
                "the proxy is gone, and the fault with it ({url}: {e})"
            ))
        }
        Err(e) => Err(format!("{url}: {e}")),
    }
}
