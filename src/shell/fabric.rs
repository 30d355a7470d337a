//! The hub's side of the fabric fence (see [`crate::admission`]): while
//! this node runs the OpenVPN server, rewrite the admission list from EC2
//! every half second, and disconnect every client session the list does not
//! admit (a holder that was fenced, a stale certificate, an address that is
//! not the holder's). A taker's claim on the members' channel makes it
//! reread the list at once, and the claim is answered from that fresh list.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::admission::Admission;
use crate::layout::Layout;
use crate::shell::aws::ec2::Ec2Registry;
use crate::shell::members::Claim;
use crate::shell::openvpn;

/// The shortest time between two reads of the list that claims asked
/// for: a stream of claims costs EC2 at most one read per this.
const CLAIM_SPACING: std::time::Duration = std::time::Duration::from_millis(100);

/// Where the hub keeps its list and reaches its server.
pub struct Fabric {
    /// The registry.
    pub registry: Arc<Ec2Registry>,
    /// The layout.
    pub layout: Layout,
    /// The admission list's file.
    pub list: PathBuf,
    /// The OpenVPN management socket.
    pub mgmt: PathBuf,
    /// Whether this node is the hub now.
    pub hub: Arc<AtomicBool>,
    /// Claims heard on the members' channel (none without the channel).
    pub claims: Option<mpsc::Receiver<Claim>>,
}

impl Fabric {
    /// Run until the process ends.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(crate::admission::REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error = String::new();
        let mut last_claimed_read: Option<Instant> = None;
        loop {
            let mut asking = Vec::new();
            tokio::select! {
                _ = tick.tick() => {}
                claim = next_claim(&mut self.claims) => match claim {
                    Some(c) => asking.push(c),
                    None => self.claims = None,
                },
            }
            if let Some(rx) = self.claims.as_mut() {
                while let Ok(c) = rx.try_recv() {
                    asking.push(c);
                }
            }
            if !self.hub.load(Ordering::SeqCst) {
                // Dropped unanswered: the claimer waits out its fixed time.
                continue;
            }
            if !asking.is_empty() {
                if let Some(at) = last_claimed_read {
                    tokio::time::sleep_until(at + CLAIM_SPACING).await;
                }
                last_claimed_read = Some(Instant::now());
                // This read replaces the next periodic one.
                tick.reset();
            }
            match self
                .registry
                .admission(&self.layout, !asking.is_empty())
                .await
            {
                Ok(list) => {
                    if !last_error.is_empty() {
                        tracing::info!("admission list read from EC2 again");
                        last_error.clear();
                    }
                    if let Err(e) = list.store(&self.list) {
                        tracing::error!("cannot write the admission list: {e}");
                        continue;
                    }
                    for c in asking {
                        let admitted = list.admits(c.slot, c.from);
                        tracing::info!(
                            slot = %c.slot,
                            from = %c.from,
                            "claim heard: admission list read again, {}",
                            match &admitted {
                                Ok(()) => "it admits the claimer".to_string(),
                                Err(why) => format!("it does not admit the claimer yet ({why})"),
                            }
                        );
                        let _ = c.answer.send(admitted.is_ok());
                    }
                    self.sweep(&list).await;
                }
                Err(e) => {
                    // The last list stays: it admits only who held a slot
                    // when EC2 last answered.
                    let e = e.to_string();
                    if e != last_error {
                        tracing::warn!(
                            "admission list not refreshed ({e}); the last one stays in force"
                        );
                        last_error = e;
                    }
                }
            }
        }
    }

    async fn sweep(&self, list: &Admission) {
        let Some(sessions) = openvpn::sessions(&self.mgmt).await else {
            return;
        };
        for s in sessions {
            let Some(why) = refusal(&self.layout, list, &s) else {
                continue;
            };
            match openvpn::kill_session(&self.mgmt, s.client_id).await {
                Ok(()) => tracing::warn!(
                    common_name = %crate::layout::printable(&s.common_name),
                    real_ip = ?s.real_ip,
                    "disconnected a session the admission list refuses: {why}"
                ),
                Err(e) => tracing::error!(
                    common_name = %crate::layout::printable(&s.common_name),
                    "cannot disconnect a session the admission list refuses ({why}): {e}"
                ),
            }
        }
    }
}

/// Why the list refuses session `s`, if it does. A session still in its
/// TLS handshake shows no common name yet (`UNDEF`): it holds no overlay
/// address, and the connect hook (`chainwatch client-connect`) judges it
/// against the list when the handshake completes. It is left alone:
/// killing it only delays a member that is (re)connecting.
fn refusal(layout: &Layout, list: &Admission, s: &openvpn::Session) -> Option<String> {
    if s.common_name == openvpn::PENDING_COMMON_NAME {
        return None;
    }
    let verdict = match (layout.parse_client_common_name(&s.common_name), s.real_ip) {
        (Ok(slot), Some(ip)) => list.admits(slot, ip),
        (Err(e), _) => Err(e.to_string()),
        (_, None) => Err("no IPv4 real address".into()),
    };
    verdict.err()
}

/// The next claim, or never without a route.
async fn next_claim(claims: &mut Option<mpsc::Receiver<Claim>>) -> Option<Claim> {
    match claims {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Write the admission list once, before the OpenVPN server starts (the
/// fabric loop keeps it fresh afterwards); a failure is logged and left to
/// that loop.
pub async fn prime(registry: &Ec2Registry, layout: &Layout, run_dir: &Path) {
    let list = crate::admission::path(run_dir);
    match registry
        .admission(layout, false)
        .await
        .map_err(|e| e.to_string())
    {
        Ok(a) => {
            if let Err(e) = std::fs::create_dir_all(run_dir)
                .map_err(|e| e.to_string())
                .and_then(|()| a.store(&list))
            {
                tracing::warn!("cannot write the admission list yet: {e}");
            }
        }
        Err(e) => tracing::warn!("no admission list yet ({e}); the fabric loop retries"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Candidate;
    use std::net::Ipv4Addr;

    #[test]
    fn a_handshake_in_progress_is_left_alone_and_a_stranger_is_refused() {
        let layout = Layout::default();
        let list = Admission::from_candidates(
            &[Candidate {
                instance: "i-3".into(),
                slot: crate::layout::Slot::new(crate::layout::Role::Frontend, 3),
                up: true,
                fenced: false,
                epoch: 1,
                addrs: vec![Ipv4Addr::new(10, 0, 0, 9)],
            }],
            0,
        );
        let session = |cn: &str| openvpn::Session {
            common_name: cn.into(),
            real_ip: Some(Ipv4Addr::new(10, 0, 0, 9)),
            client_id: 1,
        };
        assert_eq!(refusal(&layout, &list, &session("UNDEF")), None);
        assert_eq!(refusal(&layout, &list, &session("frontend3")), None);
        assert!(refusal(&layout, &list, &session("frontend4")).is_some());
        assert!(refusal(&layout, &list, &session("not-a-member")).is_some());
    }
}
