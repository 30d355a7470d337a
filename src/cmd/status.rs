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
}

/// Fetch and print the report.
pub async fn main(config: Option<&Path>, args: &Args) -> Result<(), CmdError> {
    let path = match &args.socket {
        Some(p) => p.clone(),
        None => settings(config)?.config.node.status_socket,
    };
    let report = fetch(&path)
        .await
        .map_err(|e| CmdError::Other(e.to_string()))?;
    if args.json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| CmdError::Other(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
