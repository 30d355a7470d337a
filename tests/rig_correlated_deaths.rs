//! Rig scenarios of deaths that come together (issue 35): the hub with its
//! watcher, and the tail, which only ID 1 watches.
//!
//! `CHAINWATCH_CORRELATED_RUNS=n` repeats each n times (default 1, each in
//! a fresh fleet) and prints the times; the benchmark's figures come from
//! such a loop.

mod common;

use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options};
use common::{env_u64, rig_ready, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

fn be(id: u32) -> Slot {
    Slot::new(Role::Backend, id)
}

fn p(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64()
}

/// frontend1 (the hub) and frontend2, its only watcher, killed at once in
/// a chain of four. frontend3 judges frontend2 dead; its new identity would
/// connect through the dead hub, so it judges the hub first and takes its
/// place. Within 10 s a survivor is the hub with the overlay whole through
/// it; no survivor is fenced and no address is held twice.
#[tokio::test(flavor = "current_thread")]
async fn the_hub_and_its_watcher_die_together_and_a_survivor_is_the_hub() {
    if !rig_ready(false) {
        return;
    }
    let runs = env_u64("CHAINWATCH_CORRELATED_RUNS", 1).max(1);
    let mut times = Vec::new();
    for run in 0..runs {
        let mut f = Fleet::frontends(4).await;
        f.watch_holders();
        std::thread::sleep(Duration::from_millis(u64::from(
            std::process::id().wrapping_add(run as u32 * 131) % 1000,
        )));
        let died = Instant::now();
        f.kill(0);
        f.kill(1);
        let mut whole = None;
        while died.elapsed() < Duration::from_secs(30) && whole.is_none() {
            for hub in [2, 3] {
                let other = 5 - hub;
                if f.status(hub).is_some_and(|s| s["id"] == 1) && f.overlay_whole(hub, other) {
                    whole = Some((died.elapsed(), hub));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let Some((took, hub)) = whole else {
            panic!(
                "run {run}: no survivor is the hub with the overlay whole 30 s after the hub and frontend2 died:{}",
                f.recent_logs(40)
            );
        };
        assert!(
            took <= Duration::from_secs(10),
            "run {run}: the overlay was whole through a new hub after {:.2} s, more than 10 s:{}",
            took.as_secs_f64(),
            f.recent_logs(40)
        );
        // The fences named the dead only; the survivors run.
        let wrong = f.survivors_stopped(&[0, 1]);
        assert!(
            wrong.is_empty(),
            "run {run}: a survivor was stopped: {wrong:?}"
        );
        for i in [2, 3] {
            assert!(!f.powered_off(i), "run {run}: survivor {i} powered off");
        }
        assert!(
            f.double_holders().is_empty(),
            "run {run}: {:?}",
            f.double_holders()
        );
        // The new hub told the other survivor to reconnect now, instead of
        // leaving its client to wait out a handshake sent to the dead hub
        // (which acts on it unless its client had reconnected already).
        assert!(
            f.log(hub).contains("members told that the hub is here now"),
            "run {run}: node {hub} sent no hub nudge"
        );
        eprintln!(
            "run {run}: hub and frontend2 killed -> node {hub} is the hub, the overlay whole: {:.2} s",
            took.as_secs_f64()
        );
        times.push(took);
    }
    times.sort();
    eprintln!(
        "hub and its watcher, {} runs: p50 {:.2} s, p95 {:.2} s",
        times.len(),
        p(&times, 0.5),
        p(&times, 0.95)
    );
}

/// The tail of a chain of three dies (frontends, then backends): ID 1
/// watches it, fences it within 5 s, and an alert names it; `fleet` shows
/// the chain one shorter.
#[tokio::test(flavor = "current_thread")]
async fn a_dead_tail_is_fenced_and_alerted() {
    if !rig_ready(false) {
        return;
    }
    let runs = env_u64("CHAINWATCH_CORRELATED_RUNS", 1).max(1);
    let mut times = Vec::new();
    for run in 0..runs {
        for role in [Role::Frontend, Role::Backend] {
            let slots: Vec<Slot> = match role {
                Role::Frontend => vec![fe(1), fe(2), fe(3)],
                Role::Backend => vec![fe(1), be(1), be(2), be(3)],
            };
            let tail = slots.len() - 1;
            let watcher = slots.len() - 3; // ID 1 of the role
            let mut f = Fleet::with(
                &slots,
                Options {
                    hypervisor: true,
                    alerts: true,
                    ..Options::default()
                },
            )
            .await;
            f.start_all().await;
            // ID 1 has learnt its tail (it asks the registry every 2 s) and
            // heard it answer on the overlay (a round after its own rounds
            // stopped being degraded): a tail never heard there may still
            // be booting, and has the startup grace.
            let steady = || {
                f.status(watcher).filter(|s| {
                    s["peer"] == slots[tail].common_name()
                        && s["degraded"] == false
                        && s["misses"] == 0
                        && s["last_rtt_ms"].is_number()
                })
            };
            wait_for("ID 1 watching the tail", Duration::from_secs(20), steady);
            std::thread::sleep(Duration::from_millis(1500));
            wait_for("ID 1 hearing the tail", Duration::from_secs(20), steady);
            let died_ms = chainwatch::clock::unix_ms(std::time::SystemTime::now());
            f.kill(tail);
            let tail_instance = f.nodes[tail].instance.clone();
            let stopped = wait_for("the tail fenced", Duration::from_secs(30), || {
                f.proxy
                    .stops()
                    .into_iter()
                    .find(|s| s["instances"] == serde_json::json!([tail_instance]))
            });
            let fenced_after =
                Duration::from_millis(stopped["at_ms"].as_u64().unwrap().saturating_sub(died_ms));
            assert!(
                fenced_after <= Duration::from_secs(5),
                "run {run}: the {role} tail fenced {:.2} s after it died, more than 5 s:{}",
                fenced_after.as_secs_f64(),
                f.recent_logs(30)
            );
            let alert = f.alert(watcher, "tail_lost", Duration::from_secs(10));
            assert_eq!(alert["slot"], slots[tail].common_name(), "{alert}");
            // No survivor took the tail's ID, and `fleet` shows the chain
            // one shorter once EC2's reads show the fence (on AWS they lag
            // its writes by seconds).
            let holding = |v: &serde_json::Value| -> Vec<u64> {
                let mut ids: Vec<u64> = v["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|m| {
                        m["role"] == role.as_str()
                            && m["state"] == "running"
                            && m["fenced"] == false
                    })
                    .filter_map(|m| m["id"].as_u64())
                    .collect();
                ids.sort_unstable();
                ids
            };
            let fleet = || {
                let o = f.cli_in(watcher, &["fleet", "--json"]);
                serde_json::from_slice::<serde_json::Value>(&o.stdout)
                    .unwrap_or_else(|_| panic!("fleet --json: {}", common::output_text(&o)))
            };
            let shown = Instant::now();
            let mut v = fleet();
            while holding(&v) != vec![1, 2] && shown.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(500));
                v = fleet();
            }
            assert_eq!(holding(&v), vec![1, 2], "run {run}: {v}");
            eprintln!(
                "run {run}: the {role} tail killed -> fenced {:.2} s later, tail_lost alerted",
                fenced_after.as_secs_f64()
            );
            times.push(fenced_after);
        }
    }
    times.sort();
    eprintln!(
        "tail death, {} runs: fenced p50 {:.2} s, p95 {:.2} s",
        times.len(),
        p(&times, 0.5),
        p(&times, 0.95)
    );
}

/// backend1 (the primary) and backend2, its first replica and watcher,
/// killed together under writes. backend3 takes backend2 over, and (its
/// misses counted while it did) backend1 one round later: it is the
/// writable backend1 within 6 s, with no `ack` and no other manual step.
/// Acknowledged writes are all on it, or the missing ones are named in the
/// worker's alert.
#[tokio::test(flavor = "current_thread")]
async fn the_primary_and_its_first_replica_die_together() {
    if !rig_ready(true) {
        return;
    }
    let runs = env_u64("CHAINWATCH_CORRELATED_RUNS", 1).max(1);
    let mut times = Vec::new();
    for run in 0..runs {
        let f = Fleet::mysql_fleet(Options::default()).await;
        let writer = f.start_writer();
        std::thread::sleep(Duration::from_millis(1500));
        let died = Instant::now();
        f.kill(2);
        f.kill(3);
        let writable = common::time_until(Duration::from_secs(60), || {
            f.status(4).is_some_and(|s| s["id"] == 1)
                && f.sql(4, "SELECT @@read_only").ok().as_deref() == Some("0")
        })
        .map(|_| died.elapsed());
        std::thread::sleep(Duration::from_secs(2));
        let acked = writer.finish();
        let writable = writable.unwrap_or_else(|| {
            panic!(
                "run {run}: backend3 not the writable backend1 60 s after backend1 and backend2 died:{}\n{}",
                f.recent_logs(30),
                f.worker_log()
            )
        });
        let lost = f.lost_writes(4, &acked);
        let log = f.worker_log();
        // backend2 could have acknowledged writes backend3 never received:
        // the worker says so in every run, naming backend2 and the GTIDs
        // beyond the new primary's position as a replica. (Whether a write
        // was in fact lost depends on the phase of the kill.)
        let alert = f.worker_alert("writes_may_be_missing", Duration::from_secs(20));
        let detail = alert["detail"].as_str().unwrap_or_default().to_string();
        let position = f
            .sql(4, "SELECT @@GLOBAL.gtid_slave_pos")
            .unwrap_or_default();
        let died = detail
            .split(" died with the primary")
            .next()
            .unwrap_or_default();
        assert!(
            died.ends_with(&f.nodes[3].instance)
                && !died.contains(&f.nodes[4].instance)
                && detail.contains(&format!("beyond {}", position.trim())),
            "run {run}: the alert does not name backend2 ({}) and the GTIDs beyond backend3's position {position:?} ({} acknowledged writes missing: {lost:?}): {alert}\n{log}",
            f.nodes[3].instance,
            lost.len()
        );
        assert!(
            writable <= Duration::from_secs(6),
            "run {run}: backend3 was the writable backend1 after {:.2} s, more than 6 s:{}\n{log}",
            writable.as_secs_f64(),
            f.recent_logs(30)
        );
        eprintln!(
            "run {run}: backend1 and backend2 killed under writes -> backend3 the writable backend1 {:.2} s later; {} acknowledged, {} missing",
            writable.as_secs_f64(),
            acked.len(),
            lost.len()
        );
        times.push(writable);
    }
    times.sort();
    eprintln!(
        "primary and first replica, {} runs: p50 {:.2} s, p95 {:.2} s",
        times.len(),
        p(&times, 0.5),
        p(&times, 0.95)
    );
}

/// One zone lost: in a fleet of three frontends and three backends,
/// frontend1 (the hub), frontend2 and backend1 are killed together under
/// writes from frontend3. Within 15 s frontend3 is the hub with the overlay
/// whole through it, and the writable primary answers as
/// `backend1.internal` (the former backend2); no acknowledged write is
/// lost.
#[tokio::test(flavor = "current_thread")]
async fn one_zone_lost_under_writes() {
    if !rig_ready(true) {
        return;
    }
    let runs = env_u64("CHAINWATCH_CORRELATED_RUNS", 1).max(1);
    let mut times = Vec::new();
    for run in 0..runs {
        let f = Fleet::mysql_fleet_of(3, Options::default()).await;
        // Nodes: frontend1..3 are 0..2, backend1..3 are 3..5.
        let (fe3, be2, be3) = (2, 4, 5);
        let writer = f.start_writer_on(fe3);
        std::thread::sleep(Duration::from_millis(
            1000 + u64::from(std::process::id().wrapping_add(run as u32 * 131) % 1000),
        ));
        let died = Instant::now();
        for i in [0, 1, 3] {
            f.kill(i);
        }
        let healed = common::time_until(Duration::from_secs(60), || {
            let hub = f.status(fe3).is_some_and(|s| s["id"] == 1)
                && f.overlay_whole(fe3, be2)
                && f.overlay_whole(fe3, be3);
            // The answer's last line (the first names the column); asked
            // only once the rest holds (it waits up to 2 s to connect).
            hub && f.status(be2).is_some_and(|s| s["id"] == 1) && {
                let sql = f.client_sql(fe3, "backend1.internal", "SELECT @@read_only");
                String::from_utf8_lossy(&sql.stdout).lines().last() == Some("0")
            }
        })
        .map(|_| died.elapsed());
        std::thread::sleep(Duration::from_secs(2));
        let acked = writer.finish();
        let healed = healed.unwrap_or_else(|| {
            panic!(
                "run {run}: 60 s after frontend1, frontend2 and backend1 died, frontend3 is not the hub with the overlay whole, or backend1.internal is not the writable former backend2:{}\n{}",
                f.recent_logs(30),
                f.worker_log()
            )
        });
        let lost = f.lost_writes(be2, &acked);
        assert!(
            lost.is_empty(),
            "run {run}: {} acknowledged writes missing on the new primary: {lost:?}\n{}",
            lost.len(),
            f.worker_log()
        );
        assert!(
            healed <= Duration::from_secs(15),
            "run {run}: healed after {:.2} s, more than 15 s:{}",
            healed.as_secs_f64(),
            f.recent_logs(30)
        );
        // The fences named the dead only.
        let wrong = f.survivors_stopped(&[0, 1, 3]);
        assert!(
            wrong.is_empty(),
            "run {run}: a survivor was stopped: {wrong:?}"
        );
        eprintln!(
            "run {run}: one zone lost (frontend1, frontend2, backend1) under writes -> frontend3 the hub and the former backend2 the writable backend1 {:.2} s later; {} acknowledged, 0 missing",
            healed.as_secs_f64(),
            acked.len()
        );
        times.push(healed);
    }
    times.sort();
    eprintln!(
        "one zone lost, {} runs: p50 {:.2} s, p95 {:.2} s",
        times.len(),
        p(&times, 0.5),
        p(&times, 0.95)
    );
}
