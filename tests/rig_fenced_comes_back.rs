//! Rig scenario: a fenced instance comes back (the fabric fence).
//!
//! frontend2 is cut off; frontend3 fences it and takes its ID over while
//! EC2 is still stopping it (the fabric fence: tagged `fenced`, so the hub
//! refuses it). Its link is restored while it is still `stopping`, its
//! processes alive: its OpenVPN, a stale client with the old ID's
//! certificate, reconnects and is refused. The new holder keeps the address
//! without a flap: the hub pings it every 50 ms throughout, and no other
//! namespace ever holds it.

mod common;

use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options};
use common::rig_ready;

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

#[tokio::test(flavor = "current_thread")]
async fn a_fenced_instance_that_comes_back_is_refused() {
    if !rig_ready(false) {
        return;
    }
    // EC2 keeps the fenced instance `stopping` for 30 s instead of AWS's
    // few seconds, so that its return can be watched before it is off.
    let mut f = Fleet::with(
        &[fe(1), fe(2), fe(3)],
        Options {
            hypervisor: true,
            skip_os_ms: Some(30_000),
            ..Options::default()
        },
    )
    .await;
    f.start_all().await;
    f.watch_holders();
    let addr = f.layout.overlay_addr(fe(2));

    let cut = Instant::now();
    f.link(1, false);
    f.wait_overlay(2, fe(2), 60);
    eprintln!(
        "frontend3 holds frontend2's address {:?} after the cut",
        cut.elapsed()
    );
    // Taken over before EC2 stopped the old instance: the fabric fence.
    assert_eq!(f.instance(1).await.0, "stopping");
    assert!(
        f.has_processes(1) && !f.powered_off(1),
        "the old instance must still run"
    );
    let (_, tags) = f.instance(1).await;
    assert!(
        tags.contains(&("chainwatch:state".into(), "fenced".into())),
        "{tags:?}"
    );

    // While cut off, its OpenVPN gives the dead session up (5 s without a
    // ping) and drops the address; then its link returns while the
    // instance still runs, and it reconnects. The hub pings the address
    // throughout.
    common::wait_for(
        "the cut-off instance's OpenVPN to give its session up",
        Duration::from_secs(20),
        || (f.tun_addr(1).is_none()).then_some(()),
    );
    let (sent, got) = f.ping_during(0, addr, || {
        f.link(1, true);
        // It reconnects (and is refused) every few seconds.
        std::thread::sleep(Duration::from_secs(12));
    });
    eprintln!("{got} of {sent} echoes to {addr} answered while the old instance came back");
    assert!(
        !f.powered_off(1) && f.has_processes(1),
        "the old instance was powered off before the test watched it come back"
    );
    let hub_log = std::fs::read_to_string(f.node_dir(0).join("state/openvpn/openvpn.log"))
        .unwrap_or_default();
    assert!(sent >= 200, "only {sent} echoes sent");
    assert!(
        got + 2 >= sent,
        "the address flapped: {got} of {sent} answered\nhub's OpenVPN:\n{hub_log}\nhub:\n{}\nfrontend3:\n{}",
        f.log(0),
        f.log(2)
    );
    assert_eq!(f.tun_addr(1), None, "the old instance holds {addr} again");
    assert_eq!(f.tun_addr(2), Some(addr));
    // The hub refused it, by its address.
    let underlay = f.nodes[1].underlay;
    assert!(
        hub_log.contains(&format!("refused: frontend2 from {underlay}")),
        "no refusal of frontend2 from {underlay} in the hub's OpenVPN log:\n{hub_log}"
    );
    let doubles = f.double_holders();
    assert!(doubles.is_empty(), "two reachable holders: {doubles:?}");
}
