//! MariaDB servers of the test's own: `mariadb-install-db` into a data
//! directory, `mariadbd` with a `my.cnf` of the settings
//! ansible/setup-replication.yml writes on AWS (binary log, GTIDs in strict
//! mode, full durability, read-only at boot, semi-sync replica side), plus
//! `conf.d/` for the role drop-in failover.yml writes. Used directly (one
//! server per port on loopback) and by the rig (one per namespace).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Proc, free_port, have, wait_for};

/// The role drop-in's path under a server's directory (the inventory's
/// `chainwatch_role_cnf`).
pub fn role_cnf(dir: &Path) -> PathBuf {
    dir.join("conf.d/zz-chainwatch-role.cnf")
}

/// The file holding the boot ID of the server's emulated host (the
/// inventory's `chainwatch_boot_id_file`).
pub fn boot_id_file(dir: &Path) -> PathBuf {
    dir.join("boot_id")
}

/// The server's host boots (again): a new boot ID.
pub fn new_boot(dir: &Path) {
    std::fs::write(boot_id_file(dir), format!("{}\n", uuid::Uuid::new_v4())).unwrap();
}

/// Create `dir/data` with `mariadb-install-db` and `dir/my.cnf`.
pub fn install(dir: &Path, server_id: u32, port: u16, bind: &str) {
    // A temporary directory of its own: concurrent installs collide in /tmp.
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let data = dir.join("data");
    let out = Command::new("mariadb-install-db")
        .args([
            "--no-defaults",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", dir.join("tmp").display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("my.cnf"),
        format!(
            "[mysqld]
datadir = {d}/data
socket = {d}/sock
pid-file = {d}/pid
tmpdir = {d}/tmp
port = {port}
bind-address = {bind}
server-id = {server_id}
user = root
skip-name-resolve
innodb-buffer-pool-size = 32M
log-bin = {d}/data/binlog
binlog-format = ROW
log-slave-updates
sync-binlog = 1
innodb-flush-log-at-trx-commit = 1
gtid-strict-mode = ON
read-only = ON
rpl-semi-sync-slave-enabled = ON
!includedir {d}/conf.d
"
        ),
    )
    .unwrap();
}

/// Start the server installed in `dir` as its unit would (the role guard
/// first), run through `wrap` (empty, or `ip netns exec NS`); returns once
/// `ready` answers.
pub fn spawn(dir: &Path, wrap: &[&str], ready: impl Fn() -> bool) -> Proc {
    if !boot_id_file(dir).exists() {
        new_boot(dir);
    }
    let guard = Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible/files/chainwatch-mysql-role");
    let out = Command::new(guard)
        .arg(role_cnf(dir))
        .arg(boot_id_file(dir))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (prog, pre) = match wrap.split_first() {
        Some((p, rest)) => (*p, rest.to_vec()),
        None => ("mariadbd", vec![]),
    };
    let mut cmd = Command::new(prog);
    cmd.args(pre);
    if !wrap.is_empty() {
        cmd.arg("mariadbd");
    }
    let child = cmd
        .arg(format!("--defaults-file={}", dir.join("my.cnf").display()))
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("error.log"))
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let proc = Proc(child);
    wait_for(
        &format!("mariadbd in {}", dir.display()),
        Duration::from_secs(60),
        || ready().then_some(()),
    );
    proc
}

/// One server on 127.0.0.1.
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
        let port = free_port("127.0.0.1");
        install(dir.path(), server_id, port, "127.0.0.1");
        let mut m = Mariadb {
            port,
            dir,
            proc: None,
        };
        m.restart();
        m
    }

    /// (Re)start the server in the same boot of its host.
    pub fn restart(&mut self) {
        self.proc = None;
        let port = self.port;
        self.proc = Some(spawn(self.dir.path(), &[], || {
            query_port(port, "SELECT 1").is_ok()
        }));
    }

    /// The server's host was stopped and started (as after a fence): a new
    /// boot, and the server starts again.
    pub fn reboot_host(&mut self) {
        self.proc = None;
        new_boot(self.dir.path());
        self.restart();
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
    query(&["-h127.0.0.1", "-uroot", &format!("-P{port}")], stmt)
}

/// Run SQL with the client options `opts`.
pub fn query(opts: &[&str], stmt: &str) -> Result<String, String> {
    let out = Command::new("mariadb")
        .args(["--no-defaults", "-N", "-B"])
        .args(opts)
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
