//! Rig scenario: the fence budget. With `aws.fence_budget_per_hour = 1`,
//! frontend2 and frontend3 die at once: frontend4 fences frontend3 and takes
//! it over, but its second fence (of frontend2) is held — alert
//! `fence_blocked`, no StopInstances, no takeover — until `chainwatch ack`
//! on that node; then it goes out and frontend2 is filled.
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

#[tokio::test(flavor = "current_thread")]
async fn a_fence_beyond_the_budget_waits_for_an_ack() {
    if !rig_ready(false) {
        return;
    }
    let f = Fleet::frontends_with(
        4,
        Options {
            alerts: true,
            fence_budget: Some(1),
            ..Options::default()
        },
    )
    .await;
    f.kill(1);
    f.kill(2);
    // frontend4 takes frontend3 over (its one fence) ...
    f.wait_overlay(3, fe(3), 60);
    // ... and is held at the second.
    let alert = f.alert(3, "fence_blocked", Duration::from_secs(60));
    assert_eq!(alert["slot"], "frontend2", "{alert}");
    assert!(
        alert["detail"]
            .as_str()
            .unwrap()
            .contains("fence budget exhausted"),
        "{alert}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let stops = f.proxy.stops();
    assert_eq!(
        stops.len(),
        1,
        "only the budgeted fence went out: {stops:?}"
    );
    assert_eq!(f.tun_addr(3), Some(f.layout.overlay_addr(fe(3))));
    // The operator acknowledges on that node: the fence goes out.
    let ack = std::process::Command::new(bin())
        .arg("--config")
        .arg(f.node_dir(3).join("chainwatch.toml"))
        .arg("ack")
        .output()
        .unwrap();
    assert!(ack.status.success(), "{}", output_text(&ack));
    assert!(
        output_text(&ack).contains("acknowledged 1 fence"),
        "{}",
        output_text(&ack)
    );
    f.wait_overlay(3, fe(2), 60);
    assert_eq!(f.proxy.stops().len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn a_fresh_death_within_the_cooldown_waits_for_an_ack() {
    if !rig_ready(false) {
        return;
    }
    let f = Fleet::frontends_with(
        4,
        Options {
            alerts: true,
            fence_budget: Some(0),
            cooldown_secs: Some(120),
            ..Options::default()
        },
    )
    .await;
    f.kill(2);
    f.wait_overlay(3, fe(3), 60);
    assert_eq!(f.proxy.stops().len(), 1);
    // frontend2 dies after the takeover: frontend4 (now frontend3) sees it
    // die on its own, within the cooldown.
    f.kill(1);
    let alert = f.alert(3, "fence_blocked", Duration::from_secs(60));
    assert_eq!(alert["slot"], "frontend2", "{alert}");
    assert!(
        alert["detail"]
            .as_str()
            .unwrap()
            .contains("cooldown after a takeover"),
        "{alert}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(f.proxy.stops().len(), 1, "{:?}", f.proxy.stops());
    assert_eq!(f.tun_addr(3), Some(f.layout.overlay_addr(fe(3))));
    let ack = std::process::Command::new(bin())
        .arg("--config")
        .arg(f.node_dir(3).join("chainwatch.toml"))
        .arg("ack")
        .output()
        .unwrap();
    assert!(ack.status.success(), "{}", output_text(&ack));
    f.wait_overlay(3, fe(2), 60);
    assert_eq!(f.proxy.stops().len(), 2);
}
