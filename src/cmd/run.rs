//! `chainwatch run`: the watchdog daemon.
//!
//! Active mode (the default) fences through EC2, takes over IDs and
//! supervises OpenVPN. `--observe` probes, decides and logs what it would do,
//! and never acts (it asks EC2 only read-only questions, and only when it
//! knows its instance ID).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};

use super::{CmdError, settings};
use crate::config::{ServiceCheck, Settings};
use crate::core::Monitor;
use crate::shell::alert::Notifier;
use crate::shell::announce;
use crate::shell::aws::budget;
use crate::shell::aws::ec2::{self, Ec2Registry};
use crate::shell::control;
use crate::shell::driver::Driver;
use crate::shell::fabric::{self, Fabric};
use crate::shell::identity::{self, BootIdentity};
use crate::shell::members::{self, Members, wire::Key};
use crate::shell::metrics;
use crate::shell::openvpn::{self, Vpn, VpnSettings};
use crate::shell::outbox::Outbox;
use crate::shell::prober::{IcmpProber, SocketKind};
use crate::shell::resolve::HostsResolver;
use crate::shell::service::{self, Health};
use crate::shell::switchover;
use crate::shell::takeover::{self, Takeover};
use crate::shell::{
    Announcer, LogAnnouncer, NoSwitch, Registry, StaticRegistry, Switcher, reload, status,
};
use crate::state;

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
    /// Where an active daemon's alerts go besides the notify command: the
    /// outbox, and the delivery task's waker.
    alerts: Option<(Arc<Outbox>, Option<Arc<Notify>>)>,
    /// An active daemon's: where the channel's claims go (the fabric
    /// loop), and where the started channel is shared (the switcher).
    claims: Option<(tokio::sync::mpsc::Sender<members::Claim>, members::Shared)>,
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
    let vpn_settings = VpnSettings::from_settings(s);
    openvpn::check_pki(&vpn_settings, boot.slot.role).map_err(other)?;
    openvpn::render(&vpn_settings, boot.slot).map_err(other)?;
    let registry = Arc::new(
        Ec2Registry::new(ec2::client(&s.config.aws).await, &s.config.aws, instance_id).with_budget(
            budget::FenceBudget::new(&s.config.node.state_dir, s.config.aws.fence_budget_per_hour)
                .with_cooldown(s.config.aws.takeover_cooldown),
        ),
    );

    // A takeover the last run did not finish: its event, persisted with the
    // new slot.
    let interrupted = state::load(&s.config.node.state_dir, &s.layout)
        .map_err(other)?
        .and_then(|st| st.pending);

    identity::settle(s, &registry, &mut boot, interrupted.is_some())
        .await
        .map_err(CmdError::Other)?;
    let (slot, epoch) = (boot.slot, boot.epoch);

    let mut common = start_common(s, boot)?;
    if slot.is_hub() {
        // The server's clients are admitted by this list: have one before
        // the server starts (the fabric loop keeps it fresh).
        fabric::prime(
            &registry,
            &s.layout,
            &openvpn::run_dir(&s.config.node.state_dir),
        )
        .await;
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
    vpn.clone().come_up(slot);
    if slot.is_hub() {
        match registry.take_elastic_ip().await {
            Ok(true) => tracing::info!("Elastic IP associated with this instance"),
            Ok(false) => {}
            Err(e) => tracing::error!("cannot take the Elastic IP: {e}"),
        }
    }
    let hub = Arc::new(AtomicBool::new(slot.is_hub()));
    let (claims, heard) = tokio::sync::mpsc::channel(8);
    let shared = members::Shared::default();
    common.claims = Some((claims, shared.clone()));
    let mgmt = vpn_mgmt.clone();
    tokio::spawn(
        Fabric {
            registry: registry.clone(),
            layout: s.layout.clone(),
            list: crate::admission::path(&openvpn::run_dir(&s.config.node.state_dir)),
            mgmt: vpn_mgmt,
            hub: hub.clone(),
            claims: Some(heard),
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
        shared,
    );
    let announcer = announce::start(s, registry.instance_id(), slot.role)
        .await
        .map_err(CmdError::Other)?;
    common.alerts = Some(announcer.alerts_route());
    if let Some(ev) = interrupted {
        takeover::finish_interrupted(ev, slot, epoch, &announcer, &s.config.node.state_dir)
            .await
            .map_err(CmdError::Other)?;
    }
    // The service failing ends the loop like a shutdown, but this node
    // then gives up its ID.
    let gave_up = std::sync::Mutex::new(None::<String>);
    let service_down = async {
        let why = service::until_given_up(svc, health.clone(), &hub_now).await;
        *gave_up.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    };
    // So does a switchover asked on the control socket, once checked.
    let control = control::bind_for(&s.config.node.status_socket).map_err(other)?;
    let (requests, mut asked) = tokio::sync::mpsc::channel(1);
    let control_server = tokio::spawn(control::serve(control, requests));
    let handing_over = std::sync::Mutex::new(None);
    let handover = async {
        let accepted = switchover::accept(&mut asked, s, slot, &registry).await;
        *handing_over.lock().unwrap_or_else(|p| p.into_inner()) = Some(accepted);
    };
    let stop = async {
        tokio::select! {
            _ = &mut shutdown => {}
            _ = service_down => {}
            _ = handover => {}
        }
    };
    let maint = tokio::spawn(ec2::follow_maintenance(registry.clone()));
    let ended = run_loop(
        s,
        common,
        registry.clone(),
        switcher,
        announcer,
        false,
        stop,
    )
    .await;
    maint.abort();
    control_server.abort();
    let _ = std::fs::remove_file(control::path(&s.config.node.status_socket));
    if let Some(accepted) = handing_over.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let e = switchover::complete(
            accepted,
            s,
            ended.members.as_deref(),
            &registry,
            &vpn,
            &mgmt,
        )
        .await;
        return Err(CmdError::Other(format!(
            "cannot start again after the switchover ({e}): start chainwatch again by hand; it rejoins at the tail"
        )));
    }
    if let Some(why) = gave_up.into_inner().unwrap_or_else(|p| p.into_inner()) {
        // Give up the ID: the identity goes down, the successor finds this
        // node silent and takes over as for a death (fencing it). Telling
        // it so spares it the rounds of waiting.
        vpn.stop().await;
        service::resign(
            &s.layout,
            ended.me,
            ended.members.as_deref(),
            registry.as_ref(),
        )
        .await;
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
    let metrics = s
        .config
        .metrics
        .listen
        .map(metrics::bind_early)
        .transpose()
        .map_err(CmdError::Other)?;
    let members = members::open(s).map_err(other)?;
    Ok(Common {
        boot,
        resolver,
        prober,
        listener,
        metrics,
        mgmt: None,
        members,
        alerts: None,
        claims: None,
    })
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
    let members = common
        .members
        .and_then(|(key, socket)| Members::start(socket, key, s, prober.clone()));
    let mut core_cfg = s.core();
    core_cfg.second_opinion = members.is_some();
    let mut core = Monitor::new(core_cfg, common.boot.slot, Instant::now());
    if !observe {
        resume_fence(s, &mut core);
    }
    let report = Driver::<R, S, A>::initial_report(
        &core,
        &s.layout,
        &common.boot,
        observe,
        prober.socket_kind().as_str(),
    );
    let (status_tx, status_rx) = watch::channel(report);
    if let Some(m) = &members {
        m.share_status(status_rx.clone());
        m.reconnect_on_hub_moved(VpnSettings::from_settings(s).mgmt());
        if let Some((route, shared)) = common.claims.as_ref() {
            m.route_claims(route.clone());
            let _ = shared.set(m.clone());
        }
    }
    let metrics_server = common.metrics.and_then(|listener| {
        metrics::start(
            listener,
            status_rx.clone(),
            common.mgmt.clone(),
            s.config.probe.interval,
        )
    });
    let ready = tokio::spawn(openvpn::notify_ready_when_up(
        common.mgmt.clone(),
        status_rx.clone(),
    ));
    let server = tokio::spawn(status::serve(common.listener, status_rx));
    tracing::info!(
        socket = %s.config.node.status_socket.display(),
        observe,
        "chainwatch {} running",
        env!("CARGO_PKG_VERSION")
    );
    let common_instance = common.boot.instance_id.clone();
    let alerts = common.alerts.clone();
    let (reload_tx, reload) = tokio::sync::mpsc::unbounded_channel();
    let reloader = tokio::spawn(reload::on_sighup(s.clone(), reload_tx));
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
        notifier: Notifier::from_settings(s, common_instance.as_deref(), alerts),
        members: members.clone(),
        state_dir: (!observe).then(|| s.config.node.state_dir.clone()),
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

/// How old a recorded fence may be and still be finished at start: a daemon
/// that systemd restarts comes back within seconds; one older than this was
/// decided on a world that may have changed since.
const RESUME_WITHIN_MS: u64 = 60_000;

/// Finish, or abandon, the fence the last run recorded and was killed in
/// (see [`crate::state::FenceIntent`]): it is finished when it is recent
/// and its slot is still this node's watched peer.
fn resume_fence(s: &Settings, core: &mut Monitor) {
    let dir = &s.config.node.state_dir;
    let Some(intent) = state::load_fence(dir, &s.layout) else {
        return;
    };
    let age = crate::clock::unix_ms(std::time::SystemTime::now()).saturating_sub(intent.at_ms);
    let slot = intent.slot();
    if age <= RESUME_WITHIN_MS && core.peer() == Some(slot) {
        let judged = crate::core::Judged {
            instance: intent.instance,
            epoch: intent.epoch,
        };
        core.handle_input(
            Instant::now(),
            crate::core::Input::ResumeFence { slot, judged },
        );
    } else {
        tracing::warn!(
            %slot,
            instance = %intent.instance,
            age_ms = age,
            "the fence of {slot} that the last run recorded is abandoned: it is {} s old, or {slot} is not this node's peer any more",
            age / 1000
        );
        state::clear_fence(dir);
    }
}
