//! Rig scenarios of the hub (issue 27): its death costs exactly one
//! instance, and a path that drops ICMP to its VPC address alone costs
//! none.
//!
//! `CHAINWATCH_HUB_RUNS=n` repeats the death n times (default 1, each in a
//! fresh fleet) and prints the overlay's return times; the benchmark's
//! figures come from such a loop. `CHAINWATCH_PAIRWISE_SECS` sets how long
//! the ICMP path stays dropped (default 60).

mod common;

use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::Fleet;
use common::{env_u64, rig_ready};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

/// The hub dies (its instance, whole; EC2 still says running, and stops it
/// as slowly as AWS does). In the 30 s after: exactly one StopInstances,
/// naming the old hub; the new hub running; the overlay whole through it.
#[tokio::test(flavor = "current_thread")]
async fn a_dead_hub_costs_exactly_one_instance() {
    if !rig_ready(false) {
        return;
    }
    let runs = env_u64("CHAINWATCH_HUB_RUNS", 1).max(1);
    let mut back = Vec::new();
    for run in 0..runs {
        let f = Fleet::frontends(3).await;
        // A random phase within the probe round.
        std::thread::sleep(Duration::from_millis(u64::from(
            std::process::id().wrapping_add(run as u32 * 97) % 1000,
        )));
        let died = Instant::now();
        f.kill(0);
        // The overlay is whole through the new hub (frontend2 became
        // frontend1; frontend3, as whatever it holds by then, reaches it).
        let mut whole = None;
        while died.elapsed() < Duration::from_secs(30) {
            if whole.is_none() && f.status(1).is_some_and(|s| s["id"] == 1) && f.overlay_whole(1, 2)
            {
                whole = Some(died.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let whole = whole.unwrap_or_else(|| {
            panic!(
                "run {run}: the overlay is not whole through a new hub 30 s after the hub died:{}",
                f.recent_logs(30)
            )
        });
        let stops = f.proxy.stops();
        assert_eq!(
            stops.len(),
            1,
            "run {run}: one hub death, {} StopInstances: {stops:?}{}",
            stops.len(),
            f.recent_logs(30)
        );
        assert_eq!(
            stops[0]["instances"],
            serde_json::json!([f.nodes[0].instance]),
            "run {run}: the stop names the old hub"
        );
        assert!(
            !f.powered_off(1) && f.has_processes(1),
            "run {run}: the new hub was stopped"
        );
        let (state, _) = f.instance(1).await;
        assert_eq!(state, "running", "run {run}: the new hub in EC2");
        assert!(f.overlay_whole(1, 2), "run {run}: the overlay at 30 s");
        eprintln!(
            "run {run}: hub killed -> overlay whole through the new hub {:.2} s",
            whole.as_secs_f64()
        );
        back.push(whole);
    }
    back.sort();
    let p = |q: f64| back[((back.len() - 1) as f64 * q).round() as usize].as_secs_f64();
    eprintln!(
        "hub death, {} runs: overlay back p50 {:.2} s, p95 {:.2} s, max {:.2} s",
        back.len(),
        p(0.5),
        p(0.95),
        p(1.0)
    );
}

/// frontend2's ICMP echo requests to the hub's VPC address are dropped (a
/// security group without ICMP from it); the tunnel is untouched. Nobody
/// is fenced and nothing is taken over: the hub answers it on the overlay.
#[tokio::test(flavor = "current_thread")]
async fn an_icmp_path_dropped_to_the_hub_fences_nobody() {
    if !rig_ready(false) || !common::prerequisite(common::have("nft"), "nftables (nft)") {
        return;
    }
    let secs = env_u64("CHAINWATCH_PAIRWISE_SECS", 60).max(20);
    let f = Fleet::frontends(3).await;
    // `config check` on frontend2 proves the ICMP path to the hub...
    let check = |f: &Fleet| {
        let o = f.cli_in(1, &["config", "check", "--role", "frontend"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let before = check(&f);
    assert!(
        before.contains("ok    ICMP echo to the hub's VPC address"),
        "{before}"
    );
    f.drop_icmp_to(1, 0);
    // ...and says plainly when it is dropped.
    let during = check(&f);
    assert!(
        during.contains("FAIL  ICMP echo to the hub's VPC address")
            && during.contains("security group"),
        "{during}"
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        assert!(
            f.takeovers().is_empty() && f.proxy.stops().is_empty(),
            "the healthy hub was fenced: {:?}{}",
            f.takeovers(),
            f.recent_logs(30)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The fault was real: frontend2's echoes to the hub's VPC address
    // were dropped all along.
    let dropped = f.icmp_drops(1);
    assert!(
        dropped >= secs,
        "only {dropped} echoes dropped in {secs} s: the fault did not bite"
    );
    let s = f.status(1).expect("frontend2's status");
    assert_eq!(s["id"], 2);
    assert_eq!(f.status(0).expect("the hub's status")["id"], 1);
    eprintln!(
        "{secs} s with frontend2's ICMP to the hub's VPC address dropped ({dropped} echoes): no fence, no takeover"
    );
}

/// The taker is killed -9 right after it logs "fencing" (its fence's
/// intent recorded, nothing sent; or, every other run, right after its
/// StopInstances went out) and restarted 2 s later: the dead peer's ID is
/// filled within 5 s of the restart, with exactly one holder.
#[tokio::test(flavor = "current_thread")]
async fn a_taker_killed_while_it_fences_finishes_at_once() {
    if !rig_ready(false) {
        return;
    }
    let runs = env_u64("CHAINWATCH_FENCE_CRASH_RUNS", 2).max(1);
    for run in 0..runs {
        let step = if run % 2 == 0 { "fencing" } else { "stopped" };
        let mut f = Fleet::frontends(4).await;
        f.watch_holders();
        // frontend3 (node 2) takes frontend2 (node 1) over.
        f.arm_crash(2, step);
        f.kill(1);
        common::wait_for(
            "frontend3's daemon killed in its fence",
            Duration::from_secs(30),
            || f.daemon_exited(2).then_some(()),
        );
        std::thread::sleep(Duration::from_secs(2));
        let restarted = Instant::now();
        f.restart_daemon(2);
        let mut filled = None;
        while restarted.elapsed() < Duration::from_secs(20) {
            if f.tun_addr(2) == Some(f.layout.overlay_addr(fe(2)))
                && f.ping(0, f.layout.overlay_addr(fe(2)), 300)
            {
                filled = Some(restarted.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let filled = filled.unwrap_or_else(|| {
            panic!(
                "run {run} ({step}): frontend2 not filled 20 s after the restart:{}",
                f.recent_logs(30)
            )
        });
        assert!(
            filled <= Duration::from_secs(5),
            "run {run} ({step}): frontend2 filled {:.2} s after the restart, more than 5 s:{}",
            filled.as_secs_f64(),
            f.recent_logs(30)
        );
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            f.double_holders().is_empty(),
            "run {run}: {:?}",
            f.double_holders()
        );
        let wrong = f.survivors_stopped(&[1]);
        assert!(
            wrong.is_empty(),
            "run {run}: only the dead frontend2 is stopped: {wrong:?}"
        );
        eprintln!(
            "run {run}: taker killed after `{step}`, restarted 2 s later -> frontend2 filled {:.2} s after the restart",
            filled.as_secs_f64()
        );
    }
}

/// A holder's state directory is removed and its daemon restarted: EC2's
/// tags are authoritative, the state file a cache. It resumes its ID at
/// its epoch: no fence, no takeover and no event.
#[tokio::test(flavor = "current_thread")]
async fn a_holder_whose_state_is_lost_resumes_its_slot() {
    if !rig_ready(false) {
        return;
    }
    let f = Fleet::frontends(3).await;
    // frontend3 takes frontend2 over: it holds an ID its user-data does not
    // name, at a new epoch.
    f.kill(1);
    f.wait_overlay(2, fe(2), 60);
    let before = common::wait_for(
        "frontend3's status as frontend2",
        Duration::from_secs(20),
        || {
            f.status(2)
                .filter(|s| s["id"] == 2 && s["last_transition"]["epoch"].as_u64().is_some())
        },
    );
    let epoch = before["last_transition"]["epoch"].as_u64().unwrap();
    // Its pending event is announced: let the takeover settle.
    std::thread::sleep(Duration::from_secs(3));
    let stops_before = f.proxy.stops().len();
    let takeovers_before = f.takeovers().len();
    f.kill_daemon(2);
    let state = f.node_dir(2).join("state");
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    f.restart_daemon(2);
    let after = common::wait_for("frontend3's daemon back", Duration::from_secs(20), || {
        f.status(2).filter(|s| s["pid"] != before["pid"])
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(after["id"], 2, "{after}");
    assert_eq!(f.status(2).unwrap()["id"], 2);
    assert_eq!(
        f.proxy.stops().len(),
        stops_before,
        "a fence after the restart"
    );
    assert_eq!(
        f.takeovers().len(),
        takeovers_before,
        "a takeover or fence after the restart: {:?}",
        f.takeovers()
    );
    let (_, tags) = f.instance(2).await;
    assert!(
        tags.contains(&("chainwatch:epoch".into(), epoch.to_string())),
        "its epoch changed: {tags:?}"
    );
    let log = f.log(2);
    assert!(
        log.contains("resuming it"),
        "the daemon does not say it resumed its slot from EC2:\n{log}"
    );
    assert!(f.tun_addr(2) == Some(f.layout.overlay_addr(fe(2))));
}
