//! `chainwatch iam-policy`: the least-privilege IAM policy for the
//! configured fleet, as JSON.

use std::path::Path;

use super::{CmdError, settings};

/// Arguments of `iam-policy`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Print the policy.
pub fn main(config: Option<&Path>, _args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    let text = serde_json::to_string_pretty(&crate::iam::policy(
        &s.config.aws.fleet,
        &s.config.announce.cloudwatch_log_group,
    ))
    .map_err(|e| CmdError::Other(e.to_string()))?;
    println!("{text}");
    Ok(())
}
