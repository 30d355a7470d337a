//! Fence and take over for real: chainwatch in network namespaces with a real
//! OpenVPN overlay (Debian's openvpn) and moto as EC2.
//!
//! Needs root, iproute2, openvpn, openssl and moto; outside CI it skips
//! loudly without them. `CHAINWATCH_VPN_RUNS=n` repeats the frontend2 case n
//! times and prints the median and spread of kill -> address answering.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::Fleet;
use common::{Moto, have, is_root, prerequisite, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}
fn be(id: u32) -> Slot {
    Slot::new(Role::Backend, id)
}

fn ready() -> bool {
    prerequisite(
        is_root()
            && have("ip")
            && have("ping")
            && have("openvpn")
            && have("openssl")
            && Moto::available(),
        "root, iproute2, ping, openvpn, openssl and moto (.ci/run installs them)",
    )
}

/// Samples every namespace's tun address and records any address held by
/// two namespaces at once.
struct Watchdog {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Watchdog {
    fn start(namespaces: Vec<String>) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut violations = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let mut seen: Vec<(String, String)> = Vec::new();
                for ns in &namespaces {
                    let out = std::process::Command::new("ip")
                        .args(["-n", ns, "-4", "-o", "addr", "show", "dev", "cwvpn"])
                        .output();
                    if let Ok(out) = out {
                        let text = String::from_utf8_lossy(&out.stdout);
                        if let Some(a) = text.split_whitespace().skip_while(|w| *w != "inet").nth(1)
                        {
                            seen.push((ns.clone(), a.to_string()));
                        }
                    }
                }
                for (i, (ns, a)) in seen.iter().enumerate() {
                    for (ns2, a2) in &seen[i + 1..] {
                        if a == a2 {
                            violations.push(format!("{ns} and {ns2} both hold {a}"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            violations
        });
        Watchdog {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// frontend1, frontend2, frontend3 and backend1 (the third party that checks
/// reachability) all up on the overlay.
async fn chain() -> Fleet {
    let mut f = Fleet::new(&[fe(1), fe(2), fe(3), be(1)]).await;
    f.start(0);
    let started = Instant::now();
    while f.follow_eip().await != Some(0) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "frontend1 did not take the Elastic IP at start:\n{}",
            f.log(0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 1..4 {
        f.start(i);
    }
    for (i, slot) in [fe(1), fe(2), fe(3), be(1)].into_iter().enumerate() {
        f.wait_overlay(i, slot, 60);
    }
    // frontend3 watches frontend2 and sees it answer.
    wait_for(
        "frontend3 probing frontend2",
        Duration::from_secs(20),
        || {
            f.status(2)
                .filter(|s| s["last_rtt_ms"].is_number() && s["misses"] == 0)
        },
    );
    f
}

async fn frontend2_dies_once() -> Duration {
    let f = chain().await;
    let watch = Watchdog::start(f.nodes.iter().map(|n| n.ns.clone()).collect());
    let addr = f.layout.overlay_addr(fe(2));
    wait_for(
        "frontend2 answering backend1 before the kill",
        Duration::from_secs(20),
        || f.ping(3, addr, 500).then_some(()),
    );

    let killed = Instant::now();
    f.kill(1);
    // The address answers again once frontend3 holds it.
    wait_for(
        "192.168.21.11 answering again",
        Duration::from_secs(60),
        || f.ping(3, addr, 200).then_some(()),
    );
    let took = killed.elapsed();
    assert_eq!(f.tun_addr(2), Some(addr), "frontend3's namespace holds it");

    // frontend3 is now frontend2, watching the hub; its transition names
    // the fenced instance.
    let s = wait_for(
        "frontend3's status to say frontend2",
        Duration::from_secs(10),
        || f.status(2).filter(|s| s["id"] == 2),
    );
    assert_eq!(s["role"], "frontend");
    assert_eq!(s["peer"], "frontend1");
    let t = &s["last_transition"];
    assert_eq!(t["from_id"], 3);
    assert_eq!(t["to_id"], 2);
    assert_eq!(t["fenced_instances"][0], f.nodes[1].instance.as_str());
    // EC2 agrees: frontend2's instance is stopped and tagged fenced; the new
    // holder's tags say ID 2 with a higher epoch.
    // The power fence completes in the background.
    let tags = f.stopped_instance(1).await;
    assert!(tags.contains(&("chainwatch:state".into(), "fenced".into())));
    let (_, tags) = f.instance(2).await;
    assert!(tags.contains(&("chainwatch:id".into(), "2".into())));
    assert!(
        tags.contains(&("chainwatch:epoch".into(), "1".into())),
        "{tags:?}"
    );
    // The state file survives a restart.
    let state = std::fs::read_to_string(f.node_dir(2).join("state/state.json")).unwrap();
    assert!(state.contains("\"id\": 2"), "{state}");
    // The chain is whole: frontend1 still answers, the other clients too.
    assert!(f.ping(3, f.layout.overlay_addr(fe(1)), 1000));
    assert!(f.ping(2, f.layout.overlay_addr(be(1)), 1000));
    let violations = watch.finish();
    assert!(violations.is_empty(), "{violations:?}");
    took
}

#[tokio::test(flavor = "current_thread")]
async fn frontend3_fences_a_dead_frontend2_and_answers_as_frontend2() {
    if !ready() {
        return;
    }
    let runs: usize = std::env::var("CHAINWATCH_VPN_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut times = Vec::new();
    for _ in 0..runs {
        times.push(frontend2_dies_once().await);
    }
    times.sort();
    let secs: Vec<String> = times
        .iter()
        .map(|t| format!("{:.2}", t.as_secs_f64()))
        .collect();
    eprintln!(
        "kill frontend2 -> 192.168.21.11 answering: runs {runs}, median {:.2} s, min {:.2} s, max {:.2} s ({})",
        times[times.len() / 2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
        secs.join(" ")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn frontend2_becomes_the_server_when_frontend1_dies() {
    if !ready() {
        return;
    }
    let mut f = chain().await;
    let watch = Watchdog::start(f.nodes.iter().map(|n| n.ns.clone()).collect());
    let hub = f.layout.overlay_addr(fe(1));
    let killed = Instant::now();
    f.kill(0);
    // frontend2 fences frontend1 (underlay silent, EC2 answering), becomes
    // the server and associates the Elastic IP, which the harness moves to
    // its namespace as EC2 says.
    while f.follow_eip().await != Some(1) {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the Elastic IP did not move to frontend2:\n{}",
            f.log(1)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // All clients reconnect to it; the overlay works again. frontend2 is
    // vacant now, so frontend3 moves down into it.
    f.wait_overlay(1, fe(1), 60);
    f.wait_overlay(3, be(1), 60);
    f.wait_overlay(2, fe(2), 60);
    wait_for(
        "backend1 reaching the new frontend1",
        Duration::from_secs(60),
        || f.ping(3, hub, 500).then_some(()),
    );
    eprintln!(
        "kill frontend1 -> overlay working through the new server: {:.2} s",
        killed.elapsed().as_secs_f64()
    );
    wait_for(
        "the new frontend2 reaching backend1",
        Duration::from_secs(20),
        || f.ping(2, f.layout.overlay_addr(be(1)), 500).then_some(()),
    );
    // The new frontend1 watches the tail of the chain, frontend2 (it asks
    // the registry every 2 s).
    wait_for(
        "the new frontend1 watching the tail",
        Duration::from_secs(20),
        || {
            f.status(1)
                .filter(|s| s["id"] == 1 && s["phase"] == "watching" && s["peer"] == "frontend2")
        },
    );
    let tags = f.stopped_instance(0).await;
    assert!(tags.contains(&("chainwatch:state".into(), "fenced".into())));
    let violations = watch.finish();
    assert!(violations.is_empty(), "{violations:?}");
}
