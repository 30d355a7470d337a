//! Broker least privilege, against the machine's RabbitMQ: the topology and
//! the permissions come from `chainwatch broker-definitions`, imported with
//! `rabbitmqctl import_definitions`; the nodes' user may only publish to
//! the exchange and the worker's may only read its queues (and dead-letter).
//! Before this, a node declared the topology at every connection, so it
//! needed the configure permission on everything, and a node's user could
//! consume or purge the worker's queue.

mod common;

use std::time::Duration;

use chainwatch::layout::Role;
use chainwatch::shell::broker::RabbitSink;
use common::rabbit::Rabbit;
use common::{announce_config, bin, event, prerequisite};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions,
};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// Whether `what` on a fresh channel of `url` is refused by the broker
/// (ACCESS_REFUSED, 403), and not failing for another reason.
async fn refused<F, Fut>(url: &str, what: F) -> bool
where
    F: FnOnce(lapin::Channel) -> Fut,
    Fut: std::future::Future<Output = lapin::Result<()>>,
{
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("the user logs in");
    let ch = conn.create_channel().await.unwrap();
    let r = what(ch).await;
    let _ = conn.close(200, "done".into()).await;
    match r {
        Ok(()) => false,
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("ACCESS_REFUSED") || text.contains("403"),
                "failed, but not for want of permission: {text}"
            );
            true
        }
    }
}

/// Publish `body` to `exchange` and wait for the confirm.
async fn publish(ch: lapin::Channel, exchange: &str, key: &str) -> lapin::Result<()> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        b"{}",
        BasicProperties::default(),
    )
    .await?
    .await?;
    // A refused publish closes the channel; the next call says so.
    ch.basic_qos(1, Default::default()).await
}

#[tokio::test(flavor = "current_thread")]
async fn nodes_only_publish_and_the_worker_only_reads_with_the_topology_from_definitions() {
    if !prerequisite(Rabbit::available(), "RabbitMQ (rabbitmqctl)") {
        return;
    }
    let mq = Rabbit::new("leastpriv", "127.0.0.1");
    let node = mq.bare_user("node");
    let worker = mq.bare_user("worker");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("chainwatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[announce]\nrabbitmq_urls = [\"{}\"]\ncloudwatch_log_group = \"\"\n[worker]\npublishers = [\"{node}\"]\n",
            mq.url_of(&worker)
        ),
    )
    .unwrap();

    // chainwatch with this config.
    let cli = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(["--config", cfg.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    // The worker's own user is refused as a publisher.
    let out = cli(&[
        "broker-definitions",
        "--publisher",
        &worker,
        "--worker-user",
        &worker,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give the worker its own broker user"));

    let out = cli(&["broker-definitions", "--worker-user", &worker]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let defs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(defs["vhosts"][0]["name"], mq.vhost.as_str());
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&mq.password));
    let file = dir.path().join("definitions.json");
    std::fs::write(&file, &out.stdout).unwrap();
    common::sh(&format!(
        "rabbitmqctl -q import_definitions {}",
        file.display()
    ));

    // A node publishes an event through the daemon's own sink, with no
    // configure permission: the topology is there and only checked. Its
    // password is not in the config but in a root-only file (as the
    // user-data leaves it).
    let node_url = mq.url_of(&node);
    let mut node_cfg = announce_config(vec![node_url.replace(&format!(":{}@", mq.password), "@")]);
    assert!(!node_cfg.rabbitmq_urls[0].contains(&mq.password));
    let pw = dir.path().join("broker.password");
    std::fs::write(&pw, format!("{}\n", mq.password)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    node_cfg.rabbitmq_password_file = Some(pw.clone());
    let ev0 = event(Role::Backend, 2, 1, 4, "i-0123456789abcdef0", &[]);
    let err = RabbitSink::new(&node_cfg).deliver(&ev0).await.unwrap_err();
    assert!(
        err.contains("chmod 640") && !err.contains(&mq.password),
        "{err}"
    );
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sink = RabbitSink::new(&node_cfg);
    let ev = event(Role::Backend, 2, 1, 5, "i-0123456789abcdef0", &[]);
    sink.deliver(&ev)
        .await
        .expect("a node delivers with publish-only rights");
    let got = mq
        .drain("chainwatch.worker", 1, Duration::from_secs(5))
        .await;
    assert_eq!(got.len(), 1, "the event reached the worker's queue");

    let worker_url = mq.url_of(&worker);
    // The node may not read, purge or dead-letter anything.
    assert!(
        refused(&node_url, |ch| async move {
            ch.basic_get("chainwatch.worker".into(), BasicGetOptions::default())
                .await
                .map(|_| ())
        })
        .await,
        "a node read the worker's queue"
    );
    assert!(
        refused(&node_url, |ch| async move {
            ch.queue_purge("chainwatch.worker".into(), QueuePurgeOptions::default())
                .await
                .map(|_| ())
        })
        .await,
        "a node purged the worker's queue"
    );
    assert!(
        refused(&node_url, |ch| publish(
            ch,
            "chainwatch.dlx",
            "backend.takeover"
        ))
        .await,
        "a node wrote a dead letter"
    );
    // The worker may read its queue and the dead letters, not publish an
    // event.
    assert!(
        refused(&worker_url, |ch| publish(
            ch,
            "chainwatch",
            "backend.takeover"
        ))
        .await,
        "the worker's user published an event"
    );
    assert!(
        !refused(&worker_url, |ch| async move {
            ch.basic_get("chainwatch.worker".into(), BasicGetOptions::default())
                .await
                .map(|_| ())
        })
        .await
    );
    // The worker's own commands work with those rights alone: a dead
    // letter is listed, and replayed into the worker's queue only.
    let admin = mq.connect().await;
    let ch = admin.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.basic_publish(
        "chainwatch.dlx".into(),
        "backend.takeover".into(),
        BasicPublishOptions::default(),
        &ev.to_json(),
        BasicProperties::default().with_message_id(ev.event_id.as_str().into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let _ = admin.close(200, "done".into()).await;
    let out = cli(&["worker", "dead-letters"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&ev.event_id.clone()),
        "`worker dead-letters` as the worker's user: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["worker", "replay", &ev.event_id]);
    assert!(
        out.status.success(),
        "`worker replay` as the worker's user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        mq.count("chainwatch.worker").await,
        1,
        "the replay is in the worker's queue"
    );
    assert_eq!(mq.count("chainwatch.alerts").await, 0);
    assert_eq!(mq.count("chainwatch.dead").await, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn without_the_topology_a_least_privilege_user_is_told_to_import_the_definitions() {
    if !prerequisite(Rabbit::available(), "RabbitMQ (rabbitmqctl)") {
        return;
    }
    let mq = Rabbit::new("notopo", "127.0.0.1");
    let node = mq.bare_user("node");
    common::sh(&format!(
        "rabbitmqctl -q set_permissions -p {} {node} '^$' '^chainwatch$' '^$'",
        mq.vhost
    ));
    let sink = RabbitSink::new(&announce_config(vec![mq.url_of(&node)]));
    let ev = event(Role::Backend, 2, 1, 5, "i-0123456789abcdef0", &[]);
    let err = sink.deliver(&ev).await.unwrap_err();
    assert!(err.contains("broker-definitions"), "{err}");
    assert!(!err.contains(&mq.password), "{err}");
}
