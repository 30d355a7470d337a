//! Rig scenario: the taker is killed -9 in the middle of a takeover and
//! restarted 2 s later, once after each step: after the epoch, after the
//! state file (with the event), after the tags, and after the VPN switch
//! (before the Elastic IP: each takeover here is of frontend1, the hub).
//! After each restart there is exactly one holder of frontend1, and within
//! 10 s the ID is filled (its overlay address up) and the takeover's event
//! is on the broker.
//!
//! Five frontends; each round kills the current frontend1 and crashes the
//! current frontend2 (the daemon aborts at the step, through the test-only
//! `CHAINWATCH_TEST_CRASH_FILE`).

mod common;

use std::time::{Duration, Instant};

use chainwatch::event::TransitionEvent;
use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options};
use common::{rig_ready, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

#[tokio::test(flavor = "current_thread")]
async fn a_takeover_killed_at_each_step_completes_after_the_restart() {
    if !rig_ready(false) {
        return;
    }
    let slots: Vec<Slot> = (1..=5).map(fe).collect();
    let mut f = Fleet::with(
        &slots,
        Options {
            rabbit: true,
            hypervisor: true,
            // Four fences of frontend1 within minutes: more than the
            // fleet's default budget of 3 per role and hour allows, which
            // is not what this test is about.
            fence_budget: Some(0),
            ..Options::default()
        },
    )
    .await;
    f.start_all().await;
    f.watch_holders();
    let hub_addr = f.layout.overlay_addr(fe(1));
    let holder_of = |f: &Fleet, id: u32| {
        (0..f.nodes.len()).find(|&i| f.status(i).is_some_and(|s| s["id"] == id))
    };
    // The queue the events wait in (no worker consumes them here).
    {
        let rabbit = f.rabbit.as_ref().expect("rabbit");
        let conn = rabbit.connect().await;
        let ch = conn.create_channel().await.unwrap();
        chainwatch::shell::broker::Topology::from_config(&Default::default())
            .declare(&ch)
            .await
            .unwrap();
        let _ = conn.close(200, "done".into()).await;
    }
    let mut events: Vec<TransitionEvent> = Vec::new();
    for step in ["epoch", "state", "tags", "vpn"] {
        let (hub, taker) = wait_for("a settled chain", Duration::from_secs(60), || {
            Some((holder_of(&f, 1)?, holder_of(&f, 2)?))
        });
        f.arm_crash(taker, step);
        f.kill(hub);
        wait_for(
            &format!("frontend2's daemon to abort after the {step} step"),
            Duration::from_secs(90),
            || f.daemon_exited(taker).then_some(()),
        );
        std::thread::sleep(Duration::from_secs(2));
        f.restart_daemon(taker);
        let restarted = Instant::now();
        let rabbit = f.rabbit.as_ref().expect("rabbit");
        let queue = chainwatch::config::AnnounceConfig::default().queue;
        let instance = f.nodes[taker].instance.clone();
        let filled = loop {
            for m in rabbit.drain(&queue, 0, Duration::from_millis(200)).await {
                events.push(TransitionEvent::parse(&m.data).expect("a transition event"));
            }
            let announced = events
                .iter()
                .any(|e| e.to_id == 1 && e.instance_id == instance);
            let up = f.tun_addr(taker) == Some(hub_addr);
            if announced && up {
                break restarted.elapsed();
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(20),
                "{step}: 20 s after the restart, frontend1 up at the taker: {up}, event on the broker: {announced}\n{}",
                f.log(taker)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        eprintln!("killed after {step}: filled and announced {filled:?} after the restart");
        assert!(
            filled <= Duration::from_secs(10),
            "{step}: {filled:?} after the restart"
        );
        // Exactly one holder: one running instance tagged frontend1 and not
        // fenced (the old one may still be stopping, fenced), one namespace
        // with its address.
        let mut tagged = 0;
        for i in 0..f.nodes.len() {
            let (state, tags) = f.instance(i).await;
            if state != "stopped"
                && state != "terminated"
                && tags.contains(&("chainwatch:id".into(), "1".into()))
                && !tags.contains(&("chainwatch:state".into(), "fenced".into()))
            {
                tagged += 1;
            }
        }
        assert_eq!(tagged, 1, "{step}: instances tagged frontend1");
        let doubles = f.double_holders();
        assert!(
            doubles.is_empty(),
            "{step}: two reachable holders: {doubles:?}"
        );
        wait_for(
            "the taker settled as frontend1",
            Duration::from_secs(10),
            || f.status(taker).filter(|s| s["id"] == 1),
        );
    }
    // One event per takeover: the restart did not announce twice.
    let to_hub = events.iter().filter(|e| e.to_id == 1).count();
    assert_eq!(to_hub, 4, "{events:#?}");
}
