//! The transition event: what a takeover announces on RabbitMQ and
//! CloudWatch, and what the worker acts on.
//!
//! Versioned JSON; parsing is strict (unknown fields and unknown schema
//! versions are errors). Example:
//!
//! ```json
//! {
//!   "schema": 1,
//!   "event_id": "5f0c2b8e-3f51-4a8f-9d3e-4b1f0b9f6c11",
//!   "fleet": "chainwatch",
//!   "role": "backend",
//!   "from_id": 2,
//!   "to_id": 1,
//!   "instance_id": "i-0b22a22222222222b",
//!   "fenced_instances": ["i-0a11a11111111111a"],
//!   "vacant": false,
//!   "overlay_addr": "192.168.21.100",
//!   "epoch": 7,
//!   "timings": {
//!     "silent_since_ms": 1795000000000,
//!     "detected_ms": 1795000002800,
//!     "fenced_ms": 1795000003100,
//!     "identity_up_ms": 1795000004000,
//!     "announced_ms": 1795000004001
//!   }
//! }
//! ```

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::core::Transition;
use crate::layout::{Layout, Role, Slot};

/// The schema version this build writes and reads.
pub const SCHEMA: u32 = 1;

/// Errors parsing an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or fields missing, unknown or of the wrong type.
    #[error("malformed transition event: {0}")]
    Malformed(String),
    /// A schema version this build does not know.
    #[error(
        "transition event has schema version {0}; this chainwatch understands version {SCHEMA} only: upgrade it"
    )]
    UnsupportedSchema(u64),
    /// A value out of range.
    #[error("invalid transition event: {0}")]
    Invalid(String),
}

/// When each step of the takeover happened, in milliseconds since the Unix
/// epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    /// Start of the first missed round (none for a vacancy found at once).
    pub silent_since_ms: Option<u64>,
    /// The peer declared dead (or its slot found vacant).
    pub detected_ms: u64,
    /// The fence confirmed.
    pub fenced_ms: u64,
    /// The new identity up.
    pub identity_up_ms: u64,
    /// Written to the outbox, to be published.
    pub announced_ms: u64,
}

/// One transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionEvent {
    /// [`SCHEMA`].
    pub schema: u32,
    /// A UUID; consumers drop duplicates by it.
    pub event_id: String,
    /// The fleet (`aws.fleet`).
    pub fleet: String,
    /// The chain.
    pub role: Role,
    /// The ID the instance held before.
    pub from_id: u32,
    /// The ID it holds now.
    pub to_id: u32,
    /// The instance that took over.
    pub instance_id: String,
    /// The instances fenced for it (empty for a vacancy).
    pub fenced_instances: Vec<String>,
    /// The slot had no running holder.
    pub vacant: bool,
    /// The overlay address that moved.
    pub overlay_addr: Ipv4Addr,
    /// The per-role epoch of this takeover; only grows.
    pub epoch: u64,
    /// Timings.
    pub timings: Timings,
}

/// Whether `s` is an EC2 instance ID: `i-` and 8 to 17 lower-case hex
/// digits.
pub fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|hex| {
        (8..=17).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl TransitionEvent {
    /// Check the event against this deployment, before anything acts on it:
    /// its fleet is `fleet`, its instance IDs are instance IDs, its IDs lie
    /// within `layout` and its overlay address is the layout's for the ID
    /// taken.
    pub fn check(&self, fleet: &str, layout: &Layout) -> Result<(), EventError> {
        let invalid = |m: String| Err(EventError::Invalid(m));
        if self.fleet != fleet {
            return invalid(format!(
                "fleet {:?} is not this worker's fleet {fleet:?}",
                self.fleet
            ));
        }
        for id in std::iter::once(&self.instance_id).chain(&self.fenced_instances) {
            if !is_instance_id(id) {
                return invalid(format!(
                    "{:?} is not an EC2 instance ID (i- and 8 to 17 hex digits)",
                    id
                ));
            }
        }
        let max = layout.max_id(self.role);
        for id in [self.from_id, self.to_id] {
            if id > max {
                return invalid(format!(
                    "{}{id} lies outside the layout ({} IDs)",
                    self.role, max
                ));
            }
        }
        let want = layout.overlay_addr(self.to_slot());
        if self.overlay_addr != want {
            return invalid(format!(
                "overlay address {} is not {}'s ({want})",
                self.overlay_addr,
                self.to_slot().common_name()
            ));
        }
        Ok(())
    }

    /// Build the event for a core transition.
    pub fn new(
        t: &Transition,
        layout: &Layout,
        clock: &Clock,
        fleet: &str,
        instance_id: &str,
        epoch: u64,
        announced_ms: u64,
    ) -> Self {
        TransitionEvent {
            schema: SCHEMA,
            event_id: uuid::Uuid::new_v4().to_string(),
            fleet: fleet.to_string(),
            role: t.to.role,
            from_id: t.from.id,
            to_id: t.to.id,
            instance_id: instance_id.to_string(),
            fenced_instances: t.fenced.clone(),
            vacant: t.vacant,
            overlay_addr: layout.overlay_addr(t.to),
            epoch,
            timings: Timings {
                silent_since_ms: t.silent_since.map(|i| clock.unix_ms(i)),
                detected_ms: clock.unix_ms(t.declared_at),
                fenced_ms: clock.unix_ms(t.fenced_at),
                identity_up_ms: clock.unix_ms(t.identity_up_at),
                announced_ms,
            },
        }
    }

    /// The slot taken.
    pub fn to_slot(&self) -> Slot {
        Slot::new(self.role, self.to_id)
    }

    /// The RabbitMQ routing key: `<role>.takeover`.
    pub fn routing_key(&self) -> String {
        format!("{}.takeover", self.role)
    }

    /// Milliseconds from the first missed round (or detection) to the new
    /// identity being up: the failover time.
    pub fn failover_ms(&self) -> u64 {
        let start = self
            .timings
            .silent_since_ms
            .unwrap_or(self.timings.detected_ms);
        self.timings.identity_up_ms.saturating_sub(start)
    }

    /// Milliseconds from detection to the confirmed fence.
    pub fn fence_ms(&self) -> u64 {
        self.timings
            .fenced_ms
            .saturating_sub(self.timings.detected_ms)
    }

    /// Milliseconds from the first missed round to detection.
    pub fn detection_ms(&self) -> u64 {
        self.timings
            .silent_since_ms
            .map(|s| self.timings.detected_ms.saturating_sub(s))
            .unwrap_or(0)
    }

    /// Serialize to JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse strictly: the schema version first, then every field.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))?;
        let schema = value
            .get("schema")
            .ok_or_else(|| EventError::Malformed("no `schema` field".into()))?
            .as_u64()
            .ok_or_else(|| EventError::Malformed("`schema` is not a number".into()))?;
        if schema != u64::from(SCHEMA) {
            return Err(EventError::UnsupportedSchema(schema));
        }
        let ev: TransitionEvent =
            serde_json::from_value(value).map_err(|e| EventError::Malformed(e.to_string()))?;
        uuid_field("event_id", &ev.event_id)?;
        if ev.to_id == 0 || ev.from_id == 0 {
            return Err(EventError::Invalid("IDs start at 1".into()));
        }
        if ev.instance_id.is_empty() {
            return Err(EventError::Invalid("instance_id is empty".into()));
        }
        Ok(ev)
    }
}

/// `Ok` when `value`, the field `name`, is a UUID.
fn uuid_field(name: &str, value: &str) -> Result<(), EventError> {
    match uuid::Uuid::parse_str(value) {
        Ok(_) => Ok(()),
        Err(_) => Err(EventError::Invalid(format!(
            "{name} {value:?} is not a UUID"
        ))),
    }
}

/// The kinds of [`Alert`].
pub const ALERT_KINDS: [&str; 7] = [
    "fence_failed",
    "fence_blocked",
    "takeover_stuck",
    "degraded",
    "rejoin",
    "dead_letter",
    "tail_lost",
];

/// An alert: what an operator must hear about besides a takeover. It goes
/// to `alerts.notify_command`, and, from a daemon, through the outbox to
/// RabbitMQ (routing key `alert.<kind>`) and CloudWatch like a transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Unique per alert (a UUID): consumers drop duplicates by it.
    pub alert_id: String,
    /// One of [`ALERT_KINDS`].
    pub kind: String,
    /// The fleet.
    pub fleet: String,
    /// The raiser's slot when it raised the alert (common name).
    pub node: String,
    /// The raiser's instance.
    pub instance_id: String,
    /// The slot concerned (the peer, the slot being taken, the slot
    /// rejoined).
    pub slot: String,
    /// Attempt number, for failures.
    pub attempt: Option<u32>,
    /// What happened, in words.
    pub detail: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

impl Alert {
    /// Its routing key on the exchange.
    pub fn routing_key(&self) -> String {
        format!("alert.{}", self.kind)
    }

    /// One line of JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse and check an alert (from the outbox: a file may be damaged).
    pub fn parse(bytes: &[u8]) -> Result<Self, EventError> {
        let a: Alert =
            serde_json::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))?;
        uuid_field("alert_id", &a.alert_id)?;
        if !ALERT_KINDS.contains(&a.kind.as_str()) {
            return Err(EventError::Invalid(format!(
                "{:?} is no alert kind",
                a.kind
            )));
        }
        Ok(a)
    }
}

/// A transition or an alert to send, borrowed: what a sink delivers.
#[derive(Debug, Clone, Copy)]
pub enum Outgoing<'a> {
    /// A transition.
    Transition(&'a TransitionEvent),
    /// An alert.
    Alert(&'a Alert),
}

impl<'a> Outgoing<'a> {
    /// Its unique ID (event or alert ID).
    pub fn id(self) -> &'a str {
        match self {
            Outgoing::Transition(ev) => &ev.event_id,
            Outgoing::Alert(a) => &a.alert_id,
        }
    }
}

impl<'a> From<&'a TransitionEvent> for Outgoing<'a> {
    fn from(ev: &'a TransitionEvent) -> Self {
        Outgoing::Transition(ev)
    }
}

impl<'a> From<&'a Alert> for Outgoing<'a> {
    fn from(a: &'a Alert) -> Self {
        Outgoing::Alert(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> TransitionEvent {
        TransitionEvent {
            schema: SCHEMA,
            event_id: "5f0c2b8e-3f51-4a8f-9d3e-4b1f0b9f6c11".into(),
            fleet: "chainwatch".into(),
            role: Role::Backend,
            from_id: 2,
            to_id: 1,
            instance_id: "i-0b22a22222222222b".into(),
            fenced_instances: vec!["i-0a11a11111111111a".into()],
            vacant: false,
            overlay_addr: Ipv4Addr::new(192, 168, 21, 100),
            epoch: 7,
            timings: Timings {
                silent_since_ms: Some(1_795_000_000_000),
                detected_ms: 1_795_000_002_800,
                fenced_ms: 1_795_000_003_100,
                identity_up_ms: 1_795_000_004_000,
                announced_ms: 1_795_000_004_001,
            },
        }
    }

    #[test]
    fn the_documented_example_parses_and_round_trips() {
        let doc = include_str!("event.rs");
        let start = doc.find("//! ```json\n").unwrap() + "//! ```json\n".len();
        let end = start + doc[start..].find("//! ```").unwrap();
        let json: String = doc[start..end]
            .lines()
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n");
        let ev = TransitionEvent::parse(json.as_bytes()).unwrap();
        assert_eq!(ev, sample());
        assert_eq!(TransitionEvent::parse(&ev.to_json()).unwrap(), ev);
        assert_eq!(ev.routing_key(), "backend.takeover");
        assert_eq!(ev.failover_ms(), 4000);
        assert_eq!(ev.fence_ms(), 300);
        assert_eq!(ev.detection_ms(), 2800);
    }

    #[test]
    fn parsing_is_strict() {
        let good = serde_json::to_value(sample()).unwrap();
        let mut v = good.clone();
        v["schema"] = 2.into();
        assert_eq!(
            TransitionEvent::parse(v.to_string().as_bytes()),
            Err(EventError::UnsupportedSchema(2))
        );
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove("schema");
        assert!(TransitionEvent::parse(v.to_string().as_bytes()).is_err());
        let mut v = good.clone();
        v["extra"] = 1.into();
        let err = TransitionEvent::parse(v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
        let mut v = good.clone();
        v["role"] = "database".into();
        assert!(TransitionEvent::parse(v.to_string().as_bytes()).is_err());
        let mut v = good.clone();
        v["event_id"] = "not-a-uuid".into();
        assert!(TransitionEvent::parse(v.to_string().as_bytes()).is_err());
        let mut v = good;
        v["to_id"] = 0.into();
        assert!(TransitionEvent::parse(v.to_string().as_bytes()).is_err());
        assert!(TransitionEvent::parse(b"not json").is_err());
        let err = TransitionEvent::parse(br#"{"schema": 9}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("upgrade"), "{err}");
    }

    #[test]
    fn events_are_checked_against_the_deployment() {
        let layout = Layout::default();
        assert_eq!(sample().check("chainwatch", &layout), Ok(()));
        let refused = |ev: TransitionEvent, what: &str| {
            let err = ev.check("chainwatch", &layout).unwrap_err().to_string();
            assert!(err.contains(what), "{err} lacks {what}");
        };
        let mut ev = sample();
        ev.fleet = "other".into();
        refused(ev, "not this worker's fleet");
        for bad in [
            "{{ lookup('pipe', 'touch /tmp/x') }}",
            "i-1",
            "i-0B22A222",
            "i-0b22a22222222222b0",
            "x-0b22a22222222222b",
        ] {
            let mut ev = sample();
            ev.instance_id = bad.into();
            refused(ev, "not an EC2 instance ID");
            let mut ev = sample();
            ev.fenced_instances.push(bad.into());
            refused(ev, "not an EC2 instance ID");
        }
        assert!(is_instance_id("i-0123abcd"));
        let mut ev = sample();
        ev.from_id = 6;
        refused(ev, "outside the layout");
        let mut ev = sample();
        ev.overlay_addr = Ipv4Addr::new(192, 168, 21, 101);
        refused(ev, "overlay address");
    }
}
