//! Taking over a slot for real: state file, EC2 tags, VPN identity, and for
//! frontend1 the Elastic IP.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::unix_ms;
use crate::layout::Slot;
use crate::shell::Switcher;
use crate::shell::aws::ec2::Ec2Registry;
use crate::shell::openvpn::Vpn;
use crate::state::{self, PersistedState};

/// The switcher of an active node.
pub struct Takeover {
    registry: Arc<Ec2Registry>,
    vpn: Vpn,
    state_dir: PathBuf,
    epoch: AtomicU64,
}

impl Takeover {
    /// A switcher for a node that holds its slot at `epoch`.
    pub fn new(registry: Arc<Ec2Registry>, vpn: Vpn, state_dir: PathBuf, epoch: u64) -> Self {
        Takeover {
            registry,
            vpn,
            state_dir,
            epoch: AtomicU64::new(epoch),
        }
    }
}

impl Switcher for Takeover {
    /// In this order: a new per-role epoch; the state file (so a crash from
    /// here on restarts as `to`); this instance's tags; the VPN identity
    /// (the old client is stopped at once, the new one must come up with
    /// its layout address); for frontend1, the Elastic IP.
    async fn take_over(&self, from: Slot, to: Slot) -> Result<(), String> {
        let epoch = self
            .registry
            .next_epoch(to.role)
            .await
            .map_err(|e| e.to_string())?;
        let now = unix_ms(std::time::SystemTime::now()) / 1000;
        state::store(&self.state_dir, &PersistedState::new(to, epoch, now))
            .map_err(|e| e.to_string())?;
        tracing::info!(%from, %to, epoch, "state persisted");
        self.registry
            .tag_self(to, epoch)
            .await
            .map_err(|e| e.to_string())?;
        self.epoch.store(epoch, Ordering::SeqCst);
        let addr = self.vpn.switch(to).await.map_err(|e| e.to_string())?;
        tracing::info!(%to, %addr, "VPN identity up");
        if to.is_hub()
            && self
                .registry
                .take_elastic_ip()
                .await
                .map_err(|e| e.to_string())?
        {
            tracing::warn!(%to, "Elastic IP moved to this instance");
        }
        Ok(())
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}
