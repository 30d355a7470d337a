//! `chainwatch iam-policy`: the least-privilege IAM policy of one role's
//! instance profile for the configured fleet, as JSON.

use std::path::Path;

use super::{CmdError, settings};
use crate::layout::Role;

/// Arguments of `iam-policy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The role whose instance profile the policy is for (each role has
    /// its own).
    #[arg(long, value_enum)]
    pub role: Role,
}

/// Print the policy.
pub fn main(config: Option<&Path>, args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    let text = serde_json::to_string_pretty(&crate::iam::policy(
        &s.config.aws.fleet,
        &s.config.announce.cloudwatch_log_group,
        args.role,
    ))
    .map_err(|e| CmdError::Other(e.to_string()))?;
    println!("{text}");
    Ok(())
}
