//! `chainwatch client-connect FILE` as OpenVPN runs it: the common name in
//! the environment, the answer file as the last argument.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::bin;

fn hook(config: &Path, common_name: Option<&[u8]>, file: &Path) -> Output {
    use std::os::unix::ffi::OsStrExt;
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .arg("--config")
        .arg(config)
        .arg("client-connect")
        .arg(file);
    if let Some(cn) = common_name {
        cmd.env("common_name", std::ffi::OsStr::from_bytes(cn));
    }
    cmd.output().expect("binary runs")
}

#[test]
fn known_clients_get_their_layout_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chainwatch.toml");
    std::fs::write(&config, "").unwrap();
    let cases = [
        ("frontend2", "192.168.21.11"),
        ("frontend5", "192.168.21.14"),
        ("backend1", "192.168.21.100"),
        ("backend5", "192.168.21.104"),
    ];
    for (cn, ip) in cases {
        let file = dir.path().join(format!("ccd-{cn}"));
        let out = hook(&config, Some(cn.as_bytes()), &file);
        assert!(out.status.success(), "{cn}: {out:?}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("ifconfig-push {ip} 255.255.255.0\n")
        );
        assert!(out.stdout.is_empty() && out.stderr.is_empty());
    }
    // OpenVPN usually creates the file first: it is replaced, not appended to.
    let file = dir.path().join("existing");
    std::fs::write(&file, "").unwrap();
    assert!(hook(&config, Some(b"backend2"), &file).status.success());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "ifconfig-push 192.168.21.101 255.255.255.0\n"
    );
}

#[test]
fn the_layout_comes_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chainwatch.toml");
    std::fs::write(
        &config,
        "[layout]\nsubnet = \"10.8.0.0/24\"\nbackend_base = 50\nmax_backends = 2\n",
    )
    .unwrap();
    let file = dir.path().join("ccd");
    assert!(hook(&config, Some(b"backend2"), &file).status.success());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "ifconfig-push 10.8.0.51 255.255.255.0\n"
    );
    let out = hook(&config, Some(b"backend3"), &dir.path().join("no"));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn anything_else_is_refused_and_the_file_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chainwatch.toml");
    std::fs::write(&config, "").unwrap();
    let long = "frontend".repeat(40);
    let bad: Vec<(&str, Option<&[u8]>)> = vec![
        ("unset", None),
        ("empty", Some(b"")),
        ("unknown role", Some(b"database2")),
        ("ID 0", Some(b"frontend0")),
        ("past the maximum", Some(b"frontend6")),
        ("huge ID", Some(b"backend4294967297")),
        ("leading zero", Some(b"backend01")),
        ("other case", Some(b"Backend2")),
        ("upper case", Some(b"BACKEND2")),
        ("trailing space", Some(b"backend2 ")),
        ("leading space", Some(b" backend2")),
        ("newline", Some(b"backend2\nifconfig-push 1.2.3.4")),
        ("tab", Some(b"back\tend2")),
        ("escape", Some(b"backend2\x1b[31m")),
        ("path", Some(b"../backend2")),
        ("slash", Some(b"backend/2")),
        ("dot", Some(b"backend2.internal")),
        ("not UTF-8", Some(b"backend\xff2")),
        ("overlong", Some(long.as_bytes())),
        ("the server's own name", Some(b"frontend1")),
    ];
    for (what, cn) in bad {
        for existing in [false, true] {
            let file = dir.path().join("answer");
            let _ = std::fs::remove_file(&file);
            if existing {
                std::fs::write(&file, "previous").unwrap();
            }
            let out = hook(&config, cn, &file);
            assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
            let stderr = String::from_utf8(out.stderr).unwrap();
            assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr:?}");
            assert!(
                stderr.starts_with("chainwatch client-connect: refused: "),
                "{what}: {stderr}"
            );
            assert!(
                !stderr.contains('\x1b'),
                "{what}: control characters echoed"
            );
            if existing {
                assert_eq!(
                    std::fs::read_to_string(&file).unwrap(),
                    "previous",
                    "{what}"
                );
            } else {
                assert!(!file.exists(), "{what}: file created");
            }
        }
    }
    // Nothing else was left in the directory (no temporary files).
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_bad_config_refuses_every_client() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chainwatch.toml");
    std::fs::write(&config, "[layout]\nsubnett = \"x\"\n").unwrap();
    let file = dir.path().join("answer");
    let out = hook(&config, Some(b"backend2"), &file);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("subnett"), "{stderr}");
    assert!(!file.exists());
}
