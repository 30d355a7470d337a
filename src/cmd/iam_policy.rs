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
    /// Where the instances fetch their PKI at boot, as given to
    /// `render-user-data --pki-source`: ssm:/prefix, s3://bucket/prefix/
    /// or baked.
    #[arg(long, default_value = crate::iam::DEFAULT_PKI_SOURCE)]
    pub pki_source: String,
}

/// Print the policy.
pub fn main(config: Option<&Path>, args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    let policy = crate::iam::policy_with_pki(
        &s.config.aws.fleet,
        &s.config.announce.cloudwatch_log_group,
        args.role,
        &args.pki_source,
    )
    .ok_or_else(|| {
        CmdError::Other(format!(
            "--pki-source {:?}: use ssm:/prefix, s3://bucket/prefix/ or baked",
            args.pki_source
        ))
    })?;
    let text = serde_json::to_string_pretty(&policy).map_err(|e| CmdError::Other(e.to_string()))?;
    println!("{text}");
    Ok(())
}
