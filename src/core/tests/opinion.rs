//! The second opinion: helpers' verdicts before an accusation.

use std::time::Duration;

use super::*;
use crate::core::*;

pub(super) fn with_opinion(me: Slot) -> Harness {
    let mut h = Harness::new(me);
    h.m = Monitor::new(
        CoreConfig {
            second_opinion: true,
            ..cfg()
        },
        me,
        h.now,
    );
    h.drain();
    h
}

/// One silent round with the witness up; see [`asked`].
fn miss(h: &mut Harness) -> Vec<u64> {
    h.round(None, Some(RTT));
    asked(h)
}

/// The helpers' requests (about backend2) made so far; holder look-ups
/// answer `Held`, other work stays.
fn asked(h: &mut Harness) -> Vec<u64> {
    asked_about(h, be(2))
}

/// The helpers' requests about `about` made so far (see [`asked`]).
pub(super) fn asked_about(h: &mut Harness, about: Slot) -> Vec<u64> {
    let mut asks = Vec::new();
    for a in h.held_lookups() {
        match a {
            Action::AskHelpers { round, peer, .. } => {
                assert_eq!(peer, about);
                asks.push(round);
            }
            other => h.work.push(other),
        }
    }
    asks
}

pub(super) fn said(h: &mut Harness, round: u64, verdict: Verdict) {
    h.input(
        Duration::from_millis(100),
        Input::HelpersSaid { round, verdict },
    );
}

/// Misses, every request answered `verdict`: no fence before the `n`th
/// miss, one at it.
fn declared_at_miss(h: &mut Harness, n: u32, verdict: Verdict) {
    for k in 1..=n {
        for round in miss(h) {
            said(h, round, verdict);
        }
        assert_eq!(h.fences(), usize::from(k == n), "after miss {k}");
    }
}

#[test]
fn a_peer_a_helper_reaches_is_never_declared_however_long_this_node_misses_it() {
    let mut h = with_opinion(be(3));
    h.round(Some(RTT), Some(RTT));
    for _ in 0..50 {
        for round in miss(&mut h) {
            said(&mut h, round, Verdict::Reached);
        }
    }
    assert_eq!(h.fences(), 0, "{:?}", h.work);
    assert!(h.events.iter().any(|e| matches!(e, Event::Vouched { .. })));
    assert!(h.m.snapshot().watch.misses < 3);
}

#[test]
fn helpers_that_cannot_reach_the_peer_either_confirm_the_death() {
    let mut h = with_opinion(be(3));
    h.round(Some(RTT), Some(RTT));
    let asks = miss(&mut h);
    assert_eq!(asks.len(), 1, "the first miss asks");
    assert!(miss(&mut h).is_empty(), "one request at a time");
    said(&mut h, asks[0], Verdict::Unreached { helpers: 3 });
    assert_eq!(h.fences(), 0, "two misses are not enough");
    miss(&mut h);
    assert_eq!(h.fences(), 1);
}

#[test]
fn at_the_last_miss_a_pending_opinion_is_awaited_then_decides() {
    let mut h = with_opinion(be(3));
    h.round(Some(RTT), Some(RTT));
    let first = miss(&mut h);
    miss(&mut h);
    miss(&mut h);
    assert_eq!(h.fences(), 0, "no verdict yet");
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::Withheld { misses: 3, .. }))
    );
    said(&mut h, first[0], Verdict::Unreached { helpers: 1 });
    assert_eq!(h.fences(), 1, "declared as soon as the verdict came");
}

#[test]
fn too_few_confirmations_wait_for_twice_the_misses() {
    // No helper answered: this node may be the sick one (Lifeguard). Or a
    // pairwise partition: the peer's partner answers "not reached", the
    // other helper does not answer in time. Either way the node waits for
    // twice the misses.
    for (asked, unreached) in [(3, 0), (2, 1)] {
        let mut h = with_opinion(be(3));
        h.round(Some(RTT), Some(RTT));
        declared_at_miss(&mut h, 6, Verdict::TooFew { asked, unreached });
        if unreached > 0 {
            assert!(h.events.iter().any(|e| matches!(
                e,
                Event::Withheld { why, .. } if why.contains("too few helpers")
            )));
        }
    }
}

#[test]
fn with_nobody_to_ask_the_witness_rule_decides_at_once() {
    let mut h = with_opinion(be(3));
    h.round(Some(RTT), Some(RTT));
    declared_at_miss(&mut h, 3, Verdict::NoneToAsk);
}

#[test]
fn a_verdict_from_an_earlier_streak_counts_for_nothing() {
    let mut h = with_opinion(be(3));
    h.round(Some(RTT), Some(RTT));
    let old = miss(&mut h);
    h.round(Some(RTT), Some(RTT)); // the streak ends
    miss(&mut h);
    miss(&mut h);
    said(&mut h, old[0], Verdict::Unreached { helpers: 3 });
    let asks = miss(&mut h);
    assert_eq!(h.fences(), 0, "the old verdict must not declare");
    assert_eq!(asks.len(), 1, "the late answer freed the request slot");
}

#[test]
fn without_the_channel_nobody_is_asked() {
    let mut h = Harness::new(be(3));
    h.round(Some(RTT), Some(RTT));
    dead(&mut h);
    assert!(
        !h.work
            .iter()
            .any(|a| matches!(a, Action::AskHelpers { .. }))
    );
    assert_eq!(h.fences(), 1);
}

#[test]
fn answers_add_up_to_a_verdict() {
    assert_eq!(Verdict::of(0, 0, 0, 3), Verdict::NoneToAsk);
    assert_eq!(
        Verdict::of(4, 1, 3, 3),
        Verdict::Reached,
        "one reach clears"
    );
    assert_eq!(Verdict::of(4, 0, 3, 3), Verdict::Unreached { helpers: 3 });
    assert_eq!(
        Verdict::of(2, 0, 2, 3),
        Verdict::Unreached { helpers: 2 },
        "a smaller fleet: every helper asked"
    );
    assert_eq!(
        Verdict::of(4, 0, 0, 3),
        Verdict::TooFew {
            asked: 4,
            unreached: 0
        }
    );
    // A pairwise partition: the peer's partner cannot reach it, the other
    // helper did not answer in time. That is no confirmation.
    assert_eq!(
        Verdict::of(2, 0, 1, 3),
        Verdict::TooFew {
            asked: 2,
            unreached: 1
        }
    );
}

/// The resignation arrives between rounds: the round it starts at once.
fn resign_now(h: &mut Harness, slot: Slot) -> Vec<(u64, Target, ProbeAddr)> {
    h.m.handle_input(h.now, Input::Resigned { slot });
    h.drain()
}

/// The probes of a round started out of turn come back: the peer silent at
/// the timeout, the witness up. Returns the helpers' requests.
fn silent(h: &mut Harness, probes: &[(u64, Target, ProbeAddr)]) -> Vec<u64> {
    let seq = probes[0].0;
    h.probed(RTT, seq, Target::Witness, true);
    h.probed(Duration::from_millis(800) - RTT, seq, Target::Peer, false);
    asked(h)
}

#[test]
fn a_resigned_peer_is_declared_at_its_next_miss_once_the_helpers_confirm() {
    let mut h = with_opinion(be(3));
    h.round(Some(RTT), Some(RTT));
    let probes = resign_now(&mut h, be(2));
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::Resigned { peer } if *peer == be(2))),
        "{:?}",
        h.events
    );
    assert_eq!(
        probes.len(),
        2,
        "the word starts a round at once: {probes:?}"
    );
    let asks = silent(&mut h, &probes);
    assert_eq!(
        h.fences(),
        0,
        "not on the word and one miss: the helpers first"
    );
    said(&mut h, asks[0], Verdict::Unreached { helpers: 3 });
    assert_eq!(h.fences(), 1, "one miss and the helpers' word");
}

/// backend3 with the second opinion hears backend2's resignation after a
/// good round: the probes of the round it starts, and the helpers' early
/// requests.
fn word_heard() -> (Harness, Vec<(u64, Target, ProbeAddr)>, Vec<u64>) {
    let mut h = with_opinion(be(3));
    h.round(Some(RTT), Some(RTT));
    let probes = resign_now(&mut h, be(2));
    let early = asked(&mut h);
    (h, probes, early)
}

#[test]
fn a_resignation_never_fences_a_peer_that_answers_and_ends_when_it_does() {
    // A resignation heard while the peer still answers (a lie, or a
    // replay within the window): the peer's answer ends it.
    let (mut h, probes, early) = word_heard();
    assert_eq!(early.len(), 1, "the helpers are asked with the probe");
    let seq = probes[0].0;
    for target in [Target::Peer, Target::Witness] {
        h.probed(RTT, seq, target, true);
    }
    // The early request's answer, even one that says nobody reached it
    // (the helpers' paths may be cut), counts for nothing now.
    said(&mut h, early[0], Verdict::Unreached { helpers: 3 });
    // Then a one-way fault: helpers reach nobody, and yet the usual three
    // misses are needed again (the word, still within its 3 s, ended with
    // the answer).
    declared_at_miss(&mut h, 3, Verdict::Unreached { helpers: 3 });
}

#[test]
fn a_resigned_peer_a_helper_reaches_is_not_declared_and_the_word_ends() {
    let mut h = with_opinion(be(3));
    h.round(Some(RTT), Some(RTT));
    let word_at = h.now;
    let probes = resign_now(&mut h, be(2));
    let asks = silent(&mut h, &probes);
    said(&mut h, asks[0], Verdict::Reached);
    assert_eq!(h.fences(), 0);
    assert!(h.events.iter().any(|e| matches!(e, Event::Vouched { .. })));
    // A helper reached it: the resignation was not the truth, and the
    // usual rules are back (Lifeguard: twice the misses without helpers).
    // Under the word, two such misses would fence; these two come within
    // its window (interval x misses = 3 s).
    let none = Verdict::TooFew {
        asked: 3,
        unreached: 0,
    };
    for _ in 0..2 {
        for round in miss(&mut h) {
            said(&mut h, round, none);
        }
    }
    assert!(
        h.now - word_at < Duration::from_secs(3),
        "inside the word's window"
    );
    assert_eq!(h.fences(), 0, "the word ended with the helper's answer");
    for k in 3..=6 {
        for round in miss(&mut h) {
            said(&mut h, round, none);
        }
        assert_eq!(h.fences(), usize::from(k == 6), "after miss {k}");
    }
}

#[test]
fn a_verdict_asked_on_the_word_may_come_before_the_miss() {
    let (mut h, probes, early) = word_heard();
    said(&mut h, early[0], Verdict::Unreached { helpers: 3 });
    assert_eq!(h.fences(), 0, "the helpers alone declare nothing");
    silent(&mut h, &probes);
    assert_eq!(h.fences(), 1, "this node's own miss completes it");
}

#[test]
fn a_resignation_of_another_slot_changes_nothing_and_the_hub_s_only_asks_ec2() {
    let mut h = with_opinion(be(3));
    h.round(Some(RTT), Some(RTT));
    assert!(resign_now(&mut h, be(1)).is_empty());
    assert!(resign_now(&mut h, be(3)).is_empty());
    assert!(h.take_work().is_empty());
    // The hub is judged on its underlay: its word starts no round and
    // hurries no death; it only has EC2 asked whether it released its slot
    // (see plan.rs for the switchover).
    let mut hub_watcher = with_opinion(fe(2));
    assert!(resign_now(&mut hub_watcher, fe(1)).is_empty());
    assert_eq!(
        hub_watcher.take_work(),
        vec![Action::CheckHolder { slot: fe(1) }]
    );
    for h in [&h, &hub_watcher] {
        assert!(
            !h.events.iter().any(|e| matches!(e, Event::Resigned { .. })),
            "{:?}",
            h.events
        );
    }
}
