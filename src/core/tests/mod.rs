//! Unit tests of the core, by concern; the harness drives one monitor
//! through rounds in simulated time.

mod degraded;
mod detector;
mod hub;
mod judged;
mod opinion;
mod plan;

use std::time::{Duration, Instant};

use crate::core::*;
use crate::layout::{Role, Slot};

pub(super) fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}
pub(super) fn be(id: u32) -> Slot {
    Slot::new(Role::Backend, id)
}

pub(super) const RTT: Duration = Duration::from_millis(3);

/// The defaults at the API's pace everywhere (1 s rounds, 800 ms probes:
/// the timings most tests here are written in), without the startup grace
/// (tested on its own). `tests/detector.rs` tests the overlay's faster pace.
pub(super) fn cfg() -> CoreConfig {
    CoreConfig {
        startup_grace: Duration::ZERO,
        ..slow()
    }
}

/// The defaults, but with overlay rounds at the API's pace.
pub(super) fn slow() -> CoreConfig {
    let d = CoreConfig::default();
    CoreConfig {
        interval: d.api_interval,
        probe_timeout: d.api_timeout,
        ..d
    }
}

/// Drives one monitor through rounds in simulated time.
pub(super) struct Harness {
    m: Monitor,
    now: Instant,
    start: Instant,
    /// Every non-probe action seen, in order.
    work: Vec<Action>,
    events: Vec<Event>,
    /// The timeout of the last probe asked for: silence is reported then.
    timeout: Duration,
}

impl Harness {
    pub(super) fn new(me: Slot) -> Self {
        let start = Instant::now();
        Harness {
            m: Monitor::new(cfg(), me, start),
            now: start,
            start,
            work: Vec::new(),
            events: Vec::new(),
            timeout: Duration::ZERO,
        }
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Advance to the next timer and fire it; return the probes it asked for.
    pub(super) fn tick(&mut self) -> Vec<(u64, Target, ProbeAddr)> {
        let at = self.m.poll_timeout().expect("a timer is armed");
        // A timer that came due while a round's answers were pending fires
        // late, as in the real shell.
        self.now = self.now.max(at);
        self.m.handle_timeout(self.now);
        self.drain()
    }

    pub(super) fn drain(&mut self) -> Vec<(u64, Target, ProbeAddr)> {
        let mut probes = Vec::new();
        while let Some(a) = self.m.poll_action() {
            if let Action::Probe { timeout, .. } = a {
                self.timeout = timeout;
            }
            match a {
                Action::Probe {
                    round,
                    target,
                    addr,
                    ..
                } => probes.push((round, target, addr)),
                other => self.work.push(other),
            }
        }
        while let Some(e) = self.m.poll_event() {
            self.events.push(e);
        }
        probes
    }

    /// `target`'s probe of round `round` comes back `after` from now: a
    /// reply (with the test RTT) or silence.
    pub(super) fn probed(&mut self, after: Duration, round: u64, target: Target, reply: bool) {
        let outcome = if reply {
            ProbeOutcome::Reply { rtt: RTT }
        } else {
            ProbeOutcome::Silent
        };
        self.input(
            after,
            Input::Probed {
                round,
                target,
                outcome,
            },
        );
    }

    pub(super) fn input(&mut self, after: Duration, input: Input) {
        self.now += after;
        self.m.handle_input(self.now, input);
        self.drain();
    }

    /// One full round: `None` means silent (reported at the timeout); n-2,
    /// when probed, answers.
    pub(super) fn round(&mut self, peer: Option<Duration>, witness: Option<Duration>) {
        self.round_beyond(peer, witness, Some(RTT));
    }

    /// One full round, with n-2's answer when it is probed.
    pub(super) fn round_beyond(
        &mut self,
        peer: Option<Duration>,
        witness: Option<Duration>,
        beyond: Option<Duration>,
    ) {
        let probes = self.tick();
        assert!(
            probes.len() == 2
                || (probes.len() == 3
                    && matches!(
                        probes[2].1,
                        Target::Overlay | Target::Beyond | Target::HubOverlay
                    )),
            "one probe to the peer and one to the witness (and frontend1 when degraded, or n-2): {probes:?}"
        );
        let seq = probes[0].0;
        let started = self.now;
        let outcome = |r: Option<Duration>| match r {
            Some(rtt) => ProbeOutcome::Reply { rtt },
            None => ProbeOutcome::Silent,
        };
        // Answers arrive after their RTT; silence is reported at the timeout.
        let mut reports = vec![(Target::Peer, peer), (Target::Witness, witness)];
        if probes.len() == 3 {
            if probes[2].1 == Target::Beyond {
                reports.push((Target::Beyond, beyond));
            } else if probes[2].1 == Target::HubOverlay {
                // The hub's overlay as its underlay: a dead hub is silent
                // on both.
                reports.push((Target::HubOverlay, peer));
            } else {
                reports.push((Target::Overlay, witness));
            }
        }
        let timeout = self.timeout;
        reports.sort_by_key(|(_, r)| r.unwrap_or(timeout));
        for (target, r) in reports {
            let at = started + r.unwrap_or(timeout);
            let after = at.saturating_duration_since(self.now);
            self.input(
                after,
                Input::Probed {
                    round: seq,
                    target,
                    outcome: outcome(r),
                },
            );
        }
    }

    /// Round `seq`'s probe of frontend1 on the overlay answers 5 ms from
    /// now (a degraded round learning that the overlay is back); returns
    /// the probes asked for.
    pub(super) fn drain_after_overlay_back(&mut self, seq: u64) -> Vec<(u64, Target, ProbeAddr)> {
        self.probed(Duration::from_millis(5), seq, Target::Overlay, true);
        self.drain()
    }

    /// The fence of `slot` fails `after` from now with `error`.
    pub(super) fn fence_fails(&mut self, after: Duration, slot: Slot, error: &str) {
        let result = Err(error.into());
        self.input(after, Input::FenceDone { slot, result });
    }

    /// The fence of `slot` is confirmed `after` from now, having stopped
    /// `instances`.
    pub(super) fn fenced(&mut self, after: Duration, slot: Slot, instances: &[&str]) {
        let instances = instances.iter().map(|i| i.to_string()).collect();
        let result = Ok(Fenced { instances });
        self.input(after, Input::FenceDone { slot, result });
    }

    pub(super) fn take_work(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.work)
    }

    /// The work so far, with every holder look-up answered `Held` at once;
    /// the rest.
    pub(super) fn held_lookups(&mut self) -> Vec<Action> {
        let mut rest = Vec::new();
        for a in self.take_work() {
            match a {
                Action::CheckHolder { slot } => self.input(Duration::ZERO, holder(slot, held())),
                other => rest.push(other),
            }
        }
        rest
    }

    /// Every piece of work so far is a holder look-up (never a fence).
    pub(super) fn only_lookups(&mut self) {
        let work = self.take_work();
        assert!(
            work.iter().all(|a| matches!(a, Action::CheckHolder { .. })),
            "{work:?}"
        );
    }

    /// The takeover of `to` completes `after` from now: the one action that
    /// follows is its announcement, returned.
    pub(super) fn took_over(&mut self, after: Duration, to: Slot) -> Transition {
        self.input(after, Input::TakeOverDone { to, result: Ok(()) });
        let work = self.take_work();
        let [Action::Announce(t)] = &work[..] else {
            panic!("{work:?}");
        };
        t.clone()
    }

    pub(super) fn fences(&self) -> usize {
        self.work
            .iter()
            .filter(|a| matches!(a, Action::Fence { .. }))
            .count()
    }
}

/// The instance the harness's look-ups name as a peer's holder.
pub(super) fn judged() -> Judged {
    Judged {
        instance: "i-peer".into(),
        epoch: 1,
    }
}

/// A look-up's answer: held by [`judged`].
pub(super) fn held() -> Holder {
    Holder::Held(judged())
}

pub(super) fn holder(slot: Slot, h: Holder) -> Input {
    Input::HolderChecked {
        slot,
        result: Ok(h),
    }
}

/// Three missed rounds: the peer is declared dead.
pub(super) fn dead(h: &mut Harness) {
    for _ in 0..3 {
        h.round(None, Some(RTT));
        let rest = h.held_lookups();
        h.work.extend(rest);
    }
}
