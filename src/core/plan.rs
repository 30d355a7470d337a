//! From a declared death to a new identity: the fence (retried with back-off,
//! called off when the peer answers or the witness is lost), the vacancy
//! fast path, and the takeover (retried until the identity is up).

use std::time::Instant;

use super::{Action, Detour, Event, Failure, Fenced, Monitor, Transition};
use crate::layout::Role;

/// How far apart two look-ups must be that both find a slot vacant before
/// it is taken (in practice those of two consecutive silent rounds): one
/// read of EC2, which is eventually consistent, may miss a tag written a
/// moment before; two reads in different rounds rarely both do, and the
/// hub's admission list settles what they miss (the higher epoch wins).
pub const VACANCY_CONFIRM: std::time::Duration = std::time::Duration::from_millis(500);
use crate::layout::Slot;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
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

impl Monitor {
    /// The peer answered: a fence that is not yet confirmed is called off.
    /// During a detour the peer is the hub: it lives, so the takeover that
    /// waited on it goes ahead.
    pub(super) fn peer_alive(&mut self, now: Instant) {
        self.chained_peer = None;
        self.call_off_fence();
        if self.detour.is_some() && self.phase == Phase::Watching {
            self.end_detour(now);
        }
    }

    /// The hub answers (or another instance holds it now): the takeover of
    /// the dead predecessor goes ahead.
    pub(super) fn end_detour(&mut self, now: Instant) {
        let Some(d) = self.detour.take() else {
            return;
        };
        self.view = super::view::PeerView::default();
        self.overlay_up = true;
        self.phase = Phase::Watching;
        self.begin_takeover(now, d.fenced, d.vacant);
    }

    /// Whether a fence of `peer` is chained to the last takeover.
    fn chained(&self, peer: Slot) -> bool {
        self.chained_peer == Some(peer)
    }

    /// Call off a fence that is not confirmed: at once when none is in
    /// flight, otherwise when the one in flight reports a failure (a
    /// confirmed fence still leads to a takeover: the peer is stopped).
    pub(super) fn call_off_fence(&mut self) {
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
                self.view.declared_at = None;
                self.events.push_back(Event::FenceCancelled { peer });
            }
        }
    }

    pub(super) fn declare_dead(&mut self, now: Instant, peer: Slot) {
        self.view.declared_at = Some(now);
        self.events.push_back(Event::PeerDead {
            peer,
            misses: self.view.misses,
        });
        self.phase = Phase::Fencing {
            attempt: 1,
            in_flight: true,
            retry_at: None,
            cancel: false,
        };
        self.actions.push_back(Action::Fence {
            slot: peer,
            judged: self.view.judged.clone(),
            attempt: 1,
            chained: self.chained(peer),
        });
    }

    /// Attempt `attempt` failed with `error` at `now`: it is the last
    /// error, and the next attempt waits the back-off; the failure and
    /// when to retry.
    fn failed(&mut self, now: Instant, attempt: u32, error: String) -> (Failure, Instant) {
        self.view.last_error = Some(error.clone());
        let retry_in = self.cfg.backoff(attempt);
        let failure = Failure {
            attempt,
            error,
            retry_in,
        };
        (failure, now + retry_in)
    }

    pub(super) fn on_fence_done(
        &mut self,
        now: Instant,
        slot: Slot,
        result: Result<Fenced, String>,
    ) {
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
                if self.watches_tail() {
                    // ID 1 never takes the tail's ID: the chain is one
                    // shorter, and the next tail is watched. A fence that
                    // stopped nothing found the tail gone already (it moved
                    // down the chain): nothing is lost.
                    if !fenced.instances.is_empty() {
                        self.events.push_back(Event::TailLost {
                            peer: slot,
                            instances: fenced.instances,
                        });
                    }
                    self.tail = None;
                    self.watch_predecessor(now);
                    return;
                }
                // After a detour, the takeover of its target carries the
                // fence of the dead predecessor too: one failure, one
                // transition.
                let mut fenced = fenced;
                if let Some(d) = &self.detour {
                    fenced.instances.extend(d.fenced.instances.iter().cloned());
                }
                self.begin_takeover(now, fenced, false);
            }
            Err(error) if cancel => {
                self.view.last_error = Some(error);
                self.phase = Phase::Watching;
                self.view.declared_at = None;
                self.events.push_back(Event::FenceCancelled { peer: slot });
            }
            Err(error) => {
                let (failure, retry_at) = self.failed(now, attempt, error);
                self.events.push_back(Event::FenceFailed {
                    peer: slot,
                    failure,
                });
                self.phase = Phase::Fencing {
                    attempt: attempt + 1,
                    in_flight: false,
                    retry_at: Some(retry_at),
                    cancel: false,
                };
            }
        }
    }

    /// Judge `target` before the takeover of `peer` (fenced, or vacant):
    /// a [`Detour`]. The misses of the look-ahead count when it probed
    /// `target` (the hub on its underlay, or the slot before `peer`).
    fn start_detour(
        &mut self,
        now: Instant,
        target: Slot,
        peer: Slot,
        fenced: Fenced,
        vacant: bool,
    ) {
        let looked_ahead = if target.is_hub() {
            self.view.beyond_is_hub
        } else {
            !self.view.beyond_is_hub && peer.predecessor() == Some(target)
        };
        let carried = if looked_ahead {
            (self.view.beyond_misses, self.view.beyond_silent_since)
        } else {
            (0, None)
        };
        self.detour = Some(Detour {
            target,
            slot: peer,
            fenced,
            vacant,
        });
        self.events.push_back(Event::Detour {
            dead: peer,
            first: target,
        });
        self.view = super::view::PeerView::default();
        self.phase = Phase::Watching;
        self.peer_seen = true;
        // Its fence is part of the same failure (no cooldown holds it).
        self.chained_peer = self.peer();
        if carried.0 > 0 {
            self.view.misses = carried.0;
            self.view.silent_since = carried.1;
            self.view.peer_silent = true;
        }
        self.next_round_at = Some(now);
    }

    pub(super) fn begin_takeover(&mut self, now: Instant, fenced: Fenced, vacant: bool) {
        let Some(peer) = self.peer() else {
            return;
        };
        // A frontend's new identity connects through the hub: with the hub
        // silent (the overlay down) and frontend2, its only watcher, gone,
        // the takeover would wait on a dead hub that nobody judges. Judge
        // the hub first; its misses seen while the predecessor was missing
        // count (the look-ahead of degraded rounds). Further down the chain
        // frontend2 (or whoever holds it) judges the hub, and two takers of
        // the hub would race; a takeover that fails there judges the hub
        // then (see `on_takeover_done`).
        if self.detour.is_none() && peer == Slot::new(Role::Frontend, 2) && !self.overlay_up {
            self.start_detour(now, Slot::new(Role::Frontend, 1), peer, fenced, vacant);
            return;
        }
        // The slot before the dead predecessor was silent in every round
        // the look-ahead probed it (from the predecessor's second miss on,
        // with this node's witness answering): they died together. Judge it first, and if
        // it is dead take its place directly: its fence starts now instead
        // of after a takeover, and one takeover is saved. Never the hub,
        // which is judged on its own rules above.
        if self.detour.is_none()
            && !fenced.instances.is_empty()
            && !self.view.beyond_is_hub
            && self.view.beyond_misses + 1 >= self.cfg.misses
            && let Some(beyond) = peer.predecessor()
            && !beyond.is_hub()
        {
            self.start_detour(now, beyond, peer, fenced, vacant);
            return;
        }
        self.view.fenced_at = Some(now);
        self.view.round = None;
        self.next_round_at = None;
        self.phase = Phase::TakingOver {
            attempt: 1,
            in_flight: true,
            retry_at: None,
            fenced,
            vacant,
        };
        let planned = self.planned(now, peer);
        self.actions.push_back(Action::TakeOver {
            from: self.me,
            to: peer,
            attempt: 1,
            planned,
        });
    }

    /// The transition a takeover of `to` in progress makes, as known now
    /// (`identity_up_at` is `now`: when planned, not up yet; when done, up).
    fn planned(&self, now: Instant, to: Slot) -> Transition {
        let (fenced, vacant) = match &self.phase {
            Phase::TakingOver { fenced, vacant, .. } => (fenced.instances.clone(), *vacant),
            _ => (Vec::new(), false),
        };
        Transition {
            from: self.me,
            to,
            fenced,
            vacant,
            silent_since: self.view.silent_since,
            declared_at: self.view.declared_at.unwrap_or(now),
            fenced_at: self.view.fenced_at.unwrap_or(now),
            identity_up_at: now,
        }
    }

    pub(super) fn on_takeover_done(&mut self, now: Instant, to: Slot, result: Result<(), String>) {
        // Only the answer to the takeover of the peer that is in flight.
        let attempt = match &self.phase {
            Phase::TakingOver {
                attempt,
                in_flight: true,
                ..
            } if Some(to) == self.peer() => *attempt,
            _ => return,
        };
        match result {
            Ok(()) => {
                let from = self.me;
                // The identity is up now: the transition as planned.
                let transition = self.planned(now, to);
                // A vacancy hop: the holder that left is the next peer.
                let moved_up = matches!(self.phase, Phase::TakingOver { vacant: true, .. })
                    .then(|| self.view.judged.as_ref().map(|j| j.instance.clone()));
                let carried = if self.view.beyond_is_hub {
                    (0, None)
                } else {
                    (self.view.beyond_misses, self.view.beyond_silent_since)
                };
                self.me = to;
                self.detour = None;
                self.events.push_back(Event::TookOver { from, to });
                self.actions.push_back(Action::Announce(transition));
                self.watch_predecessor(now);
                if let Some(mover) = moved_up {
                    self.view.moved_up_until = Some(now + self.takeover_time());
                    self.view.mover = mover;
                }
                // The new peer was n-2: its misses, seen with this node's
                // witness while it took over, count. One more silent round
                // declares it dead.
                self.chained_peer = None;
                if carried.0 > 0 {
                    self.chained_peer = self.peer();
                    self.view.misses = carried.0;
                    self.view.silent_since = carried.1;
                    self.view.peer_silent = true;
                    self.peer_seen = true;
                }
            }
            Err(error) => {
                let (failure, retry) = self.failed(now, attempt, error);
                self.events.push_back(Event::TakeOverFailed { to, failure });
                // A client identity that did not come up may be waiting on
                // a dead hub: judge the hub again before the next attempt
                // (it answers: the attempt goes ahead at once; it is dead:
                // this node takes its place).
                if to.role == Role::Frontend
                    && !to.is_hub()
                    && self.detour.is_none()
                    && let Phase::TakingOver { fenced, vacant, .. } = self.phase.clone()
                {
                    self.overlay_up = false;
                    self.start_detour(now, Slot::new(Role::Frontend, 1), to, fenced, vacant);
                    return;
                }
                if let Phase::TakingOver {
                    attempt: next,
                    in_flight,
                    retry_at,
                    ..
                } = &mut self.phase
                {
                    (*next, *in_flight, *retry_at) = (attempt + 1, false, Some(retry));
                }
            }
        }
    }

    pub(super) fn handle_retry(&mut self, now: Instant) {
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
                let chained = self.chained(peer);
                self.actions.push_back(Action::Fence {
                    slot: peer,
                    judged: self.view.judged.clone(),
                    attempt,
                    chained,
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
                let planned = self.planned(now, peer);
                self.actions.push_back(Action::TakeOver {
                    from: self.me,
                    to: peer,
                    attempt,
                    planned,
                });
            }
            _ => {}
        }
    }
}
