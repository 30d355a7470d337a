//! The worker's trust boundary (issue: no member, broker client or tag
//! writer can promote the wrong node or run code elsewhere), against the
//! machine's RabbitMQ, moto's EC2 and real ansible-playbook runs. Each
//! hostile message is dead-lettered with its reason and runs nothing; the
//! honest events around them are applied.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chainwatch::event::TransitionEvent;
use chainwatch::layout::{Role, Slot};
use chainwatch::shell::broker::RabbitSink;
use common::rabbit::Rabbit;
use common::{
    Moto, Proc, announce_config, bin, ec2_client, event, have, launch, prerequisite, wait_for,
};

const FLEET: &str = "trust";

fn playbooks() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/playbooks")
}

fn ev(from: u32, to: u32, epoch: u64, instance: &str) -> TransitionEvent {
    let mut e = event(Role::Backend, from, to, epoch, instance, &[]);
    e.fleet = FLEET.into();
    e
}

/// Publish `body` as `user` would (the broker validates `user_id`).
async fn publish_raw(mq: &Rabbit, exchange: &str, body: &[u8], id: &str) {
    let conn = mq.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        exchange.into(),
        "backend.takeover".into(),
        lapin::options::BasicPublishOptions::default(),
        body,
        lapin::BasicProperties::default()
            .with_user_id(mq.user.as_str().into())
            .with_message_id(id.into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_events_are_dead_lettered_with_their_reason_and_run_nothing() {
    if !prerequisite(
        Rabbit::available() && have("ansible-playbook") && Moto::available(),
        "RabbitMQ (rabbitmqctl, as root), ansible-playbook and moto (.ci/run installs them)",
    ) {
        return;
    }
    let moto = Moto::start("127.0.0.1");
    let ec2 = ec2_client(&moto.endpoint).await;
    let slot = |id| Slot::new(Role::Backend, id);
    // a holds backend1 at epoch 4, c backend2 at epoch 6; b is backend3 at
    // epoch 2 and claims more than it holds.
    let a = launch(&ec2, FLEET, slot(1), &[("chainwatch:epoch", "4")]).await;
    let b = launch(&ec2, FLEET, slot(3), &[("chainwatch:epoch", "2")]).await;
    let c = launch(&ec2, FLEET, slot(2), &[("chainwatch:epoch", "6")]).await;

    let mq = Rabbit::new("trust", "127.0.0.1");
    // Another client of the same vhost: a broker user that is no publisher.
    let intruder = mq.extra_user("intruder");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let marker = d.join("marker");
    std::fs::write(
        d.join("inventory.ini"),
        format!(
            "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n[all:vars]\nrecord_file={}\n",
            d.join("record").display()
        ),
    )
    .unwrap();
    // Events only (reconcile_interval 0s): this is about what the worker
    // does with each message; reconciling from the registry has its own
    // scenarios (tests/rig_worker_converges.rs).
    std::fs::write(
        d.join("chainwatch.toml"),
        format!(
            "[aws]\nfleet = \"{FLEET}\"\n[announce]\nrabbitmq_urls = [\"{}\"]\ncloudwatch_log_group = \"\"\n[worker]\nstate_dir = \"{d}/state\"\ninventory = \"{d}/inventory.ini\"\nplaybook = \"{}\"\nattempts = 1\ntimeout = \"60000ms\"\npublishers = [\"{}\"]\nreconcile_interval = \"0s\"\n",
            mq.url(),
            playbooks().join("record.yml").display(),
            mq.user,
            d = d.display()
        ),
    )
    .unwrap();
    let log = d.join("log");
    let _worker = Proc(
        common::aws_env(&mut Command::new(bin()), &moto.endpoint)
            .arg("--config")
            .arg(d.join("chainwatch.toml"))
            .arg("worker")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the worker", Duration::from_secs(20), || {
        read_log().contains("worker consuming").then_some(())
    });
    let cfg = announce_config(vec![mq.url()]);
    let sink = RabbitSink::new(&cfg);
    let intruder_url = mq.url().replacen(&mq.user, &intruder, 1);
    let intruder_sink = RabbitSink::new(&announce_config(vec![intruder_url]));

    // Expected reason per message ID.
    let mut want: HashMap<String, &str> = HashMap::new();
    // The honest event: applied.
    let honest = ev(2, 1, 4, &a);
    sink.deliver(&honest).await.unwrap();
    // Replayed.
    sink.deliver(&honest).await.unwrap();
    // Its epoch again under a new ID.
    let same_epoch = ev(2, 1, 4, &a);
    want.insert(same_epoch.event_id.clone(), "applied at the same epoch");
    sink.deliver(&same_epoch).await.unwrap();
    // Another fleet.
    let mut foreign = ev(3, 2, 6, &c);
    foreign.fleet = "elsewhere".into();
    want.insert(foreign.event_id.clone(), "not this worker's fleet");
    sink.deliver(&foreign).await.unwrap();
    // "backend3 became backend1": b is not tagged as its holder.
    let forged = ev(3, 1, 5, &b);
    want.insert(forged.event_id.clone(), "EC2 does not show the holder");
    sink.deliver(&forged).await.unwrap();
    // Epoch 2^63, to make every later event stale.
    let poison = ev(3, 1, 1 << 63, &b);
    want.insert(poison.event_id.clone(), "EC2 does not show the holder");
    sink.deliver(&poison).await.unwrap();
    // A true transition (c became backend2 at epoch 6), from a broker user
    // that is not a publisher ...
    let by_intruder = ev(3, 2, 6, &c);
    want.insert(by_intruder.event_id.clone(), "not one of worker.publishers");
    intruder_sink.deliver(&by_intruder).await.unwrap();
    // ... and a template payload in each string field.
    let payload = format!("{{{{ lookup('pipe', 'touch {}') }}}}", marker.display());
    let good = serde_json::to_value(ev(3, 2, 6, &c)).unwrap();
    let mut templated = Vec::new();
    for field in ["event_id", "fleet", "role", "instance_id", "overlay_addr"] {
        let mut v = good.clone();
        v[field] = payload.clone().into();
        templated.push((format!("templated-{field}"), v));
    }
    let mut v = good.clone();
    v["fenced_instances"] = vec![payload.clone()].into();
    templated.push(("templated-fenced_instances".to_string(), v));
    for (id, v) in &templated {
        publish_raw(&mq, &cfg.exchange, v.to_string().as_bytes(), id).await;
    }
    // The same true transition from the publisher: applied.
    let late = ev(3, 2, 6, &c);
    sink.deliver(&late).await.unwrap();

    wait_for("the honest events", Duration::from_secs(120), || {
        (std::fs::read_to_string(d.join("record"))
            .unwrap_or_default()
            .lines()
            .count()
            >= 2)
            .then_some(())
    });
    let dead = mq
        .dead_letters(
            &cfg.dead_letter_queue,
            1 + want.len() + templated.len(),
            Duration::from_secs(60),
        )
        .await;
    let record = std::fs::read_to_string(d.join("record")).unwrap_or_default();
    assert_eq!(
        record.lines().collect::<Vec<_>>(),
        vec![
            format!("{} 4", honest.event_id),
            format!("{} 6", late.event_id)
        ],
        "{}",
        read_log()
    );
    assert!(!marker.exists(), "a template in an event ran a command");
    let mut reasons: HashMap<String, Vec<String>> = HashMap::new();
    for (id, reason) in dead.iter().cloned() {
        reasons.entry(id).or_default().push(reason);
    }
    let one = |id: &str| -> String {
        let r = reasons
            .get(id)
            .unwrap_or_else(|| panic!("{id} not dead-lettered: {reasons:?}"));
        assert_eq!(r.len(), 1, "{id}: {r:?}");
        r[0].clone()
    };
    assert!(
        one(&honest.event_id).contains("already applied"),
        "{reasons:?}"
    );
    for (id, why) in &want {
        assert!(one(id).contains(why), "{id}: want {why:?}, got {reasons:?}");
    }
    for (id, _) in &templated {
        assert!(!one(id).is_empty(), "{id} dead-lettered without a reason");
    }
    assert_eq!(dead.len(), 1 + want.len() + templated.len(), "{reasons:?}");
    assert_eq!(mq.count(&cfg.queue).await, 0);
}

#[test]
fn event_strings_reach_ansible_as_data_never_as_templates() {
    if !prerequisite(have("ansible-playbook"), "ansible-playbook") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let payload = format!("{{{{ lookup('pipe', 'touch {}') }}}}", marker.display());
    // Straight to the vars file, past the checks that would refuse it.
    let mut e = ev(2, 1, 1, "i-0123abcd");
    e.fleet = payload.clone();
    e.fenced_instances = vec![payload.clone()];
    let vars = dir.path().join("vars.yml");
    std::fs::write(&vars, chainwatch::shell::worker::vars_yaml(&e)).unwrap();
    let out_file = dir.path().join("out");
    let out = Command::new("ansible-playbook")
        .arg("-i")
        .arg("localhost,")
        .arg(playbooks().join("echo.yml"))
        .arg("-e")
        .arg(format!("@{}", vars.display()))
        .arg("-e")
        .arg(format!("out_file={}", out_file.display()))
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!marker.exists(), "the template ran");
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        format!("{payload}|{payload}")
    );
}
