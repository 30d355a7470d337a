//! The durable outbox (`<state_dir>/outbox/`).
//!
//! Every transition is written here first — atomically and fsync'd — and
//! removed only when every sink has confirmed it. Each event is one file,
//! `<announced_ms>-<event_id>.json`; a sink's confirmation is a marker file
//! `<event file>.<sink>.ok`. Names sort by time, so delivery keeps the order
//! of transitions. A crash at any point leaves either the event (delivered
//! again: at least once, with its event ID for consumers to drop
//! duplicates) or nothing left to do.

use std::fs::{self, File};

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::event::TransitionEvent;

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// File-system trouble.
    #[error("outbox {path}: {source}; check that the state directory is writable")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// One pending event.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its file.
    pub path: PathBuf,
    /// The event.
    pub event: TransitionEvent,
    /// Sinks that confirmed it.
    pub confirmed: Vec<String>,
}

/// The outbox of one node.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    sinks: Vec<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn write_durably(dir: &Path, name: &str, body: &[u8]) -> Result<(), OutboxError> {
    let path = dir.join(name);
    crate::fsio::write_atomic(&path, body).map_err(io(&path))
}

impl Outbox {
    /// Open (and create) the outbox for these sinks.
    pub fn open(dir: PathBuf, sinks: Vec<String>) -> Result<Self, OutboxError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        Ok(Outbox { dir, sinks })
    }

    /// The sinks every event must reach.
    pub fn sinks(&self) -> &[String] {
        &self.sinks
    }

    /// Store an event durably.
    pub fn put(&self, ev: &TransitionEvent) -> Result<(), OutboxError> {
        let name = format!("{:013}-{}.json", ev.timings.announced_ms, ev.event_id);
        write_durably(&self.dir, &name, &ev.to_json())
    }

    /// Pending events, oldest first. Unreadable files are moved to
    /// `corrupt/` with an error in the log.
    pub fn pending(&self) -> Result<Vec<Pending>, OutboxError> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let path = self.dir.join(&name);
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| TransitionEvent::parse(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(event) => {
                    let confirmed = self
                        .sinks
                        .iter()
                        .filter(|s| self.marker(&path, s).exists())
                        .cloned()
                        .collect();
                    out.push(Pending {
                        path,
                        event,
                        confirmed,
                    });
                }
                Err(e) => {
                    let corrupt = self.dir.join("corrupt");
                    let _ = fs::create_dir_all(&corrupt);
                    let _ = fs::rename(&path, corrupt.join(&name));
                    tracing::error!(file = %path.display(), "unreadable outbox entry moved to corrupt/: {e}");
                }
            }
        }
        Ok(out)
    }

    /// Number of pending events.
    pub fn count(&self) -> u64 {
        fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.ends_with(".json") && !n.starts_with('.')
                    })
                    .count() as u64
            })
            .unwrap_or(0)
    }

    fn marker(&self, event: &Path, sink: &str) -> PathBuf {
        let mut name = event.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{sink}.ok"));
        self.dir.join(name)
    }

    /// Record that `sink` confirmed `p`; remove the event once every sink
    /// has. Returns true when the event is gone.
    pub fn confirm(&self, p: &Pending, sink: &str) -> Result<bool, OutboxError> {
        let marker = self.marker(&p.path, sink);
        let name = marker
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        write_durably(&self.dir, &name, b"")?;
        let done = self.sinks.iter().all(|s| self.marker(&p.path, s).exists());
        if done {
            fs::remove_file(&p.path).map_err(io(&p.path))?;
            for s in &self.sinks {
                let _ = fs::remove_file(self.marker(&p.path, s));
            }
            sync_dir(&self.dir)?;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{SCHEMA, Timings};
    use crate::layout::Role;

    fn ev(ms: u64) -> TransitionEvent {
        TransitionEvent {
            schema: SCHEMA,
            event_id: uuid::Uuid::new_v4().to_string(),
            fleet: "f".into(),
            role: Role::Backend,
            from_id: 2,
            to_id: 1,
            instance_id: "i-1".into(),
            fenced_instances: vec![],
            vacant: true,
            overlay_addr: "192.168.21.100".parse().unwrap(),
            epoch: 1,
            timings: Timings {
                silent_since_ms: None,
                detected_ms: ms,
                fenced_ms: ms,
                identity_up_ms: ms,
                announced_ms: ms,
            },
        }
    }

    #[test]
    fn events_stay_until_every_sink_confirms_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let sinks = vec!["rabbitmq".to_string(), "cloudwatch".to_string()];
        let ob = Outbox::open(dir.path().join("outbox"), sinks.clone()).unwrap();
        let (a, b) = (ev(2000), ev(1000));
        ob.put(&a).unwrap();
        ob.put(&b).unwrap();
        assert_eq!(ob.count(), 2);
        let p = ob.pending().unwrap();
        assert_eq!(p[0].event, b, "oldest first");
        assert!(!ob.confirm(&p[0], "rabbitmq").unwrap());
        // A restart sees the partial confirmation.
        let ob = Outbox::open(dir.path().join("outbox"), sinks).unwrap();
        let p = ob.pending().unwrap();
        assert_eq!(p[0].confirmed, vec!["rabbitmq".to_string()]);
        assert!(ob.confirm(&p[0], "cloudwatch").unwrap());
        assert_eq!(ob.count(), 1);
        let p = ob.pending().unwrap();
        assert_eq!(p[0].event, a);
        assert!(p[0].confirmed.is_empty());
        // Nothing but the remaining event is left on disk.
        let files: Vec<_> = fs::read_dir(dir.path().join("outbox")).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn corrupt_entries_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(dir.path().to_path_buf(), vec!["x".into()]).unwrap();
        fs::write(dir.path().join("0000000000001-bad.json"), "{").unwrap();
        ob.put(&ev(5)).unwrap();
        assert_eq!(ob.pending().unwrap().len(), 1);
        assert!(dir.path().join("corrupt/0000000000001-bad.json").exists());
    }
}
