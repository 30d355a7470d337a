//! A fleet of chainwatch instances on this machine: one network namespace per
//! instance on a bridge (the underlay), a test PKI, the real OpenVPN overlay,
//! moto as EC2 with one emulated instance per namespace, and the real
//! `chainwatch run` in each namespace.
//!
//! The bridge lives in the host namespace with the address `.254`, where
//! moto listens; namespaces cannot reach the host's loopback. The Elastic IP
//! of frontend1 is emulated by the address `.1`, which the harness moves to
//! whichever namespace EC2 associates the allocation with
//! ([`Fleet::follow_eip`]).
//!
//! Everything is removed on drop.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use chainwatch::ec2::tags;
use chainwatch::layout::{Layout, Slot};

use super::{Moto, Proc, bin, ec2_client, sh, sh_quiet, wait_for};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// One emulated instance.
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
    /// The running daemon.
    pub daemon: Option<Proc>,
}

/// The fleet.
pub struct Fleet {
    pub prefix: String,
    pub net: u8,
    pub bridge: String,
    pub dir: tempfile::TempDir,
    pub pki: PathBuf,
    pub moto: Moto,
    pub ec2: Client,
    pub fleet: String,
    pub eip_alloc: String,
    pub eip_holder: Option<usize>,
    pub nodes: Vec<Node>,
    pub layout: Layout,
}

impl Fleet {
    /// The underlay address `.host` of this fleet's subnet.
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.net, host)
    }

    /// Build the network, PKI, moto and one instance per slot (not started).
    pub async fn new(slots: &[Slot]) -> Fleet {
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let prefix = format!("cw{}{}", pid % 1000, seq);
        let net = ((pid % 150) as u8).wrapping_add(seq as u8 * 7) % 200 + 20;
        let bridge = format!("{prefix}br");
        // Leftovers of a crashed run with the same name are removed first.
        sh_quiet(&format!("ip link del {bridge}"));
        sh(&format!(
            "ip link add {bridge} type bridge && ip link set {bridge} up"
        ));
        sh(&format!("ip addr add 10.77.{net}.254/24 dev {bridge}"));
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        sh(&format!(
            "{}/openvpn/make-test-pki.sh {} >/dev/null",
            env!("CARGO_MANIFEST_DIR"),
            pki.display()
        ));
        let moto = Moto::start(&format!("10.77.{net}.254"));
        let ec2 = ec2_client(&moto.endpoint).await;
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
        let mut fleet = Fleet {
            prefix,
            net,
            bridge,
            pki,
            moto,
            ec2,
            fleet: format!("rig-{pid}-{seq}"),
            eip_alloc,
            eip_holder: None,
            nodes: Vec::new(),
            layout: Layout::default(),
            dir,
        };
        for (i, slot) in slots.iter().enumerate() {
            fleet.add_node(i, *slot, &subnet).await;
        }
        fleet
    }

    async fn add_node(&mut self, i: usize, slot: Slot, subnet: &str) {
        let ns = format!("{}n{i}", self.prefix);
        let dev = format!("{}v{i}", self.prefix);
        let host_dev = format!("{}h{i}", self.prefix);
        let underlay = self.addr(10 + i as u8);
        sh_quiet(&format!("ip netns del {ns}"));
        sh(&format!("ip netns add {ns}"));
        sh(&format!("ip link add {dev} type veth peer name {host_dev}"));
        sh(&format!("ip link set {dev} netns {ns}"));
        sh(&format!("ip link set {host_dev} master {} up", self.bridge));
        sh(&format!(
            "ip -n {ns} addr add {underlay}/24 dev {dev} && ip -n {ns} link set {dev} up && ip -n {ns} link set lo up"
        ));
        sh(&format!(
            "ip netns exec {ns} sysctl -q -w net.ipv4.ping_group_range='0 2147483647'"
        ));
        let spec = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .tags(Tag::builder().key(tags::FLEET).value(&self.fleet).build())
            .tags(
                Tag::builder()
                    .key(tags::ROLE)
                    .value(slot.role.as_str())
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key(tags::ID)
                    .value(slot.id.to_string())
                    .build(),
            )
            .tags(Tag::builder().key(tags::STATE).value("active").build())
            .build();
        let instance = self
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .subnet_id(subnet)
            .private_ip_address(underlay.to_string())
            .min_count(1)
            .max_count(1)
            .tag_specifications(spec)
            .send()
            .await
            .unwrap()
            .instances()[0]
            .instance_id()
            .unwrap()
            .to_string();
        let dir = self.dir.path().join(&ns);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), self.layout.hosts_block()).unwrap();
        std::fs::write(
            dir.join("user-data"),
            format!(
                "#cloud-config\n{}\n",
                chainwatch::userdata::index_line(slot)
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("chainwatch.toml"),
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
fence_timeout_ms = 20000
[vpn]
pki_dir = "{pki}"
template_dir = "{repo}/openvpn"
remote = "{eip}"
hook_binary = "{bin}"
up_timeout_ms = 20000
"#,
                d = dir.display(),
                fleet = self.fleet,
                alloc = self.eip_alloc,
                pki = self.pki.display(),
                repo = env!("CARGO_MANIFEST_DIR"),
                eip = self.addr(1),
                bin = bin().display(),
            ),
        )
        .unwrap();
        self.nodes.push(Node {
            boot: slot,
            ns,
            dev,
            underlay,
            instance,
            dir,
            daemon: None,
        });
    }

    /// Start `chainwatch run` in node `i`.
    pub fn start(&mut self, i: usize) {
        let n = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.join("log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &n.ns])
            .arg(bin())
            .arg("--config")
            .arg(n.dir.join("chainwatch.toml"))
            .args(["--log-format", "json", "run"])
            .env("AWS_ENDPOINT_URL", &self.moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("CHAINWATCH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[i].daemon = Some(Proc(child));
    }

    /// The instance dies: every process in its namespace is killed and its
    /// link goes down.
    pub fn kill(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        sh_quiet(&format!("ip netns pids {} | xargs -r kill -9", n.ns));
        sh_quiet(&format!("ip -n {} link set {} down", n.ns, n.dev));
        n.daemon = None;
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

    /// Node `i`'s log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("log")).unwrap_or_default()
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

    /// The overlay (tun) address of node `i`, if its VPN is up.
    pub fn tun_addr(&self, i: usize) -> Option<Ipv4Addr> {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.nodes[i].ns,
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                "cwvpn",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
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

    /// Move the emulated Elastic IP (`.1`) to the namespace EC2 associates
    /// the allocation with. Returns the holder's index.
    pub async fn follow_eip(&mut self) -> Option<usize> {
        let holder = self
            .ec2
            .describe_addresses()
            .allocation_ids(&self.eip_alloc)
            .send()
            .await
            .ok()?
            .addresses()
            .first()?
            .instance_id()?
            .to_string();
        let i = self.nodes.iter().position(|n| n.instance == holder)?;
        if self.eip_holder != Some(i) {
            let eip = self.addr(1);
            if let Some(old) = self.eip_holder {
                let o = &self.nodes[old];
                sh_quiet(&format!("ip -n {} addr del {eip}/24 dev {}", o.ns, o.dev));
            }
            let n = &self.nodes[i];
            sh(&format!("ip -n {} addr add {eip}/24 dev {}", n.ns, n.dev));
            self.eip_holder = Some(i);
            // The fabric now knows where the address is (AWS needs no ARP).
            for n in &self.nodes {
                sh_quiet(&format!("ip -n {} neigh flush all", n.ns));
            }
        }
        Some(i)
    }

    /// EC2's view of an instance: (state, tags).
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

    /// Files of node `i`.
    pub fn node_dir(&self, i: usize) -> &Path {
        &self.nodes[i].dir
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.daemon = None;
            sh_quiet(&format!("ip netns pids {} | xargs -r kill -9", n.ns));
            sh_quiet(&format!("ip netns del {}", n.ns));
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
