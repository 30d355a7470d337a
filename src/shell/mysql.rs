//! The MySQL/MariaDB command-line client, run for one statement batch at a
//! time: the node's `service.mysql_client` (its own server, for a planned
//! switchover) and the worker's `worker.mysql_client` (every backend's
//! server, for a direct promotion). The client reads its credentials from
//! its own option files (`--defaults-extra-file`), so no secret passes
//! through chainwatch's arguments or logs. Statements are fixed text or
//! values chainwatch rebuilt from checked numbers.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// One server, as reached by a client command.
#[derive(Debug, Clone)]
pub struct Client {
    argv: Vec<String>,
    host: Option<String>,
    what: &'static str,
}

impl Client {
    /// The server `argv` (a client command and its first options) reaches
    /// by itself; `what` names the setting in errors.
    pub fn new(argv: &[String], what: &'static str) -> Client {
        Client {
            argv: argv.to_vec(),
            host: None,
            what,
        }
    }

    /// The same command, for the server at `host` (TCP, a 5 s connect
    /// timeout: a server that is gone fails fast).
    pub fn at(&self, host: &str) -> Client {
        Client {
            host: Some(host.to_string()),
            ..self.clone()
        }
    }

    async fn run(&self, header: bool, stmt: &str, within: Duration) -> Result<String, String> {
        let Some((prog, args)) = self.argv.split_first() else {
            return Err(format!("{} is empty: name the MySQL client", self.what));
        };
        let mut cmd = Command::new(prog);
        cmd.args(args);
        if let Some(h) = &self.host {
            cmd.arg("--connect-timeout=5").arg(format!("--host={h}"));
        }
        if !header {
            cmd.arg("-N");
        }
        let run = cmd
            .args(["-B", "-e", stmt])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let at = self
            .host
            .as_deref()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        let out = tokio::time::timeout(within, run)
            .await
            .map_err(|_| format!("{prog}{at} did not answer within {within:?}"))?
            .map_err(|e| format!("cannot run {prog} ({e}); set {}", self.what))?;
        if !out.status.success() {
            return Err(format!(
                "{prog}{at}: {}",
                crate::layout::escaped(String::from_utf8_lossy(&out.stderr).trim())
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run `stmt` (bounded by `within`): the output's lines, tab-separated
    /// fields, no column names.
    pub async fn lines(&self, stmt: &str, within: Duration) -> Result<Vec<String>, String> {
        Ok(self
            .run(false, stmt, within)
            .await?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Run `stmt`, whose last statement returns at most one row: that row
    /// by column name (empty for no row).
    pub async fn row(
        &self,
        stmt: &str,
        within: Duration,
    ) -> Result<BTreeMap<String, String>, String> {
        let text = self.run(true, stmt, within).await?;
        let mut lines = text.lines();
        let (Some(head), Some(values)) = (lines.next(), lines.next()) else {
            return Ok(BTreeMap::new());
        };
        Ok(head
            .split('\t')
            .map(str::to_string)
            .zip(values.split('\t').map(str::to_string))
            .collect())
    }
}
