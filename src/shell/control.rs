//! The control socket: how `chainwatch switchover` asks the local daemon to
//! hand its slot over. One request line in, one answer line out
//! (`ok <text>` or `error <text>`). It sits beside the status socket, as
//! `control.sock`, mode 0600: only root (or the daemon's user) may ask.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// The one request there is: hand this node's slot over to its watcher.
pub const HANDOVER: &str = "handover";

/// Longest request line read.
const MAX_LINE: u64 = 64;

/// How long the daemon may take to answer a request (it takes its identity
/// down, tags itself released and tells its watcher first).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A request handed to the daemon, with where its answer goes.
pub type Request = oneshot::Sender<Result<String, String>>;

/// The control socket's path: `control.sock` beside the status socket.
pub fn path(status_socket: &Path) -> PathBuf {
    status_socket.with_file_name("control.sock")
}

/// Bind the control socket beside `status_socket` (replacing a stale one).
pub fn bind_for(status_socket: &Path) -> Result<UnixListener, super::status::StatusError> {
    super::status::bind(&path(status_socket))
}

/// Answer requests until the task is dropped. A handover request goes to
/// `requests` (one at a time: a second one while the first is handled is
/// refused); anything else is refused at once.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Request>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(ANSWER_WITHIN, answer(stream, requests)).await;
        });
    }
}

async fn answer(stream: UnixStream, requests: mpsc::Sender<Request>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE));
    let read = reader.read_line(&mut line);
    let answer = match tokio::time::timeout(Duration::from_secs(2), read).await {
        Ok(Ok(_)) if line.trim() == HANDOVER => {
            let (tx, rx) = oneshot::channel();
            match requests.try_send(tx) {
                Ok(()) => rx
                    .await
                    .unwrap_or_else(|_| Err("the daemon is shutting down".into())),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    Err("a switchover is already under way".into())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    Err("this daemon takes no switchover (observe mode, or shutting down)".into())
                }
            }
        }
        Ok(Ok(_)) => Err(format!(
            "unknown request {:?}; the only one is {HANDOVER:?}",
            crate::layout::escaped(line.trim())
        )),
        _ => Err("no request line within 2 s".into()),
    };
    let text = match answer {
        Ok(t) => format!("ok {t}\n"),
        Err(e) => format!("error {e}\n"),
    };
    let _ = write.write_all(text.as_bytes()).await;
}

/// Send `request` to the daemon behind `path`; its answer, or why there is
/// none.
pub async fn ask(path: &Path, request: &str) -> Result<String, String> {
    let talk = async {
        let mut stream = UnixStream::connect(path).await.map_err(|e| {
            format!(
                "cannot reach the daemon's control socket {}: {e}; is `chainwatch run` running on this host, and are you root?",
                path.display()
            )
        })?;
        stream
            .write_all(format!("{request}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(stream.take(4096))
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        match line.trim_end().split_once(' ') {
            Some(("ok", text)) => Ok(text.to_string()),
            Some(("error", text)) => Err(text.to_string()),
            _ => Err(format!(
                "the daemon gave no answer ({:?})",
                crate::layout::escaped(line.trim())
            )),
        }
    };
    tokio::time::timeout(ANSWER_WITHIN + Duration::from_secs(2), talk)
        .await
        .map_err(|_| format!("no answer within {ANSWER_WITHIN:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handover_reaches_the_daemon_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = path(&dir.path().join("status.sock"));
        assert_eq!(sock, dir.path().join("control.sock"));
        let listener = bind_for(&dir.path().join("status.sock")).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let server = tokio::spawn(serve(listener, tx));
        let daemon = tokio::spawn(async move {
            let first: Request = rx.recv().await.unwrap();
            first.send(Ok("frontend1 released".into())).unwrap();
            let second: Request = rx.recv().await.unwrap();
            second.send(Err("nobody holds frontend2".into())).unwrap();
        });
        assert_eq!(ask(&sock, HANDOVER).await.unwrap(), "frontend1 released");
        assert_eq!(
            ask(&sock, HANDOVER).await.unwrap_err(),
            "nobody holds frontend2"
        );
        let err = ask(&sock, "rm -rf /").await.unwrap_err();
        assert!(err.starts_with("unknown request"), "{err}");
        daemon.await.unwrap();
        // The daemon no longer takes requests: said so.
        let err = ask(&sock, HANDOVER).await.unwrap_err();
        assert!(err.contains("takes no switchover"), "{err}");
        server.abort();
        let err = ask(&dir.path().join("none.sock"), HANDOVER)
            .await
            .unwrap_err();
        assert!(err.contains("is `chainwatch run` running"), "{err}");
    }
}
