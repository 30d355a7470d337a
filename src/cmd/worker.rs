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
//!
//! Events are the trigger and the audit trail, not the only source of
//! truth: every `worker.reconcile_interval` (and at start) the worker reads
//! the registry's backend topology from EC2 (who holds backend1, which
//! backends run) and, when it differs from what MySQL was last reconciled
//! with, runs the playbook for it. A lost, late, reordered or dead-lettered
//! event, or a worker that was down, still ends with MySQL following EC2;
//! a backend that comes back (a fenced ex-primary, started again) is made a
//! replica, or quarantined when it holds errant transactions (alerted).

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
use crate::layout::{Role, escaped};
use crate::shell::alert::Notifier;
use crate::shell::aws::ec2::{BackendView, HolderCheck, backend_servers, check_holder};
use crate::shell::broker::{Side, Topology, broker_user, connect_to, take_all};
use crate::shell::mysql::Client as MysqlClient;
use crate::shell::promote::{self, Outcome, Server};
use crate::shell::worker::{AppliedStore, Decision, ReplicaWatch, possibly_missing, run_playbook};

/// What the worker needs besides the settings.
struct Ctx {
    s: Settings,
    ec2: Option<aws_sdk_ec2::Client>,
    /// `alerts.notify_command`, told of every dead letter.
    notifier: Option<Notifier>,
    /// The worker's own broker users: what `chainwatch worker replay`
    /// publishes carries one of them.
    own_users: Vec<String>,
    /// The last registry view a reconcile failed for: alerted once.
    failed_view: std::sync::Mutex<Option<BackendView>>,
    /// When each backend was last read as a live replica.
    replicas: std::sync::Mutex<ReplicaWatch>,
    /// The last promotion (holder, epoch) checked for replicas that died
    /// with the primary: alerted once.
    loss_checked: std::sync::Mutex<Option<(String, u64)>>,
}

/// Arguments of `worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Without an action: consume and apply events until SIGTERM.
    #[command(subcommand)]
    pub action: Option<Action>,
}

/// What to do with the dead letters.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// List the dead-lettered events with the reason each was refused (they
    /// stay in the dead-letter queue).
    DeadLetters,
    /// Publish one dead-lettered event again, as the worker's broker user,
    /// and take it out of the dead-letter queue. The worker checks it anew
    /// (fleet, EC2, epochs): a replay is a second look, never a bypass.
    Replay {
        /// The event ID (`dead-letters` lists them).
        event_id: String,
    },
}

/// Run the worker, or the dead-letter action.
pub async fn main(config: Option<&Path>, args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    if s.config.announce.rabbitmq_urls.is_empty() {
        return Err(CmdError::Other(
            "the worker needs announce.rabbitmq_urls in the config".into(),
        ));
    }
    match &args.action {
        None => run(s).await,
        Some(Action::DeadLetters) => list_dead_letters(&s).await,
        Some(Action::Replay { event_id }) => replay(&s, event_id).await,
    }
}

/// A channel on the worker's broker, with the topology declared, and the
/// broker user it logged in as.
async fn channel(
    s: &Settings,
) -> Result<(lapin::Connection, Channel, Topology, Option<String>), CmdError> {
    let a = &s.config.announce;
    let (conn, url) = connect_to(a).await.map_err(CmdError::Other)?;
    let topology = Topology::from_config(a);
    let ch = topology
        .ensure(&conn, Side::Worker)
        .await
        .map_err(|e| CmdError::Other(format!("RabbitMQ: {e}")))?;
    Ok((conn, ch, topology, broker_user(&url)))
}

/// Print the dead letters; closing the channel puts them all back.
async fn list_dead_letters(s: &Settings) -> Result<(), CmdError> {
    let (conn, ch, topology, _) = channel(s).await?;
    let letters = take_all(&ch, &topology.dlq)
        .await
        .map_err(|e| CmdError::Other(format!("reading {}: {e}", topology.dlq)))?;
    if letters.is_empty() {
        println!("no dead letters in {}", topology.dlq);
    }
    for (l, _) in &letters {
        let what = match TransitionEvent::parse(&l.data) {
            Ok(ev) => format!(
                "{}{}->{}{} epoch {} instance {}",
                ev.role, ev.from_id, ev.role, ev.to_id, ev.epoch, ev.instance_id
            ),
            Err(_) => format!("not a transition event ({} bytes)", l.data.len()),
        };
        println!(
            "{}  {}  {}\n    reason: {}",
            escaped(if l.id.is_empty() { "-" } else { &l.id }),
            escaped(&l.routing_key),
            escaped(&what),
            escaped(&l.reason)
        );
    }
    let _ = ch.close(200, "listed".into()).await;
    let _ = conn.close(200, "listed".into()).await;
    Ok(())
}

/// Publish the dead letter `event_id` to the exchange again (confirmed),
/// then ack it out of the dead-letter queue.
async fn replay(s: &Settings, event_id: &str) -> Result<(), CmdError> {
    let (conn, ch, topology, user) = channel(s).await?;
    let other = |e: lapin::Error| CmdError::Other(format!("RabbitMQ: {e}"));
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(other)?;
    let letters = take_all(&ch, &topology.dlq).await.map_err(other)?;
    let Some((letter, tag)) = letters.iter().find(|(l, _)| l.id == event_id) else {
        let _ = conn.close(200, "not found".into()).await;
        return Err(CmdError::Other(format!(
            "no dead letter with the ID {} in {}: `chainwatch worker dead-letters` lists them",
            escaped(event_id),
            topology.dlq
        )));
    };
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(letter.id.as_str().into());
    if let Some(u) = &user {
        // The broker checks that this is the user who publishes.
        props = props.with_user_id(u.as_str().into());
    }
    // Straight into the worker's queue (the default exchange), not to the
    // exchange every consumer of events binds: the worker's broker user
    // may write there and nowhere else but the dead letters.
    let confirm = ch
        .basic_publish(
            "".into(),
            topology.queue.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &letter.data,
            props,
        )
        .await
        .map_err(other)?
        .await
        .map_err(other)?;
    if !confirm.is_ack() || confirm.take_message().is_some() {
        let _ = conn.close(200, "not replayed".into()).await;
        return Err(CmdError::Other(format!(
            "the broker did not take the replay of {} (no queue {}?); it stays a dead letter",
            escaped(event_id),
            topology.queue
        )));
    }
    ch.basic_ack(*tag, BasicAckOptions::default())
        .await
        .map_err(other)?;
    let _ = ch.close(200, "replayed".into()).await;
    let _ = conn.close(200, "replayed".into()).await;
    println!(
        "replayed {}: the worker checks it again (its log says what became of it)",
        escaped(event_id)
    );
    Ok(())
}

/// Run until SIGTERM or SIGINT.
async fn run(s: Settings) -> Result<(), CmdError> {
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
    let notifier = Notifier::from_settings(&s, Some("worker"), None);
    let own_users = s
        .config
        .announce
        .rabbitmq_urls
        .iter()
        .filter_map(|u| broker_user(u))
        .collect();
    let ctx = Ctx {
        s,
        ec2,
        notifier,
        own_users,
        failed_view: std::sync::Mutex::new(None),
        replicas: std::sync::Mutex::new(ReplicaWatch::default()),
        loss_checked: std::sync::Mutex::new(None),
    };
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
                // Without the broker, the registry still drives MySQL:
                // reconcile every interval until the next attempt.
                let until = tokio::time::Instant::now() + delay;
                loop {
                    reconcile(&ctx, &mut store).await;
                    let left = until.saturating_duration_since(tokio::time::Instant::now());
                    let every = ctx.s.config.worker.reconcile_interval;
                    if left.is_zero() {
                        break;
                    }
                    tokio::time::sleep(if every.is_zero() { left } else { every.min(left) }).await;
                }
            }
        }
    }
}

async fn consume(ctx: &Ctx, store: &mut AppliedStore) -> Result<(), String> {
    let a = &ctx.s.config.announce;
    let (conn, _) = connect_to(a).await?;
    let topology = Topology::from_config(a);
    let ch = topology.ensure(&conn, Side::Worker).await?;
    // Confirms for what the worker itself publishes: dead letters.
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
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
    let every = ctx.s.config.worker.reconcile_interval;
    let mut tick = tokio::time::interval(if every.is_zero() {
        Duration::from_secs(3600)
    } else {
        every
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            delivery = consumer.next() => {
                let Some(delivery) = delivery else { return Ok(()) };
                let delivery = delivery.map_err(|e| e.to_string())?;
                handle(ctx, &ch, &topology, store, delivery).await?;
            }
            _ = tick.tick() => reconcile(ctx, store).await,
        }
    }
}

/// Level-triggered: read who holds backend1 and which backends run from
/// EC2; when that differs from what MySQL was last reconciled with, run the
/// playbook as for a promotion of that holder (idempotent: what already
/// matches is left alone), and remember the view on success. A failure is
/// alerted once per view and retried at the next tick.
async fn reconcile(ctx: &Ctx, store: &mut AppliedStore) {
    let w = &ctx.s.config.worker;
    let Some(client) = &ctx.ec2 else { return };
    if w.reconcile_interval.is_zero() {
        return;
    }
    let fleet = &ctx.s.config.aws.fleet;
    let view = match read_registry(ctx, client).await {
        Ok((v, _)) => v,
        Err(e) => {
            tracing::warn!(
                "reconcile: cannot read the registry ({e}); trying again in {:?}",
                w.reconcile_interval
            );
            return;
        }
    };
    if store.reconciled() == Some(&view) {
        return;
    }
    // Only replicas went down since the last reconcile (the primary and its
    // epoch as they were, no replica new): MySQL needs nothing, and a
    // playbook run now would wait on the servers that just died (and hold
    // up a promotion behind it). Recorded, not run.
    if let Some(last) = store.reconciled()
        && last.primary == view.primary
        && last.epoch == view.epoch
        && view.replicas.iter().all(|r| last.replicas.contains(r))
    {
        tracing::info!(down = ?view.down, "reconcile: only replicas went down; MySQL needs nothing");
        if let Err(e) = store.record_reconciled(&view) {
            tracing::error!("reconcile: {e}");
        }
        return;
    }
    let Some(primary) = view.primary.clone() else {
        tracing::debug!("reconcile: no running backend holds ID 1; nothing to follow");
        return;
    };
    let ev = TransitionEvent {
        schema: crate::event::SCHEMA,
        event_id: format!("reconcile-{primary}-{}", view.epoch),
        fleet: fleet.clone(),
        role: Role::Backend,
        from_id: 1,
        to_id: 1,
        instance_id: primary.clone(),
        fenced_instances: view.down.clone(),
        vacant: false,
        overlay_addr: ctx
            .s
            .layout
            .overlay_addr(crate::layout::Slot::new(Role::Backend, 1)),
        epoch: view.epoch,
        timings: crate::event::Timings {
            silent_since_ms: None,
            detected_ms: 0,
            fenced_ms: 0,
            identity_up_ms: 0,
            announced_ms: crate::clock::unix_ms(std::time::SystemTime::now()),
        },
    };
    if let Err(e) = ev.check(fleet, &ctx.s.layout) {
        tracing::error!("reconcile: the registry reads as an invalid topology ({e}); not applied");
        return;
    }
    tracing::warn!(
        primary = %primary,
        epoch = view.epoch,
        replicas = ?view.replicas,
        down = ?view.down,
        "reconcile: MySQL was last reconciled with {:?}; running the playbook for the registry's topology",
        store.reconciled().and_then(|v| v.primary.clone())
    );
    let position = promote_directly(ctx, &ev).await;
    match run_playbook(w, &w.playbook, &ev).await {
        Ok(quarantined) => {
            alert_quarantined(ctx, &ev, &quarantined);
            check_left_behind(ctx, &ev, position).await;
            if let Err(e) = store.record_reconciled(&view) {
                tracing::error!("reconcile: {e}");
                return;
            }
            *ctx.failed_view.lock().unwrap_or_else(|p| p.into_inner()) = None;
            tracing::warn!(primary = %primary, epoch = view.epoch, replicas = ?view.replicas, "reconcile: MySQL follows the registry");
        }
        Err(e) => {
            tracing::error!(primary = %primary, epoch = view.epoch, "reconcile: the playbook failed ({e}); trying again in {:?}", w.reconcile_interval);
            let mut failed = ctx.failed_view.lock().unwrap_or_else(|p| p.into_inner());
            if failed.as_ref() != Some(&view) {
                *failed = Some(view.clone());
                if let Some(n) = &ctx.notifier {
                    n.raise(
                        "reconcile_failed",
                        "worker".into(),
                        "backend1".into(),
                        None,
                        format!(
                            "MySQL cannot be made to follow {primary} (epoch {}): {e}",
                            view.epoch
                        ),
                    );
                }
            }
        }
    }
}

/// With `worker.mysql_client` set: promote `ev`'s holder (backend1) with
/// the client before the playbook runs, when it is safe to here and now
/// (`shell/promote.rs`). The applications write again within a few hundred
/// ms instead of after an Ansible run; the playbook then writes the role
/// drop-in, points the replicas at the new primary, or does the whole
/// promotion itself when this step declined (logged with why).
async fn promote_directly(ctx: &Ctx, ev: &TransitionEvent) -> Option<String> {
    let w = &ctx.s.config.worker;
    if w.mysql_client.is_empty() || ev.role != Role::Backend || ev.to_id != 1 {
        return None;
    }
    let ec2 = ctx.ec2.as_ref()?;
    let (view, addresses) = match read_registry(ctx, ec2).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(event_id = %ev.event_id, "direct promotion: cannot read the registry ({e}); the playbook promotes");
            return None;
        }
    };
    // A filtered read may lag the holder's tags, which `verify` read by
    // instance ID (EC2 makes those consistent sooner): an older epoch is
    // that lag, and the event's holder stands. A later epoch, or another
    // holder at the event's, is not.
    if view.epoch > ev.epoch
        || (view.epoch == ev.epoch && view.primary.as_deref() != Some(ev.instance_id.as_str()))
    {
        tracing::warn!(event_id = %ev.event_id, "direct promotion: the registry shows {:?} at epoch {} as backend1; the playbook decides", view.primary, view.epoch);
        return None;
    }
    let server = |i: &String| {
        addresses.get(i).map(|h| Server {
            instance: i.clone(),
            host: h.clone(),
        })
    };
    let Some(candidate) = server(&ev.instance_id) else {
        tracing::warn!(event_id = %ev.event_id, "direct promotion: EC2 shows no private address for {}; the playbook promotes", ev.instance_id);
        return None;
    };
    // Every other live backend is drained and checked, the holder a
    // lagging read still shows as primary included: unless the event
    // fenced it (a failover), it may still be writable (a switchover not
    // yet demoted), and the promotion must see it and refuse.
    let others: Vec<Server> = view
        .replicas
        .iter()
        .chain(view.primary.iter())
        .filter(|r| **r != ev.instance_id && !ev.fenced_instances.contains(r))
        .filter_map(server)
        .collect();
    let client = MysqlClient::new(&w.mysql_client, "worker.mysql_client");
    match promote::promote(&client, &candidate, &others, w.catch_up_timeout).await {
        Outcome::Promoted {
            positions,
            left_out,
            took,
        } => {
            tracing::warn!(
                event_id = %ev.event_id,
                instance = %ev.instance_id,
                ?positions,
                ?left_out,
                "MySQL promoted directly in {} ms: writable, replication forgotten; the playbook follows for the role drop-in and the replicas",
                took.as_millis()
            );
            positions.get(&ev.instance_id).cloned()
        }
        Outcome::NotPending => {
            tracing::debug!(
                event_id = %ev.event_id,
                "direct promotion: {} replicates from nobody, nothing pending",
                ev.instance_id
            );
            None
        }
        Outcome::LeftToPlaybook(why) => {
            tracing::warn!(
                event_id = %ev.event_id,
                instance = %ev.instance_id,
                "direct promotion not done ({why}); the playbook promotes"
            );
            None
        }
    }
}

/// `ev` as the playbook gets it: its fenced instances with every backend
/// the registry shows down added. A replica fenced by an earlier event (it
/// died with the primary) is no follower to drain or re-point; the
/// playbook would wait on it and fail.
async fn with_registry_down(ctx: &Ctx, ev: &TransitionEvent) -> TransitionEvent {
    let mut ev = ev.clone();
    if let Some(client) = &ctx.ec2
        && let Ok((view, _)) = read_registry(ctx, client).await
    {
        for d in view.down {
            if d != ev.instance_id && !ev.fenced_instances.contains(&d) {
                ev.fenced_instances.push(d);
            }
        }
    }
    ev
}

/// The registry's backends, with each live replica noted as seen.
async fn read_registry(
    ctx: &Ctx,
    client: &aws_sdk_ec2::Client,
) -> Result<(BackendView, std::collections::BTreeMap<String, String>), String> {
    let (view, addresses) = backend_servers(client, &ctx.s.config.aws.fleet)
        .await
        .map_err(|e| e.to_string())?;
    ctx.replicas
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .saw(&view, std::time::Instant::now());
    Ok((view, addresses))
}

/// After `ev`'s holder became the primary: replicas that died with the old
/// one may have acknowledged writes it never received. Named in an alert
/// (`writes_may_be_missing`), with the GTIDs beyond `position` (the new
/// primary's position as a replica: the direct promotion's, or else read
/// from it), once per promotion.
async fn check_left_behind(ctx: &Ctx, ev: &TransitionEvent, position: Option<String>) {
    let Some(client) = &ctx.ec2 else { return };
    let key = (ev.instance_id.clone(), ev.epoch);
    if ctx
        .loss_checked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        == Some(&key)
    {
        return;
    }
    let Ok((view, addresses)) = read_registry(ctx, client).await else {
        return;
    };
    let dead = ctx
        .replicas
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .died_with_primary(
            &view,
            &ev.fenced_instances,
            &ev.instance_id,
            std::time::Instant::now(),
        );
    *ctx.loss_checked.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
    if dead.is_empty() {
        return;
    }
    let w = &ctx.s.config.worker;
    let position = match (position, addresses.get(&ev.instance_id)) {
        (Some(p), _) => Some(p),
        (None, Some(host)) if !w.mysql_client.is_empty() => {
            MysqlClient::new(&w.mysql_client, "worker.mysql_client")
                .at(host)
                .lines("SELECT @@GLOBAL.gtid_slave_pos", Duration::from_secs(10))
                .await
                .ok()
                .map(|l| l.join(","))
        }
        _ => None,
    };
    let detail = possibly_missing(&ev.instance_id, position.as_deref(), &dead);
    tracing::error!(event_id = %ev.event_id, primary = %ev.instance_id, ?dead, "{detail}");
    if let Some(n) = &ctx.notifier {
        n.raise(
            "writes_may_be_missing",
            "worker".into(),
            "backend1".into(),
            None,
            detail,
        );
    }
}

/// After a promotion from an event: if the registry shows exactly that
/// holder, and no instance the event left out as fenced runs again (the
/// playbook did not make it a replica), MySQL matches the registry and the
/// next reconcile has nothing to do.
async fn note_reconciled(ctx: &Ctx, store: &mut AppliedStore, ev: &TransitionEvent) {
    let Some(client) = &ctx.ec2 else { return };
    if let Ok((view, _)) = read_registry(ctx, client).await
        && view.primary.as_deref() == Some(ev.instance_id.as_str())
        && view.epoch == ev.epoch
        && !view
            .replicas
            .iter()
            .any(|r| ev.fenced_instances.contains(r))
        && let Err(e) = store.record_reconciled(&view)
    {
        tracing::error!("{e}");
    }
}

/// Alert each server a playbook quarantined.
fn alert_quarantined(ctx: &Ctx, ev: &TransitionEvent, quarantined: &[String]) {
    for q in quarantined {
        tracing::error!(event_id = %ev.event_id, "{q}");
        if let Some(n) = &ctx.notifier {
            n.raise(
                "quarantine",
                "worker".into(),
                "backend".into(),
                None,
                q.clone(),
            );
        }
    }
}

/// Put `d` in the dead-letter queue with `reason`: a copy goes to the
/// dead-letter exchange with the reason in its headers, then the original
/// is acked. Should the copy fail, the original is rejected (the queue
/// dead-letters it, without the reason).
async fn dead_letter(
    ctx: &Ctx,
    ch: &Channel,
    topology: &Topology,
    d: &Delivery,
    reason: &str,
) -> Result<(), String> {
    tracing::error!(
        user = ?d.properties.user_id().as_ref().map(|u| u.to_string()),
        "dead-lettered: {reason}"
    );
    if let Some(n) = &ctx.notifier {
        let id = d.properties.message_id().as_ref().map(|s| s.to_string());
        n.raise(
            "dead_letter",
            "worker".into(),
            d.routing_key.to_string(),
            None,
            format!(
                "{reason} (event {}; `chainwatch worker dead-letters` lists it, `chainwatch worker replay` retries it)",
                id.as_deref().unwrap_or("-")
            ),
        );
    }
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

/// Ask EC2 whether the event's instance holds what it claims, for up to
/// about 4 s: the taker's tag writes may take a moment to show (a read by
/// instance ID, which EC2 makes consistent within a fraction of a second).
async fn verify(ctx: &Ctx, ev: &TransitionEvent) -> Result<HolderCheck, String> {
    let Some(client) = &ctx.ec2 else {
        return Ok(HolderCheck::Holder);
    };
    let fleet = &ctx.s.config.aws.fleet;
    let mut last = Ok(HolderCheck::Holder);
    for attempt in 0..16 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
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
            return dead_letter(
                ctx,
                ch,
                topology,
                &d,
                &format!("not a transition event: {e}"),
            )
            .await;
        }
    };
    let span = format!(
        "{}{}->{}{} epoch {} ({})",
        ev.role, ev.from_id, ev.role, ev.to_id, ev.epoch, ev.event_id
    );
    let w = &s.config.worker;
    if !w.publishers.is_empty() {
        let user = d.properties.user_id().as_ref().map(|u| u.to_string());
        // The worker's own user: a `chainwatch worker replay` of a dead
        // letter, checked from here on like any event.
        if !user
            .as_ref()
            .is_some_and(|u| w.publishers.contains(u) || ctx.own_users.contains(u))
        {
            let reason = format!(
                "{span}: published by broker user {user:?}, not one of worker.publishers (nor the worker's own)"
            );
            return dead_letter(ctx, ch, topology, &d, &reason).await;
        }
    }
    if let Err(e) = ev.check(&s.config.aws.fleet, &s.layout) {
        return dead_letter(ctx, ch, topology, &d, &format!("{span}: {e}")).await;
    }
    match store.decide(&ev) {
        Decision::Duplicate => {
            let reason = format!("{span}: already applied (a replay or a redelivery)");
            return dead_letter(ctx, ch, topology, &d, &reason).await;
        }
        Decision::Conflict { applied_event } => {
            let reason = format!(
                "{span}: event {applied_event} was applied at the same epoch; one of them is forged"
            );
            return dead_letter(ctx, ch, topology, &d, &reason).await;
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
            return dead_letter(ctx, ch, topology, &d, &reason).await;
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
    let promotion = ev.role == Role::Backend && ev.to_id == 1;
    if promotion
        && store.reconciled().is_some_and(|v| {
            v.primary.as_deref() == Some(ev.instance_id.as_str()) && v.epoch == ev.epoch
        })
    {
        tracing::warn!(event_id = %ev.event_id, "{span}: MySQL was already reconciled with this holder from the registry");
        store.record(&ev).map_err(|e| e.to_string())?;
        return ack(&d).await.map_err(|e| e.to_string());
    }
    let position = if promotion {
        promote_directly(ctx, &ev).await
    } else {
        None
    };
    if position.is_some() {
        // Writable now: whatever was left behind is said now, not after
        // the playbook's run.
        check_left_behind(ctx, &ev, position.clone()).await;
    }
    let for_playbook = if promotion {
        with_registry_down(ctx, &ev).await
    } else {
        ev.clone()
    };
    let first = w.retry_backoff;
    let mut delays = crate::backoff::delays(first, first * 16);
    let mut last = String::new();
    for attempt in 1..=w.attempts {
        tracing::info!(event_id = %ev.event_id, attempt, playbook = %playbook.display(), "{span}: running the playbook");
        match run_playbook(w, &playbook, &for_playbook).await {
            Ok(quarantined) => {
                alert_quarantined(ctx, &ev, &quarantined);
                store.record(&ev).map_err(|e| e.to_string())?;
                if promotion {
                    note_reconciled(ctx, store, &ev).await;
                    check_left_behind(ctx, &ev, position.clone()).await;
                }
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
    dead_letter(ctx, ch, topology, &d, &reason).await
}
