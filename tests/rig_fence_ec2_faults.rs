//! Rig scenario: EC2 misbehaves while a real daemon fences. frontend2
//! dies; frontend3's StopInstances first never gets an answer (the proxy's
//! `hang`, twice), then is applied but its answer is lost (`lose`, once;
//! the proxy passes again after it). Each attempt ends within the daemon's
//! own `aws.api_timeout` (2 s here, not the SDK's default nor the tests'
//! clients' 3 s) plus a margin, as its log's time stamps show; a hung one
//! ends no earlier than that time-out after its StopInstances reached EC2
//! (the time-out ended it). No takeover comes before a confirmed fence, and
//! once EC2 answers, the fence is confirmed and frontend3 takes frontend2
//! over, once.

mod common;

use std::time::Duration;

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options};
use common::{json_lines, log_ms, rig_ready, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

/// The daemon's `aws.api_timeout` in this rig, in ms.
const API_TIMEOUT_MS: u64 = 2_000;

/// What an attempt may take beyond the time-out: its look-ups before the
/// StopInstances (two or three `DescribeInstances` to the emulator).
const MARGIN_MS: u64 = 1_000;

/// One fence attempt of frontend3's, from its log.
#[derive(Debug)]
struct Attempt {
    attempt: u64,
    /// "fencing frontend2".
    started_ms: u64,
    /// "FENCE FAILED for frontend2", or `None` for the confirmed one.
    failed_ms: Option<u64>,
    error: String,
}

/// frontend3's fence attempts of frontend2, in order, and when the fence
/// was confirmed and frontend2 taken over (the first of each).
fn attempts(log: &str) -> (Vec<Attempt>, Option<u64>, Vec<u64>) {
    let (mut out, mut confirmed, mut took) = (Vec::new(), None, Vec::new());
    for l in json_lines(log) {
        let m = l["message"].as_str().unwrap_or("");
        if m == "fencing frontend2" {
            out.push(Attempt {
                attempt: l["attempt"].as_u64().unwrap_or(0),
                started_ms: log_ms(&l),
                failed_ms: None,
                error: String::new(),
            });
        } else if m.starts_with("FENCE FAILED for frontend2") {
            let a = out
                .last_mut()
                .unwrap_or_else(|| panic!("a failure before any attempt: {l}"));
            assert!(a.failed_ms.is_none(), "two failures of one attempt: {l}");
            a.failed_ms = Some(log_ms(&l));
            a.error = l["error"].as_str().unwrap_or("").to_string();
        } else if m == "fence of frontend2 confirmed" {
            confirmed.get_or_insert(log_ms(&l));
        } else if m.starts_with("took over frontend2") || m.starts_with("taking over frontend2") {
            took.push(log_ms(&l));
        }
    }
    (out, confirmed, took)
}

#[tokio::test(flavor = "current_thread")]
async fn a_fence_whose_stop_hangs_or_loses_its_answer_is_bounded_by_the_api_timeout() {
    if !rig_ready(false) {
        return;
    }
    let f = Fleet::frontends_with(
        3,
        Options {
            api_timeout_ms: Some(API_TIMEOUT_MS),
            ..Options::default()
        },
    )
    .await;
    let api_timeout = f.settings(2).config.aws.api_timeout;
    assert_eq!(api_timeout, Duration::from_millis(API_TIMEOUT_MS));
    let failures = |f: &Fleet| {
        attempts(&f.log(2))
            .0
            .iter()
            .filter(|a| a.failed_ms.is_some())
            .count()
    };
    let still_frontend3 = |f: &Fleet, when: &str| {
        assert_eq!(
            f.status(2).map(|s| s["id"].clone()),
            Some(3.into()),
            "frontend3 took over {when}:\n{}",
            f.log(2)
        );
        assert_eq!(f.tun_addr(2), Some(f.layout.overlay_addr(fe(3))), "{when}");
    };

    // EC2 never answers a StopInstances: two attempts time out.
    f.proxy.mode("hang");
    f.kill(1);
    wait_for(
        "two fence attempts against a hung StopInstances to fail",
        Duration::from_secs(60),
        || (failures(&f) >= 2).then_some(()),
    );
    still_frontend3(&f, "while StopInstances hung");

    // The next stop is applied, but its answer is lost (then EC2 answers
    // again by itself).
    f.proxy.mode("lose");
    wait_for(
        "the attempt whose answer was lost to fail",
        Duration::from_secs(30),
        || (failures(&f) >= 3).then_some(()),
    );
    still_frontend3(&f, "after a lost answer, before EC2 answered again");

    f.wait_overlay(2, fe(2), 60);
    let log = wait_for(
        "frontend3 to log its takeover of frontend2",
        Duration::from_secs(10),
        || {
            let log = f.log(2);
            log.contains("\"message\":\"took over frontend2")
                .then_some(log)
        },
    );
    let (attempts, confirmed, took) = attempts(&log);
    let stops = f.proxy.stops();
    let mode_of = |s: &serde_json::Value| s["mode"].as_str().unwrap_or("").to_string();
    let hung = stops.iter().filter(|s| mode_of(s) == "hang").count();
    let lost = stops.iter().filter(|s| mode_of(s) == "lose").count();
    assert!(hung >= 2 && lost == 1, "StopInstances seen: {stops:?}");

    // Each failed attempt: ended by the daemon's own time-out. Matched
    // with the StopInstances EC2 received in it.
    let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.failed_ms.is_some()).collect();
    assert!(failed.len() >= 3, "{attempts:?}");
    for a in &failed {
        let end = a.failed_ms.unwrap();
        let took_ms = end - a.started_ms;
        let stop = stops
            .iter()
            .find(|s| {
                let at = s["at_ms"].as_u64().unwrap_or(0);
                at + 5 >= a.started_ms && at <= end + 5
            })
            .unwrap_or_else(|| panic!("no StopInstances during attempt {a:?}: {stops:?}"));
        let mode = mode_of(stop);
        let sent_ms = stop["at_ms"].as_u64().unwrap();
        eprintln!(
            "attempt {} ({mode}): {took_ms} ms, of which {} ms after its StopInstances reached EC2; {}",
            a.attempt,
            end.saturating_sub(sent_ms),
            a.error
        );
        assert!(
            mode == "hang" || mode == "lose",
            "attempt {a:?} failed with EC2 answering ({stop})"
        );
        assert!(
            took_ms <= API_TIMEOUT_MS + MARGIN_MS,
            "attempt {} took {took_ms} ms against a {mode} StopInstances, more than aws.api_timeout ({API_TIMEOUT_MS} ms) + {MARGIN_MS} ms",
            a.attempt
        );
        assert!(
            end + 50 >= sent_ms + API_TIMEOUT_MS,
            "attempt {} gave up {} ms after its StopInstances, before aws.api_timeout ({API_TIMEOUT_MS} ms): not the time-out ended it ({})",
            a.attempt,
            end.saturating_sub(sent_ms),
            a.error
        );
    }

    // No takeover without a confirmed fence: the confirmation came after
    // every failure, and the one takeover after the confirmation.
    let confirmed =
        confirmed.unwrap_or_else(|| panic!("frontend3 never confirmed its fence:\n{log}"));
    let last_failure = failed.iter().filter_map(|a| a.failed_ms).max().unwrap();
    assert!(confirmed >= last_failure, "{attempts:?}\n{log}");
    assert!(
        !took.is_empty() && took.iter().all(|t| *t >= confirmed),
        "a takeover before the fence was confirmed at {confirmed}: {took:?}\n{log}"
    );
    let took_over = json_lines(&log)
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("took over frontend2"))
        })
        .count();
    assert_eq!(took_over, 1, "{log}");
    let tags = f.stopped_instance(1).await;
    assert!(
        tags.contains(&("chainwatch:state".into(), "fenced".into())),
        "{tags:?}"
    );
}
