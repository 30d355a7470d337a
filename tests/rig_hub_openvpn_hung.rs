//! Rig scenario: the hub's OpenVPN hangs. It is SIGSTOPped: alive, its
//! kernel still answering ICMP on the underlay, but not forwarding and not
//! answering its management interface. The hub's daemon finds it silent
//! (`vpn.health_*`), kills it and starts a new one; every member's overlay
//! is back, with no fence and no takeover. Prints how long the overlay was
//! down for the slowest member.

mod common;

use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::Fleet;
use common::{pid_in, rig_ready};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

#[tokio::test(flavor = "current_thread")]
async fn a_hung_hub_openvpn_is_killed_and_the_overlay_comes_back() {
    if !rig_ready(false) {
        return;
    }
    let f = Fleet::frontends(3).await;
    let hub = f.layout.overlay_addr(fe(1));
    let f2 = f.layout.overlay_addr(fe(2));
    let f3 = f.layout.overlay_addr(fe(3));
    let paths = [(1, hub), (2, hub), (1, f3), (2, f2)];
    for (from, to) in paths {
        assert!(
            f.ping(from, to, 1000),
            "{to} unreachable from node {from} before the fault"
        );
    }
    let hung = pid_in(&f.nodes[0].ns, "openvpn").expect("the hub's openvpn");
    let stopped = Instant::now();
    common::sh(&format!("kill -STOP {hung}"));
    // The overlay goes down (the hub forwards nothing) ...
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !f.ping(1, hub, 500),
        "the hub still answers on the overlay while stopped"
    );
    // ... and comes back for every member, each path timed on its own.
    let mut back = [None; 4];
    while back.iter().any(Option::is_none) && stopped.elapsed() < Duration::from_secs(120) {
        for (k, (from, to)) in paths.iter().enumerate() {
            if back[k].is_none() && f.ping(*from, *to, 300) {
                back[k] = Some(stopped.elapsed());
            }
        }
    }
    let hub_log = f.log(0);
    // Reap the stopped process if the daemon did not (the test's fault).
    let still =
        std::fs::read_to_string(format!("/proc/{hung}/stat")).is_ok_and(|s| !s.contains(") Z"));
    common::sh(&format!("kill -KILL {hung} 2>/dev/null; true"));
    assert!(
        back.iter().all(Option::is_some),
        "the overlay did not come back within 120 s of the hub's OpenVPN hanging: {back:?}\n{hub_log}"
    );
    assert!(!still, "the hung OpenVPN (pid {hung}) is still there");
    assert!(
        hub_log.contains("OPENVPN HUNG"),
        "the hub's log does not say why OpenVPN was restarted:\n{hub_log}"
    );
    let now = pid_in(&f.nodes[0].ns, "openvpn").expect("a new openvpn on the hub");
    assert_ne!(now, hung);
    // Nobody was fenced and nothing was taken over.
    assert!(f.takeovers().is_empty(), "{:?}", f.takeovers());
    assert!(f.proxy.stops().is_empty(), "{:?}", f.proxy.stops());
    for (i, s) in [fe(1), fe(2), fe(3)].into_iter().enumerate() {
        assert_eq!(f.tun_addr(i), Some(f.layout.overlay_addr(s)));
    }
    let worst = back.iter().flatten().max().unwrap();
    eprintln!(
        "hub OpenVPN SIGSTOPped -> every member's overlay back: {:.2} s (paths {:?})",
        worst.as_secs_f64(),
        back.iter()
            .map(|b| format!("{:.2}", b.unwrap().as_secs_f64()))
            .collect::<Vec<_>>()
    );
}
