//! Rig scenarios: the worker is level-triggered. MySQL follows the
//! registry (EC2's tags: who holds backend1), whatever became of the
//! events.
//!
//! The worker is down while backend1 dies; backend2 takes over backend1 and
//! backend3 moves down to backend2, each announcing its transition.
//! - The two events are delivered in the wrong order (the compaction
//!   first): MySQL is still promoted, and neither is dead-lettered.
//! - The two events are lost (purged from the queue): the worker, started
//!   again, reads the registry and promotes backend2's MariaDB anyway.

mod common;

use std::time::{Duration, Instant};

use chainwatch::event::TransitionEvent;
use common::fleet::{Fleet, Options};
use common::{rig_ready, wait_for};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

const QUEUE: &str = "chainwatch.worker";

/// Stop the worker, kill backend1 and wait until both transitions are
/// announced: their events, taken out of the worker's queue.
async fn fail_over_with_the_worker_down(f: &mut Fleet) -> Vec<TransitionEvent> {
    f.stop_worker();
    f.kill(2);
    wait_for("the chain to settle", Duration::from_secs(120), || {
        (f.status(3).is_some_and(|s| s["id"] == 1) && f.status(4).is_some_and(|s| s["id"] == 2))
            .then_some(())
    });
    let rabbit = f.rabbit.as_ref().unwrap();
    let events: Vec<TransitionEvent> = rabbit
        .drain(QUEUE, 2, Duration::from_secs(60))
        .await
        .iter()
        .map(|d| TransitionEvent::parse(&d.data).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        f.sql(3, "SELECT @@read_only").unwrap(),
        "1",
        "nobody promoted backend2 while the worker was down"
    );
    events
}

/// Start the worker again and wait until backend2's MariaDB is writable;
/// prints how long that took, for `what`.
fn start_worker_until_promoted(f: &mut Fleet, what: &str) {
    let started = Instant::now();
    f.start_worker();
    wait_for(
        "backend2's MariaDB promoted",
        Duration::from_secs(60),
        || (f.sql(3, "SELECT @@read_only").ok()? == "0").then_some(()),
    );
    eprintln!(
        "{what}: MySQL promoted {:.2} s after the worker started",
        started.elapsed().as_secs_f64()
    );
}

/// backend3 (now backend2) replicates a row written through
/// backend1.internal.
fn replicas_follow(f: &Fleet, v: u32) {
    let w = f.client_sql(
        1,
        "backend1.internal",
        &format!("INSERT INTO app.t VALUES ({v})"),
    );
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    wait_for(
        "backend2 to replicate the row",
        Duration::from_secs(60),
        || {
            (f.sql(4, &format!("SELECT COUNT(*) FROM app.t WHERE v = {v}"))
                .ok()?
                == "1")
                .then_some(())
        },
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_compaction_delivered_before_the_promotion_still_promotes() {
    if !rig_ready(true) {
        return;
    }
    let mut f = Fleet::mysql_fleet(Options::default()).await;
    let mut events = fail_over_with_the_worker_down(&mut f).await;
    // The compaction (to backend2) first, then the promotion (to backend1).
    events.sort_by_key(|e| std::cmp::Reverse(e.to_id));
    assert_eq!((events[0].to_id, events[1].to_id), (2, 1));
    let rabbit = f.rabbit.as_ref().unwrap();
    let conn = rabbit.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for ev in &events {
        let confirm = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(ev).unwrap(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(ev.event_id.as_str().into())
                    .with_user_id(rabbit.user.as_str().into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
    let _ = conn.close(200, "done".into()).await;

    start_worker_until_promoted(&mut f, "compaction delivered first");
    replicas_follow(&f, 40);
    // Both events are handled (the promotion may find MySQL reconciled
    // already), neither is dead-lettered.
    for ev in &events {
        wait_for(
            &format!("the worker to handle event {}", ev.event_id),
            Duration::from_secs(60),
            || {
                f.worker_log()
                    .lines()
                    .any(|l| {
                        l.contains(&ev.event_id)
                            && (l.contains(": applied") || l.contains("already reconciled"))
                    })
                    .then_some(())
            },
        );
    }
    let dead = f
        .rabbit
        .as_ref()
        .unwrap()
        .dead_letters("chainwatch.dead", 0, Duration::from_secs(2))
        .await;
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_that_was_down_converges_though_the_events_were_lost() {
    if !rig_ready(true) {
        return;
    }
    let mut f = Fleet::mysql_fleet(Options::default()).await;
    // Taken out of the queue and dropped: the events are lost.
    fail_over_with_the_worker_down(&mut f).await;
    // The worker's log is appended to, and the first worker's reconcile
    // (backend1 on node 2) is in it already: only a line written after the
    // restart, naming the new holder, shows the restarted worker's.
    let before = follows(&f.worker_log()).len();
    start_worker_until_promoted(&mut f, "events lost");
    replicas_follow(&f, 41);
    let holder = f.nodes[3].instance.clone();
    let line = wait_for(
        "the restarted worker's reconcile with backend2's instance as the primary",
        Duration::from_secs(60),
        || {
            follows(&f.worker_log())
                .into_iter()
                .skip(before)
                .find(|l| l["primary"] == holder.as_str())
        },
    );
    eprintln!("the restarted worker reconciled: {line}");
}

/// The worker's "reconcile: MySQL follows the registry" lines, in order.
fn follows(log: &str) -> Vec<serde_json::Value> {
    common::json_lines(log)
        .into_iter()
        .filter(|l| l["message"] == "reconcile: MySQL follows the registry")
        .collect()
}
