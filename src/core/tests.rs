use super::*;

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}
fn be(id: u32) -> Slot {
    Slot::new(Role::Backend, id)
}

const RTT: Duration = Duration::from_millis(3);

/// The defaults without the startup grace (tested on its own).
fn cfg() -> CoreConfig {
    CoreConfig {
        startup_grace: Duration::ZERO,
        ..CoreConfig::default()
    }
}

/// Drives one monitor through rounds in simulated time.
struct Harness {
    m: Monitor,
    now: Instant,
    start: Instant,
    /// Every non-probe action seen, in order.
    work: Vec<Action>,
    events: Vec<Event>,
}

impl Harness {
    fn new(me: Slot) -> Self {
        let start = Instant::now();
        Harness {
            m: Monitor::new(cfg(), me, start),
            now: start,
            start,
            work: Vec::new(),
            events: Vec::new(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Advance to the next timer and fire it; return the probes it asked for.
    fn tick(&mut self) -> Vec<(u64, Target, ProbeAddr)> {
        let at = self.m.poll_timeout().expect("a timer is armed");
        // A timer that came due while a round's answers were pending fires
        // late, as in the real shell.
        self.now = self.now.max(at);
        self.m.handle_timeout(self.now);
        self.drain()
    }

    fn drain(&mut self) -> Vec<(u64, Target, ProbeAddr)> {
        let mut probes = Vec::new();
        while let Some(a) = self.m.poll_action() {
            match a {
                Action::Probe {
                    round,
                    target,
                    addr,
                    timeout,
                } => {
                    assert_eq!(timeout, Duration::from_millis(800));
                    probes.push((round, target, addr));
                }
                other => self.work.push(other),
            }
        }
        while let Some(e) = self.m.poll_event() {
            self.events.push(e);
        }
        probes
    }

    fn input(&mut self, after: Duration, input: Input) {
        self.now += after;
        self.m.handle_input(self.now, input);
        self.drain();
    }

    /// One full round: `None` means silent (reported at the timeout); n-2,
    /// when probed, answers.
    fn round(&mut self, peer: Option<Duration>, witness: Option<Duration>) {
        self.round_beyond(peer, witness, Some(RTT));
    }

    /// One full round, with n-2's answer when it is probed.
    fn round_beyond(
        &mut self,
        peer: Option<Duration>,
        witness: Option<Duration>,
        beyond: Option<Duration>,
    ) {
        let probes = self.tick();
        assert!(
            probes.len() == 2
                || (probes.len() == 3 && matches!(probes[2].1, Target::Overlay | Target::Beyond)),
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
            } else {
                reports.push((Target::Overlay, witness));
            }
        }
        reports.sort_by_key(|(_, r)| r.unwrap_or(Duration::from_millis(800)));
        for (target, r) in reports {
            let at = started + r.unwrap_or(Duration::from_millis(800));
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

    fn take_work(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.work)
    }

    fn fences(&self) -> usize {
        self.work
            .iter()
            .filter(|a| matches!(a, Action::Fence { .. }))
            .count()
    }
}

fn holder(slot: Slot, h: Holder) -> Input {
    Input::HolderChecked {
        slot,
        result: Ok(h),
    }
}

#[test]
fn steady_state_probes_peer_and_witness_every_interval() {
    let mut h = Harness::new(fe(3));
    for i in 0..100u64 {
        let probes = h.tick();
        assert_eq!(h.elapsed(), Duration::from_secs(i));
        assert_eq!(
            probes.iter().map(|p| (&p.1, &p.2)).collect::<Vec<_>>(),
            vec![
                (&Target::Peer, &ProbeAddr::Overlay(fe(2))),
                (&Target::Witness, &ProbeAddr::Overlay(fe(1)))
            ]
        );
        let seq = probes[0].0;
        h.input(
            RTT,
            Input::Probed {
                round: seq,
                target: Target::Peer,
                outcome: ProbeOutcome::Reply { rtt: RTT },
            },
        );
        h.input(
            RTT,
            Input::Probed {
                round: seq,
                target: Target::Witness,
                outcome: ProbeOutcome::Reply { rtt: RTT },
            },
        );
    }
    assert!(h.work.is_empty(), "{:?}", h.work);
    let s = h.m.snapshot();
    assert_eq!(s.phase, PhaseName::Watching);
    assert_eq!(s.misses, 0);
    assert_eq!(s.last_rtt, Some(RTT));
    assert_eq!(s.rounds, 100);
    assert_eq!(s.peer, Some(fe(2)));
}

#[test]
fn peer_death_is_declared_after_exactly_misses_rounds() {
    let mut h = Harness::new(be(3));
    h.round(Some(RTT), Some(RTT));
    for miss in 1..=2 {
        h.round(None, Some(RTT));
        assert_eq!(h.m.snapshot().misses, miss);
        assert_eq!(h.take_work(), vec![Action::CheckHolder { slot: be(2) }]);
        h.input(Duration::ZERO, holder(be(2), Holder::Held));
        assert_eq!(h.fences(), 0);
    }
    h.round(None, Some(RTT));
    assert_eq!(
        h.take_work(),
        vec![Action::Fence {
            slot: be(2),
            attempt: 1
        }]
    );
    assert!(h.events.contains(&Event::PeerDead {
        peer: be(2),
        misses: 3
    }));
    assert_eq!(h.m.snapshot().phase, PhaseName::Fencing);
    // Declared 0.8 s into the third silent round, which started at t=3 s.
    assert_eq!(h.elapsed(), Duration::from_millis(3800));
}

#[test]
fn witness_down_counts_no_misses() {
    let mut h = Harness::new(be(2));
    for _ in 0..50 {
        h.round(None, None);
    }
    // Only look-ups (for a vacant slot); never a fence.
    let work = h.take_work();
    assert!(
        work.iter().all(|a| matches!(a, Action::CheckHolder { .. })),
        "{work:?}"
    );
    let s = h.m.snapshot();
    assert_eq!(s.misses, 0);
    assert!(s.cut_off);
    assert_eq!(s.phase, PhaseName::Watching);
}

#[test]
fn an_inconclusive_round_breaks_the_streak() {
    let mut h = Harness::new(be(2));
    h.round(None, Some(RTT));
    h.round(None, Some(RTT));
    h.round(None, None);
    h.round(None, Some(RTT));
    h.round(None, Some(RTT));
    assert_eq!(h.fences(), 0);
    assert_eq!(h.m.snapshot().misses, 2);
}

#[test]
fn one_answer_resets_the_count() {
    let mut h = Harness::new(fe(4));
    for _ in 0..10 {
        h.round(None, Some(RTT));
        h.round(None, Some(RTT));
        h.round(Some(RTT), None); // the peer's answer counts even without the witness
    }
    assert_eq!(h.fences(), 0);
    assert_eq!(h.m.snapshot().misses, 0);
    assert!(h.events.contains(&Event::Recovered {
        peer: fe(3),
        after: 2
    }));
}

#[test]
fn the_hub_is_probed_on_its_underlay_with_ec2_as_witness() {
    let mut h = Harness::new(fe(2));
    let probes = h.tick();
    assert_eq!(probes[0].2, ProbeAddr::Underlay(fe(1)));
    assert_eq!(probes[1].2, ProbeAddr::Ec2Api);
    // backend2 watches backend1 over the overlay; its witness is frontend1.
    let mut h = Harness::new(be(2));
    let probes = h.tick();
    assert_eq!(probes[0].2, ProbeAddr::Overlay(be(1)));
    assert_eq!(probes[1].2, ProbeAddr::Overlay(fe(1)));
    // Hub silent but EC2 answering: misses count as usual.
    let mut h = Harness::new(fe(2));
    for _ in 0..3 {
        h.round(None, Some(RTT));
    }
    assert_eq!(h.fences(), 1);
}

#[test]
fn id_1_watches_nobody() {
    for me in [fe(1), be(1)] {
        let mut h = Harness::new(me);
        assert_eq!(h.m.poll_timeout(), None);
        assert!(h.drain().is_empty());
        assert!(h.work.is_empty());
        assert_eq!(h.m.snapshot().phase, PhaseName::Idle);
        assert_eq!(h.m.peer(), None);
        h.m.handle_timeout(h.now + Duration::from_secs(60));
        assert!(h.m.poll_action().is_none());
    }
}

fn dead(h: &mut Harness) {
    for _ in 0..3 {
        h.round(None, Some(RTT));
        for a in h.take_work() {
            if let Action::CheckHolder { slot } = a {
                h.input(Duration::ZERO, holder(slot, Holder::Held));
            } else {
                h.work.push(a);
            }
        }
    }
}

#[test]
fn fence_failure_means_no_takeover_and_bounded_backoff() {
    let mut h = Harness::new(be(3));
    dead(&mut h);
    assert_eq!(h.take_work().len(), 1);
    let mut delays = Vec::new();
    for attempt in 1..=10u32 {
        h.input(
            Duration::from_millis(50),
            Input::FenceDone {
                slot: be(2),
                result: Err("ec2 unreachable".into()),
            },
        );
        let Some(Event::FenceFailed {
            retry_in,
            attempt: a,
            ..
        }) = h.events.last().cloned()
        else {
            panic!("no FenceFailed event: {:?}", h.events);
        };
        assert_eq!(a, attempt);
        delays.push(retry_in);
        // Rounds go on during the back-off (the peer stays silent), and the
        // retry comes when it is due; never a takeover.
        let due = h.now + retry_in;
        loop {
            let at = h.m.poll_timeout().unwrap();
            if at >= due {
                break;
            }
            h.round(None, Some(RTT));
        }
        let probes = h.tick();
        // If a round started at the same instant, answer it too.
        for (round, target, _) in probes {
            let outcome = match target {
                Target::Peer => ProbeOutcome::Silent,
                Target::Witness | Target::Overlay | Target::Beyond => {
                    ProbeOutcome::Reply { rtt: RTT }
                }
            };
            h.input(
                Duration::ZERO,
                Input::Probed {
                    round,
                    target,
                    outcome,
                },
            );
        }
        let work = h.take_work();
        assert!(
            work.contains(&Action::Fence {
                slot: be(2),
                attempt: attempt + 1
            }),
            "{work:?} {:?}",
            h.events
        );
        assert!(!work.iter().any(|a| matches!(a, Action::TakeOver { .. })));
    }
    let ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
    assert_eq!(
        ms,
        vec![
            500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
        ]
    );
    assert_eq!(
        h.m.snapshot().last_error.as_deref(),
        Some("ec2 unreachable")
    );
    // Finally the fence is confirmed: take over.
    h.input(
        Duration::from_millis(50),
        Input::FenceDone {
            slot: be(2),
            result: Ok(Fenced {
                instances: vec!["i-0abc".into()],
            }),
        },
    );
    assert_eq!(
        h.take_work(),
        vec![Action::TakeOver {
            from: be(3),
            to: be(2),
            attempt: 1
        }]
    );
}

#[test]
fn a_peer_that_answers_during_fence_backoff_is_not_taken_over() {
    let mut h = Harness::new(be(3));
    dead(&mut h);
    h.take_work();
    h.input(
        Duration::ZERO,
        Input::FenceDone {
            slot: be(2),
            result: Err("throttled".into()),
        },
    );
    h.round(Some(RTT), Some(RTT));
    assert!(h.events.contains(&Event::FenceCancelled { peer: be(2) }));
    assert_eq!(h.m.snapshot().phase, PhaseName::Watching);
    for _ in 0..10 {
        h.round(Some(RTT), Some(RTT));
    }
    assert!(h.take_work().is_empty());
}

#[test]
fn a_node_cut_off_during_fence_backoff_calls_the_fence_off() {
    let mut h = Harness::new(be(3));
    dead(&mut h);
    h.take_work();
    h.input(
        Duration::ZERO,
        Input::FenceDone {
            slot: be(2),
            result: Err("timeout".into()),
        },
    );
    h.round(None, None);
    assert_eq!(h.m.snapshot().phase, PhaseName::Watching);
    for _ in 0..5 {
        h.round(None, None);
    }
    let work = h.take_work();
    assert!(
        work.iter().all(|a| matches!(a, Action::CheckHolder { .. })),
        "{work:?}"
    );
}

#[test]
fn a_fence_confirmed_after_the_peer_answered_still_leads_to_takeover() {
    // The stop was sent and EC2 confirms it: the peer is down now, its ID
    // must be filled.
    let mut h = Harness::new(be(3));
    dead(&mut h);
    h.take_work();
    h.round(Some(RTT), Some(RTT)); // answers while the fence is in flight
    h.input(
        Duration::ZERO,
        Input::FenceDone {
            slot: be(2),
            result: Ok(Fenced::default()),
        },
    );
    assert!(matches!(h.take_work()[..], [Action::TakeOver { .. }]));
    // ...whereas a failing one then returns to watching without a retry.
    let mut h = Harness::new(be(3));
    dead(&mut h);
    h.take_work();
    h.round(Some(RTT), Some(RTT));
    h.input(
        Duration::ZERO,
        Input::FenceDone {
            slot: be(2),
            result: Err("api error".into()),
        },
    );
    assert_eq!(h.m.snapshot().phase, PhaseName::Watching);
    assert_eq!(h.m.poll_timeout(), Some(h.start + Duration::from_secs(4)));
}

#[test]
fn takeover_announces_and_watches_the_new_predecessor() {
    let mut h = Harness::new(fe(4));
    dead(&mut h);
    h.take_work();
    h.input(
        Duration::from_millis(300),
        Input::FenceDone {
            slot: fe(3),
            result: Ok(Fenced {
                instances: vec!["i-1".into()],
            }),
        },
    );
    h.take_work();
    h.input(
        Duration::from_millis(200),
        Input::TakeOverDone {
            to: fe(3),
            result: Err("AUTH_FAILED".into()),
        },
    );
    assert!(h.take_work().is_empty());
    assert_eq!(h.m.snapshot().phase, PhaseName::TakingOver);
    h.tick(); // retry after 500 ms
    assert_eq!(
        h.take_work(),
        vec![Action::TakeOver {
            from: fe(4),
            to: fe(3),
            attempt: 2
        }]
    );
    h.input(
        Duration::from_millis(700),
        Input::TakeOverDone {
            to: fe(3),
            result: Ok(()),
        },
    );
    let work = h.take_work();
    let [Action::Announce(t)] = &work[..] else {
        panic!("{work:?}");
    };
    assert_eq!((t.from, t.to), (fe(4), fe(3)));
    assert_eq!(t.fenced, vec!["i-1".to_string()]);
    assert!(!t.vacant);
    let silent = t.silent_since.unwrap();
    assert!(silent < t.declared_at && t.declared_at < t.fenced_at);
    assert!(t.fenced_at < t.identity_up_at);
    assert_eq!(
        t.identity_up_at - t.declared_at,
        Duration::from_millis(1700)
    );
    assert_eq!(h.m.me(), fe(3));
    assert_eq!(h.m.peer(), Some(fe(2)));
    // The new predecessor is probed at once.
    let probes = h.tick();
    assert_eq!(probes[0].2, ProbeAddr::Overlay(fe(2)));
    assert_eq!(h.m.snapshot().misses, 0);
}

#[test]
fn a_vacant_predecessor_is_taken_after_one_missed_round() {
    let mut h = Harness::new(fe(3));
    h.round(None, Some(RTT));
    assert_eq!(h.take_work(), vec![Action::CheckHolder { slot: fe(2) }]);
    h.input(Duration::from_millis(20), holder(fe(2), Holder::Vacant));
    assert_eq!(
        h.take_work(),
        vec![Action::TakeOver {
            from: fe(3),
            to: fe(2),
            attempt: 1
        }]
    );
    assert!(h.events.contains(&Event::Vacant { peer: fe(2) }));
    h.input(
        Duration::from_millis(100),
        Input::TakeOverDone {
            to: fe(2),
            result: Ok(()),
        },
    );
    let work = h.take_work();
    let [Action::Announce(t)] = &work[..] else {
        panic!("{work:?}");
    };
    assert!(t.vacant && t.fenced.is_empty());
    // Well inside one detection window.
    assert!(h.elapsed() < Duration::from_secs(1));
    // Now frontend2 watches the hub.
    let probes = h.tick();
    assert_eq!(probes[0].2, ProbeAddr::Underlay(fe(1)));
}

#[test]
fn vacancy_is_ignored_once_the_peer_answers() {
    // The look-up answers after the peer came back: ignore it.
    let mut h = Harness::new(fe(3));
    h.round(None, Some(RTT));
    h.take_work();
    h.round(Some(RTT), Some(RTT));
    h.input(Duration::ZERO, holder(fe(2), Holder::Vacant));
    assert!(h.take_work().is_empty());
    // Nor on an error, nor on an answer about another slot, nor before any
    // round was evaluated.
    let mut h = Harness::new(fe(3));
    h.input(Duration::ZERO, holder(fe(2), Holder::Vacant));
    assert!(h.take_work().is_empty());
    h.round(None, Some(RTT));
    h.take_work();
    h.input(
        Duration::ZERO,
        Input::HolderChecked {
            slot: fe(2),
            result: Err("no registry".into()),
        },
    );
    h.input(Duration::ZERO, holder(fe(1), Holder::Vacant));
    assert!(h.take_work().is_empty());
}

#[test]
fn a_vacant_slot_is_taken_even_while_the_overlay_witness_is_down() {
    // frontend1 and frontend2 gone together: frontend3 sees neither, but EC2
    // says nobody holds frontend2, so it takes it and then watches the hub.
    let mut h = Harness::new(fe(3));
    h.round(None, None);
    assert_eq!(h.take_work(), vec![Action::CheckHolder { slot: fe(2) }]);
    h.input(Duration::ZERO, holder(fe(2), Holder::Held));
    h.round(None, None);
    assert_eq!(h.take_work(), vec![Action::CheckHolder { slot: fe(2) }]);
    h.input(Duration::ZERO, holder(fe(2), Holder::Vacant));
    assert!(matches!(h.take_work()[..], [Action::TakeOver { .. }]));
    // A held slot is never fenced without the witness, however long.
    let mut h = Harness::new(be(3));
    for _ in 0..20 {
        h.round(None, None);
        for a in h.take_work() {
            assert_eq!(a, Action::CheckHolder { slot: be(2) });
            h.input(Duration::ZERO, holder(be(2), Holder::Held));
        }
    }
    assert_eq!(h.fences(), 0);
}

#[test]
fn only_one_holder_check_is_in_flight() {
    let mut h = Harness::new(be(4));
    h.round(None, Some(RTT));
    h.round(None, Some(RTT));
    let checks = h
        .take_work()
        .into_iter()
        .filter(|a| matches!(a, Action::CheckHolder { .. }))
        .count();
    assert_eq!(checks, 1);
}

#[test]
fn late_and_missing_results_are_handled() {
    let mut h = Harness::new(be(2));
    let probes = h.tick();
    let old = probes[0].0;
    // No report at all for a whole interval: the round counts nothing.
    let probes = h.tick();
    assert_eq!(h.m.snapshot().misses, 0);
    assert!(h.m.snapshot().cut_off);
    // A late report of the old round changes nothing.
    h.input(
        Duration::ZERO,
        Input::Probed {
            round: old,
            target: Target::Witness,
            outcome: ProbeOutcome::Reply { rtt: RTT },
        },
    );
    h.input(
        Duration::ZERO,
        Input::Probed {
            round: old,
            target: Target::Peer,
            outcome: ProbeOutcome::Silent,
        },
    );
    assert_eq!(h.m.snapshot().misses, 0);
    // A peer silent with the witness result missing is not a miss either.
    h.input(
        Duration::from_millis(800),
        Input::Probed {
            round: probes[0].0,
            target: Target::Peer,
            outcome: ProbeOutcome::Silent,
        },
    );
    h.tick();
    assert_eq!(h.m.snapshot().misses, 0);
}

#[test]
fn a_stalled_shell_gets_one_round_not_a_burst() {
    let mut h = Harness::new(be(2));
    h.round(Some(RTT), Some(RTT));
    let late = h.now + Duration::from_secs(30);
    h.now = late;
    h.m.handle_timeout(late);
    assert_eq!(h.drain().len(), 2);
    assert_eq!(h.m.poll_timeout(), Some(late + Duration::from_secs(1)));
}

#[test]
fn handling_a_timeout_twice_or_early_is_harmless() {
    let mut h = Harness::new(be(2));
    let at = h.m.poll_timeout().unwrap();
    h.m.handle_timeout(at);
    let first = h.drain().len();
    h.m.handle_timeout(at);
    h.m.handle_timeout(at - Duration::from_millis(1));
    assert_eq!(first, 2);
    assert!(h.drain().is_empty());
}

#[test]
fn backoff_doubles_and_is_capped() {
    let c = CoreConfig::default();
    assert_eq!(c.backoff(1), Duration::from_millis(500));
    assert_eq!(c.backoff(2), Duration::from_millis(1000));
    assert_eq!(c.backoff(7), Duration::from_secs(30));
    assert_eq!(c.backoff(40), Duration::from_secs(30));
    assert_eq!(c.backoff(u32::MAX), Duration::from_secs(30));
}

#[test]
fn a_silent_overlay_witness_degrades_rounds_to_underlay_and_ec2() {
    let mut h = Harness::new(be(3));
    h.round(None, None); // frontend1 silent on the overlay
    assert!(h.events.contains(&Event::Degraded { peer: be(2) }));
    assert!(h.m.snapshot().degraded);
    let probes = h.tick();
    assert_eq!(
        probes
            .iter()
            .map(|p| (p.1, p.2.clone()))
            .collect::<Vec<_>>(),
        vec![
            (Target::Peer, ProbeAddr::Underlay(be(2))),
            (Target::Witness, ProbeAddr::Ec2Api),
            (Target::Overlay, ProbeAddr::Overlay(fe(1))),
        ]
    );
    // Feed that round: peer silent on the underlay, EC2 answers, frontend1
    // still silent: a miss.
    let seq = probes[0].0;
    for (target, outcome) in [
        (Target::Witness, ProbeOutcome::Reply { rtt: RTT }),
        (Target::Overlay, ProbeOutcome::Silent),
        (Target::Peer, ProbeOutcome::Silent),
    ] {
        h.input(
            Duration::from_millis(100),
            Input::Probed {
                round: seq,
                target,
                outcome,
            },
        );
    }
    assert_eq!(h.m.snapshot().misses, 1);
    h.take_work();
    // Two more degraded misses declare the peer dead.
    h.round(None, Some(RTT));
    h.take_work();
    h.round(None, Some(RTT));
    assert!(h.take_work().contains(&Action::Fence {
        slot: be(2),
        attempt: 1
    }));
}

#[test]
fn the_overlay_coming_back_ends_degraded_rounds() {
    let mut h = Harness::new(be(3));
    h.round(None, None);
    let probes = h.tick();
    assert_eq!(probes.len(), 3);
    // The peer answers on its underlay; frontend1 answers on the overlay.
    for (target, outcome) in [
        (Target::Peer, ProbeOutcome::Reply { rtt: RTT }),
        (Target::Overlay, ProbeOutcome::Reply { rtt: RTT }),
    ] {
        h.input(
            RTT,
            Input::Probed {
                round: probes[0].0,
                target,
                outcome,
            },
        );
    }
    assert!(h.events.contains(&Event::OverlayBack { peer: be(2) }));
    let probes = h.tick();
    assert_eq!(probes.len(), 2);
    assert_eq!(probes[0].2, ProbeAddr::Overlay(be(2)));
    assert!(!h.m.snapshot().degraded);
}

#[test]
fn a_node_cut_off_from_everything_never_fences_even_degraded() {
    let mut h = Harness::new(fe(5));
    for _ in 0..100 {
        h.round(None, None);
        for a in h.take_work() {
            if let Action::CheckHolder { slot } = a {
                h.input(
                    Duration::ZERO,
                    Input::HolderChecked {
                        slot,
                        result: Err("ec2 unreachable".into()),
                    },
                );
            } else {
                panic!("{a:?}");
            }
        }
    }
    assert_eq!(h.m.snapshot().phase, PhaseName::Watching);
}

#[test]
fn a_peer_never_seen_is_not_declared_dead_during_the_startup_grace() {
    let start = Instant::now();
    let mut h = Harness::new(be(3));
    h.m = Monitor::new(CoreConfig::default(), be(3), start);
    h.drain();
    // backend2 is still booting: 10 silent rounds, witness up, no fence.
    for _ in 0..10 {
        h.round(None, Some(RTT));
        for a in h.take_work() {
            if let Action::CheckHolder { slot } = a {
                h.input(Duration::ZERO, holder(slot, Holder::Held));
            } else {
                panic!("{a:?}");
            }
        }
    }
    assert_eq!(h.m.snapshot().misses, 10);
    // Past the grace, the next miss declares it dead.
    let mut fenced_at = None;
    for _ in 0..40 {
        h.round(None, Some(RTT));
        if h.take_work()
            .iter()
            .any(|a| matches!(a, Action::Fence { .. }))
        {
            fenced_at = Some(h.elapsed());
            break;
        }
    }
    let at = fenced_at.expect("declared dead after the grace");
    assert!(
        at >= Duration::from_secs(30) && at < Duration::from_secs(32),
        "{at:?}"
    );
    // A peer that answered once gets no grace.
    let mut h = Harness::new(be(3));
    h.m = Monitor::new(CoreConfig::default(), be(3), h.start);
    h.drain();
    h.round(Some(RTT), Some(RTT));
    for _ in 0..3 {
        h.round(None, Some(RTT));
    }
    assert_eq!(h.fences(), 1);
}

#[test]
fn two_dead_in_a_row_take_one_detection_window_not_two() {
    // frontend3 and frontend2 die together; frontend4 watches frontend3 and
    // looks ahead at frontend2 while frontend3 is missing.
    let mut h = Harness::new(fe(4));
    h.round(Some(RTT), Some(RTT));
    h.round_beyond(None, Some(RTT), None);
    h.take_work();
    for _ in 0..2 {
        h.round_beyond(None, Some(RTT), None);
        for a in h.take_work() {
            if let Action::CheckHolder { slot } = a {
                h.input(Duration::ZERO, holder(slot, Holder::Held));
            } else {
                h.work.push(a);
            }
        }
    }
    assert!(h.take_work().contains(&Action::Fence {
        slot: fe(3),
        attempt: 1
    }));
    let fence_at = h.elapsed();
    h.input(
        Duration::from_millis(200),
        Input::FenceDone {
            slot: fe(3),
            result: Ok(Fenced::default()),
        },
    );
    h.take_work();
    h.input(
        Duration::from_millis(300),
        Input::TakeOverDone {
            to: fe(3),
            result: Ok(()),
        },
    );
    h.take_work();
    // Probed from the second missed round of frontend3 on: two misses.
    assert_eq!(h.m.snapshot().misses, 2, "frontend2's misses carried over");
    // One more silent round of frontend2 declares it dead.
    h.round(None, Some(RTT));
    assert!(h.take_work().contains(&Action::Fence {
        slot: fe(2),
        attempt: 1
    }));
    let second = h.elapsed() - fence_at;
    assert!(second < Duration::from_secs(2), "{second:?}");
}

#[test]
fn a_live_n_minus_2_carries_nothing() {
    let mut h = Harness::new(fe(4));
    dead(&mut h); // frontend3 silent, frontend2 answering the look-ahead
    h.take_work();
    h.input(
        Duration::ZERO,
        Input::FenceDone {
            slot: fe(3),
            result: Ok(Fenced::default()),
        },
    );
    h.input(
        Duration::ZERO,
        Input::TakeOverDone {
            to: fe(3),
            result: Ok(()),
        },
    );
    assert_eq!(h.m.snapshot().misses, 0);
    // The hub is never probed as n-2 (frontend3 watching frontend2).
    let mut h = Harness::new(fe(3));
    h.round(None, Some(RTT));
    let probes = h.tick();
    assert_eq!(probes.len(), 2, "{probes:?}");
}

#[test]
fn a_probe_that_could_not_be_sent_is_no_evidence() {
    let mut h = Harness::new(fe(2));
    for _ in 0..10 {
        let probes = h.tick();
        let seq = probes[0].0;
        // The hub's underlay address could not be looked up in time; EC2
        // answered the witness call.
        h.input(
            Duration::from_millis(100),
            Input::Probed {
                round: seq,
                target: Target::Witness,
                outcome: ProbeOutcome::Reply { rtt: RTT },
            },
        );
        h.input(
            Duration::from_millis(700),
            Input::Probed {
                round: seq,
                target: Target::Peer,
                outcome: ProbeOutcome::NotSent,
            },
        );
        for a in h.take_work() {
            assert!(matches!(a, Action::CheckHolder { .. }), "{a:?}");
        }
    }
    assert_eq!(h.m.snapshot().misses, 0);
    assert_eq!(h.fences(), 0);
}
