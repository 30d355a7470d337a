//! Rig scenario: planned switchovers of the hub. `chainwatch switchover`
//! on frontend1 hands its ID to frontend2 without a fence: the hub's
//! OpenVPN server and the Elastic IP move to frontend2, the old hub rejoins
//! at the tail of the chain (its instance keeps running), and every client
//! is back on the overlay by the time the command reports it. Then the new
//! hub is switched over in turn (the old one, rejoined, is a good member
//! again). `CHAINWATCH_SWITCHOVER_RUNS=n` (default 2) sets how many, and
//! prints their spread.

mod common;

use std::time::{Duration, Instant};

use common::fleet::Fleet;
use common::rig_ready;

/// The seconds a report line of `switchover` starts with.
fn secs(line: &str) -> f64 {
    let word = line.split_whitespace().next().unwrap_or_default();
    word.parse()
        .unwrap_or_else(|_| panic!("no time at the start of {line:?}"))
}

/// The node whose daemon holds frontend `id`.
fn holder_of(f: &Fleet, id: u64) -> Option<usize> {
    (0..f.nodes.len()).find(|&i| f.status(i).is_some_and(|s| s["id"] == id))
}

/// Wait until the chain is compact (IDs 1, 2, 3 held) and whole on the
/// overlay; the node holding each ID.
fn settled(f: &Fleet) -> [usize; 3] {
    common::wait_for(
        "the chain compact and the overlay whole",
        Duration::from_secs(60),
        || {
            let [Some(a), Some(b), Some(c)] = [1, 2, 3].map(|id| holder_of(f, id)) else {
                return None;
            };
            (f.overlay_whole(a, b) && f.overlay_whole(a, c)).then_some([a, b, c])
        },
    )
}

/// Run one switchover on `hub`: the report's times (new holder, overlay
/// whole), checked against what the rig sees.
async fn switch_over(f: &mut Fleet, hub: usize, successor: usize, other: usize) -> (f64, f64) {
    let pid = f.status(hub).unwrap()["pid"].clone();
    let stops = f.proxy.stops().len();
    let asked = Instant::now();
    let out = f.cli_in(hub, &["switchover", "--role", "frontend"]);
    let took = asked.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "switchover failed after {took:?}:\n{stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        f.recent_logs(40)
    );
    eprintln!("{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let line = |what: &str| {
        lines
            .iter()
            .find(|l| l.contains(what))
            .copied()
            .unwrap_or_else(|| panic!("no {what:?} in the report:\n{stdout}"))
    };
    assert!(line("frontend1 released").contains("frontend2 is told"));
    let held = line("frontend1 is held by");
    assert!(held.contains(&f.nodes[successor].instance), "{held}");
    let whole = line("the overlay is whole");
    assert!(whole.contains("all 3 members"), "{whole}");

    // Right away, with no more waiting: the command said the overlay is
    // whole, so it must be, through the new hub.
    assert_eq!(
        f.status(successor).unwrap()["id"],
        1,
        "frontend2 took frontend1"
    );
    assert_eq!(
        f.follow_eip().await,
        Some(successor),
        "the Elastic IP moved"
    );
    let old = f.status(hub).expect("the old hub's daemon answers");
    assert_eq!(old["pid"], pid, "started again in place");
    let tail = old["id"].as_u64().unwrap();
    assert!(tail >= 2, "the old hub rejoined at the tail, not {tail}");
    for i in [hub, other] {
        assert!(
            f.overlay_whole(successor, i),
            "node {i} is not back on the overlay though the command said so:\n{}",
            f.recent_logs(30)
        );
    }
    // Nobody was fenced: the old hub's instance runs on.
    assert_eq!(f.proxy.stops().len(), stops, "{:?}", f.proxy.stops());
    assert_eq!(f.instance(hub).await.0, "running");
    let log = f.log(successor);
    assert!(log.contains("handing its ID over"), "{log}");
    (secs(held), secs(whole))
}

#[tokio::test(flavor = "current_thread")]
async fn hub_switchovers_move_the_hub_and_its_clients_without_a_fence() {
    if !rig_ready(false) {
        return;
    }
    let runs = common::env_u64("CHAINWATCH_SWITCHOVER_RUNS", 2).max(1);
    let mut f = Fleet::frontends(3).await;
    f.watch_holders();
    let [hub, second, third] = settled(&f);
    assert_eq!((hub, second, third), (0, 1, 2));
    assert_eq!(f.follow_eip().await, Some(0));

    // Refused requests change nothing: the wrong role (refused by the
    // command), and a node nobody watches (refused by its daemon: nobody
    // would take frontend3 over).
    let refused = f.cli_in(third, &["switchover", "--role", "backend"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a backend"),
        "{refused:?}"
    );
    let refused = f.cli_in(third, &["switchover"]);
    let err = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success());
    assert!(err.contains("switchover refused"), "{err}");
    assert!(err.contains("frontend3"), "{err}");
    assert_eq!(f.status(third).unwrap()["id"], 3);
    assert_eq!(holder_of(&f, 1), Some(hub));

    let mut held = Vec::new();
    let mut whole = Vec::new();
    for run in 0..runs {
        let [hub, second, third] = if run == 0 {
            [hub, second, third]
        } else {
            settled(&f)
        };
        let (h, w) = switch_over(&mut f, hub, second, third).await;
        held.push(h);
        whole.push(w);
    }
    assert!(f.double_holders().is_empty(), "{:?}", f.double_holders());
    assert!(f.proxy.stops().is_empty(), "{:?}", f.proxy.stops());
    let spread = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!(
            "median {:.2} s, min {:.2} s, max {:.2} s",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        )
    };
    eprintln!(
        "hub switchover, {runs} runs: request -> frontend1 held by the old frontend2: {}; request -> overlay whole (every client back through the new hub): {}; no fence",
        spread(&mut held),
        spread(&mut whole)
    );
}
