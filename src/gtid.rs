//! MariaDB GTID positions, compared the way `failover.yml`'s filters do
//! (`ansible/filter_plugins/chainwatch_gtid.py`), for the worker's direct
//! promotion (`shell/promote.rs`). Pure: no I/O.
//!
//! A position is a comma-separated list of `domain-server_id-seqno`, one per
//! replication domain. Position A covers B when, for every domain in B, A
//! holds that domain at a sequence number at least as high. Positions where
//! neither covers the other have diverged: errant transactions.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed GTID position: the highest sequence number per domain, and the
/// text it was read from, rebuilt from the numbers (safe to splice into a
/// statement as a quoted literal: digits, `-` and `,` only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    seqno: BTreeMap<u32, u64>,
    text: String,
}

/// A string that is not a GTID position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MariaDB GTID position: {0:?}")]
pub struct BadPosition(pub String);

impl Position {
    /// Parse `domain-server-seqno[,…]`; empty means no transaction yet.
    pub fn parse(text: &str) -> Result<Position, BadPosition> {
        let text = text.trim();
        let mut pos = Position::default();
        if text.is_empty() {
            return Ok(pos);
        }
        let bad = || BadPosition(crate::layout::escaped(text));
        let mut parts = Vec::new();
        for part in text.split(',') {
            let mut f = part.trim().split('-');
            let (Some(d), Some(s), Some(n), None) = (f.next(), f.next(), f.next(), f.next()) else {
                return Err(bad());
            };
            let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
            if !(digits(d) && digits(s) && digits(n)) {
                return Err(bad());
            }
            let (d, s, n): (u32, u32, u64) = (
                d.parse().map_err(|_| bad())?,
                s.parse().map_err(|_| bad())?,
                n.parse().map_err(|_| bad())?,
            );
            let e = pos.seqno.entry(d).or_insert(0);
            *e = (*e).max(n);
            parts.push(format!("{d}-{s}-{n}"));
        }
        pos.text = parts.join(",");
        Ok(pos)
    }

    /// Whether this position holds every transaction `other` holds.
    pub fn covers(&self, other: &Position) -> bool {
        other
            .seqno
            .iter()
            .all(|(d, n)| self.seqno.get(d).is_some_and(|m| m >= n))
    }

    /// The position as text (digits, `-` and `,` only).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.text.is_empty() {
            "(empty)"
        } else {
            &self.text
        })
    }
}

/// Positions that no single one covers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the servers' GTID positions have diverged (errant transactions): {0}; none covers the others"
)]
pub struct Diverged(pub String);

/// The server whose position covers every other's; `prefer` wins ties.
/// `None` for no positions at all.
pub fn most_advanced<'a>(
    positions: &'a BTreeMap<String, Position>,
    prefer: &str,
) -> Result<Option<&'a str>, Diverged> {
    if positions.is_empty() {
        return Ok(None);
    }
    let order = positions
        .keys()
        .filter(|k| k.as_str() == prefer)
        .chain(positions.keys().filter(|k| k.as_str() != prefer));
    for name in order {
        let p = &positions[name];
        if positions.values().all(|o| p.covers(o)) {
            return Ok(Some(name));
        }
    }
    Err(Diverged(
        positions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Position {
        Position::parse(s).unwrap()
    }

    #[test]
    fn positions_parse_and_print_only_digits_dashes_and_commas() {
        assert_eq!(p("0-101-42, 1-7-3").as_str(), "0-101-42,1-7-3");
        assert_eq!(p("").as_str(), "");
        for bad in [
            "0-1",
            "0-1-2-3",
            "a-1-2",
            "0-1-2'; DROP TABLE t; --",
            "0-1-",
            "0-1-99999999999999999999999",
        ] {
            assert!(Position::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn covering_is_per_domain_sequence_numbers() {
        assert!(p("0-1-10").covers(&p("0-2-9")));
        assert!(p("0-1-10").covers(&p("")));
        assert!(!p("").covers(&p("0-1-1")));
        assert!(!p("0-1-10").covers(&p("0-1-10,1-3-1")));
        assert!(p("0-1-10,1-3-1").covers(&p("0-1-10")));
    }

    #[test]
    fn the_most_advanced_covers_all_the_preferred_wins_ties_divergence_is_an_error() {
        let m = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, s)| (k.to_string(), p(s)))
                .collect::<BTreeMap<_, _>>()
        };
        let even = m(&[("b2", "0-1-10"), ("b3", "0-1-10")]);
        assert_eq!(most_advanced(&even, "b3"), Ok(Some("b3")));
        assert_eq!(most_advanced(&even, "b2"), Ok(Some("b2")));
        let ahead = m(&[("b2", "0-1-9"), ("b3", "0-1-10")]);
        assert_eq!(most_advanced(&ahead, "b2"), Ok(Some("b3")));
        let forked = m(&[("b2", "0-1-10,1-2-1"), ("b3", "0-1-11")]);
        assert!(most_advanced(&forked, "b2").is_err());
        assert_eq!(most_advanced(&BTreeMap::new(), "b2"), Ok(None));
    }
}
