//! Rig scenario: the hub's OpenVPN *and* its daemon hang (both
//! SIGSTOPped). Its kernel still answers on the underlay, and nobody on the
//! hub restarts OpenVPN. frontend2 finds the hub silent on the overlay for
//! longer than the hub's own repair takes, the other members (asked on the
//! underlay) cannot reach its overlay either, and frontend2 fences it and
//! takes over as frontend1: the overlay is back for every member. Without
//! the sick-hub rule this was an outage until a person acted.

mod common;

use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::Fleet;
use common::{pid_in, rig_ready};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

#[tokio::test(flavor = "current_thread")]
async fn a_hub_whose_openvpn_and_daemon_hang_is_replaced() {
    if !rig_ready(false) {
        return;
    }
    let f = Fleet::frontends(3).await;
    let vpn = pid_in(&f.nodes[0].ns, "openvpn").expect("the hub's openvpn");
    let daemon = pid_in(&f.nodes[0].ns, "chainwatch").expect("the hub's daemon");
    let stopped = Instant::now();
    common::sh(&format!("kill -STOP {daemon} {vpn}"));
    // frontend2 (node 1) becomes frontend1; frontend3 (node 2), as
    // whatever it holds by then (the chain compacts: it may move up to the
    // vacated frontend2), reaches the new hub and the hub reaches it.
    let mut back = None;
    while back.is_none() && stopped.elapsed() < Duration::from_secs(90) {
        if f.status(1).is_some_and(|s| s["id"] == 1) && f.overlay_whole(1, 2) {
            back = Some(stopped.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = f.log(1);
    common::sh(&format!("kill -KILL {daemon} {vpn} 2>/dev/null; true"));
    let back = back.unwrap_or_else(|| {
        panic!("the overlay did not come back within 90 s of the hub hanging:\n{log}")
    });
    assert!(
        log.contains("the hub is sick"),
        "frontend2 does not say why it fenced the hub:\n{log}"
    );
    // One fence, of the old hub.
    let stops = f.proxy.stops();
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert_eq!(stops[0]["instances"][0], f.nodes[0].instance.as_str());
    eprintln!(
        "hub OpenVPN and daemon SIGSTOPped -> frontend2 holds frontend1 and the overlay is back: {:.2} s",
        back.as_secs_f64()
    );
}

/// The converse: frontend2 alone stops hearing the hub's overlay (a one-way
/// fault at frontend2; the hub is healthy). Its underlay answers and its
/// overlay is silent for frontend2, so the hub looks sick from there; the
/// other members, asked on the underlay, reach its overlay, and nobody is
/// fenced.
#[tokio::test(flavor = "current_thread")]
async fn a_watcher_deaf_to_the_hubs_overlay_fences_nothing() {
    if !rig_ready(false) || !common::prerequisite(common::have("nft"), "nftables (nft)") {
        return;
    }
    let secs = common::env_u64("CHAINWATCH_ONEWAY_SECS", 30).max(20);
    let f = Fleet::frontends(3).await;
    f.one_way(1, fe(1));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        assert!(
            f.takeovers().is_empty() && f.proxy.stops().is_empty(),
            "the healthy hub was fenced: {:?}",
            f.takeovers()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = f.status(1).unwrap();
    let log = f.log(1);
    eprintln!(
        "{secs} s with frontend2 deaf to the hub's overlay: {} second opinions cleared the hub, no fence",
        s["members"]["vouched"]
    );
    assert!(
        log.contains("the hub is sick"),
        "the fault did not make the hub look sick from frontend2:\n{log}"
    );
    assert!(s["members"]["vouched"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["id"], 2);
}
