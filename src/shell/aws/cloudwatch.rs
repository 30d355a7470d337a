//! The CloudWatch Logs sink: one log event per transition, in a configured
//! log group with one stream per instance, in Embedded Metric Format, so
//! that `FailoverMs`, `DetectionMs` and `FenceMs` become metrics with the
//! role as dimension. `chainwatch history` reads them back. A daemon's
//! alerts go to the same stream as an `Alerts` count with the kind as
//! dimension, the alert under [`ALERT_KEY`] (`history` skips them). Every
//! `announce.heartbeat` each daemon also writes a `Heartbeat` metric, so
//! that a silent daemon can raise an alarm (missing data).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use serde_json::{Value, json};

use crate::event::{Alert, Outgoing, TransitionEvent};

/// The key under which the full event sits in the log record.
pub const EVENT_KEY: &str = "chainwatch_event";

/// The key under which the full alert sits in its log record.
pub const ALERT_KEY: &str = "chainwatch_alert";

/// The EMF log record of an alert: `Alerts` = 1 with the kind as dimension.
pub fn alert_emf(a: &Alert, namespace: &str) -> Value {
    json!({
        "_aws": {
            "Timestamp": a.at_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Kind"]],
                "Metrics": [{"Name": "Alerts", "Unit": "Count"}]
            }]
        },
        "Kind": a.kind,
        "Alerts": 1,
        ALERT_KEY: a,
    })
}

/// The EMF log record of an event.
pub fn emf(ev: &TransitionEvent, namespace: &str) -> Value {
    json!({
        "_aws": {
            "Timestamp": ev.timings.identity_up_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Role"]],
                "Metrics": [
                    {"Name": "FailoverMs", "Unit": "Milliseconds"},
                    {"Name": "DetectionMs", "Unit": "Milliseconds"},
                    {"Name": "FenceMs", "Unit": "Milliseconds"}
                ]
            }]
        },
        "Role": ev.role.as_str(),
        "FailoverMs": ev.failover_ms(),
        "DetectionMs": ev.detection_ms(),
        "FenceMs": ev.fence_ms(),
        EVENT_KEY: ev,
    })
}

/// The EMF log record of a heartbeat: `Heartbeat` = 1 with the role and
/// the instance as dimensions. It carries no event, so `history` skips it.
pub fn heartbeat_emf(namespace: &str, role: &str, instance: &str, now_ms: u64) -> Value {
    json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Role", "Instance"]],
                "Metrics": [{"Name": "Heartbeat", "Unit": "Count"}]
            }]
        },
        "Role": role,
        "Instance": instance,
        "Heartbeat": 1,
    })
}

/// Build a CloudWatch Logs client from the SDK's default chain.
pub async fn client(region: Option<&str>, timeout: Duration) -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(timeout)
        .connect_timeout(timeout.min(super::CONNECT_TIMEOUT))
        .build();
    let shared = super::sdk_config(region).await;
    Client::from_conf(
        aws_sdk_cloudwatchlogs::config::Builder::from(&shared)
            .timeout_config(timeouts)
            .build(),
    )
}

/// Writes transitions to CloudWatch Logs.
pub struct CloudWatchSink {
    client: Client,
    group: String,
    stream: String,
    namespace: String,
    ready: AtomicBool,
}

impl CloudWatchSink {
    /// A sink writing to `group`, stream `stream` (the instance ID).
    pub fn new(client: Client, group: String, stream: String, namespace: String) -> Self {
        CloudWatchSink {
            client,
            group,
            stream,
            namespace,
            ready: AtomicBool::new(false),
        }
    }

    async fn ensure(&self) -> Result<(), String> {
        if self.ready.load(Ordering::SeqCst) {
            return Ok(());
        }
        let group = self
            .client
            .create_log_group()
            .log_group_name(&self.group)
            .send()
            .await;
        created(format!("CreateLogGroup {}", self.group), group)?;
        let stream = self
            .client
            .create_log_stream()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .send()
            .await;
        created(format!("CreateLogStream {}", self.stream), stream)?;
        self.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Write one transition or alert.
    pub async fn deliver<'a>(&self, entry: impl Into<Outgoing<'a>>) -> Result<(), String> {
        match entry.into() {
            Outgoing::Transition(ev) => {
                self.put(ev.timings.identity_up_ms, emf(ev, &self.namespace))
                    .await
            }
            Outgoing::Alert(a) => self.put(a.at_ms, alert_emf(a, &self.namespace)).await,
        }
    }

    /// Write one heartbeat of this instance (`role`).
    pub async fn heartbeat(&self, role: &str) -> Result<(), String> {
        let now = crate::clock::unix_ms(std::time::SystemTime::now());
        self.put(now, heartbeat_emf(&self.namespace, role, &self.stream, now))
            .await
    }

    async fn put(&self, at_ms: u64, record: Value) -> Result<(), String> {
        self.ensure().await?;
        let record = InputLogEvent::builder()
            .timestamp(at_ms as i64)
            .message(record.to_string())
            .build()
            .map_err(|e| e.to_string())?;
        self.client
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .log_events(record)
            .send()
            .await
            .map_err(|e| {
                // The stream may have been deleted: create it again next time.
                self.ready.store(false, Ordering::SeqCst);
                format!("PutLogEvents: {}", DisplayErrorContext(&e))
            })?;
        Ok(())
    }
}

/// `Ok` when a Create call succeeded or found its resource there already.
fn created<O, E, R>(what: String, result: Result<O, SdkError<E, R>>) -> Result<(), String>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match result {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error().and_then(|s| s.code())
                == Some("ResourceAlreadyExistsException") =>
        {
            Ok(())
        }
        Err(e) => Err(format!("{what}: {}", DisplayErrorContext(&e))),
    }
}

/// Read transitions back: every stream of `group` between `start_ms` and
/// `end_ms` (ms since the epoch; unbounded where `None`), oldest first.
/// Records that are not chainwatch events are skipped.
pub async fn history(
    client: &Client,
    group: &str,
    (start_ms, end_ms): (Option<i64>, Option<i64>),
) -> Result<Vec<TransitionEvent>, String> {
    let pages = client
        .filter_log_events()
        .log_group_name(group)
        .set_start_time(start_ms)
        .set_end_time(end_ms)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(|e| format!("FilterLogEvents {group}: {}", DisplayErrorContext(&e)))?;
    let mut out = Vec::new();
    for e in pages.iter().flat_map(|p| p.events()) {
        let Some(msg) = e.message() else { continue };
        let Ok(v) = serde_json::from_str::<Value>(msg) else {
            continue;
        };
        let Some(ev) = v.get(EVENT_KEY) else { continue };
        match TransitionEvent::parse(ev.to_string().as_bytes()) {
            Ok(ev) => out.push(ev),
            Err(err) => tracing::warn!("skipping a log record: {err}"),
        }
    }
    out.sort_by_key(|e| (e.timings.identity_up_ms, e.epoch));
    Ok(out)
}
