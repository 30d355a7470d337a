//! Failover benchmarks in the rig (run as root: `cargo bench --bench
//! failover`; `BENCH_RUNS` faults per contender, default 10;
//! `BENCH_OLD_RUNS` faults for the power fence and for the old fence,
//! default 3; `BENCH_LOSS_SECS`
//! of 30 % loss, default 300). The rig's EC2 stops as slowly as AWS's
//! (`CHAINWATCH_RIG_STOP_MS`, `CHAINWATCH_RIG_STOP_SKIP_OS_MS`). The same
//! fault — the peer's instance dies: processes killed, link down — many
//! times, each at a uniformly random phase of the probe cycle, for:
//!
//! * chainwatch with its defaults (frontend3 watching frontend2; the fabric
//!   fence: takeover once the old holder is tagged `fenced`, EC2 stopping
//!   it in the background);
//! * chainwatch with the power fence only (`aws.fabric_fence = false`:
//!   `SkipOsShutdown`, takeover once EC2 reports `stopped`);
//! * chainwatch with the fence of 0.1.0 (`Force` without `SkipOsShutdown`,
//!   so EC2 first tries a graceful shutdown, and waiting for `stopped`),
//!   for comparison;
//! * keepalived, VRRP unicast between two namespaces, advert_int 1 and
//!   VRRPv3's fastest, 0.01;
//! * the original chain script's algorithm (bench/baseline_chain.sh).
//!
//! Reported: p50, p95 and p99 of (a) death → death declared (the event's
//! `detected_ms`), (b) death → the new holder answering on the address
//! (ping's time stamp, an echo every 20 ms), (c) → the event delivered by
//! RabbitMQ to a consumer and acknowledged by CloudWatch Logs (chainwatch
//! only); resident memory and CPU while idle-probing; false takeovers under
//! 30 % random loss on the peer's link; jitter (`BENCH_JITTER_SECS`,
//! default 120): frontend2's OpenVPN paused for 200 ms at random, so every
//! packet to and from it waits; fences counted; the hub's OpenVPN hung (SIGSTOP) →
//! every member's overlay back (`BENCH_HANG_RUNS`, default 5; median and
//! worst); one-way loss (`BENCH_ONEWAY_SECS`, default 600): frontend3
//! drops everything from frontend2, fences counted; then frontend2 dies
//! with the fault in place (`BENCH_RUNS` times, a fresh rig each): death →
//! declared and → new holder answering, through the second opinion.
//!
//! The hub's OpenVPN and its daemon hung together (`BENCH_HANG_RUNS`):
//! frontend2 holds frontend1 and the overlay is back.
//!
//! mysqld hung on the primary's holder (`BENCH_HANG_RUNS`, backends with
//! `[service] check = "mysql"`): backend1's mariadbd SIGSTOPped at a random
//! phase → backend2 promoted, and → a write through `backend1.internal`
//! accepted (the worker's Ansible included).
//!
//! Failover under writes (`BENCH_WRITE_RUNS` per variant, default 20;
//! `BENCH_WRITE_VARIANTS`: `up`, `lag`, `playbook`, comma-separated;
//! default `up,lag`):
//! a client on frontend2 writes through `backend1.internal` as an
//! application user (no SUPER), autocommit, while backend1 dies at a random
//! phase; once as is, once with the candidate's SQL thread stopped 3 s
//! before the death; `playbook`: up to date, the worker without
//! `worker.mysql_client` (the playbook alone promotes), the before of the
//! direct promotion. Semi-synchronous replication. Reported: acknowledged
//! writes lost (per run and in all), and the write outage (death → the next
//! accepted write), p50 / p95 / p99.
//!
//! Planned switchover of backend1 under writes (`BENCH_HANG_RUNS` runs,
//! `bswitchover`): the same writer; `chainwatch switchover --role backend
//! --to 2` on backend1's holder at a random phase; acknowledged writes
//! lost, the longest write pause from the request, StopInstances calls.
//!
//! `BENCH_ONLY` (comma-separated: `fence`, `power`, `old`, `keepalived`,
//! `baseline`, `hang`, `hubsick`, `mysqld`, `writes`, `switchover`,
//! `bswitchover`, `idle`, `oneway`, `jitter`)
//! runs a subset; default all.
//!
//! Planned switchover (`BENCH_HANG_RUNS` runs): `chainwatch switchover` on
//! the hub of a 3-frontend fleet, at a random phase of its rounds; seconds
//! from the request until frontend2 holds frontend1, and until every
//! member reaches the new hub and the new hub reaches it on the overlay, as
//! the rig sees it while the command runs; the command's own reported
//! time; StopInstances calls.
//!
//! `CHAINWATCH_BIN` runs another daemon binary than the one cargo built
//! with the bench (a bench built quickly in the dev profile can drive the
//! release daemon); `BENCH_VERBOSE` prints frontend3's log after each
//! chainwatch fault.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options};
use common::{Proc, sh, sh_quiet, wait_for};

/// Random loss on the peer's link in the false-takeover soak, both ways.
const LOSS_PCT: u32 = 30;

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

fn stats(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "{:.2} s / {:.2} s / {:.2} s",
        v[v.len() / 2],
        at(0.95),
        at(0.99)
    )
}

/// Median and worst of `v` (NaN when empty).
fn median_worst(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    (
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

/// RSS (kB), CPU (% of one core) over `secs`, and the part of the RSS
/// that is anonymous memory (heap, stacks; the rest is the binary's and
/// the libraries' pages), kB: summed over `pids`, the processes of one
/// program (keepalived runs as a parent and a VRRP child).
fn footprint(pids: &[u32], secs: u64) -> (u64, f64, u64) {
    let cpu = |pid: u32| -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let f: Vec<&str> = s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let t: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
        t / 100.0
    };
    let c0: f64 = pids.iter().map(|p| cpu(*p)).sum();
    std::thread::sleep(Duration::from_secs(secs));
    let c1: f64 = pids.iter().map(|p| cpu(*p)).sum();
    let field = |pid: u32, file: &str, key: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|x| x.parse().ok()))
            .unwrap_or(0)
    };
    (
        pids.iter().map(|p| field(*p, "status", "VmRSS:")).sum(),
        100.0 * (c1 - c0) / secs as f64,
        pids.iter()
            .map(|p| field(*p, "smaps_rollup", "Anonymous:"))
            .sum(),
    )
}

/// Every process named `comm` in namespace `ns`.
fn pids_in(ns: &str, comm: &str) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// Fleets in which a takeover happened before the fault was injected.
static TAKEOVERS_BEFORE_THE_FAULT: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// One fault's timings, seconds after the death.
struct Sample {
    declared: f64,
    holding: f64,
    /// Both deliveries of the transition done (the later of the two).
    confirmed: Option<f64>,
    /// RabbitMQ delivered the event to a consumer bound to the exchange.
    delivered: Option<f64>,
    /// CloudWatch Logs acknowledged the `PutLogEvents` that carried it.
    logged: Option<f64>,
    /// The fence's StopInstances → EC2 (as the daemons see it) reports the
    /// old holder `stopped`, and whether it was seen `stopping` in between.
    fence_to_stopped: Option<f64>,
    saw_stopping: bool,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// How the contender fences.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fence {
    /// The defaults: the fabric fence.
    Fabric,
    /// `aws.fabric_fence = false`: wait for `stopped`.
    Power,
    /// 0.1.0's: no `SkipOsShutdown`, wait for `stopped`.
    Old,
}

/// Seconds from `t0_ms` (Unix ms) to the first answer of `addr` to an
/// echo sent every 20 ms from namespace `ns` (ping's own time stamp of
/// the reply), within 150 s.
fn first_answer(ns: &str, addr: std::net::Ipv4Addr, t0_ms: u64) -> Option<f64> {
    use std::io::BufRead;
    let mut child = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-D", "-i", "0.02", "-w", "150",
        ])
        .arg(addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let out = child.stdout.take()?;
    let at = std::io::BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("bytes from"))
        .and_then(|l| {
            let stamp = l.strip_prefix('[')?.split(']').next()?;
            stamp.parse::<f64>().ok()
        });
    let _ = child.kill();
    let _ = child.wait();
    at.map(|secs| secs - t0_ms as f64 / 1000.0)
}

/// A consumer of the transitions published to the events' exchange, on a
/// thread of its own: the instant each one is delivered to it.
fn listen(url: String) -> std::sync::mpsc::Receiver<(Instant, Vec<u8>)> {
    use futures_util::StreamExt;
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let conn = lapin::Connection::connect(&url, Default::default())
                .await
                .unwrap();
            let ch = conn.create_channel().await.unwrap();
            // As the daemons declare it (idempotent), whoever comes first.
            let topology = chainwatch::shell::broker::Topology::from_config(
                &chainwatch::config::AnnounceConfig::default(),
            );
            topology.declare(&ch).await.unwrap();
            let q = ch
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            ch.queue_bind(
                q.name().clone(),
                topology.exchange.as_str().into(),
                "*.takeover".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            let mut c = ch
                .basic_consume(
                    q.name().clone(),
                    "bench".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            let _ = ready_tx.send(());
            while let Some(Ok(d)) = c.next().await {
                if tx.send((Instant::now(), d.data)).is_err() {
                    break;
                }
            }
        });
    });
    ready.recv().expect("the bench's consumer is bound");
    rx
}

async fn chainwatch_once(fence: Fence) -> Sample {
    let mut f = Fleet::with(
        &[fe(1), fe(2), fe(3)],
        Options {
            rabbit: true,
            hypervisor: true,
            power_fence_only: fence != Fence::Fabric,
            ..Options::default()
        },
    )
    .await;
    f.start_all().await;
    if fence == Fence::Old {
        f.proxy.mode("graceful");
    }
    let addr = f.layout.overlay_addr(fe(2));
    let deliveries = listen(f.rabbit.as_ref().expect("the rabbit option").url());
    // A fleet in its steady state (frontend3's first rounds after the
    // overlay came up may still be on the API's pace), then a uniformly
    // random phase of the probe cycle (250 ms rounds on the overlay; four
    // of them).
    std::thread::sleep(Duration::from_millis(3000 + rand::random_range(0..1000)));
    // A takeover before the fault is a false one: said loudly, with the
    // logs, counted, and the run is no sample.
    let early: Vec<String> = deliveries
        .try_iter()
        .map(|(_, body)| String::from_utf8_lossy(&body).into_owned())
        .collect();
    if !early.is_empty() {
        TAKEOVERS_BEFORE_THE_FAULT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        eprintln!(
            "FALSE TAKEOVER: {} event(s) before the fault: {early:?}\n{}",
            early.len(),
            f.recent_logs(400)
        );
        return Sample {
            declared: f64::NAN,
            holding: f64::NAN,
            confirmed: None,
            delivered: None,
            logged: None,
            fence_to_stopped: None,
            saw_stopping: false,
        };
    }
    let t0 = Instant::now();
    let t0_ms = unix_ms();
    f.kill(1);
    // The new holder's first answer, from frontend1, pinged back to back
    // on a thread of its own (the old holder's processes and link are
    // gone: any answer is the new holder's).
    let holding = {
        let ns = f.nodes[0].ns.clone();
        let pinger = std::thread::spawn(move || first_answer(&ns, addr, t0_ms));
        let (mut declared, mut delivered, mut logged) = (None, None, None);
        let (mut stopped_ms, mut saw_stopping) = (None, false);
        let successor = f.nodes[2].instance.clone();
        while t0.elapsed() < Duration::from_secs(150)
            && (!pinger.is_finished()
                || delivered.is_none()
                || logged.is_none()
                || stopped_ms.is_none())
        {
            if stopped_ms.is_none() {
                match f.instance(1).await.0.as_str() {
                    "stopping" => saw_stopping = true,
                    "stopped" => stopped_ms = Some(unix_ms()),
                    _ => {}
                }
            }
            // Declared: the event's own time stamp (the core's `declared_at`).
            while let Ok((at, body)) = deliveries.try_recv() {
                let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if event["instance_id"] == successor.as_str() && delivered.is_none() {
                    delivered = Some(at.duration_since(t0).as_secs_f64());
                    declared = event["timings"]["detected_ms"]
                        .as_u64()
                        .map(|ms| ms.saturating_sub(t0_ms) as f64 / 1000.0);
                }
            }
            if logged.is_none() {
                logged = f
                    .proxy
                    .log_puts()
                    .iter()
                    .filter(|p| p["body"].as_str().is_some_and(|b| b.contains(&successor)))
                    .filter_map(|p| p["at_ms"].as_u64())
                    .find(|&at| at >= t0_ms)
                    .map(|at| (at - t0_ms) as f64 / 1000.0);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let holding = pinger.join().unwrap();
        (
            declared,
            holding,
            delivered,
            logged,
            stopped_ms,
            saw_stopping,
        )
    };
    let (declared, holding, delivered, logged, stopped_ms, saw_stopping) = holding;
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("death at {t0_ms} ms; frontend3's log:\n{}", f.log(2));
    }
    let fence_ms = f
        .proxy
        .stops()
        .iter()
        .find(|s| s["instances"][0] == f.nodes[1].instance.as_str())
        .and_then(|s| s["at_ms"].as_u64());
    Sample {
        declared: declared.unwrap_or(f64::NAN),
        holding: holding.unwrap_or(f64::NAN),
        confirmed: delivered.zip(logged).map(|(d, l)| d.max(l)),
        delivered,
        logged,
        fence_to_stopped: fence_ms
            .zip(stopped_ms)
            .map(|(a, b)| b.saturating_sub(a) as f64 / 1000.0),
        saw_stopping,
    }
}

/// Four frontends, frontend3 deaf to frontend2 (a one-way fault), for
/// `secs`: (fences and takeovers, second opinions that cleared frontend2,
/// packets the fault dropped).
async fn one_way_soak(secs: u64) -> (usize, u64, u64) {
    let f = Fleet::frontends(4).await;
    f.one_way(2, fe(2));
    std::thread::sleep(Duration::from_secs(secs));
    let vouched = f
        .status(2)
        .map(|s| s["members"]["vouched"].as_u64().unwrap_or(0))
        .unwrap_or(0);
    (f.takeovers().len(), vouched, f.one_way_drops(2))
}

/// Three frontends; frontend2's OpenVPN is paused (SIGSTOP) for 200 ms
/// every 0.3 to 1.5 s, at random, for `secs`: everything on frontend2's
/// overlay path waits in its tun queue for that long, as in a burst of
/// delay. (bursts, fences, the longest streak of misses frontend3 logged,
/// second opinions that cleared frontend2).
async fn jitter_soak(secs: u64) -> (u32, usize, u64, u64) {
    let f = Fleet::frontends(3).await;
    let vpn = common::pid_in(&f.nodes[1].ns, "openvpn").expect("frontend2's openvpn");
    let start = Instant::now();
    let mut bursts = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(rand::random_range(300..1500)));
        sh(&format!("kill -STOP {vpn}"));
        std::thread::sleep(Duration::from_millis(200));
        sh(&format!("kill -CONT {vpn}"));
        bursts += 1;
    }
    std::thread::sleep(Duration::from_secs(2));
    // The longest streak frontend3 logged ("... miss N of 3").
    let most = f
        .log(2)
        .lines()
        .filter_map(|l| {
            l.split("miss ")
                .nth(1)?
                .split(" of")
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let vouched = f
        .status(2)
        .map(|s| s["members"]["vouched"].as_u64().unwrap_or(0))
        .unwrap_or(0);
    (bursts, f.proxy.stops().len(), most, vouched)
}

/// Four frontends, frontend3 deaf to frontend2 for a few seconds, then
/// frontend2 dies at a random phase with the fault in place: (death →
/// declared, death → frontend2's address answers again).
async fn one_way_death_once() -> (f64, f64) {
    let f = Fleet::frontends(4).await;
    f.one_way(2, fe(2));
    let addr = f.layout.overlay_addr(fe(2));
    std::thread::sleep(Duration::from_millis(5000 + rand::random_range(0..1000)));
    let t0 = Instant::now();
    f.kill(1);
    let (mut declared, mut holding) = (None, None);
    while t0.elapsed() < Duration::from_secs(60) && holding.is_none() {
        if declared.is_none()
            && let Some(s) = f.status(2)
            && (s["phase"] != "watching" || s["id"] == 2)
        {
            declared = Some(t0.elapsed().as_secs_f64());
        }
        if declared.is_some() && f.ping(0, addr, 200) {
            holding = Some(t0.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (declared.unwrap_or(f64::NAN), holding.unwrap_or(f64::NAN))
}

/// The hub's OpenVPN and its daemon are SIGSTOPped at a random phase:
/// seconds until frontend2 holds frontend1 and the overlay is back both
/// ways between it and frontend3.
async fn hub_sick_once() -> f64 {
    let f = Fleet::frontends(3).await;
    let vpn = common::pid_in(&f.nodes[0].ns, "openvpn").expect("the hub's openvpn");
    let daemon = common::pid_in(&f.nodes[0].ns, "chainwatch").expect("the hub's daemon");
    std::thread::sleep(Duration::from_millis(rand::random_range(0..1000)));
    let t0 = Instant::now();
    sh(&format!("kill -STOP {daemon} {vpn}"));
    let mut back = f64::NAN;
    while t0.elapsed() < Duration::from_secs(90) {
        if f.status(1).is_some_and(|s| s["id"] == 1) && f.overlay_whole(1, 2) {
            back = t0.elapsed().as_secs_f64();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sh_quiet(&format!("kill -KILL {daemon} {vpn}"));
    back
}

/// One planned switchover of the hub: (request → frontend2 holds
/// frontend1, → the overlay whole through it as the rig sees it, the
/// command's reported time, StopInstances calls).
async fn switchover_once() -> (f64, f64, f64, usize) {
    let f = Fleet::frontends(3).await;
    wait_for("the overlay whole", Duration::from_secs(60), || {
        (f.overlay_whole(0, 1) && f.overlay_whole(0, 2)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(rand::random_range(0..1000)));
    let t0 = Instant::now();
    let (mut held, mut whole) = (f64::NAN, f64::NAN);
    let mut command = f.cli_command(0, &["switchover"]);
    let out = std::thread::scope(|scope| {
        let cmd = scope.spawn(move || command.output().unwrap());
        while t0.elapsed() < Duration::from_secs(120) && whole.is_nan() {
            if held.is_nan() && f.status(1).is_some_and(|s| s["id"] == 1) {
                held = t0.elapsed().as_secs_f64();
            }
            if !held.is_nan() && f.overlay_whole(1, 0) && f.overlay_whole(1, 2) {
                whole = t0.elapsed().as_secs_f64();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cmd.join().unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reported = stdout
        .lines()
        .find(|l| l.contains("the overlay is whole"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    (held, whole, reported, f.proxy.stops().len())
}

/// backend1's mariadbd SIGSTOPped at a random phase: seconds to backend2
/// promoted and to a write through `backend1.internal` accepted.
async fn mysqld_hung_once() -> (f64, f64) {
    let f = Fleet::mysql_fleet(Options {
        mysql_check: true,
        ..Options::default()
    })
    .await;
    let h = f.hang_primary_mysqld();
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    (secs(h.promoted), secs(h.accepted))
}

/// One failover of backend1 under writes.
struct WriteRun {
    /// Writes acknowledged to the client, before and after the death.
    acked: usize,
    /// Acknowledged writes the new primary lacks.
    lost: usize,
    /// The candidate's missing rows just before the death (the lag).
    behind: usize,
    /// Death → the next write accepted through backend1.internal.
    outage: f64,
}

/// A client on frontend2 writes continuously through `backend1.internal`
/// as an application user (INSERT and SELECT only: no SUPER, no READ ONLY
/// ADMIN), autocommit, one connection per write (given up after 1 s), while
/// backend1 dies at a random phase; with `lag`, the promotion candidate's
/// SQL thread stops 3 s before the death, so its relay log holds 3 s of
/// acknowledged writes it has not applied. Semi-synchronous replication,
/// as docs/src/mysql.md recommends.
async fn writes_once(lag: bool, playbook_promotion_only: bool) -> WriteRun {
    let f = Fleet::mysql_fleet(Options {
        semi_sync: true,
        playbook_promotion_only,
        ..Options::default()
    })
    .await;
    let writer = f.start_writer();
    std::thread::sleep(Duration::from_millis(2000));
    if lag {
        f.sql(3, "STOP SLAVE SQL_THREAD").unwrap();
        std::thread::sleep(Duration::from_millis(3000));
    }
    std::thread::sleep(Duration::from_millis(rand::random_range(0..1000)));
    let behind = f
        .sql(3, "SELECT COUNT(*) FROM app.w")
        .ok()
        .and_then(|n| n.parse::<usize>().ok());
    let died = Instant::now();
    f.kill(2);
    // Every process of backend1's namespace is dead and its link down: a
    // write sent from now on can only be accepted by the new primary.
    let dead = Instant::now();
    // Until backend2's server is writable; the writer's first success
    // after the death ends the outage (measured on its own clock below).
    wait_for("backend2 promoted", Duration::from_secs(120), || {
        (f.sql(3, "SELECT @@read_only").ok()? == "0").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let acked = writer.finish();
    let outage = acked
        .iter()
        .find(|a| a.sent >= dead)
        .map_or(f64::NAN, |a| a.at.duration_since(died).as_secs_f64());
    let before = acked.iter().filter(|a| a.at <= died).count();
    WriteRun {
        acked: acked.len(),
        lost: f.lost_writes(3, &acked).len(),
        behind: behind.map_or(0, |n| before.saturating_sub(n)),
        outage,
    }
}

/// A planned switchover of backend1 under writes, at a random phase:
/// (acknowledged writes, lost, the longest write pause in seconds,
/// StopInstances calls). `chainwatch switchover --role backend --to 2` on
/// backend1's holder; measured until the new primary is writable, the old
/// one replicates from it, and 2 s more.
async fn backend_switchover_once() -> (usize, usize, f64, usize) {
    let f = Fleet::mysql_fleet(Options {
        semi_sync: true,
        ..Options::default()
    })
    .await;
    let writer = f.start_writer();
    std::thread::sleep(Duration::from_millis(2000 + rand::random_range(0..1000)));
    let asked = Instant::now();
    let out = f.cli_in(2, &["switchover", "--role", "backend", "--to", "2"]);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        eprintln!(
            "switchover failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    f.wait_writable_backend1(3, 120);
    f.wait_replicating(2, 120);
    std::thread::sleep(Duration::from_secs(2));
    let acked = writer.finish();
    let pause = common::fleet::longest_pause(&acked, asked).as_secs_f64();
    (
        acked.len(),
        f.lost_writes(3, &acked).len(),
        pause,
        f.proxy.stops().len(),
    )
}

/// Whether `BENCH_ONLY` selects `section` (unset: everything).
fn only(section: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(v) => v.split(',').any(|s| s.trim() == section),
        Err(_) => true,
    }
}

/// The hub's OpenVPN is SIGSTOPped at a random phase of its health check:
/// seconds until every member reaches the hub and the others again over
/// the overlay.
async fn hub_hang_once() -> f64 {
    let f = Fleet::frontends(3).await;
    let hub = f.layout.overlay_addr(fe(1));
    let paths = [
        (1, hub),
        (2, hub),
        (1, f.layout.overlay_addr(fe(3))),
        (2, f.layout.overlay_addr(fe(2))),
    ];
    let pid = common::pid_in(&f.nodes[0].ns, "openvpn").expect("the hub's openvpn");
    std::thread::sleep(Duration::from_millis(rand::random_range(0..1000)));
    let t0 = Instant::now();
    sh(&format!("kill -STOP {pid}"));
    std::thread::sleep(Duration::from_millis(1500));
    let mut back = [false; 4];
    while !back.iter().all(|b| *b) && t0.elapsed() < Duration::from_secs(120) {
        for (k, (from, to)) in paths.iter().enumerate() {
            back[k] = back[k] || f.ping(*from, *to, 300);
        }
    }
    let took = t0.elapsed().as_secs_f64();
    sh_quiet(&format!("kill -KILL {pid}"));
    if back.iter().all(|b| *b) && f.takeovers().is_empty() {
        took
    } else {
        f64::NAN
    }
}

/// Two namespaces on a bridge for keepalived or the baseline; a third for
/// the witness. Removed on drop.
struct Pair {
    prefix: String,
    net: u8,
}

impl Pair {
    fn new(tag: &str, k: usize) -> Pair {
        let prefix = format!("cb{}{tag}{k}", std::process::id() % 1000);
        let net = 150 + (k as u8 % 50) + if tag == "k" { 0 } else { 50 };
        sh_quiet(&format!("ip link del {prefix}br"));
        sh(&format!(
            "ip link add {prefix}br type bridge && ip link set {prefix}br up"
        ));
        for (x, host) in [("a", 1), ("b", 2), ("w", 3)] {
            let ns = format!("{prefix}{x}");
            sh_quiet(&format!("ip netns del {ns}"));
            sh(&format!("ip netns add {ns}"));
            sh(&format!("ip link add {ns}v type veth peer name {ns}h"));
            sh(&format!(
                "ip link set {ns}v netns {ns} && ip link set {ns}h master {prefix}br up"
            ));
            sh(&format!(
                "ip -n {ns} addr add 10.88.{net}.{host}/24 dev {ns}v && ip -n {ns} link set {ns}v up && ip -n {ns} link set lo up"
            ));
        }
        Pair { prefix, net }
    }
    fn ns(&self, x: &str) -> String {
        format!("{}{x}", self.prefix)
    }
    fn ip(&self, host: u8) -> String {
        format!("10.88.{}.{host}", self.net)
    }
    fn kill(&self, x: &str) {
        let ns = self.ns(x);
        sh_quiet(&format!("ip netns pids {ns} | xargs -r kill -9"));
        sh_quiet(&format!("ip -n {ns} link set {ns}v down"));
    }
    fn holds(&self, x: &str, ip: &str) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.ns(x), "-4", "-o", "addr", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {ip}/"))
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for x in ["a", "b", "w"] {
            let ns = self.ns(x);
            sh_quiet(&format!("ip netns pids {ns} | xargs -r kill -9"));
            sh_quiet(&format!("ip netns del {ns}"));
        }
        sh_quiet(&format!("ip link del {}br", self.prefix));
    }
}

/// keepalived's advertisement interval: VRRPv2's 1 s, or VRRPv3's fastest
/// (keepalived 2.2 refuses anything below 0.01 s).
const ADVERT_SLOW: &str = "1";
const ADVERT_FAST: &str = "0.01";

fn keepalived(
    p: &Pair,
    x: &str,
    (prio, me, peer): (u32, u8, u8),
    advert: &str,
    dir: &std::path::Path,
) -> Proc {
    let ns = p.ns(x);
    let conf = dir.join(format!("{ns}.conf"));
    let version = if advert == ADVERT_SLOW {
        ""
    } else {
        "\n  vrrp_version 3"
    };
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n  router_id {ns}{version}\n}}\nvrrp_instance VI {{\n  state BACKUP\n  interface {ns}v\n  virtual_router_id 51\n  priority {prio}\n  advert_int {advert}\n  unicast_src_ip {}\n  unicast_peer {{\n    {}\n  }}\n  virtual_ipaddress {{\n    {}/24 dev {ns}v\n  }}\n}}\n",
            p.ip(me),
            p.ip(peer),
            p.ip(100)
        ),
    )
    .unwrap();
    Proc(
        Command::new("ip")
            .args(["netns", "exec", &ns, "keepalived", "-n", "-l", "-P", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.join(format!("{ns}.pid")))
            .arg("-r")
            .arg(dir.join(format!("{ns}.vrrp.pid")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn keepalived_once(k: usize, advert: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let p = Pair::new("k", k);
    let _a = keepalived(&p, "a", (150, 1, 2), advert, dir.path());
    let _b = keepalived(&p, "b", (100, 2, 1), advert, dir.path());
    let vip = p.ip(100);
    wait_for("keepalived master", Duration::from_secs(30), || {
        p.holds("a", &vip).then_some(())
    });
    // Settled, then a uniformly random phase of its advertisements.
    std::thread::sleep(Duration::from_millis(3000 + rand::random_range(0..1000)));
    let t0 = Instant::now();
    p.kill("a");
    wait_for("keepalived backup", Duration::from_secs(30), || {
        p.holds("b", &vip).then_some(())
    });
    t0.elapsed().as_secs_f64()
}

/// The baseline node "b" watches "a" with "w" as frontend1.
fn baseline_once(k: usize) -> (f64, f64) {
    let p = Pair::new("s", k);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/baseline_chain.sh");
    let child = Command::new("ip")
        .args(["netns", "exec", &p.ns("b"), "sh"])
        .arg(&script)
        .args([&p.ip(1), &p.ip(3), &format!("{}v", p.ns("b"))])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(7));
    let t0_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    p.kill("a");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let at = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse::<f64>().ok()))
            .map(|ms| (ms - t0_ms) / 1000.0)
            .unwrap_or(f64::NAN)
    };
    (at("declared "), at("holding "))
}

fn main() {
    if !common::rig_ready(true) || !common::have("keepalived") {
        eprintln!("benchmarks need the rig's tools and keepalived (source .ci/deps.sh)");
        std::process::exit(1);
    }
    let runs = common::env_u64("BENCH_RUNS", 10) as usize;
    let loss_secs = common::env_u64("BENCH_LOSS_SECS", 300);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Baseline runs take ~40 s each and do not compete for CPU: all at once.
    let base_runs = if only("baseline") { runs } else { 0 };
    let baseline = std::thread::spawn(move || {
        let hs: Vec<_> = (0..base_runs)
            .map(|k| std::thread::spawn(move || baseline_once(k)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });

    let old_runs = common::env_u64("BENCH_OLD_RUNS", 3) as usize;
    let chainwatch = |label: &str, fence: Fence, n: usize| -> Vec<Sample> {
        (1..=n)
            .map(|i| {
                let s = rt.block_on(chainwatch_once(fence));
                eprintln!(
                    "{label} run {i}: declared {:.2} s, holding {:.2} s, delivered by RabbitMQ {:?}, by CloudWatch {:?}, fence -> stopped {:?} (stopping seen: {})",
                    s.declared, s.holding, s.delivered, s.logged, s.fence_to_stopped, s.saw_stopping
                );
                s
            })
            .collect()
    };
    let n = |section: &str, k: usize| if only(section) { k } else { 0 };
    let old = chainwatch("chainwatch, old fence,", Fence::Old, n("old", old_runs));
    let power = chainwatch(
        "chainwatch, power fence only,",
        Fence::Power,
        n("power", old_runs),
    );
    let cw = chainwatch("chainwatch", Fence::Fabric, n("fence", runs));
    let oneway_secs = common::env_u64("BENCH_ONEWAY_SECS", 600);
    let (oneway, oneway_deaths) = if only("oneway") {
        let soak = rt.block_on(one_way_soak(oneway_secs));
        eprintln!(
            "one-way loss {oneway_secs} s: {} fences, {} second opinions cleared frontend2, {} packets dropped",
            soak.0, soak.1, soak.2
        );
        let deaths: Vec<(f64, f64)> = (1..=runs)
            .map(|i| {
                let d = rt.block_on(one_way_death_once());
                eprintln!(
                    "death under a one-way fault, run {i}: declared {:.2} s, holding {:.2} s",
                    d.0, d.1
                );
                d
            })
            .collect();
        (Some(soak), deaths)
    } else {
        (None, Vec::new())
    };
    let jitter_secs = common::env_u64("BENCH_JITTER_SECS", 120);
    let jitter = only("jitter").then(|| {
        let j = rt.block_on(jitter_soak(jitter_secs));
        eprintln!(
            "jitter {jitter_secs} s: {} bursts of 200 ms, {} fences, at most {} misses in a row, {} second opinions cleared frontend2",
            j.0, j.1, j.2, j.3
        );
        j
    });
    let (mut ka, mut ka_fast) = (Vec::new(), Vec::new());
    for k in 0..n("keepalived", runs) {
        for (advert, out) in [(ADVERT_SLOW, &mut ka), (ADVERT_FAST, &mut ka_fast)] {
            let t = keepalived_once(k, advert);
            eprintln!(
                "keepalived (advert_int {advert}) run {}: backup holds the address after {t:.2} s",
                k + 1
            );
            out.push(t);
        }
    }
    let hang_runs = common::env_u64("BENCH_HANG_RUNS", 5) as usize;
    let hang: Vec<f64> = (1..=n("hang", hang_runs))
        .map(|i| {
            let t = rt.block_on(hub_hang_once());
            eprintln!("hub OpenVPN hung run {i}: every member's overlay back after {t:.2} s");
            t
        })
        .collect();
    let sick: Vec<f64> = (1..=n("hubsick", hang_runs))
        .map(|i| {
            let t = rt.block_on(hub_sick_once());
            eprintln!(
                "hub OpenVPN and daemon hung run {i}: frontend2 holds frontend1, overlay back after {t:.2} s"
            );
            t
        })
        .collect();
    let switchovers: Vec<(f64, f64, f64, usize)> = (1..=n("switchover", hang_runs))
        .map(|i| {
            let r = rt.block_on(switchover_once());
            eprintln!(
                "switchover run {i}: frontend1 held by the old frontend2 after {:.2} s, overlay whole after {:.2} s (reported {:.2} s), {} StopInstances",
                r.0, r.1, r.2, r.3
            );
            r
        })
        .collect();
    let mysqld: Vec<(f64, f64)> = (1..=n("mysqld", hang_runs))
        .map(|i| {
            let (p, a) = rt.block_on(mysqld_hung_once());
            eprintln!(
                "mysqld hung run {i}: backend2 promoted after {p:.2} s, a write through backend1.internal accepted after {a:.2} s"
            );
            (p, a)
        })
        .collect();
    let write_runs = common::env_u64("BENCH_WRITE_RUNS", 20) as usize;
    let mut writes: Vec<(&'static str, Vec<WriteRun>)> = Vec::new();
    // `BENCH_WRITE_VARIANTS`: `up` (the candidate up to date), `lag`,
    // `playbook` (up to date, the playbook alone promotes); default
    // `up,lag`.
    let variants = std::env::var("BENCH_WRITE_VARIANTS").unwrap_or_else(|_| "up,lag".into());
    for (name, lag, playbook_only, label) in [
        ("up", false, false, "candidate up to date"),
        (
            "lag",
            true,
            false,
            "candidate's SQL thread stopped 3 s before",
        ),
        (
            "playbook",
            false,
            true,
            "candidate up to date, the playbook alone promotes (no worker.mysql_client)",
        ),
    ] {
        if !variants.split(',').any(|v| v.trim() == name) {
            continue;
        }
        let runs: Vec<WriteRun> = (1..=n("writes", write_runs))
            .map(|i| {
                let w = rt.block_on(writes_once(lag, playbook_only));
                eprintln!(
                    "writes ({name}) run {i}: {} acknowledged, {} lost, candidate {} behind at the death, outage {:.2} s",
                    w.acked, w.lost, w.behind, w.outage
                );
                w
            })
            .collect();
        if !runs.is_empty() {
            writes.push((label, runs));
        }
    }
    let bswitch: Vec<(usize, usize, f64, usize)> = (1..=n("bswitchover", hang_runs))
        .map(|i| {
            let r = rt.block_on(backend_switchover_once());
            eprintln!(
                "backend switchover run {i}: {} acknowledged, {} lost, longest write pause {:.2} s, {} StopInstances",
                r.0, r.1, r.2, r.3
            );
            r
        })
        .collect();
    let base = baseline.join().unwrap();
    for (k, (d, h)) in base.iter().enumerate() {
        eprintln!(
            "baseline run {}: declared {d:.2} s, holding {h:.2} s",
            k + 1
        );
    }

    // Footprint while idle-probing, and false takeovers under random loss.
    let idle = only("idle");
    let (cw_fp, cw_false, cw_rounds) = if !idle {
        ((0, 0.0, 0), 0, (0, 0))
    } else {
        rt.block_on(async {
            let f = Fleet::frontends(3).await;
            let pids = pids_in(&f.nodes[2].ns, "chainwatch");
            assert_eq!(pids.len(), 1, "frontend3's daemon: {pids:?}");
            let fp = footprint(&pids, 30);
            // Beside it, the overlay's client (not part of the watchdog;
            // keepalived needs none), for the record.
            let vpn = footprint(&pids_in(&f.nodes[2].ns, "openvpn"), 1);
            eprintln!(
                "frontend3's OpenVPN client beside it: {} kB RSS, {} kB anonymous",
                vpn.0, vpn.2
            );
            f.loss(1, LOSS_PCT);
            std::thread::sleep(Duration::from_secs(loss_secs));
            // Rounds, and suspicions the second opinion cleared.
            let (rounds, vouched) = f
                .status(2)
                .map(|s| {
                    (
                        s["rounds"].as_u64().unwrap_or(0),
                        s["members"]["vouched"].as_u64().unwrap_or(0),
                    )
                })
                .unwrap_or((0, 0));
            (fp, f.takeovers().len(), (rounds, vouched))
        })
    };
    let (ka_fp, ka_false) = if idle {
        keepalived_idle(loss_secs)
    } else {
        ((0, 0.0, 0), 0)
    };
    print_results(&Results {
        runs,
        old_runs,
        loss_secs,
        hang_runs,
        cw,
        power,
        old,
        ka,
        ka_fast,
        jitter_secs,
        jitter,
        base,
        hang,
        sick,
        switchovers,
        mysqld,
        writes,
        bswitch,
        cw_fp,
        cw_false,
        cw_rounds,
        ka_fp,
        ka_false,
        oneway_secs,
        oneway,
        oneway_deaths,
    });
}

/// keepalived's idle footprint and its false takeovers under random loss.
fn keepalived_idle(loss_secs: u64) -> ((u64, f64, u64), u32) {
    let dir = tempfile::tempdir().unwrap();
    let p = Pair::new("k", 49);
    let _a = keepalived(&p, "a", (150, 1, 2), ADVERT_SLOW, dir.path());
    let _b = keepalived(&p, "b", (100, 2, 1), ADVERT_SLOW, dir.path());
    let vip = p.ip(100);
    wait_for("keepalived master", Duration::from_secs(30), || {
        p.holds("a", &vip).then_some(())
    });
    // Both of its processes: the parent and the VRRP child.
    let pids = pids_in(&p.ns("b"), "keepalived");
    assert_eq!(
        pids.len(),
        2,
        "keepalived's parent and VRRP child: {pids:?}"
    );
    let each: Vec<_> = pids.iter().map(|p| footprint(&[*p], 0)).collect();
    eprintln!(
        "keepalived's processes (RSS kB, anonymous kB): {:?}",
        each.iter().map(|f| (f.0, f.2)).collect::<Vec<_>>()
    );
    let ka_fp = footprint(&pids, 30);
    sh(&format!(
        "ip netns exec {} nft -f - <<'EOF'\ntable inet cwloss {{\n  chain input {{ type filter hook input priority 0; numgen random mod 100 < {LOSS_PCT} drop; }}\n  chain output {{ type filter hook output priority 0; numgen random mod 100 < {LOSS_PCT} drop; }}\n}}\nEOF",
        p.ns("a")
    ));
    let start = Instant::now();
    let mut ka_false = 0;
    let mut was = false;
    while start.elapsed() < Duration::from_secs(loss_secs) {
        let now = p.holds("b", &vip);
        if now && !was {
            ka_false += 1;
        }
        was = now;
        std::thread::sleep(Duration::from_millis(20));
    }
    (ka_fp, ka_false)
}

struct Results {
    runs: usize,
    old_runs: usize,
    loss_secs: u64,
    hang_runs: usize,
    cw: Vec<Sample>,
    power: Vec<Sample>,
    old: Vec<Sample>,
    ka: Vec<f64>,
    ka_fast: Vec<f64>,
    jitter_secs: u64,
    jitter: Option<(u32, usize, u64, u64)>,
    base: Vec<(f64, f64)>,
    hang: Vec<f64>,
    sick: Vec<f64>,
    switchovers: Vec<(f64, f64, f64, usize)>,
    mysqld: Vec<(f64, f64)>,
    /// (lagging candidate, runs).
    writes: Vec<(&'static str, Vec<WriteRun>)>,
    /// Backend switchovers: (acknowledged, lost, longest pause, stops).
    bswitch: Vec<(usize, usize, f64, usize)>,
    cw_fp: (u64, f64, u64),
    cw_false: usize,
    /// Rounds under loss, and suspicions the second opinion cleared.
    cw_rounds: (u64, u64),
    ka_fp: (u64, f64, u64),
    ka_false: u32,
    oneway_secs: u64,
    oneway: Option<(usize, u64, u64)>,
    oneway_deaths: Vec<(f64, f64)>,
}

fn print_results(r: &Results) {
    let Results {
        runs,
        old_runs,
        loss_secs,
        hang_runs,
        oneway_secs,
        jitter_secs,
        ..
    } = *r;

    println!("\n## Results ({runs} faults per contender, p50 / p95 / p99)\n");
    println!(
        "Fleets with a takeover before the fault (false takeovers; no sample): {}\n",
        TAKEOVERS_BEFORE_THE_FAULT.load(std::sync::atomic::Ordering::SeqCst)
    );
    println!(
        "| | (a) death → declared | (b) death → new holder answering | (c) → event delivered by RabbitMQ and CloudWatch |"
    );
    println!("|---|---|---|---|");
    println!(
        "| chainwatch (defaults: 250 ms, 200 ms, 3 misses) | {} | {} | {} |",
        stats(r.cw.iter().map(|s| s.declared).collect()),
        stats(r.cw.iter().map(|s| s.holding).collect()),
        stats(r.cw.iter().filter_map(|s| s.confirmed).collect())
    );
    println!(
        "| chainwatch, power fence only (SkipOsShutdown, waits for stopped; {old_runs} faults) | {} | {} | {} |",
        stats(r.power.iter().map(|s| s.declared).collect()),
        stats(r.power.iter().map(|s| s.holding).collect()),
        stats(r.power.iter().filter_map(|s| s.confirmed).collect())
    );
    println!(
        "| chainwatch, fence of 0.1.0 (Force only, {old_runs} faults) | {} | {} | {} |",
        stats(r.old.iter().map(|s| s.declared).collect()),
        stats(r.old.iter().map(|s| s.holding).collect()),
        stats(r.old.iter().filter_map(|s| s.confirmed).collect())
    );
    println!(
        "| keepalived (VRRP unicast, advert_int 1) | {} | {} | n/a |",
        stats(r.ka.clone()),
        stats(r.ka.clone())
    );
    println!(
        "| keepalived (VRRPv3 unicast, advert_int {ADVERT_FAST}, its fastest) | {} | {} | n/a |",
        stats(r.ka_fast.clone()),
        stats(r.ka_fast.clone())
    );
    println!(
        "| original chain script (5 s, 4 s, > 5 misses) | {} | {} | n/a |",
        stats(r.base.iter().map(|b| b.0).collect()),
        stats(r.base.iter().map(|b| b.1).collect())
    );
    println!("\n## The power fence behind the fabric fence ({runs} faults)\n");
    println!(
        "| | StopInstances → EC2 reports the old holder `stopped` | seen `stopping` in between |"
    );
    println!("|---|---|---|");
    let fenced: Vec<f64> = r.cw.iter().filter_map(|s| s.fence_to_stopped).collect();
    println!(
        "| chainwatch (rig stop with SkipOsShutdown: {} ms) | {} | {} of {} |",
        common::fleet::stop_times().1,
        stats(fenced.clone()),
        r.cw.iter().filter(|s| s.saw_stopping).count(),
        r.cw.len()
    );
    println!("\n## The hub's OpenVPN hung (SIGSTOP), {hang_runs} runs\n");
    println!("| | → every member's overlay back: median | worst | takeovers |");
    println!("|---|---|---|---|");
    let (median, worst) = median_worst(&r.hang);
    println!(
        "| chainwatch (vpn.health_* defaults: 1 s, 1 s, 3 misses) | {median:.2} s | {worst:.2} s | {} |",
        if r.hang.iter().any(|t| t.is_nan()) {
            "SOME RUN FAILED (NaN)"
        } else {
            "0"
        }
    );
    if !r.sick.is_empty() {
        let (median, worst) = median_worst(&r.sick);
        println!(
            "\n## The hub's OpenVPN and its daemon hung (SIGSTOP), {} runs\n",
            r.sick.len()
        );
        println!("| | → frontend2 holds frontend1, overlay back: median | worst |");
        println!("|---|---|---|");
        println!(
            "| chainwatch (probe.hub_overlay_grace_ms 8000, helpers on the underlay) | {median:.2} s | {worst:.2} s |"
        );
    }
    if !r.switchovers.is_empty() {
        let col =
            |k: usize| -> Vec<f64> { r.switchovers.iter().map(|x| [x.0, x.1, x.2][k]).collect() };
        let stops: usize = r.switchovers.iter().map(|x| x.3).sum();
        println!(
            "\n## Planned hub switchover (`chainwatch switchover`), {} runs\n",
            r.switchovers.len()
        );
        println!("| from the request | median / p95 |");
        println!("|---|---|");
        println!("| → frontend2 holds frontend1 | {} |", stats(col(0)));
        println!(
            "| → overlay whole through the new hub (rig's view) | {} |",
            stats(col(1))
        );
        println!(
            "| → overlay whole (the command's report) | {} |",
            stats(col(2))
        );
        println!("| StopInstances calls, all runs | {stops} |");
    }
    if !r.mysqld.is_empty() {
        let (pm, pw) = median_worst(&r.mysqld.iter().map(|m| m.0).collect::<Vec<_>>());
        let (am, aw) = median_worst(&r.mysqld.iter().map(|m| m.1).collect::<Vec<_>>());
        println!(
            "\n## mysqld hung on the primary's holder (SIGSTOP), {} runs\n",
            r.mysqld.len()
        );
        println!("| | median | worst |");
        println!("|---|---|---|");
        println!("| → backend2 holds backend1, its server writable | {pm:.2} s | {pw:.2} s |");
        println!("| → a write through backend1.internal accepted | {am:.2} s | {aw:.2} s |");
    }
    if !r.writes.is_empty() {
        println!("\n## backend1 dies under writes (semi-synchronous replication)\n");
        println!(
            "| | runs | acknowledged writes | lost | runs with a loss | candidate behind at the death (median) | outage: death → next accepted write, p50 / p95 / p99 |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (label, runs) in &r.writes {
            let mut behind: Vec<usize> = runs.iter().map(|w| w.behind).collect();
            behind.sort();
            println!(
                "| {} | {} | {} | {} | {} | {} writes | {} |",
                label,
                runs.len(),
                runs.iter().map(|w| w.acked).sum::<usize>(),
                runs.iter().map(|w| w.lost).sum::<usize>(),
                runs.iter().filter(|w| w.lost > 0).count(),
                behind.get(behind.len() / 2).copied().unwrap_or(0),
                stats(runs.iter().map(|w| w.outage).collect())
            );
        }
    }
    if !r.bswitch.is_empty() {
        println!(
            "\n## Planned backend1 switchover under writes ({} runs, semi-synchronous replication)\n",
            r.bswitch.len()
        );
        println!(
            "| acknowledged writes | lost | longest write pause, p50 / p95 / p99 | StopInstances calls |"
        );
        println!("|---|---|---|---|");
        println!(
            "| {} | {} | {} | {} |",
            r.bswitch.iter().map(|b| b.0).sum::<usize>(),
            r.bswitch.iter().map(|b| b.1).sum::<usize>(),
            stats(r.bswitch.iter().map(|b| b.2).collect()),
            r.bswitch.iter().map(|b| b.3).sum::<usize>()
        );
    }
    // Not measured unless `idle` is selected: no row of zeros.
    if only("idle") {
        println!("\n## Idle footprint (30 s)\n");
        println!("| | resident memory | of which anonymous | CPU |");
        println!("|---|---|---|---|");
        println!(
            "| chainwatch (release build; overlay rounds every 250 ms) | {} kB | {} kB | {:.2} % of one core |",
            r.cw_fp.0, r.cw_fp.2, r.cw_fp.1
        );
        println!(
            "| keepalived backup (advert_int 1), its two processes | {} kB | {} kB | {:.2} % of one core |",
            r.ka_fp.0, r.ka_fp.2, r.ka_fp.1
        );
        println!(
            "\n## False takeovers under {LOSS_PCT} % random loss on the peer's link ({loss_secs} s)\n"
        );
        println!("| | false takeovers |");
        println!("|---|---|");
        println!(
            "| chainwatch | {} ({} rounds; {} suspicions cleared by the second opinion) |",
            r.cw_false, r.cw_rounds.0, r.cw_rounds.1
        );
        println!("| keepalived | {} |", r.ka_false);
    }
    if let Some((bursts, fences, most, vouched)) = r.jitter {
        println!("\n## Jitter: frontend2's OpenVPN paused 200 ms at random ({jitter_secs} s)\n");
        println!(
            "| | bursts | fences | most misses in a row | second opinions that cleared frontend2 |"
        );
        println!("|---|---|---|---|---|");
        println!("| chainwatch | {bursts} | {fences} | {most} | {vouched} |");
    }
    if let Some((fences, vouched, drops)) = r.oneway {
        println!("\n## One-way loss (frontend3 drops everything from frontend2)\n");
        println!(
            "| | fences in {oneway_secs} s | second opinions that cleared frontend2 | packets dropped |"
        );
        println!("|---|---|---|---|");
        println!("| chainwatch (members' channel on) | {fences} | {vouched} | {drops} |");
        println!(
            "\n| frontend2 dies with the fault in place ({} faults) | death → declared | death → new holder answering |",
            r.oneway_deaths.len()
        );
        println!("|---|---|---|");
        println!(
            "| chainwatch (second opinion: the hub and frontend4 fail to reach it too) | {} | {} |",
            stats(r.oneway_deaths.iter().map(|d| d.0).collect()),
            stats(r.oneway_deaths.iter().map(|d| d.1).collect())
        );
    }
}
