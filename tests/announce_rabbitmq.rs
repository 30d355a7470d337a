//! The RabbitMQ sink against the machine's broker: topology, persistent
//! mandatory publishes with confirms, fail-over between URLs, no passwords in
//! errors.

mod common;

use std::time::Duration;

use chainwatch::event::TransitionEvent;
use chainwatch::layout::Role;
use chainwatch::shell::broker::RabbitSink;
use common::rabbit::Rabbit;
use common::{announce_config, event, prerequisite};
use lapin::types::FieldTable;

fn broker() -> Option<Rabbit> {
    prerequisite(Rabbit::available(), "RabbitMQ with rabbitmqctl (as root)")
        .then(|| Rabbit::new("sink", "127.0.0.1"))
}

#[tokio::test(flavor = "current_thread")]
async fn an_event_published_with_confirms_arrives_once() {
    let Some(mq) = broker() else { return };
    let cfg = announce_config(vec![mq.url()]);
    let sink = RabbitSink::new(&cfg);
    let ev = event(Role::Backend, 2, 1, 3, "i-b2", &["i-b1"]);
    sink.deliver(&ev).await.unwrap();
    let got = mq.drain(&cfg.queue, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "exactly once");
    let d = &got[0];
    assert_eq!(TransitionEvent::parse(&d.data).unwrap(), ev);
    assert_eq!(d.routing_key.as_str(), "backend.takeover");
    assert_eq!(d.exchange.as_str(), "chainwatch");
    assert_eq!(d.properties.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        d.properties.message_id().as_ref().map(|m| m.as_str()),
        Some(ev.event_id.as_str())
    );
    // Frontend events take their own routing key to the same queue.
    let fe = event(Role::Frontend, 2, 1, 1, "i-f2", &["i-f1"]);
    sink.deliver(&fe).await.unwrap();
    let got = mq.drain(&cfg.queue, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].routing_key.as_str(), "frontend.takeover");
    // The queues exist as declared: the worker queue is a quorum queue
    // dead-lettering to chainwatch.dlx.
    let (out, worker) = queue_line(&mq, "chainwatch.worker");
    assert!(worker.contains("quorum"), "{out}");
    assert!(worker.contains("chainwatch.dlx"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("chainwatch.dead")),
        "{out}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_alert_goes_to_the_alerts_queue_and_never_to_the_worker() {
    let Some(mq) = broker() else { return };
    let cfg = announce_config(vec![mq.url()]);
    let sink = RabbitSink::new(&cfg);
    let alert = chainwatch::event::Alert {
        alert_id: "7d4f0c1e-2b3a-4c5d-8e9f-0a1b2c3d4e5f".into(),
        kind: "fence_blocked".into(),
        fleet: "chainwatch".into(),
        node: "frontend4".into(),
        instance_id: "i-f4".into(),
        slot: "frontend2".into(),
        attempt: Some(1),
        detail: "fence budget exhausted".into(),
        at_ms: 1_700_000_000_000,
    };
    sink.deliver(&alert).await.unwrap();
    let got = mq.drain(&cfg.alerts_queue, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "exactly once");
    let d = &got[0];
    assert_eq!(chainwatch::event::Alert::parse(&d.data).unwrap(), alert);
    assert_eq!(d.routing_key.as_str(), "alert.fence_blocked");
    assert_eq!(d.properties.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        d.properties.kind().as_ref().map(|k| k.as_str()),
        Some("chainwatch.alert")
    );
    assert_eq!(
        d.properties.message_id().as_ref().map(|m| m.as_str()),
        Some(alert.alert_id.as_str())
    );
    assert_eq!(mq.count(&cfg.queue).await, 0, "the worker never sees it");
    // The alerts queue is bounded: the oldest go first.
    let (out, line) = queue_line(&mq, "chainwatch.alerts");
    assert!(line.contains("x-max-length"), "{out}");
}

/// The broker's list of the vhost's queues (name, type, arguments), and
/// the line of the queue `name`.
fn queue_line(mq: &common::rabbit::Rabbit, name: &str) -> (String, String) {
    let out = common::sh(&format!(
        "rabbitmqctl -q list_queues -p {} name type arguments",
        mq.vhost
    ));
    let line = out
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .to_string();
    (out, line)
}

#[tokio::test(flavor = "current_thread")]
async fn an_unroutable_event_is_a_failure_not_a_loss() {
    let Some(mq) = broker() else { return };
    let cfg = announce_config(vec![mq.url()]);
    let sink = RabbitSink::new(&cfg);
    sink.deliver(&event(Role::Backend, 3, 2, 1, "i-x", &[]))
        .await
        .unwrap();
    mq.drain(&cfg.queue, 1, Duration::from_secs(5)).await;
    // Someone unbinds the worker queue: a mandatory publish comes back.
    let conn = mq.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_unbind(
        cfg.queue.as_str().into(),
        cfg.exchange.as_str().into(),
        "*.takeover".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let ev = event(Role::Backend, 3, 2, 2, "i-x", &[]);
    let err = sink.deliver(&ev).await.unwrap_err();
    assert!(err.contains("returned"), "{err}");
    // The next attempt reconnects and declares the topology again.
    sink.deliver(&ev).await.unwrap();
    let got = mq.drain(&cfg.queue, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn the_next_url_is_tried_and_passwords_never_show() {
    let Some(mq) = broker() else { return };
    let dead = format!(
        "amqp://{}:{}@127.0.0.1:1/{}",
        mq.user, mq.password, mq.vhost
    );
    let cfg = announce_config(vec![dead.clone(), mq.url()]);
    let sink = RabbitSink::new(&cfg);
    sink.deliver(&event(Role::Backend, 2, 1, 1, "i-y", &[]))
        .await
        .unwrap();
    assert_eq!(
        mq.drain(&cfg.queue, 1, Duration::from_secs(5)).await.len(),
        1
    );
    // Only dead brokers: the error names them without the password.
    let wrong = format!(
        "amqp://{}:wrong-secret@127.0.0.1:5672/{}",
        mq.user, mq.vhost
    );
    let cfg = announce_config(vec![dead, wrong]);
    let err = RabbitSink::new(&cfg)
        .deliver(&event(Role::Backend, 2, 1, 2, "i-y", &[]))
        .await
        .unwrap_err();
    assert!(
        !err.contains(&mq.password) && !err.contains("wrong-secret"),
        "{err}"
    );
    assert!(err.contains("127.0.0.1:1"), "{err}");
}
