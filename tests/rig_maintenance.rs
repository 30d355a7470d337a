//! Rig scenario: maintenance. frontend2 is put in maintenance (`chainwatch
//! maint on --for 30m`) and its link goes down for 30 s (a patch and
//! reboot): frontend3 declares it dead but does not fence it, so nothing is
//! taken over and no StopInstances goes out; `fleet` and frontend2's own
//! `status` show the maintenance. After `maint off`, frontend2's death is handled as usual.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::Fleet;
use common::{output_text, rig_ready, wait_for};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

fn cw(f: &Fleet, args: &[&str]) -> Output {
    common::chainwatch_aws(
        &f.proxy.endpoint,
        &f.node_dir(2).join("chainwatch.toml"),
        args,
    )
}

#[tokio::test(flavor = "current_thread")]
async fn a_member_in_maintenance_is_not_fenced_and_after_maint_off_its_death_is_handled() {
    if !rig_ready(false) {
        return;
    }
    let f = Fleet::frontends(3).await;
    let f2 = f.nodes[1].instance.clone();
    let o = cw(&f, &["maint", "on", "--for", "30m", "--instance", &f2]);
    assert!(o.status.success(), "{}", output_text(&o));
    let o = cw(&f, &["maint", "list"]);
    assert!(
        output_text(&o).contains(&f2) && output_text(&o).contains("active"),
        "{}",
        output_text(&o)
    );
    let o = cw(&f, &["fleet"]);
    assert!(output_text(&o).contains(&f2), "{}", output_text(&o));
    // The node itself says so (it reads its tag every 10 s).
    let until = wait_for(
        "frontend2's status to show its maintenance",
        Duration::from_secs(25),
        || {
            f.status(1)
                .and_then(|s| s["maintenance"].as_str().map(str::to_string))
        },
    );
    assert!(until.starts_with("20"), "{until}");

    // Patched and rebooted: unreachable for 30 s.
    f.link(1, false);
    let down = Instant::now();
    let mut blocked = false;
    while down.elapsed() < Duration::from_secs(30) {
        if let Some(s) = f.status(2)
            && s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("in maintenance until"))
        {
            blocked = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f.link(1, true);
    assert!(
        blocked,
        "frontend3 never reported the fence held off by maintenance:\n{}",
        f.log(2)
    );
    assert!(f.proxy.stops().is_empty(), "{:?}", f.proxy.stops());
    assert_eq!(f.instance(1).await.0, "running");
    // Back: frontend3 watches it again, as frontend3.
    wait_for(
        "frontend3 watching frontend2 again",
        Duration::from_secs(30),
        || {
            f.status(2)
                .filter(|s| s["id"] == 3 && s["phase"] == "watching" && s["misses"] == 0)
        },
    );
    assert_eq!(f.tun_addr(2), Some(f.layout.overlay_addr(fe(3))));

    // Maintenance over; now it dies for real.
    let o = cw(&f, &["maint", "off", "--instance", &f2]);
    assert!(o.status.success(), "{}", output_text(&o));
    wait_for(
        "frontend2's status to show its maintenance over",
        Duration::from_secs(25),
        || f.status(1).filter(|s| s["maintenance"].is_null()),
    );
    f.kill(1);
    wait_for(
        "frontend3 to take over frontend2",
        Duration::from_secs(60),
        || f.status(2).filter(|s| s["id"] == 2),
    );
    let stops = f.proxy.stops();
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert_eq!(stops[0]["instances"][0], f2.as_str());
}
