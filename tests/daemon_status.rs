//! `chainwatch run --observe` serves its state on the status socket;
//! `chainwatch status` prints it; SIGHUP reloads the config (probe settings
//! live); SIGTERM stops the daemon cleanly.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{bin, is_root, prerequisite, wait_for};

#[test]
fn status_shows_the_node_and_sigterm_stops_it() {
    if !prerequisite(is_root(), "root (for an ICMP socket)") {
        return;
    }
    let node = common::LocalNode::new("frontend", 1, "");
    let (config, sock) = (node.config.clone(), node.sock.clone());
    let mut daemon = node.spawn();
    let status = |json: bool| {
        let mut c = Command::new(bin());
        c.arg("--config").arg(&config).arg("status");
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let report: serde_json::Value = wait_for("the status socket", Duration::from_secs(10), || {
        let out = status(true);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    });
    assert_eq!(report["role"], "frontend");
    assert_eq!(report["id"], 1);
    assert_eq!(report["overlay_addr"], "192.168.21.1");
    assert_eq!(report["phase"], "idle");
    assert_eq!(report["peer"], serde_json::Value::Null);
    assert_eq!(report["mode"], "observe");
    assert_eq!(report["identity_source"], "user-data");
    assert_eq!(report["pending_events"], 0);
    assert!(["dgram", "raw"].contains(&report["icmp_socket"].as_str().unwrap()));
    let table = String::from_utf8(status(false).stdout).unwrap();
    assert!(table.contains("role             frontend"), "{table}");
    assert!(table.contains("watching         nobody (ID 1)"), "{table}");
    // As a Nagios plugin.
    let nagios = || {
        Command::new(bin())
            .arg("--config")
            .arg(&config)
            .args(["status", "--check"])
            .output()
            .unwrap()
    };
    let check = nagios();
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    assert!(
        String::from_utf8_lossy(&check.stdout).starts_with("OK: frontend1 (observe), phase idle"),
        "{check:?}"
    );
    // Root-only socket.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second daemon on the same socket refuses to start.
    let second = Command::new(bin())
        .arg("--config")
        .arg(&config)
        .args(["run", "--observe"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already serving"));

    let pid = daemon.0.id();
    // SIGHUP: a probe setting changes live, a VPN setting is named as
    // needing a restart, a bad file changes nothing.
    assert_eq!(report["misses_to_declare"], 3);
    let base = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{base}[probe]\nmisses = 5\n[vpn]\nport = 1195\n"),
    )
    .unwrap();
    common::sh(&format!("kill -HUP {pid}"));
    wait_for("misses 5 after SIGHUP", Duration::from_secs(10), || {
        let out = status(true);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (r["misses_to_declare"] == 5).then_some(())
    });
    std::fs::write(&config, format!("{base}[probe]\nmisses = 0\n")).unwrap();
    common::sh(&format!("kill -HUP {pid}"));
    wait_for(
        "the refused reload in the log",
        Duration::from_secs(10),
        || node.log().contains("reload refused").then_some(()),
    );
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "SIGHUP ended the daemon"
    );
    // (`status` reads the file too: make it valid again, without a HUP.)
    std::fs::write(&config, &base).unwrap();
    let out = status(true);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["misses_to_declare"], 5,
        "a refused reload changed the settings"
    );
    let logs = node.log();
    assert!(
        logs.contains("[vpn] changed but cannot change live"),
        "{logs}"
    );

    common::sh(&format!("kill -TERM {pid}"));
    let code = wait_for("the daemon to exit", Duration::from_secs(5), || {
        daemon.0.try_wait().unwrap()
    });
    assert!(code.success(), "{code:?}");
    assert!(!sock.exists(), "status socket removed on shutdown");
    let logs = node.log();
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(logs.contains("SIGTERM received"), "{logs}");
    let out = status(true);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `chainwatch run` running"));
    let check = nagios();
    assert_eq!(check.status.code(), Some(2), "{check:?}");
    assert!(
        String::from_utf8_lossy(&check.stdout).starts_with("CRITICAL: chainwatch does not answer"),
        "{check:?}"
    );
}
