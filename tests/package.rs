//! The Debian package (built by `cargo deb`; `.ci/run` builds it before the
//! tests): its contents, a clean install (the binary runs `--version` and
//! `hosts`, `systemd-analyze verify` accepts both units), a clean removal
//! and purge. Installs on the machine it runs on: root only.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{have, is_root, prerequisite, sh};

fn deb() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHAINWATCH_DEB") {
        return Some(PathBuf::from(p));
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max()
}

fn run(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_package_installs_runs_and_removes_cleanly() {
    let deb = deb();
    if !prerequisite(
        deb.is_some() && is_root() && have("dpkg") && have("systemd-analyze"),
        "a built package (cargo deb --profile dev -o target/debian/), root, dpkg and systemd-analyze",
    ) {
        return;
    }
    let deb = deb.unwrap();
    let contents = sh(&format!("dpkg-deb -c {}", deb.display()));
    for f in [
        "./usr/bin/chainwatch",
        "./lib/systemd/system/chainwatch.service",
        "./lib/systemd/system/chainwatch-worker.service",
        "./usr/share/doc/chainwatch/examples/chainwatch.toml",
        "./usr/share/chainwatch/openvpn/server.conf.tmpl",
        "./usr/share/chainwatch/openvpn/client.conf.tmpl",
        "./usr/share/chainwatch/cloud-init/user-data.yaml.tmpl",
        "./usr/share/chainwatch/ansible/failover.yml",
        "./usr/share/chainwatch/ansible/tasks/follow.yml",
        "./usr/share/chainwatch/ansible/tasks/drain.yml",
        "./usr/share/chainwatch/ansible/filter_plugins/chainwatch_gtid.py",
        "./usr/share/chainwatch/ansible/files/chainwatch-mysql-role",
        "./usr/share/chainwatch/ansible/inventory/aws_ec2.yml",
        "./usr/share/chainwatch/iam/chainwatch-frontend-policy.json",
        "./usr/share/chainwatch/iam/chainwatch-backend-policy.json",
        "./usr/share/doc/chainwatch/examples/chainwatch.minimal.toml",
        "./usr/share/bash-completion/completions/chainwatch",
        "./usr/share/zsh/vendor-completions/_chainwatch",
        "./usr/share/fish/vendor_completions.d/chainwatch.fish",
        "./usr/share/man/man1/chainwatch.1.gz",
        "./usr/share/man/man1/chainwatch-fleet.1.gz",
        "./usr/share/man/man1/chainwatch-maint.1.gz",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(f)),
            "{f} missing from the package:\n{contents}"
        );
    }
    let info = sh(&format!("dpkg-deb -f {} Depends", deb.display()));
    assert!(info.contains("openvpn"), "{info}");

    // Install (dependencies are on the CI machine already; dpkg alone, so
    // nothing else changes).
    // A config as cloud-init writes it (root:root 0640), unless the
    // machine has one: the package gives it to the worker's group.
    let config = std::path::Path::new("/etc/chainwatch/chainwatch.toml");
    let planted = !config.exists();
    if planted {
        std::fs::create_dir_all("/etc/chainwatch").unwrap();
        std::fs::write(config, "[aws]\nfleet = \"pkgtest\"\n").unwrap();
        run(
            "chown root:root /etc/chainwatch/chainwatch.toml && chmod 0640 /etc/chainwatch/chainwatch.toml",
        );
    }
    let (ok, out) = run(&format!("dpkg -i {}", deb.display()));
    let (_, owner) = run("stat -c '%U:%G %a' /etc/chainwatch/chainwatch.toml");
    if planted {
        let _ = std::fs::remove_file(config);
    }
    assert!(ok, "dpkg -i failed:\n{out}");
    assert_eq!(
        owner.trim(),
        "root:chainwatch 640",
        "the config's owner and mode after install"
    );
    let result = std::panic::catch_unwind(|| {
        let (ok, out) = run("/usr/bin/chainwatch --version");
        assert!(ok && out.starts_with("chainwatch "), "{out}");
        let (ok, out) = run("env -u CHAINWATCH_CONFIG /usr/bin/chainwatch hosts");
        assert!(ok, "{out}");
        assert!(out.contains("192.168.21.100\tbackend1.internal"), "{out}");
        let (ok, out) = run("getent passwd chainwatch");
        assert!(ok, "the worker's user exists: {out}");
        let (ok, out) = run(
            "systemd-analyze verify /lib/systemd/system/chainwatch.service /lib/systemd/system/chainwatch-worker.service",
        );
        assert!(ok, "systemd-analyze verify:\n{out}");
        assert!(
            !out.contains("chainwatch.service:") && !out.contains("chainwatch-worker.service:"),
            "systemd-analyze complains about the units:\n{out}"
        );
        // Sandboxing: each unit's exposure is at most 3.0 (the book's
        // docs/src/reference/units.md reports the figures).
        for unit in ["chainwatch.service", "chainwatch-worker.service"] {
            let (ok, out) = run(&format!(
                "systemd-analyze security --offline=true --threshold=30 /lib/systemd/system/{unit}"
            ));
            assert!(ok, "{unit} is exposed above 3.0:\n{out}");
        }
    });
    // Remove and purge whatever happened above.
    let (ok_r, out_r) = run("dpkg -r chainwatch");
    let (ok_p, out_p) = run("dpkg -P chainwatch");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(ok_r, "dpkg -r failed:\n{out_r}");
    assert!(ok_p, "dpkg -P failed:\n{out_p}");
    for f in [
        "/usr/bin/chainwatch",
        "/lib/systemd/system/chainwatch.service",
        "/usr/share/chainwatch",
        "/var/lib/chainwatch-worker",
    ] {
        assert!(!std::path::Path::new(f).exists(), "{f} left behind");
    }
    let (user_left, _) = run("getent passwd chainwatch");
    assert!(!user_left, "the worker's user is removed on purge");
    let (ok, out) = run("dpkg -s chainwatch");
    assert!(!ok, "still installed: {out}");
}
