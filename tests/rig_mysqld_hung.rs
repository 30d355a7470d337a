//! Rig scenario: mysqld hangs on the primary's holder. backend1's MariaDB
//! is SIGSTOPped: the host still answers pings, the kernel still accepts
//! TCP connections on 3306, but nothing answers. With `[service] check =
//! "mysql"`, backend1 gives up its ID (its VPN identity goes down) and tells
//! backend2 so over the members' channel, backend2 declares it dead one
//! round after the word (the log's time stamps), fences it and takes
//! over, the worker promotes backend2's MariaDB, and a client on a frontend
//! writes through backend1.internal again. Prints the time from the hang to
//! the first accepted write.

mod common;

use std::time::Duration;

use common::fleet::{Fleet, Options};
use common::{rig_ready, wait_for};

#[tokio::test(flavor = "current_thread")]
async fn a_hung_mysqld_on_the_primary_fails_over_as_a_death() {
    if !rig_ready(true) {
        return;
    }
    let f = Fleet::mysql_fleet(Options {
        mysql_check: true,
        ..Options::default()
    })
    .await;
    let ok = f.client_sql(1, "backend1.internal", "INSERT INTO app.t VALUES (2)");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let hang = f.hang_primary_mysqld();
    assert!(
        hang.host_answered,
        "backend1's host must answer while mysqld is hung"
    );
    let log = f.log(2);
    let (accepted, v) = (hang.accepted, hang.value);
    let accepted = accepted.unwrap_or_else(|| {
        panic!("no write through backend1.internal accepted within 120 s of mysqld hanging\n{log}")
    });
    assert!(
        log.contains("SERVICE DOWN"),
        "backend1's daemon does not say it gave up its ID:\n{log}"
    );
    // It told its watcher, which judged it at its next missed round instead
    // of after three.
    assert!(
        log.contains("told backend2 that this node gave up backend1"),
        "backend1 did not tell backend2 it resigned:\n{log}"
    );
    // Judged one round after the word: the declaration follows the
    // resignation by at most one probe round (`probe.interval`) and the
    // helpers' time-out (1.5 `probe.timeout`), with one missed round, not
    // `probe.misses` (three more rounds would take at least two more
    // intervals).
    let watcher = f.log(3);
    let lines = common::json_lines(&watcher);
    let first = |prefix: &str| {
        lines
            .iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no {prefix:?} line in backend2's log:\n{watcher}"))
    };
    let resigned = first("backend1 says it gave up its ID");
    let declared = first("peer declared dead: backend1");
    let probe = f.settings(3).config.probe;
    let gap = common::log_ms(declared) as i64 - common::log_ms(resigned) as i64;
    let bound = (probe.interval + probe.timeout * 3 / 2).as_millis() as i64;
    eprintln!(
        "backend2 heard the resignation, declared backend1 dead {gap} ms later (bound {bound} ms) after {} missed round(s)",
        declared["misses"]
    );
    assert!(
        (0..=bound).contains(&gap),
        "backend1 declared dead {gap} ms after its resignation, not within one round ({bound} ms: probe.interval {:?} + 1.5 probe.timeout {:?}):\n{resigned}\n{declared}",
        probe.interval,
        probe.timeout
    );
    let misses = declared["misses"].as_u64().unwrap_or(u64::MAX);
    assert!(
        misses < u64::from(probe.misses),
        "declared after {misses} missed rounds, as without the resignation ({}): {declared}",
        probe.misses
    );
    // backend2 holds backend1, the old primary was fenced, and the write
    // landed on the new primary.
    wait_for("backend2 to be backend1", Duration::from_secs(10), || {
        f.status(3).filter(|s| s["id"] == 1)
    });
    let tags = f.stopped_instance(2).await;
    assert!(
        tags.contains(&("chainwatch:state".into(), "fenced".into())),
        "{tags:?}"
    );
    assert_eq!(f.sql(3, "SELECT @@read_only").unwrap(), "0");
    assert_eq!(
        f.sql(3, &format!("SELECT COUNT(*) FROM app.t WHERE v = {v}"))
            .unwrap(),
        "1"
    );
    eprintln!(
        "mysqld SIGSTOPped on backend1 -> backend2 promoted as backend1: {:.2} s; -> a write through backend1.internal accepted: {:.2} s",
        hang.promoted.unwrap().as_secs_f64(),
        accepted.as_secs_f64()
    );
}
