//! `chainwatch client-connect FILE`: the OpenVPN server's `client-connect`
//! hook.
//!
//! OpenVPN runs it with the client's certificate common name in the
//! environment (`common_name`) and a file path as the last argument. For a
//! client of the layout it writes `ifconfig-push <ip> <mask>` to the file and
//! exits 0; OpenVPN then gives the client that address. Anything else is
//! refused: exit 1, one line on stderr saying why, and the file is neither
//! created nor changed, so OpenVPN denies the connection.
//!
//! It runs without an async runtime or a logger: OpenVPN blocks on it.

use std::ffi::OsStr;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::settings;
use crate::layout::printable;

/// Arguments of `client-connect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file OpenVPN reads the client's dynamic config from.
    pub file: PathBuf,
}

/// Run the hook; the exit code is what OpenVPN acts on.
pub fn main(config: Option<&Path>, args: &Args) -> ExitCode {
    let name = std::env::var_os("common_name");
    match answer(config, name.as_deref(), &args.file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("chainwatch client-connect: refused: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Validate the common name and write the answer; `Err` is the one-line
/// reason for refusing.
pub fn answer(config: Option<&Path>, name: Option<&OsStr>, file: &Path) -> Result<(), String> {
    let name = name.ok_or("common_name is not set; this hook is meant to be run by OpenVPN")?;
    let name = name.to_str().ok_or_else(|| {
        format!(
            "common_name {:?} is not valid UTF-8",
            printable(&name.to_string_lossy())
        )
    })?;
    let settings = settings(config).map_err(|e| e.to_string())?;
    let slot = settings
        .layout
        .parse_client_common_name(name)
        .map_err(|e| e.to_string())?;
    // Written whole or not at all: OpenVPN never reads a half answer.
    crate::fsio::write_atomic(file, settings.layout.ifconfig_push(slot).as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn good_names_get_their_address_and_bad_ones_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "").unwrap();
        let file = dir.path().join("ccd");
        answer(Some(&cfg), Some(OsStr::new("backend2")), &file).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "ifconfig-push 192.168.21.101 255.255.255.0\n"
        );
        let other = dir.path().join("other");
        let bad = OsString::from_vec(vec![b'b', 0xff, b'1']);
        assert!(answer(Some(&cfg), Some(&bad), &other).is_err());
        assert!(answer(Some(&cfg), None, &other).is_err());
        assert!(answer(Some(&cfg), Some(OsStr::new("frontend1")), &other).is_err());
        assert!(!other.exists());
        // Only the answer file is left behind.
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 2);
    }
}
