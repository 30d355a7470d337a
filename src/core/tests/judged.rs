//! The instance judged: named by the look-ups, fenced alone, superseded
//! when the slot was taken since, and a recorded fence resumed at start.

use std::time::Duration;

use super::*;
use crate::core::*;

/// The fence names the instance the look-ups named, and a look-up that
/// names another instance (the slot was taken over) forgets the misses
/// counted against the old one.
#[test]
fn the_fence_names_the_judged_instance_and_a_new_holder_starts_afresh() {
    let mut h = Harness::new(be(3));
    h.round(Some(RTT), Some(RTT));
    h.round(None, Some(RTT));
    h.held_lookups();
    h.round(None, Some(RTT));
    assert_eq!(h.m.snapshot().watch.misses, 2);
    // The next look-up names another instance: a new holder.
    for a in h.take_work() {
        if let Action::CheckHolder { slot } = a {
            let other = Judged {
                instance: "i-new".into(),
                epoch: 2,
            };
            h.input(Duration::ZERO, holder(slot, Holder::Held(other)));
        }
    }
    assert_eq!(h.m.snapshot().watch.misses, 0, "{:?}", h.events);
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::NewHolder { instance, .. } if instance == "i-new"
    )));
    for _ in 0..3 {
        h.round(None, Some(RTT));
        for a in h.take_work() {
            match a {
                Action::CheckHolder { slot } => {
                    let j = Judged {
                        instance: "i-new".into(),
                        epoch: 2,
                    };
                    h.input(Duration::ZERO, holder(slot, Holder::Held(j)))
                }
                other => h.work.push(other),
            }
        }
    }
    let fence = h.take_work();
    assert!(
        fence.iter().any(|a| matches!(
            a,
            Action::Fence { judged: Some(j), .. } if j.instance == "i-new" && j.epoch == 2
        )),
        "{fence:?}"
    );
}

/// A fence that finds the slot taken by another instance ends: no
/// takeover, back to watching (the new holder), probing again.
#[test]
fn a_superseded_fence_goes_back_to_watching() {
    let mut h = Harness::new(be(3));
    h.round(Some(RTT), Some(RTT));
    dead(&mut h);
    assert_eq!(h.fences(), 1);
    h.take_work();
    let holder = Some(Judged {
        instance: "i-new".into(),
        epoch: 7,
    });
    h.input(
        Duration::from_millis(50),
        Input::Superseded {
            slot: be(2),
            holder,
        },
    );
    assert_eq!(h.m.snapshot().phase, PhaseName::Watching);
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::Superseded { .. }))
    );
    h.round(Some(RTT), Some(RTT));
    assert!(
        !h.take_work()
            .iter()
            .any(|a| matches!(a, Action::TakeOver { .. } | Action::Fence { .. }))
    );
    // A late confirmation of the old fence takes nothing over either.
    h.fenced(Duration::ZERO, be(2), &["i-old"]);
    assert!(
        !h.take_work()
            .iter()
            .any(|a| matches!(a, Action::TakeOver { .. }))
    );
}

/// At start, the fence the last run recorded is finished at once (no
/// misses, no grace), naming the judged instance; the peer answering
/// still calls it off.
#[test]
fn a_recorded_fence_is_resumed_at_once_and_an_answer_calls_it_off() {
    let mut h = Harness::new(be(3));
    h.m = Monitor::new(slow(), be(3), h.now); // with the startup grace
    h.drain();
    let j = Judged {
        instance: "i-dead".into(),
        epoch: 3,
    };
    h.input(
        Duration::ZERO,
        Input::ResumeFence {
            slot: be(2),
            judged: j.clone(),
        },
    );
    let work = h.take_work();
    assert!(
        work.iter()
            .any(|a| matches!(a, Action::Fence { judged: Some(x), .. } if *x == j)),
        "{work:?}"
    );
    // Not this node's peer: nothing.
    let mut other = Harness::new(be(3));
    other.input(
        Duration::ZERO,
        Input::ResumeFence {
            slot: be(1),
            judged: j,
        },
    );
    assert_eq!(other.fences(), 0);
    // The peer answers before the fence is confirmed, and the fence fails:
    // called off.
    h.round(Some(RTT), Some(RTT));
    h.fence_fails(Duration::ZERO, be(2), "late");
    assert_eq!(h.m.snapshot().phase, PhaseName::Watching);
}
