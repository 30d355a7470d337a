//! CI's environment (`.ci/env.sh`, sourced by `.ci/run`): every
//! `CHAINWATCH_*` knob a developer left set is cleared — the length of a
//! soak, the binary under test, a daemon's config override, whatever its
//! name — and what `.ci/run` sets itself stays.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The exported environment after sourcing `.ci/env.sh` (under `.ci/run`'s
/// shell options) in a child bash that starts with `vars` set.
fn after_env_step(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
    let out = Command::new("bash")
        .arg("-c")
        .arg("set -euo pipefail; source .ci/env.sh; env -0")
        .current_dir(repo())
        .envs(vars.iter().copied())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "sourcing .ci/env.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_ci_environment_clears_every_chainwatch_knob_and_keeps_its_own() {
    let left = [
        ("CHAINWATCH_ONEWAY_SECS", "5"),
        ("CHAINWATCH_PAIRWISE_SECS", "5"),
        ("CHAINWATCH_BIN", "/bin/true"),
        ("CHAINWATCH_PROBE__INTERVAL", "5s"),
        ("CHAINWATCH_AWS__API_TIMEOUT", "100ms"),
        ("CHAINWATCH_LOSS_SECS", "1"),
        ("CHAINWATCH_LOG", "off"),
        ("CHAINWATCH_CONFIG", "/nonexistent.toml"),
        // A name no one knows yet is cleared too.
        ("CHAINWATCH_SOMETHING_NEW", "1"),
        ("CHAINWATCH_VENV", "/opt/somewhere-venv"),
        ("CI", "false"),
        ("UNRELATED_TO_CHAINWATCH", "kept"),
    ];
    let env = after_env_step(&left);
    let knobs: Vec<&String> = env
        .keys()
        .filter(|k| k.starts_with("CHAINWATCH_") && *k != "CHAINWATCH_VENV")
        .collect();
    assert!(knobs.is_empty(), "left set for CI: {knobs:?}");
    // What .ci/run sets, or keeps for .ci/deps.sh, stays.
    assert_eq!(env.get("CI").map(String::as_str), Some("true"));
    assert_eq!(
        env.get("CARGO_TERM_COLOR").map(String::as_str),
        Some("never")
    );
    assert_eq!(
        env.get("CHAINWATCH_VENV").map(String::as_str),
        Some("/opt/somewhere-venv")
    );
    assert_eq!(
        env.get("UNRELATED_TO_CHAINWATCH").map(String::as_str),
        Some("kept")
    );
}

/// `.ci/run` runs that step, before anything else it does: the
/// environment checked above is the one its tests get.
#[test]
fn ci_runs_the_environment_step_first() {
    let run = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let commands: Vec<&str> = run
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let at = commands
        .iter()
        .position(|l| *l == "source .ci/env.sh")
        .unwrap_or_else(|| panic!(".ci/run does not source .ci/env.sh:\n{run}"));
    assert_eq!(
        commands[..at],
        ["set -euo pipefail", "cd \"$(dirname \"$0\")/..\""],
        ".ci/run does something before its environment step"
    );
    // And sets no CHAINWATCH_ variable of its own after it.
    for l in &commands[at + 1..] {
        assert!(
            !(l.contains("export CHAINWATCH_") || l.starts_with("CHAINWATCH_")),
            ".ci/run sets a knob after clearing them: {l}"
        );
    }
}
