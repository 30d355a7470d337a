//! Alerts: what an operator must hear about besides a successful takeover
//! (a fence that failed or is held off, a takeover that keeps failing, a
//! degraded overlay, a rejoin), handed to `alerts.notify_command` like
//! keepalived's `notify` scripts (the alert as one JSON object on its
//! standard input, bounded in time, never blocking the daemon) and, from a
//! daemon with sinks, written to the outbox like a transition: delivered
//! to RabbitMQ (`alert.<kind>`) and CloudWatch, at least once, across
//! restarts and broker outages.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::clock::unix_ms;
use crate::config::Settings;
use crate::core::Event;
pub use crate::event::Alert;
use crate::shell::outbox::Outbox;

/// The takeover attempt from which failures are `takeover_stuck`.
pub const STUCK_AFTER: u32 = 3;

/// The alert a core event raises, if any (`node`, `fleet`, `instance_id`
/// filled in by the caller's [`Notifier`]).
pub fn from_event(event: &Event) -> Option<(&'static str, String, Option<u32>, String)> {
    match event {
        Event::FenceFailed { peer, failure: f } => {
            let kind = if super::aws::ec2::Ec2Error::held_back(&f.error) {
                "fence_blocked"
            } else {
                "fence_failed"
            };
            Some((kind, peer.common_name(), Some(f.attempt), f.detail()))
        }
        Event::TakeOverFailed { to, failure: f } if f.attempt >= STUCK_AFTER => Some((
            "takeover_stuck",
            to.common_name(),
            Some(f.attempt),
            f.detail(),
        )),
        Event::Degraded { peer } => Some((
            "degraded",
            peer.common_name(),
            None,
            format!(
                "frontend1 is silent on the overlay: {peer} is probed on its underlay with EC2 as the witness"
            ),
        )),
        Event::TailLost { peer, instances } => Some((
            "tail_lost",
            peer.common_name(),
            None,
            format!(
                "{peer}, the last member of its role, is dead and fenced ({}): the chain is one shorter, and the next death finds one successor fewer; start a replacement instance",
                instances.join(", ")
            ),
        )),
        _ => None,
    }
}

/// Raises alerts: runs `alerts.notify_command` for each, and puts each in
/// the outbox when it has one.
#[derive(Debug, Clone)]
pub struct Notifier {
    argv: Arc<Vec<String>>,
    timeout: Duration,
    fleet: String,
    instance_id: String,
    outbox: Option<(Arc<Outbox>, Option<Arc<Notify>>)>,
}

impl Notifier {
    /// The notifier of `[alerts]`: its command if one is set, and `outbox`
    /// (a daemon's, with the delivery task's waker, or none to be sent at
    /// the task's next pass) when there is one with sinks; `None` when
    /// neither is.
    pub fn from_settings(
        s: &Settings,
        instance_id: Option<&str>,
        outbox: Option<(Arc<Outbox>, Option<Arc<Notify>>)>,
    ) -> Option<Notifier> {
        let outbox = outbox.filter(|(o, _)| !o.sinks().is_empty());
        if s.config.alerts.notify_command.is_empty() && outbox.is_none() {
            return None;
        }
        Some(Notifier {
            argv: Arc::new(s.config.alerts.notify_command.clone()),
            timeout: s.config.alerts.notify_timeout,
            fleet: s.config.aws.fleet.clone(),
            instance_id: instance_id.unwrap_or("unknown").to_string(),
            outbox,
        })
    }

    /// Raise an alert: into the outbox when there is one, and the command
    /// run in the background (the caller logs what happened).
    pub fn raise(
        &self,
        kind: &'static str,
        node: String,
        slot: String,
        attempt: Option<u32>,
        detail: String,
    ) {
        let alert = Alert {
            alert_id: uuid::Uuid::new_v4().to_string(),
            kind: kind.to_string(),
            fleet: self.fleet.clone(),
            node,
            instance_id: self.instance_id.clone(),
            slot,
            attempt,
            detail,
            at_ms: unix_ms(std::time::SystemTime::now()),
        };
        if let Some((outbox, wake)) = &self.outbox {
            match outbox.put_alert(&alert) {
                Ok(()) => {
                    if let Some(w) = wake {
                        w.notify_one();
                    }
                }
                Err(e) => tracing::error!(kind, "cannot write the alert to the outbox: {e}"),
            }
        }
        if self.argv.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.run(&alert).await {
                tracing::error!(kind = %alert.kind, "alerts.notify_command failed: {e}");
            }
        });
    }

    async fn run(&self, alert: &Alert) -> Result<(), String> {
        let (program, args) = self
            .argv
            .split_first()
            .ok_or("alerts.notify_command is empty")?;
        let mut body = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
        body.push(b'\n');
        let work = async {
            let mut child = super::child_command(program, args)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {program}: {e}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(&body)
                    .await
                    .map_err(|e| format!("writing the alert to {program}: {e}"))?;
            }
            let status = child.wait().await.map_err(|e| e.to_string())?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("{program} exited with {status}"))
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| format!("{program} did not finish within {:?}: killed", self.timeout))?
    }
}
