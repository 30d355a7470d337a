//! The hub's admission list: the fabric fence.
//!
//! The node that runs the OpenVPN server (frontend1) keeps, in
//! `<state_dir>/openvpn/admission.json`, which instance may hold each client
//! slot: the one instance of the fleet that EC2 shows running (or pending)
//! with that slot's role and ID tags, not tagged `fenced`, at the highest
//! epoch of the slot, with its VPC (and public) addresses. It rewrites the
//! file from EC2 every [`REFRESH`]. The `client-connect` hook admits a common
//! name only from an address the list gives for its slot (the connection's
//! `trusted_ip`; EC2's source/destination check makes a VPC address
//! unforgeable inside the VPC), and the hub's daemon kills every live
//! session the list no longer admits.
//!
//! So once a taker has tagged the old holder `fenced` and itself as the
//! holder at a new epoch, and its own session as the slot is up (which
//! needs the list to name it), the old holder cannot be on the overlay,
//! whether or not EC2 has stopped it yet.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::Slot;

/// File name in the OpenVPN run directory.
pub const FILE_NAME: &str = "admission.json";

/// How often the hub rereads the list from EC2.
pub const REFRESH: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a taker waits, once EC2 shows its own new tags, before it
/// connects as the new slot: one refresh of the hub's list and the time the
/// read takes, so that the hub admits it at the first attempt.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(800);

/// How long a taker that told the hub of its takeover (on the members'
/// channel) waits for the hub's answer that its list admits it, before it
/// connects anyway. EC2's reads are eventually consistent: the hub's read
/// of the fleet may show the taker's old tags for seconds after the taker
/// read its new ones back (up to 2 s on the rig's AWS-like EC2). The wait
/// ends at the hub's first yes; connecting before it costs a refused
/// handshake, retried only after the client's hand-window (3 s) and a
/// restart pause.
pub const CLAIM_PATIENCE: std::time::Duration = std::time::Duration::from_secs(8);

/// The path of the list in `run_dir`.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join(FILE_NAME)
}

/// The instance admitted for one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admitted {
    /// Its EC2 ID.
    pub instance: String,
    /// Its VPC address, and its public address if it has one.
    pub addrs: Vec<Ipv4Addr>,
    /// Its epoch tag (0: none).
    pub epoch: u64,
}

/// One instance as EC2 shows it, reduced to what admission needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its EC2 ID.
    pub instance: String,
    /// The slot its tags name.
    pub slot: Slot,
    /// Running or pending (not stopping, stopped or terminated).
    pub up: bool,
    /// Tagged `chainwatch:state=fenced`.
    pub fenced: bool,
    /// Its epoch tag (0: none).
    pub epoch: u64,
    /// Its addresses.
    pub addrs: Vec<Ipv4Addr>,
}

/// The list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admission {
    /// When it was computed, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
    /// Common name → the instance admitted.
    pub slots: BTreeMap<String, Admitted>,
    /// Common name → why nobody is admitted (two instances at the top
    /// epoch, say).
    #[serde(default)]
    pub refused: BTreeMap<String, String>,
}

impl Admission {
    /// Compute the list from the fleet's instances.
    pub fn from_candidates(candidates: &[Candidate], updated_ms: u64) -> Admission {
        let mut by_slot: BTreeMap<Slot, Vec<&Candidate>> = BTreeMap::new();
        for c in candidates.iter().filter(|c| c.up && !c.fenced) {
            by_slot.entry(c.slot).or_default().push(c);
        }
        let mut list = Admission {
            updated_ms,
            ..Admission::default()
        };
        for (slot, cs) in by_slot {
            let top = cs.iter().map(|c| c.epoch).max().unwrap_or(0);
            let at_top: Vec<&&Candidate> = cs.iter().filter(|c| c.epoch == top).collect();
            match at_top[..] {
                [one] => {
                    list.slots.insert(
                        slot.common_name(),
                        Admitted {
                            instance: one.instance.clone(),
                            addrs: one.addrs.clone(),
                            epoch: one.epoch,
                        },
                    );
                }
                _ => {
                    let ids: Vec<&str> = at_top.iter().map(|c| c.instance.as_str()).collect();
                    list.refused.insert(
                        slot.common_name(),
                        format!(
                            "{} instances claim {slot} at epoch {top} ({}); nobody is admitted until one is fenced",
                            ids.len(),
                            ids.join(", ")
                        ),
                    );
                }
            }
        }
        list
    }

    /// Whether `slot` may connect from `ip`; `Err` says why not.
    pub fn admits(&self, slot: Slot, ip: Ipv4Addr) -> Result<(), String> {
        let cn = slot.common_name();
        if let Some(why) = self.refused.get(&cn) {
            return Err(why.clone());
        }
        match self.slots.get(&cn) {
            Some(a) if a.addrs.contains(&ip) => Ok(()),
            Some(a) => Err(format!(
                "{ip} is not the address of {cn}'s holder ({} at epoch {}, {:?})",
                a.instance, a.epoch, a.addrs
            )),
            None => Err(format!(
                "no running instance of the fleet holds {cn} (or its holder is fenced)"
            )),
        }
    }

    /// Write the list atomically.
    pub fn store(&self, path: &Path) -> Result<(), String> {
        let body = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        // OpenVPN's hooks read it as `vpn.user`: it names instances and
        // addresses EC2 shows to the whole account, nothing secret.
        crate::fsio::write_atomic_mode(path, &body, 0o644)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Read the list.
    pub fn load(path: &Path) -> Result<Admission, String> {
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "no admission list at {} ({e}): the hub has not read EC2 yet",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Role;

    fn c(instance: &str, id: u32, epoch: u64, ip: [u8; 4]) -> Candidate {
        Candidate {
            instance: instance.into(),
            slot: Slot::new(Role::Backend, id),
            up: true,
            fenced: false,
            epoch,
            addrs: vec![Ipv4Addr::from(ip)],
        }
    }

    #[test]
    fn the_holder_at_the_top_epoch_is_admitted_from_its_addresses_only() {
        let old = Candidate {
            fenced: true,
            ..c("i-old", 1, 4, [10, 0, 0, 11])
        };
        let new = c("i-new", 1, 5, [10, 0, 0, 12]);
        let stale = c("i-stale", 2, 3, [10, 0, 0, 13]);
        let current = c("i-cur", 2, 6, [10, 0, 0, 14]);
        let stopping = Candidate {
            up: false,
            ..c("i-stopping", 3, 9, [10, 0, 0, 15])
        };
        let list = Admission::from_candidates(&[old, new, stale, current, stopping], 1);
        let be = |id| Slot::new(Role::Backend, id);
        assert_eq!(list.admits(be(1), Ipv4Addr::new(10, 0, 0, 12)), Ok(()));
        // The fenced old holder, still running, is refused.
        let err = list.admits(be(1), Ipv4Addr::new(10, 0, 0, 11)).unwrap_err();
        assert!(err.contains("i-new"), "{err}");
        // An older epoch loses to a newer one.
        assert!(list.admits(be(2), Ipv4Addr::new(10, 0, 0, 13)).is_err());
        assert_eq!(list.admits(be(2), Ipv4Addr::new(10, 0, 0, 14)), Ok(()));
        // A stopping instance holds nothing.
        assert!(list.admits(be(3), Ipv4Addr::new(10, 0, 0, 15)).is_err());
        // Another instance's certificate from the holder's address is the
        // wrong slot: refused.
        assert!(list.admits(be(2), Ipv4Addr::new(10, 0, 0, 12)).is_err());
    }

    #[test]
    fn two_claims_at_one_epoch_admit_nobody() {
        let list = Admission::from_candidates(
            &[c("i-a", 2, 7, [10, 0, 0, 1]), c("i-b", 2, 7, [10, 0, 0, 2])],
            1,
        );
        let err = list
            .admits(Slot::new(Role::Backend, 2), Ipv4Addr::new(10, 0, 0, 1))
            .unwrap_err();
        assert!(err.contains("i-a") && err.contains("i-b"), "{err}");
    }

    #[test]
    fn the_list_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        assert!(Admission::load(&p).unwrap_err().contains("not read EC2"));
        let list = Admission::from_candidates(&[c("i-a", 2, 7, [10, 0, 0, 1])], 42);
        list.store(&p).unwrap();
        assert_eq!(Admission::load(&p).unwrap(), list);
    }
}
