use std::time::{Duration, Instant};

use super::*;
use crate::core::*;

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
    assert_eq!(h.m.snapshot().watch.misses, 0);
    assert!(h.m.snapshot().watch.cut_off);
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
    assert_eq!(h.m.snapshot().watch.misses, 0);
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
    assert_eq!(h.m.snapshot().watch.misses, 0);
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
    assert!(h.m.snapshot().watch.degraded);
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
    assert_eq!(h.m.snapshot().watch.misses, 1);
    h.take_work();
    // Two more degraded misses declare the peer dead.
    h.round(None, Some(RTT));
    h.take_work();
    h.round(None, Some(RTT));
    assert!(h.take_work().contains(&Action::Fence {
        judged: None,
        slot: be(2),
        attempt: 1,
        chained: false
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
    assert!(!h.m.snapshot().watch.degraded);
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
    h.m = Monitor::new(slow(), be(3), start);
    h.drain();
    // backend2 is still booting: 10 silent rounds, witness up, no fence.
    for _ in 0..10 {
        h.round(None, Some(RTT));
        let rest = h.held_lookups();
        assert!(rest.is_empty(), "{rest:?}");
    }
    assert_eq!(h.m.snapshot().watch.misses, 10);
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
    h.m = Monitor::new(slow(), be(3), h.start);
    h.drain();
    h.round(Some(RTT), Some(RTT));
    for _ in 0..3 {
        h.round(None, Some(RTT));
    }
    assert_eq!(h.fences(), 1);
}

#[test]
fn an_answer_on_the_underlay_alone_does_not_end_the_startup_grace() {
    // The fleet boots at once. This node's overlay is not up yet, so its
    // first rounds probe backend2 on its underlay, where it answers; its
    // identity is still coming up (its first handshake refused while the
    // hub's read of EC2 lags). Then this node's overlay is up and backend2
    // is silent there: still booting as far as the overlay shows, so still
    // in its startup grace.
    let mut h = Harness::new(be(3));
    h.m = Monitor::new(slow(), be(3), h.start);
    h.drain();
    h.round(None, None); // frontend1 silent on the overlay: degraded
    let probes = h.tick();
    assert_eq!(probes[0].2, ProbeAddr::Underlay(be(2)));
    for (target, outcome) in [
        (Target::Peer, ProbeOutcome::Reply { rtt: RTT }),
        (Target::Witness, ProbeOutcome::Reply { rtt: RTT }),
        (Target::Overlay, ProbeOutcome::Silent),
    ] {
        h.input(
            Duration::from_millis(100),
            Input::Probed {
                round: probes[0].0,
                target,
                outcome,
            },
        );
    }
    // The overlay comes up; backend2 stays silent on it for 10 rounds.
    for _ in 0..10 {
        h.round(None, Some(RTT));
        let rest = h.held_lookups();
        assert!(
            !rest.iter().any(|a| matches!(a, Action::Fence { .. })),
            "fenced at {:?}, inside the startup grace, though backend2 never answered on the overlay: {rest:?}",
            h.elapsed()
        );
    }
    assert!(!h.m.snapshot().watch.degraded);
    // Past the grace it is dead.
    let mut fenced_at = None;
    for _ in 0..30 {
        h.round(None, Some(RTT));
        if h.held_lookups()
            .iter()
            .any(|a| matches!(a, Action::Fence { .. }))
        {
            fenced_at = Some(h.elapsed());
            break;
        }
    }
    let at = fenced_at.expect("declared dead after the grace");
    assert!(at >= Duration::from_secs(30), "{at:?}");
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
                h.input(Duration::ZERO, holder(slot, held()));
            } else {
                h.work.push(a);
            }
        }
    }
    assert!(h.take_work().contains(&Action::Fence {
        judged: None,
        slot: fe(3),
        attempt: 1,
        chained: false
    }));
    let fence_at = h.elapsed();
    h.fenced(Duration::from_millis(200), fe(3), &[]);
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
    assert_eq!(
        h.m.snapshot().watch.misses,
        2,
        "frontend2's misses carried over"
    );
    // One more silent round of frontend2 declares it dead, and its fence
    // is chained to the takeover (the cooldown after it does not hold it).
    h.round(None, Some(RTT));
    assert!(h.take_work().contains(&Action::Fence {
        judged: None,
        slot: fe(2),
        attempt: 1,
        chained: true
    }));
    let second = h.elapsed() - fence_at;
    assert!(second < Duration::from_secs(2), "{second:?}");
}

#[test]
fn a_live_n_minus_2_carries_nothing() {
    let mut h = Harness::new(fe(4));
    dead(&mut h); // frontend3 silent, frontend2 answering the look-ahead
    h.take_work();
    h.fenced(Duration::ZERO, fe(3), &[]);
    h.input(
        Duration::ZERO,
        Input::TakeOverDone {
            to: fe(3),
            result: Ok(()),
        },
    );
    assert_eq!(h.m.snapshot().watch.misses, 0);
    // frontend2 dies later: a fresh death, not chained to the takeover.
    h.take_work();
    for _ in 0..3 {
        h.round(None, Some(RTT));
    }
    assert!(
        h.take_work().iter().any(|a| matches!(
            a,
            Action::Fence {
                judged: None,
                slot,
                chained: false,
                ..
            } if *slot == fe(2)
        )),
        "{:?}",
        h.events
    );
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
    assert_eq!(h.m.snapshot().watch.misses, 0);
    assert_eq!(h.fences(), 0);
}

#[test]
fn two_dead_together_are_fenced_in_turn_and_the_taker_takes_the_first_place_at_once() {
    // backend1 and backend2 die together; backend3 watches backend2 and
    // looks ahead at backend1 for a whole detection window. Once backend2
    // is fenced, backend3 judges backend1 before any takeover (a detour)
    // and takes backend1's place directly: one takeover, not two, and one
    // transition that names both fences.
    let mut h = Harness::new(be(3));
    h.round(Some(RTT), Some(RTT));
    let mut fence = None;
    for _ in 0..6 {
        h.round_beyond(None, Some(RTT), None);
        for a in h.take_work() {
            match a {
                Action::CheckHolder { slot } => h.input(Duration::ZERO, holder(slot, held())),
                Action::Fence { slot, .. } => fence = Some(slot),
                _ => {}
            }
        }
        if fence.is_some() {
            break;
        }
    }
    assert_eq!(fence, Some(be(2)));
    h.fenced(Duration::from_millis(200), be(2), &["i-b2"]);
    assert!(
        !h.take_work()
            .iter()
            .any(|a| matches!(a, Action::TakeOver { .. })),
        "no takeover of backend2 while backend1 is silent too"
    );
    assert!(h.events.contains(&Event::Detour {
        dead: be(2),
        first: be(1)
    }));
    assert_eq!(h.m.peer(), Some(be(1)));
    // Its misses, seen by the look-ahead, count: one more silent round
    // declares it, and its fence is chained to backend2's.
    h.round(None, Some(RTT));
    let work = h.held_lookups();
    assert!(
        work.contains(&Action::Fence {
            judged: Some(judged()),
            slot: be(1),
            attempt: 1,
            chained: true
        }) || work.contains(&Action::Fence {
            judged: None,
            slot: be(1),
            attempt: 1,
            chained: true
        }),
        "{work:?}"
    );
    h.fenced(Duration::from_millis(200), be(1), &["i-b1"]);
    let work = h.take_work();
    let Some(Action::TakeOver { to, planned, .. }) = work.first() else {
        panic!("{work:?}");
    };
    assert_eq!(*to, be(1));
    assert_eq!(planned.fenced, vec!["i-b1".to_string(), "i-b2".to_string()]);
    let t = h.took_over(Duration::from_millis(300), be(1));
    assert_eq!((t.from, t.to), (be(3), be(1)));
    assert_eq!(h.m.me(), be(1));
}

#[test]
fn a_dead_predecessor_whose_own_predecessor_answers_is_taken_over_directly() {
    // backend2 dies alone: the look-ahead hears backend1, no detour.
    let mut h = Harness::new(be(3));
    h.round(Some(RTT), Some(RTT));
    for _ in 0..6 {
        h.round(None, Some(RTT));
        let work = h.held_lookups();
        if work.iter().any(|a| matches!(a, Action::Fence { .. })) {
            break;
        }
    }
    h.fenced(Duration::from_millis(200), be(2), &["i-b2"]);
    let work = h.take_work();
    assert!(
        matches!(work[..], [Action::TakeOver { to, .. }] if to == be(2)),
        "{work:?}"
    );
}
