//! Rig scenario: the old holder is alive when it is fenced. frontend2 is
//! partitioned (its link down), not killed: its daemon and OpenVPN keep
//! running. frontend3 declares it dead and fences it; EC2 keeps it
//! `stopping` (processes alive) until the stop is applied, and the link
//! comes back in that window. The old holder is powered off by the rig, a
//! double-holder watchdog sampling every 50 ms never sees frontend2's
//! address held by two reachable namespaces, and the address is not
//! reclaimed by the old instance afterwards.
//!
//! This is the power fence (`aws.fabric_fence = false`, as for a fleet
//! whose hub cannot enforce admission): the successor waits for `stopped`.
//! tests/rig_fenced_comes_back.rs is the same fault with the fabric fence.

mod common;

use std::time::Duration;

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options};
use common::{rig_ready, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

#[tokio::test(flavor = "current_thread")]
async fn a_partitioned_live_holder_is_fenced_before_its_successor_takes_over() {
    if !rig_ready(false) {
        return;
    }
    let mut f = Fleet::with(
        &[fe(1), fe(2), fe(3)],
        Options {
            hypervisor: true,
            power_fence_only: true,
            ..Options::default()
        },
    )
    .await;
    f.start_all().await;
    f.watch_holders();
    let addr = f.layout.overlay_addr(fe(2));
    f.link(1, false);

    // The fence went out: EC2 says `stopping`, while the instance still runs.
    let mut seen_stopping = false;
    for _ in 0..600 {
        if f.instance(1).await.0 == "stopping" {
            seen_stopping = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen_stopping,
        "frontend2 was never `stopping`: {}",
        f.log(2)
    );
    assert!(
        f.has_processes(1) && !f.powered_off(1),
        "the old holder must still be running while EC2 stops it"
    );
    // No takeover while the old holder may still answer.
    assert_eq!(f.tun_addr(2), Some(f.layout.overlay_addr(fe(3))));
    // Its link returns in the middle of the stop.
    f.link(1, true);

    f.wait_overlay(2, fe(2), 60);
    assert!(
        f.powered_off(1),
        "frontend3 holds frontend2's address before the rig powered the old holder off"
    );
    let (state, tags) = f.instance(1).await;
    assert_eq!(state, "stopped");
    assert!(
        tags.contains(&("chainwatch:state".into(), "fenced".into())),
        "{tags:?}"
    );
    // The link is up again (the hypervisor took it down at power-off).
    f.link(1, true);
    for _ in 0..50 {
        assert_eq!(f.tun_addr(1), None, "the old instance reclaimed {addr}");
        assert!(f.ping(0, addr, 500), "{addr} does not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(f.tun_addr(2), Some(addr));
    let doubles = f.double_holders();
    assert!(doubles.is_empty(), "two reachable holders: {doubles:?}");
    let fences: Vec<_> = f
        .takeovers()
        .into_iter()
        .filter(|(_, l)| l.contains("\"message\":\"fencing "))
        .collect();
    assert_eq!(fences.len(), 1, "{fences:?}");
    // The successor is settled as frontend2.
    wait_for("frontend3's status", Duration::from_secs(10), || {
        f.status(2).filter(|s| s["id"] == 2)
    });
}
