//! The one way chainwatch writes a file that must be whole: state, outbox
//! entries, the worker's record, OpenVPN's pid record and `client-connect`
//! answers; and the one way it reads a secret (the members key, the broker
//! password): only from a file whose mode keeps others out.

use std::io::Write;
use std::path::Path;

/// Why a secret file was not read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// It cannot be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// Its mode lets in someone it must not.
    #[error("{path} is readable by {who} (mode {mode:o}); run `chmod {fix:o} {path}`")]
    Mode {
        /// The file.
        path: std::path::PathBuf,
        /// Its mode bits.
        mode: u32,
        /// `group or others`, or `others`.
        who: &'static str,
        /// The mode to set.
        fix: u32,
    },
}

/// Who may read a secret file besides its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Nobody (mode 0600 at most).
    Owner,
    /// Its group too (mode 0640 at most): a service's group reads it.
    OwnerAndGroup,
}

/// The bytes of the secret file `path`, refused when its mode lets in more
/// than `readers`; `Ok(None)` when it does not exist.
pub fn read_secret(path: &Path, readers: Readers) -> Result<Option<Vec<u8>>, SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |e: std::io::Error| SecretError::Read {
        path: path.into(),
        reason: e.to_string(),
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    let (forbidden, who, fix) = match readers {
        Readers::Owner => (0o077, "group or others", 0o600),
        Readers::OwnerAndGroup => (0o007, "others", 0o640),
    };
    if mode & forbidden != 0 {
        return Err(SecretError::Mode {
            path: path.into(),
            mode,
            who,
            fix,
        });
    }
    std::fs::read(path).map(Some).map_err(read)
}

/// Write `body` to `path` atomically and durably: a temporary file (mode
/// 0600) in the same directory, fsynced, renamed over `path`, then the
/// directory fsynced. A reader sees the old content or the new one, never
/// a part, also after a crash; on error nothing is left behind.
pub fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, body, 0o600)
}

/// [`write_atomic`] with the file's mode bits set before it takes the
/// name, so that no reader ever finds it with other ones.
pub fn write_atomic_mode(path: &Path, body: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".chainwatch-")
        .tempfile_in(dir)?;
    tmp.write_all(body)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// A test's scratch directory (removed when dropped) and the path `name`
/// in it.
#[cfg(test)]
pub(crate) fn scratch(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    (dir, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_whole_files_private_and_leaves_nothing_else() {
        let (dir, p) = crate::fsio::scratch("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A directory that does not exist: an error, nothing written.
        assert!(write_atomic(&dir.path().join("no/f"), b"x").is_err());
    }
}
