//! The worker's logic: which events to apply (at most once, in epoch order)
//! and running the Ansible playbook for one.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::config::WorkerConfig;
use crate::event::TransitionEvent;
use crate::layout::Role;
use crate::shell::aws::ec2::BackendView;

/// What a playbook prints (in a `debug` task's message) for a server it
/// quarantined: a rejoining server with errant transactions, left read-only
/// and out of replication. The worker raises an alert for each.
pub const QUARANTINE_MARKER: &str = "chainwatch quarantine:";

/// How many applied event IDs are remembered.
pub const REMEMBER: usize = 10_000;

/// Errors of the worker's state.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The applied-events file is unreadable or unwritable.
    #[error("worker state {path}: {reason}; check worker.state_dir")]
    State {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// What to do with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply it.
    Apply,
    /// Already applied: acknowledge and drop.
    Duplicate,
    /// Older than what was applied for the ID it takes: a later transition
    /// of that slot superseded it; acknowledge and skip. (Per slot, not per
    /// role: a compaction, backend3 to backend2, delivered before the
    /// promotion, backend2 to backend1, leaves the promotion applicable.)
    Stale {
        /// The highest epoch applied for the slot.
        applied: u64,
    },
    /// Another event was applied at the same epoch of the role: one of the
    /// two is forged (epochs are unique per role).
    Conflict {
        /// The event applied at that epoch.
        applied_event: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Applied {
    version: u32,
    /// Version 1's per-role epochs: read, never used, not written again.
    #[serde(default, skip_serializing, rename = "epochs")]
    _v1_epochs: BTreeMap<Role, u64>,
    /// The highest epoch applied per slot (`backend1`, ...).
    #[serde(default)]
    slots: BTreeMap<String, u64>,
    events: VecDeque<String>,
    /// `<role>/<epoch>` → the event applied at it (as many as `events`).
    #[serde(default)]
    at_epoch: BTreeMap<String, String>,
    /// The registry's backend topology MySQL was last reconciled with (the
    /// playbook succeeded for it).
    #[serde(default)]
    reconciled: Option<BackendView>,
}

fn epoch_key(ev: &TransitionEvent) -> String {
    format!("{}/{}", ev.role, ev.epoch)
}

/// The durable record of applied events (`<state_dir>/applied.json`).
pub struct AppliedStore {
    path: PathBuf,
    applied: Applied,
}

impl AppliedStore {
    /// Open (or start) the record in `dir`.
    pub fn open(dir: &Path) -> Result<Self, WorkerError> {
        let path = dir.join("applied.json");
        let err = |reason: String| WorkerError::State {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let applied = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Applied {
                version: 2,
                ..Applied::default()
            },
            Err(e) => return Err(err(e.to_string())),
        };
        let mut applied: Applied = applied;
        applied.version = 2;
        Ok(AppliedStore { path, applied })
    }

    /// Decide about `ev`.
    pub fn decide(&self, ev: &TransitionEvent) -> Decision {
        if self.applied.events.iter().any(|id| *id == ev.event_id) {
            return Decision::Duplicate;
        }
        if let Some(other) = self.applied.at_epoch.get(&epoch_key(ev)) {
            return Decision::Conflict {
                applied_event: other.clone(),
            };
        }
        let applied = self
            .applied
            .slots
            .get(&ev.to_slot().common_name())
            .copied()
            .unwrap_or(0);
        if ev.epoch < applied {
            return Decision::Stale { applied };
        }
        Decision::Apply
    }

    /// The registry view MySQL was last reconciled with.
    pub fn reconciled(&self) -> Option<&BackendView> {
        self.applied.reconciled.as_ref()
    }

    /// Record that MySQL now matches `view`, durably.
    pub fn record_reconciled(&mut self, view: &BackendView) -> Result<(), WorkerError> {
        self.applied.reconciled = Some(view.clone());
        self.save()
    }

    /// Record `ev` as applied, durably (temporary file, fsync, rename).
    pub fn record(&mut self, ev: &TransitionEvent) -> Result<(), WorkerError> {
        self.applied.events.push_back(ev.event_id.clone());
        self.applied
            .at_epoch
            .insert(epoch_key(ev), ev.event_id.clone());
        while self.applied.events.len() > REMEMBER {
            if let Some(old) = self.applied.events.pop_front() {
                self.applied.at_epoch.retain(|_, id| *id != old);
            }
        }
        let e = self
            .applied
            .slots
            .entry(ev.to_slot().common_name())
            .or_insert(0);
        *e = (*e).max(ev.epoch);
        self.save()
    }

    fn save(&self) -> Result<(), WorkerError> {
        let err = |reason: String| WorkerError::State {
            path: self.path.clone(),
            reason,
        };
        let body = serde_json::to_vec_pretty(&self.applied).map_err(|e| err(e.to_string()))?;
        crate::fsio::write_atomic(&self.path, &body).map_err(|e| err(e.to_string()))
    }
}

/// The event as Ansible extra-vars (`chainwatch_event`), in YAML whose every
/// string is tagged `!unsafe`: Ansible treats them as data and never
/// renders a template in them, whatever an event carries.
pub fn vars_yaml(ev: &TransitionEvent) -> String {
    fn render(v: &serde_json::Value, out: &mut String) {
        use serde_json::Value;
        match v {
            // A JSON string is a valid YAML double-quoted scalar.
            Value::String(s) => {
                out.push_str("!unsafe ");
                out.push_str(&Value::String(s.clone()).to_string());
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    render(item, out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                out.push('{');
                for (i, (k, item)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push_str(": ");
                    render(item, out);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::from("chainwatch_event: ");
    render(&serde_json::to_value(ev).unwrap_or_default(), &mut out);
    out.push('\n');
    out
}

/// The quarantine message in one line of a playbook's output, if any (see
/// [`QUARANTINE_MARKER`]): from the marker to the end of the message.
pub fn quarantine_in(line: &str) -> Option<String> {
    let at = line.find(QUARANTINE_MARKER)?;
    let msg = line[at..].trim_end().trim_end_matches(['"', ',']);
    Some(crate::layout::escaped(msg))
}

/// Run `playbook` for `ev`: `ansible-playbook -i <inventory> <playbook> -e
/// @<event vars>` (see [`vars_yaml`]), bounded by `worker.timeout`, its
/// output in the log. Returns the quarantine messages it printed.
pub async fn run_playbook(
    cfg: &WorkerConfig,
    playbook: &Path,
    ev: &TransitionEvent,
) -> Result<Vec<String>, String> {
    let vars = cfg.state_dir.join(format!("event-{}.yml", ev.event_id));
    std::fs::write(&vars, vars_yaml(ev)).map_err(|e| format!("{}: {e}", vars.display()))?;
    let mut child = Command::new(&cfg.ansible_playbook)
        .arg("-i")
        .arg(&cfg.inventory)
        .arg(playbook)
        .arg("-e")
        .arg(format!("@{}", vars.display()))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {}: {e}; install Ansible or set worker.ansible_playbook",
                cfg.ansible_playbook.display()
            )
        })?;
    let tail = std::sync::Arc::new(std::sync::Mutex::new(VecDeque::<String>::new()));
    let quarantined = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut readers = Vec::new();
    for out in [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let id = ev.event_id.clone();
        let tail = tail.clone();
        let quarantined = quarantined.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim().is_empty() {
                    continue;
                }
                if let Some(q) = quarantine_in(&line) {
                    let mut all = quarantined.lock().unwrap_or_else(|p| p.into_inner());
                    if !all.contains(&q) {
                        all.push(q);
                    }
                }
                tracing::info!(target: "ansible", event_id = %id, "{line}");
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                t.push_back(line);
                if t.len() > 5 {
                    t.pop_front();
                }
            }
        }));
    }
    let timeout = cfg.timeout;
    let status = tokio::time::timeout(timeout, child.wait()).await;
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    let _ = std::fs::remove_file(&vars);
    let tail: Vec<String> = tail
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    match status {
        Err(_) => {
            let _ = child.kill().await;
            Err(format!(
                "ansible-playbook did not finish within {timeout:?}"
            ))
        }
        Ok(Err(e)) => Err(format!("waiting for ansible-playbook: {e}")),
        Ok(Ok(s)) if s.success() => Ok(std::mem::take(
            &mut *quarantined.lock().unwrap_or_else(|p| p.into_inner()),
        )),
        Ok(Ok(s)) => Err(format!(
            "ansible-playbook failed ({s}); last output: {}",
            tail.join(" | ")
        )),
    }
}

/// How long after it was last seen live a replica that is down now counts
/// as having died with the primary: in that time it may have acknowledged
/// a semi-synchronous write that no survivor received (a survivor catches
/// up on its own within seconds unless its IO thread is stopped).
pub const DIED_WITH_PRIMARY: Duration = Duration::from_secs(60);

/// When each backend was last seen as a live replica, from every registry
/// read the worker makes: at a promotion, the replicas that died with the
/// primary are those seen live shortly before and down now.
#[derive(Debug, Default)]
pub struct ReplicaWatch {
    seen: BTreeMap<String, std::time::Instant>,
}

impl ReplicaWatch {
    /// A registry read at `now`. The primary it shows is no replica any
    /// more (at a fleet's start, backend1 may read as a replica before its
    /// holder tags show).
    pub fn saw(&mut self, view: &BackendView, now: std::time::Instant) {
        for r in &view.replicas {
            self.seen.insert(r.clone(), now);
        }
        if let Some(p) = &view.primary {
            self.seen.remove(p);
        }
        self.seen
            .retain(|_, at| now.saturating_duration_since(*at) <= DIED_WITH_PRIMARY);
    }

    /// The replicas that may have died with the primary when `promoted`
    /// became it at `now`: seen live within [`DIED_WITH_PRIMARY`], and in
    /// `view` (read at the promotion) down, or among `fenced` (the event's).
    pub fn died_with_primary(
        &self,
        view: &BackendView,
        fenced: &[String],
        promoted: &str,
        now: std::time::Instant,
    ) -> Vec<String> {
        self.seen
            .iter()
            .filter(|(i, at)| {
                i.as_str() != promoted
                    && now.saturating_duration_since(**at) <= DIED_WITH_PRIMARY
                    && (view.down.contains(i) || fenced.contains(i))
                    && !view.replicas.contains(i)
            })
            .map(|(i, _)| i.clone())
            .collect()
    }
}

/// The alert for writes a promotion may have left behind: `dead` replicas
/// died with the primary, and the new primary `promoted` held `position`
/// (its GTID position as a replica) when it was made writable. Every
/// transaction the old primary committed beyond `position`, in any domain,
/// was acknowledged through a server that is gone: those GTIDs are named,
/// with how to recover them.
pub fn possibly_missing(promoted: &str, position: Option<&str>, dead: &[String]) -> String {
    let from = match position {
        Some(p) if !p.is_empty() => format!(
            "every GTID beyond {p} (per domain: {})",
            p.split(',')
                .filter_map(|g| {
                    let mut f = g.trim().rsplitn(2, '-');
                    let seq = f.next()?.parse::<u64>().ok()?;
                    let domain = f.next()?.split('-').next()?;
                    Some(format!("domain {domain} from sequence {}", seq + 1))
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "every GTID beyond its @@gtid_slave_pos".to_string(),
    };
    format!(
        "acknowledged writes may be missing: {} died with the primary, and semi-synchronous replication may have acknowledged writes through {} that {promoted} never received: {from}. \
         To recover them, start a dead server without chainwatch, compare its @@gtid_binlog_pos with that position, and apply the difference by hand (mysqlbinlog --start-position); see the runbook's writes_may_be_missing",
        dead.join(", "),
        if dead.len() == 1 { "it" } else { "them" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{SCHEMA, Timings};

    fn ev(role: Role, epoch: u64) -> TransitionEvent {
        to(role, 1, epoch)
    }

    fn to(role: Role, to_id: u32, epoch: u64) -> TransitionEvent {
        TransitionEvent {
            schema: SCHEMA,
            event_id: uuid::Uuid::new_v4().to_string(),
            fleet: "f".into(),
            role,
            from_id: to_id + 1,
            to_id,
            instance_id: "i-1".into(),
            fenced_instances: vec![],
            vacant: false,
            overlay_addr: "192.168.21.100".parse().unwrap(),
            epoch,
            timings: Timings {
                silent_since_ms: None,
                detected_ms: 1,
                fenced_ms: 1,
                identity_up_ms: 1,
                announced_ms: 1,
            },
        }
    }

    #[test]
    fn every_string_of_the_vars_is_unsafe() {
        let mut e = ev(Role::Backend, 3);
        e.fleet = "{{ lookup('pipe', 'id') }}\"\n".into();
        e.fenced_instances = vec!["i-2".into()];
        let y = vars_yaml(&e);
        assert!(
            y.contains(r#"fleet": !unsafe "{{ lookup('pipe', 'id') }}\"\n""#),
            "{y}"
        );
        assert!(y.contains(r#""fenced_instances": [!unsafe "i-2"]"#), "{y}");
        assert!(y.contains(r#""epoch": 3"#), "{y}");
        assert_eq!(y.matches("!unsafe").count(), 6, "{y}");
    }

    #[test]
    fn a_quarantine_line_is_found_in_ansible_s_output_and_escaped() {
        let line = "    \"msg\": \"chainwatch quarantine: backend3 (i-0123456789abcdef0) holds transactions backend1 never had (0-1-7); it stays read-only\u{1b}[31m\"";
        let q = quarantine_in(line).unwrap();
        assert!(
            q.starts_with("chainwatch quarantine: backend3 (i-0123456789abcdef0)"),
            "{q}"
        );
        assert!(q.contains("(0-1-7)"), "{q}");
        assert!(!q.ends_with('"'), "{q}");
        assert!(!q.contains('\u{1b}'), "{q}");
        assert_eq!(quarantine_in("ok: [backend3] => changed=false"), None);
    }

    #[test]
    fn the_reconciled_view_is_durable_and_survives_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = AppliedStore::open(dir.path()).unwrap();
        assert_eq!(store.reconciled(), None);
        let view = BackendView {
            primary: Some("i-0000000000000002".into()),
            epoch: 7,
            replicas: vec!["i-0000000000000003".into()],
            down: vec!["i-0000000000000001".into()],
        };
        store.record_reconciled(&view).unwrap();
        store.record(&ev(Role::Backend, 8)).unwrap();
        let store = AppliedStore::open(dir.path()).unwrap();
        assert_eq!(store.reconciled(), Some(&view));
        assert_eq!(
            store.decide(&ev(Role::Backend, 7)),
            Decision::Stale { applied: 8 }
        );
    }

    #[test]
    fn order_matters_per_slot_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = AppliedStore::open(dir.path()).unwrap();
        // The compaction (backend3 -> backend2, epoch 6) arrives before the
        // promotion (backend2 -> backend1, epoch 5).
        let compaction = to(Role::Backend, 2, 6);
        store.record(&compaction).unwrap();
        assert_eq!(store.decide(&to(Role::Backend, 1, 5)), Decision::Apply);
        assert_eq!(
            store.decide(&to(Role::Backend, 2, 4)),
            Decision::Stale { applied: 6 }
        );
    }

    #[test]
    fn a_version_1_record_is_read_and_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("applied.json"),
            r#"{"version":1,"epochs":{"backend":5},"events":["e1"]}"#,
        )
        .unwrap();
        let mut store = AppliedStore::open(dir.path()).unwrap();
        let mut dup = ev(Role::Backend, 9);
        dup.event_id = "e1".into();
        assert_eq!(store.decide(&dup), Decision::Duplicate);
        store.record(&ev(Role::Backend, 7)).unwrap();
        let text = std::fs::read_to_string(dir.path().join("applied.json")).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
        assert!(!text.contains("\"epochs\""), "{text}");
    }

    #[test]
    fn events_are_applied_once_and_in_epoch_order_per_slot() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = AppliedStore::open(dir.path()).unwrap();
        let a = ev(Role::Backend, 5);
        assert_eq!(store.decide(&a), Decision::Apply);
        store.record(&a).unwrap();
        assert_eq!(store.decide(&a), Decision::Duplicate);
        assert_eq!(
            store.decide(&ev(Role::Backend, 4)),
            Decision::Stale { applied: 5 }
        );
        assert_eq!(
            store.decide(&ev(Role::Backend, 5)),
            Decision::Conflict {
                applied_event: a.event_id.clone()
            }
        );
        assert_eq!(store.decide(&ev(Role::Backend, 6)), Decision::Apply);
        assert_eq!(store.decide(&ev(Role::Frontend, 5)), Decision::Apply);
        // Durable: a new worker remembers.
        let store = AppliedStore::open(dir.path()).unwrap();
        assert_eq!(store.decide(&a), Decision::Duplicate);
        assert_eq!(
            store.decide(&ev(Role::Backend, 3)),
            Decision::Stale { applied: 5 }
        );
    }

    fn view(primary: &str, replicas: &[&str], down: &[&str]) -> BackendView {
        BackendView {
            primary: Some(primary.into()),
            epoch: 1,
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            down: down.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn a_replica_that_died_with_the_primary_is_named_one_long_dead_or_alive_is_not() {
        let t0 = std::time::Instant::now();
        let mut w = ReplicaWatch::default();
        // At the fleet's start i-1 read as a replica before its tags showed.
        w.saw(&view("i-9", &["i-1", "i-2", "i-3", "i-4"], &[]), t0);
        w.saw(&view("i-1", &["i-2", "i-3", "i-4"], &["i-5"]), t0);
        // i-2 goes down first (the "only replicas went down" read), then
        // the primary; i-3 is promoted; i-4 lives.
        let t1 = t0 + Duration::from_secs(5);
        w.saw(&view("i-1", &["i-3", "i-4"], &["i-2", "i-5"]), t1);
        let at = view("i-3", &["i-4"], &["i-1", "i-2", "i-5"]);
        assert_eq!(
            w.died_with_primary(&at, &["i-1".into()], "i-3", t1),
            vec!["i-2".to_string()]
        );
        // Down longer than DIED_WITH_PRIMARY before the promotion: every
        // survivor has had the time to receive what it acknowledged.
        let late = t0 + DIED_WITH_PRIMARY + Duration::from_secs(1);
        assert!(w.died_with_primary(&at, &[], "i-3", late).is_empty());
        // Fenced by the event though the read does not show it down yet.
        let stale = view("i-3", &["i-4"], &[]);
        assert_eq!(
            w.died_with_primary(&stale, &["i-2".into()], "i-3", t1),
            vec!["i-2".to_string()]
        );
    }

    #[test]
    fn the_alert_names_the_first_possibly_missing_gtid_of_each_domain() {
        let a = possibly_missing("i-3", Some("0-1-41,1-7-9"), &["i-2".into()]);
        assert!(
            a.contains("i-2 died with the primary") && a.contains("beyond 0-1-41,1-7-9"),
            "{a}"
        );
        assert!(
            a.contains("domain 0 from sequence 42, domain 1 from sequence 10"),
            "{a}"
        );
        let b = possibly_missing("i-3", None, &["i-2".into(), "i-4".into()]);
        assert!(
            b.contains("i-2, i-4 died") && b.contains("gtid_slave_pos"),
            "{b}"
        );
    }
}
