//! The watchdog core: a pure state machine.
//!
//! [`Monitor`] never touches a socket, a file or the clock. The shell feeds it
//! [`Input`]s with the time they happened and calls [`Monitor::handle_timeout`]
//! when [`Monitor::poll_timeout`] comes due; after each call it drains
//! [`Monitor::poll_action`] (work to do: probe, check a holder, fence, take
//! over, announce) and [`Monitor::poll_event`] (things worth a log line).
//! Results of the work come back as inputs. Handling a timeout early or twice
//! is harmless.
//!
//! The rule it implements (see DESIGN.md):
//!
//! * Every `interval` it starts a round: one probe to the watched peer (ID
//!   n-1) and one to the witness. The witness is `frontend1` on the overlay;
//!   when the peer *is* frontend1 (the VPN hub) the peer is probed on its
//!   underlay address and the witness is a successful EC2 API call.
//! * A round is a *miss* only when the peer is silent and the witness
//!   answered. A round in which the witness is silent too (this node is cut
//!   off, or the hub is down) is inconclusive and breaks the streak: a node
//!   that cannot see the witness never accuses anyone.
//! * Any answer from the peer resets the count. `misses` consecutive misses
//!   declare the peer dead — except during the startup grace: a peer that
//!   has not answered once since this node started may still be booting
//!   (the whole fleet starts at once), so it is declared dead only after
//!   `startup_grace` has passed.
//! * Dead peer: [`Action::Fence`]. Only a confirmed fence (EC2 reports the
//!   holder stopped, or there was no running holder) leads to
//!   [`Action::TakeOver`]; failures are retried with bounded exponential
//!   back-off, probing goes on meanwhile, and a peer that answers again before
//!   a fence was confirmed cancels it.
//! * Vacancy fast path: on every round in which the peer is silent the core
//!   asks the shell whether anyone holds the peer's ID
//!   ([`Action::CheckHolder`]); if EC2 answers that nobody does, it takes the
//!   ID at once instead of waiting for `misses` rounds. A chain that compacts
//!   (frontend2 became frontend1, so ID 2 is empty) thus moves one hop per
//!   round, not one hop per detection window. For a vacant slot EC2's answer
//!   is the witness: there is no holder to wrong, so this also works while
//!   the overlay witness is down (frontend1 and frontend2 gone together).
//! * Degraded rounds: the overlay runs through frontend1, so when frontend1
//!   is silent on the overlay nobody can judge a peer there. A node in that
//!   state probes its peer the way frontend2 probes the hub: on the underlay,
//!   with a successful EC2 call as the witness, plus one overlay probe of
//!   frontend1 per round to learn when the overlay is back. A node cut off
//!   from everything reaches neither its peer nor EC2, so it still accuses
//!   nobody; a chain whose hub and frontend2 died together still heals.
//! * Look-ahead: while the peer is missing rounds, its own predecessor (n-2)
//!   is probed as well. If both died together, n-2's misses are already
//!   counted when this node has taken over n-1, so one more silent round
//!   declares it dead instead of a whole detection window.
//! * After a takeover it announces the [`Transition`] and watches its new
//!   predecessor at once. ID 1 watches nobody.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::layout::{Role, Slot};

#[cfg(test)]
mod tests;

/// Tunables of the core. The shell builds it from the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// Time between the starts of two probe rounds.
    pub interval: Duration,
    /// How long one probe may take; must be shorter than `interval`.
    pub probe_timeout: Duration,
    /// Consecutive missed rounds that declare the peer dead.
    pub misses: u32,
    /// First retry delay after a failed fence or takeover.
    pub backoff_initial: Duration,
    /// Upper bound of the retry delay.
    pub backoff_max: Duration,
    /// After start, a peer that has never answered is not declared dead
    /// before this much time has passed (it may still be booting).
    pub startup_grace: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            interval: Duration::from_millis(1000),
            probe_timeout: Duration::from_millis(800),
            misses: 3,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            startup_grace: Duration::from_secs(30),
        }
    }
}

impl CoreConfig {
    /// The retry delay after `attempt` failures (1-based): doubling from
    /// `backoff_initial`, never above `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff_initial
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

/// Which of the two probes of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The watched peer (ID n-1).
    Peer,
    /// The witness that tells whether this node can see the fleet at all.
    Witness,
    /// frontend1 on the overlay, probed in degraded rounds (see
    /// [`Monitor`]) only to learn when the overlay is back.
    Overlay,
    /// The peer's own predecessor (n-2), probed while the peer is missing
    /// rounds: if both died together, its misses are already counted when
    /// this node has taken over n-1.
    Beyond,
}

/// Where a probe goes; the shell turns it into an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAddr {
    /// ICMP echo to the slot's host name on the overlay.
    Overlay(Slot),
    /// ICMP echo to the slot's underlay (VPC) address, as EC2 reports it.
    /// Used for frontend1, the VPN hub, whose overlay is the thing in doubt.
    Underlay(Slot),
    /// A cheap EC2 API call; success is an answer. The witness for the hub.
    Ec2Api,
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// An answer, with its round-trip time.
    Reply {
        /// Round-trip time.
        rtt: Duration,
    },
    /// No answer within the timeout.
    Silent,
    /// The probe could not be sent: the target's address is unknown (not in
    /// the hosts file, or EC2 did not say in time). That is no evidence
    /// against the target: the round counts as inconclusive.
    NotSent,
}

/// Whether a running instance holds a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// No instance that is not stopped carries the slot's tags.
    Vacant,
    /// Some running (or pending, or stopping) instance carries them.
    Held,
}

/// A confirmed fence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fenced {
    /// Instances that were stopped; empty if the slot was vacant.
    pub instances: Vec<String>,
}

/// Inputs to the core. Each is handled with the time it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Result of an [`Action::Probe`].
    Probed {
        /// The round the probe belonged to.
        round: u64,
        /// Which probe.
        target: Target,
        /// What it found.
        outcome: ProbeOutcome,
    },
    /// Result of an [`Action::CheckHolder`].
    HolderChecked {
        /// The slot that was looked up.
        slot: Slot,
        /// The answer, or why there is none.
        result: Result<Holder, String>,
    },
    /// Result of an [`Action::Fence`]. `Ok` only when every holder is
    /// confirmed stopped.
    FenceDone {
        /// The slot that was fenced.
        slot: Slot,
        /// What was stopped, or why the fence failed.
        result: Result<Fenced, String>,
    },
    /// Result of an [`Action::TakeOver`]. `Ok` only when the new identity is
    /// up (state persisted, tags updated, VPN connected with the address).
    TakeOverDone {
        /// The slot taken.
        to: Slot,
        /// Success, or why not.
        result: Result<(), String>,
    },
}

/// Work the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send one probe and report an [`Input::Probed`] within `timeout`.
    Probe {
        /// Round number to echo back.
        round: u64,
        /// Which probe of the round.
        target: Target,
        /// Where to send it.
        addr: ProbeAddr,
        /// How long to wait for an answer.
        timeout: Duration,
    },
    /// Look up whether a running instance holds `slot`; report
    /// [`Input::HolderChecked`].
    CheckHolder {
        /// The slot to look up.
        slot: Slot,
    },
    /// Stop every instance holding `slot` and wait until it is stopped;
    /// report [`Input::FenceDone`].
    Fence {
        /// The dead peer's slot.
        slot: Slot,
        /// 1 for the first try.
        attempt: u32,
    },
    /// Move this node from `from` to `to`; report [`Input::TakeOverDone`].
    TakeOver {
        /// This node's current slot.
        from: Slot,
        /// The slot to take.
        to: Slot,
        /// 1 for the first try.
        attempt: u32,
    },
    /// Announce a completed takeover (outbox, broker, CloudWatch).
    Announce(Transition),
}

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
        /// Failed attempt number.
        attempt: u32,
        /// Why.
        error: String,
        /// Delay before the next attempt.
        retry_in: Duration,
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
        /// Failed attempt number.
        attempt: u32,
        /// Why.
        error: String,
        /// Delay before the next attempt.
        retry_in: Duration,
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
    /// Consecutive missed rounds.
    pub misses: u32,
    /// Misses that declare death.
    pub misses_to_declare: u32,
    /// RTT of the last peer answer.
    pub last_rtt: Option<Duration>,
    /// Whether the last round was inconclusive (witness silent too).
    pub cut_off: bool,
    /// Whether rounds are degraded: frontend1 is silent on the overlay, so
    /// the peer is probed on its underlay with EC2 as witness.
    pub degraded: bool,
    /// Rounds evaluated since start.
    pub rounds: u64,
    /// Current fence/takeover attempt (0 when none).
    pub attempt: u32,
    /// Last fence/takeover error.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    Watching,
    Fencing {
        attempt: u32,
        in_flight: bool,
        retry_at: Option<Instant>,
        /// The peer answered while a fence was in flight: if that fence
        /// fails, go back to watching instead of retrying.
        cancel: bool,
    },
    TakingOver {
        attempt: u32,
        in_flight: bool,
        retry_at: Option<Instant>,
        fenced: Fenced,
        vacant: bool,
    },
}

#[derive(Debug, Clone)]
struct Round {
    seq: u64,
    started: Instant,
    peer: Option<ProbeOutcome>,
    witness: Option<ProbeOutcome>,
    /// Probed on the underlay with EC2 as witness (the overlay is down).
    degraded: bool,
    /// n-2 was probed too.
    beyond_probed: bool,
    /// What it found.
    beyond: Option<ProbeOutcome>,
}

/// The chain monitor of one node. See the module docs for the rule.
#[derive(Debug)]
pub struct Monitor {
    cfg: CoreConfig,
    me: Slot,
    phase: Phase,
    round: Option<Round>,
    next_seq: u64,
    next_round_at: Option<Instant>,
    misses: u32,
    silent_since: Option<Instant>,
    declared_at: Option<Instant>,
    fenced_at: Option<Instant>,
    last_rtt: Option<Duration>,
    cut_off: bool,
    rounds: u64,
    holder_check_in_flight: bool,
    /// The last evaluated round had no answer from the peer.
    peer_silent: bool,
    /// The peer answered at least once since this monitor started.
    peer_seen: bool,
    /// Consecutive missed rounds of n-2 (see [`Target::Beyond`]).
    beyond_misses: u32,
    /// Start of n-2's first missed round.
    beyond_silent_since: Option<Instant>,
    /// Until then, a peer never seen is not declared dead.
    grace_until: Instant,
    /// frontend1 answered on the overlay lately; when not, rounds are
    /// degraded: the peer is probed on its underlay with EC2 as witness.
    overlay_up: bool,
    last_error: Option<String>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

impl Monitor {
    /// A monitor for a node holding `me`, starting at `now`. The first round
    /// starts at once.
    pub fn new(cfg: CoreConfig, me: Slot, now: Instant) -> Self {
        let grace_until = now + cfg.startup_grace;
        let mut m = Monitor {
            cfg,
            me,
            phase: Phase::Idle,
            round: None,
            next_seq: 1,
            next_round_at: None,
            misses: 0,
            silent_since: None,
            declared_at: None,
            fenced_at: None,
            last_rtt: None,
            cut_off: false,
            rounds: 0,
            holder_check_in_flight: false,
            peer_silent: false,
            peer_seen: false,
            beyond_misses: 0,
            beyond_silent_since: None,
            grace_until,
            overlay_up: true,
            last_error: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        };
        m.watch_predecessor(now);
        m
    }

    /// This node's slot.
    pub fn me(&self) -> Slot {
        self.me
    }

    /// Rounds evaluated since start.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// The watched peer, if any.
    pub fn peer(&self) -> Option<Slot> {
        self.me.predecessor()
    }

    /// The next action to perform.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event to log.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Monitor::handle_timeout`] must be called next; `None` when
    /// nothing is scheduled (idle, or waiting for a result).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = match &self.phase {
            Phase::Fencing { retry_at, .. } | Phase::TakingOver { retry_at, .. } => *retry_at,
            _ => None,
        };
        [self.next_round_at, retry].into_iter().flatten().min()
    }

    /// A snapshot for status reports.
    pub fn snapshot(&self) -> Snapshot {
        let (phase, attempt) = match &self.phase {
            Phase::Idle => (PhaseName::Idle, 0),
            Phase::Watching => (PhaseName::Watching, 0),
            Phase::Fencing { attempt, .. } => (PhaseName::Fencing, *attempt),
            Phase::TakingOver { attempt, .. } => (PhaseName::TakingOver, *attempt),
        };
        Snapshot {
            me: self.me,
            peer: self.peer(),
            phase,
            misses: self.misses,
            misses_to_declare: self.cfg.misses,
            last_rtt: self.last_rtt,
            cut_off: self.cut_off,
            degraded: !self.overlay_up,
            rounds: self.rounds,
            attempt,
            last_error: self.last_error.clone(),
        }
    }

    /// Handle due timers: retries, the end of an unfinished round, and the
    /// start of the next round.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle_retry(now);
        if let Some(at) = self.next_round_at
            && now >= at
        {
            if self.round.is_some() {
                // The shell did not report both results in a whole
                // interval: count nothing rather than guess.
                self.evaluate_round(now);
            }
            if self.probing() {
                self.start_round(now, at);
            } else {
                self.next_round_at = None;
            }
        }
    }

    /// Handle one input that happened at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Probed {
                round,
                target,
                outcome,
            } => self.on_probed(now, round, target, outcome),
            Input::HolderChecked { slot, result } => self.on_holder(now, slot, result),
            Input::FenceDone { slot, result } => self.on_fence_done(now, slot, result),
            Input::TakeOverDone { to, result } => self.on_takeover_done(now, to, result),
        }
    }

    fn probing(&self) -> bool {
        matches!(self.phase, Phase::Watching | Phase::Fencing { .. })
    }

    fn watch_predecessor(&mut self, now: Instant) {
        self.round = None;
        self.misses = 0;
        self.silent_since = None;
        self.declared_at = None;
        self.fenced_at = None;
        self.last_rtt = None;
        self.cut_off = false;
        self.holder_check_in_flight = false;
        self.peer_silent = false;
        self.beyond_misses = 0;
        self.beyond_silent_since = None;
        self.overlay_up = true;
        self.last_error = None;
        let peer = self.peer();
        self.events.push_back(Event::Watching { me: self.me, peer });
        if peer.is_some() {
            self.phase = Phase::Watching;
            self.next_round_at = Some(now);
        } else {
            self.phase = Phase::Idle;
            self.next_round_at = None;
        }
    }

    fn start_round(&mut self, now: Instant, scheduled: Instant) {
        let Some(peer) = self.peer() else {
            return;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.round = Some(Round {
            seq,
            started: now,
            peer: None,
            witness: None,
            degraded: false,
            beyond_probed: false,
            beyond: None,
        });
        // Keep a steady cadence, but after a stall start afresh instead of
        // firing a burst of overdue rounds.
        let next = scheduled + self.cfg.interval;
        self.next_round_at = Some(if next > now {
            next
        } else {
            now + self.cfg.interval
        });
        let hub = Slot::new(Role::Frontend, 1);
        let degraded = !peer.is_hub() && !self.overlay_up;
        if let Some(round) = self.round.as_mut() {
            round.degraded = degraded;
        }
        let mut probes = if peer.is_hub() || degraded {
            vec![
                (Target::Peer, ProbeAddr::Underlay(peer)),
                (Target::Witness, ProbeAddr::Ec2Api),
            ]
        } else {
            vec![
                (Target::Peer, ProbeAddr::Overlay(peer)),
                (Target::Witness, ProbeAddr::Overlay(hub)),
            ]
        };
        if degraded {
            probes.push((Target::Overlay, ProbeAddr::Overlay(hub)));
        }
        // Look ahead while the peer is missing: its predecessor may have died
        // with it (never the hub, whose overlay probe is the witness itself).
        if let Some(beyond) = peer.predecessor()
            && self.misses > 0
            && !degraded
            && !peer.is_hub()
            && !beyond.is_hub()
        {
            probes.push((Target::Beyond, ProbeAddr::Overlay(beyond)));
            if let Some(round) = self.round.as_mut() {
                round.beyond_probed = true;
            }
        }
        for (target, addr) in probes {
            self.actions.push_back(Action::Probe {
                round: seq,
                target,
                addr,
                timeout: self.cfg.probe_timeout,
            });
        }
    }

    fn on_probed(&mut self, now: Instant, seq: u64, target: Target, outcome: ProbeOutcome) {
        if target == Target::Overlay {
            // Only tells whether the overlay is back; accepted for the
            // current round and the one just evaluated.
            if seq + 1 >= self.next_seq && matches!(outcome, ProbeOutcome::Reply { .. }) {
                self.set_overlay_up(true);
            }
            return;
        }
        let Some(round) = self.round.as_mut() else {
            return;
        };
        if round.seq != seq {
            return; // a late result of an earlier round
        }
        match target {
            Target::Peer => round.peer = Some(outcome),
            Target::Witness => round.witness = Some(outcome),
            Target::Beyond => round.beyond = Some(outcome),
            Target::Overlay => {}
        }
        // An answer from the peer settles the round at once.
        let peer_answered = matches!(round.peer, Some(ProbeOutcome::Reply { .. }));
        let complete = round.peer.is_some()
            && round.witness.is_some()
            && (!round.beyond_probed || round.beyond.is_some());
        if peer_answered || complete {
            self.evaluate_round(now);
        }
    }

    fn evaluate_round(&mut self, now: Instant) {
        let Some(round) = self.round.take() else {
            return;
        };
        let Some(peer) = self.peer() else {
            return;
        };
        self.rounds += 1;
        if !round.degraded && !peer.is_hub() {
            // In a normal round the witness is frontend1 on the overlay.
            let up = matches!(round.witness, Some(ProbeOutcome::Reply { .. }))
                || matches!(round.peer, Some(ProbeOutcome::Reply { .. }));
            self.set_overlay_up(up);
        }
        // n-2's streak counts only in missed rounds where it was probed.
        let beyond_silent = round.beyond_probed
            && round.beyond == Some(ProbeOutcome::Silent)
            && matches!(round.peer, Some(ProbeOutcome::Silent))
            && matches!(round.witness, Some(ProbeOutcome::Reply { .. }));
        if beyond_silent {
            self.beyond_misses += 1;
            if self.beyond_misses == 1 {
                self.beyond_silent_since = Some(round.started);
            }
        } else {
            self.beyond_misses = 0;
            self.beyond_silent_since = None;
        }
        match (round.peer, round.witness) {
            (Some(ProbeOutcome::Reply { rtt }), _) => {
                self.last_rtt = Some(rtt);
                self.cut_off = false;
                self.peer_silent = false;
                self.peer_seen = true;
                if self.misses > 0 {
                    self.events.push_back(Event::Recovered {
                        peer,
                        after: self.misses,
                    });
                }
                self.misses = 0;
                self.silent_since = None;
                self.peer_alive();
            }
            (Some(ProbeOutcome::Silent), Some(ProbeOutcome::Reply { .. })) => {
                self.cut_off = false;
                self.peer_silent = true;
                self.misses += 1;
                if self.misses == 1 {
                    self.silent_since = Some(round.started);
                }
                self.events.push_back(Event::Miss {
                    peer,
                    misses: self.misses,
                    of: self.cfg.misses,
                });
                let in_grace = !self.peer_seen && now < self.grace_until;
                if self.phase == Phase::Watching {
                    if self.misses >= self.cfg.misses && !in_grace {
                        self.declare_dead(now, peer);
                    } else {
                        self.check_holder(peer);
                    }
                }
            }
            _ => {
                // Logged once per streak of inconclusive rounds.
                if !self.cut_off || self.misses > 0 {
                    self.events.push_back(Event::Inconclusive {
                        peer,
                        discarded: self.misses,
                    });
                }
                self.cut_off = true;
                self.peer_silent = true;
                self.misses = 0;
                self.silent_since = None;
                // A node that can no longer see the witness cannot vouch for
                // its verdict any more: a pending fence is called off.
                self.call_off_fence();
                // Still, a slot nobody holds can be taken: EC2's answer is
                // the witness there, and there is no holder to wrong. This
                // lets a chain heal when frontend1 and frontend2 are gone
                // together (the overlay witness is down for everyone).
                if self.phase == Phase::Watching {
                    self.check_holder(peer);
                }
            }
        }
    }

    fn set_overlay_up(&mut self, up: bool) {
        if up == self.overlay_up {
            return;
        }
        self.overlay_up = up;
        if let Some(peer) = self.peer() {
            self.events.push_back(if up {
                Event::OverlayBack { peer }
            } else {
                Event::Degraded { peer }
            });
        }
    }

    fn check_holder(&mut self, peer: Slot) {
        if !self.holder_check_in_flight {
            self.holder_check_in_flight = true;
            self.actions.push_back(Action::CheckHolder { slot: peer });
        }
    }

    /// The peer answered: a fence that is not yet confirmed is called off.
    fn peer_alive(&mut self) {
        self.call_off_fence();
    }

    /// Call off a fence that is not confirmed: at once when none is in
    /// flight, otherwise when the one in flight reports a failure (a
    /// confirmed fence still leads to a takeover: the peer is stopped).
    fn call_off_fence(&mut self) {
        let Some(peer) = self.peer() else {
            return;
        };
        if let Phase::Fencing {
            in_flight, cancel, ..
        } = &mut self.phase
        {
            if *in_flight {
                *cancel = true;
            } else {
                self.phase = Phase::Watching;
                self.declared_at = None;
                self.events.push_back(Event::FenceCancelled { peer });
            }
        }
    }

    fn declare_dead(&mut self, now: Instant, peer: Slot) {
        self.declared_at = Some(now);
        self.events.push_back(Event::PeerDead {
            peer,
            misses: self.misses,
        });
        self.phase = Phase::Fencing {
            attempt: 1,
            in_flight: true,
            retry_at: None,
            cancel: false,
        };
        self.actions.push_back(Action::Fence {
            slot: peer,
            attempt: 1,
        });
    }

    fn on_holder(&mut self, now: Instant, slot: Slot, result: Result<Holder, String>) {
        if Some(slot) != self.peer() {
            return;
        }
        self.holder_check_in_flight = false;
        // Only act while the peer is silent: a slot whose holder answers is
        // not vacant, whatever a stale look-up says.
        if result == Ok(Holder::Vacant) && self.phase == Phase::Watching && self.peer_silent {
            self.events.push_back(Event::Vacant { peer: slot });
            self.declared_at = Some(now);
            self.begin_takeover(now, Fenced::default(), true);
        }
    }

    fn on_fence_done(&mut self, now: Instant, slot: Slot, result: Result<Fenced, String>) {
        if Some(slot) != self.peer() {
            return;
        }
        let Phase::Fencing {
            attempt,
            in_flight: true,
            cancel,
            ..
        } = self.phase
        else {
            return;
        };
        match result {
            Ok(fenced) => {
                self.events.push_back(Event::FenceConfirmed {
                    peer: slot,
                    instances: fenced.instances.clone(),
                });
                self.begin_takeover(now, fenced, false);
            }
            Err(error) if cancel => {
                self.last_error = Some(error);
                self.phase = Phase::Watching;
                self.declared_at = None;
                self.events.push_back(Event::FenceCancelled { peer: slot });
            }
            Err(error) => {
                let retry_in = self.cfg.backoff(attempt);
                self.last_error = Some(error.clone());
                self.events.push_back(Event::FenceFailed {
                    peer: slot,
                    attempt,
                    error,
                    retry_in,
                });
                self.phase = Phase::Fencing {
                    attempt: attempt + 1,
                    in_flight: false,
                    retry_at: Some(now + retry_in),
                    cancel: false,
                };
            }
        }
    }

    fn begin_takeover(&mut self, now: Instant, fenced: Fenced, vacant: bool) {
        let Some(peer) = self.peer() else {
            return;
        };
        self.fenced_at = Some(now);
        self.round = None;
        self.next_round_at = None;
        self.phase = Phase::TakingOver {
            attempt: 1,
            in_flight: true,
            retry_at: None,
            fenced,
            vacant,
        };
        self.actions.push_back(Action::TakeOver {
            from: self.me,
            to: peer,
            attempt: 1,
        });
    }

    fn on_takeover_done(&mut self, now: Instant, to: Slot, result: Result<(), String>) {
        if Some(to) != self.peer() {
            return;
        }
        let Phase::TakingOver {
            attempt,
            in_flight: true,
            fenced,
            vacant,
            ..
        } = &self.phase
        else {
            return;
        };
        let (attempt, fenced, vacant) = (*attempt, fenced.clone(), *vacant);
        match result {
            Ok(()) => {
                let from = self.me;
                let transition = Transition {
                    from,
                    to,
                    fenced: fenced.instances,
                    vacant,
                    silent_since: self.silent_since,
                    declared_at: self.declared_at.unwrap_or(now),
                    fenced_at: self.fenced_at.unwrap_or(now),
                    identity_up_at: now,
                };
                let carried = (self.beyond_misses, self.beyond_silent_since);
                self.me = to;
                self.events.push_back(Event::TookOver { from, to });
                self.actions.push_back(Action::Announce(transition));
                self.watch_predecessor(now);
                // The new peer was n-2: its misses, seen with this node's
                // witness while it took over, count. One more silent round
                // declares it dead.
                if carried.0 > 0 {
                    self.misses = carried.0;
                    self.silent_since = carried.1;
                    self.peer_silent = true;
                    self.peer_seen = true;
                }
            }
            Err(error) => {
                let retry_in = self.cfg.backoff(attempt);
                self.last_error = Some(error.clone());
                self.events.push_back(Event::TakeOverFailed {
                    to,
                    attempt,
                    error,
                    retry_in,
                });
                self.phase = Phase::TakingOver {
                    attempt: attempt + 1,
                    in_flight: false,
                    retry_at: Some(now + retry_in),
                    fenced,
                    vacant,
                };
            }
        }
    }

    fn handle_retry(&mut self, now: Instant) {
        let Some(peer) = self.peer() else {
            return;
        };
        match &mut self.phase {
            Phase::Fencing {
                attempt,
                in_flight,
                retry_at: Some(at),
                ..
            } if now >= *at => {
                *in_flight = true;
                let attempt = *attempt;
                self.phase = Phase::Fencing {
                    attempt,
                    in_flight: true,
                    retry_at: None,
                    cancel: false,
                };
                self.actions.push_back(Action::Fence {
                    slot: peer,
                    attempt,
                });
            }
            Phase::TakingOver {
                attempt,
                in_flight,
                retry_at,
                ..
            } if retry_at.is_some_and(|at| now >= at) => {
                *in_flight = true;
                *retry_at = None;
                let attempt = *attempt;
                self.actions.push_back(Action::TakeOver {
                    from: self.me,
                    to: peer,
                    attempt,
                });
            }
            _ => {}
        }
    }
}
