//! `chainwatch run`: the watchdog daemon.
//!
//! Active mode (the default) fences through EC2, takes over IDs and
//! supervises OpenVPN. `--observe` probes, decides and logs what it would do,
//! and never acts (it asks EC2 only read-only questions, and only when it
//! knows its instance ID).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};

use super::{CmdError, settings};
use crate::admission;
use crate::clock::unix_ms;
use crate::config::{DEFAULT_PATH, ServiceCheck, Settings};
use crate::core::Monitor;
use crate::shell::alert::Notifier;
use crate::shell::announce::{Backoff, OutboxAnnouncer, Sink, deliver_forever};
use crate::shell::aws::budget;
use crate::shell::aws::cloudwatch::{self, CloudWatchSink};
use crate::shell::aws::ec2::{self, Ec2Registry, Rejoin};
use crate::shell::broker::RabbitSink;
use crate::shell::driver::Driver;
use crate::shell::fabric::Fabric;
use crate::shell::identity::{self, BootIdentity};
use crate::shell::members::{self, Members, MembersOptions, wire::Key};
use crate::shell::metrics::{self, Metrics};
use crate::shell::openvpn::{self, Vpn, VpnSettings};
use crate::shell::outbox::Outbox;
use crate::shell::prober::{IcmpProber, SocketKind};
use crate::shell::resolve::HostsResolver;
use crate::shell::service::{self, Health};
use crate::shell::takeover::Takeover;
use crate::shell::{Announcer, LogAnnouncer, NoSwitch, Registry, StaticRegistry, Switcher, status};
use crate::state::{self, PersistedState};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Probe, decide and log what would be done, but never fence, take over
    /// or touch OpenVPN.
    #[arg(long)]
    pub observe: bool,
}

fn other(e: impl std::fmt::Display) -> CmdError {
    CmdError::Other(e.to_string())
}

/// Everything started before the loop, shared by both modes.
struct Common {
    boot: BootIdentity,
    resolver: HostsResolver,
    prober: IcmpProber,
    listener: tokio::net::UnixListener,
    /// `[metrics] listen`, bound.
    metrics: Option<std::net::TcpListener>,
    /// OpenVPN's management socket when this daemon runs the identity.
    mgmt: Option<std::path::PathBuf>,
    /// The members key and the channel's bound port (no key: `None`).
    members: Option<(Key, std::net::UdpSocket)>,
}

/// Start the daemon and run until SIGTERM or SIGINT.
pub async fn main(config: Option<&Path>, args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    match &s.source {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!("no config file at the default path: using built-in defaults"),
    }
    // SIGHUP reloads the config (see `reload_on_sighup`); listening now
    // keeps it from ending the daemon while it boots.
    let _hup = signal(SignalKind::hangup()).map_err(other)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(other)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(other)?;
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM received"),
            _ = sigint.recv() => tracing::info!("SIGINT received"),
        }
    };
    let boot = identity::boot(&s).await.map_err(other)?;
    tracing::info!(
        slot = %boot.slot,
        source = boot.source.as_str(),
        user_data = %boot.user_data,
        instance_id = boot.instance_id.as_deref().unwrap_or("-"),
        "boot identity"
    );
    if args.observe {
        let common = start_common(&s, boot)?;
        match common.boot.instance_id.clone() {
            Some(id) => {
                let registry =
                    Ec2Registry::new(ec2::client(&s.config.aws).await, &s.config.aws, id);
                drive(&s, common, registry, NoSwitch, true, shutdown).await;
            }
            None => {
                let registry = StaticRegistry {
                    hub_underlay: s.config.probe.hub_underlay,
                };
                drive(&s, common, registry, NoSwitch, true, shutdown).await;
            }
        }
        return Ok(());
    }
    active(&s, boot, shutdown).await
}

async fn active(
    s: &Settings,
    mut boot: BootIdentity,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), CmdError> {
    let instance_id = boot.instance_id.clone().ok_or_else(|| {
        CmdError::Other(
            "active mode needs this instance's EC2 ID: run on EC2 (IMDS), or set identity.instance_id"
                .into(),
        )
    })?;
    let vpn_settings = vpn_settings(s);
    openvpn::check_pki(&vpn_settings, boot.slot.role).map_err(other)?;
    openvpn::render(&vpn_settings, boot.slot).map_err(other)?;
    let registry = Arc::new(
        Ec2Registry::new(ec2::client(&s.config.aws).await, &s.config.aws, instance_id).with_budget(
            budget::FenceBudget::new(&s.config.node.state_dir, s.config.aws.fence_budget_per_hour),
        ),
    );

    // A takeover the last run did not finish: its event, persisted with the
    // new slot.
    let interrupted = state::load(&s.config.node.state_dir, &s.layout)
        .map_err(other)?
        .and_then(|st| st.pending);

    // Rejoin: a fenced instance, or one whose ID someone else holds, goes to
    // the tail. EC2 must answer before anything else happens.
    let decision = retry("rejoin check", || registry.rejoin(&s.layout, boot.slot)).await?;
    let slot = match decision {
        Rejoin::Keep(slot) => slot,
        Rejoin::Tail { slot, reason } => {
            tracing::warn!(old = %boot.slot, new = %slot, "{reason}: rejoining at the tail of the chain as {slot}");
            if let Some(n) = notifier(s, Some(registry.instance_id())) {
                n.raise(
                    "rejoin",
                    boot.slot.common_name(),
                    slot.common_name(),
                    None,
                    format!("{reason}: rejoined at the tail of the chain as {slot}"),
                );
            }
            slot
        }
        Rejoin::Full { reason } => {
            return Err(CmdError::Other(format!(
                "{reason}, and every ID of the {} chain is held: raise layout.max_{}s or stop this instance",
                boot.slot.role, boot.slot.role
            )));
        }
    };
    // A rejoin is a transition of its own and gets a new epoch; a node that
    // keeps its slot keeps its epoch.
    let epoch = if slot != boot.slot {
        retry("epoch", || registry.next_epoch(slot.role)).await?
    } else {
        boot.epoch
            .max(retry("own epoch", || registry.own_epoch()).await?)
    };
    if slot != boot.slot {
        let now = unix_ms(std::time::SystemTime::now()) / 1000;
        state::store(
            &s.config.node.state_dir,
            &PersistedState::new(slot, epoch, now),
        )
        .map_err(other)?;
        boot.slot = slot;
        boot.epoch = epoch;
    }
    retry("tagging this instance", || registry.tag_self(slot, epoch)).await?;

    let mut common = start_common(s, boot)?;
    if slot.is_hub() {
        // The server's clients are admitted by this list: have one before
        // the server starts (the fabric loop keeps it fresh).
        let list = admission::path(&openvpn::run_dir(&s.config.node.state_dir));
        match registry
            .admission(&s.layout)
            .await
            .map_err(|e| e.to_string())
        {
            Ok(a) => {
                if let Err(e) = std::fs::create_dir_all(openvpn::run_dir(&s.config.node.state_dir))
                    .map_err(|e| e.to_string())
                    .and_then(|()| a.store(&list))
                {
                    tracing::warn!("cannot write the admission list yet: {e}");
                }
            }
            Err(e) => tracing::warn!("no admission list yet ({e}); the fabric loop retries"),
        }
    }
    // The slot's service (off by default): the identity comes up only once
    // it is up, and goes down when it fails (see below).
    let svc = &s.config.service;
    let mut health = Health::new(svc.rise, svc.fall);
    tokio::pin!(shutdown);
    if svc.check != ServiceCheck::None {
        tokio::select! {
            _ = service::wait_up(svc, &mut health) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
    let vpn_mgmt = vpn_settings.mgmt();
    common.mgmt = Some(vpn_mgmt.clone());
    let vpn = Vpn::spawn(vpn_settings);
    // The loop does not wait for the identity: with the hub dead, a client
    // cannot come up, and this node must still watch and take over. A
    // takeover's switch replaces this one if it is still coming up.
    {
        let vpn = vpn.clone();
        tokio::spawn(async move {
            match vpn.switch(slot).await {
                Ok(addr) => tracing::info!(%slot, %addr, "VPN identity up"),
                Err(e) => {
                    tracing::error!(%slot, "VPN identity not up ({e}); OpenVPN keeps retrying")
                }
            }
        });
    }
    if slot.is_hub() {
        match registry.take_elastic_ip().await {
            Ok(true) => tracing::info!("Elastic IP associated with this instance"),
            Ok(false) => {}
            Err(e) => tracing::error!("cannot take the Elastic IP: {e}"),
        }
    }
    let hub = Arc::new(AtomicBool::new(slot.is_hub()));
    tokio::spawn(
        Fabric {
            registry: registry.clone(),
            layout: s.layout.clone(),
            list: admission::path(&openvpn::run_dir(&s.config.node.state_dir)),
            mgmt: vpn_mgmt,
            hub: hub.clone(),
        }
        .run(),
    );
    let hub_now = hub.clone();
    let switcher = Takeover::new(
        registry.clone(),
        vpn.clone(),
        s.config.node.state_dir.clone(),
        epoch,
        hub,
    );
    let announcer = start_announcer(s, registry.instance_id(), slot.role).await?;
    if let Some(mut ev) = interrupted {
        let now = unix_ms(std::time::SystemTime::now());
        if ev.to_slot() == slot && ev.epoch == epoch {
            // The steps above (tags, VPN identity, Elastic IP) completed it.
            ev.timings.identity_up_ms = now;
            ev.timings.announced_ms = now;
            tracing::warn!(event_id = %ev.event_id, to = %slot, epoch, "completed the takeover of {slot} that the last run was killed in: announcing it");
            announcer.announce(&ev).await;
        } else {
            tracing::warn!(event_id = %ev.event_id, to = %ev.to_slot(), "the takeover of {} that the last run was killed in is released: this node is {slot} now; its event is dropped", ev.to_slot());
        }
        state::store(
            &s.config.node.state_dir,
            &PersistedState::new(slot, epoch, now / 1000),
        )
        .map_err(other)?;
    }
    // The service failing ends the loop like a shutdown, but this node
    // then gives up its ID.
    let gave_up = std::sync::Mutex::new(None::<String>);
    let service_down = async {
        if svc.check == ServiceCheck::None {
            return std::future::pending().await;
        }
        loop {
            let why = service::watch(svc, health.clone()).await;
            if hub_now.load(Ordering::SeqCst) {
                // Its watcher judges the hub by its underlay address, which
                // still answers: taking the identity down would only cut
                // the overlay. Alert, and keep it.
                tracing::error!(
                    check = svc.check.as_str(),
                    "SERVICE DOWN on the hub ({why}): frontend1 keeps its ID (its watcher judges the underlay); fix the service or switch the hub over"
                );
                continue;
            }
            *gave_up.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            return;
        }
    };
    let stop = async {
        tokio::select! {
            _ = &mut shutdown => {}
            _ = service_down => {}
        }
    };
    let maint = tokio::spawn(follow_maintenance(registry.clone()));
    let ended = run_loop(
        s,
        common,
        ArcRegistry(registry.clone()),
        switcher,
        announcer,
        false,
        stop,
    )
    .await;
    maint.abort();
    if let Some(why) = gave_up.into_inner().unwrap_or_else(|p| p.into_inner()) {
        // Give up the ID: the identity goes down, the successor finds this
        // node silent and takes over as for a death (fencing it). Telling
        // it so spares it the rounds of waiting.
        vpn.stop().await;
        resign(s, &ended, registry.as_ref()).await;
        return Err(CmdError::Other(format!(
            "SERVICE DOWN ({} check: {why}, {} failed checks in a row): gave up this node's ID; its VPN identity is down and its successor takes over. Fix the service; chainwatch brings the identity up again only once the service passes {} checks",
            svc.check.as_str(),
            svc.fall,
            svc.rise
        )));
    }
    // A daemon that stops is not a death: the identity stays up for the
    // next daemon (an upgrade, a restart) to adopt.
    vpn.detach().await;
    Ok(())
}

/// The outbox, the sinks, and the task that delivers (it re-sends whatever
/// a previous run left pending at once).
/// Write a heartbeat metric every `every`; failures are logged once per
/// change and retried at the next beat.
async fn heartbeat_forever(sink: CloudWatchSink, role: crate::layout::Role, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = None::<String>;
    loop {
        tick.tick().await;
        match sink.heartbeat(role.as_str()).await {
            Ok(()) => {
                if failing.take().is_some() {
                    tracing::info!("CloudWatch heartbeat written again");
                }
            }
            Err(e) => {
                if failing.as_deref() != Some(e.as_str()) {
                    tracing::warn!("CloudWatch heartbeat not written: {e}");
                    failing = Some(e);
                }
            }
        }
    }
}

async fn start_announcer(
    s: &Settings,
    instance_id: &str,
    role: crate::layout::Role,
) -> Result<OutboxAnnouncer, CmdError> {
    let a = &s.config.announce;
    let mut sinks = Vec::new();
    if !a.rabbitmq_urls.is_empty() {
        sinks.push(Sink::Rabbit(Box::new(RabbitSink::new(a))));
    }
    if !a.cloudwatch_log_group.is_empty() {
        let client = cloudwatch::client(
            s.config.aws.region.as_deref(),
            Duration::from_millis(a.timeout_ms),
        )
        .await;
        if a.heartbeat_secs > 0 {
            let beat = CloudWatchSink::new(
                client.clone(),
                a.cloudwatch_log_group.clone(),
                instance_id.to_string(),
                a.metric_namespace.clone(),
            );
            tokio::spawn(heartbeat_forever(
                beat,
                role,
                Duration::from_secs(a.heartbeat_secs),
            ));
        }
        sinks.push(Sink::CloudWatch(CloudWatchSink::new(
            client,
            a.cloudwatch_log_group.clone(),
            instance_id.to_string(),
            a.metric_namespace.clone(),
        )));
    }
    if sinks.is_empty() {
        tracing::warn!(
            "no sink configured: transitions are only logged (set announce.rabbitmq_urls and announce.cloudwatch_log_group)"
        );
    }
    let names = sinks.iter().map(|k| k.name().to_string()).collect();
    let outbox =
        Arc::new(Outbox::open(s.config.node.state_dir.join("outbox"), names).map_err(other)?);
    let pending = outbox.count();
    if pending > 0 {
        tracing::warn!(
            pending,
            "events left in the outbox by an earlier run: delivering them"
        );
    }
    let notify = Arc::new(Notify::new());
    tokio::spawn(deliver_forever(
        outbox.clone(),
        sinks,
        notify.clone(),
        Backoff {
            initial: Duration::from_millis(a.retry_initial_ms),
            max: Duration::from_millis(a.retry_max_ms),
        },
    ));
    Ok(OutboxAnnouncer::new(outbox, notify))
}

/// Retry an EC2 call at start a few times; then give up with its error.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, CmdError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ec2::Ec2Error>>,
{
    let mut delays = crate::backoff::delays(Duration::from_millis(500), Duration::from_secs(8));
    for attempt in 1..=5 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt == 5 => {
                return Err(CmdError::Other(format!("{what}: {e}")));
            }
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(8));
                tracing::warn!(attempt, "{what}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
    unreachable!("the loop returns on its last attempt")
}

pub(crate) fn vpn_settings(s: &Settings) -> VpnSettings {
    let config = s
        .source
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_PATH));
    let hook = |name: &str| {
        if s.source.is_some() {
            format!(
                "{} --config {} {name}",
                s.config.vpn.hook_binary.display(),
                config.display()
            )
        } else {
            format!("{} {name}", s.config.vpn.hook_binary.display())
        }
    };
    VpnSettings {
        cfg: s.config.vpn.clone(),
        layout: s.layout.clone(),
        run_dir: openvpn::run_dir(&s.config.node.state_dir),
        client_connect: hook("client-connect"),
        tls_verify: hook("tls-verify"),
        dev: "cwvpn".into(),
    }
}

fn start_common(s: &Settings, boot: BootIdentity) -> Result<Common, CmdError> {
    let hosts_file = &s.config.node.hosts_file;
    std::fs::metadata(hosts_file).map_err(|e| {
        CmdError::Other(format!(
            "cannot read hosts file {}: {e}; set node.hosts_file",
            hosts_file.display()
        ))
    })?;
    let resolver =
        HostsResolver::new(hosts_file.clone(), s.config.node.dns_fallback).map_err(other)?;
    let prober = IcmpProber::new(s.config.probe.attempts).map_err(other)?;
    tracing::info!(
        socket = prober.socket_kind().as_str(),
        "ICMP socket opened ({})",
        match prober.socket_kind() {
            SocketKind::Datagram => "unprivileged datagram ICMP",
            SocketKind::Raw =>
                "raw ICMP: ping_group_range does not allow datagram ICMP for this user",
        }
    );
    let listener = status::bind(&s.config.node.status_socket).map_err(other)?;
    let metrics = match s.config.metrics.listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| {
                    CmdError::Other(format!("cannot listen on metrics.listen = {addr}: {e}"))
                })?;
            Some(l)
        }
        None => None,
    };
    let key_file = s.config.members_key_file();
    let members = match members::read_key(&key_file).map_err(other)? {
        Some(key) => {
            let socket = Members::bind(s.config.members.port).map_err(other)?;
            tracing::info!(
                port = s.config.members.port,
                "members' channel on UDP {}: a silent peer is declared dead only when other members cannot reach it either",
                s.config.members.port
            );
            Some((key, socket))
        }
        None => {
            tracing::warn!(
                key = %key_file.display(),
                "no members key: the members' channel is off, so no second opinion is asked before a peer is declared dead (a one-way path fault can fence a healthy peer); provision the key with the PKI"
            );
            None
        }
    };
    Ok(Common {
        boot,
        resolver,
        prober,
        listener,
        metrics,
        mgmt: None,
        members,
    })
}

/// Tell systemd READY once this node's VPN identity is up (OpenVPN says
/// CONNECTED with this slot's overlay address), checked every 500 ms; at
/// once in observe mode (no OpenVPN). The daemon watches and takes over
/// before that; `TimeoutStartSec=infinity` in the unit lets it wait for a
/// hub that is down.
async fn notify_ready_when_up(
    mgmt: Option<PathBuf>,
    reports: watch::Receiver<crate::shell::StatusReport>,
) {
    if let Some(mgmt) = mgmt {
        loop {
            let want = reports.borrow().overlay_addr;
            if let Some(st) = openvpn::query_state(&mgmt).await
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

/// The alert notifier of `[alerts]`, if a command is configured.
fn notifier(s: &Settings, instance_id: Option<&str>) -> Option<Notifier> {
    Notifier::new(
        &s.config.alerts.notify_command,
        Duration::from_millis(s.config.alerts.notify_timeout_ms),
        &s.config.aws.fleet,
        instance_id.unwrap_or("unknown"),
    )
}

/// On SIGHUP, read the config file again. The probe and retry settings
/// change live; anything else that changed is named and needs a restart; a
/// file that does not validate changes nothing.
async fn reload_on_sighup(
    mut running: Settings,
    tx: tokio::sync::mpsc::UnboundedSender<crate::core::CoreConfig>,
) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: no config reload");
        return;
    };
    while hup.recv().await.is_some() {
        let Some(path) = running.source.clone() else {
            tracing::warn!("SIGHUP: running on built-in defaults, no file to reload");
            continue;
        };
        let new = match settings(Some(&path)) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!("SIGHUP: reload refused, the running config stays: {e}");
                continue;
            }
        };
        let (old, now) = (&running.config, &new.config);
        let mut restart = Vec::new();
        for (section, changed) in [
            ("[node]", old.node != now.node),
            ("[identity]", old.identity != now.identity),
            ("[aws]", old.aws != now.aws),
            ("[vpn]", old.vpn != now.vpn),
            ("[service]", old.service != now.service),
            ("[announce]", old.announce != now.announce),
            ("[worker]", old.worker != now.worker),
            ("[layout]", old.layout != now.layout),
            (
                "probe.attempts and probe.hub_underlay",
                old.probe.attempts != now.probe.attempts
                    || old.probe.hub_underlay != now.probe.hub_underlay,
            ),
        ] {
            if changed {
                restart.push(section);
            }
        }
        if !restart.is_empty() {
            tracing::warn!(
                "SIGHUP: {} changed but cannot change live: restart the daemon to apply (the identity stays up through a restart)",
                restart.join(", ")
            );
        }
        if new.core() != running.core() {
            if tx.send(new.core()).is_err() {
                return;
            }
        } else {
            tracing::info!("SIGHUP: the probe and retry settings are unchanged");
        }
        // What runs now: the live part is applied, the rest is not.
        running.config.probe.interval_ms = new.config.probe.interval_ms;
        running.config.probe.timeout_ms = new.config.probe.timeout_ms;
        running.config.probe.misses = new.config.probe.misses;
        running.config.probe.startup_grace_ms = new.config.probe.startup_grace_ms;
        running.config.retry = new.config.retry;
    }
}

/// `Arc<Ec2Registry>` as a registry, so the switcher can share it.
struct ArcRegistry(Arc<Ec2Registry>);

impl Registry for ArcRegistry {
    async fn check_holder(&self, slot: crate::layout::Slot) -> Result<crate::core::Holder, String> {
        self.0.check_holder(slot).await
    }
    async fn fence(&self, slot: crate::layout::Slot) -> Result<crate::core::Fenced, String> {
        self.0.fence(slot).await
    }
    async fn witness(&self) -> Result<(), String> {
        self.0.witness().await
    }
    async fn underlay_addr(&self, slot: crate::layout::Slot) -> Result<std::net::Ipv4Addr, String> {
        self.0.underlay_addr(slot).await
    }
    fn power_fences(&self) -> Vec<crate::shell::PowerFence> {
        self.0.power_fences()
    }
    fn maintenance(&self) -> Option<String> {
        Registry::maintenance(self.0.as_ref())
    }
}

/// How often a node reads its own maintenance tag for `status`.
const MAINT_READ: Duration = Duration::from_secs(10);

/// Read this instance's maintenance tag every [`MAINT_READ`], and say when
/// it changes (a failed read keeps the last value and is retried).
async fn follow_maintenance(registry: Arc<Ec2Registry>) {
    let mut tick = tokio::time::interval(MAINT_READ);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match registry.read_maintenance().await {
            Ok(true) => match Registry::maintenance(registry.as_ref()) {
                Some(until) => tracing::warn!(
                    %until,
                    "this instance is in maintenance until {until}: no member fences it, so nothing is taken over from it"
                ),
                None => tracing::info!("this instance's maintenance is over"),
            },
            Ok(false) => {}
            Err(e) => tracing::debug!("maintenance tag not read: {e}"),
        }
    }
}

/// Tell the watcher of the slot this node gave up (over the members'
/// channel, on its underlay address) that the identity is down. Bounded: a
/// watcher that cannot be found or reached judges by its rounds as for any
/// death.
async fn resign(s: &Settings, ended: &Ended, registry: &impl Registry) {
    let Some(members) = &ended.members else {
        return;
    };
    let Some(watcher) = ended
        .me
        .watcher()
        .filter(|w| w.id <= s.layout.max_id(w.role))
    else {
        return;
    };
    match tokio::time::timeout(Duration::from_secs(2), registry.underlay_addr(watcher)).await {
        Ok(Ok(addr)) => {
            members.resign(ended.me, addr).await;
            tracing::warn!(%watcher, %addr, "told {watcher} that this node gave up {}", ended.me);
        }
        Ok(Err(e)) => {
            tracing::warn!(%watcher, "{watcher} not told of the resignation (it judges by its rounds): {e}")
        }
        Err(_) => tracing::warn!(
            %watcher,
            "{watcher} not told of the resignation (it judges by its rounds): its address was not found within 2 s"
        ),
    }
}

/// How a run loop ended.
struct Ended {
    /// The slot held at the end.
    me: crate::layout::Slot,
    /// The members' channel, still open for a last word.
    members: Option<Arc<Members>>,
}

async fn drive<R: Registry, S: Switcher>(
    s: &Settings,
    common: Common,
    registry: R,
    switcher: S,
    observe: bool,
    shutdown: impl std::future::Future<Output = ()>,
) {
    run_loop(
        s,
        common,
        registry,
        switcher,
        LogAnnouncer,
        observe,
        shutdown,
    )
    .await;
}

async fn run_loop<R: Registry, S: Switcher, A: Announcer>(
    s: &Settings,
    common: Common,
    registry: R,
    switcher: S,
    announcer: A,
    observe: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Ended {
    let prober = Arc::new(common.prober);
    let members = match common.members {
        Some((key, socket)) => {
            let opts = MembersOptions {
                port: s.config.members.port,
                helpers: s.config.members.helpers as usize,
                window_ms: s.config.members.window_ms,
                probe_timeout: Duration::from_millis(s.config.probe.timeout_ms),
            };
            match Members::new(socket, key, &opts, s.layout.clone(), prober.clone()) {
                Ok(m) => {
                    tokio::spawn(m.clone().serve());
                    Some(m)
                }
                Err(e) => {
                    tracing::error!("members' channel not started: {e}");
                    None
                }
            }
        }
        None => None,
    };
    let mut core_cfg = s.core();
    core_cfg.second_opinion = members.is_some();
    let core = Monitor::new(core_cfg, common.boot.slot, Instant::now());
    let report = Driver::<R, S, A>::initial_report(
        &core,
        &s.layout,
        &common.boot,
        observe,
        prober.socket_kind().as_str(),
    );
    let (status_tx, status_rx) = watch::channel(report);
    let metrics_server = match common.metrics.map(tokio::net::TcpListener::from_std) {
        Some(Ok(listener)) => {
            let metrics = Arc::new(Metrics::new());
            tokio::spawn(metrics::follow(metrics.clone(), status_rx.clone()));
            let health = metrics::Health {
                reports: status_rx.clone(),
                mgmt: common.mgmt.clone(),
                stall: Duration::from_millis(s.config.probe.interval_ms.max(1000) * 5),
            };
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "metrics at http://{addr}/metrics, /healthz, /readyz");
            }
            Some(tokio::spawn(metrics::serve(listener, metrics, health)))
        }
        Some(Err(e)) => {
            tracing::error!("metrics endpoint not started: {e}");
            None
        }
        None => None,
    };
    let ready = tokio::spawn(notify_ready_when_up(common.mgmt.clone(), status_rx.clone()));
    let server = tokio::spawn(status::serve(common.listener, status_rx));
    tracing::info!(
        socket = %s.config.node.status_socket.display(),
        observe,
        "chainwatch {} running",
        env!("CARGO_PKG_VERSION")
    );
    let common_instance = common.boot.instance_id.clone();
    let (reload_tx, reload) = tokio::sync::mpsc::unbounded_channel();
    let reloader = tokio::spawn(reload_on_sighup(s.clone(), reload_tx));
    let driver = Driver {
        core,
        layout: s.layout.clone(),
        prober,
        resolver: Arc::new(common.resolver),
        registry: Arc::new(registry),
        switcher: Arc::new(switcher),
        announcer: Arc::new(announcer),
        observe,
        boot: common.boot,
        fleet: s.config.aws.fleet.clone(),
        status: status_tx,
        reload,
        notifier: notifier(s, common_instance.as_deref()),
        members: members.clone(),
    };
    let me = driver.run(shutdown).await;
    reloader.abort();
    ready.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    server.abort();
    let _ = std::fs::remove_file(&s.config.node.status_socket);
    Ended { me, members }
}
