//! Service health: the check of the service a slot exists for (MySQL on a
//! backend, say), with keepalived-style rise and fall counts. A holder whose
//! service fails `fall` checks in a row gives up its ID: its VPN identity
//! goes down, so its successor finds it silent and takes over as for a
//! death (fencing it). At start the identity comes up only after `rise`
//! good checks.
//!
//! Kinds (`service.check`):
//!
//! * `tcp` — a TCP connect to `service.address` within the deadline;
//! * `mysql` — the connect, then the server's greeting packet within the
//!   deadline (a stopped or hung mysqld still has the kernel accept the
//!   connection, and then says nothing). No credentials are sent; point it
//!   at a loopback address, which MySQL and MariaDB keep out of their host
//!   cache (so aborted handshakes never get the host blocked);
//! * `command` — `service.command` (argv, no shell) exits 0 within the
//!   deadline; it is killed otherwise.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::{ServiceCheck, ServiceConfig};
use crate::layout::{Layout, Slot};
use crate::shell::Registry;
use crate::shell::members::Members;

/// One check's outcome: `Err` says what failed.
pub type CheckResult = Result<(), String>;

/// Run the configured check once, bounded by `service.timeout`.
pub async fn check(cfg: &ServiceConfig) -> CheckResult {
    let deadline = cfg.timeout;
    let work = async {
        match cfg.check {
            ServiceCheck::None => Ok(()),
            ServiceCheck::Tcp => connect(cfg.address).await.map(|_| ()),
            ServiceCheck::Mysql => greeting(connect(cfg.address).await?).await,
            ServiceCheck::Command => command(&cfg.command).await,
        }
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {deadline:?}")),
    }
}

async fn connect(addr: Option<SocketAddr>) -> Result<TcpStream, String> {
    let addr = addr.ok_or("service.address is not set")?;
    TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))
}

/// Read the first packet of the MySQL protocol: a 3-byte length, a
/// sequence number, then protocol version 10 (a handshake) or 0xff (an
/// error packet: the server is alive but refuses, e.g. too many
/// connections, which is not a dead service).
async fn greeting(mut stream: TcpStream) -> CheckResult {
    let mut head = [0u8; 5];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| format!("no MySQL greeting: {e}"))?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]);
    match head[4] {
        _ if len == 0 || len > 1 << 16 => Err(format!("not a MySQL greeting (length {len})")),
        10 | 0xff => Ok(()),
        v => Err(format!("not a MySQL greeting (protocol byte {v})")),
    }
}

async fn command(argv: &[String]) -> CheckResult {
    let (program, args) = argv.split_first().ok_or("service.command is empty")?;
    let status = super::child_command(program, args)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} exited with {status}"))
    }
}

/// Rise and fall counting, as keepalived's track_script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    rise: u32,
    fall: u32,
    good: u32,
    bad: u32,
    up: bool,
}

impl Health {
    /// Starts down: `rise` good checks bring it up.
    pub fn new(rise: u32, fall: u32) -> Self {
        Health {
            rise,
            fall,
            good: 0,
            bad: 0,
            up: false,
        }
    }

    /// Count one check; `Some(up)` when the verdict changes.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.bad = 0;
            self.good = self.good.saturating_add(1);
            if !self.up && self.good >= self.rise {
                self.up = true;
                return Some(true);
            }
        } else {
            self.good = 0;
            self.bad = self.bad.saturating_add(1);
            if self.up && self.bad >= self.fall {
                self.up = false;
                return Some(false);
            }
        }
        None
    }

    /// Whether the service counts as up.
    pub fn is_up(&self) -> bool {
        self.up
    }
}

/// Wait until the service is up (`rise` good checks in a row), logging
/// while it is not.
pub async fn wait_up(cfg: &ServiceConfig, health: &mut Health) {
    let mut last = String::new();
    while !health.is_up() {
        let r = check(cfg).await;
        if let Err(e) = &r
            && *e != last
        {
            tracing::warn!(
                check = cfg.check.as_str(),
                "service not up yet ({e}): the VPN identity waits for it"
            );
            last = e.clone();
        }
        if health.record(r.is_ok()) != Some(true) {
            tokio::time::sleep(cfg.interval).await;
        }
    }
    tracing::info!(check = cfg.check.as_str(), "service up");
}

/// Check forever; return the last error once the service is down (`fall`
/// bad checks in a row after being up).
pub async fn watch(cfg: &ServiceConfig, mut health: Health) -> String {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let r = check(cfg).await;
        if let Err(e) = &r {
            tracing::warn!(check = cfg.check.as_str(), "service check failed: {e}");
        }
        if health.record(r.is_ok()) == Some(false) {
            return r.err().unwrap_or_default();
        }
    }
}

/// Watch the service until this node should give up its ID, and say why.
/// Never returns when no check is configured. While this node is the hub it
/// keeps its ID: its watcher judges the hub by its underlay address, which
/// still answers, so taking the identity down would only cut the overlay;
/// the failure is logged and the watch goes on.
pub async fn until_given_up(cfg: &ServiceConfig, health: Health, hub: &AtomicBool) -> String {
    if cfg.check == ServiceCheck::None {
        return std::future::pending().await;
    }
    loop {
        let why = watch(cfg, health.clone()).await;
        if !hub.load(Ordering::SeqCst) {
            return why;
        }
        tracing::error!(
            check = cfg.check.as_str(),
            "SERVICE DOWN on the hub ({why}): frontend1 keeps its ID (its watcher judges the underlay); fix the service or switch the hub over"
        );
    }
}

/// Tell the watcher of the slot this node gave up (over the members'
/// channel, on its underlay address) that the identity is down. Bounded: a
/// watcher that cannot be found or reached judges by its rounds as for any
/// death.
pub async fn resign(
    layout: &Layout,
    me: Slot,
    members: Option<&Members>,
    registry: &impl Registry,
) {
    let Some(members) = members else {
        return;
    };
    let Some(watcher) = me.watcher().filter(|w| w.id <= layout.max_id(w.role)) else {
        return;
    };
    match tokio::time::timeout(Duration::from_secs(2), registry.underlay_addr(watcher)).await {
        Ok(Ok(addr)) => {
            members.resign(me, addr).await;
            tracing::warn!(%watcher, %addr, "told {watcher} that this node gave up {me}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_count_consecutive_checks() {
        let mut h = Health::new(2, 3);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(true));
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None, "a good check resets the fall count");
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(false));
        assert!(!h.is_up());
        assert_eq!(h.record(false), None);
    }
}
