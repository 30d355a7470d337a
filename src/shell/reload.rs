//! `SIGHUP`: read the config file again and hand the core its new tunables.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::{Config, Settings};
use crate::core::CoreConfig;

/// On SIGHUP, read the config file again. The probe and retry settings
/// change live; anything else that changed is named and needs a restart; a
/// file that does not validate changes nothing.
pub async fn on_sighup(mut running: Settings, tx: UnboundedSender<CoreConfig>) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: no config reload");
        return;
    };
    while hup.recv().await.is_some() {
        let Some(path) = running.source.clone() else {
            tracing::warn!("SIGHUP: running on built-in defaults, no file to reload");
            continue;
        };
        let new = match Config::load(Some(&path), crate::config::process_env()) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!("SIGHUP: reload refused, the running config stays: {e}");
                continue;
            }
        };
        let restart = running.config.restart_needed(&new.config);
        if !restart.is_empty() {
            tracing::warn!(
                "SIGHUP: {} changed but cannot change live: restart the daemon to apply (the identity stays up through a restart)",
                restart.join(", ")
            );
        }
        if new.core() != running.core() {
            if tx.send(new.core()).is_err() {
                return;
            }
        } else {
            tracing::info!("SIGHUP: the probe and retry settings are unchanged");
        }
        // What runs now: the live part is applied, the rest is not.
        running.config.adopt_live(&new.config);
    }
}
