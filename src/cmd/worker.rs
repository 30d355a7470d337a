//! `chainwatch worker`: consumes transition events and has Ansible
//! reconfigure MySQL.
//!
//! Manual acks, prefetch 1. Every message is hostile until checked, in this
//! order, and dead-lettered with its reason (header `x-chainwatch-reason`,
//! logged as an error) at the first check it fails:
//!
//! 1. it parses as a transition event;
//! 2. its broker-validated `user_id` is one of `worker.publishers`;
//! 3. it belongs to this deployment (fleet, instance IDs, IDs within the
//!    layout, the layout's overlay address);
//! 4. it was not applied already (a replay or redelivery), and no other
//!    event was applied at its role's epoch;
//! 5. EC2 says its instance is running and tagged as the holder of the ID
//!    at the event's epoch (`worker.verify_registry`).
//!
//! An event older than what was applied for its role, or one whose
//! instance EC2 shows at a later epoch, is acked and skipped: a later
//! transition supersedes it. Otherwise the playbook runs (backend events;
//! frontend events run `worker.frontend_playbook` if set, else are only
//! logged) with the event as data that Ansible never renders as a template,
//! retried with back-off up to `worker.attempts` times. Success → recorded
//! as applied (durably), then acked. Failure → dead-lettered.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use tokio::signal::unix::{SignalKind, signal};

use super::{CmdError, settings};
use crate::config::Settings;
use crate::event::TransitionEvent;
use crate::layout::Role;
use crate::shell::aws::ec2::{HolderCheck, check_holder};
use crate::shell::broker::{Topology, connect};
use crate::shell::worker::{AppliedStore, Decision, run_playbook};

/// What the worker needs besides the settings.
struct Ctx {
    s: Settings,
    ec2: Option<aws_sdk_ec2::Client>,
}

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
    let w = &s.config.worker;
    if w.publishers.is_empty() {
        tracing::warn!(
            "worker.publishers is empty: events from any broker user of the vhost are accepted; list the nodes' broker users"
        );
    }
    let ec2 = if w.verify_registry {
        Some(crate::shell::aws::ec2::client(&s.config.aws).await)
    } else {
        tracing::warn!(
            "worker.verify_registry is off: events are not checked against EC2's holder tags"
        );
        None
    };
    let ctx = Ctx { s, ec2 };
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| CmdError::Other(e.to_string()))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| CmdError::Other(e.to_string()))?;
    let mut delays = crate::backoff::delays(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM received"); return Ok(()); }
            _ = sigint.recv() => { tracing::info!("SIGINT received"); return Ok(()); }
            result = consume(&ctx, &mut store) => {
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

async fn consume(ctx: &Ctx, store: &mut AppliedStore) -> Result<(), String> {
    let a = &ctx.s.config.announce;
    let (conn, _) = connect(&a.rabbitmq_urls, a.timeout).await?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    // Confirms for what the worker itself publishes: dead letters.
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
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
        handle(ctx, &ch, &topology, store, delivery).await?;
    }
    Ok(())
}

/// Put `d` in the dead-letter queue with `reason`: a copy goes to the
/// dead-letter exchange with the reason in its headers, then the original
/// is acked. Should the copy fail, the original is rejected (the queue
/// dead-letters it, without the reason).
async fn dead_letter(
    ch: &Channel,
    topology: &Topology,
    d: &Delivery,
    reason: &str,
) -> Result<(), String> {
    tracing::error!(
        user = ?d.properties.user_id().as_ref().map(|u| u.to_string()),
        "dead-lettered: {reason}"
    );
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(
        ShortString::from("x-chainwatch-reason"),
        AMQPValue::LongString(reason.into()),
    );
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_headers(headers);
    let props = match d.properties.message_id() {
        Some(id) => props.with_message_id(id.clone()),
        None => props,
    };
    let copied = async {
        let confirm = ch
            .basic_publish(
                topology.dlx.as_str().into(),
                d.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &d.data,
                props,
            )
            .await?
            .await?;
        Ok::<bool, lapin::Error>(confirm.is_ack())
    };
    match copied.await {
        Ok(true) => d
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        other => {
            tracing::warn!("copying the dead letter failed ({other:?}); rejecting it instead");
            d.acker
                .reject(BasicRejectOptions { requeue: false })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

/// Ask EC2 whether the event's instance holds what it claims, a few times:
/// the taker's tag writes may take a moment to show.
async fn verify(ctx: &Ctx, ev: &TransitionEvent) -> Result<HolderCheck, String> {
    let Some(client) = &ctx.ec2 else {
        return Ok(HolderCheck::Holder);
    };
    let fleet = &ctx.s.config.aws.fleet;
    let mut last = Ok(HolderCheck::Holder);
    for attempt in 0..4 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        last = check_holder(client, fleet, ev)
            .await
            .map_err(|e| e.to_string());
        if matches!(
            last,
            Ok(HolderCheck::Holder | HolderCheck::Superseded { .. })
        ) {
            break;
        }
    }
    last
}

async fn handle(
    ctx: &Ctx,
    ch: &Channel,
    topology: &Topology,
    store: &mut AppliedStore,
    d: Delivery,
) -> Result<(), String> {
    let s = &ctx.s;
    let ack = |d: &Delivery| {
        let acker = d.acker.clone();
        async move { acker.ack(BasicAckOptions::default()).await.map(|_| ()) }
    };
    let ev = match TransitionEvent::parse(&d.data) {
        Ok(ev) => ev,
        Err(e) => {
            return dead_letter(ch, topology, &d, &format!("not a transition event: {e}")).await;
        }
    };
    let span = format!(
        "{}{}->{}{} epoch {} ({})",
        ev.role, ev.from_id, ev.role, ev.to_id, ev.epoch, ev.event_id
    );
    let w = &s.config.worker;
    if !w.publishers.is_empty() {
        let user = d.properties.user_id().as_ref().map(|u| u.to_string());
        if !user.as_ref().is_some_and(|u| w.publishers.contains(u)) {
            let reason =
                format!("{span}: published by broker user {user:?}, not one of worker.publishers");
            return dead_letter(ch, topology, &d, &reason).await;
        }
    }
    if let Err(e) = ev.check(&s.config.aws.fleet, &s.layout) {
        return dead_letter(ch, topology, &d, &format!("{span}: {e}")).await;
    }
    match store.decide(&ev) {
        Decision::Duplicate => {
            let reason = format!("{span}: already applied (a replay or a redelivery)");
            return dead_letter(ch, topology, &d, &reason).await;
        }
        Decision::Conflict { applied_event } => {
            let reason = format!(
                "{span}: event {applied_event} was applied at the same epoch; one of them is forged"
            );
            return dead_letter(ch, topology, &d, &reason).await;
        }
        Decision::Stale { applied } => {
            tracing::warn!(event_id = %ev.event_id, applied, "{span}: stale (epoch {} < applied {applied}), skipping", ev.epoch);
            return ack(&d).await.map_err(|e| e.to_string());
        }
        Decision::Apply => {}
    }
    match verify(ctx, &ev).await {
        Ok(HolderCheck::Holder) => {}
        Ok(HolderCheck::Superseded { epoch }) => {
            tracing::warn!(event_id = %ev.event_id, "{span}: {} is tagged at the later epoch {epoch}; superseded, skipping", ev.instance_id);
            return ack(&d).await.map_err(|e| e.to_string());
        }
        Ok(HolderCheck::NotHolder(why)) => {
            let reason = format!("{span}: EC2 does not show the holder it claims: {why}");
            return dead_letter(ch, topology, &d, &reason).await;
        }
        Err(e) => {
            // EC2 unreachable: not the event's fault. Requeue and retry later.
            tracing::warn!(event_id = %ev.event_id, "{span}: cannot check the event against EC2 ({e}); requeueing it");
            tokio::time::sleep(Duration::from_secs(2)).await;
            return d
                .acker
                .reject(BasicRejectOptions { requeue: true })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
    }
    let playbook = match ev.role {
        Role::Backend => Some(w.playbook.clone()),
        Role::Frontend => w.frontend_playbook.clone(),
    };
    let Some(playbook) = playbook else {
        tracing::info!(event_id = %ev.event_id, "{span}: frontend transition (no frontend playbook configured)");
        store.record(&ev).map_err(|e| e.to_string())?;
        return ack(&d).await.map_err(|e| e.to_string());
    };
    let first = w.retry_backoff;
    let mut delays = crate::backoff::delays(first, first * 16);
    let mut last = String::new();
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
            Err(e) => last = e,
        }
    }
    let reason = format!("{span}: playbook failed {} times, last: {last}", w.attempts);
    dead_letter(ch, topology, &d, &reason).await
}
