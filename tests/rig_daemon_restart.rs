//! Rig scenario: a daemon restart is not a death. On a healthy member (the
//! hub, a frontend, a backend) chainwatch is killed with SIGKILL and started
//! again 1 s later, as systemd's `Restart=` would after a crash or an
//! upgrade. OpenVPN outlives the daemon and the new daemon adopts it: the
//! member's overlay address answers throughout (pinged every 50 ms from
//! another member), nobody fences or takes over anything, and the member
//! keeps its ID.

mod common;

use std::time::Duration;

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options};
use common::{rig_ready, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}
fn be(id: u32) -> Slot {
    Slot::new(Role::Backend, id)
}

#[tokio::test(flavor = "current_thread")]
async fn a_killed_and_restarted_daemon_is_not_a_death() {
    if !rig_ready(false) {
        return;
    }
    let mut f = Fleet::with(
        &[fe(1), fe(2), fe(3), be(1), be(2)],
        Options {
            hypervisor: true,
            ..Options::default()
        },
    )
    .await;
    f.start_all().await;
    // (victim, the member that pings it)
    for (victim, from) in [(1usize, 2usize), (3, 4), (0, 3)] {
        let slot = f.nodes[victim].boot;
        let addr = f.layout.overlay_addr(slot);
        let (sent, got) = f.ping_during(from, addr, || {
            std::thread::sleep(Duration::from_millis(500));
            f.kill_daemon(victim);
            std::thread::sleep(Duration::from_secs(1));
            f.restart_daemon(victim);
            wait_for(
                "the restarted daemon to adopt its OpenVPN",
                Duration::from_secs(30),
                || {
                    f.log(victim)
                        .contains("adopted the running OpenVPN")
                        .then_some(())
                },
            );
            // Longer than a detection window after the kill.
            std::thread::sleep(Duration::from_secs(6));
        });
        eprintln!("{slot} restarted: {got} of {sent} echoes to {addr} answered");
        assert!(sent >= 100, "{slot}: only {sent} echoes sent");
        assert!(
            got + 2 >= sent,
            "{slot}: its address stopped answering during the restart ({got} of {sent})"
        );
        let s = wait_for(
            "the restarted daemon's status",
            Duration::from_secs(10),
            || f.status(victim),
        );
        assert_eq!(s["id"], slot.id, "{slot} kept its ID");
        assert_eq!(f.tun_addr(victim), Some(addr));
        assert_eq!(f.instance(victim).await.0, "running");
    }
    assert!(
        f.takeovers().is_empty(),
        "a restart led to a fence: {:?}",
        f.takeovers()
    );
    for i in 0..f.nodes.len() {
        assert_eq!(f.instance(i).await.0, "running", "{}", f.nodes[i].ns);
    }
}
