//! Rig scenario: an observer cut off from everything takes over nobody.
//! frontend3, the tail of its chain (nobody watches it), loses its link for
//! 20 s: it cannot see frontend2 nor the witness nor EC2, so it accuses
//! nobody, and when its link is back the chain is as before.

mod common;

use std::time::Duration;

use chainwatch::layout::{Role, Slot};
use common::fleet::Fleet;
use common::{rig_ready, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

#[tokio::test(flavor = "current_thread")]
async fn a_cut_off_observer_takes_over_nobody() {
    if !rig_ready(false) {
        return;
    }
    let f = Fleet::frontends(3).await;
    f.link(2, false);
    let before = f.status(2).unwrap()["rounds"].as_u64().unwrap();
    wait_for("20 rounds cut off", Duration::from_secs(40), || {
        f.status(2)
            .filter(|s| s["rounds"].as_u64().unwrap() >= before + 20)
    });
    let s = f.status(2).unwrap();
    assert_eq!(s["id"], 3);
    assert!(s["phase"] == "watching", "{s}");
    f.link(2, true);
    f.wait_overlay(2, fe(3), 60);
    wait_for(
        "frontend2 answering frontend3 again",
        Duration::from_secs(30),
        || {
            f.status(2).filter(|s| {
                s["misses"] == 0 && s["last_rtt_ms"].is_number() && s["degraded"] == false
            })
        },
    );
    assert!(f.takeovers().is_empty(), "{:?}", f.takeovers());
    for i in 0..3 {
        assert_eq!(f.instance(i).await.0, "running");
        assert_eq!(f.status(i).unwrap()["id"].as_u64(), Some(i as u64 + 1));
    }
}
