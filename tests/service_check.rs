//! The service checks against real servers: the running MariaDB's greeting,
//! a listener that accepts and never answers (a hung mysqld), a closed
//! port, and commands that pass, fail and hang.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chainwatch::config::{ServiceCheck, ServiceConfig};
use chainwatch::shell::service::check;

fn cfg(check: ServiceCheck, address: Option<SocketAddr>, command: &[&str]) -> ServiceConfig {
    ServiceConfig {
        check,
        address,
        command: command.iter().map(|s| s.to_string()).collect(),
        timeout: Duration::from_millis(500),
        ..ServiceConfig::default()
    }
}

#[tokio::test]
async fn a_live_mariadb_passes_and_a_silent_listener_fails_the_mysql_check() {
    // The machine's MariaDB (the CI starts it).
    let db: SocketAddr = "127.0.0.1:3306".parse().unwrap();
    let up = tokio::net::TcpStream::connect(db).await.is_ok();
    if !common::prerequisite(up, "MariaDB on 127.0.0.1:3306 (.ci/run starts it)") {
        return;
    }
    assert_eq!(
        check(&cfg(ServiceCheck::Mysql, Some(db), &[])).await,
        Ok(())
    );

    // Accepts connections, says nothing: what a SIGSTOPped mysqld looks like.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let t = Instant::now();
    let err = check(&cfg(ServiceCheck::Mysql, Some(addr), &[]))
        .await
        .unwrap_err();
    assert!(err.contains("no answer"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A TCP connect alone cannot tell.
    assert_eq!(
        check(&cfg(ServiceCheck::Tcp, Some(addr), &[])).await,
        Ok(())
    );
    drop(silent);
    // Closed port: both fail at once.
    let err = check(&cfg(ServiceCheck::Tcp, Some(addr), &[]))
        .await
        .unwrap_err();
    assert!(err.contains("connect"), "{err}");
}

#[tokio::test]
async fn something_that_is_not_mysql_fails_the_mysql_check() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        }
    });
    let err = check(&cfg(ServiceCheck::Mysql, Some(addr), &[]))
        .await
        .unwrap_err();
    assert!(err.contains("not a MySQL greeting"), "{err}");
}

#[tokio::test]
async fn commands_pass_fail_and_are_killed_at_the_deadline() {
    assert_eq!(
        check(&cfg(ServiceCheck::Command, None, &["/bin/true"])).await,
        Ok(())
    );
    let err = check(&cfg(ServiceCheck::Command, None, &["/bin/false"]))
        .await
        .unwrap_err();
    assert!(err.contains("exited"), "{err}");
    let t = Instant::now();
    let err = check(&cfg(ServiceCheck::Command, None, &["/bin/sleep", "30"]))
        .await
        .unwrap_err();
    assert!(err.contains("no answer"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}
