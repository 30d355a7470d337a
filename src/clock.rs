//! Wall-clock stamps for the core's monotonic instants. The core never reads
//! a clock; events and logs need Unix milliseconds.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Converts the core's monotonic instants into wall-clock milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    unix_ms: u64,
}

impl Clock {
    /// Anchor now.
    pub fn now() -> Self {
        Clock {
            instant: Instant::now(),
            unix_ms: unix_ms(SystemTime::now()),
        }
    }

    /// Milliseconds since the Unix epoch of `at`.
    pub fn unix_ms(&self, at: Instant) -> u64 {
        if at >= self.instant {
            self.unix_ms + (at - self.instant).as_millis() as u64
        } else {
            self.unix_ms
                .saturating_sub((self.instant - at).as_millis() as u64)
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whole milliseconds of `d` (saturating), for configs and wire fields
/// kept in ms.
pub fn whole_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Round a duration to fractional milliseconds.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}
