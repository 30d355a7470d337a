//! The async shell around the pure core: it turns the core's actions into
//! I/O and the results back into inputs.
//!
//! Each kind of outside work sits behind a small trait, so the real
//! implementations (EC2, OpenVPN, the event sinks) plug into the same driver:
//!
//! * [`Registry`] — who holds a slot, fencing, the hub's underlay address and
//!   the EC2 witness.
//! * [`Switcher`] — moving this node to a new slot (state, tags, VPN).
//! * [`Announcer`] — telling the rest of the system about a transition.
//!
//! This version ships the observe-only implementations: the daemon probes,
//! decides and logs what it would do, and never acts.

pub mod alert;
pub mod announce;
pub mod aws;
pub mod broker;
pub mod control;
pub mod demote;
pub mod driver;
pub mod fabric;
pub mod identity;
pub mod members;
pub mod metrics;
pub mod mysql;
pub mod openvpn;
pub mod outbox;
pub mod prober;
pub mod promote;
pub mod reload;
pub mod resolve;
pub mod service;
pub mod status;
pub mod switchover;
pub mod takeover;
pub mod worker;

/// A program the daemon runs (an alert or service check command): its
/// output discarded, killed if the daemon drops it, and without systemd's
/// notify socket (readiness is the daemon's to tell).
pub(crate) fn child_command(program: &str, args: &[String]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.args(args)
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    c
}

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::{Fenced, Holder, Judged};
use crate::event::TransitionEvent;
use crate::layout::{Layout, Role, Slot};
use crate::shell::aws::ec2::Ec2Registry;
pub use crate::shell::aws::ec2::{PowerFence, PowerFenceState};

/// Why a fence or a takeover did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActError {
    /// It failed (a one-line reason for the log); the core retries it.
    Failed(String),
    /// The slot is held by another instance now than the one judged: the
    /// core stops and watches it.
    Superseded(Option<Judged>),
}

impl std::fmt::Display for ActError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActError::Failed(e) => f.write_str(e),
            ActError::Superseded(Some(j)) => write!(
                f,
                "the slot is held by {} at epoch {} now",
                j.instance, j.epoch
            ),
            ActError::Superseded(None) => f.write_str("the slot is held by another instance now"),
        }
    }
}

impl From<String> for ActError {
    fn from(e: String) -> Self {
        ActError::Failed(e)
    }
}

/// Who holds slots, and the fence. Errors are one-line reasons for the log.
pub trait Registry: Send + Sync + 'static {
    /// Whether an instance that is not stopped holds `slot`.
    fn check_holder(&self, slot: Slot) -> impl Future<Output = Result<Holder, String>> + Send;
    /// Fence `judged`, the instance judged dead as `slot`'s holder (or,
    /// when unknown, the slot's admitted holder now), and wait until the
    /// fence is confirmed. `chained`: the peer's death was counted with the
    /// takeover before (look-ahead), so the cooldown after that takeover
    /// does not apply.
    fn fence(
        &self,
        slot: Slot,
        judged: Option<Judged>,
        chained: bool,
    ) -> impl Future<Output = Result<Fenced, ActError>> + Send;
    /// Forget cached addresses of `slot` (of every slot: `None`).
    fn forget(&self, _slot: Option<Slot>) {}
    /// The slots that running instances hold now (a fresh read): the tail
    /// that ID 1 watches.
    fn held_now(&self, layout: &Layout) -> impl Future<Output = Result<Vec<Slot>, String>> + Send {
        self.held_slots(layout)
    }
    /// A cheap API call; `Ok` means the control plane answers (the witness
    /// used when the watched peer is the hub).
    fn witness(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// The underlay (VPC) address of `slot`'s holder.
    fn underlay_addr(&self, slot: Slot) -> impl Future<Output = Result<Ipv4Addr, String>> + Send;
    /// The slots that running instances hold (a recent read is fine): the
    /// members that can be asked for a second opinion, and so how many
    /// answers make a quorum.
    fn held_slots(&self, layout: &Layout)
    -> impl Future<Output = Result<Vec<Slot>, String>> + Send;
    /// The power fences this daemon sent, latest per slot: whether EC2 has
    /// reported their instances stopped yet.
    fn power_fences(&self) -> Vec<PowerFence> {
        Vec::new()
    }
    /// The end of this instance's maintenance (`chainwatch maint`), as last
    /// read; `None` when it is not in maintenance or nobody read it.
    fn maintenance(&self) -> Option<String> {
        None
    }
}

impl Registry for Ec2Registry {
    async fn check_holder(&self, slot: Slot) -> Result<Holder, String> {
        self.holder(slot).await
    }
    async fn fence(
        &self,
        slot: Slot,
        judged: Option<Judged>,
        chained: bool,
    ) -> Result<Fenced, ActError> {
        use crate::shell::aws::ec2::Ec2Error;
        self.fence_slot(slot, judged.as_ref(), chained)
            .await
            .map_err(|e| match e {
                Ec2Error::Superseded {
                    instance, epoch, ..
                } => ActError::Superseded(Some(Judged { instance, epoch })),
                e => ActError::Failed(e.to_string()),
            })
    }
    fn forget(&self, slot: Option<Slot>) {
        self.forget_underlay(slot)
    }
    async fn held_now(&self, layout: &Layout) -> Result<Vec<Slot>, String> {
        self.held_slots_fresh(layout).await
    }
    async fn witness(&self) -> Result<(), String> {
        self.witness_call().await
    }
    async fn underlay_addr(&self, slot: Slot) -> Result<Ipv4Addr, String> {
        self.underlay_of(slot).await
    }
    async fn held_slots(&self, layout: &Layout) -> Result<Vec<Slot>, String> {
        Ec2Registry::held_slots(self, layout).await
    }
    fn power_fences(&self) -> Vec<PowerFence> {
        Ec2Registry::power_fences(self)
    }
    fn maintenance(&self) -> Option<String> {
        self.maintenance_until()
    }
}

/// A shared registry is a registry (the driver and the switcher share one).
impl<R: Registry> Registry for std::sync::Arc<R> {
    async fn check_holder(&self, slot: Slot) -> Result<Holder, String> {
        R::check_holder(self, slot).await
    }
    async fn fence(
        &self,
        slot: Slot,
        judged: Option<Judged>,
        chained: bool,
    ) -> Result<Fenced, ActError> {
        R::fence(self, slot, judged, chained).await
    }
    fn forget(&self, slot: Option<Slot>) {
        R::forget(self, slot)
    }
    async fn held_now(&self, layout: &Layout) -> Result<Vec<Slot>, String> {
        R::held_now(self, layout).await
    }
    async fn witness(&self) -> Result<(), String> {
        R::witness(self).await
    }
    async fn underlay_addr(&self, slot: Slot) -> Result<Ipv4Addr, String> {
        R::underlay_addr(self, slot).await
    }
    async fn held_slots(&self, layout: &Layout) -> Result<Vec<Slot>, String> {
        R::held_slots(self, layout).await
    }
    fn power_fences(&self) -> Vec<PowerFence> {
        R::power_fences(self)
    }
    fn maintenance(&self) -> Option<String> {
        R::maintenance(self)
    }
}

/// Fences and takeovers since the daemon started (for metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Fences confirmed.
    pub fences: u64,
    /// Fence attempts that failed.
    pub fence_failures: u64,
    /// Takeovers completed.
    pub takeovers: u64,
    /// Takeover attempts that failed.
    pub takeover_failures: u64,
}

impl Counters {
    /// Count one core event.
    pub fn count(&mut self, event: &crate::core::Event) {
        use crate::core::Event;
        match event {
            Event::FenceConfirmed { .. } => self.fences += 1,
            Event::FenceFailed { .. } => self.fence_failures += 1,
            Event::TookOver { .. } => self.takeovers += 1,
            Event::TakeOverFailed { .. } => self.takeover_failures += 1,
            _ => {}
        }
    }
}

/// Moves this node to another slot.
pub trait Switcher: Send + Sync + 'static {
    /// Persist the new slot together with `planned`, the transition's event
    /// (its epoch filled in), retag, switch the VPN identity; `Ok` once the
    /// identity is up.
    fn take_over(
        &self,
        from: Slot,
        to: Slot,
        planned: TransitionEvent,
    ) -> impl Future<Output = Result<(), ActError>> + Send;
    /// The event persisted by the last `take_over`, until `announced`.
    fn pending(&self) -> Option<TransitionEvent> {
        None
    }
    /// The event is in the outbox: forget the pending copy.
    fn announced(&self, _event: &TransitionEvent) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// The per-role epoch of the slot this node holds (0: unknown).
    fn epoch(&self) -> u64 {
        0
    }
}

/// Announces transitions.
pub trait Announcer: Send + Sync + 'static {
    /// Record a transition durably and have it delivered.
    fn announce(&self, event: &TransitionEvent) -> impl Future<Output = ()> + Send;
    /// Transitions (and alerts) not yet confirmed by every sink.
    fn pending(&self) -> u64 {
        0
    }
}

/// The registry available without AWS: it knows only the configured
/// underlay address of the hub and cannot tell holders, fence, or witness.
/// With it the core never takes anything over.
#[derive(Debug, Clone, Default)]
pub struct StaticRegistry {
    /// `probe.hub_underlay` from the config.
    pub hub_underlay: Option<Ipv4Addr>,
}

impl Registry for StaticRegistry {
    async fn check_holder(&self, _slot: Slot) -> Result<Holder, String> {
        Err("no EC2 registry in this mode: holders are unknown".into())
    }
    async fn fence(
        &self,
        slot: Slot,
        _judged: Option<Judged>,
        _chained: bool,
    ) -> Result<Fenced, ActError> {
        Err(ActError::Failed(format!(
            "no EC2 registry in this mode: cannot fence {slot}"
        )))
    }
    async fn witness(&self) -> Result<(), String> {
        Err("no EC2 registry in this mode: the hub witness is unavailable".into())
    }
    async fn underlay_addr(&self, slot: Slot) -> Result<Ipv4Addr, String> {
        match self.hub_underlay {
            Some(addr) if slot.is_hub() => Ok(addr),
            None if slot.is_hub() => Err(format!(
                "the underlay address of {slot} is unknown: set probe.hub_underlay"
            )),
            _ => Err(format!(
                "the underlay address of {slot} comes from EC2, which this mode does not ask"
            )),
        }
    }
    async fn held_slots(&self, _layout: &Layout) -> Result<Vec<Slot>, String> {
        Err("the holders come from EC2, which this mode does not ask".into())
    }
}

/// A switcher that never switches (observe mode).
#[derive(Debug, Clone, Default)]
pub struct NoSwitch;

impl Switcher for NoSwitch {
    async fn take_over(&self, from: Slot, to: Slot, _: TransitionEvent) -> Result<(), ActError> {
        Err(ActError::Failed(format!(
            "observe mode: {from} does not take over {to}"
        )))
    }
}

/// An announcer that only writes the transition to the log.
#[derive(Debug, Clone, Default)]
pub struct LogAnnouncer;

impl Announcer for LogAnnouncer {
    async fn announce(&self, event: &TransitionEvent) {
        let json = String::from_utf8_lossy(&event.to_json()).into_owned();
        tracing::info!(transition = %json, "transition");
    }
}

/// Everything `chainwatch status` shows; served as JSON on the status socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// chainwatch version.
    pub version: String,
    /// `observe` or `active`.
    pub mode: String,
    /// This node's role.
    pub role: Role,
    /// This node's ID.
    pub id: u32,
    /// Its VPN common name.
    pub common_name: String,
    /// Its overlay address.
    pub overlay_addr: Ipv4Addr,
    /// The watched peer's common name (none for ID 1).
    pub peer: Option<String>,
    /// What the peer is probed at: its host name, or `underlay` for the hub.
    pub peer_target: Option<String>,
    /// `idle`, `watching`, `fencing`, `taking-over`.
    pub phase: String,
    /// RTT of the last answer from the peer, in milliseconds.
    pub last_rtt_ms: Option<f64>,
    /// Misses, rounds, the fence or takeover attempt and its last error
    /// (flattened into the JSON).
    #[serde(flatten)]
    pub watch: crate::core::WatchStatus,
    /// The last transition this daemon made.
    pub last_transition: Option<TransitionEvent>,
    /// Transitions (and alerts) not yet confirmed by every sink.
    pub pending_events: u64,
    /// The power fences this daemon sent, latest per slot.
    #[serde(default)]
    pub power_fences: Vec<PowerFence>,
    /// Fences and takeovers since the daemon started.
    #[serde(default)]
    pub counters: Counters,
    /// The members' channel: second opinions and dropped datagrams (all
    /// zero when the channel is off; see `members_channel`).
    #[serde(default)]
    pub members: members::MembersCounters,
    /// Whether the members' channel runs (a members key was found).
    #[serde(default)]
    pub members_channel: bool,
    /// The end of this instance's maintenance (its successor fences
    /// nothing until then), as last read from its tags.
    #[serde(default)]
    pub maintenance: Option<String>,
    /// ICMP socket kind: `dgram` or `raw`.
    pub icmp_socket: String,
    /// Where the boot identity came from.
    pub identity_source: String,
    /// The EC2 instance ID, if known.
    pub instance_id: Option<String>,
    /// Daemon start, ms since the Unix epoch.
    pub started_ms: u64,
    /// Daemon process ID.
    pub pid: u32,
}

impl StatusReport {
    /// The Nagios verdict of `status --check`, with its reasons: CRITICAL
    /// for a power fence EC2 never confirmed; WARNING for missed rounds, a
    /// failover in progress, an inconclusive round, a degraded overlay,
    /// undelivered events or an error; OK otherwise.
    pub fn check(&self) -> (crate::fleet::Severity, Vec<String>) {
        use crate::fleet::Severity;
        let mut found = Vec::new();
        for p in &self.power_fences {
            if p.state == PowerFenceState::NotConfirmed {
                found.push((Severity::Critical, format!("power fence {}", p.summary())));
            }
        }
        if matches!(self.phase.as_str(), "fencing" | "taking-over") {
            found.push((
                Severity::Warning,
                format!("failover in progress ({})", self.phase),
            ));
        }
        if self.watch.misses > 0 {
            found.push((
                Severity::Warning,
                format!(
                    "{} of {} rounds missed",
                    self.watch.misses, self.watch.misses_to_declare
                ),
            ));
        }
        if self.watch.cut_off {
            found.push((
                Severity::Warning,
                "last round inconclusive (witness silent)".into(),
            ));
        }
        if self.watch.degraded {
            found.push((Severity::Warning, "overlay down: frontend1 silent".into()));
        }
        if self.pending_events > 0 {
            found.push((
                Severity::Warning,
                format!("{} events not yet delivered", self.pending_events),
            ));
        }
        if let Some(e) = &self.watch.last_error {
            found.push((
                Severity::Warning,
                format!("last error: {}", crate::layout::escaped(e)),
            ));
        }
        let worst = found.iter().map(|f| f.0).max().unwrap_or(Severity::Ok);
        (worst, found.into_iter().map(|f| f.1).collect())
    }

    /// Render the human table.
    pub fn table(&self) -> String {
        let rtt = self
            .last_rtt_ms
            .map(|r| format!("{r:.3} ms"))
            .unwrap_or_else(|| "-".into());
        let peer = match (&self.peer, &self.peer_target) {
            (Some(p), Some(t)) => format!("{p} ({t})"),
            (Some(p), None) => p.clone(),
            _ => "nobody (ID 1), the only member of its role".into(),
        };
        let transition = self
            .last_transition
            .as_ref()
            .map(|t| {
                let how = if t.vacant {
                    "vacant".to_string()
                } else {
                    format!("fenced {}", t.fenced_instances.join(","))
                };
                let when = humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + Duration::from_millis(t.timings.identity_up_ms),
                );
                format!(
                    "{role}{} -> {role}{} ({how}), epoch {}, failover {} ms, at {when}",
                    t.from_id,
                    t.to_id,
                    t.epoch,
                    t.failover_ms(),
                    role = t.role
                )
            })
            .unwrap_or_else(|| "none".into());
        let rows: Vec<(&str, String)> = vec![
            ("role", self.role.to_string()),
            ("id", self.id.to_string()),
            ("common name", self.common_name.clone()),
            ("overlay address", self.overlay_addr.to_string()),
            ("watching", peer),
            ("phase", self.phase.clone()),
            (
                "misses",
                format!(
                    "{} of {}{}",
                    self.watch.misses,
                    self.watch.misses_to_declare,
                    if self.watch.cut_off {
                        " (last round inconclusive: witness silent)"
                    } else {
                        ""
                    }
                ),
            ),
            ("last rtt", rtt),
            (
                "overlay",
                if self.watch.degraded {
                    "DOWN (frontend1 silent): probing the underlay, EC2 as witness".into()
                } else {
                    "up".into()
                },
            ),
            ("rounds", self.watch.rounds.to_string()),
            (
                "last error",
                self.watch.last_error.clone().unwrap_or_else(|| "-".into()),
            ),
            ("last transition", transition),
            ("pending events", self.pending_events.to_string()),
            (
                "maintenance",
                match &self.maintenance {
                    Some(until) => format!("until {until}: no member fences this node"),
                    None => "no".into(),
                },
            ),
            (
                "power fence",
                if self.power_fences.is_empty() {
                    "none".into()
                } else {
                    self.power_fences
                        .iter()
                        .map(PowerFence::summary)
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            ),
            (
                "second opinion",
                if self.members_channel {
                    let m = &self.members;
                    format!(
                        "on: asked {}, vouched {}, helped {}, busy {}, resignations heard {}, claims heard {}; dropped {} (foreign {}, oversize {}, malformed {}, forged {}, stale {}, replayed {})",
                        m.asked,
                        m.vouched,
                        m.helped,
                        m.busy,
                        m.resigns,
                        m.claims,
                        m.dropped(),
                        m.foreign,
                        m.oversize,
                        m.malformed,
                        m.forged,
                        m.stale,
                        m.replayed
                    )
                } else {
                    "OFF (no members key): the witness rule alone judges".into()
                },
            ),
            ("mode", self.mode.clone()),
            ("icmp socket", self.icmp_socket.clone()),
            (
                "identity",
                match &self.instance_id {
                    Some(i) => format!("{} ({i})", self.identity_source),
                    None => self.identity_source.clone(),
                },
            ),
            ("pid", self.pid.to_string()),
        ];
        let mut out = String::new();
        // Errors and events carry text from outside (EC2, the broker):
        // never let it drive the terminal.
        for (k, v) in rows {
            out.push_str(&format!("{k:<16} {}\n", crate::layout::escaped(&v)));
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A report of a healthy frontend3 watching frontend2.
    pub(crate) fn report() -> StatusReport {
        serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "mode": "active", "role": "frontend", "id": 3,
            "common_name": "frontend3", "overlay_addr": "192.168.21.12",
            "peer": "frontend2", "peer_target": "frontend2.internal",
            "phase": "watching", "misses": 0, "misses_to_declare": 3,
            "last_rtt_ms": 0.5, "cut_off": false, "degraded": false,
            "rounds": 10, "attempt": 0, "last_error": null,
            "last_transition": null, "pending_events": 0,
            "icmp_socket": "dgram", "identity_source": "user-data",
            "instance_id": "i-3", "started_ms": 0, "pid": 1
        }))
        .expect("a status report")
    }

    #[test]
    fn the_table_says_whether_the_second_opinion_is_on_and_what_it_dropped() {
        let mut r = report();
        assert!(r.table().contains("OFF (no members key)"), "{}", r.table());
        r.members_channel = true;
        r.members.vouched = 2;
        r.members.forged = 5;
        r.members.replayed = 1;
        let t = r.table();
        assert!(t.contains("vouched 2"), "{t}");
        assert!(t.contains("dropped 6 ("), "{t}");
        assert!(t.contains("forged 5"), "{t}");
        assert!(!t.contains("OFF"), "{t}");
    }

    #[test]
    fn check_grades_what_an_operator_must_see() {
        use crate::fleet::Severity;
        let r = report();
        assert_eq!(r.check(), (Severity::Ok, vec![]));
        let mut w = report();
        w.watch.misses = 2;
        w.pending_events = 1;
        let (sev, why) = w.check();
        assert_eq!(sev, Severity::Warning);
        assert!(why.iter().any(|m| m == "2 of 3 rounds missed"), "{why:?}");
        assert!(
            why.iter().any(|m| m.contains("1 events not yet delivered")),
            "{why:?}"
        );
        let mut c = report();
        c.power_fences.push(PowerFence {
            slot: "frontend2".into(),
            instances: vec!["i-2".into()],
            state: PowerFenceState::NotConfirmed,
            sent_ms: 1_000,
            done_ms: Some(121_000),
        });
        let (sev, why) = c.check();
        assert_eq!(sev, Severity::Critical);
        assert!(why[0].contains("NOT CONFIRMED"), "{why:?}");
        assert!(
            c.table().contains("frontend2 (i-2): NOT CONFIRMED"),
            "{}",
            c.table()
        );
    }

    #[test]
    fn counters_count_fences_and_takeovers() {
        use crate::core::Event;
        use crate::layout::{Role, Slot};
        let (f2, f3) = (Slot::new(Role::Frontend, 2), Slot::new(Role::Frontend, 3));
        let mut c = Counters::default();
        c.count(&Event::FenceConfirmed {
            peer: f2,
            instances: vec![],
        });
        c.count(&Event::TookOver { from: f3, to: f2 });
        c.count(&Event::PeerDead {
            peer: f2,
            misses: 3,
        });
        assert_eq!(
            c,
            Counters {
                fences: 1,
                fence_failures: 0,
                takeovers: 1,
                takeover_failures: 0
            }
        );
    }
}
