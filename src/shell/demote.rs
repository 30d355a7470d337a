//! The MySQL side of a planned backend switchover (`chainwatch switchover`
//! on backend1's holder), before the identity is handed over: this host's
//! server goes read-only, then the command waits until every replica has
//! been sent the whole binary log, so that the successor holds every write
//! the old primary acknowledged and the old primary, once it follows the
//! new one, holds nothing the new one lacks (no errant transaction, no
//! quarantine).
//!
//! The server is reached with `service.mysql_client` (the `mariadb` or
//! `mysql` client as an admin of this host: root over the unix socket by
//! default); statements are fixed text.

use std::time::{Duration, Instant};

use crate::shell::mysql::Client;

/// What the demotion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demoted {
    /// The server's GTID position once read-only: what the replicas hold.
    pub position: String,
    /// Replicas connected (binary log dump threads), all of them idle.
    pub replicas: u32,
    /// MariaDB (else MySQL).
    pub mariadb: bool,
}

/// Run one statement with `client` (as `service.mysql_client`), bounded by
/// 10 s: its output's lines.
async fn sql(client: &[String], stmt: &str) -> Result<Vec<String>, String> {
    Client::new(client, "service.mysql_client")
        .lines(stmt, Duration::from_secs(10))
        .await
}

/// Make this host's server read-only, then wait (at most `within`) until
/// every connected replica has been sent the whole binary log. Fails, with
/// the server writable again, when no replica is connected or they do not
/// catch up in time: a switchover would then lose writes.
pub async fn demote(client: &[String], within: Duration) -> Result<Demoted, String> {
    let version = sql(client, "SELECT VERSION()").await?;
    let mariadb = version
        .first()
        .is_some_and(|v| v.to_lowercase().contains("mariadb"));
    let read_only = if mariadb {
        "SET GLOBAL read_only = ON"
    } else {
        "SET GLOBAL super_read_only = ON"
    };
    sql(client, read_only).await?;
    let start = Instant::now();
    let replicas = loop {
        let row = sql(
            client,
            "SELECT COUNT(*), COALESCE(SUM(STATE LIKE '%has sent all binlog%'), 0) \
             FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
        )
        .await;
        let counts = row.as_ref().ok().and_then(|r| {
            let mut f = r.first()?.split('\t').map(|n| n.trim().parse::<u32>().ok());
            Some((f.next()??, f.next()??))
        });
        match counts {
            Some((n, idle)) if n > 0 && idle == n => break n,
            _ if start.elapsed() >= within => {
                let why = match (counts, row) {
                    (Some((0, _)), _) => "no replica is connected".to_string(),
                    (Some((n, idle)), _) => {
                        format!("{} of {n} replicas still receive the binary log", n - idle)
                    }
                    (None, Err(e)) => e,
                    (None, Ok(r)) => format!("unexpected answer {r:?}"),
                };
                let undone = undo(client, mariadb).await;
                return Err(format!(
                    "{why} after {within:?}: a switchover now could lose writes; the server is {}",
                    match undone {
                        Ok(()) => "writable again".to_string(),
                        Err(e) => format!("STILL READ-ONLY ({e}): set read_only = OFF by hand"),
                    }
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let position = sql(
        client,
        if mariadb {
            "SELECT @@GLOBAL.gtid_binlog_pos"
        } else {
            "SELECT @@GLOBAL.gtid_executed"
        },
    )
    .await?
    .join("")
    .trim()
    .to_string();
    Ok(Demoted {
        position: crate::layout::escaped(&position),
        replicas,
        mariadb,
    })
}

/// Make the server writable again (a switchover that did not happen).
pub async fn undo(client: &[String], mariadb: bool) -> Result<(), String> {
    let stmt = if mariadb {
        "SET GLOBAL read_only = OFF"
    } else {
        "SET GLOBAL super_read_only = OFF, GLOBAL read_only = OFF"
    };
    sql(client, stmt).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in client: a shell script answering like `mariadb -N -B`,
    /// logging each statement.
    fn fake(dir: &std::path::Path, dumps: &str) -> Vec<String> {
        let script = dir.join("mariadb");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nfor a; do s=\"$a\"; done\necho \"$s\" >> {log}\ncase \"$s\" in\n  'SELECT VERSION()') echo 10.11.6-MariaDB ;;\n  *PROCESSLIST*) printf '{dumps}\\n' ;;\n  *gtid_binlog_pos*) echo 0-101-42 ;;\nesac\n",
                log = dir.join("log").display()
            ),
        )
        .unwrap();
        std::process::Command::new("chmod")
            .args(["+x", &script.display().to_string()])
            .status()
            .unwrap();
        vec![script.display().to_string()]
    }

    #[tokio::test]
    async fn read_only_then_idle_replicas_then_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let client = fake(dir.path(), "2\t2");
        let d = demote(&client, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            d,
            Demoted {
                position: "0-101-42".into(),
                replicas: 2,
                mariadb: true
            }
        );
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        let order: Vec<&str> = log.lines().collect();
        assert_eq!(order[1], "SET GLOBAL read_only = ON", "{log}");
        assert!(order[2].contains("PROCESSLIST"), "{log}");
    }

    #[tokio::test]
    async fn without_a_replica_it_refuses_and_makes_the_server_writable_again() {
        let dir = tempfile::tempdir().unwrap();
        let client = fake(dir.path(), "0\t0");
        let e = demote(&client, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(e.contains("no replica is connected"), "{e}");
        assert!(e.contains("writable again"), "{e}");
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(
            log.lines().last(),
            Some("SET GLOBAL read_only = OFF"),
            "{log}"
        );
    }

    #[tokio::test]
    async fn a_replica_still_receiving_is_waited_for_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let client = fake(dir.path(), "2\t1");
        let e = demote(&client, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(e.contains("1 of 2 replicas still receive"), "{e}");
    }
}
