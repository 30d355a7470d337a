//! Rig scenario: 20 % random packet loss (nftables `numgen random`, both
//! directions) on frontend2's link for a while: frontend3 takes over nobody.
//! CI runs it for 60 s (`CHAINWATCH_LOSS_SECS`); the benchmark runs longer.

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
    let rounds_before = f.status(2).unwrap()["rounds"].as_u64().unwrap();
    f.loss(1, 20);
    let start = Instant::now();
    let mut max_misses = 0;
    let mut rounds = rounds_before;
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some(s) = f.status(2) {
            max_misses = max_misses.max(s["misses"].as_u64().unwrap_or(0));
            rounds = s["rounds"].as_u64().unwrap_or(0);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drops = f.loss_drops(1);
    f.no_loss(1);
    let rounds = rounds - rounds_before;
    eprintln!(
        "{secs} s of 20 % loss on frontend2: {rounds} rounds, {drops} packets dropped, at most {max_misses} consecutive misses, no takeover"
    );
    // The loss was real, and the watcher kept judging through it (one
    // round a second): a stalled watcher takes over nobody either.
    assert!(drops > 0, "the nftables rules dropped nothing");
    assert!(
        rounds * 10 >= secs * 9,
        "{rounds} rounds in {secs} s: the watcher stalled"
    );
    assert!(f.takeovers().is_empty(), "{:?}", f.takeovers());
    assert_eq!(f.status(2).unwrap()["id"], 3);
    assert_eq!(f.instance(1).await.0, "running");
}
