//! Rig scenario, realistic defaults (`CHAINWATCH_RIG_STOP_SKIP_OS_MS`,
//! 4 s unless set): frontend2 is partitioned (link down, its processes keep
//! running) and frontend3 fences it. The fabric fence lets frontend3 take
//! the address over while EC2 still reports frontend2 `stopping` with its
//! processes alive; EC2 then reports it `stopped` (the rig powers it off),
//! and frontend3's `chainwatch status` announces the power fence confirmed.
//! Prints how long the power fence took, as the rig and the daemon saw it.

mod common;

use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, stop_times};
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
    let mut f = Fleet::frontends(3).await;
    f.watch_holders();
    let addr = f.layout.overlay_addr(fe(2));
    let old = f.nodes[1].instance.clone();
    f.link(1, false);

    // Sample EC2 (through the proxy, as the daemons see it) and the taker.
    let start = Instant::now();
    let mut stopping_ms = None;
    let mut stopping_with_processes = false;
    let mut holder_while_stopping = false;
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
    let doubles = f.double_holders();
    assert!(doubles.is_empty(), "two reachable holders: {doubles:?}");
    eprintln!(
        "rig stop with SkipOsShutdown {} ms: fence -> EC2 `stopping` seen {} ms, -> `stopped` seen {} ms; \
         the taker's status: confirmed {} ms after its stop",
        stop_times().1,
        stopping_ms.saturating_sub(fence_ms),
        stopped_ms.saturating_sub(fence_ms),
        daemon_ms
    );
}
