//! The MySQL path end to end on real MariaDB servers: three servers set up
//! as primary and replicas with GTID replication by ansible/setup-replication.yml;
//! the primary dies; a backend takeover event goes through RabbitMQ to
//! `chainwatch worker`, which runs the real ansible/failover.yml; afterwards
//! the former replica is writable and not replicating, and the third server
//! replicates from it.
//!
//! The machine's own MariaDB runs without a binary log (Debian's default),
//! so it cannot be a GTID primary without reconfiguring and restarting it:
//! the test starts servers of its own instead. Since they share one host,
//! the inventory maps each "backend" to a port; the playbook is the one used
//! on AWS.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chainwatch::layout::Role;
use chainwatch::shell::broker::RabbitSink;
use common::mariadb::Mariadb;
use common::rabbit::Rabbit;
use common::{Proc, announce_config, bin, event, have, prerequisite, wait_for};

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn inventory(dir: &Path, dbs: &[&Mariadb]) -> std::path::PathBuf {
    let mut text = String::from("[chainwatch_backend]\n");
    for (i, db) in dbs.iter().enumerate() {
        text.push_str(&format!(
            "db{n} ansible_connection=local ansible_python_interpreter=/usr/bin/python3 mysql_login_host=127.0.0.1 mysql_login_port={} instance_id=i-db{n} chainwatch_id={n}\n",
            db.port,
            n = i + 1
        ));
    }
    text.push_str(
        "[chainwatch_backend:vars]\nchainwatch_primary_address=127.0.0.1\nchainwatch_repl_password=repl-secret\n",
    );
    text.push_str(
        "[local]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
    );
    let path = dir.join("inventory.ini");
    std::fs::write(&path, text).unwrap();
    path
}

/// Idempotency: every host of the PLAY RECAP reports `changed=0` (a
/// `contains("changed=0")` would pass as soon as one host is unchanged).
fn assert_unchanged(output: &str) {
    let recap: Vec<&str> = output
        .lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .skip(1)
        .filter(|l| l.contains(" : ok="))
        .collect();
    assert!(!recap.is_empty(), "no PLAY RECAP in:\n{output}");
    let changed: Vec<&&str> = recap
        .iter()
        .filter(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("changed="))
                .is_none_or(|n| n != "0")
        })
        .collect();
    assert!(changed.is_empty(), "hosts changed: {changed:?}\n{output}");
}

fn playbook(inv: &Path, book: &str, extra: &[&str]) -> String {
    let out = Command::new("ansible-playbook")
        .arg("-i")
        .arg(inv)
        .arg(repo(&format!("ansible/{book}")))
        .args(extra)
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{book} failed:\n{text}");
    text
}

fn replica_status(db: &Mariadb) -> String {
    db.replica_status()
}

fn wait_rows(db: &Mariadb, want: &str) {
    wait_for(
        &format!("rows {want:?} on port {}", db.port),
        Duration::from_secs(30),
        || (db.sql("SELECT GROUP_CONCAT(v ORDER BY v) FROM app.t") == want).then_some(()),
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_backend_takeover_promotes_the_new_backend1_and_repoints_the_replicas() {
    if !prerequisite(
        Mariadb::available() && Rabbit::available() && have("ansible-playbook"),
        "mariadbd, RabbitMQ (as root) and Debian's ansible with python3-pymysql",
    ) {
        return;
    }
    let mut db1 = Mariadb::start(1);
    let db2 = Mariadb::start(2);
    let db3 = Mariadb::start(3);
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(dir.path(), &[&db1, &db2, &db3]);

    // Active/passive with GTID replication from backend1.
    playbook(&inv, "setup-replication.yml", &["--skip-tags", "config"]);
    assert_eq!(db1.sql("SELECT @@read_only"), "0");
    for db in [&db2, &db3] {
        assert_eq!(db.sql("SELECT @@read_only"), "1");
        let st = replica_status(db);
        assert!(st.contains(&format!("Master_Port: {}", db1.port)), "{st}");
        assert!(st.contains("Using_Gtid: Slave_Pos"), "{st}");
    }
    // Idempotent: a second run changes nothing.
    let again = playbook(&inv, "setup-replication.yml", &["--skip-tags", "config"]);
    assert_unchanged(&again);
    db1.sql("CREATE DATABASE app; CREATE TABLE app.t (v INT PRIMARY KEY); INSERT INTO app.t VALUES (1),(2)");
    wait_rows(&db2, "1,2");
    wait_rows(&db3, "1,2");

    // The worker listens.
    let mq = Rabbit::new("mysql", "127.0.0.1");
    let cfg = announce_config(vec![mq.url()]);
    std::fs::write(
        dir.path().join("chainwatch.toml"),
        format!(
            "[announce]\nrabbitmq_urls = [\"{}\"]\ncloudwatch_log_group = \"\"\n[worker]\nstate_dir = \"{d}/worker\"\ninventory = \"{}\"\nplaybook = \"{}\"\nattempts = 2\nretry_backoff_ms = 500\n",
            mq.url(),
            inv.display(),
            repo("ansible/failover.yml").display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("worker.log");
    let _worker = Proc(
        Command::new(bin())
            .arg("--config")
            .arg(dir.path().join("chainwatch.toml"))
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

    // backend1 dies; backend2 took over its ID and announces it.
    db1.kill();
    let ev = event(Role::Backend, 2, 1, 1, "i-db2", &["i-db1"]);
    RabbitSink::new(&cfg).deliver(&ev).await.unwrap();
    wait_for(
        "the worker to apply the event",
        Duration::from_secs(180),
        || {
            let l = read_log();
            assert!(!l.contains("dead-lettering"), "{l}");
            l.contains(": applied").then_some(())
        },
    );

    // The former replica is writable and replicates from nobody.
    assert_eq!(db2.sql("SELECT @@read_only"), "0");
    assert_eq!(replica_status(&db2), "", "backend1 must not replicate");
    db2.sql("INSERT INTO app.t VALUES (3)");
    // The third server follows it.
    let st = replica_status(&db3);
    assert!(st.contains(&format!("Master_Port: {}", db2.port)), "{st}");
    assert_eq!(db3.sql("SELECT @@read_only"), "1");
    wait_rows(&db3, "1,2,3");

    // The playbook is idempotent and --check works.
    let vars = dir.path().join("event.json");
    std::fs::write(
        &vars,
        serde_json::json!({ "chainwatch_event": ev }).to_string(),
    )
    .unwrap();
    let at = format!("@{}", vars.display());
    let check = playbook(&inv, "failover.yml", &["-e", &at, "--check"]);
    assert_unchanged(&check);
    let again = playbook(&inv, "failover.yml", &["-e", &at]);
    assert_unchanged(&again);
    // Ansible's output is in the worker's log.
    assert!(read_log().contains("PLAY RECAP"), "{}", read_log());
}
