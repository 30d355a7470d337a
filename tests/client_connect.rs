//! `chainwatch client-connect FILE` as OpenVPN runs it: the common name and
//! the client's address in the environment, the answer file as the last
//! argument. Most cases check the layout alone (`vpn.verify_holder = false`);
//! the last checks the hub's admission list (the fabric fence).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::bin;

fn hook(config: &Path, common_name: Option<&[u8]>, file: &Path) -> Output {
    hook_from(config, common_name, None, file)
}

fn hook_from(config: &Path, common_name: Option<&[u8]>, ip: Option<&str>, file: &Path) -> Output {
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
    if let Some(ip) = ip {
        cmd.env("trusted_ip", ip);
    }
    cmd.output().expect("binary runs")
}

const LAYOUT_ONLY: &str = "[vpn]\nverify_holder = false\n";

#[test]
fn known_clients_get_their_layout_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chainwatch.toml");
    std::fs::write(&config, LAYOUT_ONLY).unwrap();
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
        format!(
            "{LAYOUT_ONLY}[layout]\nsubnet = \"10.8.0.0/24\"\nbackend_base = 50\nmax_backends = 2\n"
        ),
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
    std::fs::write(&config, LAYOUT_ONLY).unwrap();
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

#[test]
fn only_the_holder_is_admitted_from_its_own_address() {
    use chainwatch::admission::{Admission, Candidate};
    use chainwatch::layout::{Role, Slot};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chainwatch.toml");
    std::fs::write(
        &config,
        format!("[node]\nstate_dir = \"{}\"\n", dir.path().display()),
    )
    .unwrap();
    let file = dir.path().join("ccd");
    // No list yet (the hub has not read EC2): nobody.
    let out = hook_from(&config, Some(b"backend2"), Some("10.0.1.12"), &file);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not read EC2"));
    let be2 = |instance: &str, ip: [u8; 4], epoch, fenced| Candidate {
        instance: instance.into(),
        slot: Slot::new(Role::Backend, 2),
        up: true,
        fenced,
        epoch,
        addrs: vec![ip.into()],
    };
    // The old holder (fenced, still running) and the new one.
    let list = Admission::from_candidates(
        &[
            be2("i-0old0000", [10, 0, 1, 12], 3, true),
            be2("i-0new0000", [10, 0, 1, 13], 4, false),
        ],
        1,
    );
    std::fs::create_dir_all(dir.path().join("openvpn")).unwrap();
    list.store(&dir.path().join("openvpn/admission.json"))
        .unwrap();
    let out = hook_from(&config, Some(b"backend2"), Some("10.0.1.13"), &file);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "ifconfig-push 192.168.21.101 255.255.255.0\n"
    );
    for (cn, ip, why) in [
        // The fenced old holder, with the old ID's certificate.
        (
            &b"backend2"[..],
            Some("10.0.1.12"),
            "not the address of backend2's holder",
        ),
        // The new holder with another ID's certificate.
        (b"backend3", Some("10.0.1.13"), "no running instance"),
        // No address, or a bad one.
        (b"backend2", None, "is not an IPv4 address"),
        (b"backend2", Some("10.0.1.13\n"), "is not an IPv4 address"),
    ] {
        let refused = dir.path().join("refused");
        let out = hook_from(&config, Some(cn), ip, &refused);
        assert_eq!(out.status.code(), Some(1), "{ip:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{ip:?}: {err}");
        assert!(!refused.exists());
    }
    // The same decision during the TLS handshake (tls-verify), where a
    // refusal keeps the stale client from displacing the holder's session.
    let tls = |cn: &str, ip: &str, depth: &str| {
        Command::new(bin())
            .env_clear()
            .env("X509_0_CN", cn)
            .env("untrusted_ip", ip)
            .arg("--config")
            .arg(&config)
            .args(["tls-verify", depth, &format!("CN={cn}")])
            .output()
            .expect("binary runs")
    };
    assert!(tls("backend2", "10.0.1.13", "0").status.success());
    let out = tls("backend2", "10.0.1.12", "0");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("tls-verify: refused: backend2 from 10.0.1.12"),
        "{out:?}"
    );
    // The CA's certificate (depth 1) is OpenVPN's to verify.
    assert!(tls("backend2", "10.0.1.12", "1").status.success());
}
