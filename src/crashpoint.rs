//! Crash injection for the rig's kill -9 tests.
//!
//! With `CHAINWATCH_TEST_CRASH_FILE` naming a file that holds a step name,
//! the daemon removes the file and aborts (as if killed -9) right after that
//! step of its next fence or takeover. Steps: `fencing` (the fence's intent
//! recorded and logged, nothing sent), `stopped` (StopInstances sent, the
//! instance not yet tagged fenced), then the takeover's `epoch`, `state`,
//! `tags`, `vpn`, `eip`. Without the variable (as in production) this does
//! nothing.

/// Abort here if the crash file names `step`.
pub fn crash_point(step: &str) {
    let Some(file) = std::env::var_os("CHAINWATCH_TEST_CRASH_FILE") else {
        return;
    };
    if std::fs::read_to_string(&file).is_ok_and(|s| s.trim() == step) {
        let _ = std::fs::remove_file(&file);
        tracing::error!(step, "CHAINWATCH_TEST_CRASH_FILE: aborting after this step");
        std::process::abort();
    }
}
