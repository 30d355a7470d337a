//! Rig scenario: the broker is down during a backend takeover. The takeover
//! completes; the event waits in the outbox (`status` shows it). The worker,
//! level-triggered, promotes backend2's MariaDB from the registry (EC2's
//! tags) without the event. When the broker is back the event is delivered
//! and recorded once, without a second promotion.
//! Stops and starts the machine's RabbitMQ application: one test per file.

mod common;

use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options};
use common::{rig_ready, sh, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}
fn be(id: u32) -> Slot {
    Slot::new(Role::Backend, id)
}

struct Restart;
impl Drop for Restart {
    fn drop(&mut self) {
        common::sh_quiet("rabbitmqctl -q start_app");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_takeover_with_the_broker_down_is_announced_when_it_returns() {
    if !rig_ready(true) {
        return;
    }
    let mut f = Fleet::with(
        &[fe(1), be(1), be(2)],
        Options {
            rabbit: true,
            mariadb: true,
            worker: true,
            hypervisor: true,
            ..Options::default()
        },
    )
    .await;
    f.start_all().await;
    f.start_mysql_chain();

    let _restart = Restart;
    sh("rabbitmqctl -q stop_app");
    f.kill(1);
    // The takeover completes without the broker.
    f.wait_overlay(2, be(1), 60);
    let s = wait_for(
        "the event pending in the outbox",
        Duration::from_secs(30),
        || {
            f.status(2)
                .filter(|s| s["id"] == 1 && s["pending_events"] == 1)
        },
    );
    assert_eq!(s["last_transition"]["to_id"], 1);
    // MySQL follows the registry without the event.
    let down = Instant::now();
    wait_for(
        "MySQL promoted from the registry, the broker down",
        Duration::from_secs(120),
        || (f.sql(2, "SELECT @@read_only").ok()? == "0").then_some(()),
    );
    eprintln!(
        "broker down: backend1 promoted from the registry {:.2} s after the takeover",
        down.elapsed().as_secs_f64()
    );
    assert_eq!(
        f.status(2).unwrap()["pending_events"],
        1,
        "the event still waits in the outbox"
    );

    sh("rabbitmqctl -q start_app");
    wait_for("the outbox to drain", Duration::from_secs(90), || {
        f.status(2).filter(|s| s["pending_events"] == 0)
    });
    let handled = |l: &str| {
        l.contains("backend2->backend1")
            && (l.contains(": applied") || l.contains("already reconciled"))
    };
    wait_for(
        "the worker to record the event",
        Duration::from_secs(60),
        || f.worker_log().lines().any(handled).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(1));
    let once = f.worker_log().lines().filter(|l| handled(l)).count();
    assert_eq!(once, 1, "recorded once: {}", f.worker_log());
    assert_eq!(f.sql(2, "SELECT @@read_only").unwrap(), "0");
    // A second delivery would be logged as a duplicate, not as applied.
    assert!(
        !f.worker_log().contains("already applied"),
        "delivered twice: {}",
        f.worker_log()
    );
}
