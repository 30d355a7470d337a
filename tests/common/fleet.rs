//! The rig: a fleet of chainwatch instances on this machine. One network
//! namespace per instance on a bridge (the underlay), a test PKI, the real
//! OpenVPN overlay, moto as EC2 (and CloudWatch Logs) with one emulated
//! instance per namespace, the real `chainwatch run` in each namespace, and
//! optionally the machine's RabbitMQ (a vhost and user of its own), MariaDB
//! in every backend namespace replicating over the overlay from
//! `backend1.internal`, and `chainwatch worker` on the host.
//!
//! The bridge lives in the host namespace with the address `.254`, where
//! moto listens and RabbitMQ is reached; namespaces cannot reach the host's
//! loopback. The Elastic IP of frontend1 is the address `.1`, moved to
//! whichever namespace EC2 associates the allocation with.
//!
//! EC2 is as slow as AWS's: the daemons reach moto through
//! `tests/support/ec2_proxy.py`, which keeps a stopped instance `stopping`,
//! its namespace and processes still running, for `CHAINWATCH_RIG_STOP_MS`
//! (default 60000, a graceful OS shutdown first) or
//! `CHAINWATCH_RIG_STOP_SKIP_OS_MS` (default 4000, with `SkipOsShutdown`)
//! before the stop is applied in moto.
//!
//! A small hypervisor makes EC2 real for the rig: when moto reports an
//! emulated instance stopped, its namespace's processes die and its link
//! goes down (power off); when it is started, it boots again from its
//! user-data.
//!
//! [`Fleet::watch_holders`] starts a watchdog that samples every
//! namespace's overlay address and records any address held by two
//! namespaces whose links are up (two reachable holders).
//!
//! Everything is removed on drop (also after a failed assertion). Leftovers
//! of a crashed run (namespaces named `cw*`) make [`Fleet::new`] refuse to
//! start and say how to clean them.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use chainwatch::layout::{Layout, Role, Slot};

use super::rabbit::Rabbit;
use super::{Ec2Proxy, Moto, Proc, bin, ec2_client, sh, sh_quiet, wait_for};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The MariaDB admin account the worker's Ansible uses over the underlay.
pub const DB_ADMIN: &str = "cwadmin";
/// Its password.
pub const DB_PASSWORD: &str = "cw-admin-secret";

/// What the rig runs besides chainwatch and OpenVPN.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// A RabbitMQ vhost; the daemons announce there.
    pub rabbit: bool,
    /// MariaDB in every backend namespace, with replication set up.
    pub mariadb: bool,
    /// `chainwatch worker` on the host (needs `rabbit` and `mariadb`).
    pub worker: bool,
    /// The hypervisor thread (EC2 stop/start kill and boot namespaces).
    pub hypervisor: bool,
    /// How long a stop with SkipOsShutdown keeps an instance `stopping`,
    /// instead of `CHAINWATCH_RIG_STOP_SKIP_OS_MS` (a test that must watch
    /// the old instance while it stops says why it sets this).
    pub skip_os_ms: Option<u64>,
    /// No fabric fence (`aws.fabric_fence = false`): takeovers wait until
    /// EC2 reports the old holder stopped.
    pub power_fence_only: bool,
    /// Backends judge their MariaDB (`[service] check = "mysql"` on
    /// 127.0.0.1:3306 in their namespace).
    pub mysql_check: bool,
    /// Alerts appended to `<node dir>/alerts.jsonl` by
    /// `alerts.notify_command`.
    pub alerts: bool,
    /// `aws.fence_budget_per_hour` (default: the daemon's).
    pub fence_budget: Option<u32>,
    /// `aws.takeover_cooldown`, in seconds (default: the daemon's, none).
    pub cooldown_secs: Option<u64>,
    /// `aws.api_timeout`, in milliseconds (default: the daemon's).
    pub api_timeout_ms: Option<u64>,
    /// MariaDB's semi-synchronous replication (`chainwatch_semi_sync` in
    /// the inventory), as docs/src/mysql.md recommends for no lost write.
    pub semi_sync: bool,
    /// The worker without `worker.mysql_client`: the playbook alone
    /// promotes (by default the worker promotes directly first, as
    /// docs/src/mysql.md recommends).
    pub playbook_promotion_only: bool,
}

/// One emulated instance.
#[derive(Debug, Clone)]
pub struct Node {
    /// The slot it booted as.
    pub boot: Slot,
    /// Its namespace.
    pub ns: String,
    /// Its veth inside the namespace.
    pub dev: String,
    /// Underlay address.
    pub underlay: Ipv4Addr,
    /// EC2 instance ID in moto.
    pub instance: String,
    /// Its files (config, state, logs).
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Power {
    /// Not booted yet, or running.
    #[default]
    Up,
    /// Crashed by the test: dead while EC2 still says running.
    Crashed,
    /// Stopped through EC2: boots again when EC2 says running.
    Stopped,
}

#[derive(Default)]
struct Procs {
    daemon: Option<Proc>,
    db: Option<Proc>,
    power: Power,
}

/// Shared between the test and the hypervisor thread.
struct Shared {
    nodes: Vec<Node>,
    procs: Mutex<Vec<Procs>>,
    /// moto itself: the hypervisor's view (the true power state).
    moto_endpoint: String,
    /// The EC2 the daemons and the test see: the slow-stop proxy.
    api_endpoint: String,
    mariadb: bool,
    eip_holder: Mutex<Option<usize>>,
    net: u8,
}

/// The fleet.
static ONE_FLEET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Fleet {
    pub prefix: String,
    pub net: u8,
    pub bridge: String,
    pub dir: tempfile::TempDir,
    pub pki: PathBuf,
    pub moto: Moto,
    /// The slow-stop EC2 proxy in front of moto.
    pub proxy: Ec2Proxy,
    /// EC2 as the daemons see it (through the proxy).
    pub ec2: Client,
    pub fleet: String,
    pub eip_alloc: String,
    pub nodes: Vec<Node>,
    pub layout: Layout,
    pub rabbit: Option<Rabbit>,
    /// Forwards the bridge address's 5672 to the machine's RabbitMQ.
    pub forward: Option<Proc>,
    pub worker: Option<super::ProcGroup>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    hypervisor: Option<std::thread::JoinHandle<()>>,
    watchdog: Option<std::thread::JoinHandle<()>>,
    doubles: Arc<Mutex<Vec<String>>>,
    /// Per namespace, the watchdog's samples that saw its link up.
    seen_up: Arc<Mutex<std::collections::HashMap<String, u64>>>,
    /// One fleet at a time in a test binary: two fleets on two cores
    /// stretch each other's timings past the scenarios' bounds (CI's
    /// rig_correlated_deaths ran its tests side by side and missed its
    /// 10 s bound). Dropped last, after the fleet is torn down.
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
    semi_sync: bool,
    playbook_promotion_only: bool,
}

/// The first alert of `kind` appended to `file` (one JSON object a line, as
/// `alerts.notify_command` writes them in the rig) by `who`.
fn first_alert(file: &Path, kind: &str, who: &str, timeout: Duration) -> serde_json::Value {
    wait_for(&format!("a {kind} alert from {who}"), timeout, || {
        std::fs::read_to_string(file)
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|a| a["kind"] == kind)
    })
}

/// One acknowledged write of [`Fleet::start_writer`].
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// The row written.
    pub value: u32,
    /// When the client started.
    pub sent: Instant,
    /// When the server acknowledged it.
    pub at: Instant,
}

/// The client of [`Fleet::start_writer`].
pub struct Writer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Ack>>,
}

impl Writer {
    /// Stop writing: the acknowledged writes, in order.
    pub fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The longest time without an acknowledged write between `from` and the
/// last acknowledgement: the write pause a client saw.
pub fn longest_pause(acked: &[Ack], from: Instant) -> Duration {
    let mut last = from;
    let mut worst = Duration::ZERO;
    for a in acked.iter().filter(|a| a.at >= from) {
        worst = worst.max(a.at.duration_since(last));
        last = a.at;
    }
    worst
}

/// How long the rig's EC2 keeps a stopped instance `stopping`: (without
/// SkipOsShutdown, with it), from `CHAINWATCH_RIG_STOP_MS` and
/// `CHAINWATCH_RIG_STOP_SKIP_OS_MS` (defaults 60000 and 4000, AWS's order
/// of magnitude for a hung instance and for a forced stop).
pub fn stop_times() -> (u64, u64) {
    let var = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{k}={v:?} is not a number of milliseconds"))
            })
            .unwrap_or(d)
    };
    (
        var("CHAINWATCH_RIG_STOP_MS", 60_000),
        var("CHAINWATCH_RIG_STOP_SKIP_OS_MS", 4_000),
    )
}

/// Refuse to start over a crashed run's leftovers (rig namespaces of
/// another process), saying how to clean up.
fn check_leftovers(ours: &str) {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let stale: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            let b = n.as_bytes();
            n.starts_with("cw")
                && b.len() > 7
                && b[2..6].iter().all(u8::is_ascii_digit)
                && b[6] == b'x'
                && !n.starts_with(ours)
                && !owner_alive(&n[2..6])
        })
        .collect();
    assert!(
        stale.is_empty(),
        "network namespaces {stale:?} are left over from a crashed rig run; remove them with\n  \
         for n in {}; do ip netns pids $n | xargs -r kill -9; ip netns del $n; rm -rf /etc/netns/$n; done; \
         ip -o link show type bridge | awk -F': ' '/^[0-9]+: cw[0-9]{{4}}x/{{print $2}}' | xargs -r -n1 ip link del\n\
         and run again",
        stale.join(" ")
    );
}

/// The marker a running rig leaves, so a concurrent run is not taken for a
/// crashed one: `/tmp/chainwatch-rig-<4 digits>.pid` holds the owner's pid.
fn marker(digits: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/chainwatch-rig-{digits}.pid"))
}

fn owner_alive(digits: &str) -> bool {
    std::fs::read_to_string(marker(digits))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

impl Fleet {
    /// The underlay address `.host` of this fleet's subnet.
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.net, host)
    }

    /// Build the network, PKI, moto and one instance per slot (not
    /// started).
    pub async fn new(slots: &[Slot]) -> Fleet {
        Self::with(slots, Options::default()).await
    }

    /// The same, with more parts.
    pub async fn with(slots: &[Slot], opts: Options) -> Fleet {
        // (An async lock: each scenario runs on its own runtime; one that
        // panicked releases it as its fleet drops.)
        let one_at_a_time = ONE_FLEET.lock().await;
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let prefix = format!("cw{:04}x{seq}", pid % 10000);
        check_leftovers(&format!("cw{:04}x", pid % 10000));
        std::fs::write(marker(&format!("{:04}", pid % 10000)), pid.to_string()).unwrap();
        // Wrapping: a benchmark builds more than 36 fleets in one process.
        let net = ((pid % 150) as u8).wrapping_add((seq as u8).wrapping_mul(7)) % 200 + 20;
        let bridge = format!("{prefix}br");
        sh_quiet(&format!("ip link del {bridge}"));
        sh(&format!(
            "ip link add {bridge} type bridge && ip link set {bridge} up"
        ));
        sh(&format!("ip addr add 10.77.{net}.254/24 dev {bridge}"));
        let dir = tempfile::tempdir().unwrap();
        // OpenVPN drops to nobody once up (vpn.user), and its hooks read
        // hooks.toml and the admission list under the nodes' state
        // directories: they must be able to traverse (not list) this.
        sh(&format!("chmod 0711 {}", dir.path().display()));
        let pki = dir.path().join("pki");
        sh(&format!(
            "{}/openvpn/make-test-pki.sh {} >/dev/null",
            env!("CARGO_MANIFEST_DIR"),
            pki.display()
        ));
        let moto = Moto::start(&format!("10.77.{net}.254"));
        let (stop_ms, skip_os_ms) = stop_times();
        let skip_os_ms = opts.skip_os_ms.unwrap_or(skip_os_ms);
        let proxy = Ec2Proxy::start_on(
            &moto.endpoint,
            &format!("10.77.{net}.254"),
            stop_ms,
            skip_os_ms,
        );
        let ec2 = ec2_client(&proxy.endpoint).await;
        let vpc = ec2
            .create_vpc()
            .cidr_block("10.77.0.0/16")
            .send()
            .await
            .unwrap()
            .vpc()
            .unwrap()
            .vpc_id()
            .unwrap()
            .to_string();
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.77.{net}.0/24"))
            .send()
            .await
            .unwrap()
            .subnet()
            .unwrap()
            .subnet_id()
            .unwrap()
            .to_string();
        let eip_alloc = ec2
            .allocate_address()
            .domain(aws_sdk_ec2::types::DomainType::Vpc)
            .send()
            .await
            .unwrap()
            .allocation_id()
            .unwrap()
            .to_string();
        let rabbit = opts
            .rabbit
            .then(|| Rabbit::new(&format!("rig{seq}"), &format!("10.77.{net}.254")));
        // The machine's RabbitMQ listens on loopback only.
        let forward = opts.rabbit.then(|| {
            let mut cmd = Command::new("python3");
            cmd.arg(super::support("tcp_forward.py")).args([
                "--listen",
                &format!("10.77.{net}.254:5672"),
                "--to",
                "127.0.0.1:5672",
            ]);
            super::spawn_listening(cmd).0
        });
        let fleet_name = format!("rig-{pid}-{seq}");
        let layout = Layout::default();
        let mut nodes = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let node = add_node(
                &ec2,
                &prefix,
                net,
                &bridge,
                i,
                *slot,
                &subnet,
                &fleet_name,
                dir.path(),
                &layout,
            )
            .await;
            write_config(
                &node,
                &fleet_name,
                &eip_alloc,
                &pki,
                net,
                rabbit.as_ref(),
                &opts,
            );
            nodes.push(node);
        }
        let shared = Arc::new(Shared {
            procs: Mutex::new(nodes.iter().map(|_| Procs::default()).collect()),
            nodes: nodes.clone(),
            moto_endpoint: moto.endpoint.clone(),
            api_endpoint: proxy.endpoint.clone(),
            mariadb: opts.mariadb,
            eip_holder: Mutex::new(None),
            net,
        });
        let mut fleet = Fleet {
            prefix,
            net,
            bridge,
            dir,
            pki,
            moto,
            proxy,
            ec2,
            fleet: fleet_name,
            eip_alloc,
            nodes,
            layout,
            rabbit,
            forward,
            worker: None,
            shared,
            stop: Arc::new(AtomicBool::new(false)),
            hypervisor: None,
            watchdog: None,
            semi_sync: opts.semi_sync,
            playbook_promotion_only: opts.playbook_promotion_only,
            doubles: Arc::new(Mutex::new(Vec::new())),
            seen_up: Arc::new(Mutex::new(Default::default())),
            _one_at_a_time: one_at_a_time,
        };
        if opts.mariadb {
            for i in 0..fleet.nodes.len() {
                if fleet.nodes[i].boot.role == Role::Backend {
                    install_db(&fleet.nodes[i]);
                }
            }
        }
        if opts.hypervisor {
            let shared = fleet.shared.clone();
            let stop = fleet.stop.clone();
            fleet.hypervisor = Some(std::thread::spawn(move || hypervisor(shared, stop)));
        }
        let _ = opts.worker;
        fleet
    }

    /// Start `chainwatch run` in node `i` (and its MariaDB, for backends).
    pub fn start(&self, i: usize) {
        boot(&self.shared, i);
    }

    /// The instance dies (crash): every process in its namespace is killed
    /// and its link goes down. EC2 still shows it running.
    pub fn kill(&self, i: usize) {
        shutdown(&self.shared, i, Power::Crashed);
    }

    /// Whether the hypervisor has powered node `i` off because EC2 stopped
    /// it (not merely crashed by the test).
    pub fn powered_off(&self, i: usize) -> bool {
        self.shared.procs.lock().unwrap()[i].power == Power::Stopped
    }

    /// Whether node `i`'s namespace runs any process.
    pub fn has_processes(&self, i: usize) -> bool {
        !sh(&format!("ip netns pids {}", self.nodes[i].ns))
            .trim()
            .is_empty()
    }

    /// Start the double-holder watchdog: every 50 ms, each overlay address
    /// held by two namespaces whose underlay links are up is recorded.
    /// A namespace whose link is down is skipped (unreachable): a test that
    /// claims no double holder with a victim in it brings the victim's link
    /// back up, and [`Fleet::watched_up`] says how often the watchdog saw it.
    pub fn watch_holders(&mut self) {
        let stop = self.stop.clone();
        let doubles = self.doubles.clone();
        let seen_up = self.seen_up.clone();
        let nss: Vec<String> = self.nodes.iter().map(|n| n.ns.clone()).collect();
        let devs: Vec<String> = self.nodes.iter().map(|n| n.dev.clone()).collect();
        self.watchdog = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let mut held: std::collections::HashMap<Ipv4Addr, Vec<String>> = Default::default();
                for (ns, dev) in nss.iter().zip(&devs) {
                    let out = Command::new("ip")
                        .args(["-n", ns, "-4", "-o", "addr", "show", "up"])
                        .output();
                    let Ok(out) = out else { continue };
                    let text = String::from_utf8_lossy(&out.stdout);
                    if !text.lines().any(|l| l.contains(&format!(" {dev} "))) {
                        continue; // link down: unreachable
                    }
                    *seen_up.lock().unwrap().entry(ns.clone()).or_default() += 1;
                    for l in text.lines().filter(|l| l.contains(" cwvpn ")) {
                        if let Some(a) = inet(l) {
                            held.entry(a).or_default().push(ns.clone());
                        }
                    }
                }
                for (addr, who) in held {
                    if who.len() > 1 {
                        doubles
                            .lock()
                            .unwrap()
                            .push(format!("{addr} held by {who:?}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }

    /// What the double-holder watchdog recorded.
    pub fn double_holders(&self) -> Vec<String> {
        self.doubles.lock().unwrap().clone()
    }

    /// How many of the double-holder watchdog's samples saw node `i`'s
    /// link up (the samples in which node `i` could have been caught as a
    /// second holder).
    pub fn watched_up(&self, i: usize) -> u64 {
        self.seen_up
            .lock()
            .unwrap()
            .get(&self.nodes[i].ns)
            .copied()
            .unwrap_or(0)
    }

    /// Packets dropped so far by node `i`'s loss rules.
    pub fn loss_drops(&self, i: usize) -> u64 {
        self.nft_packets(i, "cwloss")
    }

    /// Packets counted by the rules of nftables table `table` in node
    /// `i`'s namespace.
    fn nft_packets(&self, i: usize, table: &str) -> u64 {
        let out = sh(&format!(
            "ip netns exec {} nft list table inet {table}",
            self.nodes[i].ns
        ));
        out.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum()
    }

    /// Kill node `i`'s chainwatch daemon alone with SIGKILL (a crash or an
    /// upgrade): its OpenVPN, MariaDB and kernel go on.
    pub fn kill_daemon(&self, i: usize) {
        let mut procs = self.shared.procs.lock().unwrap();
        if let Some(mut d) = procs[i].daemon.take() {
            let _ = d.0.kill(); // SIGKILL
            let _ = d.0.wait();
        }
    }

    /// Start node `i`'s daemon again (as systemd's Restart= would).
    pub fn restart_daemon(&self, i: usize) {
        let d = spawn_daemon(&self.shared, i);
        self.shared.procs.lock().unwrap()[i].daemon = Some(d);
    }

    /// Node `i`'s daemon aborts (as if killed -9) right after `step` of its
    /// next takeover (`CHAINWATCH_TEST_CRASH_FILE`).
    pub fn arm_crash(&self, i: usize, step: &str) {
        std::fs::write(self.nodes[i].dir.join("crash-after"), step).unwrap();
    }

    /// Whether node `i`'s daemon process has ended by itself.
    pub fn daemon_exited(&self, i: usize) -> bool {
        let mut procs = self.shared.procs.lock().unwrap();
        procs[i]
            .daemon
            .as_mut()
            .is_some_and(|d| d.0.try_wait().ok().flatten().is_some())
    }

    /// The daemon's status report.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let out = Command::new(bin())
            .arg("--config")
            .arg(self.nodes[i].dir.join("chainwatch.toml"))
            .args(["status", "--json"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Node `i`'s settings as its daemon reads them: its config file under
    /// the `CHAINWATCH_<SECTION>__<KEY>` variables it inherits from this
    /// process.
    pub fn settings(&self, i: usize) -> chainwatch::config::Settings {
        let path = self.nodes[i].dir.join("chainwatch.toml");
        chainwatch::config::Config::load(Some(&path), chainwatch::config::process_env())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Node `i`'s log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("log")).unwrap_or_default()
    }

    /// `chainwatch --config <node i's config> <args>` run inside node `i`'s
    /// namespace (so on the overlay, as an operator on that host would),
    /// against the rig's EC2.
    pub fn cli_in(&self, i: usize, args: &[&str]) -> std::process::Output {
        self.cli_command(i, args).output().unwrap()
    }

    /// The command [`Fleet::cli_in`] runs, to run elsewhere (another
    /// thread, while this one watches the fleet).
    pub fn cli_command(&self, i: usize, args: &[&str]) -> Command {
        let n = &self.nodes[i];
        let mut cmd = Command::new("ip");
        super::aws_env(&mut cmd, &self.shared.api_endpoint)
            .args(["netns", "exec", &n.ns])
            .arg(bin())
            .arg("--config")
            .arg(n.dir.join("chainwatch.toml"))
            .args(args);
        cmd
    }

    /// The last `lines` log lines of every node, for a failure message: what
    /// each one saw just before an assertion tripped.
    pub fn recent_logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in 0..self.nodes.len() {
            let log = self.log(i);
            let all: Vec<&str> = log.lines().collect();
            out.push_str(&format!(
                "\n--- node {i}, last {lines} of {} lines\n",
                all.len()
            ));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// One ICMP echo from node `i` to `addr`, waiting up to `wait_ms`.
    pub fn ping(&self, i: usize, addr: Ipv4Addr, wait_ms: u32) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.nodes[i].ns,
                "ping",
                "-n",
                "-q",
                "-c1",
            ])
            .arg(format!("-W{}", (wait_ms as f64 / 1000.0).max(0.2)))
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `ping -i 0.05` from node `from` to `addr` while `during` runs;
    /// returns (echoes sent, answered).
    pub fn ping_during(&self, from: usize, addr: Ipv4Addr, during: impl FnOnce()) -> (u32, u32) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.nodes[from].ns, "ping", "-n", "-q"])
            .args(["-i", "0.05", "-W", "1"])
            .arg(addr.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        during();
        // SIGINT: ping prints its summary and exits.
        if let Ok(pid) = i32::try_from(child.id()) {
            sh_quiet(&format!("kill -INT {pid}"));
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // "N packets transmitted, M received, ..."
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary in {text:?}"));
        let nums: Vec<u32> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        (nums[0], nums[1])
    }

    /// The overlay (tun) address of node `i`, if its VPN is up.
    pub fn tun_addr(&self, i: usize) -> Option<Ipv4Addr> {
        tun_addr(&self.nodes[i].ns)
    }

    /// Node `hub` (holding frontend1) and node `i` reach each other on the
    /// overlay, `i` at the address of the slot its status says it holds.
    pub fn overlay_whole(&self, hub: usize, i: usize) -> bool {
        let Some(id) = self.status(i).and_then(|s| s["id"].as_u64()) else {
            return false;
        };
        let Ok(id) = u32::try_from(id) else {
            return false;
        };
        let addr = self
            .layout
            .overlay_addr(Slot::new(self.nodes[i].boot.role, id));
        self.tun_addr(i) == Some(addr)
            && self.ping(
                i,
                self.layout.overlay_addr(Slot::new(Role::Frontend, 1)),
                300,
            )
            && self.ping(hub, addr, 300)
    }

    /// Wait until node `i` has `slot`'s overlay address on its tun.
    pub fn wait_overlay(&self, i: usize, slot: Slot, secs: u64) {
        let want = self.layout.overlay_addr(slot);
        wait_for(
            &format!("{} to be up as {slot} ({want})", self.nodes[i].ns),
            Duration::from_secs(secs),
            || (self.tun_addr(i) == Some(want)).then_some(()),
        );
    }

    /// Move the emulated Elastic IP to the namespace EC2 associates it with
    /// (the hypervisor does this by itself). Returns the holder's index.
    pub async fn follow_eip(&mut self) -> Option<usize> {
        let holder = eip_holder(&self.ec2, &self.eip_alloc).await?;
        move_eip(&self.shared, &holder)
    }

    /// EC2's view of an instance: (state, tags).
    /// Node `i`'s instance once EC2 reports it `stopped` (the power fence
    /// completes in the background of a fabric fence); panics after 30 s.
    pub async fn stopped_instance(&self, i: usize) -> Vec<(String, String)> {
        let start = std::time::Instant::now();
        loop {
            let (state, tags) = self.instance(i).await;
            if state == "stopped" {
                return tags;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} still {state} 30 s on",
                self.nodes[i].ns
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn instance(&self, i: usize) -> (String, Vec<(String, String)>) {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(&self.nodes[i].instance)
            .send()
            .await
            .unwrap();
        let inst = &out.reservations()[0].instances()[0];
        let state = inst.state().unwrap().name().unwrap().as_str().to_string();
        let tags = inst
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or("").to_string(),
                    t.value().unwrap_or("").to_string(),
                )
            })
            .collect();
        (state, tags)
    }

    /// The first alert of `kind` node `i`'s `alerts.notify_command` received
    /// (with `Options::alerts`); panics after `timeout`.
    pub fn alert(&self, i: usize, kind: &str, timeout: Duration) -> serde_json::Value {
        let file = self.nodes[i].dir.join("alerts.jsonl");
        first_alert(&file, kind, &format!("node {i}"), timeout)
    }

    /// Files of node `i`.
    pub fn node_dir(&self, i: usize) -> &Path {
        &self.nodes[i].dir
    }

    /// Run SQL on node `i`'s MariaDB through its socket.
    pub fn sql(&self, i: usize, stmt: &str) -> Result<String, String> {
        db_sql(&self.nodes[i], stmt)
    }

    /// Set up GTID replication (ansible/setup-replication.yml) and start the
    /// worker on the host.
    pub fn start_mysql_chain(&mut self) {
        let inv = self.inventory();
        let out = Command::new("ansible-playbook")
            .arg("-i")
            .arg(&inv)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible/setup-replication.yml"))
            .args(["--skip-tags", "config"])
            .env("ANSIBLE_NOCOLOR", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "setup-replication.yml:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let rabbit = self
            .rabbit
            .as_ref()
            .expect("the worker needs the rabbit option");
        let d = self.dir.path();
        // The worker's MySQL login, in an option file only it reads.
        let cnf = d.join("worker-mysql.cnf");
        std::fs::write(
            &cnf,
            format!("[client]\nuser = {DB_ADMIN}\npassword = {DB_PASSWORD}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&cnf, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let mysql_client = if self.playbook_promotion_only {
            String::new()
        } else {
            format!(
                "mysql_client = [\"mariadb\", \"--defaults-extra-file={}\"]\n",
                cnf.display()
            )
        };
        std::fs::write(
            d.join("worker.toml"),
            format!(
                "[aws]\nfleet = \"{}\"\n[announce]\nrabbitmq_urls = [\"{}\"]\nallow_plain_amqp = true\ncloudwatch_log_group = \"\"\n[alerts]\nnotify_command = [\"/bin/sh\", \"-c\", \"cat >> {}/worker-alerts.jsonl\"]\n[worker]\nstate_dir = \"{}/worker\"\ninventory = \"{}\"\nplaybook = \"{}/ansible/failover.yml\"\nattempts = 3\nretry_backoff = \"1000ms\"\npublishers = [\"{}\"]\n{mysql_client}",
                self.fleet,
                rabbit.url(),
                d.display(),
                d.display(),
                inv.display(),
                env!("CARGO_MANIFEST_DIR"),
                rabbit.user,
            ),
        )
        .unwrap();
        self.start_worker();
        // Steady state before any fault: the worker's first reconcile
        // (MySQL checked against the registry) has run.
        wait_for(
            "the worker's first reconcile",
            Duration::from_secs(60),
            || {
                self.worker_log()
                    .contains("reconcile: MySQL follows the registry")
                    .then_some(())
            },
        );
    }

    /// Start `chainwatch worker` on the host (again: its state, applied
    /// events and the reconciled topology, is kept; its log appended to).
    pub fn start_worker(&mut self) {
        let d = self.dir.path();
        let before = self.worker_log().matches("worker consuming").count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("worker.log"))
            .unwrap();
        let child = super::aws_env(&mut Command::new(bin()), &self.shared.api_endpoint)
            .arg("--config")
            .arg(d.join("worker.toml"))
            .args(["--log-format", "json", "worker"])
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        self.worker = Some(super::ProcGroup(child));
        wait_for("the worker", Duration::from_secs(30), || {
            (self.worker_log().matches("worker consuming").count() > before).then_some(())
        });
    }

    /// Whether node `i`'s server has its role drop-in (the playbook wrote
    /// it after a promotion: a restart of mysqld keeps the role).
    pub fn has_role_drop_in(&self, i: usize) -> bool {
        super::mariadb::role_cnf(&db_dir(&self.nodes[i])).exists()
    }

    /// Kill the worker (SIGKILL), as a crash or its host's outage would.
    pub fn stop_worker(&mut self) {
        self.worker = None;
    }

    /// The first alert of `kind` the worker's `alerts.notify_command`
    /// received; panics after `timeout`.
    pub fn worker_alert(&self, kind: &str, timeout: Duration) -> serde_json::Value {
        let file = self.dir.path().join("worker-alerts.jsonl");
        first_alert(&file, kind, "the worker", timeout)
    }

    /// Wait until node `i` holds backend1 and its server is writable
    /// (promoted); panics after `secs`.
    pub fn wait_writable_backend1(&self, i: usize, secs: u64) {
        wait_for(
            &format!("{} to be the writable backend1", self.nodes[i].ns),
            Duration::from_secs(secs),
            || {
                (self.status(i).is_some_and(|s| s["id"] == 1)
                    && self.sql(i, "SELECT @@read_only").ok()? == "0")
                    .then_some(())
            },
        );
    }

    /// Wait until node `i`'s server replicates (both threads running) from
    /// `backend1.internal`; panics after `secs`.
    pub fn wait_replicating(&self, i: usize, secs: u64) {
        wait_for(
            &format!("{} to replicate from backend1.internal", self.nodes[i].ns),
            Duration::from_secs(secs),
            || {
                let st = self.replica_status(i);
                (st.get("Slave_IO_Running")? == "Yes"
                    && st.get("Slave_SQL_Running")? == "Yes"
                    && st.get("Master_Host")? == "backend1.internal")
                    .then_some(())
            },
        );
    }

    /// Every StopInstances that named an instance other than those of
    /// nodes `dead`: a survivor stopped (empty when only the dead were).
    pub fn survivors_stopped(&self, dead: &[usize]) -> Vec<serde_json::Value> {
        let dead: Vec<&str> = dead
            .iter()
            .map(|&i| self.nodes[i].instance.as_str())
            .collect();
        self.proxy
            .stops()
            .into_iter()
            .filter(|s| {
                s["instances"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|i| !dead.iter().any(|d| i == *d))
            })
            .collect()
    }

    /// The nodes booted as backends, backend1 first.
    pub fn backends(&self) -> Vec<usize> {
        let mut b: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].boot.role == Role::Backend)
            .collect();
        b.sort_by_key(|&i| self.nodes[i].boot.id);
        b
    }

    /// Create `app.w` and an application user (INSERT and SELECT only: no
    /// SUPER, no READ ONLY ADMIN) on backend1, replicated to the others,
    /// and start a client on frontend2 writing to it through
    /// `backend1.internal` until [`Writer::finish`].
    pub fn start_writer(&self) -> Writer {
        self.start_writer_on(1)
    }

    /// The same, the client on node `client`.
    pub fn start_writer_on(&self, client: usize) -> Writer {
        let backends = self.backends();
        self.sql(
            backends[0],
            "CREATE TABLE app.w (v INT PRIMARY KEY); CREATE USER app@'%' IDENTIFIED BY 'app-secret'; GRANT SELECT, INSERT ON app.* TO app@'%'",
        )
        .unwrap();
        for &i in &backends[1..] {
            wait_for(
                "the app user on the replicas",
                Duration::from_secs(30),
                || {
                    (self
                        .sql(i, "SELECT COUNT(*) FROM mysql.user WHERE user = 'app'")
                        .ok()?
                        == "1")
                        .then_some(())
                },
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ns = self.nodes[client].ns.clone();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut v = 0u32;
            while !flag.load(Ordering::Relaxed) {
                v += 1;
                let sent = Instant::now();
                // A write unanswered within 1 s is given up (unacknowledged):
                // a connection to a server that is gone would otherwise hang
                // the client until TCP gives up, and a pause would measure
                // the client, not the fleet.
                let ok = Command::new("timeout")
                    .args(["-s", "KILL", "1", "ip", "netns", "exec", &ns])
                    .args(["mariadb", "--no-defaults", "--connect-timeout=1"])
                    .args(["-h", "backend1.internal", "-uapp", "-papp-secret", "-e"])
                    .arg(format!("INSERT INTO app.w VALUES ({v})"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    acked.push(Ack {
                        value: v,
                        sent,
                        at: Instant::now(),
                    });
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            acked
        });
        Writer { stop, thread }
    }

    /// The acknowledged writes node `i`'s server lacks.
    pub fn lost_writes(&self, i: usize, acked: &[Ack]) -> Vec<u32> {
        let rows = self.sql(i, "SELECT v FROM app.w").unwrap_or_default();
        let rows: std::collections::HashSet<&str> = rows.lines().collect();
        acked
            .iter()
            .map(|a| a.value)
            .filter(|v| !rows.contains(v.to_string().as_str()))
            .collect()
    }

    /// Node `i`'s `SHOW SLAVE STATUS`, field by field (empty when it
    /// replicates from nobody).
    pub fn replica_status(&self, i: usize) -> std::collections::HashMap<String, String> {
        let socket = format!("--socket={}", db_dir(&self.nodes[i]).join("sock").display());
        let out =
            super::mariadb::query(&["--column-names", "-uroot", &socket], "SHOW SLAVE STATUS")
                .unwrap_or_default();
        let mut lines = out.lines();
        match (lines.next(), lines.next()) {
            (Some(names), Some(values)) => names
                .split('\t')
                .zip(values.split('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _ => Default::default(),
        }
    }

    /// Restart node `i`'s mariadbd in the same boot (killed, started again
    /// through the role guard, as its unit's `Restart=` would).
    pub fn restart_mysqld(&self, i: usize) {
        let n = &self.nodes[i];
        let old = self.shared.procs.lock().unwrap()[i].db.take();
        drop(old);
        let proc = super::mariadb::spawn(&db_dir(n), &["ip", "netns", "exec", &n.ns], || {
            db_sql(n, "SELECT 1").is_ok()
        });
        self.shared.procs.lock().unwrap()[i].db = Some(proc);
    }

    /// The worker's log.
    pub fn worker_log(&self) -> String {
        std::fs::read(self.dir.path().join("worker.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn inventory(&self) -> PathBuf {
        let mut text = String::from("[chainwatch_backend]\n");
        for n in self.nodes.iter().filter(|n| n.boot.role == Role::Backend) {
            text.push_str(&format!(
                "{} ansible_connection=local ansible_python_interpreter=/usr/bin/python3 mysql_login_host={u} chainwatch_mysql_address={u} mysql_login_user={DB_ADMIN} mysql_login_password={DB_PASSWORD} instance_id={} chainwatch_id={} chainwatch_role_cnf={} chainwatch_boot_id_file={}\n",
                n.boot.common_name(),
                n.instance,
                n.boot.id,
                super::mariadb::role_cnf(&db_dir(n)).display(),
                super::mariadb::boot_id_file(&db_dir(n)).display(),
                u = n.underlay,
            ));
        }
        text.push_str("[chainwatch_backend:vars]\nchainwatch_repl_password=repl-secret\nchainwatch_become=false\n");
        if self.semi_sync {
            text.push_str("chainwatch_semi_sync=true\n");
        }
        let path = self.dir.path().join("inventory.ini");
        std::fs::write(&path, text).unwrap();
        path
    }
}

#[allow(clippy::too_many_arguments)]
async fn add_node(
    ec2: &Client,
    prefix: &str,
    net: u8,
    bridge: &str,
    i: usize,
    slot: Slot,
    subnet: &str,
    fleet: &str,
    base: &Path,
    layout: &Layout,
) -> Node {
    let ns = format!("{prefix}n{i}");
    let dev = format!("{prefix}v{i}");
    let host_dev = format!("{prefix}h{i}");
    let underlay = Ipv4Addr::new(10, 77, net, 10 + i as u8);
    sh_quiet(&format!("ip netns del {ns}"));
    sh(&format!("ip netns add {ns}"));
    sh(&format!("ip link add {dev} type veth peer name {host_dev}"));
    sh(&format!("ip link set {dev} netns {ns}"));
    sh(&format!("ip link set {host_dev} master {bridge} up"));
    sh(&format!(
        "ip -n {ns} addr add {underlay}/24 dev {dev} && ip -n {ns} link set {dev} up && ip -n {ns} link set lo up"
    ));
    sh(&format!(
        "ip netns exec {ns} sysctl -q -w net.ipv4.ping_group_range='0 2147483647'"
    ));
    // Inside the namespace, /etc/hosts is this file (ip netns exec
    // bind-mounts /etc/netns/<ns>/), so MariaDB and clients resolve
    // backend1.internal like on EC2.
    let etc = PathBuf::from(format!("/etc/netns/{ns}"));
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("hosts"),
        format!("127.0.0.1 localhost\n{}", layout.hosts_block()),
    )
    .unwrap();
    let spec = super::fleet_tags(fleet, slot, &[]);
    let instance = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .subnet_id(subnet)
        .private_ip_address(underlay.to_string())
        .min_count(1)
        .max_count(1)
        .user_data(
            sh(&format!(
                "printf '#cloud-config\\n%s\\n' '{}' | base64 -w0",
                chainwatch::userdata::index_line(slot)
            ))
            .trim(),
        )
        .tag_specifications(spec)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string();
    let dir = base.join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hosts"), layout.hosts_block()).unwrap();
    std::fs::write(
        dir.join("user-data"),
        format!(
            "#cloud-config\n{}\n",
            chainwatch::userdata::index_line(slot)
        ),
    )
    .unwrap();
    Node {
        boot: slot,
        ns,
        dev,
        underlay,
        instance,
        dir,
    }
}

fn write_config(
    node: &Node,
    fleet: &str,
    alloc: &str,
    pki: &Path,
    net: u8,
    rabbit: Option<&Rabbit>,
    opts: &Options,
) {
    let announce = match rabbit {
        Some(r) => format!(
            // The rig's broker is on its bridge, without TLS.
            "[announce]\nrabbitmq_urls = [\"{}\"]\nallow_plain_amqp = true\ncloudwatch_log_group = \"/rig/transitions\"\nretry_max = \"2000ms\"\n",
            r.url()
        ),
        None => "[announce]\ncloudwatch_log_group = \"/rig/transitions\"\n".to_string(),
    };
    let alerts = if opts.alerts {
        format!(
            "[alerts]\nnotify_command = [\"/bin/sh\", \"-c\", \"cat >> {}/alerts.jsonl\"]\n",
            node.dir.display()
        )
    } else {
        String::new()
    };
    // A backend's admin client reaches its own server over the socket
    // (`chainwatch switchover` demotes backend1 with it).
    let service = match (opts.mysql_check, node.boot.role) {
        (check, Role::Backend) if opts.mariadb || check => format!(
            "[service]\n{}mysql_client = [\"mariadb\", \"--no-defaults\", \"--socket={}\", \"-uroot\"]\n",
            if check {
                "check = \"mysql\"\naddress = \"127.0.0.1:3306\"\n"
            } else {
                ""
            },
            db_dir(node).join("sock").display()
        ),
        _ => String::new(),
    };
    std::fs::write(
        node.dir.join("chainwatch.toml"),
        format!(
            r#"[node]
state_dir = "{d}/state"
status_socket = "{d}/status.sock"
hosts_file = "{d}/hosts"
[identity]
user_data_file = "{d}/user-data"
instance_id = "{instance}"
[aws]
fleet = "{fleet}"
elastic_ip_allocation = "{alloc}"
fence_timeout = "20000ms"
fabric_fence = {fabric}
{budget}[vpn]
pki_dir = "{pki}"
template_dir = "{repo}/openvpn"
remote = "10.77.{net}.1"
hook_binary = "{bin}"
up_timeout = "20000ms"
{service}{alerts}{announce}"#,
            d = node.dir.display(),
            instance = node.instance,
            pki = pki.display(),
            repo = env!("CARGO_MANIFEST_DIR"),
            bin = bin().display(),
            fabric = !opts.power_fence_only,
            budget = opts
                .fence_budget
                .map(|n| format!("fence_budget_per_hour = {n}\n"))
                .into_iter()
                .chain(
                    opts.cooldown_secs
                        .map(|n| format!("takeover_cooldown = \"{n}s\"\n"))
                )
                .chain(
                    opts.api_timeout_ms
                        .map(|n| format!("api_timeout = \"{n}ms\"\n"))
                )
                .collect::<String>(),
        ),
    )
    .unwrap();
}

fn tun_addr(ns: &str) -> Option<Ipv4Addr> {
    let out = Command::new("ip")
        .args(["-n", ns, "-4", "-o", "addr", "show", "dev", "cwvpn"])
        .output()
        .ok()?;
    inet(&String::from_utf8_lossy(&out.stdout))
}

/// The address after `inet` in `ip -o addr` output.
fn inet(text: &str) -> Option<Ipv4Addr> {
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
}

fn db_dir(n: &Node) -> PathBuf {
    n.dir.join("mysql")
}

fn install_db(n: &Node) {
    super::mariadb::install(&db_dir(n), 100 + n.boot.id, 3306, "0.0.0.0");
}

fn start_db(shared: &Shared, i: usize) -> Proc {
    let n = &shared.nodes[i];
    // Every boot of the node is a new boot of its host.
    super::mariadb::new_boot(&db_dir(n));
    let proc = super::mariadb::spawn(&db_dir(n), &["ip", "netns", "exec", &n.ns], || {
        db_sql(n, "SELECT 1").is_ok()
    });
    // Not in the binary log: a local transaction on a replica would break
    // GTID strict mode.
    let _ = db_sql(
        n,
        &format!(
            "SET sql_log_bin = 0; CREATE USER IF NOT EXISTS {DB_ADMIN}@'%' IDENTIFIED BY '{DB_PASSWORD}'; GRANT ALL ON *.* TO {DB_ADMIN}@'%' WITH GRANT OPTION"
        ),
    );
    proc
}

fn db_sql(n: &Node, stmt: &str) -> Result<String, String> {
    let socket = format!("--socket={}", db_dir(n).join("sock").display());
    super::mariadb::query(&["-uroot", &socket], stmt)
}

fn boot(shared: &Shared, i: usize) {
    let n = &shared.nodes[i];
    sh_quiet(&format!("ip -n {} link set {} up", n.ns, n.dev));
    let db = (shared.mariadb && n.boot.role == Role::Backend).then(|| start_db(shared, i));
    let daemon = spawn_daemon(shared, i);
    let mut procs = shared.procs.lock().unwrap();
    procs[i] = Procs {
        daemon: Some(daemon),
        db,
        power: Power::Up,
    };
}

/// `chainwatch run` in node `i`'s namespace, logging to its `log`.
fn spawn_daemon(shared: &Shared, i: usize) -> Proc {
    let n = &shared.nodes[i];
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(n.dir.join("log"))
        .unwrap();
    let child = super::aws_env(&mut Command::new("ip"), &shared.api_endpoint)
        .args(["netns", "exec", &n.ns])
        .arg(bin())
        .arg("--config")
        .arg(n.dir.join("chainwatch.toml"))
        .args(["--log-format", "json", "run"])
        .env("CHAINWATCH_LOG", "info")
        .env("CHAINWATCH_TEST_CRASH_FILE", n.dir.join("crash-after"))
        // systemd's notify socket: a test that binds it sees READY=1 and
        // the watchdog pings; unbound, the daemon's sends just fail.
        .env("NOTIFY_SOCKET", n.dir.join("notify.sock"))
        // As under `WatchdogSec=2`: the event loop pings at least every
        // second.
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc(child)
}

fn shutdown(shared: &Shared, i: usize, power: Power) {
    let n = &shared.nodes[i];
    {
        let mut procs = shared.procs.lock().unwrap();
        procs[i].power = power;
        procs[i].daemon = None;
        procs[i].db = None;
    }
    sh_quiet(&format!("ip netns pids {} | xargs -r kill -9", n.ns));
    sh_quiet(&format!("ip -n {} link set {} down", n.ns, n.dev));
}

async fn eip_holder(ec2: &Client, alloc: &str) -> Option<String> {
    Some(
        ec2.describe_addresses()
            .allocation_ids(alloc)
            .send()
            .await
            .ok()?
            .addresses()
            .first()?
            .instance_id()?
            .to_string(),
    )
}

fn move_eip(shared: &Shared, holder: &str) -> Option<usize> {
    let i = shared.nodes.iter().position(|n| n.instance == holder)?;
    let mut current = shared.eip_holder.lock().unwrap();
    if *current != Some(i) {
        let eip = Ipv4Addr::new(10, 77, shared.net, 1);
        if let Some(old) = *current {
            let o = &shared.nodes[old];
            sh_quiet(&format!("ip -n {} addr del {eip}/24 dev {}", o.ns, o.dev));
        }
        let n = &shared.nodes[i];
        sh_quiet(&format!("ip -n {} addr add {eip}/24 dev {}", n.ns, n.dev));
        *current = Some(i);
        // The fabric now knows where the address is (AWS needs no ARP).
        for n in &shared.nodes {
            sh_quiet(&format!("ip -n {} neigh flush all", n.ns));
        }
    }
    Some(i)
}

/// Makes EC2 real: stopped instances die, started ones boot; the Elastic IP
/// follows its association.
fn hypervisor(shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ec2 = ec2_client(&shared.moto_endpoint).await;
        let alloc = {
            let out = ec2.describe_addresses().send().await.ok();
            out.and_then(|o| {
                o.addresses()
                    .first()
                    .and_then(|a| a.allocation_id().map(str::to_string))
            })
        };
        while !stop.load(Ordering::SeqCst) {
            let ids: Vec<String> = shared.nodes.iter().map(|n| n.instance.clone()).collect();
            if let Ok(out) = ec2
                .describe_instances()
                .set_instance_ids(Some(ids))
                .send()
                .await
            {
                for r in out.reservations() {
                    for inst in r.instances() {
                        let Some(i) = shared
                            .nodes
                            .iter()
                            .position(|n| Some(n.instance.as_str()) == inst.instance_id())
                        else {
                            continue;
                        };
                        let state = inst
                            .state()
                            .and_then(|s| s.name())
                            .map(|n| n.as_str().to_string());
                        let (running, power) = {
                            let p = shared.procs.lock().unwrap();
                            (p[i].daemon.is_some(), p[i].power)
                        };
                        match (state.as_deref(), power) {
                            (Some("stopped" | "stopping"), Power::Up) if running => {
                                eprintln!(
                                    "hypervisor: {} stopped in EC2: powering off",
                                    shared.nodes[i].ns
                                );
                                shutdown(&shared, i, Power::Stopped);
                            }
                            (Some("stopped"), Power::Crashed) => {
                                shared.procs.lock().unwrap()[i].power = Power::Stopped;
                            }
                            (Some("running"), Power::Stopped) => {
                                eprintln!(
                                    "hypervisor: {} started in EC2: booting from its user-data",
                                    shared.nodes[i].ns
                                );
                                boot(&shared, i);
                            }
                            _ => {}
                        }
                    }
                }
            }
            if let Some(alloc) = &alloc
                && let Some(holder) = eip_holder(&ec2, alloc).await
            {
                move_eip(&shared, &holder);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A failed scenario shows what each daemon said last: CI keeps
        // nothing else of the fleet.
        if std::thread::panicking() {
            for (i, n) in self.nodes.iter().enumerate() {
                let log = self.log(i);
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!(
                    "--- {} ({}, booted as {}): last {} lines of its log\n{}",
                    n.ns,
                    n.instance,
                    n.boot,
                    tail.len(),
                    tail.join("\n")
                );
            }
        }
        if let Some(h) = self.hypervisor.take() {
            let _ = h.join();
        }
        if let Some(h) = self.watchdog.take() {
            let _ = h.join();
        }
        self.worker = None;
        self.forward = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if let Ok(mut p) = self.shared.procs.lock() {
                p[i] = Procs::default();
            }
            sh_quiet(&format!("ip netns pids {} | xargs -r kill -9", n.ns));
            sh_quiet(&format!("ip netns del {}", n.ns));
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", n.ns));
        }
        sh_quiet(&format!("ip link del {}", self.bridge));
        if std::env::var_os("CHAINWATCH_KEEP_LOGS").is_some() {
            let keep = self.dir.path().to_path_buf();
            eprintln!("fleet logs kept in {}", keep.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().unwrap(),
            ));
        }
    }
}

impl Fleet {
    /// A started chain of frontend1..=n with the hypervisor (the shape of
    /// most scenarios).
    pub async fn frontends(n: u32) -> Fleet {
        Self::frontends_with(n, Options::default()).await
    }

    /// [`Fleet::frontends`] with more options.
    pub async fn frontends_with(n: u32, opts: Options) -> Fleet {
        let slots: Vec<Slot> = (1..=n).map(|id| Slot::new(Role::Frontend, id)).collect();
        let mut f = Fleet::with(
            &slots,
            Options {
                hypervisor: true,
                ..opts
            },
        )
        .await;
        f.start_all().await;
        f
    }

    /// frontend1, frontend2 and backend1..3 with RabbitMQ, MariaDB
    /// replicating from backend1 over the overlay, the worker and the
    /// hypervisor (and whatever else `opts` sets), every identity up, and a
    /// table `app.t` with one row on every backend.
    pub async fn mysql_fleet(opts: Options) -> Fleet {
        Self::mysql_fleet_of(2, opts).await
    }

    /// The same with `frontends` frontends (nodes 0..frontends) before the
    /// three backends.
    pub async fn mysql_fleet_of(frontends: u32, opts: Options) -> Fleet {
        let slots: Vec<Slot> = (1..=frontends)
            .map(|id| Slot::new(Role::Frontend, id))
            .chain((1..=3).map(|id| Slot::new(Role::Backend, id)))
            .collect();
        let mut f = Fleet::with(
            &slots,
            Options {
                rabbit: true,
                mariadb: true,
                worker: true,
                hypervisor: true,
                ..opts
            },
        )
        .await;
        for i in 0..slots.len() {
            f.start(i);
        }
        for (i, s) in slots.iter().enumerate() {
            f.wait_overlay(i, *s, 90);
        }
        f.start_mysql_chain();
        let backends = f.backends();
        f.sql(
            backends[0],
            "CREATE DATABASE app; CREATE TABLE app.t (v INT PRIMARY KEY); INSERT INTO app.t VALUES (1)",
        )
        .unwrap();
        for &i in &backends[1..] {
            wait_for("replicated rows", Duration::from_secs(30), || {
                (f.sql(i, "SELECT COUNT(*) FROM app.t").ok()? == "1").then_some(())
            });
        }
        f
    }

    /// Run SQL as the MariaDB admin from node `i`'s namespace against
    /// `host` (e.g. `backend1.internal`, over the overlay).
    pub fn client_sql(&self, i: usize, host: &str, stmt: &str) -> std::process::Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.nodes[i].ns,
                "mariadb",
                "--no-defaults",
                "--connect-timeout=2",
                "-h",
                host,
            ])
            .arg(format!("-u{DB_ADMIN}"))
            .arg(format!("-p{DB_PASSWORD}"))
            .args(["-e", stmt])
            .output()
            .unwrap()
    }

    /// SIGSTOP backend1's mariadbd (node 2) at a random phase, then wait
    /// (up to 120 s) until backend2 holds backend1 with a writable server
    /// and a write from frontend2 through `backend1.internal` is accepted.
    /// Returns the times from the hang to the promotion and to that write,
    /// and the value written. (The rig's admin user may write to a
    /// read-only replica, so a write counts only once the new primary is
    /// writable: an application user could not write earlier.)
    pub fn hang_primary_mysqld(&self) -> MysqldHang {
        let mysqld = super::pid_in(&self.nodes[2].ns, "mariadbd").expect("backend1's mariadbd");
        std::thread::sleep(Duration::from_millis(rand::random_range(0..1000)));
        let hung = Instant::now();
        super::sh(&format!("kill -STOP {mysqld}"));
        let host_answered = self.ping(3, self.nodes[2].underlay, 1000);
        let mut v = 1000;
        let (mut promoted, mut accepted) = (None, None);
        while accepted.is_none() && hung.elapsed() < Duration::from_secs(120) {
            if promoted.is_none() {
                if self.status(3).is_some_and(|s| s["id"] == 1)
                    && self.sql(3, "SELECT @@read_only").ok().as_deref() == Some("0")
                {
                    promoted = Some(hung.elapsed());
                } else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let out = self.client_sql(
                1,
                "backend1.internal",
                &format!("INSERT INTO app.t VALUES ({v})"),
            );
            if out.status.success() {
                accepted = Some(hung.elapsed());
            } else {
                v += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        MysqldHang {
            host_answered,
            promoted,
            accepted,
            value: v,
        }
    }

    /// Start every node (frontend1 first) and wait until each holds its
    /// overlay address and every watcher sees its peer answer.
    pub async fn start_all(&mut self) {
        self.start(0);
        for i in 1..self.nodes.len() {
            self.start(i);
        }
        for i in 0..self.nodes.len() {
            self.wait_overlay(i, self.nodes[i].boot, 90);
        }
        // Every watcher hears its peer on the overlay (not degraded), in
        // two looks a second apart: a status read just as the overlay came
        // up can show a round that had not yet found it down, and a peer
        // never heard on its judged path keeps the startup grace (a kill
        // then is judged up to probe.startup_grace late).
        for look in 0..2 {
            if look > 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].boot.id > 1 {
                    let peer = self.layout_peer(i);
                    wait_for(
                        "every watcher to hear its peer on the overlay",
                        Duration::from_secs(30),
                        || {
                            self.status(i).filter(|s| {
                                s["peer"] == peer.as_str()
                                    && s["last_rtt_ms"].is_number()
                                    && s["misses"] == 0
                                    && s["degraded"] == false
                            })
                        },
                    );
                }
            }
        }
    }

    /// The common name of the peer node `i` watches at boot (its ID's
    /// predecessor).
    fn layout_peer(&self, i: usize) -> String {
        let b = self.nodes[i].boot;
        Slot::new(b.role, b.id - 1).common_name()
    }

    /// Add nftables rules dropping `percent` % of the packets in and out of
    /// node `i`'s namespace (`tc netem` is not in this kernel).
    pub fn loss(&self, i: usize, percent: u32) {
        let ns = &self.nodes[i].ns;
        sh(&format!(
            "ip netns exec {ns} nft -f - <<'EOF'\ntable inet cwloss {{\n  chain input {{ type filter hook input priority 0; numgen random mod 100 < {percent} counter drop; }}\n  chain output {{ type filter hook output priority 0; numgen random mod 100 < {percent} counter drop; }}\n}}\nEOF"
        ));
    }

    /// Node `i` drops every packet whose source is `from`'s overlay
    /// address: a one-way path fault (nftables table `cwdeaf`).
    pub fn one_way(&self, i: usize, from: Slot) {
        let ns = &self.nodes[i].ns;
        let addr = self.layout.overlay_addr(from);
        sh(&format!(
            "ip netns exec {ns} nft -f - <<'EOF'\ntable inet cwdeaf {{\n  chain input {{ type filter hook input priority 0; ip saddr {addr} counter drop; }}\n}}\nEOF"
        ));
    }

    /// Node `i` drops the ICMP echo requests it sends to `to`'s underlay
    /// (VPC) address: a security group without ICMP on that one path; the
    /// tunnel and everything else pass (nftables table `cwicmp`).
    pub fn drop_icmp_to(&self, i: usize, to: usize) {
        let ns = &self.nodes[i].ns;
        let addr = self.nodes[to].underlay;
        sh(&format!(
            "ip netns exec {ns} nft -f - <<'EOF'\ntable inet cwicmp {{\n  chain output {{ type filter hook output priority 0; ip daddr {addr} icmp type echo-request counter drop; }}\n}}\nEOF"
        ));
    }

    /// Packets dropped so far by node `i`'s ICMP rule.
    pub fn icmp_drops(&self, i: usize) -> u64 {
        self.nft_packets(i, "cwicmp")
    }

    /// Packets dropped so far by node `i`'s one-way rule.
    pub fn one_way_drops(&self, i: usize) -> u64 {
        self.nft_packets(i, "cwdeaf")
    }

    /// Remove the loss rules of node `i`.
    pub fn no_loss(&self, i: usize) {
        sh_quiet(&format!(
            "ip netns exec {} nft delete table inet cwloss",
            self.nodes[i].ns
        ));
    }

    /// Cut node `i` off from everything (its link down) or reconnect it.
    pub fn link(&self, i: usize, up: bool) {
        let n = &self.nodes[i];
        sh(&format!(
            "ip -n {} link set {} {}",
            n.ns,
            n.dev,
            if up { "up" } else { "down" }
        ));
    }

    /// Every "took over" line in the logs, as (node, message).
    pub fn takeovers(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            for l in self.log(i).lines() {
                if l.contains("\"message\":\"took over") || l.contains("\"message\":\"fencing ") {
                    out.push((i, l.to_string()));
                }
            }
        }
        out
    }
}

/// What [`Fleet::hang_primary_mysqld`] saw.
pub struct MysqldHang {
    /// backend1's host answered pings right after the hang.
    pub host_answered: bool,
    /// Hang → backend2 holds backend1 and its server is writable.
    pub promoted: Option<Duration>,
    /// Hang → a write through `backend1.internal` accepted.
    pub accepted: Option<Duration>,
    /// The value of that write.
    pub value: u32,
}
