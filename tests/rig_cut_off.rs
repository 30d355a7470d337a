//! Rig scenario: an observer cut off from everything takes over nobody.
//! frontend3, the tail of its chain, loses its link for 20 s: it cannot see
//! frontend2 nor the witness nor EC2, so it accuses nobody, and when its
//! link is back the chain is as before. (frontend1 watches the tail: the
//! operator put frontend3 in maintenance for the cut, so that nobody
//! fences it meanwhile; what it does itself is the point here.)

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
    let o = f.cli_in(
        0,
        &[
            "maint",
            "on",
            "--for",
            "30m",
            "--instance",
            &f.nodes[2].instance,
        ],
    );
    assert!(o.status.success(), "{}", common::output_text(&o));
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
    // The cut-off node accused nobody; nobody was stopped.
    let own: Vec<_> = f.takeovers().into_iter().filter(|(i, _)| *i == 2).collect();
    assert!(own.is_empty(), "{own:?}");
    assert!(f.proxy.stops().is_empty(), "{:?}", f.proxy.stops());
    for i in 0..3 {
        assert_eq!(f.instance(i).await.0, "running");
        assert_eq!(f.status(i).unwrap()["id"].as_u64(), Some(i as u64 + 1));
    }
}
