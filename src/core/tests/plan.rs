use std::time::Duration;

use super::*;
use crate::core::*;

#[test]
fn fence_failure_means_no_takeover_and_bounded_backoff() {
    let mut h = Harness::new(be(3));
    dead(&mut h);
    assert_eq!(h.take_work().len(), 1);
    let mut delays = Vec::new();
    for attempt in 1..=10u32 {
        h.fence_fails(Duration::from_millis(50), be(2), "ec2 unreachable");
        let Some(Event::FenceFailed { failure, .. }) = h.events.last().cloned() else {
            panic!("no FenceFailed event: {:?}", h.events);
        };
        assert_eq!(failure.attempt, attempt);
        let retry_in = failure.retry_in;
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
                Target::Witness | Target::Overlay | Target::Beyond | Target::HubOverlay => {
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
                judged: Some(judged()),
                slot: be(2),
                attempt: attempt + 1,
                chained: false
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
        h.m.snapshot().watch.last_error.as_deref(),
        Some("ec2 unreachable")
    );
    // Finally the fence is confirmed: take over.
    h.fenced(Duration::from_millis(50), be(2), &["i-0abc"]);
    let planned = one_takeover(h.take_work(), be(3), be(2), 1);
    // The planned transition (persisted with the state) names the fenced
    // instance.
    assert_eq!(planned.fenced, vec!["i-0abc".to_string()]);
    assert!(!planned.vacant);
}

/// The only piece of work is a takeover of `to` from `from` at `attempt`;
/// its planned transition.
fn one_takeover(work: Vec<Action>, from: Slot, to: Slot, attempt: u32) -> Transition {
    match &work[..] {
        [
            Action::TakeOver {
                from: f,
                to: t,
                attempt: a,
                planned,
            },
        ] if (*f, *t, *a) == (from, to, attempt) => {
            assert_eq!((planned.from, planned.to), (from, to));
            planned.clone()
        }
        _ => panic!("want one takeover {from}->{to} attempt {attempt}, got {work:?}"),
    }
}

/// backend3 declared backend2 dead, and the first fence failed with
/// `error`: back-off.
fn in_fence_backoff(error: &str) -> Harness {
    let mut h = Harness::new(be(3));
    dead(&mut h);
    h.take_work();
    h.fence_fails(Duration::ZERO, be(2), error);
    h
}

#[test]
fn a_peer_that_answers_during_fence_backoff_is_not_taken_over() {
    let mut h = in_fence_backoff("throttled");
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
    let mut h = in_fence_backoff("timeout");
    h.round(None, None);
    assert_eq!(h.m.snapshot().phase, PhaseName::Watching);
    for _ in 0..5 {
        h.round(None, None);
    }
    h.only_lookups();
}

#[test]
fn a_fence_confirmed_after_the_peer_answered_still_leads_to_takeover() {
    // The stop was sent and EC2 confirms it: the peer is down now, its ID
    // must be filled.
    let mut h = Harness::new(be(3));
    dead(&mut h);
    h.take_work();
    h.round(Some(RTT), Some(RTT)); // answers while the fence is in flight
    h.fenced(Duration::ZERO, be(2), &[]);
    assert!(matches!(h.take_work()[..], [Action::TakeOver { .. }]));
    // ...whereas a failing one then returns to watching without a retry.
    let mut h = Harness::new(be(3));
    dead(&mut h);
    h.take_work();
    h.round(Some(RTT), Some(RTT));
    h.fence_fails(Duration::ZERO, be(2), "api error");
    assert_eq!(h.m.snapshot().phase, PhaseName::Watching);
    assert_eq!(h.m.poll_timeout(), Some(h.start + Duration::from_secs(4)));
}

#[test]
fn takeover_announces_and_watches_the_new_predecessor() {
    // Backends: a frontend whose takeover failed judges the hub first (see
    // `a_failed_frontend_takeover_judges_the_hub_first`).
    let mut h = Harness::new(be(4));
    dead(&mut h);
    h.take_work();
    h.fenced(Duration::from_millis(300), be(3), &["i-1"]);
    h.take_work();
    h.input(
        Duration::from_millis(200),
        Input::TakeOverDone {
            to: be(3),
            result: Err("AUTH_FAILED".into()),
        },
    );
    assert!(h.take_work().is_empty());
    assert_eq!(h.m.snapshot().phase, PhaseName::TakingOver);
    h.tick(); // retry after 500 ms
    one_takeover(h.take_work(), be(4), be(3), 2);
    let t = h.took_over(Duration::from_millis(700), be(3));
    assert_eq!((t.from, t.to), (be(4), be(3)));
    assert_eq!(t.fenced, vec!["i-1".to_string()]);
    assert!(!t.vacant);
    let silent = t.silent_since.unwrap();
    assert!(silent < t.declared_at && t.declared_at < t.fenced_at);
    assert!(t.fenced_at < t.identity_up_at);
    assert_eq!(
        t.identity_up_at - t.declared_at,
        Duration::from_millis(1700)
    );
    assert_eq!(h.m.me(), be(3));
    assert_eq!(h.m.peer(), Some(be(2)));
    // The new predecessor is probed at once.
    let probes = h.tick();
    assert_eq!(probes[0].2, ProbeAddr::Overlay(be(2)));
    assert_eq!(h.m.snapshot().watch.misses, 0);
}

#[test]
fn a_vacant_predecessor_is_taken_when_two_look_ups_a_second_apart_agree() {
    let mut h = Harness::new(fe(3));
    h.round(None, Some(RTT));
    assert_eq!(h.take_work(), vec![Action::CheckHolder { slot: fe(2) }]);
    h.input(Duration::from_millis(20), holder(fe(2), Holder::Vacant));
    // One look-up may be stale (EC2 is eventually consistent): not yet.
    assert!(h.take_work().is_empty());
    assert!(!h.events.contains(&Event::Vacant { peer: fe(2) }));
    h.round(None, Some(RTT));
    assert_eq!(h.take_work(), vec![Action::CheckHolder { slot: fe(2) }]);
    h.input(Duration::from_millis(220), holder(fe(2), Holder::Vacant));
    let planned = one_takeover(h.take_work(), fe(3), fe(2), 1);
    assert!(planned.vacant && planned.fenced.is_empty());
    assert!(h.events.contains(&Event::Vacant { peer: fe(2) }));
    let t = h.took_over(Duration::from_millis(100), fe(2));
    assert!(t.vacant && t.fenced.is_empty());
    // Well inside one detection window.
    assert!(
        h.elapsed() < Duration::from_millis(2500),
        "{:?}",
        h.elapsed()
    );
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
    h.input(Duration::ZERO, holder(fe(2), held()));
    h.round(None, None);
    assert_eq!(h.take_work(), vec![Action::CheckHolder { slot: fe(2) }]);
    h.input(Duration::ZERO, holder(fe(2), Holder::Vacant));
    assert!(h.take_work().is_empty());
    // A look-up that finds it held again resets the vacancy.
    h.round(None, None);
    assert_eq!(h.take_work(), vec![Action::CheckHolder { slot: fe(2) }]);
    h.input(Duration::ZERO, holder(fe(2), held()));
    h.round(None, None);
    h.take_work();
    h.input(Duration::ZERO, holder(fe(2), Holder::Vacant));
    assert!(h.take_work().is_empty());
    h.round(None, None);
    h.take_work();
    h.input(Duration::from_millis(300), holder(fe(2), Holder::Vacant));
    // frontend2's new identity would connect through the hub, which is
    // silent: frontend3 judges the hub first (a detour) instead of waiting
    // on it.
    assert!(h.take_work().is_empty());
    assert!(h.events.contains(&Event::Detour {
        dead: fe(2),
        first: fe(1)
    }));
    assert_eq!(h.m.peer(), Some(fe(1)));
    let probes = h.tick();
    assert!(
        probes
            .iter()
            .any(|p| p.1 == Target::Peer && p.2 == ProbeAddr::Underlay(fe(1))),
        "{probes:?}"
    );
    // The hub answers: it lives, and the takeover of frontend2 goes ahead.
    let seq = probes[0].0;
    h.probed(Duration::from_millis(3), seq, Target::Peer, true);
    h.probed(Duration::ZERO, seq, Target::HubOverlay, false);
    assert!(matches!(
        h.take_work()[..],
        [Action::TakeOver { to, .. }] if to == fe(2)
    ));
    // A held slot is never fenced without the witness, however long.
    let mut h = Harness::new(be(3));
    for _ in 0..20 {
        h.round(None, None);
        for a in h.take_work() {
            assert_eq!(a, Action::CheckHolder { slot: be(2) });
            h.input(Duration::ZERO, holder(be(2), held()));
        }
    }
    assert_eq!(h.fences(), 0);
}

/// A planned switchover: the hub resigns and EC2 shows its slot released.
/// Its underlay still answers (the instance lives on), and yet two look-ups
/// that find the slot vacant take it, without a fence.
#[test]
fn a_hub_that_released_its_slot_is_taken_without_a_fence_while_it_answers() {
    let mut h = Harness::new(fe(2));
    h.round(Some(RTT), Some(RTT));
    h.input(Duration::ZERO, Input::Resigned { slot: fe(1) });
    assert!(h.events.contains(&Event::HandingOver { peer: fe(1) }));
    assert_eq!(h.take_work(), vec![Action::CheckHolder { slot: fe(1) }]);
    h.input(Duration::from_millis(20), holder(fe(1), Holder::Vacant));
    assert!(h.take_work().is_empty(), "one look-up may be stale");
    // The next round: the old hub answers on its underlay; EC2 is asked
    // again and still finds the slot released.
    h.round(Some(RTT), Some(RTT));
    assert_eq!(h.take_work(), vec![Action::CheckHolder { slot: fe(1) }]);
    h.input(Duration::from_millis(20), holder(fe(1), Holder::Vacant));
    let planned = one_takeover(h.take_work(), fe(2), fe(1), 1);
    assert!(planned.vacant && planned.fenced.is_empty());
    assert_eq!(h.fences(), 0);
    let t = h.took_over(Duration::from_millis(100), fe(1));
    assert!(t.vacant && t.fenced.is_empty());
    assert_eq!(h.m.peer(), None, "frontend1 watches nobody");
}

/// The word alone takes nothing: while EC2 shows the slot held (the word
/// was a lie, a replay, or the holder did not release it), the hub is not
/// touched, and once the window has passed EC2 is no longer asked.
#[test]
fn a_resignation_without_a_released_slot_takes_nothing() {
    for peer in [fe(1), be(2)] {
        let me = peer.watcher().unwrap();
        let mut h = Harness::new(me);
        h.round(Some(RTT), Some(RTT));
        h.input(Duration::ZERO, Input::Resigned { slot: peer });
        let mut looked = 0;
        for _ in 0..6 {
            for a in h.take_work() {
                assert_eq!(a, Action::CheckHolder { slot: peer });
                looked += 1;
                h.input(Duration::ZERO, holder(peer, held()));
            }
            h.round(Some(RTT), Some(RTT));
        }
        h.take_work();
        assert!(
            (2..=4).contains(&looked),
            "{peer}: EC2 asked {looked} times"
        );
        assert_eq!(h.fences(), 0);
        assert_eq!(h.m.me(), me);
        // A vacancy seen after the window, while the peer answers, is
        // ignored as before.
        h.input(Duration::ZERO, holder(peer, Holder::Vacant));
        h.round(Some(RTT), Some(RTT));
        h.input(Duration::from_millis(600), holder(peer, Holder::Vacant));
        assert!(h.take_work().is_empty(), "{peer}");
    }
}

/// A frontend whose takeover failed (its client identity did not come up:
/// perhaps the hub it connects through is dead) judges the hub before the
/// next attempt: a detour, not a blind retry.
#[test]
fn a_failed_frontend_takeover_judges_the_hub_first() {
    let mut h = Harness::new(fe(4));
    dead(&mut h);
    h.take_work();
    h.fenced(Duration::from_millis(300), fe(3), &["i-1"]);
    h.take_work();
    h.input(
        Duration::from_millis(200),
        Input::TakeOverDone {
            to: fe(3),
            result: Err("frontend3 not up after 20 s: last OpenVPN state WAIT".into()),
        },
    );
    assert!(h.events.contains(&Event::Detour {
        dead: fe(3),
        first: fe(1)
    }));
    assert_eq!(h.m.peer(), Some(fe(1)));
    // The hub answers on its overlay: the takeover goes ahead.
    let probes = h.tick();
    let seq = probes[0].0;
    h.probed(Duration::from_millis(3), seq, Target::HubOverlay, true);
    one_takeover(h.take_work(), fe(4), fe(3), 1);
}

/// backend4 takes backend3 over when backend3's holder moved up to
/// backend2 (a vacancy hop). Its new peer, backend2, is that same instance,
/// its identity still coming up (through a hub that just changed, say):
/// not heard yet, it is not fenced within three detection windows at the
/// API's pace. Heard, it is watched as any peer; never heard, it is judged
/// after that.
#[test]
fn a_predecessor_that_moved_up_is_given_its_takeover_s_time() {
    let mover = Judged {
        instance: "i-mover".into(),
        epoch: 2,
    };
    let answer = |h: &mut Harness, slot: Slot, found: Holder| -> usize {
        let mut fences = 0;
        for a in h.take_work() {
            match a {
                Action::CheckHolder { slot: s } if s == slot => {
                    h.input(Duration::ZERO, holder(s, found.clone()))
                }
                Action::Fence { .. } => fences += 1,
                _ => {}
            }
        }
        fences
    };
    let mut h = Harness::new(be(4));
    h.round(Some(RTT), Some(RTT));
    // backend3 (i-mover) goes silent: it is taking backend2 over, and
    // has left backend3.
    h.round(None, Some(RTT));
    answer(&mut h, be(3), Holder::Vacant);
    h.round(None, Some(RTT));
    h.input(Duration::from_millis(220), holder(be(3), Holder::Vacant));
    let work: Vec<Action> = h
        .take_work()
        .into_iter()
        .filter(|a| !matches!(a, Action::CheckHolder { .. }))
        .collect();
    let planned = one_takeover(work, be(4), be(3), 1);
    assert!(planned.vacant);
    h.took_over(Duration::from_millis(100), be(3));
    assert_eq!(h.m.peer(), Some(be(2)));
    let hopped = h.elapsed();
    // backend2 is i-mover, silent: no fence within three windows.
    let mut fenced_at = None;
    for _ in 0..20 {
        h.round(None, Some(RTT));
        if answer(&mut h, be(2), Holder::Held(mover.clone())) > 0 {
            fenced_at = Some(h.elapsed() - hopped);
            break;
        }
    }
    let at = fenced_at.expect("judged once its time ran out");
    assert!(
        at >= Duration::from_secs(9),
        "the mover was fenced {at:?} after the hop, inside its takeover's time"
    );
}
