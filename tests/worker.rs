//! `chainwatch worker` against the machine's RabbitMQ with real
//! ansible-playbook runs: each event is applied once, stale epochs are
//! skipped, a failing playbook ends in the dead-letter queue after its
//! retries, malformed messages are dead-lettered.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chainwatch::layout::Role;
use chainwatch::shell::broker::RabbitSink;
use common::rabbit::Rabbit;
use common::{Proc, announce_config, bin, event, have, prerequisite, wait_for};

fn ready() -> bool {
    prerequisite(
        Rabbit::available() && have("ansible-playbook"),
        "RabbitMQ (rabbitmqctl, as root) and ansible-playbook (.ci/run installs Debian's ansible)",
    )
}

struct Worker {
    _proc: Proc,
    dir: tempfile::TempDir,
}

impl Worker {
    /// `chainwatch <args>` with this worker's config.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .arg("--config")
            .arg(self.dir.path().join("chainwatch.toml"))
            .args(args)
            .output()
            .unwrap()
    }
    fn record(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("record"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

fn start_worker(mq: &Rabbit, playbook: &str, attempts: u32) -> Worker {
    start_worker_with(mq, playbook, attempts, "")
}

/// A worker whose config ends with `extra` (more sections).
fn start_worker_with(mq: &Rabbit, playbook: &str, attempts: u32, extra: &str) -> Worker {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("inventory.ini"),
        format!(
            "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n[all:vars]\nrecord_file={}\n",
            d.join("record").display()
        ),
    )
    .unwrap();
    let playbook = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/playbooks")
        .join(playbook);
    std::fs::write(
        d.join("chainwatch.toml"),
        format!(
            // The queue handling without EC2 (tests/worker_trust.rs checks
            // events against it).
            "[aws]\nfleet = \"test\"\n[announce]\nrabbitmq_urls = [\"{}\"]\ncloudwatch_log_group = \"\"\n[worker]\nstate_dir = \"{d}/state\"\ninventory = \"{d}/inventory.ini\"\nplaybook = \"{}\"\nattempts = {attempts}\nretry_backoff = \"100ms\"\ntimeout = \"60000ms\"\npublishers = [\"{}\"]\nverify_registry = false\n{extra}",
            mq.url(),
            playbook.display(),
            mq.user,
            d = d.display()
        ),
    )
    .unwrap();
    let proc = Proc(
        Command::new(bin())
            .arg("--config")
            .arg(d.join("chainwatch.toml"))
            .arg("worker")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let w = Worker { _proc: proc, dir };
    wait_for("the worker to consume", Duration::from_secs(20), || {
        w.log().contains("worker consuming").then_some(())
    });
    w
}

#[tokio::test(flavor = "current_thread")]
async fn each_event_is_applied_once_and_stale_epochs_are_skipped() {
    if !ready() {
        return;
    }
    let mq = Rabbit::new("worker-once", "127.0.0.1");
    let w = start_worker(&mq, "record.yml", 3);
    let cfg = announce_config(vec![mq.url()]);
    let sink = RabbitSink::new(&cfg);
    let e5 = event(Role::Backend, 2, 1, 5, "i-000000b2", &["i-000000b1"]);
    // Delivered twice (at-least-once delivery after a lost confirm).
    sink.deliver(&e5).await.unwrap();
    sink.deliver(&e5).await.unwrap();
    // A transition of backend2 ...
    let e6 = event(Role::Backend, 3, 2, 6, "i-000000b3", &[]);
    sink.deliver(&e6).await.unwrap();
    // ... and an older one of the same slot, arriving late.
    let e3 = event(Role::Backend, 3, 2, 3, "i-000000b3", &[]);
    sink.deliver(&e3).await.unwrap();
    wait_for(
        "both applicable events applied",
        Duration::from_secs(120),
        || {
            (w.record().len() >= 2
                && w.log().matches("already applied").count() >= 1
                && w.log().contains("stale"))
            .then_some(())
        },
    );
    // Give a wrong duplicate run time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        w.record(),
        vec![format!("{} 5", e5.event_id), format!("{} 6", e6.event_id)]
    );
    assert_eq!(mq.count(&cfg.queue).await, 0, "everything acked");
    // The second copy is dead-lettered as a replay, with the reason.
    let dead = mq
        .drain(&cfg.dead_letter_queue, 1, Duration::from_secs(10))
        .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        chainwatch::event::TransitionEvent::parse(&dead[0].data).unwrap(),
        e5
    );
    // The applied set is durable.
    let applied = std::fs::read_to_string(w.dir.path().join("state/applied.json")).unwrap();
    assert!(applied.contains(&e5.event_id) && applied.contains(&e6.event_id));
    assert!(!applied.contains(&e3.event_id));
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_playbook_ends_in_the_dead_letter_queue() {
    if !ready() {
        return;
    }
    let mq = Rabbit::new("worker-fail", "127.0.0.1");
    let w = start_worker(&mq, "fail.yml", 3);
    let cfg = announce_config(vec![mq.url()]);
    let ev = event(Role::Backend, 2, 1, 1, "i-000000b2", &["i-000000b1"]);
    RabbitSink::new(&cfg).deliver(&ev).await.unwrap();
    let dead = mq
        .drain(&cfg.dead_letter_queue, 1, Duration::from_secs(120))
        .await;
    assert_eq!(dead.len(), 1, "{}", w.log());
    assert_eq!(
        chainwatch::event::TransitionEvent::parse(&dead[0].data).unwrap(),
        ev
    );
    assert_eq!(w.record().len(), 3, "three runs before giving up");
    assert!(
        w.log().contains("dead-lettered") && w.log().contains("playbook failed 3 times"),
        "{}",
        w.log()
    );
    assert_eq!(mq.count(&cfg.queue).await, 0);
    let applied =
        std::fs::read_to_string(w.dir.path().join("state/applied.json")).unwrap_or_default();
    assert!(
        !applied.contains(&ev.event_id),
        "a failed event is not applied"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn malformed_messages_are_dead_lettered_and_frontend_events_logged() {
    if !ready() {
        return;
    }
    let mq = Rabbit::new("worker-bad", "127.0.0.1");
    let w = start_worker(&mq, "record.yml", 1);
    let cfg = announce_config(vec![mq.url()]);
    // Declared by the worker already; publish garbage straight to the exchange.
    let conn = mq.connect().await;
    let ch = conn.create_channel().await.unwrap();
    for body in [&b"not json"[..], br#"{"schema": 2, "event_id": "x"}"#] {
        ch.basic_publish(
            cfg.exchange.as_str().into(),
            "backend.takeover".into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let dead = mq
        .drain(&cfg.dead_letter_queue, 2, Duration::from_secs(30))
        .await;
    assert_eq!(dead.len(), 2, "{}", w.log());
    assert!(w.log().contains("schema version 2"), "{}", w.log());
    // A frontend event needs no playbook (none configured): logged, acked.
    let fe = event(Role::Frontend, 2, 1, 1, "i-000000f2", &["i-000000f1"]);
    RabbitSink::new(&cfg).deliver(&fe).await.unwrap();
    wait_for("the frontend event", Duration::from_secs(30), || {
        w.log().contains("frontend transition").then_some(())
    });
    assert!(w.record().is_empty(), "no playbook for frontend events");
    assert_eq!(mq.count(&cfg.queue).await, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn dead_letters_are_alerted_listed_and_replayed_after_a_fix() {
    if !ready() {
        return;
    }
    let mq = Rabbit::new("worker-replay", "127.0.0.1");
    let alerts = tempfile::NamedTempFile::new().unwrap();
    let sh = format!("cat >> {0}; echo >> {0}", alerts.path().display());
    let w = start_worker_with(
        &mq,
        "until_fixed.yml",
        1,
        &format!("[alerts]\nnotify_command = [\"/bin/sh\", \"-c\", \"{sh}\"]\n"),
    );
    let cfg = announce_config(vec![mq.url()]);
    let ev = event(Role::Backend, 2, 1, 1, "i-000000b2", &["i-000000b1"]);
    RabbitSink::new(&cfg).deliver(&ev).await.unwrap();
    wait_for("the dead letter", Duration::from_secs(60), || {
        w.log().contains("dead-lettered").then_some(())
    });
    // The operator hears of it.
    let alert = wait_for("the dead_letter alert", Duration::from_secs(10), || {
        let a = std::fs::read_to_string(alerts.path()).unwrap_or_default();
        a.contains(r#""kind":"dead_letter""#).then_some(a)
    });
    assert!(alert.contains(&ev.event_id), "{alert}");
    // Listed with its reason, and listing leaves it where it is.
    for _ in 0..2 {
        let out = w.cli(&["worker", "dead-letters"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(text.contains(&ev.event_id), "{text}");
        assert!(text.contains("backend2->backend1 epoch 1"), "{text}");
        assert!(text.contains("playbook failed 1 times"), "{text}");
    }
    assert_eq!(mq.count(&cfg.dead_letter_queue).await, 1);
    let out = w.cli(&["worker", "replay", "no-such-event"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no dead letter with the ID no-such-event"),
        "{out:?}"
    );
    assert_eq!(mq.count(&cfg.dead_letter_queue).await, 1, "still there");
    // A replay is checked anew: an event of another fleet comes back to the
    // dead-letter queue with the same reason.
    let mut foreign = event(Role::Backend, 3, 1, 2, "i-000000b3", &["i-000000b1"]);
    foreign.fleet = "another-fleet".into();
    RabbitSink::new(&cfg).deliver(&foreign).await.unwrap();
    wait_for("the foreign event refused", Duration::from_secs(30), || {
        (w.log().matches("not this worker's fleet").count() == 1).then_some(())
    });
    let out = w.cli(&["worker", "replay", &foreign.event_id]);
    assert!(out.status.success(), "{out:?}");
    wait_for("the replay refused again", Duration::from_secs(30), || {
        (w.log().matches("not this worker's fleet").count() == 2).then_some(())
    });
    let out = w.cli(&["worker", "dead-letters"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&foreign.event_id) && text.contains(&ev.event_id),
        "{text}"
    );
    // The fix, then the replay: the worker checks the event again and
    // applies it this time.
    std::fs::write(w.dir.path().join("record.fixed"), "").unwrap();
    let out = w.cli(&["worker", "replay", &ev.event_id]);
    assert!(out.status.success(), "{out:?}");
    wait_for(
        "the replayed event applied",
        Duration::from_secs(60),
        || w.log().contains(": applied").then_some(()),
    );
    assert_eq!(
        mq.count(&cfg.dead_letter_queue).await,
        1,
        "only the foreign one"
    );
    assert_eq!(w.record(), vec![ev.event_id.clone(), ev.event_id.clone()]);
    let applied = std::fs::read_to_string(w.dir.path().join("state/applied.json")).unwrap();
    assert!(applied.contains(&ev.event_id));
    // The applied event left the dead-letter queue; the foreign one stays.
    let out = w.cli(&["worker", "dead-letters"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains(&ev.event_id) && text.contains(&foreign.event_id),
        "{text}"
    );
}
