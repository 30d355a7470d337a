//! The core's tunables.

use std::time::Duration;

/// Tunables of the core. The shell builds it from the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// Time between the starts of two probe rounds.
    pub interval: Duration,
    /// How long one probe may take; must be shorter than `interval`.
    pub probe_timeout: Duration,
    /// Rounds that ask EC2 as the witness (watching the hub on its
    /// underlay, or any peer while the overlay is down) go at the API's
    /// pace: this interval (or `interval` if longer)...
    pub api_interval: Duration,
    /// ...and this timeout (or `probe_timeout` if longer).
    pub api_timeout: Duration,
    /// Consecutive missed rounds that declare the peer dead.
    pub misses: u32,
    /// First retry delay after a failed fence or takeover.
    pub backoff_initial: Duration,
    /// Upper bound of the retry delay.
    pub backoff_max: Duration,
    /// After start, a peer that has never answered is not declared dead
    /// before this much time has passed (it may still be booting).
    pub startup_grace: Duration,
    /// Ask other members to probe a silent peer before declaring it dead
    /// ([`Action::AskHelpers`](super::Action::AskHelpers)). Off, the
    /// witness rule alone decides (as when no members' channel is set up).
    pub second_opinion: bool,
    /// With the second opinion on, frontend2 also probes the hub on the
    /// overlay. The hub's underlay answering while its overlay has been
    /// silent this long (longer than the hub takes to restart a hung
    /// OpenVPN itself) makes the hub sick: its rounds count as misses, and
    /// helpers asked over the underlay must confirm.
    pub hub_overlay_grace: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            interval: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(200),
            api_interval: Duration::from_millis(1000),
            api_timeout: Duration::from_millis(800),
            misses: 3,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            startup_grace: Duration::from_secs(30),
            second_opinion: false,
            hub_overlay_grace: Duration::from_secs(8),
        }
    }
}

impl CoreConfig {
    /// The retry delay after `attempt` failures (1-based): doubling from
    /// `backoff_initial`, never above `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff_initial
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}
