//! `chainwatch config check`: passes with a complete PKI and EC2 allowing
//! the fence (moto answers the DryRun calls), fails clearly when the EC2
//! proxy denies StopInstances, and names a missing PKI file.

mod common;

use std::path::Path;
use std::process::Output;

use chainwatch::layout::{Role, Slot};
use common::{Ec2Proxy, Moto, ec2_client, launch, output_text, prerequisite};

fn config_check(endpoint: &str, config: &Path, args: &[&str]) -> Output {
    common::chainwatch_aws(endpoint, config, &[&["config", "check"], args].concat())
}

#[tokio::test(flavor = "current_thread")]
async fn config_check_proves_the_fence_and_fails_clearly_when_iam_denies_it() {
    if !prerequisite(
        Moto::available(),
        "moto[server] in the virtualenv (.ci/run installs it)",
    ) {
        return;
    }
    let moto = Moto::start("127.0.0.1");
    let ec2 = ec2_client(&moto.endpoint).await;
    let target = launch(&ec2, "cc", Slot::new(Role::Backend, 2), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    common::sh(&format!(
        "{}/openvpn/make-test-pki.sh {} >/dev/null",
        env!("CARGO_MANIFEST_DIR"),
        pki.display()
    ));
    let config = dir.path().join("chainwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nfleet = \"cc\"\napi_timeout = \"3000ms\"\n[vpn]\npki_dir = \"{}\"\ntemplate_dir = \"{}/openvpn\"\n",
            pki.display(),
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();

    let o = config_check(&moto.endpoint, &config, &["--role", "backend"]);
    assert!(o.status.success(), "{}", output_text(&o));
    for line in [
        "ok    PKI for backend",
        &format!("ok    ec2:StopInstances on {target} (DryRun)"),
        &format!("ok    ec2:CreateTags on {target} (DryRun)"),
        "config check passed",
    ] {
        assert!(
            output_text(&o).contains(line),
            "{line:?} missing:\n{}",
            output_text(&o)
        );
    }
    // A DryRun stop stops nothing.
    let state = ec2
        .describe_instances()
        .instance_ids(&target)
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_string();
    assert_eq!(state, "running");

    // IAM denies StopInstances (the proxy answers UnauthorizedOperation).
    let proxy = Ec2Proxy::start(&moto.endpoint);
    proxy.mode("denystop");
    let o = config_check(&proxy.endpoint, &config, &["--role", "backend"]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let out = output_text(&o);
    assert!(
        out.contains(&format!(
            "FAIL  ec2:StopInstances on {target}: UnauthorizedOperation"
        )),
        "{out}"
    );
    assert!(out.contains("chainwatch iam-policy --role"), "{out}");
    assert!(
        out.contains("config check failed: ec2:StopInstances"),
        "{out}"
    );

    // A missing key is named.
    std::fs::remove_file(pki.join("private/backend3.key")).unwrap();
    let o = config_check(&moto.endpoint, &config, &["--role", "backend", "--offline"]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("backend3.key"),
        "{}",
        output_text(&o)
    );
}
