//! The RabbitMQ sink (lapin) and the topology it shares with the worker.
//!
//! Topology (declared by the daemon and the worker when the broker has none
//! and their user may; otherwise provisioned from `chainwatch
//! broker-definitions`, with least-privilege users):
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
//!
//! Least privilege ([`Topology::definitions`]): a node's broker user may
//! only publish to the exchange (no configure, no read), so it can neither
//! consume, purge nor re-route the worker's queue; the worker's may only
//! read its queue and the dead letters, publish to the dead-letter
//! exchange and replay a dead letter into its own queue, so no other
//! consumer of events ever sees one it wrote. A client first checks, without
//! any permission, that what it needs exists (passive declares), and
//! declares the topology only when it does not.

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

/// Which side of the topology a client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A node: publishes events and alerts to the exchange.
    Publisher,
    /// The worker: consumes its queue, dead-letters, reads the dead
    /// letters.
    Worker,
}

impl Topology {
    /// A channel on `conn` on which what `side` needs exists: checked with
    /// passive declares, which need no permission; when something is
    /// missing, the whole topology is declared on a new channel (a failed
    /// passive declare closes its channel), which needs the configure
    /// permission. The error says what to do.
    pub async fn ensure(&self, conn: &Connection, side: Side) -> Result<Channel, String> {
        self.ensure_or_mend(conn, side, false).await
    }

    /// [`Topology::ensure`]; with `mend` (a publish came back unrouted: a
    /// binding is gone), first declare the whole topology again, which
    /// puts the bindings back where this user may configure; where it may
    /// not (least privilege), the broker's definitions are the operator's
    /// to mend, and the checks go on as usual.
    pub async fn ensure_or_mend(
        &self,
        conn: &Connection,
        side: Side,
        mend: bool,
    ) -> Result<Channel, String> {
        if mend {
            let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
            match self.declare(&ch).await {
                Ok(()) => return Ok(ch),
                Err(e) => tracing::warn!(
                    "a publish came back unrouted and this user may not declare the topology again ({e}): import `chainwatch broker-definitions` into the vhost"
                ),
            }
        }
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        match self.check(&ch, side).await {
            Ok(()) => return Ok(ch),
            Err(e) => {
                tracing::info!("the broker lacks part of chainwatch's topology ({e}): declaring it")
            }
        }
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        match self.declare(&ch).await {
            Ok(()) => Ok(ch),
            Err(e) => Err(format!(
                "the broker lacks chainwatch's topology and this user may not declare it ({e}): import `chainwatch broker-definitions` into the vhost (rabbitmqctl import_definitions), or give this user the configure permission"
            )),
        }
    }

    /// Passive declares of what `side` uses.
    async fn check(&self, ch: &Channel, side: Side) -> lapin::Result<()> {
        let passive = ExchangeDeclareOptions {
            passive: true,
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let exchanges = match side {
            Side::Publisher => vec![&self.exchange],
            Side::Worker => vec![&self.exchange, &self.dlx],
        };
        for x in exchanges {
            ch.exchange_declare(
                x.as_str().into(),
                ExchangeKind::Topic,
                passive,
                FieldTable::default(),
            )
            .await?;
        }
        // A publisher's queues are the broker's business: a publish that
        // no queue takes is returned, and stays in the outbox.
        if side == Side::Worker {
            for q in [&self.queue, &self.dlq] {
                ch.queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// RabbitMQ definitions (`rabbitmqctl import_definitions`) of this
    /// topology in `vhost`, with the least-privilege permissions of
    /// `publishers` (the nodes' broker users) and `worker` (the worker's).
    /// No user and no password: those are created apart
    /// (`rabbitmqctl add_user`), so the file holds no secret.
    pub fn definitions(
        &self,
        vhost: &str,
        publishers: &[String],
        worker: &str,
    ) -> serde_json::Value {
        use serde_json::json;
        let exchange = |name: &str, kind: &str| {
            json!({"name": name, "vhost": vhost, "type": kind, "durable": true,
                   "auto_delete": false, "internal": false, "arguments": {}})
        };
        let queue = |name: &str, arguments: serde_json::Value| {
            json!({"name": name, "vhost": vhost, "durable": true,
                   "auto_delete": false, "arguments": arguments})
        };
        let binding = |source: &str, queue: &str, key: &str| {
            json!({"source": source, "vhost": vhost, "destination": queue,
                   "destination_type": "queue", "routing_key": key, "arguments": {}})
        };
        let permission = |user: &str, write: String, read: String| json!({"user": user, "vhost": vhost, "configure": "^$", "write": write, "read": read});
        let mut permissions: Vec<_> = publishers
            .iter()
            .map(|u| permission(u, exact(&[&self.exchange]), "^$".into()))
            .collect();
        // The worker writes dead letters, and replays one straight into
        // its own queue through the default exchange (`amq.default` to
        // the permission check); not to the events' exchange.
        permissions.push(permission(
            worker,
            exact(&[&self.dlx, &"amq.default".to_string()]),
            exact(&[&self.queue, &self.dlq]),
        ));
        json!({
            "vhosts": [{"name": vhost}],
            "permissions": permissions,
            "exchanges": [exchange(&self.exchange, "topic"), exchange(&self.dlx, "fanout")],
            "queues": [
                queue(&self.queue, json!({"x-queue-type": "quorum", "x-dead-letter-exchange": self.dlx})),
                queue(&self.dlq, json!({})),
                queue(&self.alerts, json!({"x-max-length": ALERTS_QUEUE_MAX})),
            ],
            "bindings": [
                binding(&self.exchange, &self.queue, "*.takeover"),
                binding(&self.exchange, &self.alerts, "alert.*"),
                binding(&self.dlx, &self.dlq, "#"),
            ],
        })
    }
}

/// A RabbitMQ permission pattern that matches exactly `names`.
fn exact(names: &[&String]) -> String {
    let escaped: Vec<String> = names
        .iter()
        .map(|n| {
            n.chars()
                .flat_map(|c| {
                    let meta = "\\.+*?()|[]{}^$".contains(c);
                    meta.then_some('\\').into_iter().chain(std::iter::once(c))
                })
                .collect()
        })
        .collect();
    format!("^({})$", escaped.join("|"))
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

/// Connect to the first of `[announce]`'s brokers that answers, with the
/// password of `announce.rabbitmq_password_file` when it is set (read now,
/// so a rotated password is used at the next connection); errors never
/// hold the password.
pub async fn connect_to(c: &AnnounceConfig) -> Result<(Connection, String), String> {
    let Some(file) = &c.rabbitmq_password_file else {
        return connect(&c.rabbitmq_urls, c.timeout).await;
    };
    let password = read_secret(file)?;
    let urls = c
        .rabbitmq_urls
        .iter()
        .map(|u| crate::config::with_password(u, &password))
        .collect::<Result<Vec<_>, _>>()?;
    connect(&urls, c.timeout)
        .await
        .map_err(|e| e.replace(password.as_str(), "***"))
}

/// The broker password: the first line of `path`, a file nobody but its
/// owner and group may read.
fn read_secret(path: &std::path::Path) -> Result<String, String> {
    use crate::fsio::{Readers, read_secret};
    let key = "announce.rabbitmq_password_file";
    let bytes = read_secret(path, Readers::OwnerAndGroup)
        .map_err(|e| format!("{key}: {e}"))?
        .ok_or_else(|| format!("{key} {} does not exist", path.display()))?;
    let password = String::from_utf8_lossy(&bytes)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    if password.is_empty() {
        return Err(format!("{key} {} is empty", path.display()));
    }
    Ok(password)
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
    config: AnnounceConfig,
    topology: Topology,
    channel: Mutex<Option<(Connection, Channel, Option<String>)>>,
    /// The last publish came back unrouted: mend the topology at the next
    /// connection.
    unrouted: std::sync::atomic::AtomicBool,
}

impl RabbitSink {
    /// A sink for the configured brokers.
    pub fn new(c: &AnnounceConfig) -> Self {
        RabbitSink {
            config: c.clone(),
            topology: Topology::from_config(c),
            channel: Mutex::new(None),
            unrouted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    async fn open(&self) -> Result<(Connection, Channel, Option<String>), String> {
        let (conn, url) = connect_to(&self.config).await?;
        let mend = self
            .unrouted
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        let ch = self
            .topology
            .ensure_or_mend(&conn, Side::Publisher, mend)
            .await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
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
            self.unrouted
                .store(true, std::sync::atomic::Ordering::SeqCst);
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
        let timeout = self.config.timeout;
        let result = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("no confirm within {timeout:?}")),
        };
        if result.is_err() {
            *guard = None;
        }
        result.map_err(|e| {
            let mut e = e;
            for url in &self.config.rabbitmq_urls {
                e = e.replace(url.as_str(), &redact(url));
            }
            e
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_give_publishers_the_exchange_only_and_the_worker_its_queues_only() {
        let t = Topology::from_config(&AnnounceConfig::default());
        let d = t.definitions("prod", &["node-a".into(), "node.b".into()], "worker");
        let perms = d["permissions"].as_array().unwrap();
        assert_eq!(perms.len(), 3);
        for p in perms {
            assert_eq!(p["vhost"], "prod");
            // Nobody may create, delete or re-bind anything.
            assert_eq!(p["configure"], "^$");
        }
        assert_eq!(perms[0]["user"], "node-a");
        assert_eq!(perms[1]["user"], "node.b");
        // The dot is escaped: `chainwatchX` is not the exchange.
        assert_eq!(perms[0]["write"], "^(chainwatch)$");
        assert_eq!(perms[0]["read"], "^$");
        assert_eq!(perms[2]["user"], "worker");
        assert_eq!(perms[2]["write"], "^(chainwatch\\.dlx|amq\\.default)$");
        assert_eq!(
            perms[2]["read"],
            "^(chainwatch\\.worker|chainwatch\\.dead)$"
        );
        let queues: Vec<_> = d["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            queues,
            ["chainwatch.worker", "chainwatch.dead", "chainwatch.alerts"]
        );
        assert_eq!(
            d["queues"][0]["arguments"]["x-dead-letter-exchange"],
            "chainwatch.dlx"
        );
        assert_eq!(d["bindings"][0]["routing_key"], "*.takeover");
        // No user and no password in the file.
        assert!(d.get("users").is_none());
    }
}
