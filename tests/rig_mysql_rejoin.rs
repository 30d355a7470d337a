//! Rig scenarios: MySQL roles across restarts, and the fenced ex-primary
//! coming back.
//!
//! backend1 dies; backend2 takes over and the worker promotes its MariaDB.
//! - A restart of mysqld on the new primary keeps it writable (its role
//!   drop-in was written in this boot).
//! - The fenced instance, started again, rejoins at the tail of the chain.
//!   Its server boots read-only (the drop-in came from another boot). The
//!   worker's reconcile sees a new running backend in the registry and runs
//!   the playbook: a clean server becomes a replica of backend1; one whose
//!   binary log holds transactions backend1 never had (errant) is
//!   quarantined, read-only and out of replication, and an alert goes out.

mod common;

use std::time::Duration;

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options};
use common::{rig_ready, wait_for};

fn be(id: u32) -> Slot {
    Slot::new(Role::Backend, id)
}

/// Node indices of `Fleet::mysql_fleet`: backend1, backend2, backend3.
const OLD: usize = 2;
const NEW: usize = 3;
const REPLICA: usize = 4;

/// backend1 crashes; waits until backend2's MariaDB is the writable
/// backend1, then until EC2 has stopped the old one and the operator (this
/// test) starts it again: it rejoins as backend3.
async fn fail_over_and_start_the_old_primary_again(f: &Fleet) {
    f.kill(OLD);
    f.wait_writable_backend1(NEW, 120);
    wait_for(
        "the hypervisor to power the old backend1 off",
        Duration::from_secs(60),
        || f.powered_off(OLD).then_some(()),
    );
    f.stopped_instance(OLD).await;
    f.wait_overlay(REPLICA, be(2), 60);
    f.ec2
        .start_instances()
        .instance_ids(&f.nodes[OLD].instance)
        .send()
        .await
        .unwrap();
    f.wait_overlay(OLD, be(3), 120);
}

fn replica_field(f: &Fleet, i: usize, field: &str) -> Option<String> {
    f.replica_status(i).remove(field)
}

#[tokio::test(flavor = "current_thread")]
async fn restarts_keep_the_roles_and_a_clean_old_primary_rejoins_as_a_replica() {
    if !rig_ready(true) {
        return;
    }
    let f = Fleet::mysql_fleet(Options::default()).await;
    fail_over_and_start_the_old_primary_again(&f).await;

    // mysqld restarts on the new primary once the playbook has written its
    // role drop-in (the worker's direct promotion makes it writable
    // before): still writable.
    wait_for(
        "the role drop-in on the new primary",
        Duration::from_secs(120),
        || f.has_role_drop_in(NEW).then_some(()),
    );
    f.restart_mysqld(NEW);
    assert_eq!(f.sql(NEW, "SELECT @@read_only").unwrap(), "0");
    let w = f.client_sql(1, "backend1.internal", "INSERT INTO app.t VALUES (20)");
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));

    // The old primary booted read-only and becomes a replica of backend1.
    f.wait_replicating(OLD, 90);
    assert_eq!(f.sql(OLD, "SELECT @@read_only").unwrap(), "1");
    let w = f.client_sql(1, "backend1.internal", "INSERT INTO app.t VALUES (21)");
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    wait_for(
        "the old primary to replicate a new row",
        Duration::from_secs(30),
        || (f.sql(OLD, "SELECT COUNT(*) FROM app.t WHERE v = 21").ok()? == "1").then_some(()),
    );
    // Without errant transactions: what it holds, backend1 holds.
    assert_eq!(
        f.sql(OLD, "SELECT COUNT(*) FROM app.t").unwrap(),
        f.sql(NEW, "SELECT COUNT(*) FROM app.t").unwrap()
    );
    // The reconcile that made it a replica ends without a quarantine.
    wait_for(
        "the worker's reconcile to finish",
        Duration::from_secs(60),
        || {
            f.worker_log()
                .lines()
                .any(|l| {
                    l.contains("reconcile: MySQL follows the registry")
                        && l.contains(&f.nodes[OLD].instance)
                })
                .then_some(())
        },
    );
    assert!(
        !f.worker_log().contains("chainwatch quarantine"),
        "{}",
        f.worker_log()
    );
}

/// mysqld on the new primary restarts right after the worker's direct
/// promotion made it writable, before the playbook's role drop-in: the
/// worker is killed at that moment (the playbook with it), so the window
/// stays open. mysqld boots read-only (the safe side); the worker, started
/// again, makes it the writable primary: a write through
/// `backend1.internal` is accepted within 15 s of mysqld answering.
#[tokio::test(flavor = "current_thread")]
async fn a_restart_right_after_the_direct_promotion_ends_writable() {
    if !rig_ready(true) {
        return;
    }
    let mut f = Fleet::mysql_fleet(Options::default()).await;
    f.kill(OLD);
    f.wait_writable_backend1(NEW, 120);
    f.stop_worker();
    assert!(
        !f.has_role_drop_in(NEW),
        "the playbook wrote the role drop-in before the worker was killed: this run does not test the window before it"
    );
    f.restart_mysqld(NEW);
    assert_eq!(
        f.sql(NEW, "SELECT @@read_only").unwrap(),
        "1",
        "without its role drop-in, the new primary's mysqld must boot read-only"
    );
    let answering = std::time::Instant::now();
    f.start_worker();
    // The rig's admin user writes through read_only: the server must say
    // it is writable too, as an application user needs.
    let writable = common::time_until(Duration::from_secs(60), || {
        f.sql(NEW, "SELECT @@read_only").ok().as_deref() == Some("0")
            && f.client_sql(1, "backend1.internal", "INSERT INTO app.t VALUES (30)")
                .status
                .success()
    })
    .map(|_| answering.elapsed());
    let writable = writable.unwrap_or_else(|| {
        panic!(
            "backend1.internal refused writes 60 s after the new primary's mysqld restarted: read_only={:?}\n{}",
            f.sql(NEW, "SELECT @@read_only"),
            f.worker_log()
        )
    });
    assert!(
        writable <= Duration::from_secs(15),
        "writes accepted {:.2} s after mysqld answered, more than 15 s",
        writable.as_secs_f64()
    );
    // The playbook run that made it writable goes on to the drop-in, so
    // that the next restart keeps the role.
    wait_for(
        "the role drop-in on the new primary",
        Duration::from_secs(60),
        || f.has_role_drop_in(NEW).then_some(()),
    );
    eprintln!(
        "the new primary's mysqld restarted right after the direct promotion: writable again {:.2} s after it answered",
        writable.as_secs_f64()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_old_primary_with_errant_transactions_is_quarantined_and_alerted() {
    if !rig_ready(true) {
        return;
    }
    let f = Fleet::mysql_fleet(Options::default()).await;
    // The replicas stop receiving; backend1 commits a row only it holds.
    for i in [NEW, REPLICA] {
        f.sql(i, "STOP SLAVE IO_THREAD").unwrap();
    }
    f.sql(OLD, "INSERT INTO app.t VALUES (500)").unwrap();
    fail_over_and_start_the_old_primary_again(&f).await;

    let alert = f.worker_alert("quarantine", Duration::from_secs(90));
    let detail = alert["detail"].as_str().unwrap_or_default().to_string();
    assert!(
        detail.contains("backend") && detail.contains(&f.nodes[OLD].instance),
        "{alert}"
    );
    // Read-only, out of replication, its row not merged anywhere.
    assert_eq!(f.sql(OLD, "SELECT @@read_only").unwrap(), "1");
    assert_ne!(
        replica_field(&f, OLD, "Slave_IO_Running").as_deref(),
        Some("Yes")
    );
    assert_eq!(
        f.sql(OLD, "SELECT COUNT(*) FROM app.t WHERE v = 500")
            .unwrap(),
        "1"
    );
    assert_eq!(
        f.sql(NEW, "SELECT COUNT(*) FROM app.t WHERE v = 500")
            .unwrap(),
        "0"
    );
    // backend1 still takes writes and the clean replica follows.
    let w = f.client_sql(1, "backend1.internal", "INSERT INTO app.t VALUES (30)");
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    wait_for("backend2 to replicate", Duration::from_secs(30), || {
        (f.sql(REPLICA, "SELECT COUNT(*) FROM app.t WHERE v = 30")
            .ok()?
            == "1")
            .then_some(())
    });
}
