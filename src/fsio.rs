//! The one way chainwatch writes a file that must be whole: state, outbox
//! entries, the worker's record, OpenVPN's pid record and `client-connect`
//! answers.

use std::io::Write;
use std::path::Path;

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
