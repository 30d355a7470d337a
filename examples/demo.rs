//! The chainwatch demo (run by `demo/demo.sh`, which installs what it needs
//! first): the rig of the integration tests with frontend1, frontend2 and
//! backend1..3, MariaDB replicating over the overlay, RabbitMQ and the
//! worker. It shows the fleet, kills backend1, and shows detection, fence,
//! takeover, the event and the MySQL promotion as they happen, then the
//! timings, and tears everything down.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use chainwatch::layout::{Role, Slot};
use common::fleet::{DB_ADMIN, DB_PASSWORD, Fleet, Options};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}
fn be(id: u32) -> Slot {
    Slot::new(Role::Backend, id)
}

fn say(what: &str) {
    println!("\n\x1b[1m== {what}\x1b[0m");
}

fn table(f: &Fleet) {
    println!(
        "  {:<10} {:<10} {:<16} {:<10} {:<8} {:<10} {:<8}",
        "instance", "holds", "overlay", "watches", "misses", "last rtt", "pending"
    );
    for (i, n) in f.nodes.iter().enumerate() {
        let name = n.instance.chars().rev().take(6).collect::<String>();
        let name: String = name.chars().rev().collect();
        match f.status(i) {
            Some(s) => println!(
                "  {:<10} {:<10} {:<16} {:<10} {:<8} {:<10} {:<8}",
                format!("i-…{name}"),
                s["common_name"].as_str().unwrap_or("?"),
                s["overlay_addr"].as_str().unwrap_or("?"),
                s["peer"].as_str().unwrap_or("-"),
                format!("{}/{}", s["misses"], s["misses_to_declare"]),
                s["last_rtt_ms"]
                    .as_f64()
                    .map(|r| format!("{r:.2} ms"))
                    .unwrap_or("-".into()),
                s["pending_events"],
            ),
            None => println!("  {:<10} (down)", format!("i-…{name}")),
        }
    }
}

/// Print the interesting new log lines of a node since `seen`.
fn follow(label: &str, log: &str, seen: &mut usize, t0: Instant) {
    let lines: Vec<&str> = log.lines().collect();
    for l in lines.iter().skip(*seen) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let msg = v["message"].as_str().unwrap_or("");
        let interesting = [
            "silent while",
            "declared dead",
            "fencing",
            "fence of",
            "took over",
            "is vacant",
            "state persisted",
            "VPN identity up",
            "Elastic IP",
            "transition recorded",
            "event delivered",
            "running the playbook",
            ": applied",
            "stopping (force)",
            "TASK [",
        ];
        if interesting.iter().any(|k| msg.contains(k)) {
            println!("  +{:>6.2}s {label:<9} {msg}", t0.elapsed().as_secs_f64());
        }
    }
    *seen = lines.len();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if !common::rig_ready(true) {
        std::process::exit(1);
    }
    // From here on Ctrl-C (or SIGTERM) tears the fleet down instead of
    // killing the demo on the spot.
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .expect("SIGINT handler");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    say(
        "building the fleet: 5 network namespaces on a bridge, moto as EC2, a test PKI, OpenVPN, RabbitMQ, MariaDB",
    );
    let slots = [fe(1), fe(2), be(1), be(2), be(3)];
    let mut f = Fleet::with(
        &slots,
        Options {
            rabbit: true,
            mariadb: true,
            worker: true,
            hypervisor: true,
            ..Options::default()
        },
    )
    .await;
    let keep = std::env::args().any(|a| a == "--keep");
    tokio::select! {
        _ = async {
            demo(&mut f).await;
            if keep {
                try_it(&f);
                std::future::pending::<()>().await;
            }
        } => {}
        _ = int.recv() => say("interrupted"),
        _ = term.recv() => say("terminated"),
    }
    say("tearing down");
    drop(f);
    println!("  done: namespaces, bridge, moto, MariaDB servers and the RabbitMQ vhost are gone");
}

/// `--keep`: the fleet stays up; how to look at it.
fn try_it(f: &Fleet) {
    say("the fleet stays up (--keep); in another shell, as root:");
    let bin = common::bin();
    println!(
        "  export AWS_ENDPOINT_URL={} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true",
        f.proxy.endpoint
    );
    for (i, n) in f.nodes.iter().enumerate() {
        println!(
            "  {} --config {} status       # node {i}, booted as {}",
            bin.display(),
            n.dir.join("chainwatch.toml").display(),
            n.boot
        );
    }
    let cfg = f.nodes[0].dir.join("chainwatch.toml");
    println!(
        "  {} --config {} fleet --check",
        bin.display(),
        cfg.display()
    );
    println!(
        "  {} --config {} history --since 1h",
        bin.display(),
        cfg.display()
    );
    println!(
        "  ip netns exec {} ping -c3 backend1.internal",
        f.nodes[1].ns
    );
    println!("  Ctrl-C here tears it all down.");
}

async fn demo(f: &mut Fleet) {
    f.start_all().await;
    f.start_mysql_chain();
    f.sql(2, "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY); INSERT INTO shop.orders VALUES (1)")
        .unwrap();
    say("the fleet (chainwatch status of every instance)");
    table(f);
    println!(
        "\n  MariaDB: backend1 writable (read_only={}), backend2 read_only={}, backend3 read_only={}, replicating from backend1.internal",
        f.sql(2, "SELECT @@read_only").unwrap(),
        f.sql(3, "SELECT @@read_only").unwrap(),
        f.sql(4, "SELECT @@read_only").unwrap()
    );

    say("killing backend1 (its instance dies: processes killed, link down)");
    let t0 = Instant::now();
    f.kill(2);
    let (mut s3, mut s4, mut sw) = (
        f.log(3).lines().count(),
        f.log(4).lines().count(),
        f.worker_log().lines().count(),
    );
    let mut up = None;
    let mut promoted = None;
    let mut replicated = None;
    let mut written = false;
    while t0.elapsed() < Duration::from_secs(120) {
        follow("backend2", &f.log(3), &mut s3, t0);
        follow("backend3", &f.log(4), &mut s4, t0);
        follow("worker", &f.worker_log(), &mut sw, t0);
        if up.is_none() && f.tun_addr(3) == Some(f.layout.overlay_addr(be(1))) {
            up = Some(t0.elapsed());
        }
        if promoted.is_none() && f.sql(3, "SELECT @@read_only").ok().as_deref() == Some("0") {
            promoted = Some(t0.elapsed());
            println!(
                "  +{:>6.2}s MariaDB   backend2's server is writable: the new primary",
                t0.elapsed().as_secs_f64()
            );
        }
        if promoted.is_some() && !written {
            let out = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &f.nodes[1].ns,
                    "mariadb",
                    "--no-defaults",
                    "-h",
                    "backend1.internal",
                ])
                .arg(format!("-u{DB_ADMIN}"))
                .arg(format!("-p{DB_PASSWORD}"))
                .args(["-e", "INSERT INTO shop.orders VALUES (2)"])
                .output()
                .unwrap();
            if out.status.success() {
                written = true;
                println!(
                    "  +{:>6.2}s client    frontend2 wrote order 2 to backend1.internal",
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        if written
            && replicated.is_none()
            && f.sql(4, "SELECT COUNT(*) FROM shop.orders").ok().as_deref() == Some("2")
        {
            replicated = Some(t0.elapsed());
            println!(
                "  +{:>6.2}s MariaDB   backend3 replicated order 2 from the new backend1",
                t0.elapsed().as_secs_f64()
            );
        }
        if replicated.is_some() && f.status(4).is_some_and(|s| s["id"] == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::io::stdout().flush().ok();
    }
    say("the fleet afterwards");
    table(f);
    let (state, _) = f.instance(2).await;
    println!("\n  EC2: backend1's old instance is {state}");
    if let Some(t) = f.status(3).map(|s| s["last_transition"].clone()) {
        let tm = &t["timings"];
        let ms = |k: &str| tm[k].as_u64().unwrap_or(0);
        say("timings");
        println!(
            "  first missed round -> declared dead   {:>6} ms",
            ms("detected_ms").saturating_sub(ms("silent_since_ms"))
        );
        println!(
            "  declared dead -> fence confirmed      {:>6} ms",
            ms("fenced_ms").saturating_sub(ms("detected_ms"))
        );
        println!(
            "  fence -> backend1 identity up         {:>6} ms",
            ms("identity_up_ms").saturating_sub(ms("fenced_ms"))
        );
    }
    let show = |d: Option<Duration>| {
        d.map(|d| format!("{:.2} s", d.as_secs_f64()))
            .unwrap_or("-".into())
    };
    println!("  kill -> 192.168.21.100 held by backend2 {:>8}", show(up));
    println!(
        "  kill -> MariaDB promoted               {:>8}",
        show(promoted)
    );
    println!(
        "  kill -> new row replicated to backend3 {:>8}",
        show(replicated)
    );
}
