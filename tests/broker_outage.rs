//! With the broker down, a transition waits in the outbox; after the broker
//! is back (and after a restart of the daemon) it is delivered exactly once:
//! nothing is lost. Stops and starts the machine's RabbitMQ application, so
//! this file holds a single test.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chainwatch::event::TransitionEvent;
use chainwatch::layout::Role;
use chainwatch::shell::Announcer;
use chainwatch::shell::announce::{OutboxAnnouncer, Sink, deliver_pass};
use chainwatch::shell::broker::RabbitSink;
use chainwatch::shell::outbox::Outbox;
use common::rabbit::Rabbit;
use common::{announce_config, event, prerequisite, sh};

/// Starts the broker again whatever happens.
struct Restart;
impl Drop for Restart {
    fn drop(&mut self) {
        common::sh_quiet("rabbitmqctl -q start_app");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn events_wait_in_the_outbox_while_the_broker_is_down() {
    if !prerequisite(Rabbit::available(), "RabbitMQ with rabbitmqctl (as root)") {
        return;
    }
    let mq = Rabbit::new("outage", "127.0.0.1");
    let cfg = announce_config(vec![mq.url()]);
    let dir = tempfile::tempdir().unwrap();
    let open =
        || Arc::new(Outbox::open(dir.path().join("outbox"), vec!["rabbitmq".into()]).unwrap());
    let outbox = open();
    let notify = Arc::new(tokio::sync::Notify::new());
    let announcer = OutboxAnnouncer::new(outbox.clone(), notify);
    let sinks = vec![Sink::Rabbit(Box::new(RabbitSink::new(&cfg)))];

    // Broker up: delivered, outbox empty.
    let first = event(Role::Backend, 2, 1, 1, "i-b2", &["i-b1"]);
    announcer.announce(&first).await;
    assert!(deliver_pass(&outbox, &sinks).await);
    assert_eq!(announcer.pending(), 0);

    // Broker down: the event waits in the outbox.
    let _restart = Restart;
    sh("rabbitmqctl -q stop_app");
    let second = event(Role::Backend, 3, 2, 2, "i-b3", &[]);
    announcer.announce(&second).await;
    assert!(!deliver_pass(&outbox, &sinks).await);
    assert!(!deliver_pass(&outbox, &sinks).await);
    assert_eq!(announcer.pending(), 1);

    // The daemon restarts while the broker is still down: the event is
    // still pending.
    drop(sinks);
    drop(announcer);
    drop(outbox);
    let outbox = open();
    assert_eq!(
        outbox.pending().unwrap()[0].entry,
        chainwatch::shell::outbox::Entry::Transition(second.clone())
    );

    // The broker is back: delivered once, the outbox is empty.
    sh("rabbitmqctl -q start_app");
    let sinks = vec![Sink::Rabbit(Box::new(RabbitSink::new(&cfg)))];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !deliver_pass(&outbox, &sinks).await {
        assert!(
            Instant::now() < deadline,
            "not delivered after the broker came back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(outbox.count(), 0);
    let got = mq.drain(&cfg.queue, 2, Duration::from_secs(10)).await;
    let ids: Vec<String> = got
        .iter()
        .map(|d| TransitionEvent::parse(&d.data).unwrap().event_id)
        .collect();
    assert_eq!(
        ids,
        vec![first.event_id, second.event_id],
        "each exactly once, in order"
    );
}
