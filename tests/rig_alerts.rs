//! Rig scenario: alerts. EC2 refuses every StopInstances (503) when
//! frontend2 dies: frontend3's fence fails, and its `alerts.notify_command`
//! receives a `fence_failed` alert as JSON on its standard input. Once EC2
//! answers again the takeover goes through, and the same alert, through the
//! outbox, is in frontend3's CloudWatch stream.

mod common;

use std::time::Duration;

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options};
use common::{rig_ready, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_fence_reaches_the_notify_command() {
    if !rig_ready(false) {
        return;
    }
    let f = Fleet::frontends_with(
        3,
        Options {
            alerts: true,
            ..Options::default()
        },
    )
    .await;
    f.proxy.mode("fail");
    f.kill(1);
    let alert = f.alert(2, "fence_failed", Duration::from_secs(60));
    assert_eq!(alert["slot"], "frontend2", "{alert}");
    assert_eq!(alert["node"], "frontend3", "{alert}");
    assert_eq!(
        alert["instance_id"],
        f.nodes[2].instance.as_str(),
        "{alert}"
    );
    assert_eq!(alert["attempt"], 1, "{alert}");
    assert!(
        alert["detail"].as_str().unwrap().contains("StopInstances"),
        "{alert}"
    );
    // No takeover without a fence; then EC2 answers and it goes through.
    assert_eq!(f.tun_addr(2), Some(f.layout.overlay_addr(fe(3))));
    f.proxy.mode("pass");
    wait_for("frontend3 to take over", Duration::from_secs(60), || {
        f.status(2).filter(|s| s["id"] == 2)
    });
    // The outbox delivered the alert as well: the same alert ID.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let records = loop {
        let r =
            common::log_records(&f.proxy.endpoint, "/rig/transitions", &f.nodes[2].instance).await;
        if r.iter()
            .any(|r| r["chainwatch_alert"]["kind"] == "fence_failed")
            || std::time::Instant::now() > deadline
        {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let delivered = records
        .iter()
        .find(|r| r["chainwatch_alert"]["alert_id"] == alert["alert_id"])
        .unwrap_or_else(|| panic!("alert {alert} not in CloudWatch: {records:?}"));
    assert_eq!(delivered["Kind"], "fence_failed", "{delivered}");
    assert_eq!(delivered["chainwatch_alert"]["slot"], "frontend2");
}
