//! OpenVPN under chainwatch.
//!
//! chainwatch starts and supervises the `openvpn` process itself: it renders
//! the config for the current identity from the templates in `openvpn/`
//! (the server for frontend1, whose `client-connect` is `chainwatch
//! client-connect`; a client with the certificate of its common name
//! otherwise) and restarts it when it exits. It reads OpenVPN's state from
//! the management interface (a unix socket): an identity is up only when
//! OpenVPN reports `CONNECTED` with the overlay address the layout gives
//! that identity.
//!
//! OpenVPN outlives the daemon: a restart, an upgrade or a crash of
//! chainwatch is not a death, so the overlay address must stay up through
//! it. OpenVPN runs in its own process group, writes its log to
//! `openvpn.log` in the run directory (not to a pipe that would break with
//! the daemon), and its pid and identity are recorded in `openvpn.pid`. A
//! daemon that starts finds it there and *adopts* it when it runs the
//! config this daemon would render for its slot and is `CONNECTED` with the
//! slot's address; anything else is stopped and started afresh. Shutting
//! the daemon down detaches from OpenVPN instead of stopping it.
//!
//! PKI layout (`vpn.pki_dir`): `ca.crt`, `issued/<cn>.crt`,
//! `private/<cn>.key`, `ta.key` (tls-crypt: mandatory, so that the
//! internet-facing server answers nobody without the key), and optionally
//! `crl.pem` (checked by the server when present). A node needs the
//! pair of every common name of its role, since it may take over any of
//! them; frontends also need frontend1's (the server's). Missing or
//! unreadable files stop the daemon at start, not at takeover.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Settings, VpnConfig};
use crate::layout::{Layout, Role, Slot};

/// Errors of the VPN layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VpnError {
    /// A PKI file is missing or unreadable.
    #[error(
        "cannot read {path} ({reason}); every node needs ca.crt and the certificate and key of each common name of its role in vpn.pki_dir (see openvpn/make-test-pki.sh)"
    )]
    Pki {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A template is missing or uses an unknown placeholder.
    #[error("OpenVPN template {path}: {reason}")]
    Template {
        /// The template.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// openvpn could not be started.
    #[error("cannot start {binary}: {reason}; install OpenVPN or set vpn.openvpn")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The error.
        reason: String,
    },
    /// The identity did not come up in time.
    #[error("{slot} not up after {after:?}: last OpenVPN state {last}")]
    NotUp {
        /// The identity.
        slot: Slot,
        /// How long it waited.
        after: Duration,
        /// The last state seen.
        last: String,
    },
    /// The supervisor is gone (shutting down).
    #[error("the OpenVPN supervisor has stopped")]
    Gone,
    /// A switch to another identity came while this one was coming up.
    #[error("{slot} was still coming up when a switch to {by} replaced it")]
    Superseded {
        /// The identity that was coming up.
        slot: Slot,
        /// The identity that replaced it.
        by: Slot,
    },
}

/// Where the rendered configs, the management socket, OpenVPN's log and
/// the hub's admission list live: `<state_dir>/openvpn`.
pub fn run_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("openvpn")
}

/// What the supervisor needs.
#[derive(Debug, Clone)]
pub struct VpnSettings {
    /// From the config file.
    pub cfg: VpnConfig,
    /// The layout.
    pub layout: Layout,
    /// Where rendered configs and the management socket live.
    pub run_dir: PathBuf,
    /// The client-connect command line the server runs.
    pub client_connect: String,
    /// The tls-verify command line the server runs.
    pub tls_verify: String,
    /// The tun device name.
    pub dev: String,
    /// What the hooks read (`<run_dir>/hooks.toml`): the layout, the state
    /// directory and `[vpn]`, nothing secret, so that OpenVPN, dropped to
    /// `vpn.user`, can read it while the daemon's own config (with the
    /// broker's user and URLs) stays root's.
    pub hooks: crate::config::Config,
}

/// The file name of the hooks' config in the run directory.
pub const HOOKS_CONFIG: &str = "hooks.toml";

impl VpnSettings {
    /// The settings of this daemon's OpenVPN: `[vpn]`, the layout, the run
    /// directory under the state directory, and the hooks calling this
    /// binary with the same config file.
    pub fn from_settings(s: &Settings) -> VpnSettings {
        let dir = run_dir(&s.config.node.state_dir);
        let config = dir.join(HOOKS_CONFIG);
        let hook = |name: &str| {
            format!(
                "{} --config {} {name}",
                s.config.vpn.hook_binary.display(),
                config.display()
            )
        };
        let hooks = crate::config::Config {
            layout: s.config.layout.clone(),
            node: crate::config::NodeConfig {
                state_dir: s.config.node.state_dir.clone(),
                ..Default::default()
            },
            vpn: s.config.vpn.clone(),
            ..Default::default()
        };
        VpnSettings {
            cfg: s.config.vpn.clone(),
            layout: s.layout.clone(),
            run_dir: dir,
            client_connect: hook("client-connect"),
            tls_verify: hook("tls-verify"),
            dev: "cwvpn".into(),
            hooks,
        }
    }

    /// The management socket.
    pub fn mgmt(&self) -> PathBuf {
        self.run_dir.join("mgmt.sock")
    }

    fn conf(&self, slot: Slot) -> PathBuf {
        self.run_dir.join(format!("{}.conf", slot.common_name()))
    }

    /// `<pid> <common name>` of the OpenVPN this node runs.
    fn pid_file(&self) -> PathBuf {
        self.run_dir.join("openvpn.pid")
    }

    /// OpenVPN's own log (it outlives the daemon, so not a pipe).
    pub fn log_file(&self) -> PathBuf {
        self.run_dir.join("openvpn.log")
    }

    fn pki(&self, rel: &str) -> PathBuf {
        self.cfg.pki_dir.join(rel)
    }
}

/// Check that every PKI file a node of `role` may need is readable.
pub fn check_pki(s: &VpnSettings, role: Role) -> Result<(), VpnError> {
    let ta = s.pki("ta.key");
    if std::fs::metadata(&ta).is_err() {
        return Err(VpnError::Pki {
            path: ta,
            reason: "the tls-crypt key is mandatory; generate it once with `openvpn --genkey secret ta.key` and give every node the same file".into(),
        });
    }
    let mut files = vec![s.pki("ca.crt"), s.pki("ta.key")];
    // Every ID of the role, frontend1 (the server) included for frontends.
    for slot in (1..=s.layout.max_id(role)).map(|id| Slot::new(role, id)) {
        let cn = slot.common_name();
        files.push(s.pki(&format!("issued/{cn}.crt")));
        files.push(s.pki(&format!("private/{cn}.key")));
    }
    for path in files {
        std::fs::File::open(&path)
            .and_then(|mut f| {
                let mut b = [0u8; 1];
                std::io::Read::read(&mut f, &mut b).map(|_| ())
            })
            .map_err(|e| VpnError::Pki {
                path: path.clone(),
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

/// Render the OpenVPN config of `slot`: the server for frontend1, a client
/// otherwise.
pub fn render(s: &VpnSettings, slot: Slot) -> Result<String, VpnError> {
    let name = if slot.is_hub() {
        "server.conf.tmpl"
    } else {
        "client.conf.tmpl"
    };
    let path = s.cfg.template_dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| VpnError::Template {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let tls_crypt = format!("tls-crypt {}", s.pki("ta.key").display());
    let crl = s.pki("crl.pem");
    let crl_verify = if crl.exists() {
        format!("crl-verify {}", crl.display())
    } else {
        "# no crl.pem in vpn.pki_dir: no revocation list".to_string()
    };
    // The server, which faces the internet, drops root. A client keeps it:
    // when its session ends (a fenced holder cut off, a refused one), it
    // closes its tun and the address goes with it, which an unprivileged
    // client could not reopen (it would keep the address, persist-tun).
    let privileges = if s.cfg.user.is_empty() {
        "# vpn.user is empty: OpenVPN keeps root".to_string()
    } else if !slot.is_hub() {
        "# A client keeps root: its tun, and the address, go when its session ends.".to_string()
    } else {
        let group = if s.cfg.group.is_empty() {
            String::new()
        } else {
            format!("group {}\n", s.cfg.group)
        };
        format!(
            "# Root only to open the device and read the keys; then {}.\nuser {}\n{group}persist-key\npersist-tun",
            s.cfg.user, s.cfg.user
        )
    };
    let vars: Vec<(&str, String)> = vec![
        ("privileges", privileges),
        ("common_name", slot.common_name()),
        ("dev", s.dev.clone()),
        ("proto", s.cfg.proto.clone()),
        ("port", s.cfg.port.to_string()),
        ("remote", s.cfg.remote.clone()),
        ("address", s.layout.overlay_addr(slot).to_string()),
        ("netmask", s.layout.subnet().netmask().to_string()),
        ("pki_dir", s.cfg.pki_dir.display().to_string()),
        ("tls_crypt", tls_crypt),
        ("crl_verify", crl_verify),
        ("client_connect", s.client_connect.clone()),
        ("tls_verify", s.tls_verify.clone()),
        ("management", s.mgmt().display().to_string()),
    ];
    crate::template::render(&text, &vars, &[]).map_err(|e| VpnError::Template {
        path,
        reason: e.to_string(),
    })
}

/// OpenVPN's state as the management interface reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MgmtState {
    /// e.g. `CONNECTED`, `WAIT`, `AUTH`, `GET_CONFIG`, `RECONNECTING`.
    pub name: String,
    /// Detail, e.g. `SUCCESS`, `auth-failure`.
    pub detail: String,
    /// The local tun address, once assigned.
    pub local: Option<Ipv4Addr>,
}

/// Parse one `state` line: `time,NAME,detail,local_ip,remote_ip,...`
/// (optionally prefixed with `>STATE:`).
pub fn parse_state(line: &str) -> Option<MgmtState> {
    let line = line.strip_prefix(">STATE:").unwrap_or(line);
    let mut f = line.split(',');
    let _time: u64 = f.next()?.parse().ok()?;
    let name = f.next()?.to_string();
    let detail = f.next().unwrap_or("").to_string();
    let local = f.next().and_then(|s| s.parse().ok());
    Some(MgmtState {
        name,
        detail,
        local,
    })
}

/// One client session of the server, from `status 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its certificate's common name.
    pub common_name: String,
    /// Where it connects from.
    pub real_ip: Option<Ipv4Addr>,
    /// The management interface's client ID (for `client-kill`).
    pub client_id: u64,
}

/// Parse `status 3` output: the `CLIENT_LIST` rows, by the `HEADER`'s
/// column names.
pub fn parse_sessions(text: &str) -> Vec<Session> {
    let mut cols: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.first() {
            Some(&"HEADER") if f.get(1) == Some(&"CLIENT_LIST") => cols = f[1..].to_vec(),
            Some(&"CLIENT_LIST") => {
                let col = |name: &str| cols.iter().position(|c| *c == name).and_then(|i| f.get(i));
                let (Some(cn), Some(real), Some(cid)) =
                    (col("Common Name"), col("Real Address"), col("Client ID"))
                else {
                    continue;
                };
                let Ok(client_id) = cid.parse() else { continue };
                let ip = real.rsplit_once(':').map_or(*real, |(ip, _)| ip);
                out.push(Session {
                    common_name: cn.to_string(),
                    real_ip: ip.parse().ok(),
                    client_id,
                });
            }
            _ => {}
        }
    }
    out
}

/// Send one command to the management interface and return its answer:
/// the lines up to `END`, or the `SUCCESS:`/`ERROR:` line (`None`: no
/// answer within 2 s).
async fn mgmt_command(mgmt: &Path, cmd: &str) -> Option<String> {
    mgmt_command_within(mgmt, cmd, Duration::from_secs(2)).await
}

/// [`mgmt_command`] with a deadline. A stopped or hung OpenVPN still has
/// its socket's backlog accept the connection, and then never answers.
async fn mgmt_command_within(mgmt: &Path, cmd: &str, deadline: Duration) -> Option<String> {
    let work = async {
        let mut stream = UnixStream::connect(mgmt).await.ok()?;
        stream.write_all(format!("{cmd}\n").as_bytes()).await.ok()?;
        let mut reader = BufReader::new(&mut stream);
        let mut out = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await.ok()? == 0 {
                break;
            }
            let l = line.trim_end();
            if l.starts_with('>') {
                continue;
            }
            if l == "END" || l.starts_with("SUCCESS:") || l.starts_with("ERROR:") {
                out.push_str(l);
                break;
            }
            out.push_str(l);
            out.push('\n');
        }
        let _ = stream.write_all(b"quit\n").await;
        Some(out)
    };
    tokio::time::timeout(deadline, work).await.ok().flatten()
}

/// The common name `status 3` shows for a session that has not finished
/// its TLS handshake.
pub const PENDING_COMMON_NAME: &str = "UNDEF";

/// The server's client sessions (`None`: the interface did not answer).
pub async fn sessions(mgmt: &Path) -> Option<Vec<Session>> {
    mgmt_command(mgmt, "status 3")
        .await
        .map(|t| parse_sessions(&t))
}

/// Disconnect one client session.
pub async fn kill_session(mgmt: &Path, client_id: u64) -> Result<(), String> {
    match mgmt_command(mgmt, &format!("client-kill {client_id}")).await {
        Some(a) if a.starts_with("SUCCESS:") => Ok(()),
        Some(a) => Err(a),
        None => Err("the management interface did not answer".into()),
    }
}

/// Tell every client of the server to reconnect now (`client-kill` sends
/// them a RESTART): the hub does this when it hands its slot over, so that
/// its clients look for the new server at once instead of after the
/// keepalive's silence. How many were told.
pub async fn restart_clients(mgmt: &Path) -> usize {
    let mut told = 0;
    for s in sessions(mgmt).await.unwrap_or_default() {
        if kill_session(mgmt, s.client_id).await.is_ok() {
            told += 1;
        }
    }
    told
}

/// A client that is not connected (waiting on a handshake, perhaps with a
/// hub that died) starts again now (`signal SIGUSR1`): told that a new hub
/// holds the Elastic IP. A connected client is left alone. Whether it was
/// restarted.
pub async fn reconnect_if_down(mgmt: &Path) -> bool {
    match query_state(mgmt).await {
        Some(s) if s.name == "CONNECTED" => false,
        // No state: the daemon is not up, or serves no client here.
        None => false,
        Some(_) => mgmt_command(mgmt, "signal SIGUSR1")
            .await
            .is_some_and(|a| a.starts_with("SUCCESS:")),
    }
}

/// Ask the management interface for the current state.
pub async fn query_state(mgmt: &Path) -> Option<MgmtState> {
    mgmt_command(mgmt, "state")
        .await?
        .lines()
        .rev()
        .find_map(parse_state)
}

/// The health check: the management interface answers `state` within
/// `deadline`. Any state counts (a client waiting for a dead server is not
/// hung); silence does.
///
/// The interface serves one client at a time (the hub's fabric loop uses
/// it too), so a refused connection is tried again until the deadline.
pub async fn answers(mgmt: &Path, deadline: Duration) -> bool {
    let start = Instant::now();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            return false;
        }
        if mgmt_command_within(mgmt, "state", left)
            .await
            .is_some_and(|a| a.lines().any(|l| parse_state(l).is_some()))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50).min(left)).await;
    }
}

enum Cmd {
    Switch {
        slot: Slot,
        reply: oneshot::Sender<Result<Ipv4Addr, VpnError>>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
    Detach {
        reply: oneshot::Sender<()>,
    },
}

/// Handle to the supervisor task.
#[derive(Clone)]
pub struct Vpn {
    tx: mpsc::Sender<Cmd>,
}

impl Vpn {
    /// Bring this node's identity up as `slot` in the background. The daemon
    /// does not wait for it: with the hub dead, a client cannot come up, and
    /// the node must still watch and take over; a takeover's switch replaces
    /// this one if it is still coming up.
    pub fn come_up(self, slot: Slot) {
        tokio::spawn(async move {
            match self.switch(slot).await {
                Ok(addr) => tracing::info!(%slot, %addr, "VPN identity up"),
                Err(e) => {
                    tracing::error!(%slot, "VPN identity not up ({e}); OpenVPN keeps retrying")
                }
            }
        });
    }

    /// Start the supervisor (no OpenVPN yet; call [`Vpn::switch`]).
    pub fn spawn(settings: VpnSettings) -> Vpn {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(supervise(settings, rx));
        Vpn { tx }
    }

    /// Stop the running identity at once, start `slot`, and wait until it is
    /// up (bounded by `vpn.up_timeout`, restarting OpenVPN on exit,
    /// AUTH_FAILED or a wrong address). Returns the overlay address.
    pub async fn switch(&self, slot: Slot) -> Result<Ipv4Addr, VpnError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Switch { slot, reply })
            .await
            .map_err(|_| VpnError::Gone)?;
        rx.await.map_err(|_| VpnError::Gone)?
    }

    /// Stop OpenVPN and the supervisor.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Stop { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stop the supervisor and leave OpenVPN running (daemon shutdown: the
    /// identity stays up for the next daemon to adopt).
    pub async fn detach(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Detach { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A running OpenVPN: started by this daemon, or adopted from a previous one.
enum Handle {
    Child(Child),
    Adopted(Pid),
}

struct Running {
    slot: Slot,
    handle: Handle,
}

impl Running {
    fn pid(&self) -> Option<Pid> {
        match &self.handle {
            Handle::Child(c) => c
                .id()
                .and_then(|p| i32::try_from(p).ok())
                .map(Pid::from_raw),
            Handle::Adopted(p) => Some(*p),
        }
    }

    /// `Some(reason)` once the process has exited.
    fn try_exited(&mut self) -> Option<String> {
        match &mut self.handle {
            Handle::Child(c) => c.try_wait().ok().flatten().map(|s| s.to_string()),
            Handle::Adopted(p) => (!alive(*p)).then(|| "exited".to_string()),
        }
    }

    /// Wait until the process exits.
    async fn wait(&mut self) -> String {
        match &mut self.handle {
            Handle::Child(c) => match c.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            },
            Handle::Adopted(p) => {
                // Not our child: poll. Its parent (init) reaps it.
                while alive(*p) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                "exited".to_string()
            }
        }
    }
}

/// Whether `pid` runs (and is not a zombie).
fn alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // `pid (comm) S ...`: the state follows the last `)`.
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// The OpenVPN a previous daemon left running for `slot`, if it runs the
/// config this daemon renders for `slot` and is connected with its address.
/// A recorded OpenVPN that does not qualify is stopped.
async fn adopt(s: &VpnSettings, slot: Slot) -> Option<Running> {
    let recorded = std::fs::read_to_string(s.pid_file()).ok()?;
    let mut f = recorded.split_whitespace();
    let pid = Pid::from_raw(f.next()?.parse().ok()?);
    let cn = f.next().unwrap_or("");
    // The pid must still be that OpenVPN (pids are reused).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let conf = s.conf(slot);
    let same_process = alive(pid)
        && cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == conf.as_os_str().as_encoded_bytes());
    if !same_process {
        let _ = std::fs::remove_file(s.pid_file());
        return None;
    }
    let want = s.layout.overlay_addr(slot);
    let same_config = std::fs::read_to_string(&conf)
        .ok()
        .zip(render(s, slot).ok())
        .is_some_and(|(on_disk, now)| on_disk == now);
    let state = query_state(&s.mgmt()).await;
    let connected = state
        .as_ref()
        .is_some_and(|st| st.name == "CONNECTED" && st.local == Some(want));
    let mut run = Some(Running {
        slot,
        handle: Handle::Adopted(pid),
    });
    if cn == slot.common_name() && same_config && connected {
        tracing::info!(identity = %slot, %pid, address = %want, "adopted the running OpenVPN: the identity stayed up through the restart");
        return run;
    }
    tracing::warn!(
        identity = %slot, %pid, recorded = cn, same_config, state = ?state.map(|s| s.name),
        "the running OpenVPN is not this slot's, or not connected: restarting it"
    );
    stop_openvpn(&mut run).await;
    None
}

/// Stop every OpenVPN process running a config from this node's run
/// directory that no pid file names (SIGTERM, then SIGKILL after 1.5 s).
async fn stop_orphans(s: &VpnSettings) {
    let mut prefix = s.run_dir.as_os_str().as_encoded_bytes().to_vec();
    prefix.push(b'/');
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let mine = std::process::id();
    let mut orphans = Vec::new();
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == mine {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_openvpn = args.first().is_some_and(|a| a.ends_with(b"openvpn"));
        let ours = args
            .windows(2)
            .any(|w| w[0] == b"--config" && w[1].starts_with(&prefix) && w[1].ends_with(b".conf"));
        if is_openvpn && ours {
            orphans.push(Pid::from_raw(pid));
        }
    }
    for pid in orphans {
        tracing::warn!(%pid, "an OpenVPN of this node that no record names holds the tunnel (its run directory was lost): stopping it");
        let _ = kill(pid, Signal::SIGTERM);
        let started = Instant::now();
        while alive(pid) && started.elapsed() < Duration::from_millis(1500) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if alive(pid) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

async fn spawn_openvpn(s: &VpnSettings, slot: Slot) -> Result<Child, VpnError> {
    let spawn_err = |reason: String| VpnError::Spawn {
        binary: s.cfg.openvpn.clone(),
        reason,
    };
    prepare_run_dir(s).map_err(spawn_err)?;
    let conf = s.conf(slot);
    std::fs::write(&conf, render(s, slot)?).map_err(|e| spawn_err(e.to_string()))?;
    let _ = std::fs::remove_file(s.mgmt());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.log_file())
        .map_err(|e| spawn_err(format!("{}: {e}", s.log_file().display())))?;
    let err_log = log.try_clone().map_err(|e| spawn_err(e.to_string()))?;
    // Its own process group, its output in a file, not killed with this
    // process: it must outlive a restart of the daemon.
    let child = Command::new(&s.cfg.openvpn)
        .arg("--config")
        .arg(&conf)
        // systemd's readiness is the daemon's to tell (OpenVPN would say
        // READY=1 before this node's identity is up).
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| spawn_err(e.to_string()))?;
    if let Some(pid) = child.id() {
        let record = format!("{pid} {}\n", slot.common_name());
        if let Err(e) = crate::fsio::write_atomic(&s.pid_file(), record.as_bytes()) {
            tracing::warn!(file = %s.pid_file().display(), "cannot record the OpenVPN pid ({e}): a restarted daemon will not adopt it");
        }
    }
    tracing::info!(identity = %slot, config = %conf.display(), log = %s.log_file().display(), "openvpn started");
    Ok(child)
}

/// The run directory, and in it the hooks' config: OpenVPN's hooks run as
/// `vpn.user` once it dropped root, so the directory may be traversed (not
/// listed) by anyone, and the hooks' config and the admission list, which
/// hold nothing secret, may be read by anyone; the rest stays root's.
fn prepare_run_dir(s: &VpnSettings) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&s.run_dir).map_err(|e| format!("{}: {e}", s.run_dir.display()))?;
    std::fs::set_permissions(&s.run_dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| format!("{}: {e}", s.run_dir.display()))?;
    // The state directory above it (0700 when the daemon made it for its
    // outbox or state file): traversable too, still not listable.
    if let Some(state) = s.run_dir.parent() {
        let mode = std::fs::metadata(state)
            .map_err(|e| format!("{}: {e}", state.display()))?
            .permissions()
            .mode();
        if mode & 0o011 != 0o011 {
            std::fs::set_permissions(state, std::fs::Permissions::from_mode(mode | 0o011))
                .map_err(|e| format!("{}: {e}", state.display()))?;
        }
    }
    let text = toml::to_string(&s.hooks).map_err(|e| format!("the hooks' config: {e}"))?;
    let path = s.run_dir.join(HOOKS_CONFIG);
    crate::fsio::write_atomic_mode(&path, text.as_bytes(), 0o644)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Stop OpenVPN: SIGTERM (no explicit-exit-notify in the configs, so it
/// ends at once), SIGKILL if it is still there after 1.5 s; reaped.
async fn stop_openvpn(run: &mut Option<Running>) {
    end_openvpn(run, Signal::SIGTERM, Duration::from_millis(1500)).await;
}

/// Kill a hung OpenVPN at once (SIGTERM would stay pending in a stopped
/// process) and reap it.
async fn kill_openvpn(run: &mut Option<Running>) {
    end_openvpn(run, Signal::SIGKILL, Duration::from_millis(2000)).await;
}

/// Send `first`, then SIGKILL if it is still there after `grace`, and reap
/// it; one that survives SIGKILL too (uninterruptible) is left behind.
async fn end_openvpn(run: &mut Option<Running>, first: Signal, grace: Duration) {
    let Some(mut r) = run.take() else {
        return;
    };
    let mut signal = first;
    loop {
        if let Some(pid) = r.pid() {
            let _ = kill(pid, signal);
        }
        if tokio::time::timeout(grace, r.wait()).await.is_ok() {
            tracing::info!(identity = %r.slot, "openvpn stopped");
            return;
        }
        if signal == Signal::SIGKILL {
            tracing::error!(identity = %r.slot, "openvpn survived SIGKILL for {grace:?} (uninterruptible?); starting a new one anyway");
            return;
        }
        signal = Signal::SIGKILL;
    }
}

async fn bring_up(
    s: &VpnSettings,
    slot: Slot,
    run: &mut Option<Running>,
) -> Result<Ipv4Addr, VpnError> {
    let want = s.layout.overlay_addr(slot);
    let timeout = s.cfg.up_timeout;
    let start = Instant::now();
    let mut last = "not started".to_string();
    let mut delays = crate::backoff::delays(Duration::from_millis(250), Duration::from_secs(2));
    if run.is_none() {
        if let Some(adopted) = adopt(s, slot).await {
            *run = Some(adopted);
            return Ok(want);
        }
        // An OpenVPN of this node that no record names (its run directory
        // was lost with the state directory) still holds the tunnel: it is
        // stopped, or the new one could not open it.
        stop_orphans(s).await;
    }
    loop {
        if run.is_none() {
            match spawn_openvpn(s, slot).await {
                Ok(child) => {
                    *run = Some(Running {
                        slot,
                        handle: Handle::Child(child),
                    })
                }
                Err(e @ (VpnError::Template { .. } | VpnError::Spawn { .. })) => return Err(e),
                Err(e) => last = e.to_string(),
            }
        }
        if let Some(r) = run.as_mut()
            && let Some(status) = r.try_exited()
        {
            tracing::warn!(identity = %slot, %status, "openvpn exited while coming up (AUTH_FAILED or error); restarting");
            last = format!("exited ({status})");
            *run = None;
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(2))).await;
            continue;
        }
        match query_state(&s.mgmt()).await {
            Some(st) if st.name == "CONNECTED" && st.local == Some(want) => {
                tracing::info!(identity = %slot, address = %want, "identity up");
                return Ok(want);
            }
            Some(st) if st.name == "CONNECTED" => {
                tracing::warn!(identity = %slot, got = ?st.local, %want, "connected with the wrong address; restarting");
                last = format!("CONNECTED with {:?}", st.local);
                stop_openvpn(run).await;
            }
            Some(st) => last = format!("{} {}", st.name, st.detail),
            None => {}
        }
        if start.elapsed() >= timeout {
            return Err(VpnError::NotUp {
                slot,
                after: start.elapsed(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn supervise(s: VpnSettings, mut rx: mpsc::Receiver<Cmd>) {
    let mut run: Option<Running> = None;
    let mut health = tokio::time::interval(s.cfg.health_interval);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let health_deadline = s.cfg.health_timeout;
    let mut silent = 0u32;
    loop {
        let running = run.is_some();
        let exited = async {
            match run.as_mut() {
                Some(r) => r.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Cmd::Switch { slot, reply }) => {
                    silent = 0;
                    // A switch that comes while an identity is still coming
                    // up (the boot's, with its server dead, say) replaces it
                    // rather than waiting for it to time out.
                    let mut next = Some((slot, reply));
                    while let Some((slot, reply)) = next.take() {
                        stop_openvpn(&mut run).await;
                        tokio::select! {
                            result = bring_up(&s, slot, &mut run) => {
                                let _ = reply.send(result);
                            }
                            cmd = rx.recv() => match cmd {
                                Some(Cmd::Switch { slot: by, reply: newer }) => {
                                    tracing::info!(identity = %slot, replaced_by = %by, "switching to {by} before {slot} came up");
                                    let _ = reply.send(Err(VpnError::Superseded { slot, by }));
                                    next = Some((by, newer));
                                }
                                Some(Cmd::Stop { reply: stopped }) => {
                                    let _ = reply.send(Err(VpnError::Gone));
                                    stop_openvpn(&mut run).await;
                                    let _ = stopped.send(());
                                    return;
                                }
                                Some(Cmd::Detach { reply: detached }) => {
                                    let _ = reply.send(Err(VpnError::Gone));
                                    let _ = detached.send(());
                                    return;
                                }
                                None => return,
                            },
                        }
                    }
                }
                Some(Cmd::Stop { reply }) => {
                    stop_openvpn(&mut run).await;
                    let _ = reply.send(());
                    return;
                }
                Some(Cmd::Detach { reply }) => {
                    if let Some(r) = &run {
                        tracing::info!(identity = %r.slot, "leaving OpenVPN running for the next daemon");
                    }
                    let _ = reply.send(());
                    return;
                }
                None => return,
            },
            _ = health.tick(), if running => {
                if answers(&s.mgmt(), health_deadline).await {
                    if silent > 0 {
                        tracing::info!(checks = silent, "openvpn answers its management interface again");
                    }
                    silent = 0;
                    continue;
                }
                silent += 1;
                let Some(slot) = run.as_ref().map(|r| r.slot) else { continue };
                if silent < s.cfg.health_misses {
                    tracing::warn!(identity = %slot, checks = silent, of = s.cfg.health_misses, "openvpn did not answer its management interface within {health_deadline:?}");
                    continue;
                }
                tracing::error!(identity = %slot, checks = silent, "OPENVPN HUNG: its management interface did not answer {silent} checks in a row; killing it (SIGKILL) and restarting it");
                silent = 0;
                kill_openvpn(&mut run).await;
                super::metrics::OPENVPN_RESTARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match spawn_openvpn(&s, slot).await {
                    Ok(child) => run = Some(Running { slot, handle: Handle::Child(child) }),
                    Err(e) => tracing::error!(identity = %slot, "cannot restart openvpn: {e}"),
                }
            }
            status = exited => {
                silent = 0;
                let slot = run.as_ref().map(|r| r.slot);
                run = None;
                if let Some(slot) = slot {
                    tracing::warn!(identity = %slot, status = %status, "openvpn exited; restarting in 1 s");
                    super::metrics::OPENVPN_RESTARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match spawn_openvpn(&s, slot).await {
                        Ok(child) => run = Some(Running { slot, handle: Handle::Child(child) }),
                        Err(e) => tracing::error!(identity = %slot, "cannot restart openvpn: {e}"),
                    }
                }
            }
        }
    }
}

/// Tell systemd READY once this node's VPN identity is up (OpenVPN says
/// CONNECTED with this slot's overlay address), checked every 500 ms; at
/// once in observe mode (no OpenVPN). The daemon watches and takes over
/// before that; `TimeoutStartSec=infinity` in the unit lets it wait for a
/// hub that is down.
pub async fn notify_ready_when_up(
    mgmt: Option<PathBuf>,
    reports: tokio::sync::watch::Receiver<crate::shell::StatusReport>,
) {
    if let Some(mgmt) = mgmt {
        loop {
            let want = reports.borrow().overlay_addr;
            if let Some(st) = query_state(&mgmt).await
                && st.name == "CONNECTED"
                && st.local == Some(want)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    tracing::info!("ready: the VPN identity is up");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> VpnSettings {
        VpnSettings {
            cfg: VpnConfig {
                pki_dir: dir.join("pki"),
                template_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("openvpn"),
                ..VpnConfig::default()
            },
            layout: Layout::default(),
            run_dir: dir.join("run"),
            client_connect:
                "/usr/bin/chainwatch --config /etc/chainwatch/chainwatch.toml client-connect".into(),
            tls_verify: "/usr/bin/chainwatch --config /etc/chainwatch/chainwatch.toml tls-verify"
                .into(),
            dev: "cwvpn".into(),
            hooks: crate::config::Config::default(),
        }
    }

    #[test]
    fn openvpn_drops_root_once_up_and_its_hooks_read_a_config_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        let conf = render(&s, Slot::new(Role::Frontend, 1)).unwrap();
        assert!(
            conf.contains("\nuser nobody\ngroup nogroup\npersist-key\npersist-tun\n"),
            "{conf}"
        );
        let client = render(&s, Slot::new(Role::Backend, 2)).unwrap();
        assert!(!client.contains("\nuser ") && !client.contains("persist-tun"));
        s.cfg.user = String::new();
        s.cfg.group = String::new();
        let conf = render(&s, Slot::new(Role::Frontend, 1)).unwrap();
        assert!(!conf.contains("\nuser ") && !conf.contains("persist-tun"));

        // The hooks' config: the layout, the state directory and [vpn],
        // readable by anyone; none of the daemon's secrets.
        let mut c = crate::config::Config::default();
        c.node.state_dir = dir.path().join("state");
        c.announce.rabbitmq_urls = vec!["amqps://cw:hunter2@mq.internal/vh".into()];
        c.layout.max_frontends = 4;
        let settings = Settings {
            layout: Layout::new(&c.layout).unwrap(),
            config: c,
            source: None,
        };
        let v = VpnSettings::from_settings(&settings);
        let hooks = v.run_dir.join(HOOKS_CONFIG);
        assert!(
            v.client_connect
                .contains(&format!("--config {} client-connect", hooks.display()))
        );
        prepare_run_dir(&v).unwrap();
        let text = std::fs::read_to_string(&hooks).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("mq.internal"),
            "{text}"
        );
        let back = crate::config::Config::parse(&text, &hooks).unwrap();
        assert_eq!(back.layout.max_frontends, 4);
        assert_eq!(back.node.state_dir, dir.path().join("state"));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&hooks), 0o644);
        assert_eq!(mode(&v.run_dir), 0o711);
        // A state directory the daemon made owner-only (for its outbox)
        // becomes traversable for the hooks, not listable.
        let state = dir.path().join("state");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        prepare_run_dir(&v).unwrap();
        assert_eq!(mode(&state), 0o711);
    }

    #[test]
    fn server_and_client_configs_are_rendered_from_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let server = render(&s, Slot::new(Role::Frontend, 1)).unwrap();
        assert!(server.contains("\nmode server\n"));
        assert!(server.contains("\nifconfig 192.168.21.1 255.255.255.0\n"));
        assert!(server.contains("issued/frontend1.crt"));
        assert!(server.contains("client-connect \"/usr/bin/chainwatch --config /etc/chainwatch/chainwatch.toml client-connect\""));
        assert!(!server.contains("{{"));
        let client = render(&s, Slot::new(Role::Backend, 2)).unwrap();
        assert!(client.contains("\nclient\n"));
        assert!(client.contains("\nremote frontend1 1194\n"));
        assert!(client.contains("private/backend2.key"));
        assert!(client.contains(&format!(
            "management {}/run/mgmt.sock unix",
            dir.path().display()
        )));
        assert!(client.contains("\ntls-crypt "));
        assert!(client.contains("\nremote-cert-tls server\n"));
        assert!(server.contains("\ntls-crypt "));
        assert!(server.contains("\nremote-cert-tls client\n"));
        assert!(!server.contains("crl-verify"));
        std::fs::create_dir_all(dir.path().join("pki")).unwrap();
        std::fs::write(dir.path().join("pki/crl.pem"), "c").unwrap();
        assert!(
            render(&s, Slot::new(Role::Frontend, 1))
                .unwrap()
                .contains("\ncrl-verify ")
        );
    }

    #[test]
    fn unknown_placeholders_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.cfg.template_dir = dir.path().to_path_buf();
        std::fs::write(dir.path().join("client.conf.tmpl"), "remote {{remot}}\n").unwrap();
        let err = render(&s, Slot::new(Role::Backend, 2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("{{remot}}"), "{err}");
    }

    #[test]
    fn missing_pki_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let pki = dir.path().join("pki");
        std::fs::create_dir_all(pki.join("issued")).unwrap();
        std::fs::create_dir_all(pki.join("private")).unwrap();
        std::fs::write(pki.join("ca.crt"), "x").unwrap();
        let err = check_pki(&s, Role::Backend).unwrap_err().to_string();
        assert!(
            err.contains("ta.key") && err.contains("openvpn --genkey secret ta.key"),
            "{err}"
        );
        std::fs::write(pki.join("ta.key"), "x").unwrap();
        for id in 1..=5 {
            std::fs::write(pki.join(format!("issued/backend{id}.crt")), "x").unwrap();
            std::fs::write(pki.join(format!("private/backend{id}.key")), "x").unwrap();
        }
        check_pki(&s, Role::Backend).unwrap();
        std::fs::remove_file(pki.join("private/backend4.key")).unwrap();
        let err = check_pki(&s, Role::Backend).unwrap_err().to_string();
        assert!(err.contains("private/backend4.key"), "{err}");
        let err = check_pki(&s, Role::Frontend).unwrap_err().to_string();
        assert!(err.contains("issued/frontend1.crt"), "{err}");
    }

    #[test]
    fn status_3_client_rows_are_parsed_by_their_header() {
        let text = "TITLE\tOpenVPN 2.6.3\nTIME\t2026-11-25 19:00:00\t1795000000\nHEADER\tCLIENT_LIST\tCommon Name\tReal Address\tVirtual Address\tVirtual IPv6 Address\tBytes Received\tBytes Sent\tConnected Since\tConnected Since (time_t)\tUsername\tClient ID\tPeer ID\tData Channel Cipher\nCLIENT_LIST\tbackend2\t10.0.1.12:41234\t192.168.21.101\t\t100\t200\t2026-11-25 18:59:00\t1795000000\tUNDEF\t7\t0\tAES-256-GCM\nCLIENT_LIST\tfrontend3\tbogus\t192.168.21.12\t\t1\t2\tx\t1\tUNDEF\t9\t1\tAES-256-GCM\nHEADER\tROUTING_TABLE\tVirtual Address\tCommon Name\nROUTING_TABLE\t192.168.21.101\tbackend2\nEND";
        assert_eq!(
            parse_sessions(text),
            vec![
                Session {
                    common_name: "backend2".into(),
                    real_ip: Some(Ipv4Addr::new(10, 0, 1, 12)),
                    client_id: 7
                },
                Session {
                    common_name: "frontend3".into(),
                    real_ip: None,
                    client_id: 9
                }
            ]
        );
    }

    #[test]
    fn management_state_lines_are_parsed() {
        let s = parse_state(">STATE:1700000000,CONNECTED,SUCCESS,192.168.21.11,10.0.0.1,1194,,")
            .unwrap();
        assert_eq!(s.name, "CONNECTED");
        assert_eq!(s.local, Some(Ipv4Addr::new(192, 168, 21, 11)));
        let s = parse_state("1700000000,WAIT,,,,,,").unwrap();
        assert_eq!((s.name.as_str(), s.local), ("WAIT", None));
        let s = parse_state("1700000000,EXITING,auth-failure,,,,,").unwrap();
        assert_eq!(s.detail, "auth-failure");
        assert!(parse_state(">INFO:OpenVPN Management Interface").is_none());
        assert!(parse_state("END").is_none());
    }
}
