//! The hub's side of the fabric fence (see [`crate::admission`]): while
//! this node runs the OpenVPN server, rewrite the admission list from EC2
//! every half second, and disconnect every client session the list does not
//! admit (a holder that was fenced, a stale certificate, an address that is
//! not the holder's).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::admission::Admission;
use crate::layout::Layout;
use crate::shell::aws::ec2::Ec2Registry;
use crate::shell::openvpn;

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
}

impl Fabric {
    /// Run until the process ends.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(crate::admission::REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error = String::new();
        loop {
            tick.tick().await;
            if !self.hub.load(Ordering::SeqCst) {
                continue;
            }
            match self.registry.admission(&self.layout).await {
                Ok(list) => {
                    if !last_error.is_empty() {
                        tracing::info!("admission list read from EC2 again");
                        last_error.clear();
                    }
                    if let Err(e) = list.store(&self.list) {
                        tracing::error!("cannot write the admission list: {e}");
                        continue;
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
            let verdict = match (
                self.layout.parse_client_common_name(&s.common_name),
                s.real_ip,
            ) {
                (Ok(slot), Some(ip)) => list.admits(slot, ip),
                (Err(e), _) => Err(e.to_string()),
                (_, None) => Err("no IPv4 real address".into()),
            };
            if let Err(why) = verdict {
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
}

/// Write the admission list once, before the OpenVPN server starts (the
/// fabric loop keeps it fresh afterwards); a failure is logged and left to
/// that loop.
pub async fn prime(registry: &Ec2Registry, layout: &Layout, run_dir: &Path) {
    let list = crate::admission::path(run_dir);
    match registry.admission(layout).await.map_err(|e| e.to_string()) {
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
