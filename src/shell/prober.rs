//! ICMP probes with surge-ping.
//!
//! Unprivileged ICMP datagram sockets are used where
//! `net.ipv4.ping_group_range` allows them; otherwise raw sockets (root or
//! `CAP_NET_RAW`). [`IcmpProber::socket_kind`] says which, and the daemon logs
//! it at start.
//!
//! One probe sends up to `attempts` echoes spread evenly over its timeout
//! (every 100 ms with the defaults); the first reply answers the probe and
//! the echoes not yet sent are cancelled. Lost packets rarely make a silent
//! round, at no cost while the peer answers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use surge_ping::{Client, Config, ICMP, PingIdentifier, PingSequence};
use tokio::task::JoinSet;

/// Which kind of ICMP socket the prober got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// `SOCK_DGRAM` ICMP: unprivileged, allowed by `ping_group_range`.
    Datagram,
    /// `SOCK_RAW` ICMP: needs root or `CAP_NET_RAW`.
    Raw,
}

impl SocketKind {
    /// Name for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketKind::Datagram => "dgram",
            SocketKind::Raw => "raw",
        }
    }
}

/// The ICMP socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open an ICMP socket ({0}); allow unprivileged ICMP with `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` or run with CAP_NET_RAW"
)]
pub struct ProbeError(String);

/// Sends ICMP echoes.
///
/// Each target address gets its own socket: on Linux an ICMP error caused by
/// one target (host unreachable while its neighbour entry fails) is reported
/// on the socket's next operation, and must not fail the echo to another
/// target — the witness must never go silent because the peer is gone.
pub struct IcmpProber {
    config: Config,
    clients: Mutex<HashMap<Ipv4Addr, Client>>,
    kind: SocketKind,
    attempts: u32,
    seq: AtomicU16,
    ident: u16,
}

impl IcmpProber {
    /// Open the socket: datagram first, raw as the fall-back.
    pub fn new(attempts: u32) -> Result<Self, ProbeError> {
        let config = Config::builder()
            .kind(ICMP::V4)
            .sock_type_hint(socket2::Type::DGRAM)
            .build();
        let client = Client::new(&config).map_err(|e| ProbeError(e.to_string()))?;
        let kind = if client.get_socket().get_type() == socket2::Type::RAW {
            SocketKind::Raw
        } else {
            SocketKind::Datagram
        };
        Ok(IcmpProber {
            config,
            clients: Mutex::new(HashMap::new()),
            kind,
            attempts: attempts.max(1),
            seq: AtomicU16::new(0),
            ident: (std::process::id() & 0xffff) as u16,
        })
    }

    /// The socket kind in use.
    pub fn socket_kind(&self) -> SocketKind {
        self.kind
    }

    /// Probe `addr`: the RTT of the first reply, or `None` when nothing
    /// answered within `timeout`.
    pub async fn probe(&self, addr: Ipv4Addr, timeout: Duration) -> Option<Duration> {
        let client = {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            match clients.get(&addr) {
                Some(c) => c.clone(),
                None => {
                    // Opening worked at start; if it fails now, the probe is silent.
                    let c = Client::new(&self.config).ok()?;
                    clients.insert(addr, c.clone());
                    c
                }
            }
        };
        let spacing = timeout / self.attempts;
        let mut set = JoinSet::new();
        for i in 0..self.attempts {
            let seq = PingSequence(self.seq.fetch_add(1, Ordering::Relaxed));
            let mut pinger = client
                .pinger(IpAddr::V4(addr), PingIdentifier(self.ident))
                .await;
            let delay = spacing * i;
            pinger.timeout(timeout.saturating_sub(delay));
            set.spawn(async move {
                tokio::time::sleep(delay).await;
                pinger.ping(seq, &[0u8; 16]).await.ok().map(|(_, rtt)| rtt)
            });
        }
        while let Some(done) = set.join_next().await {
            if let Ok(Some(rtt)) = done {
                set.abort_all();
                return Some(rtt);
            }
        }
        None
    }
}
