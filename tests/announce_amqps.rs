//! amqps: the RabbitMQ sink delivers through the broker's TLS listener
//! (127.0.0.1:5671, set up by `.ci/rabbitmq-tls.sh` with a test CA), the
//! server's certificate verified against the trusted CAs; with the test CA
//! not trusted, nothing is delivered and the error says why.
//!
//! The trusted CAs come from the system's store, which `SSL_CERT_FILE`
//! replaces (rustls-native-certs reads it at each connection): the test
//! sets it, once to the test CA and once to a file holding no CA, on its
//! only thread, before each connection.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use chainwatch::event::TransitionEvent;
use chainwatch::layout::Role;
use chainwatch::shell::broker::RabbitSink;
use common::rabbit::Rabbit;
use common::{announce_config, event, prerequisite};

fn test_ca() -> PathBuf {
    std::env::var_os("CHAINWATCH_TEST_CA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/chainwatch-ci/tls/ca.pem"))
}

fn tls_listener() -> bool {
    std::net::TcpStream::connect_timeout(&"127.0.0.1:5671".parse().unwrap(), Duration::from_secs(2))
        .is_ok()
}

#[tokio::test(flavor = "current_thread")]
async fn an_event_goes_through_the_tls_listener_only_to_a_verified_broker() {
    let ca = test_ca();
    if !prerequisite(
        Rabbit::available() && ca.exists() && tls_listener(),
        "RabbitMQ with its TLS listener on 127.0.0.1:5671 and the test CA (.ci/deps.sh sets them up)",
    ) {
        return;
    }
    let mq = Rabbit::new("amqps", "127.0.0.1");
    let url = mq.url().replacen("amqp://", "amqps://", 1).replacen(
        "@127.0.0.1:5672/",
        "@localhost:5671/",
        1,
    );
    assert!(
        url.starts_with("amqps://") && url.contains(":5671/"),
        "{url}"
    );

    // Not trusted: refused, and the password stays out of the error.
    let empty = tempfile::NamedTempFile::new().unwrap();
    // SAFETY: this test's only thread sets it before the connection reads it.
    unsafe { std::env::set_var("SSL_CERT_FILE", empty.path()) };
    let mut cfg = announce_config(vec![url.clone()]);
    cfg.timeout = Duration::from_millis(3000);
    let ev = event(Role::Backend, 2, 1, 5, "i-amqps", &[]);
    let err = RabbitSink::new(&cfg).deliver(&ev).await.unwrap_err();
    eprintln!("with the test CA untrusted: {err}");
    assert!(!err.contains(&mq.password), "{err}");
    assert!(err.contains("certificate"), "{err}");
    // Not even the topology: the TLS handshake failed before any AMQP.
    let queues = common::sh(&format!("rabbitmqctl -q list_queues -p {} name", mq.vhost));
    assert!(!queues.contains(&cfg.queue), "{queues}");

    // Trusted: delivered once, over TLS.
    // SAFETY: as above.
    unsafe { std::env::set_var("SSL_CERT_FILE", &ca) };
    RabbitSink::new(&cfg).deliver(&ev).await.unwrap();
    let got = mq.drain(&cfg.queue, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(TransitionEvent::parse(&got[0].data).unwrap(), ev);
}
