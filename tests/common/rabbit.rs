//! The machine's RabbitMQ with a dedicated vhost and user per test (the
//! `guest` user only logs in from loopback, and tests must not share state).

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use super::{have, sh, sh_quiet};

/// A vhost and a user, deleted on drop.
pub struct Rabbit {
    pub vhost: String,
    pub user: String,
    pub password: String,
    pub host: String,
    /// Further users of the vhost (see [`Rabbit::extra_user`]).
    pub extra: std::cell::RefCell<Vec<String>>,
}

impl Rabbit {
    /// Whether `rabbitmqctl` is there and the broker answers.
    pub fn available() -> bool {
        have("rabbitmqctl")
            && std::process::Command::new("rabbitmqctl")
                .arg("status")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// Create a vhost and user for `name`, reached at `host` (127.0.0.1, or
    /// a bridge address for namespaces).
    pub fn new(name: &str, host: &str) -> Rabbit {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("cw-{name}-{}-{n}", std::process::id());
        let r = Rabbit {
            vhost: id.clone(),
            user: id.clone(),
            password: format!("pw-{}", std::process::id()),
            host: host.to_string(),
            extra: Default::default(),
        };
        sh_quiet(&format!("rabbitmqctl -q delete_vhost {id}"));
        sh_quiet(&format!("rabbitmqctl -q delete_user {id}"));
        sh(&format!("rabbitmqctl -q add_vhost {id}"));
        sh(&format!("rabbitmqctl -q add_user {id} {}", r.password));
        sh(&format!(
            "rabbitmqctl -q set_permissions -p {id} {id} '.*' '.*' '.*'"
        ));
        r
    }

    /// Another user of this vhost with full permissions, named
    /// `<user>-<suffix>` and sharing the password. A leftover of the same
    /// name (a broker that outlived an earlier run whose pid was reused) is
    /// deleted first; the user is deleted on drop.
    pub fn extra_user(&self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.user);
        sh_quiet(&format!("rabbitmqctl -q delete_user {name}"));
        sh(&format!("rabbitmqctl -q add_user {name} {}", self.password));
        sh(&format!(
            "rabbitmqctl -q set_permissions -p {} {name} '.*' '.*' '.*'",
            self.vhost
        ));
        self.extra.borrow_mut().push(name.clone());
        name
    }

    /// Another user, named `<user>-<suffix>` and sharing the password, with
    /// no permission on any vhost (deleted on drop).
    pub fn bare_user(&self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.user);
        sh_quiet(&format!("rabbitmqctl -q delete_user {name}"));
        sh(&format!("rabbitmqctl -q add_user {name} {}", self.password));
        self.extra.borrow_mut().push(name.clone());
        name
    }

    /// The AMQP URL of `user` (sharing the password) on this vhost.
    pub fn url_of(&self, user: &str) -> String {
        format!(
            "amqp://{user}:{}@{}:5672/{}",
            self.password, self.host, self.vhost
        )
    }

    /// The AMQP URL with credentials.
    pub fn url(&self) -> String {
        format!(
            "amqp://{}:{}@{}:5672/{}",
            self.user, self.password, self.host, self.vhost
        )
    }

    /// A connection for the test's own checks.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.url(), ConnectionProperties::default())
            .await
            .expect("the test connects to RabbitMQ")
    }

    /// Take every message now in `queue` (acked), waiting up to `wait` for
    /// the first `min` of them.
    pub async fn drain(
        &self,
        queue: &str,
        min: usize,
        wait: Duration,
    ) -> Vec<lapin::message::Delivery> {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match ch
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .unwrap()
            {
                Some(m) => {
                    m.delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .unwrap();
                    out.push(m.delivery);
                }
                None if out.len() >= min || tokio::time::Instant::now() >= deadline => break,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let _ = conn.close(200, "done".into()).await;
        out
    }

    /// Dead letters taken from the worker's dead-letter queue: each
    /// message ID with the worker's `x-chainwatch-reason`.
    pub async fn dead_letters(
        &self,
        queue: &str,
        min: usize,
        wait: Duration,
    ) -> Vec<(String, String)> {
        self.drain(queue, min, wait)
            .await
            .iter()
            .map(|m| {
                let l = chainwatch::shell::broker::DeadLetter::of(m);
                (l.id, l.reason)
            })
            .collect()
    }

    /// Number of messages ready in `queue`.
    pub async fn count(&self, queue: &str) -> u32 {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let n = q.message_count();
        let _ = conn.close(200, "done".into()).await;
        n
    }

    /// Consume one message from `queue` with a consumer (not basic.get).
    pub async fn consume_one(&self, queue: &str, wait: Duration) -> Option<Vec<u8>> {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let mut c = ch
            .basic_consume(
                queue.into(),
                "test".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let got = tokio::time::timeout(wait, c.next()).await.ok().flatten();
        let data = match got {
            Some(Ok(d)) => {
                d.acker.ack(BasicAckOptions::default()).await.unwrap();
                Some(d.data)
            }
            _ => None,
        };
        let _ = conn.close(200, "done".into()).await;
        data
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        sh_quiet(&format!("rabbitmqctl -q delete_vhost {}", self.vhost));
        sh_quiet(&format!("rabbitmqctl -q delete_user {}", self.user));
        for u in self.extra.borrow().iter() {
            sh_quiet(&format!("rabbitmqctl -q delete_user {u}"));
        }
    }
}
