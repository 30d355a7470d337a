//! Bad configuration and bad user-data stop every command with a clear
//! message and a non-zero exit, before anything is started.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::bin;

fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .env_remove("CHAINWATCH_CONFIG")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("hosts"), "").unwrap();
    common::node_config(dir, &dir.join("status.sock"), extra)
}

#[test]
fn unknown_keys_and_bad_values_stop_the_daemon_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, want) in [
        ("[probe]\nmises = 3\n", "mises"),
        ("[probe]\ntimeout = \"2000ms\"\n", "probe.timeout"),
        (
            "[probe]\ntimeout = \"2 fortnights\"\n",
            "expected a duration",
        ),
        // 0.1's spelling of a duration: the error says what to write now.
        (
            "[probe]\ninterval_ms = 500\n",
            "rename `interval_ms` to `interval`",
        ),
        ("[layout]\nfrontend_base = 99\n", "overlap"),
        ("[layout]\nsubnet = \"192.168.21.0/33\"\n", "subnet"),
    ] {
        let config = write_config(dir.path(), extra);
        for args in [&["run", "--observe"][..], &["hosts"][..]] {
            let out = run(&config, args);
            assert_eq!(out.status.code(), Some(1), "{extra}: {out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(want), "{extra}: {stderr}");
            assert!(out.stdout.is_empty());
        }
        assert!(!dir.path().join("status.sock").exists());
        assert!(!dir.path().join("state").exists());
    }
}

#[test]
fn a_missing_explicit_config_is_an_error() {
    let out = run(Path::new("/nonexistent/chainwatch.toml"), &["hosts"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/chainwatch.toml"));
}

#[test]
fn malformed_user_data_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    for (ud, want) in [
        ("#cloud-config\n", "no `# chainwatch"),
        (
            "#cloud-config\n# chainwatch: role=backend id=2 az=a\n",
            "unknown key \"az\"",
        ),
        (
            "#cloud-config\n# chainwatch: role=backend id=9\n",
            "user-data line 2",
        ),
    ] {
        std::fs::write(dir.path().join("user-data"), ud).unwrap();
        let out = run(&config, &["run", "--observe"]);
        assert_eq!(out.status.code(), Some(1), "{ud}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{ud}: {stderr}");
        assert!(!dir.path().join("status.sock").exists());
    }
}

#[test]
fn active_mode_without_an_instance_id_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    std::fs::write(
        dir.path().join("user-data"),
        "#cloud-config\n# chainwatch: role=backend id=2\n",
    )
    .unwrap();
    let out = run(&config, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("identity.instance_id"), "{stderr}");
    assert!(!dir.path().join("status.sock").exists());
}

#[test]
fn hosts_prints_the_layout_block() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[layout]\npublic_address = \"203.0.113.10\"\n");
    let out = run(&config, &["hosts"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 13, "{text}");
    assert_eq!(lines[1], "192.168.21.1\tfrontend1.internal");
    assert_eq!(lines[2], "192.168.21.11\tfrontend2.internal");
    assert_eq!(lines[6], "192.168.21.100\tbackend1.internal");
    assert_eq!(lines[11], "203.0.113.10\tfrontend1");
}

#[test]
fn openvpn_without_the_tls_crypt_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    // A complete PKI for the backends, except ta.key.
    let pki = dir.path().join("pki");
    for sub in ["issued", "private"] {
        std::fs::create_dir_all(pki.join(sub)).unwrap();
    }
    std::fs::write(pki.join("ca.crt"), "x").unwrap();
    for id in 1..=5 {
        std::fs::write(pki.join(format!("issued/backend{id}.crt")), "x").unwrap();
        std::fs::write(pki.join(format!("private/backend{id}.key")), "x").unwrap();
    }
    let config = write_config(
        dir.path(),
        &format!(
            "instance_id = \"i-0123abcd\"\n[vpn]\npki_dir = \"{}\"\n",
            pki.display()
        ),
    );
    std::fs::write(
        dir.path().join("user-data"),
        "#cloud-config\n# chainwatch: role=backend id=2\n",
    )
    .unwrap();
    let out = run(&config, &["run"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ta.key") && stderr.contains("openvpn --genkey secret ta.key"),
        "{stderr}"
    );
    assert!(!dir.path().join("status.sock").exists());
    assert!(!dir.path().join("state").exists());
}
