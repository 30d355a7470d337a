//! `chainwatch run`: the watchdog daemon.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::{CmdError, settings};
use crate::core::Monitor;
use crate::identity;
use crate::shell::driver::Driver;
use crate::shell::prober::IcmpProber;
use crate::shell::resolve::HostsResolver;
use crate::shell::{LogAnnouncer, NoSwitch, StaticRegistry, status};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Probe, decide and log what would be done, but never fence or take
    /// over.
    #[arg(long)]
    pub observe: bool,
}

fn other(e: impl std::fmt::Display) -> CmdError {
    CmdError::Other(e.to_string())
}

/// Start the daemon and run until SIGTERM or SIGINT.
pub async fn main(config: Option<&Path>, args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    if !args.observe {
        return Err(CmdError::Other(
            "acting mode (fence through EC2 and take over) is not part of this build; \
             run `chainwatch run --observe` to probe, decide and log without acting"
                .into(),
        ));
    }
    match &s.source {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!("no config file at the default path: using built-in defaults"),
    }
    let boot = identity::boot(&s).await.map_err(other)?;
    tracing::info!(
        slot = %boot.slot,
        source = boot.source.as_str(),
        user_data = %boot.user_data,
        instance_id = boot.instance_id.as_deref().unwrap_or("-"),
        "boot identity"
    );
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
            crate::shell::prober::SocketKind::Datagram => "unprivileged datagram ICMP",
            crate::shell::prober::SocketKind::Raw =>
                "raw ICMP: ping_group_range does not allow datagram ICMP for this user",
        }
    );
    let listener = status::bind(&s.config.node.status_socket).map_err(other)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(other)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(other)?;

    let core = Monitor::new(s.core(), boot.slot, Instant::now());
    let report = Driver::<StaticRegistry, NoSwitch, LogAnnouncer>::initial_report(
        &core,
        &s.layout,
        &boot,
        args.observe,
        prober.socket_kind().as_str(),
    );
    let (status_tx, status_rx) = watch::channel(report);
    let server = tokio::spawn(status::serve(listener, status_rx));
    tracing::info!(
        socket = %s.config.node.status_socket.display(),
        observe = args.observe,
        "chainwatch {} running",
        env!("CARGO_PKG_VERSION")
    );
    let driver = Driver {
        core,
        layout: s.layout.clone(),
        prober: Arc::new(prober),
        resolver: Arc::new(resolver),
        registry: Arc::new(StaticRegistry {
            hub_underlay: s.config.probe.hub_underlay,
        }),
        switcher: Arc::new(NoSwitch),
        announcer: Arc::new(LogAnnouncer),
        observe: args.observe,
        boot,
        status: status_tx,
    };
    driver
        .run(async {
            tokio::select! {
                _ = sigterm.recv() => tracing::info!("SIGTERM received"),
                _ = sigint.recv() => tracing::info!("SIGINT received"),
            }
        })
        .await;
    server.abort();
    let _ = std::fs::remove_file(&s.config.node.status_socket);
    Ok(())
}
