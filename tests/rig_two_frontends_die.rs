//! Rig scenario: in a chain of five frontends, frontend2 and frontend3 die
//! at once. Both IDs are filled. frontend4 looked ahead at frontend2 while
//! frontend3 was missing: once frontend3 is fenced it judges frontend2 at
//! once (a detour, its misses already counted) and takes frontend2's place
//! directly, one takeover instead of two; frontend5 moves up into the
//! vacancy.

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
        (Some(4), Some(2)),
        "frontend4 takes frontend2's place directly"
    );
    // The second death was declared with its misses counted while
    // frontend3 was missing: at the declaration frontend2 had missed a
    // whole detection window (3) more rounds than had passed since
    // frontend3's declaration (the fence between takes ~1 round on the
    // instant EC2, ~5 on the AWS-like one). Without the look-ahead its
    // misses would start at frontend3's fence. Counted in the daemon's own
    // rounds, not in wall-clock stamps.
    let log = f.log(3);
    let declared = |who: &str| {
        let what = format!("peer declared dead: {who}");
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"].as_str().is_some_and(|m| m.starts_with(&what)))
            .and_then(|v| Some((v["rounds"].as_u64()?, v["misses"].as_u64()?)))
            .unwrap_or_else(|| panic!("no {what:?} line with rounds in:\n{log}"))
    };
    let (first, _) = declared("frontend3");
    let (second, misses) = declared("frontend2");
    let gap = second.saturating_sub(first);
    assert!(
        second > first && misses >= gap + 3,
        "frontend2 declared dead at round {second} with {misses} misses, {gap} rounds after frontend3 (round {first})"
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
        "frontend2+3 killed -> frontend2's address held again: {:.2} s (second death declared {gap} rounds after the first)",
        both.as_secs_f64()
    );
}
