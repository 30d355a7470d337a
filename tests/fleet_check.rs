//! `chainwatch fleet --check` against moto: passes on a healthy fleet and
//! flags each planted inconsistency (a hole, a double holder, a fenced
//! instance running) with Nagios exit codes; UNKNOWN when EC2 cannot be
//! read.

mod common;

use std::process::Output;

use aws_sdk_ec2::types::Tag;
use chainwatch::layout::{Role, Slot};
use common::{Moto, ec2_client, launch, output_text, prerequisite};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}
fn be(id: u32) -> Slot {
    Slot::new(Role::Backend, id)
}

fn fleet(endpoint: &str, dir: &std::path::Path, name: &str, args: &[&str]) -> Output {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!("[aws]\nfleet = \"{name}\"\napi_timeout = \"3000ms\"\n"),
    )
    .unwrap();
    common::chainwatch_aws(endpoint, &config, &[&["fleet"], args].concat())
}

#[tokio::test(flavor = "current_thread")]
async fn fleet_check_passes_a_healthy_fleet_and_flags_each_planted_fault() {
    if !prerequisite(
        Moto::available(),
        "moto[server] in the virtualenv (.ci/run installs it)",
    ) {
        return;
    }
    let moto = Moto::start("127.0.0.1");
    let ec2 = ec2_client(&moto.endpoint).await;
    let dir = tempfile::tempdir().unwrap();

    // Healthy: two frontends, three backends.
    let name = "healthy";
    for s in [fe(1), fe(2), be(1), be(2), be(3)] {
        launch(&ec2, name, s, &[]).await;
    }
    let o = fleet(&moto.endpoint, dir.path(), name, &["--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("the chain is consistent"),
        "{}",
        output_text(&o)
    );
    let o = fleet(&moto.endpoint, dir.path(), name, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["status"], "OK");
    assert_eq!(v["members"].as_array().unwrap().len(), 5);

    // A hole: backend2 missing while backend3 runs.
    let name = "hole";
    for s in [fe(1), fe(2), be(1), be(3)] {
        launch(&ec2, name, s, &[]).await;
    }
    let o = fleet(&moto.endpoint, dir.path(), name, &["--check"]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("nobody holds backend2"),
        "{}",
        output_text(&o)
    );

    // A double holder.
    let name = "double";
    for s in [fe(1), fe(2), fe(2)] {
        launch(&ec2, name, s, &[]).await;
    }
    let o = fleet(&moto.endpoint, dir.path(), name, &["--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("frontend2 has 2 holders"),
        "{}",
        output_text(&o)
    );

    // A fenced instance still running.
    let name = "fenced";
    launch(&ec2, name, fe(1), &[]).await;
    launch(&ec2, name, fe(2), &[]).await;
    let old = launch(&ec2, name, fe(3), &[]).await;
    ec2.create_tags()
        .resources(&old)
        .tags(
            Tag::builder()
                .key("chainwatch:state")
                .value("fenced")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let o = fleet(&moto.endpoint, dir.path(), name, &["--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    assert!(
        output_text(&o).contains(&format!("{old} is tagged fenced but running")),
        "{}",
        output_text(&o)
    );
    // Stopped, it is the normal aftermath of a failover.
    ec2.stop_instances()
        .instance_ids(&old)
        .send()
        .await
        .unwrap();
    let o = fleet(&moto.endpoint, dir.path(), name, &["--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));

    // EC2 unreachable: UNKNOWN.
    let o = fleet("http://127.0.0.1:9", dir.path(), "healthy", &["--check"]);
    assert_eq!(o.status.code(), Some(3), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("cannot read fleet"),
        "{}",
        output_text(&o)
    );
}
