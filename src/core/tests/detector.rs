use std::time::Duration;

use super::*;
use crate::core::*;

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
        h.probed(RTT, seq, Target::Peer, true);
        h.probed(RTT, seq, Target::Witness, true);
    }
    assert!(h.work.is_empty(), "{:?}", h.work);
    let s = h.m.snapshot();
    assert_eq!(s.phase, PhaseName::Watching);
    assert_eq!(s.watch.misses, 0);
    assert_eq!(s.last_rtt, Some(RTT));
    assert_eq!(s.watch.rounds, 100);
    assert_eq!(s.peer, Some(fe(2)));
}

#[test]
fn peer_death_is_declared_after_exactly_misses_rounds() {
    let mut h = Harness::new(be(3));
    h.round(Some(RTT), Some(RTT));
    for miss in 1..=2 {
        h.round(None, Some(RTT));
        assert_eq!(h.m.snapshot().watch.misses, miss);
        assert_eq!(h.take_work(), vec![Action::CheckHolder { slot: be(2) }]);
        h.input(Duration::ZERO, holder(be(2), held()));
        assert_eq!(h.fences(), 0);
    }
    h.round(None, Some(RTT));
    assert_eq!(
        h.take_work(),
        vec![Action::Fence {
            judged: Some(judged()),
            slot: be(2),
            attempt: 1,
            chained: false
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
    h.only_lookups();
    let s = h.m.snapshot();
    assert_eq!(s.watch.misses, 0);
    assert!(s.watch.cut_off);
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
    assert_eq!(h.m.snapshot().watch.misses, 2);
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
    assert_eq!(h.m.snapshot().watch.misses, 0);
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

/// The defaults as shipped, without the startup grace.
fn shipped(me: Slot) -> Harness {
    let mut h = Harness::new(me);
    let c = CoreConfig {
        startup_grace: Duration::ZERO,
        ..CoreConfig::default()
    };
    h.m = Monitor::new(c, me, h.now);
    h.drain();
    h
}

#[test]
fn overlay_rounds_go_at_the_fast_pace_and_rounds_that_ask_ec2_at_the_apis() {
    // frontend3 watches frontend2 on the overlay: every 250 ms, 200 ms probes.
    let mut h = shipped(fe(3));
    for i in 0..8u64 {
        h.round(Some(RTT), Some(RTT));
        assert_eq!(h.elapsed(), Duration::from_millis(250 * i + 3));
        assert_eq!(h.timeout, Duration::from_millis(200));
    }
    // frontend2 watches the hub on its underlay, EC2 the witness: every 1 s,
    // 800 ms, whatever the overlay's pace.
    let mut h = shipped(fe(2));
    for i in 0..4u64 {
        h.round(Some(RTT), Some(RTT));
        assert_eq!(h.elapsed(), Duration::from_millis(1000 * i + 3));
        assert_eq!(h.timeout, Duration::from_millis(800));
    }
    // So does a peer while the overlay is down (EC2 the witness again).
    let mut h = shipped(be(3));
    h.round(None, None); // the witness on the overlay is silent: degraded
    let probes = h.tick();
    assert_eq!(probes[1].2, ProbeAddr::Ec2Api);
    assert_eq!(h.timeout, Duration::from_millis(800));
    // The overlay back: the next round comes at the overlay's pace, not
    // at the end of the degraded round's second.
    let started = h.now;
    let probes = h.drain_after_overlay_back(probes[0].0);
    assert!(probes.is_empty(), "{probes:?}");
    let next = h.tick();
    assert_eq!(next[1].2, ProbeAddr::Overlay(fe(1)), "{next:?}");
    assert!(
        h.now - started <= Duration::from_millis(260),
        "{:?}",
        h.now - started
    );
    // Operators who slow the overlay's rounds below the API's keep theirs.
    let mut h = Harness::new(fe(2));
    let c = CoreConfig {
        interval: Duration::from_secs(2),
        probe_timeout: Duration::from_millis(1500),
        ..CoreConfig::default()
    };
    h.m = Monitor::new(c, fe(2), h.now);
    h.drain();
    h.round(Some(RTT), Some(RTT));
    h.round(Some(RTT), Some(RTT));
    assert_eq!(h.elapsed(), Duration::from_millis(2003));
    assert_eq!(h.timeout, Duration::from_millis(1500));
}

/// A death at every phase of the 250 ms round, 10 ms apart, is declared
/// within 0.95 s: the round under way when it dies (already answered),
/// then three silent ones, the last reported at its 200 ms timeout.
#[test]
fn with_the_shipped_pace_a_death_at_any_phase_is_declared_within_a_second() {
    let mut worst = Duration::ZERO;
    for phase in (0..250).step_by(10) {
        let mut h = shipped(be(3));
        for _ in 0..4 {
            h.round(Some(RTT), Some(RTT));
        }
        // The last round started 3 ms ago; the peer dies `phase` ms into it
        // (a death before its answer makes that round the first miss).
        let started = h.now - RTT;
        let death = started + Duration::from_millis(phase.max(4));
        loop {
            h.round(None, Some(RTT));
            if h.fences() > 0 {
                break;
            }
            h.held_lookups();
        }
        let took = h.now - death;
        assert!(
            took <= Duration::from_millis(950),
            "phase {phase} ms: {took:?}"
        );
        worst = worst.max(took);
    }
    assert!(worst >= Duration::from_millis(900), "{worst:?}");
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
