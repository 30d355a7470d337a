//! The hub: alive while it answers anywhere, its helpers asked on the
//! underlay before any fence, and the sick hub.

use std::time::Duration;

use super::opinion::{asked_about, said, with_opinion};
use super::*;
use crate::core::*;

/// Three silent rounds of the hub (underlay and overlay) with EC2
/// answering; the helpers' request about it answered `verdict`. Returns the
/// requests made (each asking for its underlay to count too).
fn dead_hub_rounds(h: &mut Harness, verdict: Verdict) -> Vec<u64> {
    let mut asks = Vec::new();
    h.round(Some(RTT), Some(RTT));
    for _ in 0..3 {
        h.round(None, Some(RTT));
        for a in h.held_lookups() {
            match a {
                Action::AskHelpers {
                    round,
                    peer,
                    overlay_only,
                    ..
                } => {
                    assert_eq!(peer, fe(1));
                    assert!(!overlay_only, "a silent hub: its underlay counts too");
                    asks.push(round);
                    said(h, round, verdict);
                }
                other => h.work.push(other),
            }
        }
    }
    asks
}

#[test]
fn a_dead_hub_is_fenced_once_its_helpers_cannot_reach_it_either() {
    let mut h = with_opinion(fe(2));
    let asks = dead_hub_rounds(&mut h, Verdict::Unreached { helpers: 2 });
    assert!(!asks.is_empty(), "the helpers are asked before a hub fence");
    assert_eq!(h.fences(), 1);
}

#[test]
fn a_hub_a_helper_reaches_is_not_fenced() {
    let mut h = with_opinion(fe(2));
    let asks = dead_hub_rounds(&mut h, Verdict::Reached);
    assert!(!asks.is_empty());
    assert_eq!(h.fences(), 0);
    assert!(
        h.events.iter().any(|e| matches!(e, Event::Vouched { .. })),
        "{:?}",
        h.events
    );
}

/// frontend2's ICMP to the hub's VPC address is dropped; the hub answers
/// on the overlay: never a miss, whatever the underlay says.
#[test]
fn a_hub_answering_on_its_overlay_alone_is_alive() {
    for opinion in [false, true] {
        let mut h = Harness::new(fe(2));
        h.m = Monitor::new(
            CoreConfig {
                second_opinion: opinion,
                ..cfg()
            },
            fe(2),
            h.now,
        );
        h.drain();
        for _ in 0..10 {
            let probes = h.tick();
            let seq = probes[0].0;
            for (_, target, _) in probes {
                let reply = !matches!(target, Target::Peer);
                let after = if reply { 3 } else { 800 };
                h.probed(Duration::from_millis(after), seq, target, reply);
            }
            let work = h.held_lookups();
            assert!(work.is_empty(), "{work:?}");
        }
        assert_eq!(h.m.snapshot().watch.misses, 0);
        assert_eq!(h.fences(), 0);
    }
}

/// One round of frontend2 watching the hub: its underlay and EC2 answer;
/// its overlay answers when `overlay`. Returns the helpers' requests.
fn hub_round(h: &mut Harness, overlay: bool) -> Vec<u64> {
    let probes = h.tick();
    assert!(
        probes.iter().any(|p| p.1 == Target::HubOverlay),
        "the hub is probed on the overlay too: {probes:?}"
    );
    let seq = probes[0].0;
    for (_, target, _) in probes {
        let outcome = match target {
            Target::HubOverlay if !overlay => ProbeOutcome::Silent,
            _ => ProbeOutcome::Reply { rtt: RTT },
        };
        h.input(
            Duration::from_millis(if outcome == ProbeOutcome::Silent {
                800
            } else {
                3
            }),
            Input::Probed {
                round: seq,
                target,
                outcome,
            },
        );
    }
    asked_about(h, fe(1))
}

#[test]
fn a_hub_whose_overlay_is_silent_past_the_grace_is_fenced_once_helpers_confirm() {
    let mut h = with_opinion(fe(2));
    hub_round(&mut h, true);
    // 8 s of overlay silence: the hub may be restarting its OpenVPN.
    for _ in 0..8 {
        assert!(hub_round(&mut h, false).is_empty());
        assert_eq!(h.m.snapshot().watch.misses, 0);
    }
    let mut fenced_after = None;
    for n in 1..=5 {
        for round in hub_round(&mut h, false) {
            said(&mut h, round, Verdict::Unreached { helpers: 2 });
        }
        if h.fences() > 0 {
            fenced_after = Some(n);
            break;
        }
    }
    assert_eq!(fenced_after, Some(3), "{:?}", h.events);
    assert!(h.events.iter().any(|e| matches!(e, Event::SickHub { .. })));
}

#[test]
fn a_sick_hub_is_never_fenced_on_this_nodes_word_alone() {
    for verdict in [
        Verdict::Reached,
        Verdict::TooFew {
            asked: 4,
            unreached: 0,
        },
        Verdict::TooFew {
            asked: 4,
            unreached: 1,
        },
        Verdict::NoneToAsk,
    ] {
        let mut h = with_opinion(fe(2));
        hub_round(&mut h, true);
        for _ in 0..40 {
            for round in hub_round(&mut h, false) {
                said(&mut h, round, verdict);
            }
        }
        assert_eq!(h.fences(), 0, "{verdict:?}");
    }
}

#[test]
fn the_hub_overlay_back_ends_the_sickness() {
    let mut h = with_opinion(fe(2));
    for _ in 0..10 {
        hub_round(&mut h, false);
    }
    assert!(h.m.snapshot().watch.misses > 0);
    hub_round(&mut h, true);
    assert_eq!(h.m.snapshot().watch.misses, 0);
    for _ in 0..7 {
        assert!(hub_round(&mut h, false).is_empty(), "the grace starts over");
    }
}
