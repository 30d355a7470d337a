//! `chainwatch switchover`: a planned handover of this node's slot to its
//! watcher, without a fence (for patching the hub, say). Run on the holder
//! to relieve. It asks the local daemon over the control socket, then
//! reports, as it happens: the new holder in EC2, this node back at the
//! tail of the chain, and every member answering on the overlay again
//! (through the new hub when the hub moved), each with the time since the
//! request. See `shell/switchover.rs` for the daemon's side.
//!
//! On backend1's holder the MySQL primary is demoted first
//! (`shell/demote.rs`): read-only, and every replica sent the whole binary
//! log; the worker promotes the successor on the transition event, and the
//! old primary, rejoined at the tail, follows it. Should the handover not
//! happen, the server is made writable again.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{CmdError, settings};
use crate::layout::{Role, Slot};
use crate::shell::aws::ec2::{self, Ec2Registry};
use crate::shell::prober::IcmpProber;
use crate::shell::{control, demote, status, switchover};

/// Arguments of `switchover`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The role to switch over: must be this node's.
    #[arg(long, value_name = "ROLE")]
    pub role: Option<Role>,
    /// The ID that takes this node's over: its watcher, the next ID (the
    /// chain hands an ID only to its watcher).
    #[arg(long, value_name = "ID")]
    pub to: Option<u32>,
    /// On backend1: how long replicas may take to receive the primary's
    /// whole binary log once it is read-only.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub catch_up: Duration,
    /// How long to wait for the overlay to be whole again before giving up
    /// (exit 1).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn other(e: impl std::fmt::Display) -> CmdError {
    CmdError::Other(e.to_string())
}

/// Hand the slot over and report; the exit code.
pub async fn main(config: Option<&Path>, args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    let socket = &s.config.node.status_socket;
    let before = status::fetch(socket).await.map_err(other)?;
    if before.mode != "active" {
        return Err(other(format!(
            "the daemon runs in {} mode: it holds no identity to hand over",
            before.mode
        )));
    }
    if let Some(role) = args.role
        && role != before.role
    {
        return Err(other(format!(
            "this node is a {}, not a {role}: run switchover on the {role} to relieve",
            before.role
        )));
    }
    let me = Slot::new(before.role, before.id);
    if let Some(to) = args.to
        && Some(to) != me.watcher().map(|w| w.id)
    {
        return Err(other(format!(
            "{me} hands over to its watcher, {}{}, only: a chain never skips an ID",
            me.role,
            me.id + 1
        )));
    }
    let Some(instance) = before.instance_id.clone() else {
        return Err(other("the daemon does not know its EC2 instance ID"));
    };
    let registry = Ec2Registry::new(ec2::client(&s.config.aws).await, &s.config.aws, instance);
    let start = Instant::now();
    // backend1 holds the MySQL primary: read-only first, every replica
    // sent its whole binary log, then the identity moves.
    let demoted = if me.role == Role::Backend && me.id == 1 {
        let client = &s.config.service.mysql_client;
        let d = demote::demote(client, args.catch_up)
            .await
            .map_err(|e| other(format!("MySQL not demoted, nothing handed over: {e}")))?;
        println!(
            "{:>6.2} s  MySQL is read-only and its {} replicas have been sent everything (position {})",
            start.elapsed().as_secs_f64(),
            d.replicas,
            d.position
        );
        Some((client, d.mariadb))
    } else {
        None
    };
    let undo = |why: String| async move {
        let Some((client, mariadb)) = demoted else {
            return other(why);
        };
        match demote::undo(client, mariadb).await {
            Ok(()) => other(format!("{why}; MySQL is writable again")),
            Err(e) => other(format!(
                "{why}; MySQL is STILL READ-ONLY ({e}): set read_only = OFF by hand"
            )),
        }
    };
    let said = match control::ask(&control::path(socket), control::HANDOVER).await {
        Ok(said) => said,
        Err(e) => return Err(undo(format!("switchover refused: {e}")).await),
    };
    println!("{:>6.2} s  {said}", start.elapsed().as_secs_f64());
    let deadline = start + args.timeout;
    let late = |what: &str| {
        other(format!(
            "{what} within {:?} of the request; see the daemons' logs (`chainwatch fleet` shows the chain)",
            args.timeout
        ))
    };
    // The new holder, as EC2 shows it.
    let left = deadline.saturating_duration_since(Instant::now());
    let Some(new_holder) = switchover::new_holder(&registry, me, left).await else {
        return Err(undo(late(&format!("nobody took {me}")).to_string()).await);
    };
    println!(
        "{:>6.2} s  {me} is held by {new_holder}{}",
        start.elapsed().as_secs_f64(),
        if demoted.is_some() {
            " (the worker promotes its MySQL on the event; this server follows it)"
        } else {
            ""
        }
    );
    // This node, started again, at the tail.
    let now = loop {
        if let Ok(r) = status::fetch(socket).await
            && r.id != me.id
            && r.pid == before.pid
        {
            break Slot::new(r.role, r.id);
        }
        if Instant::now() >= deadline {
            return Err(late("this node did not rejoin"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "{:>6.2} s  this node rejoined the chain as {now}",
        start.elapsed().as_secs_f64()
    );
    // Every holder answers on the overlay, from here (through the hub).
    let prober = IcmpProber::new(1).map_err(other)?;
    let mut first_answer: std::collections::BTreeMap<Slot, f64> = Default::default();
    loop {
        let held: Vec<Slot> = match registry.members(&s.layout).await {
            Ok(members) => members
                .iter()
                .filter(|m| m.holds() && m.state == "running")
                .filter_map(|m| Some(Slot::new(m.role?, m.id?)))
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut silent = Vec::new();
        for slot in &held {
            let addr = s.layout.overlay_addr(*slot);
            if prober
                .probe(addr, Duration::from_millis(500))
                .await
                .is_none()
            {
                silent.push(slot.to_string());
            } else {
                first_answer
                    .entry(*slot)
                    .or_insert_with(|| start.elapsed().as_secs_f64());
            }
        }
        if !held.is_empty() && silent.is_empty() {
            let each: Vec<String> = held
                .iter()
                .filter_map(|slot| Some(format!("{slot} {:.2} s", first_answer.get(slot)?)))
                .collect();
            println!(
                "{:>6.2} s  the overlay is whole: all {} members answer on it (first answers: {})",
                start.elapsed().as_secs_f64(),
                held.len(),
                each.join(", ")
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(late(&format!(
                "the overlay was not whole again ({} silent)",
                silent.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
