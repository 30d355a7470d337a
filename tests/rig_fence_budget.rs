//! Rig scenario: the fence budget is the fleet's, per role. With
//! `aws.fence_budget_per_hour = 1`, frontend2 dies and frontend3 fences it
//! (the hour's one fence); frontend4 moves up to the vacant ID 3. When the
//! new frontend2 dies, frontend4's fence — its first, but the fleet's
//! second — is held (alert `fence_blocked`, no StopInstances, no takeover)
//! until `chainwatch ack` on that node, however long that takes (the test
//! waits 10 s, several of the daemon's retries); then it goes out (EC2
//! receives the StopInstances after the ack, never before) and frontend2
//! is filled.
//!
//! And the cooldown after a takeover: with `aws.takeover_cooldown = 120s`,
//! frontend3 dies and frontend4 takes it over; frontend2 dies a little
//! later (a fresh death, not seen with the first): its fence is held —
//! alert `fence_blocked` naming the cooldown, no StopInstances — until
//! `chainwatch ack`.

mod common;

use std::time::Duration;

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options};
use common::{bin, output_text, rig_ready};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

/// A 4-frontend fleet whose nodes raise alerts, with these fence limits.
async fn fleet(budget: u32, cooldown_secs: Option<u64>) -> Fleet {
    Fleet::frontends_with(
        4,
        Options {
            alerts: true,
            fence_budget: Some(budget),
            cooldown_secs,
            ..Options::default()
        },
    )
    .await
}

/// How long the test leaves a held fence before acknowledging it: several
/// of the daemon's retries of the held fence (each checks the hold again),
/// so that a hold a timer ended would let a StopInstances out before the
/// ack.
const HOLD: Duration = Duration::from_secs(10);

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// frontend4, now frontend3, holds its fence of frontend2 (node `victim`;
/// alert `fence_blocked` saying `why`, still frontend3) until the operator
/// acknowledges; then the fence goes out and it takes frontend2. Held
/// means: of the StopInstances EC2 received, the first fence's is the only
/// one before the ack, however long the hold lasted, and the second came
/// after the ack. Returns what `chainwatch ack` printed.
fn held_until_acknowledged(f: &Fleet, victim: usize, why: &str) -> String {
    let alert = f.alert(3, "fence_blocked", Duration::from_secs(60));
    assert_eq!(alert["slot"], "frontend2", "{alert}");
    assert!(alert["detail"].as_str().unwrap().contains(why), "{alert}");
    let blocked_ms = unix_ms();
    std::thread::sleep(HOLD);
    let held_addr = f.tun_addr(3);
    let ack_ms = unix_ms();
    let ack = std::process::Command::new(bin())
        .arg("--config")
        .arg(f.node_dir(3).join("chainwatch.toml"))
        .arg("ack")
        .output()
        .unwrap();
    assert!(ack.status.success(), "{}", output_text(&ack));
    f.wait_overlay(3, fe(2), 60);
    let stops = f.proxy.stops();
    let at = |s: &serde_json::Value| s["at_ms"].as_u64().expect("at_ms");
    let before: Vec<&serde_json::Value> = stops.iter().filter(|s| at(s) < ack_ms).collect();
    assert_eq!(
        before.len(),
        1,
        "only the first fence went out before the ack ({} ms after the fence_blocked alert): {stops:?}",
        ack_ms - blocked_ms
    );
    let after: Vec<&serde_json::Value> = stops.iter().filter(|s| at(s) >= ack_ms).collect();
    assert_eq!(
        after.len(),
        1,
        "the held fence went out once, after the ack: {stops:?}"
    );
    assert_eq!(after[0]["instances"][0], f.nodes[victim].instance.as_str());
    assert_eq!(
        held_addr,
        Some(f.layout.overlay_addr(fe(3))),
        "frontend2 taken over before the ack"
    );
    // The hold was checked again and again while it lasted: the daemon
    // retried the held fence during the wait, and each retry was held.
    let retries = common::json_lines(&f.log(3))
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("FENCE FAILED for frontend2"))
                && (blocked_ms..ack_ms).contains(&common::log_ms(l))
        })
        .count();
    assert!(
        retries >= 2,
        "the held fence was retried {retries} times during the {HOLD:?} hold"
    );
    eprintln!(
        "held {} ms with {retries} retries held; StopInstances {} ms after the ack",
        ack_ms - blocked_ms,
        at(after[0]) - ack_ms
    );
    output_text(&ack)
}

#[tokio::test(flavor = "current_thread")]
async fn a_fence_beyond_the_budget_waits_for_an_ack() {
    if !rig_ready(false) {
        return;
    }
    let f = fleet(1, None).await;
    // frontend2 dies: frontend3 fences it (the fleet's one fence of the
    // hour) and becomes frontend2; frontend4 takes the vacant ID 3.
    f.kill(1);
    f.wait_overlay(2, fe(2), 60);
    f.wait_overlay(3, fe(3), 60);
    // The new frontend2 dies: frontend4 has fenced nothing itself, but the
    // budget is the fleet's, so its fence is held until the operator
    // acknowledges on that node.
    f.kill(2);
    let ack = held_until_acknowledged(&f, 2, "frontends of the fleet fenced in the last hour");
    assert!(ack.contains("acknowledged"), "{ack}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_fresh_death_within_the_cooldown_waits_for_an_ack() {
    if !rig_ready(false) {
        return;
    }
    let f = fleet(0, Some(120)).await;
    f.kill(2);
    f.wait_overlay(3, fe(3), 60);
    assert_eq!(f.proxy.stops().len(), 1);
    // frontend2 dies after the takeover: frontend4 (now frontend3) sees it
    // die on its own, within the cooldown.
    f.kill(1);
    held_until_acknowledged(&f, 1, "cooldown after a takeover");
}
