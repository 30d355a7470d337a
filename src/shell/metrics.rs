//! The Prometheus endpoint and the health checks (`[metrics] listen`):
//! `GET /metrics` (text format, prometheus-client), `/healthz` (the event
//! loop turns) and `/readyz` (the VPN identity is up). Everything comes
//! from the status report the driver publishes, so the endpoint sees what
//! `chainwatch status` sees.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::StatusReport;

/// OpenVPN restarts by the supervisor (exits and hangs), process-wide.
pub static OPENVPN_RESTARTS: AtomicU64 = AtomicU64::new(0);

/// The phases a report can show, one gauge series each.
const PHASES: [&str; 4] = ["idle", "watching", "fencing", "taking-over"];

type Labels = Vec<(String, String)>;

struct Series {
    phase: Family<Labels, Gauge>,
    misses: Gauge,
    misses_to_declare: Gauge,
    rtt: Histogram,
    degraded: Gauge,
    cut_off: Gauge,
    outbox: Gauge,
    power_unconfirmed: Gauge,
    /// One counter per [`TOTALS`] entry.
    totals: [Counter; TOTALS.len()],
    /// The members' channel: second opinions asked, vouched, probes run
    /// for others, requests dropped while busy.
    probes: Family<Labels, Counter>,
    /// Datagrams dropped, by reason.
    dropped: Family<Labels, Counter>,
    /// The totals already counted, to add only the difference.
    seen: [u64; TOTALS.len()],
    members_seen: [u64; MEMBERS.len()],
    updated: Instant,
}

/// Counters fed from running totals: name and help. [`totals`] gives their
/// values in this order.
const TOTALS: [(&str, &str); 6] = [
    ("rounds", "probe rounds evaluated"),
    ("fences", "fences confirmed"),
    ("fence_failures", "fence attempts that failed"),
    ("takeovers", "takeovers completed"),
    ("takeover_failures", "takeover attempts that failed"),
    (
        "openvpn_restarts",
        "OpenVPN processes restarted (exited or hung)",
    ),
];

fn totals(r: &StatusReport) -> [u64; TOTALS.len()] {
    [
        r.watch.rounds,
        r.counters.fences,
        r.counters.fence_failures,
        r.counters.takeovers,
        r.counters.takeover_failures,
        OPENVPN_RESTARTS.load(Ordering::Relaxed),
    ]
}

/// The members' channel's series: the label (`kind` in `indirect_probes`,
/// `reason` in `member_datagrams_dropped`) and its value. [`members`] gives
/// their totals in this order.
const MEMBERS: [(&str, &str); 10] = [
    ("kind", "asked"),
    ("kind", "vouched"),
    ("kind", "helped"),
    ("kind", "busy"),
    ("reason", "foreign"),
    ("reason", "oversize"),
    ("reason", "malformed"),
    ("reason", "forged"),
    ("reason", "stale"),
    ("reason", "replayed"),
];

fn members(r: &StatusReport) -> [u64; MEMBERS.len()] {
    let m = &r.members;
    [
        m.asked,
        m.vouched,
        m.helped,
        m.busy,
        m.foreign,
        m.oversize,
        m.malformed,
        m.forged,
        m.stale,
        m.replayed,
    ]
}

/// The metric registry, fed from the status reports.
pub struct Metrics {
    registry: Registry,
    series: Mutex<Series>,
}

fn add(counter: &Counter, seen: &mut u64, now: u64) {
    if now > *seen {
        counter.inc_by(now - *seen);
    }
    *seen = now;
}

impl Metrics {
    /// Every series registered, at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("chainwatch");
        let s = Series {
            phase: Family::default(),
            misses: Gauge::default(),
            misses_to_declare: Gauge::default(),
            rtt: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            degraded: Gauge::default(),
            cut_off: Gauge::default(),
            outbox: Gauge::default(),
            power_unconfirmed: Gauge::default(),
            totals: Default::default(),
            probes: Family::default(),
            dropped: Family::default(),
            seen: [0; TOTALS.len()],
            members_seen: [0; MEMBERS.len()],
            updated: Instant::now(),
        };
        registry.register("phase", "1 for the phase the node is in", s.phase.clone());
        let gauges: [(&str, &str, &Gauge); 6] = [
            ("misses", "consecutive missed rounds", &s.misses),
            (
                "misses_to_declare",
                "missed rounds that declare the peer dead",
                &s.misses_to_declare,
            ),
            (
                "degraded",
                "1 while frontend1 is silent on the overlay (underlay probing, EC2 witness)",
                &s.degraded,
            ),
            (
                "cut_off",
                "1 when the last round was inconclusive (witness silent too)",
                &s.cut_off,
            ),
            (
                "outbox_events",
                "transition events not yet confirmed by every sink",
                &s.outbox,
            ),
            (
                "power_fences_unconfirmed",
                "power fences EC2 never reported stopped",
                &s.power_unconfirmed,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "peer_rtt_seconds",
            "round-trip time of the peer's answers",
            s.rtt.clone(),
        );
        for ((name, help), counter) in TOTALS.iter().zip(&s.totals) {
            registry.register(*name, *help, counter.clone());
        }
        registry.register(
            "indirect_probes",
            "the members' channel: second opinions asked and vouched (a helper reached the peer), probes run for other members, requests dropped while busy",
            s.probes.clone(),
        );
        registry.register(
            "member_datagrams_dropped",
            "datagrams of the members' channel dropped, by reason",
            s.dropped.clone(),
        );
        Metrics {
            registry,
            series: Mutex::new(s),
        }
    }

    /// Take in one status report.
    pub fn update(&self, r: &StatusReport, previous_rounds: u64) {
        let mut s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for phase in PHASES {
            s.phase
                .get_or_create(&vec![("phase".to_string(), phase.to_string())])
                .set(i64::from(r.phase == phase));
        }
        s.misses.set(i64::from(r.watch.misses));
        s.misses_to_declare
            .set(i64::from(r.watch.misses_to_declare));
        s.degraded.set(i64::from(r.watch.degraded));
        s.cut_off.set(i64::from(r.watch.cut_off));
        s.outbox
            .set(i64::try_from(r.pending_events).unwrap_or(i64::MAX));
        s.power_unconfirmed.set(
            r.power_fences
                .iter()
                .filter(|p| p.state == super::PowerFenceState::NotConfirmed)
                .count() as i64,
        );
        if r.watch.rounds > previous_rounds
            && let Some(rtt) = r.last_rtt_ms
        {
            s.rtt.observe(rtt / 1000.0);
        }
        let s = &mut *s;
        for (k, total) in totals(r).into_iter().enumerate() {
            add(&s.totals[k], &mut s.seen[k], total);
        }
        for (k, total) in members(r).into_iter().enumerate() {
            let (label, value) = MEMBERS[k];
            let family = if label == "kind" {
                &s.probes
            } else {
                &s.dropped
            };
            let c = family.get_or_create(&vec![(label.to_string(), value.to_string())]);
            add(&c, &mut s.members_seen[k], total);
        }
    }

    /// A report came from the event loop.
    fn touch(&self) {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .updated = Instant::now();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    fn since_update(&self) -> Duration {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .updated
            .elapsed()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Feed every report into `metrics` until the channel closes.
pub async fn follow(metrics: Arc<Metrics>, mut reports: watch::Receiver<StatusReport>) {
    let mut rounds = 0;
    loop {
        {
            let r = reports.borrow_and_update();
            metrics.update(&r, rounds);
            metrics.touch();
            rounds = r.watch.rounds;
        }
        if reports.changed().await.is_err() {
            return;
        }
    }
}

/// What the endpoint needs besides the metrics.
#[derive(Clone)]
pub struct Health {
    /// The latest report.
    pub reports: watch::Receiver<StatusReport>,
    /// OpenVPN's management socket when this daemon runs the identity.
    pub mgmt: Option<PathBuf>,
    /// How long without a report means a stalled loop.
    pub stall: Duration,
}

async fn respond(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    health: Health,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (code, ctype, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => {
            metrics.update(&health.reports.borrow(), u64::MAX);
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.encode(),
            )
        }
        ("GET", "/healthz") => {
            let since = metrics.since_update();
            if since < health.stall {
                (StatusCode::OK, "text/plain", "ok\n".to_string())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("event loop stalled: no report for {since:?}\n"),
                )
            }
        }
        ("GET", "/readyz") => {
            let want = health.reports.borrow().overlay_addr;
            match &health.mgmt {
                None => (
                    StatusCode::OK,
                    "text/plain",
                    "ok (observe mode)\n".to_string(),
                ),
                Some(mgmt) => match super::openvpn::query_state(mgmt).await {
                    Some(st) if st.name == "CONNECTED" && st.local == Some(want) => (
                        StatusCode::OK,
                        "text/plain",
                        format!("ok: identity up at {want}\n"),
                    ),
                    st => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!(
                            "identity not up: OpenVPN {}\n",
                            st.map(|s| s.name).unwrap_or_else(|| "not answering".into())
                        ),
                    ),
                },
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

/// Bind `metrics.listen` before the runtime runs (a port in use fails the
/// start, not a later moment).
pub fn bind_early(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("cannot listen on metrics.listen = {addr}: {e}"))
}

/// Serve the metrics, `/healthz` and `/readyz` on a listener from
/// [`bind_early`], fed by the status reports. A round that stalls for five
/// intervals (at least 5 s) makes `/healthz` fail.
pub fn start(
    listener: std::net::TcpListener,
    reports: watch::Receiver<StatusReport>,
    mgmt: Option<PathBuf>,
    interval: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics endpoint not started: {e}");
            return None;
        }
    };
    let metrics = Arc::new(Metrics::new());
    tokio::spawn(follow(metrics.clone(), reports.clone()));
    let health = Health {
        reports,
        mgmt,
        stall: interval.max(Duration::from_secs(1)) * 5,
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics at http://{addr}/metrics, /healthz, /readyz");
    }
    Some(tokio::spawn(serve(listener, metrics, health)))
}

/// Serve until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, health: Health) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, metrics.clone(), health.clone()));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_become_series() {
        let m = Metrics::new();
        let mut r = crate::shell::tests::report();
        r.counters.fences = 2;
        r.counters.takeovers = 1;
        r.watch.misses = 1;
        r.pending_events = 4;
        r.members.vouched = 3;
        r.members.forged = 7;
        m.update(&r, 9);
        // Totals are added once, however often the same report comes.
        m.update(&r, 10);
        OPENVPN_RESTARTS.fetch_add(1, Ordering::Relaxed);
        m.update(&r, 10);
        let text = m.encode();
        for line in [
            "chainwatch_phase{phase=\"watching\"} 1",
            "chainwatch_phase{phase=\"fencing\"} 0",
            "chainwatch_misses 1",
            "chainwatch_outbox_events 4",
            "chainwatch_fences_total 2",
            "chainwatch_takeovers_total 1",
            "chainwatch_rounds_total 10",
            "chainwatch_peer_rtt_seconds_count 1",
            "chainwatch_indirect_probes_total{kind=\"vouched\"} 3",
            "chainwatch_indirect_probes_total{kind=\"asked\"} 0",
            "chainwatch_member_datagrams_dropped_total{reason=\"forged\"} 7",
            "chainwatch_member_datagrams_dropped_total{reason=\"replayed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("chainwatch_openvpn_restarts_total ") && !l.ends_with(" 0")),
            "{text}"
        );
    }
}
