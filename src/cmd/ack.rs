//! `chainwatch ack`: acknowledge the fences this node sent, so that a fence
//! held by the fence budget or the cooldown after a takeover goes out (the
//! daemon retries it by itself).

use std::path::Path;

use super::{CmdError, settings};
use crate::shell::aws::budget;

/// Arguments of `ack`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Reset the budget window of this node.
pub fn main(config: Option<&Path>, _args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    let dir = &s.config.node.state_dir;
    let now = crate::clock::unix_ms(std::time::SystemTime::now());
    budget::acknowledge(dir, now).map_err(|e| {
        CmdError::Other(format!(
            "cannot write {}: {e} (run as root, on the node whose fence is held)",
            budget::path(dir).display()
        ))
    })?;
    println!(
        "acknowledged: the fences so far no longer count for this node, which may fence again (budget {} per role and hour, cooldown after a takeover {})",
        s.config.aws.fence_budget_per_hour,
        humantime::format_duration(s.config.aws.takeover_cooldown)
    );
    Ok(())
}
