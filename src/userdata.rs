//! The chainwatch index in EC2 user-data.
//!
//! An instance learns its role and initial ID from one comment line in its
//! user-data:
//!
//! ```text
//! #cloud-config
//! # chainwatch: role=backend id=2
//! package_update: true
//! ```
//!
//! A YAML comment is invisible to cloud-init (and to its schema check), so
//! the same document carries both. Rules, all strict:
//!
//! * the line starts at column 0 with exactly `# chainwatch:`;
//! * then `key=value` pairs separated by spaces: `role` (`frontend` or
//!   `backend`) and `id` (decimal, no leading zeros, 1..=the layout maximum),
//!   each exactly once, nothing else;
//! * exactly one such line in the document. Any other comment that starts
//!   with `chainwatch:` in another case or spacing (`#chainwatch:`,
//!   `# ChainWatch :`) is an error, so a typo is reported instead of
//!   ignored;
//! * the user-data must be plain text (not gzip-compressed).

use crate::layout::{Layout, LayoutError, Role, Slot, printable};

/// The exact prefix of the index line.
pub const PREFIX: &str = "# chainwatch:";

/// Errors in user-data. Each names what is wrong and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    /// The user-data is gzip-compressed.
    #[error(
        "user-data is gzip-compressed; chainwatch needs it as plain text with a `# chainwatch: role=<role> id=<n>` line"
    )]
    Compressed,
    /// The user-data is not UTF-8 text.
    #[error("user-data is not UTF-8 text; it needs a `# chainwatch: role=<role> id=<n>` line")]
    NotText,
    /// No index line at all.
    #[error(
        "user-data has no `# chainwatch: role=<frontend|backend> id=<n>` line; add one after `#cloud-config`"
    )]
    Missing,
    /// More than one index line.
    #[error(
        "user-data has a second chainwatch line at line {second} (the first is at line {first}); keep exactly one"
    )]
    Duplicate {
        /// Line number of the first.
        first: usize,
        /// Line number of the second.
        second: usize,
    },
    /// A line that looks like an index line but is not one.
    #[error(
        "user-data line {line}: {reason}; the format is `# chainwatch: role=<frontend|backend> id=<n>`"
    )]
    Malformed {
        /// Line number (1-based).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A bad role or ID value.
    #[error("user-data line {line}: {source}")]
    Value {
        /// Line number.
        line: usize,
        /// The layout's verdict.
        source: LayoutError,
    },
}

/// Render the index line for a slot.
pub fn index_line(slot: Slot) -> String {
    format!("{PREFIX} role={} id={}", slot.role, slot.id)
}

/// Find and parse the index line in raw user-data.
pub fn parse(raw: &[u8], layout: &Layout) -> Result<Slot, UserDataError> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        return Err(UserDataError::Compressed);
    }
    let text = std::str::from_utf8(raw).map_err(|_| UserDataError::NotText)?;
    let mut found: Option<(usize, Slot)> = None;
    for (idx, line) in text.lines().enumerate() {
        let n = idx + 1;
        let Some(rest) = candidate(line) else {
            continue;
        };
        let slot = parse_line(n, line, rest, layout)?;
        if let Some((first, _)) = found {
            return Err(UserDataError::Duplicate { first, second: n });
        }
        found = Some((n, slot));
    }
    found.map(|(_, s)| s).ok_or(UserDataError::Missing)
}

/// A line is a candidate when it is a comment whose text is `chainwatch`
/// in any case followed by a colon (spaces allowed): it means to be the
/// index line, so anything off about it is an error, not prose to skip.
fn candidate(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix('#')?;
    let word = rest.trim_start();
    let head = word.get(..10)?;
    let after = word.get(10..)?.trim_start();
    (head.eq_ignore_ascii_case("chainwatch") && after.starts_with(':')).then_some(rest)
}

fn parse_line(n: usize, line: &str, _rest: &str, layout: &Layout) -> Result<Slot, UserDataError> {
    let malformed = |reason: String| UserDataError::Malformed { line: n, reason };
    let Some(body) = line.strip_prefix(PREFIX) else {
        return Err(malformed(format!(
            "{:?} must start exactly with `{PREFIX}` at column 0",
            printable(line)
        )));
    };
    if body.chars().any(|c| c.is_control() && c != '\r') {
        return Err(malformed(
            "control characters in the chainwatch line".into(),
        ));
    }
    let body = body.strip_suffix('\r').unwrap_or(body);
    let mut role: Option<Role> = None;
    let mut id_text: Option<&str> = None;
    for pair in body.split(' ').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(malformed(format!("{:?} is not key=value", printable(pair))));
        };
        match key {
            "role" => {
                if role.is_some() {
                    return Err(malformed("`role` given twice".into()));
                }
                role = Some(
                    value
                        .parse()
                        .map_err(|source| UserDataError::Value { line: n, source })?,
                );
            }
            "id" => {
                if id_text.is_some() {
                    return Err(malformed("`id` given twice".into()));
                }
                id_text = Some(value);
            }
            other => {
                return Err(malformed(format!(
                    "unknown key {:?} (only `role` and `id`)",
                    printable(other)
                )));
            }
        }
    }
    let role = role.ok_or_else(|| malformed("`role` is missing".into()))?;
    let id_text = id_text.ok_or_else(|| malformed("`id` is missing".into()))?;
    let id = layout
        .parse_id(role, id_text)
        .map_err(|source| UserDataError::Value { line: n, source })?;
    Ok(Slot::new(role, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Slot, UserDataError> {
        parse(text.as_bytes(), &Layout::default())
    }

    #[test]
    fn the_index_line_coexists_with_cloud_config() {
        let doc = "#cloud-config\n# chainwatch: role=backend id=2\npackage_update: true\nruncmd:\n  - [echo, hi]\n";
        assert_eq!(p(doc), Ok(Slot::new(Role::Backend, 2)));
        let doc = "#cloud-config\r\n# chainwatch: id=3 role=frontend\r\n";
        assert_eq!(p(doc), Ok(Slot::new(Role::Frontend, 3)));
        let doc = "#!/bin/sh\n# chainwatch:   role=frontend   id=1  \necho\n";
        assert_eq!(p(doc), Ok(Slot::new(Role::Frontend, 1)));
    }

    #[test]
    fn render_and_parse_round_trip() {
        let l = Layout::default();
        for slot in l.all_slots() {
            let doc = format!("#cloud-config\n{}\n", index_line(slot));
            assert_eq!(parse(doc.as_bytes(), &l), Ok(slot));
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("#cloud-config\n", "no `# chainwatch"),
            ("", "no `# chainwatch"),
            ("# chainwatch: role=backend\n", "`id` is missing"),
            ("# chainwatch: id=2\n", "`role` is missing"),
            (
                "# chainwatch: role=backend id=2 zone=a\n",
                "unknown key \"zone\"",
            ),
            (
                "# chainwatch: role=backend role=frontend id=2\n",
                "`role` given twice",
            ),
            ("# chainwatch: role=backend id=2 id=3\n", "`id` given twice"),
            ("# chainwatch: role=database id=2\n", "unknown role"),
            ("# chainwatch: role=Backend id=2\n", "unknown role"),
            ("# chainwatch: role=backend id=0\n", "bad ID"),
            ("# chainwatch: role=backend id=02\n", "bad ID"),
            ("# chainwatch: role=backend id=6\n", "bad ID"),
            ("# chainwatch: role=backend id=-1\n", "bad ID"),
            ("# chainwatch: role=backend id=\n", "bad ID"),
            ("# chainwatch: role=backend,id=2\n", "unknown role"),
            ("# chainwatch: role backend\n", "not key=value"),
            ("#chainwatch: role=backend id=2\n", "must start exactly"),
            ("# ChainWatch: role=backend id=2\n", "must start exactly"),
            ("  # chainwatch: role=backend id=2\n", "must start exactly"),
            ("# chainwatch role=backend id=2\n", "no `# chainwatch"),
            ("# ChainWatch : role=backend id=2\n", "must start exactly"),
            ("# chainwatch: role=backend\tid=2\n", "control characters"),
        ];
        for (doc, want) in cases {
            let err = p(doc).unwrap_err().to_string();
            assert!(err.contains(want), "{doc:?}: {err}");
        }
        let err =
            p("#cloud-config\n# chainwatch: role=backend id=1\n# chainwatch: role=backend id=2\n")
                .unwrap_err();
        assert_eq!(
            err,
            UserDataError::Duplicate {
                first: 2,
                second: 3
            }
        );
        assert!(
            p("x\n# chainwatch: role=backend id=9\n")
                .unwrap_err()
                .to_string()
                .starts_with("user-data line 2:")
        );
    }

    #[test]
    fn binary_user_data_is_refused() {
        let l = Layout::default();
        assert_eq!(
            parse(&[0x1f, 0x8b, 8, 0], &l),
            Err(UserDataError::Compressed)
        );
        assert_eq!(parse(&[0xff, 0xfe, 0x00], &l), Err(UserDataError::NotText));
    }

    #[test]
    fn other_comments_are_ignored() {
        let doc = "#cloud-config\n# managed by terraform\n#\n# chain: x\n# chainwatch owns /etc/hosts\n# chainwatch: role=frontend id=4\n";
        assert_eq!(p(doc), Ok(Slot::new(Role::Frontend, 4)));
    }
}
