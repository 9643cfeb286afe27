//! The rollback journal: what a run changed and how to undo it, on disk before the change.
//!
//! One JSON line per event in `<state dir>/journal.jsonl`, each appended and `fsync`ed (and the
//! directory too when the file is created) before the change it announces is made. A run that
//! ends cleanly removes the file; one that was killed leaves it, and then `shakedown run`
//! refuses to start until `shakedown recover` has undone what it lists ([`read`] gives the pending changes).

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// File name of the journal inside the state directory.
pub const FILE: &str = "journal.jsonl";

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Entry {
    /// A run began.
    RunStarted {
        /// Experiment name.
        experiment: String,
        /// The run's process id.
        pid: u32,
        /// When.
        at: String,
    },
    /// A service process was started.
    ServiceStarted {
        /// Service name.
        service: String,
        /// Its pid.
        pid: u32,
        /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22), so a recycled
        /// pid is never signalled.
        start_ticks: u64,
    },
    /// A service process is gone.
    ServiceStopped {
        /// Its pid.
        pid: u32,
    },
    /// A fault is about to be applied; `undo` says how to take it back from outside.
    FaultApplying {
        /// Fault name.
        fault: String,
        /// How to undo it.
        undo: Undo,
        /// When the proxy (or the run) removes it by itself.
        deadline: String,
    },
    /// A fault was removed (or found absent).
    FaultRemoved {
        /// Fault name.
        fault: String,
    },
    /// The run finished; every change above is undone.
    RunFinished {
        /// When.
        at: String,
    },
}

/// How to undo one fault from another process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Undo {
    /// `DELETE {admin}/faults/{name}` on a Shakedown proxy.
    HttpFault {
        /// Admin base URL.
        admin: String,
        /// Fault name in the proxy.
        name: String,
    },
    /// `DELETE {admin}/proxies/{proxy}/toxics/{name}` (Toxiproxy API).
    Toxic {
        /// Admin base URL.
        admin: String,
        /// TCP proxy.
        proxy: String,
        /// Toxic name.
        name: String,
    },
    /// A signal was sent to a started service: continue it if paused; the service itself is
    /// undone by its `service-started` entry.
    Process {
        /// Its pid.
        pid: u32,
        /// Start time in ticks.
        start_ticks: u64,
        /// `kill`, `terminate`, `pause`, `restart`.
        action: String,
    },
}

/// What a killed run left behind.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pending {
    /// The experiment, if the journal said.
    pub experiment: Option<String>,
    /// The run's pid.
    pub pid: Option<u32>,
    /// Faults applied and not removed, with their undo and deadline.
    pub faults: Vec<(String, Undo, String)>,
    /// Services started and not stopped: (name, pid, start ticks).
    pub services: Vec<(String, u32, u64)>,
}

impl Pending {
    /// Whether nothing is left to undo.
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty() && self.services.is_empty()
    }
}

/// The journal of one run.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A previous run left changes; `recover` first.
    #[error(
        "a previous run ({}) left a journal at {path}: {} fault(s) and {} service(s) may still be in place; run `shakedown recover` first",
        pending.experiment.as_deref().unwrap_or("unknown experiment"),
        pending.faults.len(),
        pending.services.len()
    )]
    Stale {
        /// The journal.
        path: String,
        /// What it lists.
        pending: Pending,
    },
    /// Disk trouble.
    #[error("journal {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Journal {
    /// Starts the journal of a new run in `dir`; refuses if a previous one is there.
    pub fn begin(dir: &Path, experiment: &str) -> Result<Journal, JournalError> {
        let path = path_in(dir);
        let io = |source| JournalError::Io {
            path: path.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        if path.exists() {
            let pending = read(&path).map_err(io)?;
            return Err(JournalError::Stale {
                path: path.display().to_string(),
                pending,
            });
        }
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        // The new name must survive a crash too.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        let mut j = Journal { path, file };
        j.append(&Entry::RunStarted {
            experiment: experiment.to_owned(),
            pid: std::process::id(),
            at: now(),
        })?;
        Ok(j)
    }

    /// Appends one entry and syncs it to disk before returning.
    pub fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut line = serde_json::to_string(entry).unwrap_or_default();
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    /// Ends a clean run: nothing is left, so the journal goes.
    pub fn finish(mut self) -> Result<(), JournalError> {
        self.append(&Entry::RunFinished { at: now() })?;
        fs::remove_file(&self.path).map_err(|source| JournalError::Io {
            path: self.path.display().to_string(),
            source,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads what a journal file leaves pending (unknown lines are skipped: a torn last line after a
/// crash must not stop recovery).
pub fn read(path: &Path) -> std::io::Result<Pending> {
    let file = File::open(path)?;
    let mut p = Pending::default();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let Ok(entry) = serde_json::from_str::<Entry>(&line) else {
            continue;
        };
        match entry {
            Entry::RunStarted {
                experiment, pid, ..
            } => {
                p.experiment = Some(experiment);
                p.pid = Some(pid);
            }
            Entry::ServiceStarted {
                service,
                pid,
                start_ticks,
            } => p.services.push((service, pid, start_ticks)),
            Entry::ServiceStopped { pid } => p.services.retain(|s| s.1 != pid),
            Entry::FaultApplying {
                fault,
                undo,
                deadline,
            } => {
                p.faults.retain(|f| f.0 != fault);
                p.faults.push((fault, undo, deadline));
            }
            Entry::FaultRemoved { fault } => p.faults.retain(|f| f.0 != fault),
            Entry::RunFinished { .. } => {
                p.faults.clear();
                p.services.clear();
            }
        }
    }
    Ok(p)
}

/// The journal path in a state directory.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// RFC 3339 now.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_run_leaves_what_it_did_not_undo() {
        let dir = std::env::temp_dir().join(format!("shakedown-journal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut j = Journal::begin(&dir, "exp").unwrap();
        let undo = Undo::HttpFault {
            admin: "http://127.0.0.1:0".into(),
            name: "f".into(),
        };
        for e in [
            Entry::ServiceStarted {
                service: "s".into(),
                pid: 10,
                start_ticks: 5,
            },
            Entry::FaultApplying {
                fault: "f".into(),
                undo: undo.clone(),
                deadline: "x".into(),
            },
            Entry::FaultApplying {
                fault: "g".into(),
                undo: undo.clone(),
                deadline: "x".into(),
            },
            Entry::FaultRemoved { fault: "g".into() },
        ] {
            j.append(&e).unwrap();
        }
        drop(j);
        // A torn last line is skipped.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(FILE))
            .unwrap();
        f.write_all(b"{\"event\": \"fault-rem").unwrap();
        let err = Journal::begin(&dir, "exp").unwrap_err();
        let JournalError::Stale { pending, .. } = err else {
            panic!("stale expected")
        };
        assert_eq!(pending.faults, vec![("f".into(), undo, "x".into())]);
        assert_eq!(pending.services, vec![("s".into(), 10, 5)]);
        assert_eq!(pending.experiment.as_deref(), Some("exp"));
        fs::remove_dir_all(&dir).unwrap();
        let j = Journal::begin(&dir, "exp").unwrap();
        j.finish().unwrap();
        assert!(!dir.join(FILE).exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
