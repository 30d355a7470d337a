//! `chainwatch generate-assets`: the shell completions and man pages the
//! Debian package ships, generated from the command line's own definition
//! (clap_complete, clap_mangen). The generated files live in `dist/`;
//! `tests/dist_assets.rs` fails when they are stale.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, CmdError};

/// Arguments of `generate-assets`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write `completions/` and `man/` into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// The completion files: (shell, file name under `completions/`).
pub const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "chainwatch"),
    (Shell::Zsh, "_chainwatch"),
    (Shell::Fish, "chainwatch.fish"),
];

/// Write the completions and the man pages under `out`.
pub fn main(args: &Args) -> Result<(), CmdError> {
    write(&args.out).map_err(|e| {
        CmdError::Other(format!(
            "cannot write the assets under {}: {e}",
            args.out.display()
        ))
    })
}

fn write(out: &Path) -> std::io::Result<()> {
    let completions = out.join("completions");
    let man = out.join("man");
    std::fs::create_dir_all(&completions)?;
    std::fs::create_dir_all(&man)?;
    for (shell, name) in COMPLETIONS {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "chainwatch", &mut buf);
        std::fs::write(completions.join(name), buf)?;
    }
    clap_mangen::generate_to(Cli::command(), &man)
}
