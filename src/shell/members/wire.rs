//! The members' datagrams: a ping request ("probe this slot for me") and its
//! answer, a resignation, and a status request (`chainwatch fleet`) and its
//! answer, each sealed with HMAC-SHA256 under the fleet's members key.
//!
//! Fixed layout, big-endian, nothing optional:
//!
//! ```text
//! 0..4    magic "CWM1"
//! 4       kind: 1 ping-req, 2 ack, 3 resign, 4 status-req, 5 status,
//!         6 claim, 7 ping-any
//! 5..13   sender: random per daemon start
//! 13..21  seq: per sender, from 1
//! 21..29  sent: Unix milliseconds
//! ping-req, resign, claim: 29 role (0 frontend, 1 backend), 30..34 id
//! ping-any: 29 role, 30..34 id, 34..38 an IPv4 underlay address
//! ack:      29..37 the request's seq, 37 reached (0 or 1), 38..42 rtt (µs)
//! status-req: nothing more
//! status:   29..37 the request's seq, 37 role, 38..42 id, 42 phase (0 idle,
//!           1 watching, 2 fencing, 3 taking over), 43 misses (saturating),
//!           44 flags (1 degraded, 2 cut off), 45..49 rtt (µs, 0: none),
//!           49..57 rounds
//! then 32 bytes of HMAC-SHA256 over everything before them
//! ```
//!
//! [`open`] checks, in this order and before believing any field: the size,
//! the magic, the MAC (constant-time), the fields, the time window, and the
//! replay cache. Only a datagram that passes all of them is acted on.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::layout::{Role, Slot};

type HmacSha256 = Hmac<Sha256>;

const MAGIC: &[u8; 4] = b"CWM1";
const HEADER: usize = 29;
const TAG: usize = 32;
/// A ping request's size on the wire.
pub const PING_REQ_LEN: usize = HEADER + 5 + TAG;
/// A resignation's size on the wire (laid out as a ping request).
pub const RESIGN_LEN: usize = PING_REQ_LEN;
/// A claim's size on the wire (laid out as a ping request).
pub const CLAIM_LEN: usize = PING_REQ_LEN;
/// A new hub's nudge on the wire (laid out as a ping request).
pub const HUB_MOVED_LEN: usize = PING_REQ_LEN;
/// A ping-any request's size on the wire.
pub const PING_ANY_LEN: usize = HEADER + 9 + TAG;
/// An ack's size on the wire.
pub const ACK_LEN: usize = HEADER + 13 + TAG;
/// A status request's size on the wire.
pub const STATUS_REQ_LEN: usize = HEADER + TAG;
/// A status answer's size on the wire.
pub const STATUS_LEN: usize = HEADER + 28 + TAG;
/// Nothing longer is even looked at.
pub const MAX_LEN: usize = 128;
/// The shortest key accepted (bytes).
pub const MIN_KEY: usize = 32;

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Probe `target` on the overlay and answer.
    PingReq {
        /// The slot to probe.
        target: Slot,
    },
    /// Probe `target` on the overlay and `underlay` (its VPC address),
    /// and answer that it was reached if either answered: how the hub is
    /// judged, which is alive if it answers anywhere.
    PingAny {
        /// The slot to probe on the overlay.
        target: Slot,
        /// Its holder's underlay address.
        underlay: std::net::Ipv4Addr,
    },
    /// The answer to the ping request `req`.
    Ack {
        /// The request's `seq`.
        req: u64,
        /// The helper reached the target.
        reached: bool,
        /// Its round-trip time, in microseconds (0 when not reached).
        rtt_us: u32,
    },
    /// The holder of `slot` gave up its ID (its service failed) and its VPN
    /// identity is down: its watcher may judge it at once instead of after
    /// `probe.misses` rounds. Only a hint: the watcher still needs its own
    /// failed probe and the second opinion before it declares anything.
    Resign {
        /// The slot given up.
        slot: Slot,
    },
    /// To the hub, from a taker whose tags EC2 now shows as `slot`'s
    /// holder: "read your admission list again now". The hub answers with
    /// an [`Body::Ack`] whose `reached` says whether its fresh list admits
    /// `slot` from the address the claim came from, so the taker connects
    /// as soon as it will be admitted. Only a hint: the list still comes
    /// from EC2 alone.
    Claim {
        /// The slot the sender now holds.
        slot: Slot,
    },
    /// From a node that has just taken the hub's place (`slot`, always
    /// frontend1), to every member's underlay: "the hub is here now". A
    /// member whose OpenVPN client is not connected starts its handshake
    /// again at once, instead of waiting out the one it sent to the dead
    /// hub. Only a hint: a connected client ignores it, and the handshake
    /// itself is checked as ever.
    HubMoved {
        /// The hub's slot.
        slot: Slot,
    },
    /// "Tell me how you are" (`chainwatch fleet`).
    StatusReq,
    /// The answer to the status request `req`.
    Status {
        /// The request's `seq`.
        req: u64,
        /// What the daemon says about itself.
        live: Live,
    },
}

/// A daemon's live status, as the members' channel carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Live {
    /// The slot it holds.
    pub slot: Slot,
    /// `idle`, `watching`, `fencing` or `taking-over`.
    pub phase: &'static str,
    /// Consecutive missed rounds (255 or more: 255).
    pub misses: u8,
    /// Its rounds are degraded (frontend1 silent on the overlay).
    pub degraded: bool,
    /// Its last round was inconclusive.
    pub cut_off: bool,
    /// The RTT of its peer's last answer, in microseconds.
    pub rtt_us: Option<u32>,
    /// Rounds evaluated since it started.
    pub rounds: u64,
}

/// The phases, by their code on the wire.
pub const PHASES: [&str; 4] = ["idle", "watching", "fencing", "taking-over"];

/// A whole datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// The sending daemon (random per start).
    pub sender: u64,
    /// Per sender, increasing.
    pub seq: u64,
    /// When it was sent (Unix milliseconds).
    pub sent_ms: u64,
    /// What it says.
    pub body: Body,
}

/// Why a datagram was dropped. Each is counted in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Longer than any datagram of the protocol.
    #[error("oversize datagram")]
    Oversize,
    /// Wrong size, magic or field values.
    #[error("malformed datagram")]
    Malformed,
    /// The MAC does not match: not sealed with this fleet's key.
    #[error("forged datagram (bad MAC)")]
    Forged,
    /// Sent outside the time window (old, or from a clock far off).
    #[error("stale datagram (outside the time window)")]
    Stale,
    /// Already seen: the same sender and sequence number.
    #[error("replayed datagram")]
    Replayed,
}

/// The fleet's members key.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(redacted)")
    }
}

/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the members key has {0} bytes, at least {MIN_KEY} are needed; make one with `openssl rand -hex 32`"
)]
pub struct ShortKey(pub usize);

impl Key {
    /// A key from a key file's contents (surrounding whitespace ignored).
    pub fn new(bytes: &[u8]) -> Result<Key, ShortKey> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY {
            return Err(ShortKey(trimmed.len()));
        }
        Ok(Key(trimmed.to_vec()))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; this cannot fail.
        HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }
}

/// Encode and seal `d`.
pub fn seal(key: &Key, d: &Datagram) -> Vec<u8> {
    let mut out = Vec::with_capacity(ACK_LEN);
    out.extend_from_slice(MAGIC);
    out.push(match d.body {
        Body::PingReq { .. } => 1,
        Body::Ack { .. } => 2,
        Body::Resign { .. } => 3,
        Body::StatusReq => 4,
        Body::Status { .. } => 5,
        Body::Claim { .. } => 6,
        Body::PingAny { .. } => 7,
        Body::HubMoved { .. } => 8,
    });
    out.extend_from_slice(&d.sender.to_be_bytes());
    out.extend_from_slice(&d.seq.to_be_bytes());
    out.extend_from_slice(&d.sent_ms.to_be_bytes());
    match d.body {
        Body::PingReq { target: slot }
        | Body::Resign { slot }
        | Body::Claim { slot }
        | Body::HubMoved { slot } => put_slot(&mut out, slot),
        Body::PingAny { target, underlay } => {
            put_slot(&mut out, target);
            out.extend_from_slice(&underlay.octets());
        }
        Body::StatusReq => {}
        Body::Status { req, live } => {
            out.extend_from_slice(&req.to_be_bytes());
            put_slot(&mut out, live.slot);
            out.push(
                PHASES
                    .iter()
                    .position(|p| *p == live.phase)
                    .and_then(|i| u8::try_from(i).ok())
                    .unwrap_or(u8::MAX),
            );
            out.push(live.misses);
            out.push(u8::from(live.degraded) | (u8::from(live.cut_off) << 1));
            out.extend_from_slice(&live.rtt_us.unwrap_or(0).to_be_bytes());
            out.extend_from_slice(&live.rounds.to_be_bytes());
        }
        Body::Ack {
            req,
            reached,
            rtt_us,
        } => {
            out.extend_from_slice(&req.to_be_bytes());
            out.push(u8::from(reached));
            out.extend_from_slice(&rtt_us.to_be_bytes());
        }
    }
    let mut mac = key.mac();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

fn put_slot(out: &mut Vec<u8>, slot: Slot) {
    out.push(match slot.role {
        Role::Frontend => 0,
        Role::Backend => 1,
    });
    out.extend_from_slice(&slot.id.to_be_bytes());
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

/// A role byte and a non-zero id at `at`.
fn slot_at(b: &[u8], at: usize) -> Result<Slot, Rejected> {
    let role = match b[at] {
        0 => Role::Frontend,
        1 => Role::Backend,
        _ => return Err(Rejected::Malformed),
    };
    match u32_at(b, at + 1) {
        0 => Err(Rejected::Malformed),
        id => Ok(Slot::new(role, id)),
    }
}

/// Check the size, magic and MAC of `bytes` and decode it; no window or
/// replay check (see [`Replay`]).
pub fn open(key: &Key, bytes: &[u8]) -> Result<Datagram, Rejected> {
    if bytes.len() > MAX_LEN {
        return Err(Rejected::Oversize);
    }
    if bytes.len() < HEADER + TAG || &bytes[..4] != MAGIC {
        return Err(Rejected::Malformed);
    }
    let want = match bytes[4] {
        1 => PING_REQ_LEN,
        2 => ACK_LEN,
        3 => RESIGN_LEN,
        4 => STATUS_REQ_LEN,
        5 => STATUS_LEN,
        6 => CLAIM_LEN,
        7 => PING_ANY_LEN,
        8 => HUB_MOVED_LEN,
        _ => return Err(Rejected::Malformed),
    };
    if bytes.len() != want {
        return Err(Rejected::Malformed);
    }
    let (signed, tag) = bytes.split_at(want - TAG);
    let mut mac = key.mac();
    mac.update(signed);
    mac.verify_slice(tag).map_err(|_| Rejected::Forged)?;
    let body = match bytes[4] {
        1 => Body::PingReq {
            target: slot_at(bytes, HEADER)?,
        },
        3 => Body::Resign {
            slot: slot_at(bytes, HEADER)?,
        },
        4 => Body::StatusReq,
        6 => Body::Claim {
            slot: slot_at(bytes, HEADER)?,
        },
        8 => Body::HubMoved {
            slot: slot_at(bytes, HEADER)?,
        },
        7 => Body::PingAny {
            target: slot_at(bytes, HEADER)?,
            underlay: std::net::Ipv4Addr::from(u32_at(bytes, HEADER + 5)),
        },
        5 => Body::Status {
            req: u64_at(bytes, HEADER),
            live: Live {
                slot: slot_at(bytes, HEADER + 8)?,
                phase: PHASES
                    .get(usize::from(bytes[HEADER + 13]))
                    .copied()
                    .ok_or(Rejected::Malformed)?,
                misses: bytes[HEADER + 14],
                degraded: bytes[HEADER + 15] & 1 != 0,
                cut_off: bytes[HEADER + 15] & 2 != 0,
                rtt_us: Some(u32_at(bytes, HEADER + 16)).filter(|r| *r != 0),
                rounds: u64_at(bytes, HEADER + 20),
            },
        },
        _ => Body::Ack {
            req: u64_at(bytes, HEADER),
            reached: match bytes[HEADER + 8] {
                0 => false,
                1 => true,
                _ => return Err(Rejected::Malformed),
            },
            rtt_us: u32_at(bytes, HEADER + 9),
        },
    };
    Ok(Datagram {
        sender: u64_at(bytes, 5),
        seq: u64_at(bytes, 13),
        sent_ms: u64_at(bytes, 21),
        body,
    })
}

/// Remembers (sender, seq) of authentic datagrams within the time window.
#[derive(Debug)]
pub struct Replay {
    window_ms: u64,
    seen: HashMap<(u64, u64), u64>,
    cap: usize,
}

impl Replay {
    /// A cache for datagrams at most `window_ms` old or early, holding at
    /// most `cap` entries.
    pub fn new(window_ms: u64, cap: usize) -> Replay {
        Replay {
            window_ms,
            seen: HashMap::new(),
            cap,
        }
    }

    /// Accept `d` at `now_ms` once: outside the window it is stale, seen
    /// before it is replayed. A full cache (a flood of authentic
    /// datagrams, which only a key holder can send) refuses as stale.
    pub fn admit(&mut self, d: &Datagram, now_ms: u64) -> Result<(), Rejected> {
        if d.sent_ms.abs_diff(now_ms) > self.window_ms {
            return Err(Rejected::Stale);
        }
        if self.seen.contains_key(&(d.sender, d.seq)) {
            return Err(Rejected::Replayed);
        }
        if self.seen.len() >= self.cap {
            let horizon = now_ms.saturating_sub(self.window_ms);
            self.seen
                .retain(|_, sent| *sent + self.window_ms >= horizon);
            if self.seen.len() >= self.cap {
                return Err(Rejected::Stale);
            }
        }
        self.seen.insert((d.sender, d.seq), d.sent_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef0123456789abcdef\n").unwrap()
    }

    fn req(seq: u64, sent_ms: u64) -> Datagram {
        Datagram {
            sender: 7,
            seq,
            sent_ms,
            body: Body::PingReq {
                target: Slot::new(Role::Backend, 2),
            },
        }
    }

    #[test]
    fn every_kind_round_trips_at_its_fixed_size() {
        let k = key();
        let r = req(1, 1000);
        let b = seal(&k, &r);
        assert_eq!(b.len(), PING_REQ_LEN);
        assert_eq!(open(&k, &b), Ok(r));
        let a = Datagram {
            sender: u64::MAX,
            seq: 9,
            sent_ms: 5,
            body: Body::Ack {
                req: 1,
                reached: true,
                rtt_us: 1234,
            },
        };
        let b = seal(&k, &a);
        assert_eq!(b.len(), ACK_LEN);
        assert_eq!(open(&k, &b), Ok(a));
        // The kinds laid out as a ping request: a slot.
        let fe = |id| Slot::new(Role::Frontend, id);
        for (body, len) in [
            (Body::Resign { slot: fe(3) }, RESIGN_LEN),
            (Body::Claim { slot: fe(2) }, CLAIM_LEN),
            (Body::HubMoved { slot: fe(1) }, HUB_MOVED_LEN),
        ] {
            let d = Datagram { body, ..r };
            let b = seal(&k, &d);
            assert_eq!(b.len(), len);
            assert_eq!(open(&k, &b), Ok(d));
        }
        let g = Datagram {
            body: Body::Resign { slot: fe(3) },
            ..r
        };
        let any = Datagram {
            body: Body::PingAny {
                target: Slot::new(Role::Frontend, 1),
                underlay: std::net::Ipv4Addr::new(10, 0, 3, 7),
            },
            ..r
        };
        let b = seal(&k, &any);
        assert_eq!(b.len(), PING_ANY_LEN);
        assert_eq!(open(&k, &b), Ok(any));
        // A resignation relabelled as a claim is forged.
        let mut relabelled = seal(&k, &g);
        relabelled[4] = 6;
        assert_eq!(open(&k, &relabelled), Err(Rejected::Forged));
        let q = Datagram {
            body: Body::StatusReq,
            ..r
        };
        let b = seal(&k, &q);
        assert_eq!(b.len(), STATUS_REQ_LEN);
        assert_eq!(open(&k, &b), Ok(q));
        for (phase, rtt_us) in PHASES.iter().zip([None, Some(812), Some(u32::MAX), None]) {
            let st = Datagram {
                body: Body::Status {
                    req: 77,
                    live: Live {
                        slot: Slot::new(Role::Backend, 5),
                        phase,
                        misses: 2,
                        degraded: rtt_us.is_none(),
                        cut_off: true,
                        rtt_us,
                        rounds: 1 << 40,
                    },
                },
                ..a
            };
            let b = seal(&k, &st);
            assert_eq!(b.len(), STATUS_LEN);
            assert!(b.len() <= MAX_LEN);
            assert_eq!(open(&k, &b), Ok(st));
        }
        // A phase the protocol does not have is malformed, sealed or not.
        let mut odd = seal(
            &k,
            &Datagram {
                body: Body::Status {
                    req: 1,
                    live: Live {
                        slot: Slot::new(Role::Frontend, 1),
                        phase: "sleeping",
                        misses: 0,
                        degraded: false,
                        cut_off: false,
                        rtt_us: None,
                        rounds: 0,
                    },
                },
                ..a
            },
        );
        assert_eq!(open(&k, &odd), Err(Rejected::Malformed));
        odd.truncate(STATUS_REQ_LEN);
        assert_eq!(open(&k, &odd), Err(Rejected::Malformed));
        // The kind is under the MAC: a ping request relabelled as a
        // resignation is forged.
        let mut relabelled = seal(&k, &r);
        relabelled[4] = 3;
        assert_eq!(open(&k, &relabelled), Err(Rejected::Forged));
    }

    #[test]
    fn a_short_key_is_refused_and_a_key_never_prints() {
        assert_eq!(Key::new(b"  short \n").unwrap_err(), ShortKey(5));
        assert_eq!(format!("{:?}", key()), "Key(redacted)");
    }

    #[test]
    fn another_key_or_any_flipped_bit_is_forged_or_malformed_never_accepted() {
        let k = key();
        let b = seal(&k, &req(1, 1000));
        let other = Key::new(&[b'x'; 40]).unwrap();
        assert_eq!(open(&other, &b), Err(Rejected::Forged));
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                let r = open(&k, &c);
                assert!(
                    matches!(r, Err(Rejected::Forged | Rejected::Malformed)),
                    "byte {i} bit {bit}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn sizes_other_than_the_protocol_s_are_refused_before_the_mac() {
        let k = key();
        assert_eq!(open(&k, &[0u8; MAX_LEN + 1]), Err(Rejected::Oversize));
        assert_eq!(open(&k, &[0u8; 65_507]), Err(Rejected::Oversize));
        assert_eq!(open(&k, b""), Err(Rejected::Malformed));
        let mut b = seal(&k, &req(1, 1000));
        b.push(0);
        assert_eq!(open(&k, &b), Err(Rejected::Malformed));
        b.truncate(PING_REQ_LEN - 1);
        assert_eq!(open(&k, &b), Err(Rejected::Malformed));
    }

    /// A fuzz of the parser: random bytes of every length, and random
    /// mutations of valid datagrams, never panic and are never accepted
    /// unless they are byte for byte a sealed datagram.
    #[test]
    fn random_and_mutated_bytes_never_panic_and_never_pass() {
        let k = key();
        let valid = seal(&k, &req(3, 1000));
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let len = (next() % 140) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 && len >= 4 {
                b[..4].copy_from_slice(MAGIC);
                if len > 4 {
                    b[4] = (next() % 5) as u8;
                }
            }
            assert!(open(&k, &b).is_err());
            let mut m = valid.clone();
            let flips = 1 + next() % 4;
            for _ in 0..flips {
                let i = (next() as usize) % m.len();
                m[i] ^= (next() as u8) | 1;
            }
            if m != valid {
                assert!(open(&k, &m).is_err());
            }
        }
    }

    #[test]
    fn the_window_and_the_replay_cache() {
        let mut r = Replay::new(10_000, 3);
        assert_eq!(r.admit(&req(1, 50_000), 61_000), Err(Rejected::Stale));
        assert_eq!(r.admit(&req(1, 72_000), 61_000), Err(Rejected::Stale));
        assert_eq!(r.admit(&req(1, 55_000), 61_000), Ok(()));
        assert_eq!(r.admit(&req(1, 55_000), 61_000), Err(Rejected::Replayed));
        assert_eq!(r.admit(&req(2, 56_000), 61_000), Ok(()));
        assert_eq!(r.admit(&req(3, 57_000), 61_000), Ok(()));
        // Full: nothing old enough to forget yet.
        assert_eq!(r.admit(&req(4, 58_000), 61_000), Err(Rejected::Stale));
        // Later the old entries go, and a replay of them is stale anyway.
        assert_eq!(r.admit(&req(4, 80_000), 80_000), Ok(()));
        assert_eq!(r.admit(&req(1, 55_000), 80_000), Err(Rejected::Stale));
    }
}
