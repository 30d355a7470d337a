//! Rig scenario: a fenced instance is started again and rejoins at the tail
//! of its role instead of fighting for its old ID.

mod common;

use std::time::Duration;

use chainwatch::layout::{Role, Slot};
use common::fleet::Fleet;
use common::{rig_ready, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

#[tokio::test(flavor = "current_thread")]
async fn a_fenced_instance_started_again_rejoins_at_the_tail() {
    if !rig_ready(false) {
        return;
    }
    let f = Fleet::frontends(3).await;
    f.kill(1);
    f.wait_overlay(2, fe(2), 60);
    // The hypervisor must have seen the stop (and powered the instance
    // off) before it is started again, or it takes the crash for a still
    // running instance and never boots it.
    wait_for(
        "the hypervisor to power frontend2 off",
        Duration::from_secs(30),
        || f.powered_off(1).then_some(()),
    );
    // The power fence completes in the background.
    let tags = f.stopped_instance(1).await;
    assert!(
        tags.contains(&("chainwatch:state".into(), "fenced".into())),
        "{tags:?}"
    );
    // The operator starts the fenced instance again; the hypervisor boots
    // it from its user-data (which still says frontend2).
    f.ec2
        .start_instances()
        .instance_ids(&f.nodes[1].instance)
        .send()
        .await
        .unwrap();
    f.wait_overlay(1, fe(3), 90);
    let s = wait_for(
        "the rejoined node's status",
        Duration::from_secs(30),
        || f.status(1).filter(|s| s["id"] == 3),
    );
    assert_eq!(s["peer"], "frontend2");
    assert!(
        f.log(1)
            .contains("rejoining at the tail of the chain as frontend3"),
        "{}",
        f.log(1)
    );
    let (state, tags) = f.instance(1).await;
    assert_eq!(state, "running");
    assert!(
        tags.contains(&("chainwatch:id".into(), "3".into())),
        "{tags:?}"
    );
    assert!(
        tags.contains(&("chainwatch:state".into(), "active".into())),
        "{tags:?}"
    );
    // Nobody else moved: frontend3's old node is frontend2 and stays so.
    assert_eq!(f.status(2).unwrap()["id"], 2);
    assert_eq!(f.tun_addr(2), Some(f.layout.overlay_addr(fe(2))));
}
