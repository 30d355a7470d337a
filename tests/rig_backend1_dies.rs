//! Rig scenario: backend1 dies. backend2 fences it and becomes backend1;
//! through RabbitMQ the worker's playbook promotes its MariaDB; a client in
//! a frontend namespace writes to backend1.internal and succeeds; backend3
//! (which moves down into the vacant ID 2) replicates the new rows.

mod common;

use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::{DB_ADMIN, DB_PASSWORD, Fleet, Options};
use common::{rig_ready, wait_for};

fn be(id: u32) -> Slot {
    Slot::new(Role::Backend, id)
}

#[tokio::test(flavor = "current_thread")]
async fn backend1_dies_and_mysql_follows() {
    if !rig_ready(true) {
        return;
    }
    let f = Fleet::mysql_fleet(Options::default()).await;

    let killed = Instant::now();
    f.kill(2);
    // backend2 takes over backend1 ...
    wait_for("backend2 to be backend1", Duration::from_secs(60), || {
        f.status(3).filter(|s| s["id"] == 1)
    });
    let took = killed.elapsed();
    f.wait_overlay(3, be(1), 30);
    // ... and the worker promotes its MariaDB.
    wait_for(
        "the worker to promote backend1",
        Duration::from_secs(120),
        || (f.sql(3, "SELECT @@read_only").ok()? == "0").then_some(()),
    );
    let promoted = killed.elapsed();
    assert_eq!(
        f.sql(3, "SHOW SLAVE STATUS").unwrap(),
        "",
        "the new primary replicates from nobody"
    );
    // A client on a frontend writes to backend1.internal.
    let client = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &f.nodes[1].ns,
            "mariadb",
            "--no-defaults",
            "-h",
            "backend1.internal",
        ])
        .arg(format!("-u{DB_ADMIN}"))
        .arg(format!("-p{DB_PASSWORD}"))
        .args(["-e", "INSERT INTO app.t VALUES (2)"])
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    // backend3 replicates the new row (it moved down to backend2 meanwhile).
    wait_for(
        "backend3 replicating the new row",
        Duration::from_secs(60),
        || (f.sql(4, "SELECT COUNT(*) FROM app.t").ok()? == "2").then_some(()),
    );
    f.wait_overlay(4, be(2), 60);
    let (state, _) = f.instance(2).await;
    assert_eq!(state, "stopped");
    eprintln!(
        "backend1 killed -> backend2 answering as backend1: {:.2} s; -> MariaDB promoted: {:.2} s",
        took.as_secs_f64(),
        promoted.as_secs_f64()
    );
}
