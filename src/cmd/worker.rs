//! `chainwatch worker`: consumes transition events and has Ansible
//! reconfigure MySQL.
//!
//! Manual acks, prefetch 1. Per event: malformed → rejected without requeue
//! (dead-lettered); already applied → acked and dropped; stale epoch → acked
//! and skipped; otherwise the playbook runs (backend events; frontend events
//! run `worker.frontend_playbook` if set, else are only logged), retried
//! with back-off up to `worker.attempts` times. Success → recorded as applied
//! (durably), then acked. Failure → rejected without requeue, so it lands in
//! the dead-letter queue.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use tokio::signal::unix::{SignalKind, signal};

use super::{CmdError, settings};
use crate::config::Settings;
use crate::event::TransitionEvent;
use crate::layout::Role;
use crate::shell::broker::{Topology, connect};
use crate::shell::worker::{AppliedStore, Decision, run_playbook};

/// Arguments of `worker`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run until SIGTERM or SIGINT.
pub async fn main(config: Option<&Path>, _args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    if s.config.announce.rabbitmq_urls.is_empty() {
        return Err(CmdError::Other(
            "the worker needs announce.rabbitmq_urls in the config".into(),
        ));
    }
    let mut store = AppliedStore::open(&s.config.worker.state_dir)
        .map_err(|e| CmdError::Other(e.to_string()))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| CmdError::Other(e.to_string()))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| CmdError::Other(e.to_string()))?;
    let mut delays = crate::backoff::delays(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM received"); return Ok(()); }
            _ = sigint.recv() => { tracing::info!("SIGINT received"); return Ok(()); }
            result = consume(&s, &mut store) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                match result {
                    Ok(()) => tracing::warn!("the broker closed the consumer; reconnecting in {delay:?}"),
                    Err(e) => tracing::warn!("RabbitMQ: {e}; reconnecting in {delay:?}"),
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn consume(s: &Settings, store: &mut AppliedStore) -> Result<(), String> {
    let a = &s.config.announce;
    let conn = connect(&a.rabbitmq_urls, Duration::from_millis(a.timeout_ms)).await?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    let topology = Topology::from_config(a);
    topology
        .declare(&ch)
        .await
        .map_err(|e| format!("declaring the topology: {e}"))?;
    ch.basic_qos(1, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let tag = format!("chainwatch-worker-{}", std::process::id());
    let mut consumer = ch
        .basic_consume(
            topology.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(queue = %topology.queue, "worker consuming");
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.map_err(|e| e.to_string())?;
        handle(s, store, delivery).await?;
    }
    Ok(())
}

async fn handle(s: &Settings, store: &mut AppliedStore, d: Delivery) -> Result<(), String> {
    let ack = |d: &Delivery| {
        let acker = d.acker.clone();
        async move { acker.ack(BasicAckOptions::default()).await.map(|_| ()) }
    };
    let dead_letter = |d: &Delivery| {
        let acker = d.acker.clone();
        async move {
            acker
                .reject(BasicRejectOptions { requeue: false })
                .await
                .map(|_| ())
        }
    };
    let ev = match TransitionEvent::parse(&d.data) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::error!(
                "rejecting a message that is not a transition event ({e}): dead-lettered"
            );
            return dead_letter(&d).await.map_err(|e| e.to_string());
        }
    };
    let span = format!(
        "{}{}->{}{} epoch {} ({})",
        ev.role, ev.from_id, ev.role, ev.to_id, ev.epoch, ev.event_id
    );
    match store.decide(&ev) {
        Decision::Duplicate => {
            tracing::info!(event_id = %ev.event_id, "{span}: already applied, dropping the duplicate");
            return ack(&d).await.map_err(|e| e.to_string());
        }
        Decision::Stale { applied } => {
            tracing::warn!(event_id = %ev.event_id, applied, "{span}: stale (epoch {} < applied {applied}), skipping", ev.epoch);
            return ack(&d).await.map_err(|e| e.to_string());
        }
        Decision::Apply => {}
    }
    let w = &s.config.worker;
    let playbook = match ev.role {
        Role::Backend => Some(w.playbook.clone()),
        Role::Frontend => w.frontend_playbook.clone(),
    };
    let Some(playbook) = playbook else {
        tracing::info!(event_id = %ev.event_id, "{span}: frontend transition (no frontend playbook configured)");
        store.record(&ev).map_err(|e| e.to_string())?;
        return ack(&d).await.map_err(|e| e.to_string());
    };
    let first = Duration::from_millis(w.retry_backoff_ms);
    let mut delays = crate::backoff::delays(first, first * 16);
    for attempt in 1..=w.attempts {
        tracing::info!(event_id = %ev.event_id, attempt, playbook = %playbook.display(), "{span}: running the playbook");
        match run_playbook(w, &playbook, &ev).await {
            Ok(()) => {
                store.record(&ev).map_err(|e| e.to_string())?;
                tracing::warn!(event_id = %ev.event_id, attempt, "{span}: applied");
                return ack(&d).await.map_err(|e| e.to_string());
            }
            Err(e) if attempt < w.attempts => {
                let delay = delays.next().unwrap_or(first);
                tracing::warn!(event_id = %ev.event_id, attempt, "{span}: playbook failed ({e}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                tracing::error!(event_id = %ev.event_id, attempt, "{span}: playbook failed {attempt} times ({e}); dead-lettering the event");
            }
        }
    }
    dead_letter(&d).await.map_err(|e| e.to_string())
}
