//! MariaDB servers of the test's own: `mariadb-install-db` into a temporary
//! data directory, `mariadbd` on its own port with binary logging and GTIDs,
//! killed and removed on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Proc, free_port, have, wait_for};

/// One server.
pub struct Mariadb {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub proc: Option<Proc>,
}

impl Mariadb {
    /// Whether the server binaries are installed.
    pub fn available() -> bool {
        have("mariadbd") && have("mariadb-install-db") && have("mariadb")
    }

    /// Install and start a server with `server_id`.
    pub fn start(server_id: u32) -> Mariadb {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port("127.0.0.1");
        let mut m = Mariadb {
            port,
            dir,
            proc: None,
        };
        m.spawn(server_id);
        m
    }

    fn spawn(&mut self, server_id: u32) {
        let d = self.dir.path();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--server-id={server_id}"))
            .arg(format!("--log-bin={}", d.join("data/binlog").display()))
            .args([
                "--user=root",
                "--bind-address=127.0.0.1",
                "--binlog-format=ROW",
                "--log-slave-updates",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("error.log")).unwrap())
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        let port = self.port;
        wait_for(
            &format!("mariadbd on port {port}"),
            Duration::from_secs(60),
            || query_port(port, "SELECT 1").ok(),
        );
    }

    /// The server dies.
    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// Run SQL, returning tab-separated rows without headers.
    pub fn sql(&self, stmt: &str) -> String {
        query_port(self.port, stmt).unwrap_or_else(|e| panic!("{stmt}: {e}"))
    }

    /// `SHOW SLAVE STATUS` as `Field: value` lines (empty when not a replica).
    pub fn replica_status(&self) -> String {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-h127.0.0.1", "-uroot"])
            .arg(format!("-P{}", self.port))
            .arg("-e")
            .arg("SHOW SLAVE STATUS\\G")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| l.contains(": "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Where its files are.
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// Run SQL on 127.0.0.1:`port` as root.
pub fn query_port(port: u16, stmt: &str) -> Result<String, String> {
    let out = Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-uroot", "-N", "-B"])
        .arg(format!("-P{port}"))
        .arg("-e")
        .arg(stmt)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}
