//! `chainwatch hosts`: print the `/etc/hosts` block of the layout.

use std::path::Path;

use super::{CmdError, settings};

/// Arguments of `hosts`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Print the block.
pub fn main(config: Option<&Path>, _args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    print!("{}", s.layout.hosts_block());
    Ok(())
}
