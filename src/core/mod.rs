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
//!   underlay address and on the overlay, and the witness is a successful
//!   EC2 API call: the hub is alive while it answers anywhere.
//! * A round is a *miss* only when the peer is silent and the witness
//!   answered. A round in which the witness is silent too (this node is cut
//!   off, or the hub is down) is inconclusive and breaks the streak: a node
//!   that cannot see the witness never accuses anyone.
//! * Any answer from the peer resets the count. `misses` consecutive misses
//!   declare the peer dead — except during the startup grace: a peer that
//!   has not answered once since this node started may still be booting
//!   (the whole fleet starts at once), so it is declared dead only after
//!   `startup_grace` has passed.
//! * Second opinion: from the first miss on, the core asks other members to
//!   probe the peer from where they are ([`Action::AskHelpers`], one
//!   request at a time). Any helper that reaches the peer clears its misses:
//!   a one-way or pairwise path fault never accuses a healthy peer. A peer
//!   is declared dead only when helpers answered and none reached it, or
//!   when there is no other member to ask. When helpers were asked and none
//!   answered, this node may be the sick one (Lifeguard): the witness rule
//!   decides, after twice the misses. Degraded rounds are judged by the
//!   witness rule alone (the members' channel runs on the overlay); the
//!   hub's helpers are asked on the underlay. Off when `second_opinion` is
//!   off (no members' key).
//! * Sick hub: with the second opinion on, frontend2 probes the hub on the
//!   overlay too. When the hub's underlay answers but its overlay has been
//!   silent for `hub_overlay_grace` (longer than the hub needs to restart a
//!   hung OpenVPN itself), its rounds count as misses, helpers are asked
//!   over the underlay, and only their confirmation (none reaches the hub's
//!   overlay) declares it dead: no fallback to the witness rule here.
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
//! * Planned switchover: a holder that hands its slot over takes its
//!   identity down, tags itself `released` in EC2 and resigns to its
//!   watcher. On the word the watcher asks EC2 at once and every round for
//!   a while whether anyone holds the slot; two look-ups that find it
//!   vacant take it, without a fence, even while the old holder still
//!   answers (the hub's underlay does). The word alone takes nothing: only
//!   EC2's answer, which the old holder wrote about itself, does.
//! * After a takeover it announces the [`Transition`] and watches its new
//!   predecessor at once.
//! * The tail: ID 1 watches the last member of its role ([`Input::Tail`],
//!   told by the shell from the registry), so that the tail's death is not
//!   unseen. A dead tail is fenced like any peer but never taken over: the
//!   chain is one shorter ([`Event::TailLost`]). A tail not heard since it
//!   became the tail has a grace (it may be mid-takeover), and a tail whose
//!   slot goes vacant (it moved down the chain) is dropped until the next.
//! * The hub first: frontend3, whose predecessor frontend2 (the hub's only
//!   watcher) is dead while the overlay is down, judges the hub before a
//!   takeover that would connect through it ([`Event::Detour`]); if the hub
//!   is dead it takes the hub's place, and the gaps behind are filled as
//!   vacancies. So does any frontend whose takeover failed.
//! * Two dead together: a node whose fenced predecessor's own predecessor
//!   was silent in every look-ahead round judges that one first too (a
//!   detour), and if it is dead takes its place directly: one takeover
//!   instead of two, and one transition naming both fences.
//! * A fence names the instance judged ([`Judged`], from the look-ups);
//!   the shell answers [`Input::Superseded`] when another instance holds
//!   the slot now, and the node watches it instead.

mod config;
mod detector;
mod io;
mod judged;
mod opinion;
mod plan;
mod report;
mod view;

use std::collections::VecDeque;
use std::time::Instant;

pub use config::CoreConfig;
pub use io::{Action, Fenced, Holder, Input, Judged, ProbeAddr, ProbeOutcome, Target, Verdict};
use plan::Phase;
pub use plan::VACANCY_CONFIRM;
pub use report::{Event, Failure, PhaseName, Snapshot, Transition, WatchStatus};
use view::PeerView;

use crate::layout::Slot;

#[cfg(test)]
mod tests;

/// The chain monitor of one node. See the module docs for the rule.
#[derive(Debug)]
pub struct Monitor {
    cfg: CoreConfig,
    me: Slot,
    phase: Phase,
    next_seq: u64,
    next_round_at: Option<Instant>,
    rounds: u64,
    /// The peer answered at least once since this monitor started.
    peer_seen: bool,
    /// The peer whose misses were carried over from the look-ahead at the
    /// last takeover, until it answers: its fence is chained to that
    /// takeover.
    chained_peer: Option<Slot>,
    /// Until then, a peer never seen is not declared dead.
    grace_until: Instant,
    /// frontend1 answered on the overlay lately; when not, rounds are
    /// degraded: the peer is probed on its underlay with EC2 as witness.
    overlay_up: bool,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    /// What this node knows of its current peer; forgotten when the peer
    /// changes (see `PeerView`).
    view: PeerView,
    /// The last member of this node's role, as the registry last said
    /// ([`Input::Tail`]): ID 1 watches it, so the tail is watched too.
    tail: Option<Slot>,
    /// A new tail told while a fence of the old one was under way: watched
    /// once it is over.
    next_tail: Option<Option<Slot>>,
    /// A dead predecessor fenced, whose takeover waits while this node
    /// judges the silent hub the takeover needs (see [`Detour`]).
    detour: Option<Detour>,
}

/// The dead predecessor's takeover should wait: either it needs the hub
/// (a client connects through it) and the hub is silent, or the slot before
/// it has been silent too for a whole detection window (they died
/// together, as backend1 and backend2 in one zone). The taker judges that
/// `target` first, with the same rules. If it answers, the takeover of
/// `slot` goes ahead; if it is dead, the taker fences it and takes its
/// place at once (one takeover instead of two, its fence counted as part
/// of the same failure), and the gaps behind are filled as vacancies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Detour {
    /// The slot judged first: the hub, or the predecessor's predecessor.
    target: Slot,
    /// The dead predecessor, fenced (or vacant).
    slot: Slot,
    /// Its fence.
    fenced: Fenced,
    /// It was vacant.
    vacant: bool,
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
            next_seq: 1,
            next_round_at: None,
            rounds: 0,
            peer_seen: false,
            chained_peer: None,
            grace_until,
            overlay_up: true,
            view: PeerView::default(),
            tail: None,
            next_tail: None,
            detour: None,
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

    /// The watched peer, if any: the predecessor (ID n-1); for ID 1 the
    /// last member of its role (the tail), so that the tail is watched too;
    /// the slot a takeover waits on while it is judged (a detour).
    pub fn peer(&self) -> Option<Slot> {
        if let Some(d) = &self.detour {
            return Some(d.target);
        }
        match self.me.predecessor() {
            Some(p) => Some(p),
            None => self
                .tail
                .filter(|t| *t != self.me && t.role == self.me.role),
        }
    }

    /// This node watches the tail of its role (it is ID 1): a dead tail is
    /// fenced, never taken over; the chain is one shorter.
    pub fn watches_tail(&self) -> bool {
        self.detour.is_none() && self.me.predecessor().is_none() && self.peer().is_some()
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
        let watch = WatchStatus {
            misses: self.view.misses,
            misses_to_declare: self.cfg.misses,
            cut_off: self.view.cut_off,
            degraded: !self.overlay_up,
            rounds: self.rounds,
            attempt,
            last_error: self.view.last_error.clone(),
        };
        let (me, peer, last_rtt) = (self.me, self.peer(), self.view.last_rtt);
        Snapshot {
            me,
            peer,
            phase,
            last_rtt,
            watch,
        }
    }

    /// Handle due timers: retries, the end of an unfinished round, and the
    /// start of the next round.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Idle | Phase::Watching)
            && let Some(tail) = self.next_tail.take()
        {
            self.on_tail(now, tail);
        }
        self.handle_retry(now);
        if let Some(at) = self.next_round_at
            && now >= at
        {
            if self.view.round.is_some() {
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
            Input::HelpersSaid { round, verdict } => self.on_helpers(now, round, verdict),
            Input::Resigned { slot } => self.on_resigned(now, slot),
            Input::Reconfigure(cfg) => self.cfg = cfg,
            Input::Superseded { slot, holder } => self.on_superseded(now, slot, holder),
            Input::ResumeFence { slot, judged } => self.on_resume_fence(now, slot, judged),
            Input::Tail { slot } => self.on_tail(now, slot),
        }
    }

    fn probing(&self) -> bool {
        matches!(self.phase, Phase::Watching | Phase::Fencing { .. })
    }

    /// The registry's tail of this node's role. ID 1 watches it; when it
    /// changes, the new one is watched from scratch (a fence of the old one
    /// under way finishes first).
    fn on_tail(&mut self, now: Instant, slot: Option<Slot>) {
        if self.me.predecessor().is_some() || self.detour.is_some() {
            self.tail = slot;
            return;
        }
        if !matches!(self.phase, Phase::Idle | Phase::Watching) {
            // The fence of the old tail finishes first.
            self.next_tail = Some(slot);
            return;
        }
        self.next_tail = None;
        if self.tail != slot {
            self.tail = slot;
            self.watch_predecessor(now);
        }
    }

    fn watch_predecessor(&mut self, now: Instant) {
        self.view = PeerView {
            watched_since: Some(now),
            ..PeerView::default()
        };
        self.overlay_up = true;
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
}
