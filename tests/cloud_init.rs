//! Rendered user-data for each role and a few IDs: cloud-init's own schema
//! check accepts it, it stays under EC2's 16 KB, and chainwatch's boot code
//! finds its index in it.

mod common;

use std::process::Command;

use chainwatch::layout::{Layout, Role, Slot};
use common::{bin, have, prerequisite};

fn render(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .arg("--config")
        .arg(config)
        .arg("render-user-data")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn user_data_validates_with_cloud_init_and_carries_the_index() {
    if !prerequisite(
        have("cloud-init"),
        "Debian's cloud-init (for `cloud-init schema`)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A realistic fleet config, with broker credentials and an Elastic IP.
    let config = dir.path().join("chainwatch.toml");
    std::fs::write(
        &config,
        "[announce]\nrabbitmq_urls = [\"amqps://cw:secret@mq.internal:5671/chainwatch\"]\n[aws]\nfleet = \"prod\"\nelastic_ip_allocation = \"eipalloc-0123456789abcdef0\"\n[layout]\npublic_address = \"203.0.113.10\"\n",
    )
    .unwrap();
    let layout = Layout::default();
    let sources: [&[&str]; 3] = [
        &["--package-url", "s3://releases/chainwatch_0.1.0_amd64.deb"],
        &[
            "--package-url",
            "https://example.invalid/chainwatch.deb",
            "--pki-source",
            "s3://pki-bucket/chainwatch/",
        ],
        &["--pki-source", "baked"],
    ];
    for (role, id) in [
        (Role::Frontend, 1),
        (Role::Frontend, 2),
        (Role::Frontend, 5),
        (Role::Backend, 1),
        (Role::Backend, 2),
        (Role::Backend, 4),
    ] {
        for extra in sources {
            let id_s = id.to_string();
            let mut args = vec!["--role", role.as_str(), "--id", &id_s];
            args.extend_from_slice(extra);
            let out = render(&args, &config);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = out.stdout;
            assert!(text.len() < 16 * 1024, "{role}{id}: {} bytes", text.len());
            let file = dir.path().join(format!("{role}{id}.yaml"));
            std::fs::write(&file, &text).unwrap();
            let check = Command::new("cloud-init")
                .args(["schema", "--config-file"])
                .arg(&file)
                .output()
                .unwrap();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
            assert!(
                check.status.success() && said.contains("Valid cloud-config"),
                "{role}{id}: {said}"
            );
            assert_eq!(
                chainwatch::userdata::parse(&text, &layout),
                Ok(Slot::new(role, id)),
                "{role}{id}"
            );
            let text = String::from_utf8(text).unwrap();
            // The broker password stays out: the node fetches it with
            // the PKI, and the operator is told where to store it.
            assert!(
                !text.contains("secret"),
                "{role}{id}: the password is in the user-data"
            );
            assert!(text.contains("amqps://cw@mq.internal:5671/chainwatch"));
            assert!(String::from_utf8_lossy(&out.stderr).contains("broker.password"));
            assert!(text.contains("fleet = \"prod\""));
            assert!(text.contains("203.0.113.10\tfrontend1"));
            assert_eq!(text.contains("mariadb-server"), role == Role::Backend);
        }
    }
    // An ID outside the layout is refused.
    let out = render(&["--role", "backend", "--id", "9"], &config);
    assert_eq!(out.status.code(), Some(1));
}
