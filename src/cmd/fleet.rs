//! `chainwatch fleet`: every instance of the fleet as EC2's tags describe
//! it, with each holder's live status where the members' channel reaches
//! it; `--check` exits with Nagios codes on inconsistencies.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use super::{CmdError, settings};
use crate::fleet::{self, Finding, Member, Severity};
use crate::layout::{Slot, escaped};
use crate::shell::aws::ec2::{self, Ec2Registry};
use crate::shell::members::{self, wire::Live};

/// Arguments of `fleet`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (`members`, `live`, `findings`, `status`) instead of a
    /// table.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 (OK), 1 (WARNING), 2 (CRITICAL) or 3 (UNKNOWN: EC2 could not
    /// be read) by the findings: a hole in the IDs, two holders of one slot,
    /// a fenced instance still running, a holder nobody watches.
    #[arg(long)]
    pub check: bool,
}

/// Read the fleet from EC2, print it and the findings; the exit code.
pub async fn main(config: Option<&Path>, args: &Args) -> Result<u8, CmdError> {
    let s = settings(config)?;
    let registry = Ec2Registry::new(
        ec2::client(&s.config.aws).await,
        &s.config.aws,
        String::new(),
    );
    let members = registry.members(&s.layout).await.map_err(|e| {
        CmdError::Other(format!(
            "cannot read fleet {:?} from EC2: {e}",
            s.config.aws.fleet
        ))
    })?;
    let findings = fleet::check(&members, &s.layout, std::time::SystemTime::now());
    let worst = fleet::worst(&findings);
    let live = live(&s, &members).await;
    if args.json {
        let body = serde_json::json!({
            "fleet": s.config.aws.fleet,
            "members": members,
            "live": live.as_ref().map(|l| l
                .iter()
                .map(|(slot, live)| (slot.to_string(), live))
                .collect::<BTreeMap<_, _>>()),
            "findings": findings,
            "status": worst,
        });
        println!("{body}");
    } else {
        print!("{}", table(&members, live.as_ref(), &findings, worst));
    }
    Ok(if args.check { worst as u8 } else { 0 })
}

/// How long `fleet` waits for the daemons' answers.
const LIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Each running holder's live status over the members' channel (`None`:
/// it did not answer); `None` when the channel is off or its key cannot be
/// read here (said on stderr: the table still shows what EC2 says).
async fn live(
    s: &crate::config::Settings,
    members: &[Member],
) -> Option<BTreeMap<Slot, Option<Live>>> {
    let key = match members::read_key(&s.config.members_key_file()) {
        Ok(Some(key)) => key,
        Ok(None) => return None,
        Err(e) => {
            eprintln!("no live status: {e}");
            return None;
        }
    };
    let slots: Vec<Slot> = members
        .iter()
        .filter(|m| m.state == "running" && !m.fenced)
        .filter_map(|m| Some(Slot::new(m.role?, m.id?)))
        .collect();
    let addrs: Vec<_> = slots.iter().map(|s2| s.layout.overlay_addr(*s2)).collect();
    let answers: HashMap<_, _> =
        match members::ask_status(&key, s.config.members.port, &addrs, LIVE_TIMEOUT).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("no live status: {e}");
                return None;
            }
        };
    Some(
        slots
            .into_iter()
            .map(|slot| (slot, answers.get(&s.layout.overlay_addr(slot)).copied()))
            .collect(),
    )
}

/// One member's live column: what its daemon said, `unreachable`, or `-`
/// (not asked: not running, or no live status at all).
fn live_cell(m: &Member, live: Option<&BTreeMap<Slot, Option<Live>>>) -> String {
    let slot = m.role.zip(m.id).map(|(r, id)| Slot::new(r, id));
    let Some(answer) = live.zip(slot).and_then(|(l, slot)| l.get(&slot)) else {
        return "-".into();
    };
    let Some(l) = answer else {
        return "unreachable".into();
    };
    let mut cell = format!("{} misses {}", l.phase, l.misses);
    if let Some(rtt) = l.rtt_us {
        cell.push_str(&format!(" rtt {:.1} ms", f64::from(rtt) / 1000.0));
    }
    if l.slot != slot.unwrap_or(l.slot) {
        cell.push_str(&format!(" (answers as {})", l.slot));
    }
    if l.degraded {
        cell.push_str(" degraded");
    }
    if l.cut_off {
        cell.push_str(" cut-off");
    }
    cell
}

fn table(
    members: &[Member],
    live: Option<&BTreeMap<Slot, Option<Live>>>,
    findings: &[Finding],
    worst: Severity,
) -> String {
    let mut out = format!(
        "{:<22} {:<14} {:<10} {:>3} {:>6} {:<7} {:<12} {:<16} {:<22} {}\n",
        "instance",
        "state",
        "role",
        "id",
        "epoch",
        "fenced",
        "az",
        "address",
        "maintenance until",
        "live"
    );
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for m in members {
        out.push_str(&format!(
            "{:<22} {:<14} {:<10} {:>3} {:>6} {:<7} {:<12} {:<16} {:<22} {}\n",
            escaped(&m.instance),
            escaped(&m.state),
            dash(m.role.map(|r| r.to_string())),
            dash(m.id.map(|i| i.to_string())),
            dash(m.epoch.map(|e| e.to_string())),
            if m.fenced { "yes" } else { "-" },
            escaped(&dash(m.az.clone())),
            escaped(&dash(m.address.clone())),
            escaped(&dash(m.maint_until.clone())),
            live_cell(m, live),
        ));
    }
    out.push_str(&format!("\n{worst:?}"));
    if findings.is_empty() {
        out.push_str(": the chain is consistent\n");
    } else {
        out.push('\n');
        for f in findings {
            out.push_str(&format!("{:?}: {}\n", f.severity, escaped(&f.message)));
        }
    }
    out
}
