//! The real `chainwatch run --observe` in network namespaces: it probes its
//! peer by name; when the peer's link goes down it declares the peer dead
//! after the configured misses; when the witness is cut too, it does not.
//!
//! Needs root and `ip` (iproute2). Outside CI it skips loudly without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, bin, have, is_root, prerequisite, sh, sh_quiet, wait_for};

/// Three hosts (witness frontend1, peer backend1, observer backend2) on a
/// bridge that lives in a fourth namespace. Removed on drop.
struct Net {
    prefix: String,
}

impl Net {
    fn ns(&self, x: &str) -> String {
        format!("{}{x}", self.prefix)
    }
    fn dev(&self, x: &str) -> String {
        format!("{}{x}", self.prefix)
    }

    fn new() -> Net {
        let net = Net {
            prefix: format!("cwo{}", std::process::id() % 100_000),
        };
        let b = net.ns("b");
        sh(&format!("ip netns add {b}"));
        sh(&format!(
            "ip -n {b} link add br0 type bridge && ip -n {b} link set br0 up"
        ));
        for (x, ip) in [
            ("w", "192.168.21.1"),
            ("p", "192.168.21.100"),
            ("o", "192.168.21.101"),
        ] {
            let ns = net.ns(x);
            let dev = net.dev(x);
            sh(&format!("ip netns add {ns}"));
            sh(&format!("ip link add {dev} type veth peer name {dev}b"));
            sh(&format!(
                "ip link set {dev} netns {ns} && ip link set {dev}b netns {b}"
            ));
            sh(&format!("ip -n {b} link set {dev}b master br0 up"));
            sh(&format!(
                "ip -n {ns} addr add {ip}/24 dev {dev} && ip -n {ns} link set {dev} up && ip -n {ns} link set lo up"
            ));
        }
        // Unprivileged ICMP for the observer; the witness keeps the default
        // (off), so a daemon there must fall back to a raw socket.
        sh(&format!(
            "ip netns exec {} sysctl -q -w net.ipv4.ping_group_range='0 2147483647'",
            net.ns("o")
        ));
        net
    }

    fn link(&self, x: &str, up: bool) {
        sh(&format!(
            "ip -n {} link set {} {}",
            self.ns(x),
            self.dev(x),
            if up { "up" } else { "down" }
        ));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for x in ["o", "p", "w", "b"] {
            sh_quiet(&format!("ip netns del {}", self.ns(x)));
        }
    }
}

struct Node {
    _proc: Proc,
    config: PathBuf,
    log: PathBuf,
}

impl Node {
    fn start(net: &Net, x: &str, dir: &Path, user_data: &str) -> Node {
        let d = dir.join(x);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("user-data"), user_data).unwrap();
        let hosts = Command::new(bin())
            .arg("hosts")
            .env("CHAINWATCH_CONFIG", "/dev/null")
            .output()
            .unwrap();
        std::fs::write(d.join("hosts"), &hosts.stdout).unwrap();
        let config = d.join("chainwatch.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\nstate_dir = \"{d}/state\"\nstatus_socket = \"{d}/status.sock\"\nhosts_file = \"{d}/hosts\"\n[identity]\nuser_data_file = \"{d}/user-data\"\n",
                d = d.display()
            ),
        )
        .unwrap();
        let log = d.join("log");
        let proc = Proc(
            Command::new("ip")
                .args(["netns", "exec", &net.ns(x)])
                .arg(bin())
                .arg("--config")
                .arg(&config)
                .args(["--log-format", "json", "run", "--observe"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        Node {
            _proc: proc,
            config,
            log,
        }
    }

    fn status(&self) -> Option<serde_json::Value> {
        let out = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(["status", "--json"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    fn wait(
        &self,
        what: &str,
        secs: u64,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for(what, Duration::from_secs(secs), || {
            self.status().filter(|s| f(s))
        })
    }

    /// Log events (JSON lines) with this message prefix.
    fn logged(&self, prefix: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
            .collect()
    }
}

#[test]
fn observe_declares_a_dead_peer_only_while_the_witness_answers() {
    if !prerequisite(
        is_root() && have("ip"),
        "root and iproute2 for network namespaces",
    ) {
        return;
    }
    let net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let obs = Node::start(
        &net,
        "o",
        dir.path(),
        "#cloud-config\n# chainwatch: role=backend id=2\n",
    );

    // Steady state: backend1 answers by name, no misses.
    let s = obs.wait("backend1 answering", 15, |s| {
        s["last_rtt_ms"].is_number() && s["rounds"].as_u64() >= Some(3)
    });
    assert_eq!(s["peer"], "backend1");
    assert_eq!(s["peer_target"], "backend1.internal");
    assert_eq!(s["misses"], 0);
    assert_eq!(s["phase"], "watching");
    assert_eq!(s["icmp_socket"], "dgram");

    // The peer's link goes down: declared dead after exactly 3 misses.
    let cut = Instant::now();
    net.link("p", false);
    obs.wait("backend1 declared dead", 15, |s| s["phase"] == "fencing");
    let declared = cut.elapsed();
    let misses: Vec<u64> = obs
        .logged("backend1 silent")
        .iter()
        .map(|v| v["misses"].as_u64().unwrap())
        .collect();
    assert_eq!(misses, vec![1, 2, 3]);
    let dead = obs.logged("peer declared dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["misses"], 3);
    assert!(!obs.logged("observe mode: would fence backend1").is_empty());
    eprintln!(
        "peer link down -> declared dead: {:.2} s",
        declared.as_secs_f64()
    );

    // It answers again: the (pretend) fence is called off.
    net.link("p", true);
    obs.wait("backend1 back", 15, |s| {
        s["phase"] == "watching" && s["misses"] == 0
    });

    // Peer and witness cut: nobody is accused, however long.
    net.link("p", false);
    net.link("w", false);
    let before = obs.status().unwrap()["rounds"].as_u64().unwrap();
    let s = obs.wait("8 rounds with the witness cut", 20, |s| {
        s["rounds"].as_u64().unwrap() >= before + 8
    });
    assert_eq!(s["phase"], "watching", "{s}");
    assert_eq!(s["misses"], 0);
    assert!(s["cut_off"] == true || s["degraded"] == true, "{s}");
    assert_eq!(
        obs.logged("peer declared dead").len(),
        1,
        "no new declaration"
    );

    // The observer itself cut off (peer and witness fine): nothing either.
    net.link("p", true);
    net.link("w", true);
    obs.wait("the overlay back", 20, |s| {
        s["misses"] == 0 && s["degraded"] == false && s["last_rtt_ms"].is_number()
    });
    net.link("o", false);
    let before = obs.status().unwrap()["rounds"].as_u64().unwrap();
    obs.wait("8 rounds cut off", 20, |s| {
        s["rounds"].as_u64().unwrap() >= before + 8
    });
    assert_eq!(
        obs.logged("peer declared dead").len(),
        1,
        "no new declaration"
    );
    net.link("o", true);

    // An edited hosts file is used without a restart: backend1 now points
    // at an address nobody has, so it is silent and declared dead again.
    obs.wait("backend1 answering again", 20, |s| {
        s["misses"] == 0 && s["phase"] == "watching" && s["degraded"] == false
    });
    let hosts = dir.path().join("o/hosts");
    let text = std::fs::read_to_string(&hosts).unwrap();
    let tmp = dir.path().join("o/hosts.new");
    std::fs::write(&tmp, text.replace("192.168.21.100\t", "192.168.21.200\t")).unwrap();
    std::fs::rename(&tmp, &hosts).unwrap();
    obs.wait("declared dead after the hosts change", 15, |s| {
        s["phase"] == "fencing"
    });
    assert_eq!(obs.logged("peer declared dead").len(), 2);

    // Without ping_group_range the daemon falls back to a raw socket (root).
    let head = Node::start(
        &net,
        "w",
        dir.path(),
        "#cloud-config\n# chainwatch: role=frontend id=1\n",
    );
    let s = head.wait("frontend1 up", 10, |_| true);
    assert_eq!(s["icmp_socket"], "raw");
    assert_eq!(s["phase"], "idle");
}
