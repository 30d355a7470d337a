//! The MySQL path end to end on real MariaDB servers: three servers set up
//! as primary and replicas with GTID replication (semi-synchronous) by
//! ansible/setup-replication.yml; the primary dies; a backend takeover event
//! goes through RabbitMQ to `chainwatch worker`, which runs the real
//! ansible/failover.yml; afterwards the former replica is writable and not
//! replicating, the third server replicates from it, no acknowledged write
//! is lost even when the replicas lagged, and the roles survive restarts.
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
use common::mariadb::{Mariadb, boot_id_file, role_cnf};
use common::rabbit::Rabbit;
use common::{Proc, announce_config, bin, event, have, prerequisite, wait_for};

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The instance ID of backend `n` in the inventory.
fn instance(n: usize) -> String {
    format!("i-{n:017x}")
}

fn inventory(dir: &Path, dbs: &[&Mariadb]) -> std::path::PathBuf {
    let mut text = String::from("[chainwatch_backend]\n");
    for (i, db) in dbs.iter().enumerate() {
        text.push_str(&format!(
            "db{n} ansible_connection=local ansible_python_interpreter=/usr/bin/python3 mysql_login_host=127.0.0.1 mysql_login_port={} chainwatch_mysql_address=127.0.0.1 instance_id={} chainwatch_id={n} chainwatch_role_cnf={} chainwatch_boot_id_file={}\n",
            db.port,
            instance(i + 1),
            role_cnf(db.dir.path()).display(),
            boot_id_file(db.dir.path()).display(),
            n = i + 1
        ));
    }
    text.push_str(
        "[chainwatch_backend:vars]\nchainwatch_primary_address=127.0.0.1\nchainwatch_repl_password=repl-secret\nchainwatch_become=false\nchainwatch_semi_sync=true\n",
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

/// Three servers in GTID replication from db1, a table `app.t`, and the
/// worker consuming.
struct Backends {
    dbs: Vec<Mariadb>,
    dir: tempfile::TempDir,
    inv: std::path::PathBuf,
    mq: Rabbit,
    _worker: Proc,
}

impl Backends {
    fn start(name: &str) -> Option<Backends> {
        if !prerequisite(
            Mariadb::available() && Rabbit::available() && have("ansible-playbook"),
            "mariadbd, RabbitMQ (as root) and Debian's ansible with python3-pymysql",
        ) {
            return None;
        }
        let dbs: Vec<Mariadb> = (1..=3).map(Mariadb::start).collect();
        let dir = tempfile::tempdir().unwrap();
        let inv = inventory(dir.path(), &dbs.iter().collect::<Vec<_>>());

        // Active/passive with GTID replication from backend1.
        playbook(&inv, "setup-replication.yml", &["--skip-tags", "config"]);
        assert_eq!(dbs[0].sql("SELECT @@read_only"), "0");
        assert_eq!(dbs[0].sql("SELECT @@rpl_semi_sync_master_enabled"), "1");
        for db in &dbs[1..] {
            assert_eq!(db.sql("SELECT @@read_only"), "1");
            let st = replica_status(db);
            assert!(
                st.contains(&format!("Master_Port: {}", dbs[0].port)),
                "{st}"
            );
            assert!(st.contains("Using_Gtid: Current_Pos"), "{st}");
        }
        // Idempotent: a second run changes nothing.
        let again = playbook(&inv, "setup-replication.yml", &["--skip-tags", "config"]);
        assert_unchanged(&again);
        dbs[0].sql(
            "CREATE DATABASE app; CREATE TABLE app.t (v INT PRIMARY KEY); INSERT INTO app.t VALUES (1),(2)",
        );
        wait_rows(&dbs[1], "1,2");
        wait_rows(&dbs[2], "1,2");
        // Both replicas acknowledge semi-synchronously.
        wait_for("two semi-sync replicas", Duration::from_secs(20), || {
            (dbs[0].sql("SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'")
                == "Rpl_semi_sync_master_clients\t2")
                .then_some(())
        });

        let mq = Rabbit::new(name, "127.0.0.1");
        // The playbook's work; the worker's checks against EC2 are
        // tests/worker_trust.rs's.
        std::fs::write(
            dir.path().join("chainwatch.toml"),
            format!(
                "[aws]\nfleet = \"test\"\n[announce]\nrabbitmq_urls = [\"{}\"]\ncloudwatch_log_group = \"\"\n[worker]\nstate_dir = \"{d}/worker\"\ninventory = \"{}\"\nplaybook = \"{}\"\nattempts = 2\nretry_backoff = \"500ms\"\nverify_registry = false\n",
                mq.url(),
                inv.display(),
                repo("ansible/failover.yml").display(),
                d = dir.path().display()
            ),
        )
        .unwrap();
        let worker = Proc(
            Command::new(bin())
                .arg("--config")
                .arg(dir.path().join("chainwatch.toml"))
                .arg("worker")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("worker.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        let b = Backends {
            dbs,
            dir,
            inv,
            mq,
            _worker: worker,
        };
        wait_for("the worker", Duration::from_secs(20), || {
            b.log().contains("worker consuming").then_some(())
        });
        Some(b)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default()
    }

    /// db1 is dead: announce "backend2 became backend1" and wait until the
    /// worker applied it.
    async fn fail_over(&self) -> chainwatch::event::TransitionEvent {
        let ev = event(Role::Backend, 2, 1, 1, &instance(2), &[&instance(1)]);
        self.deliver(&[&ev]).await;
        ev
    }

    /// Deliver `events` in this order and wait until the worker applied
    /// the last one.
    async fn deliver(&self, events: &[&chainwatch::event::TransitionEvent]) {
        let sink = RabbitSink::new(&announce_config(vec![self.mq.url()]));
        for ev in events {
            sink.deliver(*ev).await.unwrap();
        }
        let last = &events[events.len() - 1].event_id;
        wait_for(
            "the worker to apply the event",
            Duration::from_secs(180),
            || {
                let l = self.log();
                assert!(!l.contains("dead-lettered"), "{l}");
                l.lines()
                    .any(|line| line.contains(last.as_str()) && line.contains(": applied"))
                    .then_some(())
            },
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_backend_takeover_promotes_the_new_backend1_and_repoints_the_replicas() {
    let Some(mut b) = Backends::start("mysql") else {
        return;
    };

    // backend1 dies; backend2 took over its ID (epoch 1), then backend3
    // moved down into backend2 (epoch 2). The worker gets the compaction
    // first: the promotion is still applied.
    b.dbs[0].kill();
    let ev = event(Role::Backend, 2, 1, 1, &instance(2), &[&instance(1)]);
    let compaction = event(Role::Backend, 3, 2, 2, &instance(3), &[]);
    let delivered = std::time::Instant::now();
    b.deliver(&[&compaction, &ev]).await;
    eprintln!(
        "compaction then promotion delivered: promoted {:?} later",
        delivered.elapsed()
    );
    let [_, db2, db3] = &b.dbs[..] else {
        unreachable!()
    };

    // The former replica is writable and replicates from nobody.
    assert_eq!(db2.sql("SELECT @@read_only"), "0");
    assert_eq!(replica_status(db2), "", "backend1 must not replicate");
    db2.sql("INSERT INTO app.t VALUES (3)");
    // The third server follows it.
    let st = replica_status(db3);
    assert!(st.contains(&format!("Master_Port: {}", db2.port)), "{st}");
    assert_eq!(db3.sql("SELECT @@read_only"), "1");
    wait_rows(db3, "1,2,3");

    // The playbook is idempotent and --check works.
    let vars = b.dir.path().join("event.json");
    std::fs::write(
        &vars,
        serde_json::json!({ "chainwatch_event": ev }).to_string(),
    )
    .unwrap();
    let at = format!("@{}", vars.display());
    let check = playbook(&b.inv, "failover.yml", &["-e", &at, "--check"]);
    assert_unchanged(&check);
    let again = playbook(&b.inv, "failover.yml", &["-e", &at]);
    assert_unchanged(&again);
    // Ansible's output is in the worker's log.
    assert!(b.log().contains("PLAY RECAP"), "{}", b.log());

    // Restarts keep the roles: the new primary stays writable (and
    // semi-synchronous) after a restart of mysqld, the replica read-only.
    b.dbs[1].restart();
    b.dbs[2].restart();
    assert_eq!(b.dbs[1].sql("SELECT @@read_only"), "0");
    assert_eq!(b.dbs[1].sql("SELECT @@rpl_semi_sync_master_enabled"), "1");
    assert_eq!(b.dbs[2].sql("SELECT @@read_only"), "1");
    // The fenced old primary, started again on its instance (a new boot),
    // comes up read-only.
    b.dbs[0].reboot_host();
    assert_eq!(b.dbs[0].sql("SELECT @@read_only"), "1");
    // So would the new primary after a reboot of its instance: the role
    // lives for one boot.
    b.dbs[1].reboot_host();
    assert_eq!(b.dbs[1].sql("SELECT @@read_only"), "1");
}

/// A client writing through an application user (no SUPER, autocommit)
/// until the primary dies.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u32>>,
}

impl Writer {
    fn start(port: u16) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut v = 1000u32;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                v += 1;
                let ok = common::mariadb::query(
                    &["-h127.0.0.1", &format!("-P{port}"), "-uapp", "-papp-secret"],
                    &format!("INSERT INTO app.t VALUES ({v})"),
                )
                .is_ok();
                if ok {
                    acked.push(v);
                }
            }
            acked
        });
        Writer { stop, thread }
    }

    fn finish(self) -> Vec<u32> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn replicas_that_lag_lose_no_acknowledged_write_at_promotion() {
    let Some(mut b) = Backends::start("mysql-lag") else {
        return;
    };
    b.dbs[0].sql(
        "CREATE USER app@'%' IDENTIFIED BY 'app-secret'; GRANT SELECT, INSERT ON app.* TO app@'%'",
    );
    let writer = Writer::start(b.dbs[0].port);
    std::thread::sleep(Duration::from_millis(800));
    // The candidate (db2) stops receiving: it misses what follows; db3
    // receives it (and acknowledges it semi-synchronously) but does not
    // apply it.
    b.dbs[1].sql("STOP SLAVE IO_THREAD");
    std::thread::sleep(Duration::from_millis(800));
    b.dbs[2].sql("STOP SLAVE SQL_THREAD");
    std::thread::sleep(Duration::from_millis(1500));
    b.dbs[0].kill();
    let acked = writer.finish();
    let missed: Vec<u32> = {
        let on2 = b.dbs[1].sql("SELECT v FROM app.t");
        let on2: std::collections::HashSet<&str> = on2.lines().collect();
        acked
            .iter()
            .copied()
            .filter(|v| !on2.contains(v.to_string().as_str()))
            .collect()
    };
    assert!(
        missed.len() > 20,
        "the candidate must lag for this test to mean anything: {} of {} acknowledged writes missing",
        missed.len(),
        acked.len()
    );

    b.fail_over().await;
    let rows = b.dbs[1].sql("SELECT v FROM app.t");
    let rows: std::collections::HashSet<&str> = rows.lines().collect();
    let lost: Vec<u32> = acked
        .iter()
        .copied()
        .filter(|v| !rows.contains(v.to_string().as_str()))
        .collect();
    eprintln!(
        "acknowledged {} writes; the candidate lacked {} before the promotion; lost {}",
        acked.len(),
        missed.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes lost: {lost:?}\n{}",
        b.log()
    );
    assert_eq!(b.dbs[1].sql("SELECT @@read_only"), "0");
    // db3 follows the new primary and holds the same rows.
    let st = replica_status(&b.dbs[2]);
    assert!(
        st.contains(&format!("Master_Port: {}", b.dbs[1].port)),
        "{st}"
    );
    b.dbs[1].sql("INSERT INTO app.t VALUES (999999)");
    let want = b.dbs[1].sql("SELECT COUNT(*) FROM app.t");
    wait_for("db3 to hold every row", Duration::from_secs(30), || {
        (b.dbs[2].sql("SELECT COUNT(*) FROM app.t") == want).then_some(())
    });
}
