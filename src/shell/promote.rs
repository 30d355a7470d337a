//! The worker's direct promotion of backend1's MySQL (MariaDB), run before
//! the playbook when `worker.mysql_client` is set. It does the steps of
//! `failover.yml` that the applications wait for, with the client instead
//! of an Ansible run (which costs about 3 s of Python starts):
//!
//! 1. on every live backend at once: a replica starts applying and stops
//!    receiving, then applies everything it received (`MASTER_GTID_WAIT`
//!    on its received position, bounded by `worker.catch_up_timeout`); a
//!    server that replicates from nobody must be read-only and counts with
//!    its own position (the old primary of a planned switchover);
//! 2. the candidate must hold every transaction any of them holds
//!    ([`crate::gtid::most_advanced`], the candidate preferred);
//! 3. the candidate stops and forgets replication, becomes a semi-sync
//!    primary if it was a semi-sync replica, and lifts `read_only`.
//!
//! Whenever a step cannot be done as described (a candidate behind another
//! server, diverged positions, a second writable server, MySQL rather than
//! MariaDB, a candidate that no longer replicates), it stops before the
//! candidate is changed and says why (the replicas may have been drained
//! by then, as the playbook's first step drains them): the playbook, which
//! runs next in any case, then catches up, refuses or alerts as it always
//! did. The playbook
//! also writes the role drop-in and points the replicas at the new primary;
//! a mysqld restart in between boots read-only (the safe side).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::gtid::{Position, most_advanced};
use crate::shell::mysql::Client;

/// A backend's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its EC2 instance.
    pub instance: String,
    /// Where the worker reaches its server (the private address).
    pub host: String,
}

/// What the direct promotion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The candidate is a writable primary.
    Promoted {
        /// Each server's position once drained, the candidate's included.
        positions: BTreeMap<String, String>,
        /// Servers that could not be asked or drained, and why.
        left_out: Vec<String>,
        /// From the first statement to writable.
        took: Duration,
    },
    /// The candidate replicates from nobody: no promotion is pending
    /// (already promoted, or a reconcile of a primary that never moved).
    /// Nothing was changed.
    NotPending,
    /// The candidate was not changed; the playbook decides. Why.
    LeftToPlaybook(String),
}

/// A server as first seen.
#[derive(Debug, Clone)]
struct Seen {
    version: String,
    read_only: bool,
    semi_sync: bool,
    replica: bool,
}

fn flag(v: Option<&str>) -> bool {
    matches!(v.map(str::trim), Some("1" | "ON" | "on"))
}

fn position(text: &str) -> Result<Position, String> {
    Position::parse(text).map_err(|e| e.to_string())
}

const QUICK: Duration = Duration::from_secs(10);

/// What the server is, changing nothing.
async fn inspect(c: &Client) -> Result<Seen, String> {
    let about = c
        .lines(
            "SELECT VERSION(), @@GLOBAL.read_only, @@GLOBAL.rpl_semi_sync_slave_enabled",
            QUICK,
        )
        .await?;
    let first = about.first().cloned().unwrap_or_default();
    let mut f = first.split('\t');
    let version = f.next().unwrap_or_default().trim().to_string();
    if version.is_empty() {
        return Err("the server did not say its version".into());
    }
    let read_only = flag(f.next());
    let semi_sync = flag(f.next());
    let replica = !c.row("SHOW SLAVE STATUS", QUICK).await?.is_empty();
    Ok(Seen {
        version,
        read_only,
        semi_sync,
        replica,
    })
}

/// A replica: apply everything received and stop receiving, then its
/// position. A server that replicates from nobody: its position.
async fn drain(c: &Client, replica: bool, catch_up: Duration) -> Result<Position, String> {
    if !replica {
        let pos = c
            .lines("SELECT @@GLOBAL.gtid_current_pos", QUICK)
            .await?
            .join(",");
        return position(&pos);
    }
    // The SQL thread first: MariaDB discards the relay log when the SQL
    // thread starts in GTID mode while the IO thread is stopped (see
    // ansible/tasks/drain.yml).
    let received = c
        .row(
            "START SLAVE SQL_THREAD; STOP SLAVE IO_THREAD; SHOW SLAVE STATUS",
            QUICK,
        )
        .await?;
    let io = position(received.get("Gtid_IO_Pos").map_or("", String::as_str))?;
    let wait = if io.as_str().is_empty() {
        "SELECT 0, @@GLOBAL.gtid_current_pos".to_string()
    } else {
        // The position is rebuilt from its numbers: digits, '-' and ','.
        format!(
            "SELECT MASTER_GTID_WAIT('{}', {:.3}), @@GLOBAL.gtid_current_pos",
            io.as_str(),
            catch_up.as_secs_f64()
        )
    };
    let out = c.lines(&wait, catch_up + QUICK).await?;
    let line = out.first().cloned().unwrap_or_default();
    let (r, pos) = line.split_once('\t').unwrap_or((line.as_str(), ""));
    if r.trim() != "0" {
        return Err(format!(
            "did not apply its relay log up to {io} within {catch_up:?} (worker.catch_up_timeout)"
        ));
    }
    position(pos)
}

/// Promote `candidate`'s server if it is safe to here and now (see the
/// module's comment); `others` are the other live backends. Nothing is
/// changed anywhere unless the candidate still replicates (a promotion is
/// pending) and every server is MariaDB.
pub async fn promote(
    client: &Client,
    candidate: &Server,
    others: &[Server],
    catch_up: Duration,
) -> Outcome {
    let start = Instant::now();
    let all: Vec<&Server> = std::iter::once(candidate).chain(others).collect();
    let seen = join_all(all.iter().map(|s| {
        let c = client.at(&s.host);
        async move { inspect(&c).await }
    }))
    .await;
    let mut left_out = Vec::new();
    let mut to_drain: Vec<(&Server, bool)> = Vec::new();
    let mut semi_sync = false;
    for (s, seen) in all.iter().zip(seen) {
        let me = s.instance == candidate.instance;
        let seen = match seen {
            Ok(x) => x,
            Err(e) if me => {
                return Outcome::LeftToPlaybook(format!("the candidate {}: {e}", s.instance));
            }
            Err(e) => {
                left_out.push(format!("{}: {e}", s.instance));
                continue;
            }
        };
        if !seen.version.to_lowercase().contains("mariadb") {
            return Outcome::LeftToPlaybook(format!(
                "{} runs {}, not MariaDB: the playbook's MySQL path promotes",
                s.instance,
                crate::layout::escaped(&seen.version)
            ));
        }
        if me && !seen.replica {
            return Outcome::NotPending;
        }
        if !seen.replica && !seen.read_only {
            return Outcome::LeftToPlaybook(format!(
                "{} is writable and replicates from nobody: a second primary is for the playbook to judge",
                s.instance
            ));
        }
        if me {
            semi_sync = seen.semi_sync;
        }
        to_drain.push((s, seen.replica));
    }
    let drained = join_all(to_drain.iter().map(|(s, replica)| {
        let c = client.at(&s.host);
        async move { drain(&c, *replica, catch_up).await }
    }))
    .await;
    let mut positions = BTreeMap::new();
    for ((s, _), d) in to_drain.iter().zip(drained) {
        match d {
            Ok(pos) => {
                positions.insert(s.instance.clone(), pos);
            }
            Err(e) if s.instance == candidate.instance => {
                return Outcome::LeftToPlaybook(format!("the candidate {}: {e}", s.instance));
            }
            Err(e) => left_out.push(format!("{}: {e}", s.instance)),
        }
    }
    match most_advanced(&positions, &candidate.instance) {
        Ok(Some(best)) if best == candidate.instance => {}
        Ok(best) => {
            return Outcome::LeftToPlaybook(format!(
                "{} holds transactions the candidate lacks ({}): the playbook catches it up",
                best.unwrap_or("?"),
                positions
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Err(e) => return Outcome::LeftToPlaybook(e.to_string()),
    }
    let mut stmt = String::from("STOP SLAVE; RESET SLAVE ALL; ");
    if semi_sync {
        stmt.push_str(
            "SET GLOBAL rpl_semi_sync_master_enabled = ON; \
             SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC'; \
             SET GLOBAL rpl_semi_sync_master_wait_no_slave = OFF; ",
        );
    }
    stmt.push_str("SET GLOBAL read_only = OFF");
    if let Err(e) = client.at(&candidate.host).lines(&stmt, QUICK).await {
        return Outcome::LeftToPlaybook(format!(
            "the candidate {} was drained but not made writable: {e}",
            candidate.instance
        ));
    }
    Outcome::Promoted {
        positions: positions
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect(),
        left_out,
        took: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in `mariadb`: answers by the host it is given (a directory
    /// of canned answers per host), logs `host<TAB>statement`.
    fn fake(dir: &std::path::Path) -> Client {
        let script = dir.join("mariadb");
        std::fs::write(
            &script,
            format!(
                r#"#!/bin/sh
host=; for a; do case "$a" in --host=*) host=${{a#--host=}} ;; esac; s="$a"; done
printf '%s\t%s\n' "$host" "$s" >> {log}
d={dir}/$host
[ -d "$d" ] || {{ echo "Can't connect to server on '$host'" >&2; exit 1; }}
case "$s" in
  'SELECT VERSION()'*) cat $d/about ;;
  'SHOW SLAVE STATUS') cat $d/status 2>/dev/null || true ;;
  'START SLAVE SQL_THREAD'*) cat $d/status 2>/dev/null || true ;;
  *MASTER_GTID_WAIT*|'SELECT 0,'*) printf '%s\t%s\n' "$(cat $d/wait)" "$(cat $d/pos)" ;;
  *gtid_current_pos) cat $d/pos ;;
esac
"#,
                log = dir.join("log").display(),
                dir = dir.display()
            ),
        )
        .unwrap();
        std::process::Command::new("chmod")
            .args(["+x", &script.display().to_string()])
            .status()
            .unwrap();
        Client::new(&[script.display().to_string()], "worker.mysql_client")
    }

    fn server(dir: &std::path::Path, host: &str, replica: Option<&str>, pos: &str, ro: bool) {
        let d = dir.join(host);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("about"),
            format!("10.11.6-MariaDB\t{}\t1\n", u8::from(ro)),
        )
        .unwrap();
        if let Some(io) = replica {
            std::fs::write(
                d.join("status"),
                format!("Slave_IO_State\tGtid_IO_Pos\nWaiting\t{io}\n"),
            )
            .unwrap();
        }
        std::fs::write(d.join("pos"), format!("{pos}\n")).unwrap();
        std::fs::write(d.join("wait"), "0").unwrap();
    }

    fn s(i: &str, h: &str) -> Server {
        Server {
            instance: i.into(),
            host: h.into(),
        }
    }

    /// Promote i-2 (10.0.0.2), the other live backends `others` as
    /// (instance, host).
    async fn run(c: &Client, others: &[(&str, &str)]) -> Outcome {
        let others: Vec<Server> = others.iter().map(|(i, h)| s(i, h)).collect();
        promote(c, &s("i-2", "10.0.0.2"), &others, Duration::from_secs(1)).await
    }

    /// Whether any server was made writable.
    fn made_writable(dir: &std::path::Path) -> bool {
        log(dir).iter().any(|l| l.contains("read_only = OFF"))
    }

    fn log(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn the_most_advanced_candidate_is_drained_then_made_a_writable_semi_sync_primary() {
        let dir = tempfile::tempdir().unwrap();
        let c = fake(dir.path());
        server(dir.path(), "10.0.0.2", Some("0-1-10"), "0-1-10", true);
        server(dir.path(), "10.0.0.3", Some("0-1-9"), "0-1-9", true);
        let out = run(&c, &[("i-3", "10.0.0.3")]).await;
        let Outcome::Promoted {
            positions,
            left_out,
            ..
        } = out
        else {
            panic!("{out:?}")
        };
        assert_eq!(positions["i-2"], "0-1-10");
        assert!(left_out.is_empty());
        let log = log(dir.path());
        // Every replica waited for its own received position.
        assert!(
            log.iter()
                .any(|l| l.starts_with("10.0.0.3\tSELECT MASTER_GTID_WAIT('0-1-9', 1.000)")),
            "{log:?}"
        );
        let last = log.last().unwrap();
        assert!(last.starts_with("10.0.0.2\tSTOP SLAVE; RESET SLAVE ALL; SET GLOBAL rpl_semi_sync_master_enabled = ON"), "{last}");
        assert!(last.ends_with("SET GLOBAL read_only = OFF"), "{last}");
    }

    #[tokio::test]
    async fn a_candidate_behind_another_server_or_diverged_is_not_touched() {
        for (other_pos, why) in [
            ("0-1-11", "holds transactions the candidate lacks"),
            ("0-1-9,1-5-1", "diverged"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let c = fake(dir.path());
            server(dir.path(), "10.0.0.2", Some("0-1-10"), "0-1-10", true);
            server(dir.path(), "10.0.0.3", Some(other_pos), other_pos, true);
            let out = run(&c, &[("i-3", "10.0.0.3")]).await;
            let Outcome::LeftToPlaybook(reason) = out else {
                panic!("{out:?}")
            };
            assert!(reason.contains(why), "{reason}");
            assert!(!made_writable(dir.path()));
        }
    }

    #[tokio::test]
    async fn a_read_only_old_primary_counts_a_writable_one_stops_it_and_a_lagging_candidate_is_refused()
     {
        // A planned switchover: the old primary is read-only and ahead of
        // the candidate's drained position: the playbook catches up.
        let dir = tempfile::tempdir().unwrap();
        let c = fake(dir.path());
        server(dir.path(), "10.0.0.2", Some("0-1-10"), "0-1-10", true);
        server(dir.path(), "10.0.0.1", None, "0-1-12", true);
        let out = run(&c, &[("i-1", "10.0.0.1")]).await;
        assert!(
            matches!(&out, Outcome::LeftToPlaybook(r) if r.contains("i-1 holds")),
            "{out:?}"
        );
        // The same, caught up: promoted.
        server(dir.path(), "10.0.0.1", None, "0-1-10", true);
        let out = run(&c, &[("i-1", "10.0.0.1")]).await;
        assert!(matches!(out, Outcome::Promoted { .. }), "{out:?}");
        // Writable and replicating from nobody: not for this path.
        let dir = tempfile::tempdir().unwrap();
        let c = fake(dir.path());
        server(dir.path(), "10.0.0.2", Some("0-1-10"), "0-1-10", true);
        server(dir.path(), "10.0.0.1", None, "0-1-10", false);
        let out = run(&c, &[("i-1", "10.0.0.1")]).await;
        assert!(
            matches!(&out, Outcome::LeftToPlaybook(r) if r.contains("writable")),
            "{out:?}"
        );
        // A candidate that cannot apply its relay log in time.
        let dir = tempfile::tempdir().unwrap();
        let c = fake(dir.path());
        server(dir.path(), "10.0.0.2", Some("0-1-10"), "0-1-8", true);
        std::fs::write(dir.path().join("10.0.0.2/wait"), "-1").unwrap();
        let out = run(&c, &[]).await;
        assert!(
            matches!(&out, Outcome::LeftToPlaybook(r) if r.contains("did not apply its relay log")),
            "{out:?}"
        );
        assert!(!made_writable(dir.path()));
    }

    #[tokio::test]
    async fn without_a_pending_promotion_no_server_is_drained() {
        let dir = tempfile::tempdir().unwrap();
        let c = fake(dir.path());
        server(dir.path(), "10.0.0.2", None, "0-1-10", false);
        server(dir.path(), "10.0.0.3", Some("0-1-10"), "0-1-10", true);
        let out = run(&c, &[("i-3", "10.0.0.3")]).await;
        assert_eq!(out, Outcome::NotPending);
        let log = log(dir.path());
        assert!(
            !log.iter()
                .any(|l| l.contains("STOP") || l.contains("START")),
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_follower_is_left_out_and_a_hostile_position_is_never_spliced() {
        let dir = tempfile::tempdir().unwrap();
        let c = fake(dir.path());
        server(dir.path(), "10.0.0.2", Some("0-1-10"), "0-1-10", true);
        // 10.0.0.3 has no directory: every answer is empty.
        let out = run(&c, &[("i-3", "10.0.0.3")]).await;
        let Outcome::Promoted { left_out, .. } = out else {
            panic!("{out:?}")
        };
        assert_eq!(left_out.len(), 1, "{left_out:?}");
        let dir = tempfile::tempdir().unwrap();
        let c = fake(dir.path());
        server(
            dir.path(),
            "10.0.0.2",
            Some("0-1-10'); DROP TABLE t; --"),
            "0-1-10",
            true,
        );
        let out = run(&c, &[]).await;
        assert!(
            matches!(&out, Outcome::LeftToPlaybook(r) if r.contains("not a MariaDB GTID position")),
            "{out:?}"
        );
        assert!(!log(dir.path()).iter().any(|l| l.contains("DROP")));
    }
}
