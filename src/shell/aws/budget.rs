//! The fence budget: how many instances of the role the fleet fenced in the
//! last hour (EC2's `chainwatch:fenced-at` tags; this node's own fences
//! when EC2 cannot say), and when an operator last acknowledged on this
//! node (`chainwatch ack`). The node's fences and its ack are kept in
//! `<state_dir>/fence-budget.json`, so a restart does not reset them. The
//! same ledger times the cooldown after a takeover: no new fence within
//! `aws.takeover_cooldown` of this node's last one, unless it is chained
//! to it (look-ahead) or acknowledged.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One hour, in milliseconds.
const HOUR_MS: u64 = 3_600_000;

/// The file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// When each fence of the last hour was confirmed, ms since the epoch.
    pub fences_ms: Vec<u64>,
    /// The last `chainwatch ack`, ms since the epoch.
    pub ack_ms: u64,
}

impl Ledger {
    /// Fences that count at `now_ms`: in the last hour and after the ack.
    pub fn used(&self, now_ms: u64) -> usize {
        let since = now_ms.saturating_sub(HOUR_MS).max(self.ack_ms);
        self.fences_ms.iter().filter(|t| **t > since).count()
    }
}

/// Why a new fence is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The budget is used up: this many fences count.
    Budget(usize),
    /// The cooldown after this node's last fence runs: it was `ago_ms`
    /// ago, `left_ms` remain.
    Cooldown {
        /// Since the last fence.
        ago_ms: u64,
        /// Until the cooldown ends.
        left_ms: u64,
    },
}

/// The budget of one node.
#[derive(Debug, Clone)]
pub struct FenceBudget {
    file: PathBuf,
    per_hour: u32,
    cooldown_ms: u64,
}

/// Where the ledger of `state_dir` lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("fence-budget.json")
}

impl FenceBudget {
    /// `per_hour` fences per hour (0: no budget), ledger under `state_dir`.
    pub fn new(state_dir: &Path, per_hour: u32) -> FenceBudget {
        FenceBudget {
            file: path(state_dir),
            per_hour,
            cooldown_ms: 0,
        }
    }

    /// No new fence within `cooldown` of the last one (zero: none), unless
    /// chained or acknowledged.
    pub fn with_cooldown(mut self, cooldown: std::time::Duration) -> FenceBudget {
        self.cooldown_ms = crate::clock::whole_ms(cooldown);
        self
    }

    /// The cooldown, in milliseconds.
    pub fn cooldown_ms(&self) -> u64 {
        self.cooldown_ms
    }

    /// The ledger; a missing or unreadable file is an empty one (a ledger
    /// that cannot be read must not block a fence forever).
    pub fn load(file: &Path) -> Ledger {
        std::fs::read(file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn store(&self, ledger: &Ledger) {
        let body = serde_json::to_vec(ledger).unwrap_or_default();
        if let Err(e) = crate::fsio::write_atomic(&self.file, &body) {
            tracing::warn!(file = %self.file.display(), "cannot record the fence in the budget ledger: {e}");
        }
    }

    /// Whether a new fence at `now_ms` is held: beyond the budget (the
    /// fleet's fences of the role, `fleet`, when known; this node's own
    /// otherwise), or (unless `chained`) within the cooldown of this node's
    /// last fence that no ack came after.
    pub fn check(&self, now_ms: u64, chained: bool, fleet: &Option<Vec<u64>>) -> Result<(), Held> {
        if self.per_hour == 0 && self.cooldown_ms == 0 {
            return Ok(());
        }
        let ledger = Self::load(&self.file);
        let used = match fleet {
            Some(times) => Ledger {
                fences_ms: times.clone(),
                ack_ms: ledger.ack_ms,
            }
            .used(now_ms),
            None => ledger.used(now_ms),
        };
        if self.per_hour > 0 && used >= self.per_hour as usize {
            return Err(Held::Budget(used));
        }
        if let Some(last) = ledger.fences_ms.iter().max().copied()
            && !chained
            && last > ledger.ack_ms
        {
            let ago_ms = now_ms.saturating_sub(last);
            if ago_ms < self.cooldown_ms {
                return Err(Held::Cooldown {
                    ago_ms,
                    left_ms: self.cooldown_ms - ago_ms,
                });
            }
        }
        Ok(())
    }

    /// The budget per hour.
    pub fn per_hour(&self) -> u32 {
        self.per_hour
    }

    /// Count a confirmed fence at `now_ms`, forgetting those older than an
    /// hour.
    pub fn record(&self, now_ms: u64) {
        if self.per_hour == 0 && self.cooldown_ms == 0 {
            return;
        }
        let mut l = Self::load(&self.file);
        l.fences_ms
            .retain(|t| *t > now_ms.saturating_sub(HOUR_MS.max(self.cooldown_ms)));
        l.fences_ms.push(now_ms);
        self.store(&l);
    }
}

/// `chainwatch ack`: fences before `now_ms` no longer count for this
/// node.
pub fn acknowledge(state_dir: &Path, now_ms: u64) -> std::io::Result<()> {
    let file = path(state_dir);
    let mut l = FenceBudget::load(&file);
    l.ack_ms = now_ms;
    crate::fsio::write_atomic(&file, &serde_json::to_vec(&l).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_count_for_an_hour_or_until_an_ack() {
        let dir = tempfile::tempdir().unwrap();
        let b = FenceBudget::new(dir.path(), 2);
        let t = 10 * HOUR_MS;
        assert_eq!(b.check(t, false, &None), Ok(()));
        b.record(t);
        b.record(t + 1000);
        assert_eq!(b.check(t + 2000, false, &None), Err(Held::Budget(2)));
        assert_eq!(
            b.check(t + 2000, true, &None),
            Err(Held::Budget(2)),
            "chained or not"
        );
        // An hour after the first, one slot is free again.
        assert_eq!(b.check(t + HOUR_MS + 1, false, &None), Ok(()));
        // An ack frees them at once.
        acknowledge(dir.path(), t + 3000).unwrap();
        assert_eq!(b.check(t + 3000, false, &None), Ok(()));
        b.record(t + 4000);
        b.record(t + 5000);
        assert_eq!(b.check(t + 6000, false, &None), Err(Held::Budget(2)));
        // No budget: never blocked.
        let none = FenceBudget::new(dir.path(), 0);
        assert_eq!(none.check(t + 6000, false, &None), Ok(()));
    }

    #[test]
    fn a_fence_within_the_cooldown_is_held_unless_chained_or_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let b = FenceBudget::new(dir.path(), 0).with_cooldown(std::time::Duration::from_secs(60));
        let t = 10 * HOUR_MS;
        assert_eq!(b.check(t, false, &None), Ok(()), "no fence yet");
        b.record(t);
        assert_eq!(
            b.check(t + 20_000, false, &None),
            Err(Held::Cooldown {
                ago_ms: 20_000,
                left_ms: 40_000
            })
        );
        assert_eq!(
            b.check(t + 20_000, true, &None),
            Ok(()),
            "look-ahead: the same failure"
        );
        assert_eq!(
            b.check(t + 60_000, false, &None),
            Ok(()),
            "the cooldown is over"
        );
        acknowledge(dir.path(), t + 30_000).unwrap();
        assert_eq!(b.check(t + 30_001, false, &None), Ok(()), "acknowledged");
        b.record(t + 40_000);
        assert!(matches!(
            b.check(t + 41_000, false, &None),
            Err(Held::Cooldown { .. })
        ));
        // A restart keeps it: the ledger is on disk.
        let again =
            FenceBudget::new(dir.path(), 0).with_cooldown(std::time::Duration::from_secs(60));
        assert!(again.check(t + 41_000, false, &None).is_err());
    }

    #[test]
    fn the_fleet_s_fences_count_when_ec2_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let b = FenceBudget::new(dir.path(), 2);
        let t = 10 * HOUR_MS;
        // This node fenced nothing; others did twice, once too long ago.
        let fleet = Some(vec![t - HOUR_MS - 1, t - 1000]);
        assert_eq!(b.check(t, false, &fleet), Ok(()));
        let fleet = Some(vec![t - 5000, t - 1000]);
        assert_eq!(b.check(t, false, &fleet), Err(Held::Budget(2)));
        // Unknown (EC2 did not say): this node's own ledger counts.
        assert_eq!(b.check(t, false, &None), Ok(()));
        // An ack on this node: the fleet's fences before it no longer count.
        acknowledge(dir.path(), t).unwrap();
        assert_eq!(b.check(t + 1, false, &fleet), Ok(()));
    }

    #[test]
    fn a_garbled_ledger_blocks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), b"{not json").unwrap();
        assert_eq!(
            FenceBudget::new(dir.path(), 1).check(1, false, &None),
            Ok(())
        );
    }
}
