//! The durable outbox (`<state_dir>/outbox/`).
//!
//! Every transition, and every alert a daemon raises, is written here first
//! — atomically and fsync'd — and removed only when every sink has
//! confirmed it. Each is one file, `<announced_ms>-<event_id>.json` or
//! `<at_ms>-<alert_id>.alert.json`; a sink's confirmation is a marker file
//! `<event file>.<sink>.ok`. Names sort by time, so delivery keeps the order
//! of transitions. A crash at any point leaves either the event (delivered
//! again: at least once, with its event ID for consumers to drop
//! duplicates) or nothing left to do.

use std::fs::{self, File};

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::event::{Alert, Outgoing, TransitionEvent};

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

/// What an outbox entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A transition.
    Transition(TransitionEvent),
    /// An alert.
    Alert(Alert),
}

impl Entry {
    /// Its unique ID (event or alert ID), for the log.
    pub fn id(&self) -> &str {
        Outgoing::from(self).id()
    }
}

impl<'a> From<&'a Entry> for Outgoing<'a> {
    fn from(e: &'a Entry) -> Self {
        match e {
            Entry::Transition(ev) => Outgoing::Transition(ev),
            Entry::Alert(a) => Outgoing::Alert(a),
        }
    }
}

/// Suffix of an alert's file.
const ALERT_SUFFIX: &str = ".alert.json";

/// One pending entry.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its file.
    pub path: PathBuf,
    /// The transition or alert.
    pub entry: Entry,
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

    /// Store an alert durably.
    pub fn put_alert(&self, a: &Alert) -> Result<(), OutboxError> {
        let name = format!("{:013}-{}{ALERT_SUFFIX}", a.at_ms, a.alert_id);
        write_durably(&self.dir, &name, &a.to_json())
    }

    /// Pending entries, oldest first. Unreadable files are moved to
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
            let parsed = fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
                if name.ends_with(ALERT_SUFFIX) {
                    Alert::parse(&b).map(Entry::Alert)
                } else {
                    TransitionEvent::parse(&b).map(Entry::Transition)
                }
                .map_err(|e| e.to_string())
            });
            match parsed {
                Ok(entry) => {
                    let confirmed = self
                        .sinks
                        .iter()
                        .filter(|s| self.marker(&path, s).exists())
                        .cloned()
                        .collect();
                    out.push(Pending {
                        path,
                        entry,
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
        assert_eq!(p[0].entry, Entry::Transition(b), "oldest first");
        assert!(!ob.confirm(&p[0], "rabbitmq").unwrap());
        // A restart sees the partial confirmation.
        let ob = Outbox::open(dir.path().join("outbox"), sinks).unwrap();
        let p = ob.pending().unwrap();
        assert_eq!(p[0].confirmed, vec!["rabbitmq".to_string()]);
        assert!(ob.confirm(&p[0], "cloudwatch").unwrap());
        assert_eq!(ob.count(), 1);
        let p = ob.pending().unwrap();
        assert_eq!(p[0].entry, Entry::Transition(a));
        assert!(p[0].confirmed.is_empty());
        // Nothing but the remaining event is left on disk.
        let files: Vec<_> = fs::read_dir(dir.path().join("outbox")).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    fn alert(at_ms: u64, kind: &str) -> Alert {
        Alert {
            alert_id: uuid::Uuid::new_v4().to_string(),
            kind: kind.into(),
            fleet: "f".into(),
            node: "frontend3".into(),
            instance_id: "i-0123456789abcdef0".into(),
            slot: "frontend2".into(),
            attempt: Some(1),
            detail: "StopInstances denied".into(),
            at_ms,
        }
    }

    #[test]
    fn alerts_queue_with_transitions_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(dir.path().to_path_buf(), vec!["x".into()]).unwrap();
        let (early, late) = (alert(1000, "fence_failed"), alert(3000, "rejoin"));
        let between = ev(2000);
        ob.put_alert(&late).unwrap();
        ob.put(&between).unwrap();
        ob.put_alert(&early).unwrap();
        let p = ob.pending().unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].entry, Entry::Alert(early.clone()));
        assert_eq!(p[1].entry, Entry::Transition(between));
        assert_eq!(p[2].entry, Entry::Alert(late));
        assert_eq!(p[0].entry.id(), early.alert_id);
        assert!(ob.confirm(&p[0], "x").unwrap());
        assert_eq!(ob.count(), 2);
        // An alert file of an unknown kind is damaged: set aside.
        let mut odd = alert(500, "fence_failed");
        odd.kind = "made_up".into();
        fs::write(
            dir.path()
                .join(format!("0000000000500-{}.alert.json", odd.alert_id)),
            odd.to_json(),
        )
        .unwrap();
        assert_eq!(ob.pending().unwrap().len(), 2);
        assert_eq!(fs::read_dir(dir.path().join("corrupt")).unwrap().count(), 1);
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
