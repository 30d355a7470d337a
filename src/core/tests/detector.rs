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
        h.input(Duration::ZERO, holder(be(2), Holder::Held));
        assert_eq!(h.fences(), 0);
    }
    h.round(None, Some(RTT));
    assert_eq!(
        h.take_work(),
        vec![Action::Fence {
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
