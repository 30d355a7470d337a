//! Rig scenario: 20 % random packet loss (nftables `numgen random`, both
//! directions) on frontend2's link for a while: frontend3 takes over nobody.
//! CI runs it for 60 s (`CHAINWATCH_LOSS_SECS`); the benchmark runs longer.
//! The watcher keeps its pace through it: one round per `probe.interval`
//! (read from its config, 250 ms by default).

mod common;

use std::time::{Duration, Instant};

use common::fleet::Fleet;
use common::{have, prerequisite, rig_ready};

#[tokio::test(flavor = "current_thread")]
async fn random_loss_on_a_peer_link_causes_no_takeover() {
    if !rig_ready(false) || !prerequisite(have("nft"), "nftables (nft)") {
        return;
    }
    let secs = common::env_u64("CHAINWATCH_LOSS_SECS", 60);
    let f = Fleet::frontends(3).await;
    // The watcher's pace, as the daemon reads it (its config file and the
    // environment it inherits from this test).
    let interval = f.settings(2).config.probe.interval;
    let first = f.status(2).unwrap()["rounds"].as_u64().unwrap();
    let first_at = Instant::now();
    f.loss(1, 20);
    let mut max_misses = 0;
    let (mut last, mut last_at) = (first, first_at);
    while first_at.elapsed() < Duration::from_secs(secs) {
        if let Some(s) = f.status(2) {
            max_misses = max_misses.max(s["misses"].as_u64().unwrap_or(0));
            if let Some(r) = s["rounds"].as_u64() {
                (last, last_at) = (r, Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drops = f.loss_drops(1);
    f.no_loss(1);
    let rounds = last - first;
    let watched = last_at - first_at;
    // One round per `probe.interval` between the first and the last
    // status read (each round starts one interval after the last; an
    // answer ends it early, a silence after `probe.timeout`, which is
    // shorter), with 10 % for the status reads and scheduling.
    let due = watched.as_millis() as u64 / interval.as_millis().max(1) as u64;
    eprintln!(
        "{secs} s of 20 % loss on frontend2: {rounds} rounds in {:.1} s (one per {interval:?}: {due} due), {drops} packets dropped, at most {max_misses} consecutive misses, no takeover",
        watched.as_secs_f64()
    );
    // The loss was real, and the watcher kept judging through it at its
    // configured pace: a stalled watcher takes over nobody either.
    assert!(drops > 0, "the nftables rules dropped nothing");
    assert!(
        rounds * 10 >= due * 9,
        "{rounds} rounds in {watched:?}, {due} due at one per {interval:?}: the watcher stalled"
    );
    assert!(f.takeovers().is_empty(), "{:?}", f.takeovers());
    assert_eq!(f.status(2).unwrap()["id"], 3);
    assert_eq!(f.instance(1).await.0, "running");
}
