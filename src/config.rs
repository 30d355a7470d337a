//! The configuration file (`/etc/chainwatch/chainwatch.toml`).
//!
//! Every field has a default (the DESIGN.md layout and timings); a missing
//! default file means "all defaults". Unknown keys are rejected with their
//! name, values are validated before anything starts. Durations are written
//! the humantime way (`"500ms"`, `"2m"`, `"1h 30m"`). Any key can be
//! overridden from the environment as `CHAINWATCH_<SECTION>__<KEY>` (see
//! [`Config::apply_env`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::whole_ms as ms;
use crate::core::CoreConfig;
use crate::layout::{Layout, LayoutConfig, LayoutError};

/// Where the config file is looked for when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/chainwatch/chainwatch.toml";

/// The prefix of the environment layer (`CHAINWATCH_<SECTION>__<KEY>`).
pub const ENV_PREFIX: &str = "CHAINWATCH_";

/// This process's environment, for [`Config::load`] (variables that are
/// not UTF-8 are not config and are passed over).
pub fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// A hint for a key of 0.1's spelling: durations were integers named
/// `*_ms` (or `heartbeat_secs`) and are now humantime strings.
fn renamed_hint(message: &str) -> String {
    let Some(field) = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("unknown field"))
    else {
        return String::new();
    };
    let new = field
        .strip_suffix("_ms")
        .or_else(|| field.strip_suffix("_secs"));
    match new {
        Some(new) => format!(
            "; durations are now written like \"500ms\" or \"2m\": rename `{field}` to `{new}`"
        ),
        None => String::new(),
    }
}

/// Errors reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "cannot read config file {path}: {source}; check the path given with --config or CHAINWATCH_CONFIG"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// A value is out of range.
    #[error("config: `{key}` {reason}")]
    Invalid {
        /// The dotted key, e.g. `probe.timeout_ms`.
        key: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// An environment variable of the config layer is wrong.
    #[error("config: environment {var}: {reason}")]
    Env {
        /// The variable (or variables).
        var: String,
        /// What is wrong.
        reason: String,
    },
    /// The layout is inconsistent.
    #[error("config: [layout]: {0}")]
    Layout(#[from] LayoutError),
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Paths and local settings of this node.
    pub node: NodeConfig,
    /// Where the boot identity comes from.
    pub identity: IdentityConfig,
    /// The probing rule.
    pub probe: ProbeConfig,
    /// Retry back-off of fence and takeover.
    pub retry: RetryConfig,
    /// EC2: the registry and the fence.
    pub aws: AwsConfig,
    /// The supervised OpenVPN process.
    pub vpn: VpnConfig,
    /// The health check of the service the slot exists for.
    pub service: ServiceConfig,
    /// Where transitions are announced.
    pub announce: AnnounceConfig,
    /// `chainwatch worker`.
    pub worker: WorkerConfig,
    /// Alerts to a local command.
    pub alerts: AlertsConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// The members' channel (second opinions).
    #[serde(default)]
    pub members: MembersConfig,
    /// The chain layout.
    pub layout: LayoutConfig,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Directory for the persisted state (and later the outbox).
    pub state_dir: PathBuf,
    /// Unix socket on which `chainwatch run` serves `chainwatch status`.
    pub status_socket: PathBuf,
    /// Hosts file that peer names are resolved from; re-read when it changes.
    pub hosts_file: PathBuf,
    /// Fall back to DNS (system resolver config) for names missing from the
    /// hosts file. Off by default: a DNS outage must not look like a death.
    pub dns_fallback: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            state_dir: "/var/lib/chainwatch".into(),
            status_socket: "/run/chainwatch/status.sock".into(),
            hosts_file: "/etc/hosts".into(),
            dns_fallback: false,
        }
    }
}

/// `[identity]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Read user-data from this file instead of IMDS (for hosts outside EC2
    /// and for tests).
    pub user_data_file: Option<PathBuf>,
    /// IMDS endpoint, e.g. `http://169.254.169.254`. Unset: the SDK's default
    /// (which honours `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    pub imds_endpoint: Option<String>,
    /// This instance's EC2 ID when user-data comes from a file (IMDS tells
    /// it otherwise).
    pub instance_id: Option<String>,
}

/// `[aws]`.
#[serde_with::apply(Duration => #[serde(with = "humantime_serde")])]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Fleet name, the `chainwatch:fleet` tag of every instance; only
    /// instances of this fleet are ever looked up or stopped.
    pub fleet: String,
    /// Region; unset: the SDK's default chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Elastic IP allocation ID that frontend1 owns (moved to a frontend
    /// that becomes frontend1).
    pub elastic_ip_allocation: Option<String>,
    /// How long a fence waits for EC2 to report the instance stopped.
    pub fence_timeout: Duration,
    /// Time between two `DescribeInstances` calls while waiting.
    pub fence_poll: Duration,
    /// How long one API call may take, retries included.
    pub api_timeout: Duration,
    /// Take over once the fabric fence holds (the old holder tagged
    /// `fenced`, so the hub refuses and drops it; for frontend1, the
    /// Elastic IP moved), while EC2 finishes stopping it in the
    /// background. Off: every takeover waits until EC2 reports `stopped`.
    pub fabric_fence: bool,
    /// Fences of one role the fleet may send in one hour (counted from
    /// EC2's `chainwatch:fenced-at` tags); the next one waits for
    /// `chainwatch ack` (or the hour to pass). 0: no budget.
    pub fence_budget_per_hour: u32,
    /// After a fence (the start of a takeover), no new fence by this node
    /// for this long, unless the peer was seen dying with the last one
    /// (look-ahead) or an operator runs `chainwatch ack`. 0: none.
    pub takeover_cooldown: Duration,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            fleet: "chainwatch".into(),
            region: None,
            elastic_ip_allocation: None,
            fence_timeout: Duration::from_millis(120_000),
            fence_poll: Duration::from_millis(500),
            api_timeout: Duration::from_millis(5_000),
            fabric_fence: true,
            fence_budget_per_hour: 3,
            takeover_cooldown: Duration::ZERO,
        }
    }
}

/// Alerts the alerts queue keeps; beyond, the oldest are dropped.
pub const ALERTS_QUEUE_MAX: i64 = 10_000;

/// `[announce]`.
#[serde_with::apply(Duration => #[serde(with = "humantime_serde")])]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnounceConfig {
    /// RabbitMQ URLs, tried in order (`amqp://` or `amqps://`, with user,
    /// password and vhost). Empty: no RabbitMQ sink.
    pub rabbitmq_urls: Vec<String>,
    /// The durable topic exchange; routing key `<role>.takeover`.
    pub exchange: String,
    /// The worker's durable quorum queue.
    pub queue: String,
    /// Dead-letter exchange for events the worker gave up on.
    pub dead_letter_exchange: String,
    /// Its queue.
    pub dead_letter_queue: String,
    /// The queue that keeps the daemons' alerts (bound to `alert.*`, at
    /// most [`ALERTS_QUEUE_MAX`] of them, the oldest dropped first).
    pub alerts_queue: String,
    /// CloudWatch Logs group; one stream per instance. Empty: no CloudWatch
    /// sink.
    pub cloudwatch_log_group: String,
    /// The CloudWatch metric namespace of the embedded metrics.
    pub metric_namespace: String,
    /// Seconds between two `Heartbeat` metrics in the CloudWatch log group
    /// (alarm on missing data: a silent daemon); 0: none.
    pub heartbeat: Duration,
    /// How long one delivery attempt may take.
    pub timeout: Duration,
    /// First retry delay after a failed delivery.
    pub retry_initial: Duration,
    /// Largest retry delay.
    pub retry_max: Duration,
    /// Permit `amqp://` (no TLS) to a broker that is not on loopback: the
    /// broker password and every event then cross the network in clear.
    pub allow_plain_amqp: bool,
    /// A file holding the broker password of every URL that names a user
    /// but no password (read at each connection; owner- or group-readable
    /// only). So the password stays out of the config, and out of the
    /// user-data that embeds it: `render-user-data` moves it here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rabbitmq_password_file: Option<PathBuf>,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            rabbitmq_urls: Vec::new(),
            exchange: "chainwatch".into(),
            queue: "chainwatch.worker".into(),
            dead_letter_exchange: "chainwatch.dlx".into(),
            dead_letter_queue: "chainwatch.dead".into(),
            alerts_queue: "chainwatch.alerts".into(),
            cloudwatch_log_group: "/chainwatch/transitions".into(),
            metric_namespace: "chainwatch".into(),
            heartbeat: Duration::from_secs(60),
            timeout: Duration::from_millis(10_000),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_millis(30_000),
            allow_plain_amqp: false,
            rabbitmq_password_file: None,
        }
    }
}

/// `[members]`: the members' channel. A silent peer is declared dead only
/// when other members, asked over this channel, cannot reach it either.
#[serde_with::apply(Duration => #[serde(with = "humantime_serde")])]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MembersConfig {
    /// The fleet's members key (at least 32 bytes, mode 0600), the same on
    /// every member. Unset: `<vpn.pki_dir>/members.key`, fetched with the
    /// PKI. When the file does not exist the channel is off and the witness
    /// rule alone judges (logged at start).
    pub key_file: Option<PathBuf>,
    /// UDP port of the channel on the overlay, the same on every member.
    pub port: u16,
    /// The quorum: helpers whose failure to reach the peer confirms its
    /// death (every other member in a smaller fleet).
    pub helpers: u32,
    /// How far a datagram's send time may be from the receiver's clock;
    /// older ones are dropped as replays.
    pub window: Duration,
}

impl Config {
    /// What differs from `new` that a running daemon cannot take live (a
    /// reload names them: they need a restart). The probe settings other than
    /// `attempts` and `hub_underlay`, and `[retry]`, change live.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let (old, now) = (self, new);
        [
            ("[node]", old.node != now.node),
            ("[identity]", old.identity != now.identity),
            ("[aws]", old.aws != now.aws),
            ("[vpn]", old.vpn != now.vpn),
            ("[service]", old.service != now.service),
            ("[announce]", old.announce != now.announce),
            ("[worker]", old.worker != now.worker),
            ("[alerts]", old.alerts != now.alerts),
            ("[metrics]", old.metrics != now.metrics),
            ("[members]", old.members != now.members),
            ("[layout]", old.layout != now.layout),
            (
                "probe.attempts and probe.hub_underlay",
                old.probe.attempts != now.probe.attempts
                    || old.probe.hub_underlay != now.probe.hub_underlay,
            ),
        ]
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect()
    }

    /// Take the part of `new` that changes live (see [`Config::restart_needed`]).
    pub fn adopt_live(&mut self, new: &Config) {
        let (attempts, hub) = (self.probe.attempts, self.probe.hub_underlay);
        self.probe = new.probe.clone();
        self.probe.attempts = attempts;
        self.probe.hub_underlay = hub;
        self.retry = new.retry.clone();
    }

    /// The members key file: `members.key_file`, or `members.key` in the
    /// PKI directory.
    pub fn members_key_file(&self) -> PathBuf {
        self.members
            .key_file
            .clone()
            .unwrap_or_else(|| self.vpn.pki_dir.join("members.key"))
    }
}

impl Default for MembersConfig {
    fn default() -> Self {
        MembersConfig {
            key_file: None,
            port: 7947,
            helpers: 3,
            window: Duration::from_millis(10_000),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint and health checks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz` (e.g.
    /// `127.0.0.1:9753`). Unset: no endpoint.
    pub listen: Option<SocketAddr>,
}

/// `[alerts]`: keepalived-style notify command.
#[serde_with::apply(Duration => #[serde(with = "humantime_serde")])]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Program (absolute path) and arguments run for each alert, with the
    /// alert as JSON on standard input. Empty: alerts are only logged.
    pub notify_command: Vec<String>,
    /// How long the command may take; it is killed after.
    pub notify_timeout: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            notify_command: Vec::new(),
            notify_timeout: Duration::from_millis(5000),
        }
    }
}

/// `[worker]`.
#[serde_with::apply(Duration => #[serde(with = "humantime_serde")])]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Where the worker remembers the events it applied.
    pub state_dir: PathBuf,
    /// The `ansible-playbook` binary.
    pub ansible_playbook: PathBuf,
    /// Inventory passed with `-i`.
    pub inventory: PathBuf,
    /// Playbook run for backend events.
    pub playbook: PathBuf,
    /// Playbook run for frontend events; unset: they are only logged.
    pub frontend_playbook: Option<PathBuf>,
    /// How long one playbook run may take.
    pub timeout: Duration,
    /// Runs of a failing playbook before the event is dead-lettered.
    pub attempts: u32,
    /// Time between two runs (doubling).
    pub retry_backoff: Duration,
    /// Broker users allowed to publish events (the broker-validated
    /// `user_id` of each message). Empty: any user of the vhost (logged as
    /// a warning at start).
    pub publishers: Vec<String>,
    /// Check every event against EC2 before applying it: the instance it
    /// names is running and tagged as the holder of the ID at the event's
    /// epoch. Only for fleets without EC2 (tests) may this be off.
    pub verify_registry: bool,
    /// How often the worker compares MySQL's last reconciled topology with
    /// the registry (who holds backend1, which backends run) and runs the
    /// playbook when they differ: a lost, late or dead-lettered event, or a
    /// worker that was down, still ends with MySQL following the registry.
    /// `0s`: only events (needs `verify_registry`).
    pub reconcile_interval: Duration,
    /// The MySQL client with which the worker promotes backend1 itself,
    /// before the playbook runs: a command and its first options, the
    /// credentials in an option file (`["mariadb",
    /// "--defaults-extra-file=/etc/chainwatch/worker-mysql.cnf"]`). Each
    /// backend is reached at its private address (`--host`). Empty: the
    /// playbook alone promotes (about 3 s more of write outage).
    pub mysql_client: Vec<String>,
    /// How long a server may take to apply what it received (its relay
    /// log) before a direct promotion gives up and leaves it to the
    /// playbook (`chainwatch_catchup_timeout_s`, which refuses a stale
    /// replica).
    pub catch_up_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            state_dir: "/var/lib/chainwatch-worker".into(),
            ansible_playbook: "/usr/bin/ansible-playbook".into(),
            inventory: "/usr/share/chainwatch/ansible/inventory/aws_ec2.yml".into(),
            playbook: "/usr/share/chainwatch/ansible/failover.yml".into(),
            frontend_playbook: None,
            timeout: Duration::from_millis(600_000),
            attempts: 3,
            retry_backoff: Duration::from_millis(5_000),
            publishers: Vec::new(),
            verify_registry: true,
            reconcile_interval: Duration::from_millis(5_000),
            mysql_client: Vec::new(),
            catch_up_timeout: Duration::from_millis(30_000),
        }
    }
}

/// `[vpn]`.
#[serde_with::apply(Duration => #[serde(with = "humantime_serde")])]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VpnConfig {
    /// The `openvpn` binary.
    pub openvpn: PathBuf,
    /// PKI directory: `ca.crt`, `issued/<cn>.crt`, `private/<cn>.key`,
    /// `ta.key` (tls-crypt), optional `crl.pem`.
    pub pki_dir: PathBuf,
    /// Directory with `server.conf.tmpl` and `client.conf.tmpl`.
    pub template_dir: PathBuf,
    /// Where the server is reached: host name or address (the Elastic IP's
    /// name, `frontend1` in the hosts block).
    pub remote: String,
    /// Server port.
    pub port: u16,
    /// `udp` or `tcp`.
    pub proto: String,
    /// How long a takeover waits for the new identity to be up.
    pub up_timeout: Duration,
    /// The `chainwatch` binary the server runs as its client-connect hook.
    pub hook_binary: PathBuf,
    /// The user the hub's OpenVPN server drops to once its device is up
    /// and its keys read (`persist-key`, `persist-tun`); its hooks run as
    /// this user too. Clients keep root. Empty: the server keeps root.
    pub user: String,
    /// The group OpenVPN drops to (empty: with `user`, its own group is
    /// not changed).
    pub group: String,
    /// The hook admits a client only from the address of its slot's
    /// holder, by the hub's admission list (the fabric fence). Off: any
    /// client of the layout (only for a hub without EC2, in tests).
    pub verify_holder: bool,
    /// Time between two health checks of the running OpenVPN
    /// through its management interface.
    pub health_interval: Duration,
    /// How long one health check may take; no answer in time is a miss
    /// (a stopped or hung OpenVPN accepts the connection but never answers).
    pub health_timeout: Duration,
    /// Consecutive missed health checks after which OpenVPN is killed
    /// (SIGKILL) and restarted.
    pub health_misses: u32,
}

impl Default for VpnConfig {
    fn default() -> Self {
        VpnConfig {
            openvpn: "/usr/sbin/openvpn".into(),
            pki_dir: "/etc/chainwatch/pki".into(),
            template_dir: "/usr/share/chainwatch/openvpn".into(),
            remote: "frontend1".into(),
            port: 1194,
            proto: "udp".into(),
            up_timeout: Duration::from_millis(30_000),
            hook_binary: "/usr/bin/chainwatch".into(),
            user: "nobody".into(),
            group: "nogroup".into(),
            verify_holder: true,
            health_interval: Duration::from_millis(1000),
            health_timeout: Duration::from_millis(1000),
            health_misses: 3,
        }
    }
}

/// `service.check`: what judges the slot's service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceCheck {
    /// No service check (the host's answer is the health).
    #[default]
    None,
    /// A TCP connect to `service.address`.
    Tcp,
    /// A TCP connect and the MySQL server's greeting.
    Mysql,
    /// `service.command` exits 0.
    Command,
}

impl ServiceCheck {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceCheck::None => "none",
            ServiceCheck::Tcp => "tcp",
            ServiceCheck::Mysql => "mysql",
            ServiceCheck::Command => "command",
        }
    }
}

/// `[service]`: like keepalived's track_script. A holder whose service
/// fails `fall` checks in a row gives up its ID (its VPN identity goes down,
/// its successor fences it and takes over); the identity comes up only
/// after `rise` good checks.
#[serde_with::apply(Duration => #[serde(with = "humantime_serde")])]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// `none` (default), `tcp`, `mysql` or `command`.
    pub check: ServiceCheck,
    /// `tcp` and `mysql`: where the service listens (a loopback address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    /// `command`: the program and its arguments (no shell).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Time between two checks.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Good checks in a row that make the service up.
    pub rise: u32,
    /// Bad checks in a row that make it down.
    pub fall: u32,
    /// `chainwatch switchover` on backend1: the MySQL client (program and
    /// arguments, no shell; `-N -B -e <statement>` is appended) that
    /// reaches this host's server as an admin, to make it read-only before
    /// the handover.
    pub mysql_client: Vec<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            check: ServiceCheck::None,
            address: None,
            command: Vec::new(),
            // Three bad checks in a row, about 1.4 s of a service that does
            // not answer: a hung mysqld fails over within the 10 s budget
            // (rig_mysqld_hung), a stall of a second does not.
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(400),
            rise: 2,
            fall: 3,
            // root over the unix socket (unix_socket authentication).
            mysql_client: vec!["mariadb".into()],
        }
    }
}

/// `[probe]`.
#[serde_with::apply(Duration => #[serde(with = "humantime_serde")])]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Time between the starts of two rounds.
    pub interval: Duration,
    /// How long one probe may take; less than `interval`.
    pub timeout: Duration,
    /// Rounds that ask EC2 as the witness (watching the hub on its
    /// underlay, or any peer while the overlay is down) go at the API's
    /// pace: every `api_interval` (or `interval` if longer)...
    pub api_interval: Duration,
    /// ...with this timeout (or `timeout` if longer), less than
    /// `api_interval`.
    pub api_timeout: Duration,
    /// ICMP echoes per probe, spread evenly over the timeout; the first reply
    /// answers the probe. More than one rides out random packet loss.
    pub attempts: u32,
    /// Consecutive missed rounds that declare the peer dead.
    pub misses: u32,
    /// Underlay (VPC) address of frontend1, used when the node watches the
    /// hub and EC2 cannot be asked (observe mode without AWS).
    pub hub_underlay: Option<Ipv4Addr>,
    /// Time after start during which a peer that never answered is
    /// not declared dead (it may still be booting).
    pub startup_grace: Duration,
    /// How long the hub's overlay may be silent while its underlay
    /// answers before frontend2 counts its rounds as misses (the hub
    /// restarts a hung OpenVPN itself faster than this). Only with the
    /// members' channel on.
    pub hub_overlay_grace: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: Duration::from_millis(250),
            timeout: Duration::from_millis(200),
            api_interval: Duration::from_millis(1000),
            api_timeout: Duration::from_millis(800),
            attempts: 8,
            misses: 3,
            hub_underlay: None,
            startup_grace: Duration::from_millis(30_000),
            hub_overlay_grace: Duration::from_millis(8_000),
        }
    }
}

/// `[retry]`.
#[serde_with::apply(Duration => #[serde(with = "humantime_serde")])]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First delay after a failed fence or takeover.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_millis(30_000),
        }
    }
}

/// A config that passed validation, with its derived parts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file's values (after environment overrides).
    pub config: Config,
    /// The validated layout.
    pub layout: Layout,
    /// Where it was read from; `None` for built-in defaults.
    pub source: Option<PathBuf>,
}

impl Settings {
    /// The core's tunables.
    pub fn core(&self) -> CoreConfig {
        let p = &self.config.probe;
        let r = &self.config.retry;
        CoreConfig {
            interval: p.interval,
            probe_timeout: p.timeout,
            api_interval: p.api_interval,
            api_timeout: p.api_timeout,
            misses: p.misses,
            backoff_initial: r.initial,
            backoff_max: r.max,
            startup_grace: p.startup_grace,
            hub_overlay_grace: p.hub_overlay_grace,
            // Set by the daemon once its members' channel runs.
            second_opinion: false,
        }
    }
}

impl Config {
    /// Parse TOML text (no environment overrides, no validation).
    ///
    /// Errors give the line and column and the parser's reason, never the
    /// text of the line (it may hold a password), and URLs with credentials
    /// quoted in the reason are redacted.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    match key_at(text, line) {
                        Some(key) => format!("line {line}, column {column} (`{key}`): "),
                        None => format!("line {line}, column {column}: "),
                    }
                })
                .unwrap_or_default();
            ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "{at}{}{}",
                    redact_text(e.message().trim_end()),
                    renamed_hint(e.message())
                ),
            }
        })
    }

    /// Load the configuration: `explicit` (from `--config`/`CHAINWATCH_CONFIG`)
    /// must exist; otherwise [`DEFAULT_PATH`] is read if present, else the
    /// defaults are used. Then the environment layer `vars` (see
    /// [`Config::apply_env`]), then validation.
    pub fn load(
        explicit: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let (mut config, source) = match explicit {
            Some(path) => (Self::read(path)?, Some(path.to_path_buf())),
            None => {
                let path = Path::new(DEFAULT_PATH);
                if path.exists() {
                    (Self::read(path)?, Some(path.to_path_buf()))
                } else {
                    (Config::default(), None)
                }
            }
        };
        config.apply_env(vars)?;
        let layout = config.validate()?;
        Ok(Settings {
            config,
            layout,
            source,
        })
    }

    fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The environment layer over the file: `CHAINWATCH_<SECTION>__<KEY>`
    /// sets `<key>` of `[<section>]` (names are matched in lower case, so
    /// `CHAINWATCH_NODE__STATE_DIR` sets `node.state_dir`). A key whose
    /// value is a string, or unset, takes the variable's text as it is;
    /// any other is read as a TOML value (`CHAINWATCH_PROBE__MISSES=2`,
    /// `CHAINWATCH_LAYOUT__MAX_FRONTENDS=4`). Empty variables and those
    /// without `__` are not config (`CHAINWATCH_CONFIG`). Errors name the
    /// variable, never its value.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let mut set = Vec::new();
        for (var, value) in vars {
            let Some((section, key)) = var
                .strip_prefix(ENV_PREFIX)
                .and_then(|rest| rest.split_once("__"))
            else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            set.push((
                var.clone(),
                section.to_lowercase(),
                key.to_lowercase(),
                value,
            ));
        }
        if set.is_empty() {
            return Ok(());
        }
        let bad = |var: &str, reason: String| ConfigError::Env {
            var: var.to_string(),
            reason,
        };
        // Through TOML text (the file's values over the defaults), so the
        // layer reuses the parser and printer the file and the user-data
        // already need instead of a second, typed path through
        // `toml::Value`.
        let mut table: toml::Table = toml::to_string(&*self)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| bad(&set[0].0, "cannot layer the environment".into()))?;
        for (var, section, key, value) in &set {
            let Some(toml::Value::Table(t)) = table.get_mut(section.as_str()) else {
                return Err(bad(var, format!("there is no section [{section}]")));
            };
            let value = match t.get(key.as_str()) {
                None | Some(toml::Value::String(_)) => toml::Value::String(value.clone()),
                Some(_) => format!("v = {value}")
                    .parse::<toml::Table>()
                    .ok()
                    .and_then(|mut v| v.remove("v"))
                    .ok_or_else(|| bad(var, format!("not a TOML value for {section}.{key}")))?,
            };
            t.insert(key.clone(), value);
        }
        *self = toml::from_str(&table.to_string()).map_err(|e: toml::de::Error| {
            let vars: Vec<&str> = set.iter().map(|(v, ..)| v.as_str()).collect();
            bad(
                &vars.join(", "),
                redact_text(e.message().trim_end()) + &renamed_hint(e.message()),
            )
        })?;
        Ok(())
    }

    /// Check every value; returns the validated layout.
    pub fn validate(&self) -> Result<Layout, ConfigError> {
        fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                reason: reason.into(),
            }
        }
        /// `value` (in `unit`) within `range`, or the error that says so
        /// (with `why`, when a bound is another key's value).
        fn within(
            key: &'static str,
            value: impl Into<u64>,
            range: std::ops::RangeInclusive<u64>,
            unit: &str,
            why: &str,
        ) -> Result<(), ConfigError> {
            let value = value.into();
            if range.contains(&value) {
                return Ok(());
            }
            let (lo, hi) = range.into_inner();
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            };
            let reason = format!("must be {lo}..={hi}{unit}{why}, got {value}{unit}");
            Err(invalid(key, reason))
        }
        /// A check's `interval` (100..=60000ms) and its `timeout`: at least
        /// `min` ms, and at most the interval (`below`: less than it).
        fn timing(
            (interval_key, timeout_key): (&'static str, &'static str),
            interval: Duration,
            timeout: Duration,
            min: u64,
            below: bool,
        ) -> Result<(), ConfigError> {
            within(interval_key, ms(interval), 100..=60_000, "ms", "")?;
            let (most, why) = if below {
                (ms(interval).saturating_sub(1), "less than")
            } else {
                (ms(interval), "up to")
            };
            let why = format!("{why} {interval_key}");
            within(timeout_key, ms(timeout), min..=most, "ms", &why)
        }
        for (key, path) in [
            ("node.state_dir", &self.node.state_dir),
            ("node.status_socket", &self.node.status_socket),
            ("node.hosts_file", &self.node.hosts_file),
        ] {
            if !path.is_absolute() {
                return Err(invalid(
                    key,
                    format!("must be an absolute path, got {path:?}"),
                ));
            }
        }
        if let Some(p) = &self.identity.user_data_file
            && !p.is_absolute()
        {
            return Err(invalid(
                "identity.user_data_file",
                format!("must be an absolute path, got {p:?}"),
            ));
        }
        if let Some(e) = &self.identity.imds_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(invalid(
                "identity.imds_endpoint",
                format!("must be an http:// or https:// URL, got {e:?}"),
            ));
        }
        let p = &self.probe;
        timing(
            ("probe.interval", "probe.timeout"),
            p.interval,
            p.timeout,
            10,
            true,
        )?;
        timing(
            ("probe.api_interval", "probe.api_timeout"),
            p.api_interval,
            p.api_timeout,
            10,
            true,
        )?;
        within("probe.attempts", p.attempts, 1..=10, "", "")?;
        within("probe.misses", p.misses, 1..=100, "", "")?;
        let r = &self.retry;
        within("retry.initial", ms(r.initial), 10..=3_600_000, "ms", "")?;
        let from = ms(r.initial);
        within(
            "retry.max",
            ms(r.max),
            from..=3_600_000,
            "ms",
            "from retry.initial",
        )?;
        let a = &self.aws;
        if a.fleet.is_empty()
            || !a
                .fleet
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "aws.fleet",
                format!("must be letters, digits, - or _, got {:?}", a.fleet),
            ));
        }
        let most = ms(a.fence_timeout);
        within(
            "aws.fence_poll",
            ms(a.fence_poll),
            50..=most,
            "ms",
            "up to aws.fence_timeout",
        )?;
        if ms(a.api_timeout) < 100 {
            return Err(invalid(
                "aws.api_timeout",
                format!("must be at least 100ms, got {}ms", ms(a.api_timeout)),
            ));
        }
        let v = &self.vpn;
        if !["udp", "tcp"].contains(&v.proto.as_str()) {
            return Err(invalid(
                "vpn.proto",
                format!("must be `udp` or `tcp`, got {:?}", v.proto),
            ));
        }
        if v.remote.is_empty() || v.remote.contains(char::is_whitespace) {
            return Err(invalid(
                "vpn.remote",
                format!("must be a host name or address, got {:?}", v.remote),
            ));
        }
        if ms(v.up_timeout) < 1000 {
            return Err(invalid(
                "vpn.up_timeout",
                format!("must be at least 1000ms, got {}ms", ms(v.up_timeout)),
            ));
        }
        for (key, name) in [("vpn.user", &v.user), ("vpn.group", &v.group)] {
            let ok = name.len() <= 32
                && name.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_lowercase()
                        || c == '_'
                        || (i > 0 && (c.is_ascii_digit() || c == '-'))
                });
            if !ok {
                return Err(invalid(
                    key,
                    format!(
                        "must be a system user or group name (or empty), got {:?}",
                        crate::layout::printable(name)
                    ),
                ));
            }
        }
        if v.user.is_empty() && !v.group.is_empty() {
            return Err(invalid(
                "vpn.group",
                "needs vpn.user: OpenVPN drops to a group only with a user",
            ));
        }
        let keys = ("vpn.health_interval", "vpn.health_timeout");
        timing(keys, v.health_interval, v.health_timeout, 100, false)?;
        within("vpn.health_misses", v.health_misses, 1..=100, "", "")?;
        for (key, path) in [
            ("vpn.pki_dir", &v.pki_dir),
            ("vpn.template_dir", &v.template_dir),
            ("vpn.openvpn", &v.openvpn),
            ("vpn.hook_binary", &v.hook_binary),
        ] {
            if !path.is_absolute() {
                return Err(invalid(
                    key,
                    format!("must be an absolute path, got {path:?}"),
                ));
            }
        }
        within(
            "probe.hub_overlay_grace",
            ms(self.probe.hub_overlay_grace),
            1000..=600_000,
            "ms",
            "",
        )?;
        let m = &self.members;
        if m.key_file.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err(invalid(
                "members.key_file",
                format!("must be an absolute path, got {:?}", m.key_file),
            ));
        }
        if m.port == 0 {
            return Err(invalid("members.port", "must be 1..=65535, got 0"));
        }
        within("members.helpers", m.helpers, 1..=16, "", "")?;
        within("members.window", ms(m.window), 1000..=300_000, "ms", "")?;
        if self.announce.heartbeat.as_secs() > 86_400 {
            return Err(invalid(
                "announce.heartbeat",
                format!(
                    "must be 0s (off) up to 24h, got {}s",
                    self.announce.heartbeat.as_secs()
                ),
            ));
        }
        let al = &self.alerts;
        if let Some(program) = al.notify_command.first()
            && !Path::new(program).is_absolute()
        {
            return Err(invalid(
                "alerts.notify_command",
                format!("the program must be an absolute path, got {program:?}"),
            ));
        }
        within(
            "alerts.notify_timeout",
            ms(al.notify_timeout),
            100..=300_000,
            "ms",
            "",
        )?;
        let sv = &self.service;
        match sv.check {
            ServiceCheck::Tcp | ServiceCheck::Mysql if sv.address.is_none() => {
                return Err(invalid(
                    "service.address",
                    format!(
                        "must be set (host:port, e.g. \"127.0.0.1:3306\") for check = \"{}\"",
                        sv.check.as_str()
                    ),
                ));
            }
            ServiceCheck::Command
                if sv.command.is_empty() || !Path::new(&sv.command[0]).is_absolute() =>
            {
                return Err(invalid(
                    "service.command",
                    format!(
                        "must be an argv whose program is an absolute path for check = \"command\", got {:?}",
                        sv.command
                    ),
                ));
            }
            _ => {}
        }
        let keys = ("service.interval", "service.timeout");
        timing(keys, sv.interval, sv.timeout, 50, false)?;
        within("service.rise", sv.rise, 1..=100, "", "")?;
        within("service.fall", sv.fall, 1..=100, "", "")?;
        if sv.mysql_client.first().is_none_or(|p| p.is_empty()) {
            return Err(invalid(
                "service.mysql_client",
                "must name the MySQL client program (default [\"mariadb\"])",
            ));
        }
        let n = &self.announce;
        for url in &n.rabbitmq_urls {
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return Err(invalid(
                    "announce.rabbitmq_urls",
                    format!(
                        "must be amqp:// or amqps:// URLs, got {:?}",
                        crate::config::redact(url)
                    ),
                ));
            }
            if n.rabbitmq_password_file.is_some()
                && url::Url::parse(url).is_ok_and(|u| u.password().is_some())
            {
                return Err(invalid(
                    "announce.rabbitmq_urls",
                    format!(
                        "{:?} carries a password, and announce.rabbitmq_password_file is set: keep the password in the file only",
                        crate::config::redact(url)
                    ),
                ));
            }
            if url.starts_with("amqp://") && !n.allow_plain_amqp && !on_loopback(url) {
                return Err(invalid(
                    "announce.rabbitmq_urls",
                    format!(
                        "{:?} is plain amqp:// to a host that is not loopback: the broker password and every event would cross the network in clear; use amqps://, or set announce.allow_plain_amqp = true on a network you trust",
                        crate::config::redact(url)
                    ),
                ));
            }
        }
        for (key, v) in [
            ("announce.exchange", &n.exchange),
            ("announce.queue", &n.queue),
            ("announce.dead_letter_exchange", &n.dead_letter_exchange),
            ("announce.dead_letter_queue", &n.dead_letter_queue),
            ("announce.alerts_queue", &n.alerts_queue),
            ("announce.metric_namespace", &n.metric_namespace),
        ] {
            if v.is_empty() || v.len() > 255 {
                return Err(invalid(key, "must be 1 to 255 characters"));
            }
        }
        if ms(n.timeout) < 100 || ms(n.retry_initial) < 10 || ms(n.retry_max) < ms(n.retry_initial)
        {
            return Err(invalid(
                "announce.timeout",
                "timeout must be at least 100ms, retry_initial at least 10ms, retry_max at least retry_initial",
            ));
        }
        let w = &self.worker;
        within("worker.attempts", w.attempts, 1..=100, "", "")?;
        if ms(w.reconcile_interval) != 0 && ms(w.reconcile_interval) < 1000 {
            return Err(invalid(
                "worker.reconcile_interval",
                format!(
                    "must be 0s (off) or at least 1000ms, got {}ms",
                    ms(w.reconcile_interval)
                ),
            ));
        }
        if ms(w.catch_up_timeout) < 100 || ms(w.catch_up_timeout) > 3_600_000 {
            return Err(invalid(
                "worker.catch_up_timeout",
                format!("must be 100ms to 1h, got {}ms", ms(w.catch_up_timeout)),
            ));
        }
        if w.mysql_client
            .iter()
            .any(|a| a.is_empty() || a.contains('\0'))
        {
            return Err(invalid(
                "worker.mysql_client",
                "every element must be a non-empty string without NUL (or leave the list empty)",
            ));
        }
        if w.mysql_client
            .iter()
            .any(|a| a.starts_with("--password") || (a.starts_with("-p") && a.len() > 2))
        {
            return Err(invalid(
                "worker.mysql_client",
                "holds a password: put it in the client's option file ([client] password = ..., mode 0600) and name the file with --defaults-extra-file",
            ));
        }
        if ms(w.timeout) < 1000 {
            return Err(invalid(
                "worker.timeout",
                format!("must be at least 1000ms, got {}ms", ms(w.timeout)),
            ));
        }
        if self.layout.domain.is_empty()
            || !self
                .layout
                .domain
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(invalid(
                "layout.domain",
                format!(
                    "must be a DNS domain like `internal`, got {:?}",
                    self.layout.domain
                ),
            ));
        }
        Ok(Layout::new(&self.layout)?)
    }
}

/// The dotted key assigned on line `line` (1-based) of a TOML text: the
/// table header above it and the left-hand side of its `=`, if both look
/// like keys. Never the value.
fn key_at(text: &str, line: usize) -> Option<String> {
    let is_key = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?;
    let (lhs, _) = here.split_once('=')?;
    let key = lhs.trim();
    if !is_key(key) {
        return None;
    }
    let table = lines[..line - 1].iter().rev().find_map(|l| {
        let l = l.trim();
        l.strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .map(str::trim)
    });
    Some(match table {
        Some(t) if is_key(t) => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// Redact every URL with credentials inside free text (an error message),
/// word by word; quotes and backticks around a URL are kept.
fn redact_text(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            let inner = word.trim_matches(|c| matches!(c, '"' | '`' | '\'' | ',' | '[' | ']'));
            if inner.contains("://") && inner.contains('@') {
                word.replace(inner, &redact(inner))
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
        .replace('\n', " | ")
}

/// `url` with `password` as its password when it names a user but no
/// password (the URL's own password wins: the config check refuses both);
/// any other URL unchanged. The error never holds the password.
pub fn with_password(url: &str, password: &str) -> Result<String, String> {
    let mut u = url::Url::parse(url).map_err(|_| format!("{} is not a broker URL", redact(url)))?;
    if u.username().is_empty() || u.password().is_some() {
        return Ok(url.to_string());
    }
    // The setter percent-encodes; the AMQP client decodes.
    u.set_password(Some(password))
        .map_err(|()| format!("{} cannot carry a password", redact(url)))?;
    Ok(u.to_string())
}

/// Whether `url`'s host is this machine's loopback (`localhost`,
/// 127.0.0.0/8, `::1`); an unparsable URL is not.
fn on_loopback(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        // amqp:// is not a scheme the parser knows, so an IPv4 address
        // comes back as a name.
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|a| a.is_loopback())
        }
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// Replace the password of a URL with `***`, for logs and errors. Parsed
/// with a URL parser, so passwords holding `/`, `@` or `:` are found; text
/// that is not a URL with credentials comes back as it was, and one that
/// does not parse is withheld whole.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                // Only fails for URLs that cannot have credentials.
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) if url.contains('@') => "<unparsable URL withheld>".to_string(),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_fills_urls_without_a_password_and_never_doubles_one() {
        let p = Path::new("/etc/chainwatch/chainwatch.toml");
        let both = "[announce]\nrabbitmq_urls = [\"amqps://cw:hunter2@mq.internal/vh\"]\nrabbitmq_password_file = \"/etc/chainwatch/pki/broker.password\"\n";
        let e = Config::parse(both, p)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("keep the password in the file only"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let one = both.replace("cw:hunter2@", "cw@");
        assert!(Config::parse(&one, p).unwrap().validate().is_ok());
        // Characters a URL would misread are encoded, and decoded by the
        // client.
        assert_eq!(
            with_password("amqps://cw@mq.internal:5671/vh", "p@ss/w:rd").unwrap(),
            "amqps://cw:p%40ss%2Fw%3Ard@mq.internal:5671/vh"
        );
        // No user, or a password already: unchanged.
        for same in ["amqps://mq.internal/vh", "amqps://cw:own@mq.internal/vh"] {
            assert_eq!(with_password(same, "x").unwrap(), same);
        }
        let e = with_password("not a url", "hunter2").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_worker_s_mysql_client_keeps_its_password_in_an_option_file() {
        let p = Path::new("/etc/chainwatch/chainwatch.toml");
        let check = |client: &str| {
            Config::parse(&format!("[worker]\nmysql_client = {client}\n"), p)
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        assert!(
            check(r#"["mariadb", "--defaults-extra-file=/etc/chainwatch/worker-mysql.cnf"]"#)
                .is_ok()
        );
        assert!(check("[]").is_ok());
        for bad in [
            r#"["mariadb", "-phunter2"]"#,
            r#"["mariadb", "--password=hunter2"]"#,
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.contains("option file") && !e.contains("hunter2"), "{e}");
        }
        assert!(check(r#"["mariadb", ""]"#).is_err());
        let e = Config::parse("[worker]\ncatch_up_timeout = \"10ms\"\n", p)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker.catch_up_timeout"), "{e}");
    }

    #[test]
    fn plain_amqp_beyond_loopback_needs_an_explicit_opt_in() {
        let p = Path::new("/etc/chainwatch/chainwatch.toml");
        let plain = "[announce]\nrabbitmq_urls = [\"amqp://cw:hunter2@mq.internal/vh\"]\n";
        let e = Config::parse(plain, p)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("announce.allow_plain_amqp") && e.contains("amqps://"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        for far in ["10.1.2.3", "127.0.0.1.nip.io", "[fd00::1]"] {
            let text = format!("[announce]\nrabbitmq_urls = [\"amqp://cw:pw@{far}/vh\"]\n");
            let r = Config::parse(&text, p).unwrap().validate();
            assert!(r.is_err(), "{far}");
        }
        let opted = format!("{plain}allow_plain_amqp = true\n");
        assert!(Config::parse(&opted, p).unwrap().validate().is_ok());
        for ok in [
            "amqps://cw:pw@mq.internal:5671/vh",
            "amqp://cw:pw@127.0.0.1:5672/vh",
            "amqp://cw:pw@localhost/vh",
            "amqp://cw:pw@[::1]:5672/vh",
        ] {
            let text = format!("[announce]\nrabbitmq_urls = [\"{ok}\"]\n");
            let r = Config::parse(&text, p).unwrap().validate();
            assert!(r.is_ok(), "{ok}: {r:?}");
        }
    }

    #[test]
    fn config_errors_never_echo_a_password() {
        let p = Path::new("/etc/chainwatch/chainwatch.toml");
        for text in [
            // A syntax error on the line that holds the password.
            "[announce]\nrabbitmq_urls = [\"amqp://cw:hunter2@mq/vh\" oops]\n",
            // A type error that quotes the value.
            "[announce]\nrabbitmq_urls = \"amqp://cw:hunter2@mq/vh\"\n",
        ] {
            let err = Config::parse(text, p).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("line 2"), "{err}");
            assert!(err.contains("announce.rabbitmq_urls"), "{err}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("amqp://cw:s3cret@mq:5672/vh"),
            "amqp://cw:***@mq:5672/vh"
        );
        assert_eq!(
            redact("amqps://cw:p%40ss@mq.internal/%2f"),
            "amqps://cw:***@mq.internal/%2f"
        );
        // A raw `@` in the password: the last `@` ends the credentials.
        let r = redact("amqp://cw:p@ss@mq/vh");
        assert!(!r.contains("p@ss") && !r.contains("p%40ss"), "{r}");
        // A raw `/` in the password makes no URL: withheld whole.
        let r = redact("amqp://cw:pa/ss@mq/vh");
        assert!(!r.contains("pa/ss") && !r.contains("ss@"), "{r}");
        assert_eq!(redact("amqp://mq:5672"), "amqp://mq:5672");
        assert_eq!(redact("amqp://user@mq"), "amqp://user@mq");
        assert_eq!(redact("nonsense"), "nonsense");
    }

    fn parse(text: &str) -> Result<Layout, ConfigError> {
        Config::parse(text, Path::new("test.toml"))?.validate()
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::parse("", Path::new("x")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.validate().unwrap(), Layout::default());
        let s = Settings {
            config: c,
            layout: Layout::default(),
            source: None,
        };
        assert_eq!(s.core(), CoreConfig::default());
    }

    #[test]
    fn the_example_file_is_valid_and_documents_every_default() {
        let text = include_str!("../etc/chainwatch.toml");
        let c = Config::parse(text, Path::new("etc/chainwatch.toml")).unwrap();
        assert_eq!(c, Config::default(), "the example must show the defaults");
        // Every key of the defaults appears in the example, with a comment.
        let defaults = toml::to_string(&Config::default()).unwrap();
        for line in defaults.lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(
                    text.lines().any(|l| l.starts_with(&format!("{key} = "))
                        || l.starts_with(&format!("# {key} = "))),
                    "example lacks {key}"
                );
            }
        }
        for key in [
            "hub_underlay",
            "user_data_file",
            "imds_endpoint",
            "public_address",
        ] {
            assert!(text.contains(&format!("# {key} = ")), "example lacks {key}");
        }
    }

    #[test]
    fn the_minimal_example_is_valid_and_sets_only_what_must_be_set() {
        let text = include_str!("../etc/chainwatch.minimal.toml");
        let c = Config::parse(text, Path::new("etc/chainwatch.minimal.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.aws.fleet, "prod");
        assert!(c.aws.elastic_ip_allocation.is_some());
        assert_eq!(c.aws.fence_budget_per_hour, 3);
        assert_eq!(c.probe, ProbeConfig::default());
        assert!(
            text.lines()
                .filter(|l| l.contains(" = ") && !l.starts_with('#'))
                .count()
                <= 6
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("[probe]\nintervall_ms = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("intervall_ms"), "{err}");
        assert!(err.contains("test.toml"), "{err}");
        let err = parse("[probes]\n").unwrap_err().to_string();
        assert!(err.contains("probes"), "{err}");
        let err = parse("top = 1\n").unwrap_err().to_string();
        assert!(err.contains("top"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn wrong_types_are_rejected() {
        let err = parse("[probe]\nmisses = \"three\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("misses") || err.contains("integer"), "{err}");
        assert!(parse("[probe]\nmisses = -1\n").is_err());
        assert!(parse("[probe]\nhub_underlay = \"10.0.0.300\"\n").is_err());
    }

    #[test]
    fn values_are_validated() {
        let cases = [
            ("[probe]\ntimeout = \"1000ms\"\n", "probe.timeout"),
            (
                "[probe]\ninterval = \"50ms\"\ntimeout = \"20ms\"\n",
                "probe.interval",
            ),
            ("[probe]\nmisses = 0\n", "probe.misses"),
            ("[probe]\nattempts = 0\n", "probe.attempts"),
            ("[retry]\ninitial = \"5ms\"\n", "retry.initial"),
            ("[retry]\nmax = \"100ms\"\n", "retry.max"),
            ("[node]\nstate_dir = \"relative\"\n", "node.state_dir"),
            (
                "[identity]\nimds_endpoint = \"169.254.169.254\"\n",
                "identity.imds_endpoint",
            ),
            ("[layout]\ndomain = \"a..b\"\n", "layout.domain"),
            ("[vpn]\nhealth_interval = \"10ms\"\n", "vpn.health_interval"),
            (
                "[vpn]\nhealth_interval = \"500ms\"\nhealth_timeout = \"900ms\"\n",
                "vpn.health_timeout",
            ),
            ("[vpn]\nhealth_misses = 0\n", "vpn.health_misses"),
            ("[members]\nkey_file = \"k\"\n", "members.key_file"),
            ("[members]\nport = 0\n", "members.port"),
            (
                "[probe]\nhub_overlay_grace = \"5ms\"\n",
                "probe.hub_overlay_grace",
            ),
            ("[members]\nhelpers = 0\n", "members.helpers"),
            ("[members]\nwindow = \"10ms\"\n", "members.window"),
            ("[service]\ncheck = \"mysql\"\n", "service.address"),
            ("[service]\ncheck = \"command\"\n", "service.command"),
            (
                "[service]\ncheck = \"command\"\ncommand = [\"true\"]\n",
                "service.command",
            ),
            ("[service]\ntimeout = \"5000ms\"\n", "service.timeout"),
            ("[service]\nfall = 0\n", "service.fall"),
            (
                "[alerts]\nnotify_command = [\"notify.sh\"]\n",
                "alerts.notify_command",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = parse("[layout]\nbackend_base = 12\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[layout]") && err.contains("overlap"), "{err}");
    }

    #[test]
    fn a_full_file_is_read() {
        let text = r#"
[node]
state_dir = "/srv/cw"
dns_fallback = true
[probe]
interval = "500ms"
timeout = "400ms"
misses = 5
hub_underlay = "10.0.1.5"
[layout]
subnet = "10.9.0.0/24"
max_backends = 3
public_address = "203.0.113.9"
"#;
        let c = Config::parse(text, Path::new("x")).unwrap();
        let l = c.validate().unwrap();
        assert_eq!(c.node.state_dir, PathBuf::from("/srv/cw"));
        assert_eq!(c.probe.hub_underlay, Some(Ipv4Addr::new(10, 0, 1, 5)));
        assert_eq!(l.max_id(crate::layout::Role::Backend), 3);
        assert!(l.hosts_block().contains("203.0.113.9\tfrontend1"));
    }

    #[test]
    fn load_reads_explicit_files_and_applies_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[probe]\nmisses = 4\n").unwrap();
        let s = Config::load(
            Some(&path),
            env(&[
                ("CHAINWATCH_NODE__STATE_DIR", "/tmp/state"),
                ("CHAINWATCH_NODE__HOSTS_FILE", ""),
                ("CHAINWATCH_PROBE__INTERVAL", "2s"),
                ("CHAINWATCH_LAYOUT__MAX_BACKENDS", "4"),
                (
                    "CHAINWATCH_ANNOUNCE__RABBITMQ_URLS",
                    r#"["amqp://localhost/x"]"#,
                ),
                ("CHAINWATCH_IDENTITY__INSTANCE_ID", "i-0123456789abcdef0"),
                ("CHAINWATCH_CONFIG", "/not/a/config/key"),
                ("CHAINWATCH_TEST_CRASH_FILE", "/nor/this"),
            ]),
        )
        .unwrap();
        assert_eq!(s.config.probe.misses, 4, "the file stays under the layer");
        assert_eq!(s.config.node.state_dir, PathBuf::from("/tmp/state"));
        assert_eq!(s.config.node.hosts_file, PathBuf::from("/etc/hosts"));
        assert_eq!(s.config.probe.interval, Duration::from_secs(2));
        assert_eq!(s.layout.max_id(crate::layout::Role::Backend), 4);
        assert_eq!(s.config.announce.rabbitmq_urls, ["amqp://localhost/x"]);
        assert_eq!(
            s.config.identity.instance_id.as_deref(),
            Some("i-0123456789abcdef0")
        );
        assert_eq!(s.source.as_deref(), Some(path.as_path()));
        let missing = dir.path().join("missing.toml");
        let err = Config::load(Some(&missing), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.toml"), "{err}");
        // An override is validated like the file.
        let err = Config::load(Some(&path), env(&[("CHAINWATCH_NODE__STATE_DIR", "rel")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("node.state_dir"), "{err}");
        // A bad variable is named, its value is not (it may be a secret).
        for (var, value, want) in [
            (
                "CHAINWATCH_PROBE__MISSES",
                "s3cr3t-x",
                "CHAINWATCH_PROBE__MISSES",
            ),
            ("CHAINWATCH_NOPE__KEY", "s3cr3t-x", "no section [nope]"),
            ("CHAINWATCH_PROBE__NOPE", "s3cr3t-x", "nope"),
            (
                "CHAINWATCH_PROBE__INTERVAL_MS",
                "500",
                "rename `interval_ms` to `interval`",
            ),
        ] {
            let err = Config::load(Some(&path), env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{var}: {err}");
            assert!(!err.contains("s3cr3t"), "{var}: {err}");
        }
    }

    #[test]
    fn a_reload_names_what_needs_a_restart_and_takes_the_rest() {
        let old = Config::default();
        let mut new = Config::default();
        new.probe.interval = Duration::from_millis(700);
        new.probe.misses = 2;
        new.retry.max = Duration::from_secs(9);
        assert!(old.restart_needed(&new).is_empty());
        new.members.port += 1;
        new.probe.attempts += 1;
        assert_eq!(
            old.restart_needed(&new),
            ["[members]", "probe.attempts and probe.hub_underlay"]
        );
        let mut running = old.clone();
        running.adopt_live(&new);
        assert_eq!(running.probe.interval, Duration::from_millis(700));
        assert_eq!(running.probe.misses, 2);
        assert_eq!(running.retry.max, Duration::from_secs(9));
        assert_eq!(
            running.probe.attempts, old.probe.attempts,
            "needs a restart"
        );
        assert_eq!(running.members, old.members, "needs a restart");
    }
}
