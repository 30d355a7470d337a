//! The RabbitMQ sink (lapin) and the topology it shares with the worker.
//!
//! Topology, declared idempotently by both the daemon and the worker:
//!
//! * `chainwatch` — durable topic exchange; routing key `<role>.takeover`;
//! * `chainwatch.worker` — durable quorum queue bound to `*.takeover`, whose
//!   rejected messages go to the dead-letter exchange;
//! * `chainwatch.dlx` — durable fanout dead-letter exchange, and
//!   `chainwatch.dead`, the durable queue that keeps what it receives;
//! * `chainwatch.alerts` — durable queue bound to `alert.*`: the daemons'
//!   alerts, the latest [`ALERTS_QUEUE_MAX`] kept.
//!
//! Publishes are persistent and mandatory and wait for the publisher
//! confirm; a nack, a return (no queue bound) or a time-out is a failure
//! that leaves the event in the outbox.

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use crate::config::{ALERTS_QUEUE_MAX, AnnounceConfig, redact};
use crate::event::Outgoing;

/// Exchange and queue names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Topic exchange.
    pub exchange: String,
    /// Worker queue.
    pub queue: String,
    /// Dead-letter exchange.
    pub dlx: String,
    /// Dead-letter queue.
    pub dlq: String,
    /// Alerts queue.
    pub alerts: String,
}

impl Topology {
    /// From the config.
    pub fn from_config(c: &AnnounceConfig) -> Self {
        Topology {
            exchange: c.exchange.clone(),
            queue: c.queue.clone(),
            dlx: c.dead_letter_exchange.clone(),
            dlq: c.dead_letter_queue.clone(),
            alerts: c.alerts_queue.clone(),
        }
    }

    /// Declare everything (idempotent).
    pub async fn declare(&self, ch: &Channel) -> lapin::Result<()> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        // The events' topic exchange and the dead letters' fanout one.
        for (name, kind) in [
            (&self.exchange, ExchangeKind::Topic),
            (&self.dlx, ExchangeKind::Fanout),
        ] {
            ch.exchange_declare(
                name.as_str().into(),
                kind,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        }
        let mut bounded = FieldTable::default();
        bounded.insert(
            ShortString::from("x-max-length"),
            AMQPValue::LongLongInt(ALERTS_QUEUE_MAX),
        );
        let mut worker = FieldTable::default();
        worker.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString("quorum".into()),
        );
        worker.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(self.dlx.as_str().into()),
        );
        for (queue, args, exchange, key) in [
            (&self.dlq, FieldTable::default(), &self.dlx, "#"),
            (&self.alerts, bounded, &self.exchange, "alert.*"),
            (&self.queue, worker, &self.exchange, "*.takeover"),
        ] {
            ch.queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await?;
            ch.queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }
}

/// The (percent-decoded) user name of a broker URL: the `user_id` the
/// broker validates on what this connection publishes.
pub fn broker_user(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let name = percent_encoding::percent_decode_str(u.username())
        .decode_utf8()
        .ok()?
        .into_owned();
    (!name.is_empty()).then_some(name)
}

/// One dead letter, as `chainwatch worker dead-letters` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message ID (the event ID for chainwatch's events).
    pub id: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Why the worker refused it (`x-chainwatch-reason`).
    pub reason: String,
    /// The body.
    pub data: Vec<u8>,
}

impl DeadLetter {
    /// A delivery as a dead letter: its message ID, routing key, the
    /// worker's reason (`x-chainwatch-reason`) and body.
    pub fn of(d: &lapin::message::Delivery) -> DeadLetter {
        let reason = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| match h.inner().get("x-chainwatch-reason") {
                Some(AMQPValue::LongString(r)) => {
                    Some(String::from_utf8_lossy(r.as_bytes()).into_owned())
                }
                _ => None,
            })
            .unwrap_or_else(|| "(no reason recorded)".into());
        DeadLetter {
            id: d
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            routing_key: d.routing_key.to_string(),
            reason,
            data: d.data.clone(),
        }
    }
}

/// Take every message of `queue` without acking it, with its delivery tag:
/// the caller acks (`basic_ack`) what it consumed, and closing the channel
/// puts the rest back.
pub async fn take_all(ch: &Channel, queue: &str) -> lapin::Result<Vec<(DeadLetter, u64)>> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await?
    {
        out.push((DeadLetter::of(&m.delivery), m.delivery.delivery_tag));
    }
    Ok(out)
}

/// Connect to the first broker that answers, returning the connection and
/// the URL it used; errors name every URL tried, without passwords.
pub async fn connect(urls: &[String], timeout: Duration) -> Result<(Connection, String), String> {
    let mut errors = Vec::new();
    for url in urls {
        match tokio::time::timeout(
            timeout,
            Connection::connect(url, ConnectionProperties::default()),
        )
        .await
        {
            Ok(Ok(conn)) => {
                tracing::info!(broker = %redact(url), "connected to RabbitMQ");
                return Ok((conn, url.clone()));
            }
            Ok(Err(e)) => errors.push(format!("{}: {e}", redact(url))),
            Err(_) => errors.push(format!("{}: no answer within {timeout:?}", redact(url))),
        }
    }
    if errors.is_empty() {
        return Err("no RabbitMQ URL configured".into());
    }
    // The library's messages could echo a URL: scrub every configured one.
    let mut msg = errors.join("; ");
    for url in urls {
        msg = msg.replace(url.as_str(), &redact(url));
    }
    Err(msg)
}

/// Publishes events with confirms.
pub struct RabbitSink {
    urls: Vec<String>,
    topology: Topology,
    timeout: Duration,
    channel: Mutex<Option<(Connection, Channel, Option<String>)>>,
}

impl RabbitSink {
    /// A sink for the configured brokers.
    pub fn new(c: &AnnounceConfig) -> Self {
        RabbitSink {
            urls: c.rabbitmq_urls.clone(),
            topology: Topology::from_config(c),
            timeout: c.timeout,
            channel: Mutex::new(None),
        }
    }

    async fn open(&self) -> Result<(Connection, Channel, Option<String>), String> {
        let (conn, url) = connect(&self.urls, self.timeout).await?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        self.topology
            .declare(&ch)
            .await
            .map_err(|e| format!("declaring the topology: {e}"))?;
        Ok((conn, ch, broker_user(&url)))
    }

    async fn publish(
        &self,
        ch: &Channel,
        user: Option<&str>,
        entry: Outgoing<'_>,
    ) -> Result<(), String> {
        let (at_ms, kind, routing_key, body) = match entry {
            Outgoing::Transition(ev) => (
                ev.timings.announced_ms,
                "chainwatch.takeover",
                ev.routing_key(),
                ev.to_json(),
            ),
            Outgoing::Alert(a) => (a.at_ms, "chainwatch.alert", a.routing_key(), a.to_json()),
        };
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(entry.id().into())
            .with_timestamp(at_ms / 1000)
            .with_type(kind.into())
            .with_app_id("chainwatch".into());
        // The broker checks that `user_id` is the connection's user: the
        // worker can trust it to name the publisher.
        if let Some(user) = user {
            props = props.with_user_id(user.into());
        }
        let confirm = ch
            .basic_publish(
                self.topology.exchange.as_str().into(),
                routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                props,
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        if !confirm.is_ack() {
            return Err("the broker nacked the message".into());
        }
        if let Some(returned) = confirm.take_message() {
            return Err(format!(
                "the broker returned the message ({} {}): no queue is bound to {routing_key}",
                returned.reply_code, returned.reply_text,
            ));
        }
        Ok(())
    }

    /// Deliver one entry; on any error the cached connection is dropped so
    /// the next attempt reconnects (possibly to the next broker).
    pub async fn deliver<'a>(&self, entry: impl Into<Outgoing<'a>>) -> Result<(), String> {
        let entry = entry.into();
        let mut guard = self.channel.lock().await;
        let work = async {
            if guard
                .as_ref()
                .is_none_or(|(c, ch, _)| !c.status().connected() || !ch.status().connected())
            {
                *guard = Some(self.open().await?);
            }
            let (_, ch, user) = guard.as_ref().ok_or("no channel")?;
            self.publish(ch, user.as_deref(), entry).await
        };
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("no confirm within {:?}", self.timeout)),
        };
        if result.is_err() {
            *guard = None;
        }
        result.map_err(|e| {
            let mut e = e;
            for url in &self.urls {
                e = e.replace(url.as_str(), &redact(url));
            }
            e
        })
    }
}
