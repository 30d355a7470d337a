//! What the core tells the outside: completed transitions, log events, and
//! snapshots for `chainwatch status`.

use std::time::{Duration, Instant};

use crate::layout::Slot;

/// A completed takeover, with the instants of each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The slot this node held before.
    pub from: Slot,
    /// The slot it holds now (the peer's).
    pub to: Slot,
    /// Instances that were fenced; empty when the slot was vacant.
    pub fenced: Vec<String>,
    /// True when the slot had no running holder (no fence needed).
    pub vacant: bool,
    /// Start of the first missed round of the streak, if there was one.
    pub silent_since: Option<Instant>,
    /// When the peer was declared dead (or found vacant).
    pub declared_at: Instant,
    /// When the fence was confirmed.
    pub fenced_at: Instant,
    /// When the new identity was up.
    pub identity_up_at: Instant,
}

/// A failed attempt of a fence or a takeover; the next comes after
/// `retry_in`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Failed attempt number.
    pub attempt: u32,
    /// Why.
    pub error: String,
    /// Delay before the next attempt.
    pub retry_in: Duration,
}

impl Failure {
    /// "why; retried in …", for alerts.
    pub fn detail(&self) -> String {
        format!("{}; retried in {:?}", self.error, self.retry_in)
    }
}

/// Things worth a log line; they change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The node now watches `peer` (or nobody).
    Watching {
        /// This node's slot.
        me: Slot,
        /// The watched peer.
        peer: Option<Slot>,
    },
    /// frontend1 is silent on the overlay: the next rounds probe the peer on
    /// its underlay with EC2 as the witness.
    Degraded {
        /// The peer.
        peer: Slot,
    },
    /// frontend1 answers on the overlay again: back to normal rounds.
    OverlayBack {
        /// The peer.
        peer: Slot,
    },
    /// A missed round: peer silent, witness answered.
    Miss {
        /// The peer.
        peer: Slot,
        /// Consecutive misses so far.
        misses: u32,
        /// Misses that declare death.
        of: u32,
    },
    /// Peer and witness both silent (or results missing): this node may be
    /// cut off, so it counts nothing and the streak restarts. Emitted for
    /// the first such round of a streak.
    Inconclusive {
        /// The peer.
        peer: Slot,
        /// Misses discarded.
        discarded: u32,
    },
    /// The peer answered after missed rounds.
    Recovered {
        /// The peer.
        peer: Slot,
        /// Misses before the answer.
        after: u32,
    },
    /// The hub's underlay answers but its overlay has been silent longer
    /// than it takes to restart its own OpenVPN: its rounds now count as
    /// misses.
    SickHub {
        /// The hub.
        peer: Slot,
        /// How long its overlay has been silent.
        silent_for: Duration,
    },
    /// The peer said it gave up its ID: its next missed round is enough
    /// (with the second opinion).
    Resigned {
        /// The peer.
        peer: Slot,
    },
    /// The hub said it is handing its slot over (a planned switchover):
    /// EC2 is asked whether it released it.
    HandingOver {
        /// The hub.
        peer: Slot,
    },
    /// Another member reached the silent peer: its misses are forgotten.
    Vouched {
        /// The peer.
        peer: Slot,
        /// Misses forgotten.
        after: u32,
    },
    /// The peer has missed enough rounds but is not declared dead yet: the
    /// second opinion is pending, or no helper answered this node (it may
    /// be the sick one) and the fallback waits longer.
    Withheld {
        /// The peer.
        peer: Slot,
        /// Missed rounds so far.
        misses: u32,
        /// Why.
        why: &'static str,
    },
    /// The peer is declared dead after `misses` missed rounds.
    PeerDead {
        /// The peer.
        peer: Slot,
        /// Missed rounds.
        misses: u32,
    },
    /// Nobody holds the peer's slot: take it without a fence.
    Vacant {
        /// The peer's slot.
        peer: Slot,
    },
    /// The fence failed; it is retried after `retry_in`.
    FenceFailed {
        /// The peer.
        peer: Slot,
        /// The attempt.
        failure: Failure,
    },
    /// The peer answered before a fence was confirmed: no takeover.
    FenceCancelled {
        /// The peer.
        peer: Slot,
    },
    /// The fence is confirmed.
    FenceConfirmed {
        /// The peer.
        peer: Slot,
        /// Stopped instances.
        instances: Vec<String>,
    },
    /// The takeover failed; it is retried after `retry_in`.
    TakeOverFailed {
        /// The slot being taken.
        to: Slot,
        /// The attempt.
        failure: Failure,
    },
    /// The watched slot's admitted holder is another instance than the one
    /// judged so far (a takeover of it completed): what was counted against
    /// the old one is forgotten.
    NewHolder {
        /// The peer's slot.
        peer: Slot,
        /// The instance now judged.
        instance: String,
        /// Its epoch.
        epoch: u64,
    },
    /// A fence or takeover found the slot taken by another instance since
    /// the judgement: nothing more is done to it, and the new holder is
    /// watched.
    Superseded {
        /// The peer's slot.
        peer: Slot,
        /// The new holder, when known.
        instance: Option<String>,
    },
    /// At start, the fence the last run recorded and did not finish is
    /// finished now.
    FenceResumed {
        /// The peer's slot.
        peer: Slot,
        /// The instance judged dead.
        instance: String,
    },
    /// The tail (watched by ID 1) is fenced: nobody takes its ID, the
    /// chain is one shorter, and its loss is alerted.
    TailLost {
        /// The tail's slot.
        peer: Slot,
        /// The instances fenced.
        instances: Vec<String>,
    },
    /// The takeover of `dead` waits while `first` is judged (and taken
    /// over if dead): the hub it needs, which is silent, or the slot
    /// before it, silent as long.
    Detour {
        /// The dead predecessor, fenced, whose takeover waits.
        dead: Slot,
        /// The slot judged first.
        first: Slot,
    },
    /// The takeover completed.
    TookOver {
        /// Former slot.
        from: Slot,
        /// New slot.
        to: Slot,
    },
}

/// What the node is doing, for `chainwatch status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseName {
    /// ID 1: nothing to watch.
    Idle,
    /// Probing the peer.
    Watching,
    /// The peer is declared dead; fencing it (or waiting to retry).
    Fencing,
    /// The fence is confirmed; taking over the peer's slot.
    TakingOver,
}

impl PhaseName {
    /// Lowercase name for tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Idle => "idle",
            PhaseName::Watching => "watching",
            PhaseName::Fencing => "fencing",
            PhaseName::TakingOver => "taking-over",
        }
    }
}

/// A snapshot of the core for status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// This node's slot.
    pub me: Slot,
    /// The watched peer.
    pub peer: Option<Slot>,
    /// Current phase.
    pub phase: PhaseName,
    /// RTT of the last peer answer.
    pub last_rtt: Option<Duration>,
    /// How the watch stands.
    pub watch: WatchStatus,
}

/// How the watch of the current peer stands: the part of a snapshot that
/// status reports show as it is (flattened into their JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct WatchStatus {
    /// Consecutive missed rounds.
    pub misses: u32,
    /// Misses that declare the peer dead.
    pub misses_to_declare: u32,
    /// The last round was inconclusive (witness silent too).
    pub cut_off: bool,
    /// Rounds are degraded: frontend1 is silent on the overlay, so the
    /// peer is probed on its underlay with EC2 as the witness.
    pub degraded: bool,
    /// Rounds evaluated since start.
    pub rounds: u64,
    /// Current fence/takeover attempt (0 when none).
    pub attempt: u32,
    /// Last fence/takeover error.
    pub last_error: Option<String>,
}
