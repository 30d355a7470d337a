//! The members' channel: the second opinion of a silent peer.
//!
//! Every daemon listens on UDP `members.port` (7947) and does two things:
//!
//! * **Helper.** On an authentic ping request it probes the named slot's
//!   overlay address with ICMP, from where it is, and answers with what it
//!   found. At most [`MAX_HELPING`] such probes run at once; more requests
//!   are dropped and counted.
//! * **Asker.** [`Members::ask`] sends a ping request to every other slot's
//!   overlay address (about the hub, whose overlay may be what is sick, to
//!   their underlay addresses) and collects the answers: one helper that reached the
//!   peer is enough ([`Verdict::Reached`]); `members.helpers` answers that
//!   did not (every helper's, in a smaller fleet) make
//!   [`Verdict::Unreached`]; fewer by the timeout make [`Verdict::TooFew`].
//!
//! * **Resigner.** A holder whose service failed gives up its ID and tells
//!   its watcher so ([`Members::resign`]), on the underlay since its overlay
//!   identity is already down. The watcher hears it through
//!   [`Members::resignations`] and judges the slot at once instead of after
//!   `probe.misses` rounds, still with its own probe and the second opinion.
//!
//! * **Claimer.** A taker whose new tags EC2 shows tells the hub so
//!   ([`Members::claim`]), on the underlay. The hub's fabric loop, which
//!   hears it through the route given to [`Members::route_claims`], reads its
//!   admission list from EC2 at once and answers whether the fresh list
//!   admits the taker from the address the claim came from; the taker
//!   connects as its new slot on that answer instead of after a fixed
//!   [`crate::admission::SETTLE`]. The list still comes from EC2 alone.
//!
//! * **Reporter.** On an authentic status request (from `chainwatch
//!   fleet`, run on any member) it answers with its live status: slot,
//!   phase, misses, degraded, the peer's last RTT, rounds ([`ask_status`]).
//!
//! Datagrams are sealed with the fleet's members key ([`wire`]). Only
//! datagrams from the overlay subnet or a private (VPC) address are looked
//! at; a datagram that is
//! oversize, malformed, forged, stale or replayed is dropped and counted,
//! and nothing else happens: no probe, no answer, no log line per datagram.

pub mod wire;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc, watch};

use self::wire::{Body, Datagram, Key, Live, Rejected, Replay};
use super::prober::IcmpProber;
use crate::clock::unix_ms;
use crate::config::Settings;
use crate::core::Verdict;
use crate::layout::{Layout, Slot};

/// Helper probes running at once; requests beyond are dropped.
pub const MAX_HELPING: usize = 8;
/// Resignations waiting for the driver; more are dropped (the first one
/// is all it needs).
const RESIGN_QUEUE: usize = 4;
/// Copies of a resignation sent.
pub const RESIGN_COPIES: usize = 3;
/// Entries of the replay cache.
const REPLAY_CAP: usize = 4096;
/// How long a claimer waits for the hub's answer before it claims again
/// (a datagram may be lost; an answer to any of its claims counts).
const CLAIM_RETRY: Duration = Duration::from_millis(300);

/// Why the channel cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    /// The key file cannot be read, or others may read it.
    #[error("the members key: {0}")]
    Key(#[from] crate::fsio::SecretError),
    /// The key is too short.
    #[error("{path}: {reason}")]
    Short {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: wire::ShortKey,
    },
    /// The port cannot be bound.
    #[error("cannot listen on UDP {addr} for the members' channel: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        reason: String,
    },
}

/// Read a members key file: owner-only, at least [`wire::MIN_KEY`] bytes.
/// `Ok(None)` when the file does not exist (the channel is off).
pub fn read_key(path: &Path) -> Result<Option<Key>, MembersError> {
    let Some(bytes) = crate::fsio::read_secret(path, crate::fsio::Readers::Owner)? else {
        return Ok(None);
    };
    Key::new(&bytes)
        .map(Some)
        .map_err(|reason| MembersError::Short {
            path: path.into(),
            reason,
        })
}

/// What the channel has seen, for `status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MembersCounters {
    /// Second opinions asked.
    pub asked: u64,
    /// Of them, a helper reached the peer.
    pub vouched: u64,
    /// Probes run for other members.
    pub helped: u64,
    /// Requests dropped because [`MAX_HELPING`] probes were running.
    pub busy: u64,
    /// Datagrams from outside the overlay subnet.
    pub foreign: u64,
    /// Oversize datagrams.
    pub oversize: u64,
    /// Malformed datagrams.
    pub malformed: u64,
    /// Datagrams with a bad MAC.
    pub forged: u64,
    /// Datagrams outside the time window.
    pub stale: u64,
    /// Datagrams seen before.
    pub replayed: u64,
    /// Authentic resignations heard (a holder gave up its ID).
    pub resigns: u64,
    /// Authentic claims heard by the hub (a taker asked to be admitted).
    pub claims: u64,
}

impl MembersCounters {
    /// Datagrams dropped for any reason of their own.
    pub fn dropped(&self) -> u64 {
        self.foreign + self.oversize + self.malformed + self.forged + self.stale + self.replayed
    }
}

#[derive(Default)]
struct Atomics {
    asked: AtomicU64,
    vouched: AtomicU64,
    helped: AtomicU64,
    busy: AtomicU64,
    foreign: AtomicU64,
    oversize: AtomicU64,
    malformed: AtomicU64,
    forged: AtomicU64,
    stale: AtomicU64,
    replayed: AtomicU64,
    resigns: AtomicU64,
    claims: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

type Waiting = HashMap<u64, mpsc::UnboundedSender<(Ipv4Addr, bool)>>;

/// A claim the hub heard, for its fabric loop.
#[derive(Debug)]
pub struct Claim {
    /// The slot the claimer says it now holds.
    pub slot: Slot,
    /// The (underlay) address the claim came from.
    pub from: Ipv4Addr,
    /// Where the loop says whether its fresh list admits `slot` from
    /// `from`.
    pub answer: tokio::sync::oneshot::Sender<bool>,
}

/// The channel once the run loop has started it, for the parts of the
/// daemon built before it (the switcher).
pub type Shared = Arc<std::sync::OnceLock<Arc<Members>>>;

/// The channel of one daemon.
pub struct Members {
    socket: UdpSocket,
    key: Key,
    port: u16,
    sender: u64,
    seq: AtomicU64,
    helpers: usize,
    probe_timeout: Duration,
    layout: Layout,
    prober: Arc<IcmpProber>,
    replay: Mutex<Replay>,
    waiting: Mutex<Waiting>,
    helping: Arc<Semaphore>,
    counters: Atomics,
    resigned: mpsc::Sender<Slot>,
    resignations: Mutex<Option<mpsc::Receiver<Slot>>>,
    live: std::sync::OnceLock<watch::Receiver<super::StatusReport>>,
    claims: std::sync::OnceLock<mpsc::Sender<Claim>>,
    client_mgmt: std::sync::OnceLock<std::path::PathBuf>,
    /// When a hub nudge last restarted the client: its copies (and other
    /// nudges soon after) restart nothing more.
    nudged_at: Mutex<Option<std::time::Instant>>,
}

/// A nudge within this long of the last one is a copy, or the same news.
const NUDGE_QUIET: Duration = Duration::from_secs(3);

/// The members' key and the channel's port, bound, when the key is
/// provisioned; `None` (logged loudly) when it is not, and the channel is
/// off.
pub fn open(s: &Settings) -> Result<Option<(Key, std::net::UdpSocket)>, MembersError> {
    let key_file = s.config.members_key_file();
    let Some(key) = read_key(&key_file)? else {
        tracing::warn!(
            key = %key_file.display(),
            "no members key: the members' channel is off, so no second opinion is asked before a peer is declared dead (a one-way path fault can fence a healthy peer); provision the key with the PKI"
        );
        return Ok(None);
    };
    let socket = Members::bind(s.config.members.port)?;
    tracing::info!(
        port = s.config.members.port,
        "members' channel on UDP {}: a silent peer is declared dead only when other members cannot reach it either",
        s.config.members.port
    );
    Ok(Some((key, socket)))
}

/// Tunables of the channel.
#[derive(Debug, Clone)]
pub struct MembersOptions {
    /// UDP port, the same on every member.
    pub port: u16,
    /// Answers that did not reach the peer enough to confirm its death.
    pub helpers: usize,
    /// How far a datagram's send time may be from this clock (ms).
    pub window_ms: u64,
    /// How long a helper's probe may take.
    pub probe_timeout: Duration,
}

impl Members {
    /// Bind the channel's UDP port on every address of this host (before
    /// the runtime runs: a port in use fails the start, not a later round).
    pub fn bind(port: u16) -> Result<std::net::UdpSocket, MembersError> {
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        std::net::UdpSocket::bind(addr)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| MembersError::Bind {
                addr,
                reason: e.to_string(),
            })
    }

    /// The channel of `[members]` on a socket from [`open`], serving;
    /// `None` (logged) when it cannot start.
    pub fn start(
        socket: std::net::UdpSocket,
        key: Key,
        s: &Settings,
        prober: Arc<IcmpProber>,
    ) -> Option<Arc<Members>> {
        let opts = MembersOptions {
            port: s.config.members.port,
            helpers: s.config.members.helpers as usize,
            window_ms: crate::clock::whole_ms(s.config.members.window),
            probe_timeout: s.config.probe.timeout,
        };
        match Members::new(socket, key, &opts, s.layout.clone(), prober) {
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

    /// The channel on a socket from [`Members::bind`]; call within the
    /// runtime, then run [`Members::serve`].
    pub fn new(
        socket: std::net::UdpSocket,
        key: Key,
        opts: &MembersOptions,
        layout: Layout,
        prober: Arc<IcmpProber>,
    ) -> Result<Arc<Members>, MembersError> {
        let addr = socket
            .local_addr()
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, opts.port)));
        let socket = UdpSocket::from_std(socket).map_err(|e| MembersError::Bind {
            addr,
            reason: e.to_string(),
        })?;
        let (sender, _) = uuid::Uuid::new_v4().as_u64_pair();
        let (resigned, resignations) = mpsc::channel(RESIGN_QUEUE);
        Ok(Arc::new(Members {
            socket,
            key,
            port: opts.port,
            sender,
            seq: AtomicU64::new(1),
            helpers: opts.helpers.max(1),
            probe_timeout: opts.probe_timeout,
            layout,
            prober,
            replay: Mutex::new(Replay::new(opts.window_ms, REPLAY_CAP)),
            waiting: Mutex::new(HashMap::new()),
            helping: Arc::new(Semaphore::new(MAX_HELPING)),
            counters: Atomics::default(),
            resigned,
            resignations: Mutex::new(Some(resignations)),
            live: std::sync::OnceLock::new(),
            claims: std::sync::OnceLock::new(),
            client_mgmt: std::sync::OnceLock::new(),
            nudged_at: Mutex::new(None),
        }))
    }

    /// A new hub's nudge ([`Body::HubMoved`]) restarts this daemon's
    /// OpenVPN client, on its management socket `mgmt`, when it is not
    /// connected (until this is called, nudges are ignored).
    pub fn reconnect_on_hub_moved(&self, mgmt: std::path::PathBuf) {
        let _ = self.client_mgmt.set(mgmt);
    }

    /// Tell every member at `to` (their underlay addresses) that this node
    /// is the hub now: [`RESIGN_COPIES`] copies each, since a datagram may
    /// be lost. How many addresses were sent to.
    pub async fn announce_hub(&self, to: &[Ipv4Addr]) -> usize {
        let mut sent = 0;
        for i in 0..RESIGN_COPIES {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent = 0;
            for addr in to {
                let (_, bytes) = self.next(Body::HubMoved {
                    slot: Slot::new(crate::layout::Role::Frontend, 1),
                });
                let at = SocketAddrV4::new(*addr, self.port);
                match self.socket.send_to(&bytes, at).await {
                    Ok(_) => sent += 1,
                    Err(e) => tracing::debug!(%at, "members' channel: hub nudge not sent: {e}"),
                }
            }
        }
        sent
    }

    /// Answer status requests from the daemon's status reports (until
    /// this is called, they go unanswered).
    pub fn share_status(&self, status: watch::Receiver<super::StatusReport>) {
        let _ = self.live.set(status);
    }

    /// The counters so far.
    pub fn counters(&self) -> MembersCounters {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MembersCounters {
            asked: l(&c.asked),
            vouched: l(&c.vouched),
            helped: l(&c.helped),
            busy: l(&c.busy),
            foreign: l(&c.foreign),
            oversize: l(&c.oversize),
            malformed: l(&c.malformed),
            forged: l(&c.forged),
            stale: l(&c.stale),
            replayed: l(&c.replayed),
            resigns: l(&c.resigns),
            claims: l(&c.claims),
        }
    }

    /// The slots whose holders said they resigned; the first call takes
    /// the receiver, later calls get `None`.
    pub fn resignations(&self) -> Option<mpsc::Receiver<Slot>> {
        lock(&self.resignations).take()
    }

    /// Tell `watcher` (its underlay address) that this node gave up `slot`.
    /// Sent [`RESIGN_COPIES`] times, since a datagram may be lost; each copy
    /// has its own sequence number, and the watcher acts on the first.
    pub async fn resign(&self, slot: Slot, watcher: Ipv4Addr) {
        let to = SocketAddrV4::new(watcher, self.port);
        for i in 0..RESIGN_COPIES {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (_, bytes) = self.next(Body::Resign { slot });
            if let Err(e) = self.socket.send_to(&bytes, to).await {
                tracing::warn!(%to, "members' channel: resignation not sent: {e}");
            }
        }
    }

    /// Hand the claims this daemon hears to `route` (the fabric loop);
    /// until this is called, claims go unanswered.
    pub fn route_claims(&self, route: mpsc::Sender<Claim>) {
        let _ = self.claims.set(route);
    }

    /// Tell the hub (`hub`, its underlay address) that this node now holds
    /// `slot`, and wait until the hub's admission list admits it, claiming
    /// again every [`CLAIM_RETRY`]; false when `patience` ran out first.
    pub async fn claim(&self, slot: Slot, hub: Ipv4Addr, patience: Duration) -> bool {
        let to = SocketAddrV4::new(hub, self.port);
        let deadline = tokio::time::Instant::now() + patience;
        // One channel for every claim of this wait: the hub answers after
        // its read of EC2, which may outlast a retry, and an answer to an
        // earlier claim counts as much as one to the last.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut sent = Vec::new();
        let admitted = loop {
            let (seq, bytes) = self.next(Body::Claim { slot });
            lock(&self.waiting).insert(seq, tx.clone());
            sent.push(seq);
            if let Err(e) = self.socket.send_to(&bytes, to).await {
                tracing::debug!(%to, "members' channel: claim not sent: {e}");
            }
            let round = deadline.min(tokio::time::Instant::now() + CLAIM_RETRY);
            let mut yes = false;
            // Only the hub's own yes ends the wait; a no waits for the
            // next read.
            while let Ok(Some((from, answer))) = tokio::time::timeout_at(round, rx.recv()).await {
                if from == hub && answer {
                    yes = true;
                    break;
                }
            }
            if yes {
                break true;
            }
            if tokio::time::Instant::now() >= deadline {
                break false;
            }
        };
        let mut waiting = lock(&self.waiting);
        for seq in sent {
            waiting.remove(&seq);
        }
        admitted
    }

    fn next(&self, body: Body) -> (u64, Vec<u8>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let d = Datagram {
            sender: self.sender,
            seq,
            sent_ms: unix_ms(SystemTime::now()),
            body,
        };
        (seq, wire::seal(&self.key, &d))
    }

    /// The overlay addresses of every slot in `held` (every slot of the
    /// layout when that is unknown) but `me` and `peer`: the helpers of an
    /// ordinary second opinion.
    pub fn overlay_helpers(&self, me: Slot, peer: Slot, held: Option<&[Slot]>) -> Vec<Ipv4Addr> {
        self.layout
            .all_slots()
            .filter(|s| *s != me && *s != peer && held.is_none_or(|h| h.contains(s)))
            .map(|s| self.layout.overlay_addr(s))
            .collect()
    }

    /// Ask `helpers` (addresses of other members, on the overlay or, for
    /// the hub, on the underlay) to probe `peer`'s overlay address from
    /// where they are.
    pub async fn ask(&self, peer: Slot, helpers: Vec<Ipv4Addr>, timeout: Duration) -> Verdict {
        self.ask_with(Body::PingReq { target: peer }, helpers, timeout)
            .await
    }

    /// Ask `helpers` to probe `peer` (the hub) on its overlay address and on
    /// `underlay`, its VPC address: an answer on either reaches it.
    pub async fn ask_anywhere(
        &self,
        peer: Slot,
        underlay: Ipv4Addr,
        helpers: Vec<Ipv4Addr>,
        timeout: Duration,
    ) -> Verdict {
        let body = Body::PingAny {
            target: peer,
            underlay,
        };
        self.ask_with(body, helpers, timeout).await
    }

    async fn ask_with(&self, body: Body, helpers: Vec<Ipv4Addr>, timeout: Duration) -> Verdict {
        bump(&self.counters.asked);
        if helpers.is_empty() {
            return Verdict::NoneToAsk;
        }
        let (seq, bytes) = self.next(body);
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.waiting).insert(seq, tx);
        for ip in &helpers {
            // A helper that is not there (a vacant slot) simply never
            // answers; a send error is no answer either.
            let _ = self
                .socket
                .send_to(&bytes, SocketAddrV4::new(*ip, self.port))
                .await;
        }
        let asked = helpers.len() as u32;
        let mut unreached: HashSet<Ipv4Addr> = HashSet::new();
        let deadline = tokio::time::Instant::now() + timeout;
        // Wait for one helper that reached the peer, `members.helpers`
        // that did not, or the deadline; the core's rule says what the
        // answers add up to.
        let mut reached = 0;
        while reached == 0 && unreached.len() < self.helpers.min(helpers.len()) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((from, answer))) if helpers.contains(&from) => {
                    if answer {
                        reached += 1;
                    } else {
                        unreached.insert(from);
                    }
                }
                Ok(Some(_)) => {} // an answer from an address not asked
                Ok(None) | Err(_) => break,
            }
        }
        lock(&self.waiting).remove(&seq);
        let quorum = u32::try_from(self.helpers).unwrap_or(u32::MAX);
        let verdict = Verdict::of(asked, reached, unreached.len() as u32, quorum);
        if verdict == Verdict::Reached {
            bump(&self.counters.vouched);
        }
        verdict
    }

    /// Receive and handle datagrams until the socket fails.
    pub async fn serve(self: Arc<Self>) {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("members' channel: receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            self.handle(&buf[..n], from);
        }
    }

    fn handle(self: &Arc<Self>, bytes: &[u8], from: SocketAddr) {
        let SocketAddr::V4(from) = from else {
            bump(&self.counters.foreign);
            return;
        };
        // The overlay, or the VPC (the hub's second opinion is asked on the
        // underlay): never a public address.
        if !self.layout.subnet().contains(*from.ip()) && !from.ip().is_private() {
            bump(&self.counters.foreign);
            return;
        }
        let d = match wire::open(&self.key, bytes).and_then(|d| {
            lock(&self.replay)
                .admit(&d, unix_ms(SystemTime::now()))
                .map(|()| d)
        }) {
            Ok(d) => d,
            Err(r) => {
                bump(match r {
                    Rejected::Oversize => &self.counters.oversize,
                    Rejected::Malformed => &self.counters.malformed,
                    Rejected::Forged => &self.counters.forged,
                    Rejected::Stale => &self.counters.stale,
                    Rejected::Replayed => &self.counters.replayed,
                });
                return;
            }
        };
        match d.body {
            Body::StatusReq => {
                let Some(status) = self.live.get() else {
                    return;
                };
                let live = {
                    let r = status.borrow();
                    Live {
                        slot: Slot::new(r.role, r.id),
                        phase: wire::PHASES
                            .into_iter()
                            .find(|p| *p == r.phase)
                            .unwrap_or("idle"),
                        misses: u8::try_from(r.watch.misses).unwrap_or(u8::MAX),
                        degraded: r.watch.degraded,
                        cut_off: r.watch.cut_off,
                        rtt_us: r
                            .last_rtt_ms
                            .map(|ms| (ms * 1000.0).clamp(1.0, f64::from(u32::MAX)) as u32),
                        rounds: r.watch.rounds,
                    }
                };
                let (_, bytes) = self.next(Body::Status { req: d.seq, live });
                // Non-blocking: a full socket buffer drops the answer, as
                // the network might.
                let _ = self.socket.try_send_to(&bytes, SocketAddr::V4(from));
            }
            Body::Status { .. } => {} // answers go to `chainwatch fleet`
            Body::Ack { req, reached, .. } => {
                if let Some(tx) = lock(&self.waiting).get(&req) {
                    let _ = tx.send((*from.ip(), reached));
                }
            }
            Body::HubMoved { slot } => {
                if !slot.is_hub() {
                    bump(&self.counters.malformed);
                    return;
                }
                let Some(mgmt) = self.client_mgmt.get().cloned() else {
                    return;
                };
                {
                    let mut at = lock(&self.nudged_at);
                    let now = std::time::Instant::now();
                    if at.is_some_and(|t| now.duration_since(t) < NUDGE_QUIET) {
                        return;
                    }
                    *at = Some(now);
                }
                tokio::spawn(async move {
                    if super::openvpn::reconnect_if_down(&mgmt).await {
                        tracing::info!(%from, "the hub moved: this node's OpenVPN client, not connected, starts its handshake again now");
                    }
                });
            }
            Body::Resign { slot } => {
                if slot.id > self.layout.max_id(slot.role) {
                    bump(&self.counters.malformed);
                    return;
                }
                bump(&self.counters.resigns);
                // Full: the driver has not taken the last ones yet, and one
                // is all it needs.
                let _ = self.resigned.try_send(slot);
            }
            Body::Claim { slot } => {
                if slot.id > self.layout.max_id(slot.role) {
                    bump(&self.counters.malformed);
                    return;
                }
                // Not routed: this daemon keeps no admission list.
                let Some(route) = self.claims.get() else {
                    return;
                };
                let (answer, verdict) = tokio::sync::oneshot::channel();
                let claim = Claim {
                    slot,
                    from: *from.ip(),
                    answer,
                };
                if route.try_send(claim).is_err() {
                    bump(&self.counters.busy);
                    return;
                }
                bump(&self.counters.claims);
                let me = self.clone();
                tokio::spawn(async move {
                    // No answer (the loop is not the hub): the claimer
                    // falls back to its fixed wait.
                    let Ok(admitted) = verdict.await else {
                        return;
                    };
                    let (_, bytes) = me.next(Body::Ack {
                        req: d.seq,
                        reached: admitted,
                        rtt_us: 0,
                    });
                    let _ = me.socket.send_to(&bytes, from).await;
                });
            }
            Body::PingReq { .. } | Body::PingAny { .. } => {
                let (target, underlay) = match d.body {
                    Body::PingAny { target, underlay } => (target, Some(underlay)),
                    Body::PingReq { target } => (target, None),
                    _ => return,
                };
                // Only a VPC address is probed for another member: never a
                // public one, nor the overlay's or a loopback.
                if target.id > self.layout.max_id(target.role)
                    || underlay.is_some_and(|u| !u.is_private() || self.layout.subnet().contains(u))
                {
                    bump(&self.counters.malformed);
                    return;
                }
                let Ok(permit) = self.helping.clone().try_acquire_owned() else {
                    bump(&self.counters.busy);
                    return;
                };
                bump(&self.counters.helped);
                let me = self.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let ip = me.layout.overlay_addr(target);
                    let rtt = match underlay {
                        // Either answer will do: both at once.
                        Some(u) => {
                            let (a, b) = tokio::join!(
                                me.prober.probe(ip, me.probe_timeout),
                                me.prober.probe(u, me.probe_timeout)
                            );
                            a.or(b)
                        }
                        None => me.prober.probe(ip, me.probe_timeout).await,
                    };
                    let (_, bytes) = me.next(Body::Ack {
                        req: d.seq,
                        reached: rtt.is_some(),
                        rtt_us: rtt
                            .map(|r| u32::try_from(r.as_micros()).unwrap_or(u32::MAX))
                            .unwrap_or(0),
                    });
                    let _ = me.socket.send_to(&bytes, from).await;
                });
            }
        }
    }
}

/// Ask the daemons at `addrs` (overlay addresses, port `port`) for their
/// live status, from a fresh socket, and collect the authentic answers
/// that arrive within `timeout`, by the address that sent them.
pub async fn ask_status(
    key: &Key,
    port: u16,
    addrs: &[Ipv4Addr],
    timeout: Duration,
) -> Result<HashMap<Ipv4Addr, Live>, MembersError> {
    let bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|e| MembersError::Bind {
            addr: bind,
            reason: e.to_string(),
        })?;
    let (sender, _) = uuid::Uuid::new_v4().as_u64_pair();
    let mut asked = HashMap::new();
    for (seq, ip) in (1u64..).zip(addrs) {
        let d = Datagram {
            sender,
            seq,
            sent_ms: unix_ms(SystemTime::now()),
            body: Body::StatusReq,
        };
        // An address nobody holds, or no route: simply no answer.
        let _ = socket
            .send_to(&wire::seal(key, &d), SocketAddrV4::new(*ip, port))
            .await;
        asked.insert(*ip, seq);
    }
    let mut out = HashMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; wire::MAX_LEN + 1];
    // Answers sent long ago (a replay) are as good as none.
    let mut fresh = Replay::new(10_000, 4 * asked.len().max(1));
    while out.len() < asked.len() {
        let (n, from) = match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Ok(Ok(got)) => got,
            Ok(Err(_)) | Err(_) => break,
        };
        let SocketAddr::V4(from) = from else { continue };
        // Only the answer to the request sent to that very address.
        if let Ok(d) = wire::open(key, &buf[..n])
            && let Body::Status { req, live } = d.body
            && asked.get(from.ip()) == Some(&req)
            && fresh.admit(&d, unix_ms(SystemTime::now())).is_ok()
        {
            out.insert(*from.ip(), live);
        }
    }
    Ok(out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_key_file_must_be_private_and_long_enough_and_may_be_absent() {
        let (_dir, p) = crate::fsio::scratch("members.key");
        assert!(matches!(read_key(&p), Ok(None)), "no file: channel off");
        std::fs::write(&p, "0123456789abcdef0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_key(&p), Ok(Some(_))));
        std::fs::write(&p, "short\n").unwrap();
        let e = read_key(&p).unwrap_err().to_string();
        assert!(e.contains("openssl rand -hex 32"), "{e}");
        assert!(!e.contains("short"), "the key itself is never printed: {e}");
    }

    /// A resignation is delivered to the driver once per datagram, counted,
    /// and one naming a slot the layout does not have is malformed.
    /// A prober, or `None` (and a loud skip) where no ICMP socket opens.
    fn prober() -> Option<Arc<IcmpProber>> {
        match IcmpProber::new(1) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(
                    !ci,
                    "prerequisite missing under CI=true: an ICMP socket: {e}"
                );
                eprintln!("SKIPPED: no ICMP socket here ({e}); run as root");
                None
            }
        }
    }

    /// Two members of the default layout sharing one key, each on its own
    /// loopback port.
    fn two_members(prober: &Arc<IcmpProber>) -> (Arc<Members>, Arc<Members>) {
        let key = Key::new(&[b'k'; 32]).unwrap();
        let opts = test_options();
        let make = || {
            Members::new(
                Members::bind(0).unwrap(),
                key.clone(),
                &opts,
                Layout::default(),
                prober.clone(),
            )
            .unwrap()
        };
        (make(), make())
    }

    fn test_options() -> MembersOptions {
        MembersOptions {
            port: 7947,
            helpers: 3,
            window_ms: 10_000,
            probe_timeout: Duration::from_millis(100),
        }
    }

    /// The helpers asked are the other holders when EC2 named them (so a
    /// quorum counts only members that can answer), every other slot of
    /// the layout when it did not.
    #[tokio::test]
    async fn the_helpers_are_the_other_holders_or_every_other_slot() {
        let Some(prober) = prober() else { return };
        let opts = test_options();
        let layout = Layout::default();
        let m = Members::new(
            Members::bind(0).unwrap(),
            Key::new(&[b'k'; 32]).unwrap(),
            &opts,
            layout.clone(),
            prober,
        )
        .unwrap();
        let fe = |id| Slot::new(crate::layout::Role::Frontend, id);
        let held = [fe(1), fe(2), fe(3), fe(4)];
        assert_eq!(
            m.overlay_helpers(fe(4), fe(3), Some(&held)),
            vec![layout.overlay_addr(fe(1)), layout.overlay_addr(fe(2))]
        );
        let all = m.overlay_helpers(fe(4), fe(3), None);
        assert_eq!(all.len(), layout.all_slots().count() - 2);
        assert!(!all.contains(&layout.overlay_addr(fe(3))));
    }

    #[tokio::test]
    async fn a_resignation_is_counted_and_handed_to_the_driver() {
        let Some(prober) = prober() else { return };
        let layout = Layout::default();
        let (watcher, holder) = two_members(&prober);
        let mut heard = watcher.resignations().expect("the receiver");
        assert!(watcher.resignations().is_none(), "taken once");
        let vpc: SocketAddr = "10.0.3.7:7947".parse().unwrap();
        let slot = Slot::new(crate::layout::Role::Backend, 1);
        let (_, bytes) = holder.next(Body::Resign { slot });
        watcher.handle(&bytes, vpc);
        watcher.handle(&bytes, vpc); // the same datagram again
        assert_eq!(heard.try_recv(), Ok(slot));
        assert!(heard.try_recv().is_err(), "a replay is not heard twice");
        let c = watcher.counters();
        assert_eq!((c.resigns, c.replayed), (1, 1));
        // A slot beyond the layout, and a resignation from a public address.
        let beyond = Slot::new(crate::layout::Role::Backend, layout.max_id(slot.role) + 1);
        let (_, bytes) = holder.next(Body::Resign { slot: beyond });
        watcher.handle(&bytes, vpc);
        let (_, bytes) = holder.next(Body::Resign { slot });
        watcher.handle(&bytes, "8.8.8.8:7947".parse().unwrap());
        assert!(heard.try_recv().is_err());
        let c = watcher.counters();
        assert_eq!((c.resigns, c.malformed, c.foreign), (1, 1, 1));
    }

    /// A hub that keeps an admission list hands each authentic claim to
    /// its fabric loop (a daemon that keeps none ignores it, a slot beyond
    /// the layout is malformed); a taker's wait ends on the hub's own
    /// answer, not on another address's, and runs out after `patience`.
    #[tokio::test]
    async fn a_claim_reaches_the_hub_s_list_and_only_the_hub_s_answer_ends_the_wait() {
        let Some(prober) = prober() else { return };
        let layout = Layout::default();
        let (hub, taker) = two_members(&prober);
        let fe2 = Slot::new(crate::layout::Role::Frontend, 2);
        let vpc: SocketAddr = "10.0.3.7:7947".parse().unwrap();
        let (_, bytes) = taker.next(Body::Claim { slot: fe2 });
        hub.handle(&bytes, vpc);
        assert_eq!(hub.counters().claims, 0, "no list kept: ignored");
        let (route, mut heard) = mpsc::channel(8);
        hub.route_claims(route);
        let (_, bytes) = taker.next(Body::Claim { slot: fe2 });
        hub.handle(&bytes, vpc);
        let claim = heard.try_recv().expect("the claim reaches the fabric loop");
        assert_eq!((claim.slot, claim.from), (fe2, Ipv4Addr::new(10, 0, 3, 7)));
        let beyond = Slot::new(crate::layout::Role::Frontend, layout.max_id(fe2.role) + 1);
        let (_, bytes) = taker.next(Body::Claim { slot: beyond });
        hub.handle(&bytes, vpc);
        assert!(heard.try_recv().is_err());
        let c = hub.counters();
        assert_eq!((c.claims, c.malformed), (1, 1));

        let hub_ip = Ipv4Addr::new(10, 0, 3, 1);
        let waiting = tokio::spawn({
            let taker = taker.clone();
            async move {
                let start = tokio::time::Instant::now();
                let admitted = taker.claim(fe2, hub_ip, Duration::from_secs(5)).await;
                (admitted, start.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let req = *lock(&taker.waiting).keys().next().expect("a claim waits");
        let ack = hub
            .next(Body::Ack {
                req,
                reached: true,
                rtt_us: 0,
            })
            .1;
        taker.handle(&ack, "10.0.3.9:7947".parse().unwrap());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            !waiting.is_finished(),
            "another address's answer ended the wait"
        );
        let ack = hub
            .next(Body::Ack {
                req,
                reached: true,
                rtt_us: 0,
            })
            .1;
        taker.handle(&ack, SocketAddr::from((hub_ip, 7947)));
        let (admitted, took) = waiting.await.unwrap();
        assert!(admitted);
        assert!(took < Duration::from_secs(5), "{took:?}");
        // Nobody answers: false once the patience ran out.
        let start = tokio::time::Instant::now();
        assert!(!taker.claim(fe2, hub_ip, Duration::from_millis(400)).await);
        assert!(start.elapsed() >= Duration::from_millis(400));
    }

    /// The hub answers a claim after its read of EC2, which on AWS can take
    /// longer than the taker's retry: the answer to the first claim, come
    /// after the second went out, still ends the wait.
    #[tokio::test]
    async fn an_answer_to_an_earlier_claim_still_counts() {
        let Some(prober) = prober() else { return };
        let (hub, taker) = two_members(&prober);
        let fe2 = Slot::new(crate::layout::Role::Frontend, 2);
        let hub_ip = Ipv4Addr::new(10, 0, 3, 1);
        let waiting = tokio::spawn({
            let taker = taker.clone();
            async move { taker.claim(fe2, hub_ip, Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let first = *lock(&taker.waiting).keys().min().expect("a claim waits");
        // The taker claims again before the hub answered the first.
        tokio::time::sleep(CLAIM_RETRY + Duration::from_millis(50)).await;
        let ack = hub
            .next(Body::Ack {
                req: first,
                reached: true,
                rtt_us: 0,
            })
            .1;
        taker.handle(&ack, SocketAddr::from((hub_ip, 7947)));
        let admitted = tokio::time::timeout(Duration::from_millis(100), waiting)
            .await
            .expect("the late answer ends the wait at once")
            .unwrap();
        assert!(admitted);
        assert!(lock(&taker.waiting).is_empty(), "every claim is forgotten");
    }
}
