//! The one back-off of the shell: exponential with jitter (backon's
//! builder), used by every retry loop (delivery to the sinks, the worker's
//! broker connection and playbook retries, the EC2 calls at start, OpenVPN
//! coming up). The core has its own, deterministic back-off for fence and
//! takeover retries (`core::CoreConfig::backoff`): it cannot draw random
//! numbers.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays doubling from `min` up to `max`, each stretched by a random
/// amount of up to itself (so many nodes retrying together spread out),
/// without end. Start a new one to reset.
pub fn delays(min: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_bound_with_jitter() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(800);
        let d: Vec<Duration> = delays(min, max).take(8).collect();
        assert_eq!(d.len(), 8, "never runs out");
        for (i, got) in d.iter().enumerate() {
            let base = (min * 2u32.pow(i as u32)).min(max);
            assert!(
                *got >= base && *got <= base * 2,
                "delay {i}: {got:?} outside {base:?}..={:?}",
                base * 2
            );
        }
    }
}
