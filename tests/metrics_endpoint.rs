//! The Prometheus endpoint of `chainwatch run --observe`, scraped and
//! parsed with a Prometheus text-format parser; `/healthz`, `/readyz`.

mod common;

use std::io::{Read, Write};

use std::time::Duration;

use common::{free_port, is_root, prerequisite, wait_for};

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

#[test]
fn metrics_are_scraped_and_parsed_and_health_answers() {
    if !prerequisite(is_root(), "root (for an ICMP socket)") {
        return;
    }
    let port = free_port("127.0.0.1");
    let node = common::LocalNode::new(
        "frontend",
        2,
        &format!(
            "[probe]\nhub_underlay = \"127.0.0.1\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    let _daemon = node.spawn();
    // A few rounds against frontend1 (127.0.0.1), so the RTT histogram
    // has observations.
    let body = wait_for(
        "three rounds in the metrics",
        Duration::from_secs(20),
        || {
            let (code, body) = get(port, "/metrics")?;
            (code == 200 && body.contains("chainwatch_rounds_total 3")).then_some(body)
        },
    );
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text format: {e}\n{body}"));
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{name} {label:?} missing:\n{body}"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref b) => {
                b.iter().map(|c| c.count).fold(0.0, f64::max)
            }
            _ => f64::NAN,
        }
    };
    assert_eq!(value("chainwatch_phase", Some(("phase", "watching"))), 1.0);
    assert_eq!(value("chainwatch_phase", Some(("phase", "fencing"))), 0.0);
    assert_eq!(value("chainwatch_misses", None), 0.0);
    assert_eq!(value("chainwatch_misses_to_declare", None), 3.0);
    assert_eq!(value("chainwatch_degraded", None), 0.0);
    assert_eq!(value("chainwatch_outbox_events", None), 0.0);
    for counter in [
        "chainwatch_fences_total",
        "chainwatch_fence_failures_total",
        "chainwatch_takeovers_total",
        "chainwatch_takeover_failures_total",
        "chainwatch_openvpn_restarts_total",
    ] {
        assert_eq!(value(counter, None), 0.0, "{counter}");
    }
    assert!(value("chainwatch_peer_rtt_seconds", None) >= 1.0, "{body}");
    assert_eq!(get(port, "/healthz").unwrap().0, 200);
    assert_eq!(get(port, "/readyz").unwrap().0, 200);
    assert_eq!(get(port, "/nope").unwrap().0, 404);
}
