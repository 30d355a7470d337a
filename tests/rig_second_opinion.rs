//! Rig scenarios of the second opinion (the members' channel).
//!
//! * One-way loss: frontend3 drops everything that comes from frontend2's
//!   overlay address, while the hub and frontend4 still reach frontend2.
//!   Without a second opinion frontend3 fenced the healthy frontend2
//!   within seconds. Now nobody is fenced for `CHAINWATCH_ONEWAY_SECS`
//!   (CI: 60; the benchmark's soak: 600), and when frontend2 then really
//!   dies, with the fault still in place, frontend3 takes over.
//! * Pairwise partition: frontend2 and frontend3 cannot reach each other,
//!   both ways; the rest reach both: nobody is fenced.
//! * Hostile datagrams: oversize, malformed, forged, stale and replayed
//!   datagrams thrown at a member's channel, over the overlay and the
//!   underlay, are counted, none is acted on, the daemon lives and its
//!   probing goes on. Then `fleet`, run on frontend1, shows every holder's
//!   live status over the same channel, and a member cut off as
//!   unreachable.

mod common;

use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::Fleet;
use common::{have, prerequisite, rig_ready, sh, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

/// Watch for `secs`: nobody fences or takes over. Returns the largest miss
/// count frontend3 showed.
async fn no_fence_for(f: &Fleet, secs: u64, watcher: usize) -> u64 {
    let start = Instant::now();
    let mut max_misses = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some(s) = f.status(watcher) {
            max_misses = max_misses.max(s["misses"].as_u64().unwrap_or(0));
        }
        assert!(
            f.takeovers().is_empty(),
            "a healthy node was fenced after {:?}: {:?}\n{}",
            start.elapsed(),
            f.takeovers(),
            f.recent_logs(40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    max_misses
}

#[tokio::test(flavor = "current_thread")]
async fn one_way_loss_fences_nobody_and_a_real_death_is_still_declared() {
    if !rig_ready(false) || !prerequisite(have("nft"), "nftables (nft)") {
        return;
    }
    let secs = common::env_u64("CHAINWATCH_ONEWAY_SECS", 60);
    let f = Fleet::frontends(4).await;
    // frontend3 (index 2) watches frontend2 (index 1) and stops hearing it.
    assert_eq!(f.status(2).unwrap()["members_channel"], true);
    f.one_way(2, fe(2));
    let max_misses = no_fence_for(&f, secs, 2).await;
    let s = f.status(2).unwrap();
    let vouched = s["members"]["vouched"].as_u64().unwrap();
    let helped = f.status(3).unwrap()["members"]["helped"].as_u64().unwrap()
        + f.status(0).unwrap()["members"]["helped"].as_u64().unwrap();
    let drops = f.one_way_drops(2);
    eprintln!(
        "{secs} s of one-way loss (frontend3 deaf to frontend2): {drops} packets dropped, at most {max_misses} consecutive misses, {vouched} second opinions cleared frontend2 ({helped} helper probes), no fence"
    );
    // The fault was real and the helpers were asked.
    assert!(drops > 0, "the nftables rule dropped nothing");
    assert!(
        vouched > 0,
        "frontend3 never needed the helpers: the fault did not bite"
    );
    assert_eq!(f.instance(1).await.0, "running");
    assert_eq!(s["id"], 3);

    // Now frontend2 really dies, the fault still in place: the helpers
    // cannot reach it either, and frontend3 takes over.
    let died = Instant::now();
    f.kill(1);
    wait_for(
        "frontend3 to take over frontend2",
        Duration::from_secs(60),
        || (f.status(2)?["id"] == 2).then_some(()),
    );
    eprintln!(
        "frontend2 died under the one-way fault: frontend3 holds ID 2 {:.2} s later",
        died.elapsed().as_secs_f64()
    );
    // frontend3 told the hub of its takeover on the members' channel and
    // connected as frontend2 on the hub's answer, not after a fixed wait.
    assert!(
        f.log(0)
            .contains("claim heard: admission list read again, it admits the claimer"),
        "the hub heard no claim, or did not admit it\n{}",
        f.log(0)
    );
    assert!(
        f.log(2)
            .contains("the hub's admission list admits this node as frontend2"),
        "frontend3 connected without the hub's answer to its claim\n{}",
        f.log(2)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_pairwise_partition_fences_nobody() {
    if !rig_ready(false) || !prerequisite(have("nft"), "nftables (nft)") {
        return;
    }
    let secs = common::env_u64("CHAINWATCH_PAIRWISE_SECS", 45);
    let f = Fleet::frontends(4).await;
    f.one_way(2, fe(2));
    f.one_way(1, fe(3));
    let max_misses = no_fence_for(&f, secs, 2).await;
    let vouched = f.status(2).unwrap()["members"]["vouched"].as_u64().unwrap();
    let drops = f.one_way_drops(1) + f.one_way_drops(2);
    eprintln!(
        "{secs} s of a pairwise partition (frontend2 and frontend3): {drops} packets dropped, at most {max_misses} consecutive misses, {vouched} second opinions, no fence"
    );
    assert!(drops > 0);
    assert!(vouched > 0);
    for i in 0..4 {
        assert_eq!(f.instance(i).await.0, "running", "node {i}");
        assert_eq!(f.status(i).unwrap()["id"], i + 1);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_datagrams_are_counted_and_change_nothing() {
    if !rig_ready(false) {
        return;
    }
    let f = Fleet::frontends(3).await;
    let before = f.status(2).unwrap();
    let rounds_before = before["rounds"].as_u64().unwrap();
    let target = f.layout.overlay_addr(fe(3));
    // From frontend2's namespace, over the overlay, with the fleet's key
    // where a datagram needs one; then a few from the underlay.
    let out = sh(&format!(
        "ip netns exec {ns} python3 {script} {key} {target} 7947 8",
        ns = f.nodes[1].ns,
        script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/members_flood.py"
        ),
        key = f.pki.join("members.key").display(),
    ));
    let sent: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    sh(&format!(
        "ip netns exec {ns} python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b\"x\" * 66, (\"{u}\", 7947)) for _ in range(50)]'",
        ns = f.nodes[1].ns,
        u = f.nodes[2].underlay,
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = f.status(2).expect("frontend3 still answers status");
    let m = &s["members"];
    eprintln!("sent {sent}; frontend3 counted {m}");
    for reason in ["oversize", "malformed", "forged", "stale", "replayed"] {
        let n = m[reason].as_u64().unwrap();
        assert!(n > 0, "no {reason} datagram counted: {m}");
        assert!(
            n >= sent[reason].as_u64().unwrap() / 2,
            "{reason}: {n} counted of {} sent",
            sent[reason]
        );
    }
    // The junk from the underlay (a private address: the hub's second
    // opinion travels there) is malformed like the rest.
    assert!(
        m["malformed"].as_u64().unwrap() >= sent["malformed"].as_u64().unwrap() + 40,
        "{m}"
    );
    // Exactly one datagram was authentic (the original of the replays): it
    // is the only probe run for the sender.
    assert_eq!(m["helped"], 1, "{m}");
    // Probing went on (a round a second), frontend2 was never doubted.
    let rounds = s["rounds"].as_u64().unwrap() - rounds_before;
    assert!(rounds >= 9, "{rounds} rounds in ~10 s: probing stalled");
    assert_eq!(s["misses"], 0);
    assert!(!f.daemon_exited(2));
    assert!(f.takeovers().is_empty(), "{:?}", f.takeovers());

    // `fleet`, run on frontend1, adds each holder's live status, asked over
    // the same channel; a member cut off shows as unreachable.
    let fleet = |args: &[&str]| {
        let o = f.cli_in(0, &[&["fleet"], args].concat());
        assert!(o.status.success(), "{}", common::output_text(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let v: serde_json::Value = serde_json::from_str(&fleet(&["--json"])).unwrap();
    let live = &v["live"];
    // frontend1 watches the tail (frontend3), as the others their
    // predecessors.
    for (name, id) in [("frontend1", 1), ("frontend2", 2), ("frontend3", 3)] {
        assert_eq!(live[name]["phase"], "watching", "{v}");
        assert_eq!(live[name]["slot"]["id"], id, "{v}");
        assert_eq!(live[name]["misses"], 0, "{v}");
        assert!(live[name]["rtt_us"].as_u64().is_some_and(|r| r > 0), "{v}");
        assert!(live[name]["rounds"].as_u64().unwrap() >= 5, "{v}");
    }
    f.link(2, false);
    let v: serde_json::Value = serde_json::from_str(&fleet(&["--json"])).unwrap();
    assert!(v["live"]["frontend3"].is_null(), "{v}");
    assert_eq!(v["live"]["frontend2"]["phase"], "watching", "{v}");
    let table = fleet(&[]);
    let row = table
        .lines()
        .find(|l| l.contains(&f.nodes[2].instance))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.ends_with("unreachable"), "{table}");
    f.link(2, true);
}
