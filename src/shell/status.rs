//! The status socket: the daemon writes its [`StatusReport`] as one JSON line
//! to every client that connects, then closes. The socket is mode 0600 (its
//! directory is created 0755 if missing), so only root (or the daemon's user)
//! can read it.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::StatusReport;

/// Errors of the status socket.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Another daemon answers on the socket.
    #[error(
        "another chainwatch daemon is already serving {0}; stop it first (or set node.status_socket)"
    )]
    AlreadyRunning(PathBuf),
    /// The socket could not be set up.
    #[error("cannot set up status socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The client could not connect or read.
    #[error(
        "cannot read status from {path}: {reason}; is `chainwatch run` running on this host, and are you root?"
    )]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Bind the status socket, replacing a stale one left by a dead daemon.
pub fn bind(path: &Path) -> Result<UnixListener, StatusError> {
    let err = |source| StatusError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(StatusError::AlreadyRunning(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Serve the latest report to every client until the task is dropped.
pub async fn serve(listener: UnixListener, reports: watch::Receiver<StatusReport>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let body = {
            let report = reports.borrow();
            serde_json::to_vec(&*report)
        };
        if let Ok(mut body) = body {
            body.push(b'\n');
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&body)).await;
            });
        }
    }
}

/// Fetch the report from a running daemon.
pub async fn fetch(path: &Path) -> Result<StatusReport, StatusError> {
    let err = |reason: String| StatusError::Connect {
        path: path.to_path_buf(),
        reason,
    };
    let read = async {
        let mut stream = UnixStream::connect(path)
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut buf = Vec::new();
        stream
            .read_to_end(&mut buf)
            .await
            .map_err(|e| err(e.to_string()))?;
        serde_json::from_slice(&buf).map_err(|e| err(format!("bad answer: {e}")))
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| err("no answer within 5 s".into()))?
}
