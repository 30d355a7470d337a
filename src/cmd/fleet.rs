//! `chainwatch fleet`: every instance of the fleet as EC2's tags describe
//! it; `--check` exits with Nagios codes on inconsistencies.

use std::path::Path;

use super::{CmdError, settings};
use crate::fleet::{self, Finding, Member, Severity};
use crate::layout::escaped;
use crate::shell::aws::ec2::{self, Ec2Registry};

/// Arguments of `fleet`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (`members`, `findings`, `status`) instead of a table.
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
    if args.json {
        let body = serde_json::json!({
            "fleet": s.config.aws.fleet,
            "members": members,
            "findings": findings,
            "status": worst,
        });
        println!("{body}");
    } else {
        print!("{}", table(&members, &findings, worst));
    }
    Ok(if args.check { worst as u8 } else { 0 })
}

fn table(members: &[Member], findings: &[Finding], worst: Severity) -> String {
    let mut out = format!(
        "{:<22} {:<14} {:<10} {:>3} {:>6} {:<7} {:<12} {:<16} {}\n",
        "instance", "state", "role", "id", "epoch", "fenced", "az", "address", "maintenance until"
    );
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for m in members {
        out.push_str(&format!(
            "{:<22} {:<14} {:<10} {:>3} {:>6} {:<7} {:<12} {:<16} {}\n",
            escaped(&m.instance),
            escaped(&m.state),
            dash(m.role.map(|r| r.to_string())),
            dash(m.id.map(|i| i.to_string())),
            dash(m.epoch.map(|e| e.to_string())),
            if m.fenced { "yes" } else { "-" },
            escaped(&dash(m.az.clone())),
            escaped(&dash(m.address.clone())),
            escaped(&dash(m.maint_until.clone())),
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
