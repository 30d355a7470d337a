//! Announcing transitions: the outbox-backed announcer the driver calls, and
//! the delivery task that drains the outbox into every sink (RabbitMQ,
//! CloudWatch Logs), retrying forever with bounded back-off.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::Settings;
use crate::event::TransitionEvent;
use crate::layout::Role;
use crate::shell::Announcer;
use crate::shell::aws::cloudwatch::{self, CloudWatchSink};
use crate::shell::broker::RabbitSink;
use crate::shell::outbox::{Entry, Outbox};

/// A place transitions are delivered to.
pub enum Sink {
    /// RabbitMQ, publisher confirms.
    Rabbit(Box<super::broker::RabbitSink>),
    /// CloudWatch Logs, Embedded Metric Format.
    CloudWatch(super::aws::cloudwatch::CloudWatchSink),
}

impl Sink {
    /// The sink's name (also its outbox marker).
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Rabbit(_) => "rabbitmq",
            Sink::CloudWatch(_) => "cloudwatch",
        }
    }

    /// Deliver one transition or alert; `Ok` only when the sink
    /// confirmed it.
    pub async fn deliver(&self, entry: &Entry) -> Result<(), String> {
        match self {
            Sink::Rabbit(s) => s.deliver(entry).await,
            Sink::CloudWatch(s) => s.deliver(entry).await,
        }
    }
}

/// The announcer of an active node: outbox first, then wake the delivery
/// task.
pub struct OutboxAnnouncer {
    outbox: Arc<Outbox>,
    notify: Arc<Notify>,
}

impl OutboxAnnouncer {
    /// An announcer writing to `outbox` and waking `notify`.
    pub fn new(outbox: Arc<Outbox>, notify: Arc<Notify>) -> Self {
        OutboxAnnouncer { outbox, notify }
    }
}

impl Announcer for OutboxAnnouncer {
    async fn announce(&self, ev: &TransitionEvent) {
        tracing::warn!(
            event_id = %ev.event_id,
            role = %ev.role,
            from_id = ev.from_id,
            to_id = ev.to_id,
            epoch = ev.epoch,
            failover_ms = ev.failover_ms(),
            "transition recorded in the outbox"
        );
        if let Err(e) = self.outbox.put(ev) {
            // The takeover is done; losing the announcement is the worst
            // outcome left, so say it as loudly as possible.
            tracing::error!(event = %String::from_utf8_lossy(&ev.to_json()), "CANNOT WRITE THE OUTBOX: {e}; the event is only in this log");
        }
        self.notify.notify_one();
    }

    fn pending(&self) -> u64 {
        self.outbox.count()
    }
}

impl OutboxAnnouncer {
    /// The outbox and the delivery task's waker, for alerts.
    pub fn alerts_route(&self) -> (Arc<Outbox>, Option<Arc<Notify>>) {
        (self.outbox.clone(), Some(self.notify.clone()))
    }
}

/// The sinks `[announce]` configures, by name.
pub fn sink_names(s: &Settings) -> Vec<String> {
    let a = &s.config.announce;
    let mut names = Vec::new();
    if !a.rabbitmq_urls.is_empty() {
        names.push("rabbitmq".to_string());
    }
    if !a.cloudwatch_log_group.is_empty() {
        names.push("cloudwatch".to_string());
    }
    names
}

/// The node's outbox (`<state_dir>/outbox`), for the configured sinks.
pub fn open_outbox(s: &Settings) -> Result<Outbox, String> {
    Outbox::open(s.config.node.state_dir.join("outbox"), sink_names(s)).map_err(|e| e.to_string())
}

/// Back-off of the delivery task.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

/// Drain the outbox into the sinks forever. Each sink keeps the order of
/// events; a sink that fails is retried after a doubling delay while the
/// others go on.
pub async fn deliver_forever(
    outbox: Arc<Outbox>,
    sinks: Vec<Sink>,
    notify: Arc<Notify>,
    backoff: Backoff,
) {
    let fresh = || crate::backoff::delays(backoff.initial, backoff.max);
    let mut delays = fresh();
    loop {
        let ok = deliver_pass(&outbox, &sinks).await;
        let wait = if ok {
            delays = fresh();
            Duration::from_secs(30)
        } else {
            delays.next().unwrap_or(backoff.max)
        };
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One pass over the outbox; true when nothing failed.
pub async fn deliver_pass(outbox: &Outbox, sinks: &[Sink]) -> bool {
    let pending = match outbox.pending() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("cannot read the outbox: {e}");
            return false;
        }
    };
    let mut failed: Vec<&'static str> = Vec::new();
    for p in pending {
        if sinks.is_empty() {
            tracing::warn!(event_id = %p.entry.id(), "no sink configured (announce.rabbitmq_urls, announce.cloudwatch_log_group): the transition is only logged");
            let _ = std::fs::remove_file(&p.path);
            continue;
        }
        for sink in sinks {
            let name = sink.name();
            if p.confirmed.iter().any(|c| c == name) || failed.contains(&name) {
                continue;
            }
            match sink.deliver(&p.entry).await {
                Ok(()) => {
                    tracing::info!(event_id = %p.entry.id(), sink = name, "event delivered");
                    if let Err(e) = outbox.confirm(&p, name) {
                        tracing::error!("cannot record the delivery in the outbox: {e}");
                        failed.push(name);
                    }
                }
                Err(e) => {
                    tracing::warn!(event_id = %p.entry.id(), sink = name, "delivery failed, the event stays in the outbox and is retried: {e}");
                    failed.push(name);
                }
            }
        }
    }
    failed.is_empty()
}
/// Write a heartbeat metric every `every`; failures are logged once per
/// change and retried at the next beat.
async fn heartbeat_forever(sink: CloudWatchSink, role: Role, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = None::<String>;
    loop {
        tick.tick().await;
        match sink.heartbeat(role.as_str()).await {
            Ok(()) => {
                if failing.take().is_some() {
                    tracing::info!("CloudWatch heartbeat written again");
                }
            }
            Err(e) => {
                if failing.as_deref() != Some(e.as_str()) {
                    tracing::warn!("CloudWatch heartbeat not written: {e}");
                    failing = Some(e);
                }
            }
        }
    }
}

/// The outbox, the sinks of `[announce]`, the heartbeat, and the task that
/// delivers (it re-sends whatever a previous run left pending at once).
pub async fn start(s: &Settings, instance_id: &str, role: Role) -> Result<OutboxAnnouncer, String> {
    let a = &s.config.announce;
    let mut sinks = Vec::new();
    if !a.rabbitmq_urls.is_empty() {
        sinks.push(Sink::Rabbit(Box::new(RabbitSink::new(a))));
    }
    if !a.cloudwatch_log_group.is_empty() {
        let client = cloudwatch::client(s.config.aws.region.as_deref(), a.timeout).await;
        if !a.heartbeat.is_zero() {
            let beat = CloudWatchSink::new(
                client.clone(),
                a.cloudwatch_log_group.clone(),
                instance_id.to_string(),
                a.metric_namespace.clone(),
            );
            tokio::spawn(heartbeat_forever(beat, role, a.heartbeat));
        }
        sinks.push(Sink::CloudWatch(CloudWatchSink::new(
            client,
            a.cloudwatch_log_group.clone(),
            instance_id.to_string(),
            a.metric_namespace.clone(),
        )));
    }
    if sinks.is_empty() {
        tracing::warn!(
            "no sink configured: transitions are only logged (set announce.rabbitmq_urls and announce.cloudwatch_log_group)"
        );
    }
    let outbox = Arc::new(open_outbox(s)?);
    debug_assert_eq!(
        outbox.sinks(),
        sinks
            .iter()
            .map(|k| k.name().to_string())
            .collect::<Vec<_>>()
    );
    let pending = outbox.count();
    if pending > 0 {
        tracing::warn!(
            pending,
            "events left in the outbox by an earlier run: delivering them"
        );
    }
    let notify = Arc::new(Notify::new());
    tokio::spawn(deliver_forever(
        outbox.clone(),
        sinks,
        notify.clone(),
        Backoff {
            initial: a.retry_initial,
            max: a.retry_max,
        },
    ));
    Ok(OutboxAnnouncer::new(outbox, notify))
}
