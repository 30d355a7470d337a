//! Rig scenario: in a chain of five frontends, frontend2 and frontend3 die
//! at once. Both IDs are filled, and the second one is declared dead within
//! two rounds of the first takeover — not after a second detection window
//! (frontend4 looked ahead at frontend2 while frontend3 was missing).

mod common;

use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::Fleet;
use common::{rig_ready, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

#[tokio::test(flavor = "current_thread")]
async fn two_consecutive_frontends_die_at_once() {
    if !rig_ready(false) {
        return;
    }
    let f = Fleet::frontends(5).await;
    let t0 = Instant::now();
    f.kill(1);
    f.kill(2);
    // frontend4 ends as frontend2, frontend5 as frontend3.
    f.wait_overlay(3, fe(2), 60);
    let both = t0.elapsed();
    f.wait_overlay(4, fe(3), 60);
    let s = wait_for("frontend4's status", Duration::from_secs(10), || {
        f.status(3).filter(|s| s["id"] == 2)
    });
    let t = &s["last_transition"];
    assert_eq!(
        (t["from_id"].as_u64(), t["to_id"].as_u64()),
        (Some(3), Some(2))
    );
    // The second death was declared at most two probe rounds after the
    // first takeover was up: its misses were counted while frontend4 took
    // over. Counted in the daemon's own rounds, not in wall-clock stamps.
    let log = f.log(3);
    let rounds_at = |what: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"].as_str().is_some_and(|m| m.starts_with(what)))
            .and_then(|v| v["rounds"].as_u64())
            .unwrap_or_else(|| panic!("no {what:?} line with rounds in:\n{log}"))
    };
    let first_up = rounds_at("took over frontend3");
    let declared = rounds_at("peer declared dead: frontend2");
    let gap = declared.saturating_sub(first_up);
    assert!(
        declared > first_up && gap <= 2,
        "frontend2 declared dead at round {declared}, {gap} rounds after the first takeover (round {first_up})"
    );
    // Both victims were fenced: stopped in EC2 and tagged so.
    for i in [1, 2] {
        wait_for("the victim stopped in EC2", Duration::from_secs(30), || {
            f.powered_off(i).then_some(())
        });
        let tags = f.stopped_instance(i).await;
        assert!(
            tags.contains(&("chainwatch:state".into(), "fenced".into())),
            "{}: {tags:?}",
            f.nodes[i].ns
        );
    }
    // Every address answers from frontend1.
    for id in [2, 3] {
        let addr = f.layout.overlay_addr(fe(id));
        wait_for("the chain whole", Duration::from_secs(30), || {
            f.ping(0, addr, 500).then_some(())
        });
    }
    eprintln!(
        "frontend2+3 killed -> frontend2's address held again: {:.2} s (second death declared {gap} rounds after the first takeover)",
        both.as_secs_f64()
    );
}
