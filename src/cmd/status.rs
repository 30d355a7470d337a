//! `chainwatch status`: what the local daemon is doing now.

use std::path::{Path, PathBuf};

use super::{CmdError, settings};
use crate::shell::status::fetch;

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Status socket [default: node.status_socket from the config].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print one line and exit 0 (OK), 1 (WARNING), 2 (CRITICAL: the
    /// daemon does not answer, or a power fence was never confirmed), as a
    /// Nagios plugin.
    #[arg(long, conflicts_with = "json")]
    pub check: bool,
}

/// Fetch and print the report; the exit code (`--check`: Nagios).
pub async fn main(config: Option<&Path>, args: &Args) -> Result<u8, CmdError> {
    let path = match &args.socket {
        Some(p) => p.clone(),
        None => settings(config)?.config.node.status_socket,
    };
    let report = match fetch(&path).await {
        Ok(r) => r,
        Err(e) if args.check => {
            println!("CRITICAL: chainwatch does not answer: {e}");
            return Ok(2);
        }
        Err(e) => return Err(CmdError::Other(e.to_string())),
    };
    if args.check {
        let (worst, reasons) = report.check();
        let what = format!(
            "{}{} ({}), phase {}",
            report.role, report.id, report.mode, report.phase
        );
        if reasons.is_empty() {
            println!("OK: {what}");
        } else {
            println!("{worst:?}: {what}: {}", reasons.join("; "));
        }
        return Ok(worst as u8);
    }
    if args.json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| CmdError::Other(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", report.table());
    }
    Ok(0)
}
