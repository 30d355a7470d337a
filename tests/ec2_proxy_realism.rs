//! The rig's EC2 proxy behaves like AWS's EC2 when asked to: per-call
//! latency, filtered reads that miss a write for a while, throttling, the
//! request count, and the one-shot read faults (`tests/support/
//! ec2_proxy_check.py`, which proves each against moto, and that without
//! its flags the proxy is as before).

mod common;

use std::process::Command;

#[test]
fn the_proxy_costs_time_reads_stale_and_throttles_as_asked() {
    let python = common::venv().join("bin/python");
    if !common::prerequisite(
        common::Moto::available(),
        "moto[server] in the virtualenv (.ci/run installs it)",
    ) {
        return;
    }
    let out = Command::new(python)
        .arg(common::support("ec2_proxy_check.py"))
        .output()
        .expect("the check script runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" passed, 0 failed"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
