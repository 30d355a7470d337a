//! systemd readiness: a daemon tells systemd READY=1 only once its VPN
//! identity is up. frontend2 boots while the hub is down: it runs (and
//! watches), but sends no READY; the hub comes up, frontend2's identity
//! comes up, and READY follows. Throughout, the event loop pings systemd's
//! watchdog (`WATCHDOG=1`) at least once per half `WatchdogSec`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::{Fleet, Options};
use common::rig_ready;

/// Every datagram on `sock` within `wait`, as text.
fn notifications(sock: &UnixDatagram, wait: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let end = Instant::now() + wait;
    let mut buf = [0u8; 512];
    while Instant::now() < end {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

#[tokio::test(flavor = "current_thread")]
async fn ready_is_sent_only_once_the_vpn_identity_is_up() {
    if !rig_ready(false) {
        return;
    }
    let fe = |id| Slot::new(Role::Frontend, id);
    let f = Fleet::with(
        &[fe(1), fe(2)],
        Options {
            hypervisor: true,
            ..Options::default()
        },
    )
    .await;
    let path = f.nodes[1].dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    f.start(1);
    // The hub is down: frontend2 runs and reports status, but its identity
    // cannot come up, and it must not say READY.
    common::wait_for("frontend2's status", Duration::from_secs(30), || {
        f.status(1)
    });
    let early = notifications(&sock, Duration::from_secs(8));
    assert!(
        !early.iter().any(|m| m.contains("READY=1")),
        "READY before the identity was up: {early:?}"
    );
    assert_eq!(f.tun_addr(1), None);
    // Not ready, but alive: the loop pings the watchdog (the rig sets
    // WATCHDOG_USEC to 2 s: at least one ping a second).
    let pings = early.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(pings >= 7, "{pings} watchdog pings in 8 s: {early:?}");
    f.start(0);
    f.wait_overlay(1, fe(2), 90);
    let later = notifications(&sock, Duration::from_secs(5));
    assert!(
        later.iter().any(|m| m.contains("READY=1")),
        "no READY after the identity came up: {later:?}"
    );
    // The internet-facing server dropped root once up (vpn.user =
    // nobody), and the overlay works through its hooks, which ran as
    // nobody too; the client keeps root (its address goes with its
    // session).
    for (i, uid) in [(0, "65534"), (1, "0")] {
        let pid = common::pid_in(&f.nodes[i].ns, "openvpn").expect("OpenVPN runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert_eq!(
            uids.split_whitespace().skip(1).collect::<Vec<_>>(),
            [uid; 4],
            "node {i}'s OpenVPN: {uids}"
        );
    }
    assert!(f.ping(0, f.layout.overlay_addr(fe(2)), 2000));
}
