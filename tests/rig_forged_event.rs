//! Rig scenario: a forged promotion on the broker. With the fleet's own
//! broker credentials (what any member holds), someone publishes "backend3
//! became backend1": once as a plausible event, once with epoch 2^63 and a
//! template expression in `fleet` (the review's attack). The worker checks
//! each against EC2's tags and dead-letters it with its reason; backend3
//! stays a read-only replica, backend1 stays the primary, no command runs,
//! and writes through `backend1.internal` go on.

mod common;

use std::time::Duration;

use chainwatch::layout::Role;
use chainwatch::shell::broker::RabbitSink;
use common::fleet::{Fleet, Options};
use common::{announce_config, event, rig_ready, wait_for};

#[tokio::test(flavor = "current_thread")]
async fn a_forged_promotion_on_the_broker_promotes_nobody() {
    if !rig_ready(true) {
        return;
    }
    let f = Fleet::mysql_fleet(Options::default()).await;
    let rabbit = f.rabbit.as_ref().expect("the rig's broker");
    let sink = RabbitSink::new(&announce_config(vec![rabbit.url()]));
    let backend3 = f.nodes[4].instance.clone();
    let marker = f.node_dir(4).join("forged-ran");

    let mut plausible = event(Role::Backend, 3, 1, 1, &backend3, &[]);
    plausible.fleet = f.fleet.clone();
    let mut poisoned = event(Role::Backend, 3, 1, 1 << 63, &backend3, &[]);
    poisoned.fleet = format!("{{{{ lookup('pipe', 'touch {}') }}}}", marker.display());
    for e in [&plausible, &poisoned] {
        sink.deliver(e).await.unwrap();
    }

    // Both dead-lettered, each with its reason.
    let cfg = announce_config(vec![rabbit.url()]);
    let reasons = rabbit
        .dead_letters(&cfg.dead_letter_queue, 2, Duration::from_secs(60))
        .await;
    let reason = |id: &str| {
        reasons
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{id} not dead-lettered: {reasons:?}\n{}", f.worker_log()))
    };
    assert!(
        reason(&plausible.event_id).contains("EC2 does not show the holder"),
        "{reasons:?}"
    );
    assert!(
        reason(&poisoned.event_id).contains("not this worker's fleet"),
        "{reasons:?}"
    );

    // Nothing changed: backend3 replicates read-only, backend1 is the
    // writable primary, and no command ran.
    assert!(!marker.exists(), "the template in the event ran a command");
    assert_eq!(f.sql(4, "SELECT @@read_only").unwrap(), "1");
    assert_eq!(f.sql(2, "SELECT @@read_only").unwrap(), "0");
    let ok = f.client_sql(1, "backend1.internal", "INSERT INTO app.t VALUES (7)");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    wait_for("the write on backend3", Duration::from_secs(30), || {
        (f.sql(4, "SELECT COUNT(*) FROM app.t WHERE v = 7").ok()? == "1").then_some(())
    });
    // Ansible ran only for the registry's own topology (the worker's
    // reconcile at start), never for an event.
    assert!(
        !f.worker_log()
            .lines()
            .any(|l| l.contains("running the playbook") && !l.contains("reconcile:")),
        "the worker ran Ansible for a forged event:\n{}",
        f.worker_log()
    );
}
