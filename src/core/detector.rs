//! The failure detector: probe rounds (peer, witness, the overlay and the
//! peer's own predecessor), their evaluation into misses, inconclusive
//! rounds and answers, and the degraded mode when the overlay is down.

use std::time::{Duration, Instant};

use super::{Action, Event, Monitor, Phase, ProbeAddr, ProbeOutcome, Target};
use crate::layout::{Role, Slot};

#[derive(Debug, Clone)]
pub(super) struct Round {
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
    /// The hub was probed on the overlay too (see [`Target::HubOverlay`]).
    hub_overlay_probed: bool,
    /// What it found.
    hub_overlay: Option<ProbeOutcome>,
}

impl Monitor {
    pub(super) fn start_round(&mut self, now: Instant, scheduled: Instant) {
        let Some(peer) = self.peer() else {
            return;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let degraded = !peer.is_hub() && !self.overlay_up;
        let (interval, timeout) = self.pace(peer);
        self.view.round = Some(Round {
            seq,
            started: now,
            peer: None,
            witness: None,
            degraded,
            beyond_probed: false,
            beyond: None,
            hub_overlay_probed: false,
            hub_overlay: None,
        });
        // Keep a steady cadence, but after a stall start afresh instead of
        // firing a burst of overdue rounds.
        let next = scheduled + interval;
        self.next_round_at = Some(if next > now { next } else { now + interval });
        let hub = Slot::new(Role::Frontend, 1);
        let mut probes = if peer.is_hub() || degraded {
            vec![
                (Target::Peer, ProbeAddr::Underlay(peer)),
                (Target::Witness, ProbeAddr::Ec2Api),
            ]
        } else if self.me.is_hub() {
            // The hub watching the tail: its own overlay is no witness;
            // EC2 is (a hub cut off reaches neither).
            vec![
                (Target::Peer, ProbeAddr::Overlay(peer)),
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
        // The hub is alive while it answers anywhere: on its underlay, or
        // on the overlay it carries (a path fault to its VPC address alone,
        // a security group without ICMP say, is no death).
        if peer.is_hub() {
            probes.push((Target::HubOverlay, ProbeAddr::Overlay(hub)));
            if let Some(round) = self.view.round.as_mut() {
                round.hub_overlay_probed = true;
            }
        }
        // Look ahead while the peer is missing: its predecessor may have died
        // with it (never the hub, whose overlay probe is the witness itself).
        let predecessor = self.me.predecessor() == Some(peer);
        if let Some(beyond) = peer.predecessor()
            && predecessor
            && self.view.misses > 0
            && !degraded
            && !peer.is_hub()
            && !beyond.is_hub()
        {
            probes.push((Target::Beyond, ProbeAddr::Overlay(beyond)));
            self.view.beyond_is_hub = false;
            if let Some(round) = self.view.round.as_mut() {
                round.beyond_probed = true;
            }
        } else if degraded
            && predecessor
            && self.view.misses > 0
            && peer.role == Role::Frontend
            && !peer.is_hub()
        {
            // The overlay is down and the predecessor missing: the hub may
            // have died with it, and the predecessor's takeover would need
            // it. Its underlay's silence counts towards a detour.
            probes.push((Target::Beyond, ProbeAddr::Underlay(hub)));
            self.view.beyond_is_hub = true;
            if let Some(round) = self.view.round.as_mut() {
                round.beyond_probed = true;
            }
        }
        for (target, addr) in probes {
            self.actions.push_back(Action::Probe {
                round: seq,
                target,
                addr,
                timeout,
            });
        }
    }

    /// The interval and probe timeout of rounds on `peer`: the overlay's
    /// fast pace, or the API's when EC2 is the witness (the hub, watched on
    /// its underlay, or any peer while the overlay is down). A round must
    /// end before the next starts, and a `DescribeInstances` takes longer
    /// than an echo on the overlay.
    pub(super) fn pace(&self, peer: Slot) -> (Duration, Duration) {
        let c = &self.cfg;
        if peer.is_hub() || !self.overlay_up || self.me.is_hub() {
            (
                c.api_interval.max(c.interval),
                c.api_timeout.max(c.probe_timeout),
            )
        } else {
            (c.interval, c.probe_timeout)
        }
    }

    pub(super) fn on_probed(
        &mut self,
        now: Instant,
        seq: u64,
        target: Target,
        outcome: ProbeOutcome,
    ) {
        if target == Target::Overlay {
            // Only tells whether the overlay is back; accepted for the
            // current round and the one just evaluated.
            if seq + 1 >= self.next_seq && matches!(outcome, ProbeOutcome::Reply { .. }) {
                self.set_overlay_up(true);
                // Back to the overlay's pace now, not after the slower
                // round already scheduled.
                let soon = now + self.cfg.interval;
                self.next_round_at = self.next_round_at.map(|at| at.min(soon));
            }
            return;
        }
        let Some(round) = self.view.round.as_mut() else {
            return;
        };
        if round.seq != seq {
            return; // a late result of an earlier round
        }
        match target {
            Target::Peer => round.peer = Some(outcome),
            Target::Witness => round.witness = Some(outcome),
            Target::Beyond => round.beyond = Some(outcome),
            Target::HubOverlay => round.hub_overlay = Some(outcome),
            Target::Overlay => {}
        }
        // An answer from the peer settles the round at once (for the hub, an
        // answer on its overlay, or on its underlay once its overlay probe is
        // in too: a sick hub is told by the two together).
        let overlay_answered = matches!(round.hub_overlay, Some(ProbeOutcome::Reply { .. }));
        let peer_answered = overlay_answered
            || (matches!(round.peer, Some(ProbeOutcome::Reply { .. }))
                && (!round.hub_overlay_probed || round.hub_overlay.is_some()));
        let complete = round.peer.is_some()
            && round.witness.is_some()
            && (!round.beyond_probed || round.beyond.is_some())
            && (!round.hub_overlay_probed || round.hub_overlay.is_some());
        if peer_answered || complete {
            self.evaluate_round(now);
        }
    }

    pub(super) fn evaluate_round(&mut self, now: Instant) {
        let Some(round) = self.view.round.take() else {
            return;
        };
        let Some(peer) = self.peer() else {
            return;
        };
        self.rounds += 1;
        if self.released(now) && self.phase == Phase::Watching {
            self.check_holder(peer);
        }
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
            self.view.beyond_misses += 1;
            if self.view.beyond_misses == 1 {
                self.view.beyond_silent_since = Some(round.started);
            }
        } else {
            self.view.beyond_misses = 0;
            self.view.beyond_silent_since = None;
        }
        // Counted only while this node can see its witness (EC2): a node
        // that cannot accuses nobody, a sick hub included.
        let witness_up = matches!(round.witness, Some(ProbeOutcome::Reply { .. }));
        self.track_hub_overlay(now, &round, peer);
        if self.view.sick_hub && witness_up {
            self.view.last_rtt = None;
            self.view.cut_off = false;
            self.view.peer_silent = true;
            self.count_miss(now, peer, round.seq, round.started);
            return;
        }
        // The hub answering on its overlay answers for it, whatever its
        // underlay said.
        let peer_outcome = match round.hub_overlay {
            Some(reply @ ProbeOutcome::Reply { .. }) if round.hub_overlay_probed => Some(reply),
            _ => round.peer,
        };
        match (peer_outcome, round.witness) {
            (Some(ProbeOutcome::Reply { rtt }), _) => {
                self.view.last_rtt = Some(rtt);
                self.view.cut_off = false;
                self.view.peer_silent = false;
                self.view.heard = true;
                // Seen as it is judged: an answer on the underlay while this
                // node's overlay is down shows the instance up, not its
                // identity (booting, its first handshake refused), so the
                // startup grace goes on. The hub is judged on either.
                if !round.degraded || peer.is_hub() {
                    self.peer_seen = true;
                }
                if self.view.misses > 0 {
                    self.events.push_back(Event::Recovered {
                        peer,
                        after: self.view.misses,
                    });
                }
                self.view.misses = 0;
                self.view.silent_since = None;
                self.view.resigned_until = None;
                self.end_streak();
                self.peer_alive(now);
            }
            (Some(ProbeOutcome::Silent), Some(ProbeOutcome::Reply { .. })) => {
                self.view.cut_off = false;
                self.view.peer_silent = true;
                self.count_miss(now, peer, round.seq, round.started);
            }
            _ => {
                // Logged once per streak of inconclusive rounds.
                if !self.view.cut_off || self.view.misses > 0 {
                    self.events.push_back(Event::Inconclusive {
                        peer,
                        discarded: self.view.misses,
                    });
                }
                self.view.cut_off = true;
                self.view.peer_silent = true;
                self.view.misses = 0;
                self.view.silent_since = None;
                self.end_streak();
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

    /// A sick hub: its underlay answers while its overlay has been silent
    /// for longer than it takes to restart its own OpenVPN. Sets
    /// `sick_hub` (and says so once when it turns).
    fn track_hub_overlay(&mut self, now: Instant, round: &Round, peer: Slot) {
        // Only with the second opinion: its helpers must confirm a sick hub.
        let overlay_silent = self.cfg.second_opinion
            && round.hub_overlay_probed
            && round.hub_overlay == Some(ProbeOutcome::Silent)
            && matches!(round.peer, Some(ProbeOutcome::Reply { .. }));
        if overlay_silent {
            self.view.hub_silent_since.get_or_insert(round.started);
        } else {
            self.view.hub_silent_since = None;
        }
        let was_sick = self.view.sick_hub;
        let silent_for = self
            .view
            .hub_silent_since
            .map(|since| now.saturating_duration_since(since));
        self.view.sick_hub = silent_for.is_some_and(|d| d >= self.cfg.hub_overlay_grace);
        if self.view.sick_hub && !was_sick {
            self.events.push_back(Event::SickHub {
                peer,
                silent_for: silent_for.unwrap_or_default(),
            });
        }
    }

    /// One missed round (the peer silent while the witness answered, or a
    /// sick hub).
    fn count_miss(&mut self, now: Instant, peer: Slot, seq: u64, started: Instant) {
        self.view.misses += 1;
        if self.view.misses == 1 {
            self.view.silent_since = Some(started);
        }
        if self.view.streak_seq.is_none() {
            self.view.streak_seq = Some(seq);
            self.view.verdict = None;
        }
        self.events.push_back(Event::Miss {
            peer,
            misses: self.view.misses,
            of: self.misses_needed(now),
        });
        if self.phase != Phase::Watching {
            return;
        }
        self.ask_helpers(seq, peer);
        let need = self.misses_needed(now);
        if self.view.misses >= need && !self.in_grace(now) {
            match self.second_opinion(need) {
                Ok(()) => self.declare_dead(now, peer),
                Err(why) => {
                    self.events.push_back(Event::Withheld {
                        peer,
                        misses: self.view.misses,
                        why,
                    });
                    self.check_holder(peer);
                }
            }
        } else {
            self.check_holder(peer);
        }
    }

    /// Misses that make a death: `probe.misses`, or one while the peer's
    /// resignation holds (see [`Monitor::on_resigned`]).
    pub(super) fn misses_needed(&self, now: Instant) -> u32 {
        if self.resigned(now) {
            1
        } else {
            self.cfg.misses
        }
    }

    /// The holder of `slot` said it gave up its ID (its service failed) and
    /// took its identity down. When `slot` is the watched peer, its very
    /// next missed round is enough for a death, for as long as `misses`
    /// rounds would have taken; the second opinion is still needed, and an
    /// answer from the peer ends it. So a resignation only saves time: a
    /// false one (a replay, a key holder lying) cannot fence a peer that
    /// answers, and the hub, judged on its underlay, never resigns.
    /// Whatever the peer, the word also opens the handover window (see
    /// `released`): how the hub, which never resigns otherwise, is handed
    /// over.
    pub(super) fn on_resigned(&mut self, now: Instant, slot: Slot) {
        let Some(peer) = self.peer() else {
            return;
        };
        if slot != peer || self.phase != Phase::Watching {
            return;
        }
        if !self.released(now) {
            self.view.released_until = Some(now + self.pace(peer).0 * self.cfg.misses);
            self.check_holder(peer);
        }
        if peer.is_hub() {
            self.events.push_back(Event::HandingOver { peer });
            return;
        }
        if self.resigned(now) {
            return;
        }
        self.view.resigned_until = Some(now + self.pace(peer).0 * self.cfg.misses);
        self.events.push_back(Event::Resigned { peer });
        if self.view.misses >= 1 && !self.in_grace(now) {
            // The identity went down before the word came, and a round
            // already missed: that miss is enough.
            match self.second_opinion(1) {
                Ok(()) => self.declare_dead(now, peer),
                Err(_) => self.check_holder(peer),
            }
            return;
        }
        // Probe now rather than at the next tick (a round in flight has its
        // probe out already, and counts), and ask the helpers at the same
        // time rather than after the miss.
        if self.view.round.is_none() {
            self.start_round(now, now);
        }
        if let Some(seq) = self.view.round.as_ref().map(|r| r.seq) {
            if self.view.streak_seq.is_none() {
                self.view.streak_seq = Some(seq);
                self.view.verdict = None;
            }
            self.ask_helpers(seq, peer);
        }
    }

    pub(super) fn resigned(&self, now: Instant) -> bool {
        self.view.resigned_until.is_some_and(|until| now < until)
    }

    /// Within the handover window of the peer's resignation (`interval` x
    /// `misses`): EC2 is asked every round whether the peer released its
    /// slot, and two look-ups that find it vacant take it without a fence.
    pub(super) fn released(&self, now: Instant) -> bool {
        self.view.released_until.is_some_and(|until| now < until)
    }

    /// How long a peer that may be mid-takeover (its identity coming up
    /// through a hub that just changed) is given: three detection windows
    /// at the API's pace.
    pub(super) fn takeover_time(&self) -> Duration {
        self.cfg.api_interval.max(self.cfg.interval) * self.cfg.misses * 3
    }

    pub(super) fn in_grace(&self, now: Instant) -> bool {
        if !self.peer_seen && now < self.grace_until {
            return true;
        }
        // A predecessor that moved up to the slot ahead is this node's
        // peer again, mid-takeover until heard (unless a look-up names
        // another instance as the slot's holder).
        let mover = match (&self.view.mover, &self.view.judged) {
            (Some(m), Some(j)) => j.instance == *m,
            _ => true,
        };
        if mover && !self.view.heard && self.view.moved_up_until.is_some_and(|until| now < until) {
            return true;
        }
        // A tail not heard since it became the tail may be mid-takeover
        // too: it has the same time from when it was told.
        let grace = self.takeover_time();
        self.watches_tail()
            && !self.view.heard
            && self
                .view
                .watched_since
                .is_some_and(|since| now < since + grace)
    }

    /// Forget the second opinion of a streak that ended.
    pub(super) fn end_streak(&mut self) {
        self.view.streak_seq = None;
        self.view.verdict = None;
    }

    pub(super) fn set_overlay_up(&mut self, up: bool) {
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

    pub(super) fn check_holder(&mut self, peer: Slot) {
        if !self.view.holder_check_in_flight {
            self.view.holder_check_in_flight = true;
            self.actions.push_back(Action::CheckHolder { slot: peer });
        }
    }
}
