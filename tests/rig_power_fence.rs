//! Rig scenario: frontend2 is partitioned (link down, its processes keep
//! running) and frontend3 fences it. The fabric fence lets frontend3 take
//! the address over while EC2 still reports frontend2 `stopping` with its
//! processes alive; EC2 then reports it `stopped` (the rig powers it off),
//! and frontend3's `chainwatch status` announces the power fence confirmed.
//! Prints how long the power fence took, as the rig and the daemon saw it.
//!
//! While it is still `stopping`, frontend2's link comes back (once its
//! OpenVPN has given the dead session up, as it does 5 s into the cut): its
//! OpenVPN tries to hold the address again (the hub refuses it), and the
//! double-holder watchdog, which sees only namespaces whose link is up,
//! watches it for seconds. No second holder is seen. For that window EC2 keeps the stop
//! going for `CHAINWATCH_RIG_STOP_SKIP_OS_MS` or 15 s, whichever is longer
//! (AWS's forced stops take a few seconds; the rig's default is 4 s, too
//! short to see the old instance come back before it is off).

mod common;

use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options, stop_times};
use common::{rig_ready, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "current_thread")]
async fn the_power_fence_completes_after_the_takeover_and_is_announced() {
    if !rig_ready(false) {
        return;
    }
    let skip_os_ms = stop_times().1.max(15_000);
    let mut f = Fleet::frontends_with(
        3,
        Options {
            skip_os_ms: Some(skip_os_ms),
            ..Options::default()
        },
    )
    .await;
    f.watch_holders();
    let addr = f.layout.overlay_addr(fe(2));
    let old = f.nodes[1].instance.clone();
    f.link(1, false);

    // Sample EC2 (through the proxy, as the daemons see it) and the taker.
    let start = Instant::now();
    let mut stopping_ms = None;
    let mut stopping_with_processes = false;
    let mut holder_while_stopping = false;
    let mut back_ms = None;
    let mut stopped_ms = None;
    while stopped_ms.is_none() && start.elapsed() < Duration::from_secs(90) {
        let (state, _) = f.instance(1).await;
        let now = unix_ms();
        match state.as_str() {
            "stopping" => {
                stopping_ms.get_or_insert(now);
                stopping_with_processes |= f.has_processes(1);
                if f.status(2).is_some_and(|s| s["id"] == 2) && f.ping(0, addr, 200) {
                    holder_while_stopping = true;
                }
                // The old holder comes back while EC2 still stops it: its
                // link up, its processes running, its OpenVPN free to
                // reconnect as frontend2.
                if back_ms.is_none()
                    && holder_while_stopping
                    && f.tun_addr(1).is_none()
                    && f.has_processes(1)
                {
                    f.link(1, true);
                    back_ms = Some(unix_ms());
                }
            }
            "stopped" => stopped_ms = Some(now),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = f.log(2);
    let stopped_ms = stopped_ms.unwrap_or_else(|| panic!("frontend2 never `stopped`:\n{log}"));
    let stopping_ms = stopping_ms.unwrap_or_else(|| panic!("frontend2 never `stopping`:\n{log}"));
    let stops = f.proxy.stops();
    let fence = stops
        .iter()
        .find(|s| s["instances"][0] == old.as_str())
        .unwrap_or_else(|| panic!("no StopInstances for {old}: {stops:?}"));
    assert_eq!(fence["skip_os_shutdown"], true, "{stops:?}");
    let fence_ms = fence["at_ms"].as_u64().expect("at_ms");
    assert!(
        stopping_with_processes,
        "frontend2's processes were gone while EC2 still stopped it"
    );
    assert!(
        holder_while_stopping,
        "frontend3 did not answer as frontend2 before EC2 had stopped frontend2 (no fabric fence?):\n{log}"
    );
    assert!(
        f.powered_off(1),
        "EC2 says stopped, the rig did not power it off"
    );

    // The taker announces the power fence in its status.
    let shown = wait_for(
        "frontend3's status to show the power fence confirmed",
        Duration::from_secs(30),
        || {
            let s = f.status(2)?;
            let p = s["power_fences"]
                .as_array()?
                .iter()
                .find(|p| p["slot"] == "frontend2")?
                .clone();
            (p["state"] == "confirmed").then_some(p)
        },
    );
    assert_eq!(shown["instances"][0], old.as_str(), "{shown}");
    let daemon_ms = shown["done_ms"].as_u64().unwrap() - shown["sent_ms"].as_u64().unwrap();
    // The old holder was back, and seen by the watchdog, for seconds while
    // it still ran: enough for its OpenVPN to try again (it retries every
    // few seconds), so a hub that let it in would have made two holders.
    let back_ms = back_ms.unwrap_or_else(|| {
        panic!("frontend2 never came back while `stopping` (its OpenVPN kept the address?)")
    });
    let back_for = stopped_ms.saturating_sub(back_ms);
    assert!(
        back_for >= 5_000,
        "frontend2 was back only {back_for} ms before EC2 stopped it"
    );
    let seen = f.watched_up(1);
    assert!(
        seen >= 20,
        "the watchdog saw frontend2's link up in {seen} samples only"
    );
    let doubles = f.double_holders();
    assert!(doubles.is_empty(), "two reachable holders: {doubles:?}");
    // It did try: the hub refused it, by its address.
    let hub_log = std::fs::read_to_string(f.node_dir(0).join("state/openvpn/openvpn.log"))
        .unwrap_or_default();
    let underlay = f.nodes[1].underlay;
    assert!(
        hub_log.contains(&format!("refused: frontend2 from {underlay}")),
        "frontend2's OpenVPN did not try to come back from {underlay} (no refusal in the hub's OpenVPN log):\n{hub_log}"
    );
    eprintln!(
        "rig stop with SkipOsShutdown {skip_os_ms} ms: fence -> EC2 `stopping` seen {} ms, -> `stopped` seen {} ms; \
         the taker's status: confirmed {} ms after its stop; the old holder back {back_for} ms before \
         it was stopped ({seen} watchdog samples saw it), no second holder",
        stopping_ms.saturating_sub(fence_ms),
        stopped_ms.saturating_sub(fence_ms),
        daemon_ms
    );
}
