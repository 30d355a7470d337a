//! Rig scenario: a planned switchover of backend1 under writes.
//!
//! A client on frontend2 writes continuously through `backend1.internal` as
//! an application user (no SUPER), semi-synchronous replication. The
//! operator runs `chainwatch switchover --role backend --to 2` on backend1's
//! holder: its MySQL goes read-only and every replica is sent its whole
//! binary log; the identity moves to backend2 without a fence (no
//! StopInstances); the worker promotes backend2's MariaDB on the event; the
//! old primary rejoins the chain at the tail and, read-only, replicates
//! from the new one without errant transactions. No acknowledged write is
//! lost. Prints the longest write pause the client saw.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{Fleet, Options, longest_pause};
use common::{rig_ready, wait_for};

#[tokio::test(flavor = "current_thread")]
async fn backend1_hands_over_under_writes_and_loses_none() {
    if !rig_ready(true) {
        return;
    }
    let f = Fleet::mysql_fleet(Options {
        semi_sync: true,
        ..Options::default()
    })
    .await;
    // Refused: a chain hands an ID to its watcher only.
    let skip = f.cli_in(2, &["switchover", "--role", "backend", "--to", "3"]);
    assert!(!skip.status.success());
    assert!(
        String::from_utf8_lossy(&skip.stderr).contains("only"),
        "{}",
        String::from_utf8_lossy(&skip.stderr)
    );
    assert_eq!(f.sql(2, "SELECT @@read_only").unwrap(), "0");

    let writer = f.start_writer();
    std::thread::sleep(Duration::from_millis(1500));
    let asked = Instant::now();
    let out = f.cli_in(2, &["switchover", "--role", "backend", "--to", "2"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("MySQL is read-only and its 2 replicas have been sent everything"),
        "{said}"
    );
    eprintln!("{said}");
    f.wait_writable_backend1(3, 60);
    // The old primary: at the tail, read-only, replicating from backend1.
    f.wait_replicating(2, 90);
    assert_eq!(f.sql(2, "SELECT @@read_only").unwrap(), "1");
    assert!(f.status(2).is_some_and(|s| s["id"] == 3));
    std::thread::sleep(Duration::from_secs(2));
    let acked = writer.finish();

    let lost = f.lost_writes(3, &acked);
    let pause = longest_pause(&acked, asked);
    eprintln!(
        "backend switchover: {} writes acknowledged, {} lost, longest write pause {:.2} s",
        acked.len(),
        lost.len(),
        pause.as_secs_f64()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(
        acked.iter().any(|a| a.sent > asked + pause),
        "writes are accepted again after the switchover"
    );
    // The old primary holds what the new one holds, and nothing else.
    wait_for(
        "the old primary to catch up",
        Duration::from_secs(30),
        || {
            (f.sql(2, "SELECT COUNT(*) FROM app.w").ok()?
                == f.sql(3, "SELECT COUNT(*) FROM app.w").ok()?)
            .then_some(())
        },
    );
    assert!(
        !f.worker_log().contains("chainwatch quarantine"),
        "{}",
        f.worker_log()
    );
    assert!(
        f.proxy.stops().is_empty(),
        "a switchover stops no instance: {:?}",
        f.proxy.stops()
    );
}
