//! The daemon's side of a planned switchover (`chainwatch switchover`): a
//! holder hands its slot to its watcher without being fenced.
//!
//! In this order, so that no two instances ever hold the slot:
//!
//! 1. the request is checked: no takeover under way, and a running
//!    instance holds the watcher's slot (someone must take over);
//! 2. the run loop ends and the VPN identity goes down (on the hub: the
//!    OpenVPN server; its clients notice within the pushed keepalive);
//! 3. this instance tags itself `chainwatch:state=released`, read back: EC2
//!    now shows the slot vacant;
//! 4. the watcher is told over the members' channel (a resignation); it
//!    asks EC2, finds the slot vacant twice and takes it without a fence
//!    (and, for the hub, the Elastic IP), as for any vacancy;
//! 5. once EC2 shows the new holder (or after [`TAKEN_WITHIN`]) the daemon
//!    starts again in place (exec of its own binary): the start finds its
//!    slot held by another instance and rejoins at the tail of the chain.
//!    If nobody took the slot, the start keeps it and brings the identity
//!    back: a switchover that fails leaves the old holder in place.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::control::Request;
use super::members::Members;
use super::openvpn::{self, Vpn};
use crate::config::Settings;
use crate::layout::{Layout, Slot};
use crate::shell::aws::ec2::{self, Ec2Registry};
use crate::state;

/// How long the old holder waits for EC2 to show the new holder before it
/// starts again (and then keeps its slot if nobody took it).
pub const TAKEN_WITHIN: Duration = Duration::from_secs(30);

/// A switchover the daemon accepted: the slot, its watcher, and where the
/// command's answer goes.
pub struct Accepted {
    /// The slot handed over.
    pub me: Slot,
    /// The watcher that takes it.
    pub watcher: Slot,
    /// The answer to the command.
    pub reply: Request,
}

/// Wait for a switchover request that passes [`may_hand_over`]; refused
/// ones are answered on the spot. Never returns once the control socket is
/// gone.
pub async fn accept(
    requests: &mut mpsc::Receiver<Request>,
    s: &Settings,
    booted: Slot,
    registry: &Ec2Registry,
) -> Accepted {
    while let Some(reply) = requests.recv().await {
        match may_hand_over(&s.layout, &s.config.node.state_dir, booted, registry).await {
            Ok((me, watcher)) => return Accepted { me, watcher, reply },
            Err(e) => {
                tracing::warn!("switchover refused: {e}");
                let _ = reply.send(Err(e));
            }
        }
    }
    std::future::pending().await
}

/// Carry out an accepted switchover once the run loop has ended (steps 2
/// to 5 of the module docs) and start again in place; returns only if that
/// start failed.
pub async fn complete(
    accepted: Accepted,
    s: &Settings,
    members: Option<&Members>,
    registry: &Ec2Registry,
    vpn: &Vpn,
    mgmt: &Path,
) -> std::io::Error {
    let Accepted { me, watcher, reply } = accepted;
    tracing::warn!(%me, %watcher, "SWITCHOVER: handing {me} over to {watcher}");
    if me.is_hub() {
        let told = openvpn::restart_clients(mgmt).await;
        tracing::info!(told, "the hub's clients are told to reconnect");
    }
    vpn.stop().await;
    match release(&s.layout, me, members, registry).await {
        Ok(()) => {
            let _ = reply.send(Ok(format!(
                "{me} released (identity down, tagged released in EC2); {watcher} is told to take it"
            )));
            match new_holder(registry, me, TAKEN_WITHIN).await {
                Some(holder) => tracing::warn!(
                    %me,
                    "{me} is held by {holder}: starting again to rejoin at the tail"
                ),
                None => tracing::error!(
                    %me,
                    "nobody took {me} within {TAKEN_WITHIN:?}: starting again, which keeps it"
                ),
            }
        }
        Err(e) => {
            tracing::error!(%me, "switchover failed: {e}; starting again, which keeps {me}");
            let _ = reply.send(Err(format!(
                "{me} could not be released ({e}); the daemon starts again and keeps it"
            )));
        }
    }
    restart_in_place()
}

/// Whether this node may hand `booted` (or the slot it took since, as its
/// state file says) over now: the slot it holds and its watcher.
async fn may_hand_over(
    layout: &Layout,
    state_dir: &Path,
    booted: Slot,
    registry: &Ec2Registry,
) -> Result<(Slot, Slot), String> {
    let me = match state::load(state_dir, layout).map_err(|e| e.to_string())? {
        Some(st) if st.pending.is_some() => {
            return Err(
                "a takeover is under way on this node: try again once it has announced it".into(),
            );
        }
        Some(st) if st.role == booted.role => st.slot(),
        _ => booted,
    };
    let watcher = me
        .watcher()
        .filter(|w| w.id <= layout.max_id(w.role))
        .ok_or_else(|| format!("{me} is the last ID of the layout: nobody watches it"))?;
    let holders = registry
        .holders(watcher)
        .await
        .map_err(|e| format!("cannot ask EC2 who holds {watcher}: {e}"))?;
    if holders.is_empty() {
        return Err(format!(
            "no running instance holds {watcher}, so nobody would take {me} over; a switchover needs a running successor"
        ));
    }
    Ok((me, watcher))
}

/// Steps 3 to 5, once the identity is down: tag this instance released,
/// tell the watcher, wait for the new holder. `Err` when the slot could not
/// be released (the daemon then starts again and keeps it).
async fn release(
    layout: &Layout,
    me: Slot,
    members: Option<&Members>,
    registry: &Ec2Registry,
) -> Result<(), String> {
    ec2::retry("tagging this instance released", || registry.release_self()).await?;
    tracing::warn!(%me, "this instance is tagged released: EC2 shows {me} vacant");
    super::service::resign(layout, me, members, registry).await;
    Ok(())
}

/// Wait until a running instance other than this one holds `slot`, for
/// at most `within`: its instance ID, once EC2 shows it. The daemon waits
/// for it before it starts again; `chainwatch switchover` reports it.
pub async fn new_holder(registry: &Ec2Registry, slot: Slot, within: Duration) -> Option<String> {
    let start = Instant::now();
    loop {
        if let Ok(holders) = registry.holders(slot).await
            && let Some(i) = holders.first()
        {
            return Some(i.instance_id().unwrap_or("?").to_string());
        }
        if start.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Start this daemon again in place, with the same arguments: the start
/// settles the slot against EC2 (a rejoin at the tail when another
/// instance holds it now). Returns only if the exec failed.
fn restart_in_place() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "chainwatch".into());
    std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .exec()
}
