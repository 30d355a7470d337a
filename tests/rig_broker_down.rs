//! Rig scenario: the broker is down during a backend takeover. The takeover
//! completes; the event waits in the outbox (`status` shows it); when the
//! broker is back it is delivered and only then is MySQL reconfigured.
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
    // MySQL is not reconfigured yet: nobody told the worker.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(f.sql(2, "SELECT @@read_only").unwrap(), "1");

    let back = Instant::now();
    sh("rabbitmqctl -q start_app");
    wait_for("the outbox to drain", Duration::from_secs(90), || {
        f.status(2).filter(|s| s["pending_events"] == 0)
    });
    wait_for(
        "MySQL promoted after the broker returned",
        Duration::from_secs(180),
        || (f.sql(2, "SELECT @@read_only").ok()? == "0").then_some(()),
    );
    eprintln!(
        "broker back -> event delivered and backend1 promoted: {:.2} s",
        back.elapsed().as_secs_f64()
    );
    wait_for(
        "the worker to record the event",
        Duration::from_secs(60),
        || f.worker_log().contains(": applied").then_some(()),
    );
    std::thread::sleep(Duration::from_secs(1));
    let applied = f.worker_log().matches(": applied").count();
    assert_eq!(applied, 1, "applied once: {}", f.worker_log());
    // A second delivery would be logged as a duplicate, not as applied.
    assert!(
        !f.worker_log().contains("already applied"),
        "delivered twice: {}",
        f.worker_log()
    );
}
