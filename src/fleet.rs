//! The fleet as EC2's tags describe it, and the consistency checks of
//! `chainwatch fleet --check` (pure: instances in, findings out).

use serde::Serialize;

use crate::layout::{Layout, Role};

/// One instance of the fleet, from its EC2 record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// EC2 instance ID.
    pub instance: String,
    /// EC2 state (`running`, `stopping`, `stopped`, ...).
    pub state: String,
    /// `chainwatch:role`, if valid.
    pub role: Option<Role>,
    /// `chainwatch:id`, if valid for the role.
    pub id: Option<u32>,
    /// `chainwatch:epoch`, if valid.
    pub epoch: Option<u64>,
    /// Tagged `chainwatch:state=fenced`.
    pub fenced: bool,
    /// Tagged `chainwatch:state=released`: it handed its slot over in a
    /// switchover and holds nothing until it rejoins.
    #[serde(default)]
    pub released: bool,
    /// Availability zone.
    pub az: Option<String>,
    /// VPC address.
    pub address: Option<String>,
    /// `chainwatch:maint-until`, as tagged (RFC 3339).
    pub maint_until: Option<String>,
    /// Tag values that did not parse, to report.
    #[serde(skip)]
    pub bad_tags: Vec<String>,
}

impl Member {
    /// Not stopped or terminated: it may still answer.
    pub fn is_up(&self) -> bool {
        !matches!(self.state.as_str(), "stopped" | "terminated")
    }

    /// Holds its slot: up, neither fenced nor released.
    pub fn holds(&self) -> bool {
        self.is_up() && !self.fenced && !self.released && self.role.is_some() && self.id.is_some()
    }
}

/// How bad a finding is; the exit code of `fleet --check` (Nagios).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// Consistent.
    Ok = 0,
    /// Works, with less protection than configured.
    Warning = 1,
    /// Inconsistent: needs a person.
    Critical = 2,
}

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// What, and what to do.
    pub message: String,
}

fn finding(severity: Severity, message: String) -> Finding {
    Finding { severity, message }
}

/// Check the fleet: two holders of one slot, a hole in a role's IDs, a
/// fenced instance still running, a holder nobody watches, tags that do
/// not parse.
pub fn check(members: &[Member], layout: &Layout, now: std::time::SystemTime) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in members {
        if let Some(until) = &m.maint_until {
            match humantime::parse_rfc3339_weak(until) {
                Ok(t) if t <= now => out.push(finding(
                    Severity::Warning,
                    format!(
                        "{}: maintenance ended at {until} but the tag is still set (it no longer holds fences off); clear it with `chainwatch maint off --instance {}`",
                        m.instance, m.instance
                    ),
                )),
                Ok(_) => {}
                Err(_) => out.push(finding(
                    Severity::Warning,
                    format!(
                        "{}: chainwatch:maint-until = {until:?} is no RFC 3339 time; it holds fences off until cleared (`chainwatch maint off --instance {}`)",
                        m.instance, m.instance
                    ),
                )),
            }
        }
        for bad in &m.bad_tags {
            out.push(finding(
                Severity::Warning,
                format!(
                    "{}: {bad}; it is no member of the chain until fixed",
                    m.instance
                ),
            ));
        }
        if m.fenced && matches!(m.state.as_str(), "running" | "pending") {
            out.push(finding(
                Severity::Critical,
                format!(
                    "{} is tagged fenced but {}: it was started again by hand, or its stop failed; stop it, or clear its fenced tag to let it rejoin at the tail",
                    m.instance, m.state
                ),
            ));
        }
    }
    for role in [Role::Frontend, Role::Backend] {
        let of_role: Vec<&Member> = members.iter().filter(|m| m.role == Some(role)).collect();
        if of_role.is_empty() {
            continue;
        }
        let mut held: Vec<(u32, Vec<&str>)> = Vec::new();
        for m in of_role.iter().filter(|m| m.holds()) {
            let id = m.id.unwrap_or(0);
            match held.iter_mut().find(|(i, _)| *i == id) {
                Some((_, who)) => who.push(&m.instance),
                None => held.push((id, vec![&m.instance])),
            }
        }
        held.sort();
        for (id, who) in &held {
            if who.len() > 1 {
                out.push(finding(
                    Severity::Critical,
                    format!(
                        "{}{id} has {} holders ({}): a split brain; fence all but the one at the highest epoch",
                        role,
                        who.len(),
                        who.join(", ")
                    ),
                ));
            }
        }
        let Some(top) = held.iter().map(|(id, _)| *id).max() else {
            out.push(finding(
                Severity::Critical,
                format!("no {role} holds any ID: the role is down"),
            ));
            continue;
        };
        for id in 1..=top {
            if !held.iter().any(|(i, _)| *i == id) {
                let f = if id == 1 {
                    finding(
                        Severity::Critical,
                        format!(
                            "hole: nobody holds {role}1, the role's first ID{}; a failover in progress fills it within seconds, otherwise check the daemons of {role}2",
                            if role == Role::Frontend {
                                " (the VPN hub)"
                            } else {
                                " (the MySQL primary)"
                            }
                        ),
                    )
                } else {
                    finding(
                        Severity::Warning,
                        format!(
                            "hole: nobody holds {role}{id}, so {role}{} is not watched; a failover in progress fills it within seconds, otherwise check the daemons of {role}{}",
                            id - 1,
                            id + 1
                        ),
                    )
                };
                out.push(f);
            }
        }
        if held.len() == 1 && layout.max_id(role) > 1 {
            out.push(finding(
                Severity::Warning,
                format!(
                    "only {role}{} is held: nobody watches it, so its death is not handled",
                    held[0].0
                ),
            ));
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

/// The worst severity of `findings` (OK when there are none).
pub fn worst(findings: &[Finding]) -> Severity {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(instance: &str, role: Role, id: u32, state: &str, fenced: bool) -> Member {
        Member {
            instance: instance.into(),
            state: state.into(),
            role: Some(role),
            id: Some(id),
            epoch: Some(1),
            fenced,
            released: false,
            az: None,
            address: None,
            maint_until: None,
            bad_tags: Vec::new(),
        }
    }

    fn now() -> std::time::SystemTime {
        humantime::parse_rfc3339("2026-11-25T12:00:00Z").unwrap()
    }

    #[test]
    fn maintenance_past_its_end_is_flagged() {
        let mut f = healthy();
        f[1].maint_until = Some("2026-11-25T13:00:00Z".into());
        assert_eq!(check(&f, &Layout::default(), now()), vec![]);
        f[1].maint_until = Some("2026-11-25T11:00:00Z".into());
        let found = check(&f, &Layout::default(), now());
        assert!(found[0].message.contains("maintenance ended"), "{found:?}");
        f[1].maint_until = Some("tomorrow".into());
        let found = check(&f, &Layout::default(), now());
        assert!(found[0].message.contains("no RFC 3339 time"), "{found:?}");
    }

    fn healthy() -> Vec<Member> {
        vec![
            m("i-f1", Role::Frontend, 1, "running", false),
            m("i-f2", Role::Frontend, 2, "running", false),
            m("i-b1", Role::Backend, 1, "running", false),
            m("i-b2", Role::Backend, 2, "running", false),
        ]
    }

    #[test]
    fn a_healthy_fleet_has_no_findings() {
        let mut f = healthy();
        // A fenced instance EC2 is still stopping, and one that stopped,
        // are the normal aftermath of a failover.
        f.push(m("i-old", Role::Frontend, 2, "stopping", true));
        f.push(m("i-older", Role::Backend, 1, "stopped", true));
        assert_eq!(check(&f, &Layout::default(), now()), vec![]);
        assert_eq!(worst(&check(&f, &Layout::default(), now())), Severity::Ok);
    }

    #[test]
    fn each_planted_inconsistency_is_flagged() {
        let layout = Layout::default();
        let mut f = healthy();
        f.push(m("i-x", Role::Frontend, 2, "running", false));
        let found = check(&f, &layout, now());
        assert_eq!(worst(&found), Severity::Critical);
        assert!(
            found[0].message.contains("frontend2 has 2 holders"),
            "{found:?}"
        );

        let mut f = healthy();
        f.push(m("i-b4", Role::Backend, 4, "running", false));
        let found = check(&f, &layout, now());
        assert!(
            found
                .iter()
                .any(|x| x.message.contains("nobody holds backend3")),
            "{found:?}"
        );

        let mut f = healthy();
        f[1].fenced = true;
        let found = check(&f, &layout, now());
        assert_eq!(worst(&found), Severity::Critical);
        assert!(
            found
                .iter()
                .any(|x| x.message.contains("i-f2 is tagged fenced but running"))
        );
        // Its slot is then empty too, and frontend1 unwatched.
        assert!(
            found.iter().any(|x| x.message.contains("only frontend1")),
            "{found:?}"
        );

        let mut f = healthy();
        f.retain(|x| x.instance != "i-b1");
        let found = check(&f, &layout, now());
        assert!(
            found
                .iter()
                .any(|x| x.severity == Severity::Critical && x.message.contains("backend1")),
            "{found:?}"
        );

        let mut f = healthy();
        f[2].state = "stopped".into();
        f[3].state = "stopped".into();
        let found = check(&f, &layout, now());
        assert!(
            found
                .iter()
                .any(|x| x.message.contains("no backend holds any ID"))
        );
    }
}
