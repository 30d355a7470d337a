//! `chainwatch client-connect FILE`: the OpenVPN server's `client-connect`
//! hook.
//!
//! OpenVPN runs it with the client's certificate common name
//! (`common_name`) and the address it connects from (`trusted_ip`) in the
//! environment and a file path as the last argument. For a client of the
//! layout that the hub's admission list admits from that address (the
//! fabric fence: see [`crate::admission`]; `vpn.verify_holder`) it writes
//! `ifconfig-push <ip> <mask>` to the file and exits 0; OpenVPN then gives
//! the client that address. Anything else is refused: exit 1, one line on
//! stderr (OpenVPN's log) saying why, and the file is neither created nor
//! changed, so OpenVPN denies the connection.
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

/// Arguments of `tls-verify` (as OpenVPN appends them).
#[derive(Debug, clap::Args)]
pub struct TlsVerifyArgs {
    /// The certificate's depth in the chain (0: the client's own).
    pub depth: u32,
    /// The certificate's subject.
    pub subject: String,
}

/// The `tls-verify` hook: refuse, during the TLS handshake, a client
/// certificate whose common name the hub's admission list does not admit
/// from the connecting address (`untrusted_ip`). Run before the session is
/// established, it keeps a stale client from even displacing the holder's
/// session (OpenVPN drops an older session with the same common name as
/// soon as a new one is established, before `client-connect` runs).
pub fn tls_verify_main(config: Option<&Path>, args: &TlsVerifyArgs) -> ExitCode {
    if args.depth > 0 {
        // The CA: OpenVPN has verified the chain itself.
        return ExitCode::SUCCESS;
    }
    let name = std::env::var_os("X509_0_CN");
    let from = std::env::var_os("untrusted_ip");
    let verdict = checked_client(config, "X509_0_CN", name.as_deref(), from.as_deref()).map(|_| ());
    match verdict {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("chainwatch tls-verify: refused: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// The settings and the client's slot, once its common name (from the
/// environment variable `var`) is one of the layout's and the admission
/// list admits it from `from`; `Err` is the one-line reason for refusing.
fn checked_client(
    config: Option<&Path>,
    var: &str,
    name: Option<&OsStr>,
    from: Option<&OsStr>,
) -> Result<(crate::config::Settings, crate::layout::Slot), String> {
    let name =
        name.ok_or_else(|| format!("{var} is not set; this hook is meant to be run by OpenVPN"))?;
    let name = name.to_str().ok_or_else(|| {
        format!(
            "{var} {:?} is not valid UTF-8",
            printable(&name.to_string_lossy())
        )
    })?;
    let settings = settings(config).map_err(|e| e.to_string())?;
    let slot = settings
        .layout
        .parse_client_common_name(name)
        .map_err(|e| e.to_string())?;
    admitted(&settings, name, slot, from)?;
    Ok((settings, slot))
}

/// Whether the admission list admits `slot` (common name `name`) from
/// `from` (`vpn.verify_holder`; otherwise anyone of the layout is).
fn admitted(
    settings: &crate::config::Settings,
    name: &str,
    slot: crate::layout::Slot,
    from: Option<&OsStr>,
) -> Result<(), String> {
    if !settings.config.vpn.verify_holder {
        return Ok(());
    }
    let ip: std::net::Ipv4Addr = from
        .and_then(|f| f.to_str())
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| {
            format!(
                "{name}: the client's address {:?} is not an IPv4 address",
                from.map(|f| printable(&f.to_string_lossy()))
            )
        })?;
    let list = crate::admission::path(&crate::shell::openvpn::run_dir(
        &settings.config.node.state_dir,
    ));
    crate::admission::Admission::load(&list)?
        .admits(slot, ip)
        .map_err(|why| format!("{name} from {ip}: {why}"))
}

/// Run the hook; the exit code is what OpenVPN acts on.
pub fn main(config: Option<&Path>, args: &Args) -> ExitCode {
    let name = std::env::var_os("common_name");
    let from = std::env::var_os("trusted_ip");
    match answer(config, name.as_deref(), from.as_deref(), &args.file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("chainwatch client-connect: refused: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Validate the common name and the address it connects from, and write the
/// answer; `Err` is the one-line reason for refusing.
pub fn answer(
    config: Option<&Path>,
    name: Option<&OsStr>,
    from: Option<&OsStr>,
    file: &Path,
) -> Result<(), String> {
    let (settings, slot) = checked_client(config, "common_name", name, from)?;
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
        let (dir, cfg) = crate::fsio::scratch("c.toml");
        // The layout alone (tests/client_connect.rs checks the admission
        // list).
        std::fs::write(&cfg, "[vpn]\nverify_holder = false\n").unwrap();
        let file = dir.path().join("ccd");
        answer(Some(&cfg), Some(OsStr::new("backend2")), None, &file).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "ifconfig-push 192.168.21.101 255.255.255.0\n"
        );
        let other = dir.path().join("other");
        let bad = OsString::from_vec(vec![b'b', 0xff, b'1']);
        assert!(answer(Some(&cfg), Some(&bad), None, &other).is_err());
        assert!(answer(Some(&cfg), None, None, &other).is_err());
        assert!(answer(Some(&cfg), Some(OsStr::new("frontend1")), None, &other).is_err());
        assert!(!other.exists());
        // Only the answer file is left behind.
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 2);
    }
}
