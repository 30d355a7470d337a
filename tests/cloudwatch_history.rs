//! The CloudWatch Logs sink against moto (the real SDK client through the
//! endpoint override): EMF records written, and `chainwatch history` reading
//! them back.

mod common;

use chainwatch::event::TransitionEvent;
use chainwatch::layout::Role;
use chainwatch::shell::aws::cloudwatch::{ALERT_KEY, CloudWatchSink, EVENT_KEY};
use common::{Moto, event, log_records, logs_client, prerequisite};

fn history(endpoint: &str, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let config = dir.join("chainwatch.toml");
    std::fs::write(
        &config,
        "[announce]\ncloudwatch_log_group = \"/test/transitions\"\n",
    )
    .unwrap();
    common::chainwatch_aws(endpoint, &config, &[&["history"], args].concat())
}

#[tokio::test(flavor = "current_thread")]
async fn transitions_are_written_as_emf_and_read_back_by_history() {
    if !prerequisite(
        Moto::available(),
        "moto[server] in the virtualenv (.ci/run installs it)",
    ) {
        return;
    }
    let moto = Moto::start("127.0.0.1");
    let client = logs_client(&moto.endpoint).await;
    let group = "/test/transitions".to_string();
    let b2 = CloudWatchSink::new(
        client.clone(),
        group.clone(),
        "i-b2".into(),
        "chainwatch".into(),
    );
    let f3 = CloudWatchSink::new(
        client.clone(),
        group.clone(),
        "i-f3".into(),
        "chainwatch".into(),
    );
    let e1 = event(Role::Backend, 2, 1, 1, "i-b2", &["i-b1"]);
    let e2 = event(Role::Frontend, 3, 2, 1, "i-f3", &["i-f2"]);
    let e3 = event(Role::Backend, 3, 2, 2, "i-b2", &[]);
    b2.deliver(&e1).await.unwrap();
    f3.deliver(&e2).await.unwrap();
    b2.deliver(&e3).await.unwrap();
    // A second sink for the same stream finds group and stream existing.
    let again = CloudWatchSink::new(
        client.clone(),
        group.clone(),
        "i-b2".into(),
        "chainwatch".into(),
    );
    let e4 = event(Role::Backend, 2, 1, 3, "i-b2", &["i-b9"]);
    again.deliver(&e4).await.unwrap();

    // The records are EMF: metrics with the role as dimension.
    let out = client
        .get_log_events()
        .log_group_name(&group)
        .log_stream_name("i-b2")
        .send()
        .await
        .unwrap();
    assert_eq!(out.events().len(), 3);
    let rec: serde_json::Value = serde_json::from_str(out.events()[0].message().unwrap()).unwrap();
    let m = &rec["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(m["Namespace"], "chainwatch");
    assert_eq!(m["Dimensions"], serde_json::json!([["Role"]]));
    let names: Vec<&str> = m["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["FailoverMs", "DetectionMs", "FenceMs"]);
    assert_eq!(rec["Role"], "backend");
    assert_eq!(rec["FailoverMs"], e1.failover_ms());
    assert_eq!(rec["_aws"]["Timestamp"], e1.timings.identity_up_ms);
    assert_eq!(
        TransitionEvent::parse(rec[EVENT_KEY].to_string().as_bytes()).unwrap(),
        e1
    );

    // A heartbeat: a metric per role and instance, and no event.
    f3.heartbeat("frontend").await.unwrap();
    let beat = log_records(&moto.endpoint, &group, "i-f3")
        .await
        .into_iter()
        .find(|r| r.get("Heartbeat").is_some())
        .expect("a heartbeat record in i-f3's stream");
    assert_eq!(beat["Heartbeat"], 1);
    assert_eq!(beat["Instance"], "i-f3");
    assert_eq!(beat["Role"], "frontend");
    assert_eq!(
        beat["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([["Role", "Instance"]])
    );
    assert_eq!(
        beat["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
        "Heartbeat"
    );

    // An alert: an `Alerts` count with the kind as dimension, the alert in
    // full under its own key (history skips it: still 4 transitions).
    let alert = chainwatch::event::Alert {
        alert_id: "0b7e4f7a-3c1d-4e59-9a51-0e7c1f1b2a33".into(),
        kind: "fence_failed".into(),
        fleet: "rig".into(),
        node: "frontend3".into(),
        instance_id: "i-f3".into(),
        slot: "frontend2".into(),
        attempt: Some(2),
        detail: "StopInstances: 503".into(),
        at_ms: e2.timings.identity_up_ms + 1,
    };
    f3.deliver(&alert).await.unwrap();
    let rec = log_records(&moto.endpoint, &group, "i-f3")
        .await
        .into_iter()
        .find(|r| r.get(ALERT_KEY).is_some())
        .expect("an alert record in i-f3's stream");
    assert_eq!(rec["Alerts"], 1);
    assert_eq!(rec["Kind"], "fence_failed");
    assert_eq!(
        rec["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([["Kind"]])
    );
    assert_eq!(
        chainwatch::event::Alert::parse(rec[ALERT_KEY].to_string().as_bytes()).unwrap(),
        alert
    );

    let dir = tempfile::tempdir().unwrap();
    let out = history(&moto.endpoint, dir.path(), &["--json", "--since", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<TransitionEvent> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.len(), 4);
    let out = history(&moto.endpoint, dir.path(), &["--json", "--role", "backend"]);
    let backend: Vec<TransitionEvent> = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<&str> = backend.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort();
    let mut want = vec![
        e1.event_id.as_str(),
        e3.event_id.as_str(),
        e4.event_id.as_str(),
    ];
    want.sort();
    assert_eq!(ids, want);
    let out = history(&moto.endpoint, dir.path(), &["--role", "frontend"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("TIME (UTC)"), "{table}");
    assert!(
        table.contains("frontend") && table.contains("i-f3") && table.contains("i-f2"),
        "{table}"
    );
    assert!(!table.contains("i-b2"), "{table}");
    // A range that ends before the events finds nothing.
    let out = history(
        &moto.endpoint,
        dir.path(),
        &["--json", "--since", "3h", "--until", "2h"],
    );
    let none: Vec<TransitionEvent> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(none.is_empty());
    let out = history(&moto.endpoint, dir.path(), &["--since", "last tuesday"]);
    assert_eq!(out.status.code(), Some(1));
}
