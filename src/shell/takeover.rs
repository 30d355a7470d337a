//! Taking over a slot for real: state file, EC2 tags, VPN identity, and for
//! frontend1 the Elastic IP.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::clock::unix_ms;
use crate::event::TransitionEvent;
use crate::layout::Role;
use crate::layout::Slot;
use crate::shell::aws::ec2::Ec2Registry;
use crate::shell::members;
use crate::shell::openvpn::Vpn;
use crate::shell::{ActError, Announcer, Switcher};
use crate::state::{self, PersistedState};

/// The switcher of an active node.
pub struct Takeover {
    registry: Arc<Ec2Registry>,
    vpn: Vpn,
    state_dir: PathBuf,
    epoch: AtomicU64,
    pending: Mutex<Option<TransitionEvent>>,
    hub: Arc<AtomicBool>,
    members: members::Shared,
}

impl Takeover {
    /// In the background: tell every other running member, on its
    /// underlay, that the hub is here now, so that a client waiting on the
    /// dead hub's handshake starts again at once (one registry read).
    fn nudge_members(&self) {
        let Some(members) = self.members.get().cloned() else {
            return;
        };
        let registry = self.registry.clone();
        tokio::spawn(async move {
            let me = registry.instance_id().to_string();
            match registry.fleet_instances(None).await {
                Ok(found) => {
                    let to: Vec<std::net::Ipv4Addr> = found
                        .iter()
                        .filter(|i| i.instance_id() != Some(me.as_str()))
                        .filter_map(|i| i.private_ip_address()?.parse().ok())
                        .collect();
                    let told = members.announce_hub(&to).await;
                    tracing::info!(told, "members told that the hub is here now");
                }
                Err(e) => tracing::warn!(
                    "cannot tell the members that the hub moved ({e}); they reconnect on their own"
                ),
            }
        });
    }

    /// A switcher for a node that holds its slot at `epoch`; `hub` is set
    /// once it runs the OpenVPN server (frontend1); `members` is the
    /// members' channel once it runs (the hub is told of a takeover there).
    pub fn new(
        registry: Arc<Ec2Registry>,
        vpn: Vpn,
        state_dir: PathBuf,
        epoch: u64,
        hub: Arc<AtomicBool>,
        members: members::Shared,
    ) -> Self {
        Takeover {
            registry,
            vpn,
            state_dir,
            epoch: AtomicU64::new(epoch),
            pending: Mutex::new(None),
            hub,
            members,
        }
    }

    /// Once EC2 shows this node's new tags: wait until the hub's admission
    /// list admits it as `to`, so that its first handshake as `to` is
    /// admitted (a refused one is retried only after the client's
    /// hand-window). The hub is told on the members' channel and answers
    /// from a fresh read of its list, for up to
    /// [`crate::admission::CLAIM_PATIENCE`] (EC2's reads lag its writes).
    /// The hub may be dying and replaced meanwhile (a zone lost): its
    /// address is looked up afresh every [`HUB_LOOKUP`] of the wait.
    /// Without the channel the wait is [`crate::admission::SETTLE`], one
    /// refresh of the hub's list and the read.
    async fn wait_admitted(&self, to: Slot) {
        let started = tokio::time::Instant::now();
        let deadline = started + crate::admission::CLAIM_PATIENCE;
        let hub = Slot::new(Role::Frontend, 1);
        let Some(m) = self.members.get() else {
            tokio::time::sleep_until(started + crate::admission::SETTLE).await;
            return;
        };
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let round = tokio::time::Instant::now() + left.min(HUB_LOOKUP);
            let yes = match self.registry.underlay_of(hub).await {
                Ok(addr) => m.claim(to, addr, left.min(HUB_LOOKUP)).await,
                Err(e) => {
                    tracing::debug!("cannot find the hub to tell it of this takeover: {e}");
                    tokio::time::sleep_until(round).await;
                    false
                }
            };
            if yes {
                tracing::info!(
                    %to,
                    ms = started.elapsed().as_millis() as u64,
                    "the hub's admission list admits this node as {to}"
                );
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    %to,
                    "the hub's admission list does not admit this node as {to} after {:?}: connecting anyway (a refused handshake is retried after the client's hand-window)",
                    crate::admission::CLAIM_PATIENCE
                );
                return;
            }
            // Look the hub up afresh: another instance may hold frontend1.
            self.registry.forget_underlay(Some(hub));
        }
    }
}

/// How long a taker claims from one hub address before it looks the hub
/// up again.
const HUB_LOOKUP: std::time::Duration = std::time::Duration::from_secs(1);

use crate::crashpoint::crash_point;

impl Switcher for Takeover {
    /// In this order: a check that this instance is not fenced; a new
    /// per-role epoch; the state file with the
    /// transition's event (so a crash from here on restarts as `to`, and
    /// the restart finishes the steps below and announces the event); this
    /// instance's tags, read back; the VPN identity (the old client is stopped at
    /// once, the new one must come up with its layout address); for
    /// frontend1, the Elastic IP.
    async fn take_over(
        &self,
        from: Slot,
        to: Slot,
        mut planned: TransitionEvent,
    ) -> Result<(), ActError> {
        // Three reads at once (each a round trip to EC2 on the path to the
        // new identity): this instance's tags, the slot's claims and the
        // role's epochs.
        let (own, claims, epoch) = tokio::join!(
            self.registry.own_tags(),
            self.registry.slot_claims(to),
            self.registry.next_epoch(to.role)
        );
        // A fenced instance (another node took its slot while it was cut
        // off) takes nothing over: EC2 is stopping it.
        let (fenced, _, _) = own.map_err(|e| e.to_string())?;
        if fenced {
            return Err(ActError::Failed(
                "this instance is tagged fenced: EC2 is stopping it; it takes nothing over".into(),
            ));
        }
        // The slot must be nobody's, or the instance this node fenced: one
        // that another instance holds now (by the holder rule) was taken
        // since the judgement, and is watched instead.
        let claims = claims.map_err(|e| e.to_string())?;
        if let Some(h) = crate::holders::holding(&claims, to).holder()
            && h.instance != self.registry.instance_id()
            && !planned.fenced_instances.contains(&h.instance)
        {
            return Err(ActError::Superseded(Some(crate::core::Judged {
                instance: h.instance.clone(),
                epoch: h.epoch,
            })));
        }
        let epoch = epoch.map_err(|e| e.to_string())?;
        crash_point("epoch");
        planned.epoch = epoch;
        let now = unix_ms(std::time::SystemTime::now()) / 1000;
        let mut st = PersistedState::new(to, epoch, now);
        st.pending = Some(planned.clone());
        state::store(&self.state_dir, &st).map_err(|e| e.to_string())?;
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(planned);
        tracing::info!(%from, %to, epoch, "state persisted");
        // The fence that led here is done with: a restart from now on
        // finishes this takeover, not the fence.
        state::clear_fence(&self.state_dir);
        crash_point("state");
        self.registry
            .tag_self_confirmed(to, epoch)
            .await
            .map_err(|e| e.to_string())?;
        self.epoch.store(epoch, Ordering::SeqCst);
        crash_point("tags");
        // The hub's admission list must name the new server's clients
        // before they reconnect: it starts keeping it with the server. A
        // client waits until the hub's list admits it.
        self.hub.store(to.is_hub(), Ordering::SeqCst);
        if !to.is_hub() {
            self.wait_admitted(to).await;
        }
        let addr = self.vpn.switch(to).await.map_err(|e| e.to_string())?;
        tracing::info!(%to, %addr, "VPN identity up");
        crash_point("vpn");
        if to.is_hub()
            && self
                .registry
                .take_elastic_ip()
                .await
                .map_err(|e| e.to_string())?
        {
            tracing::warn!(%to, "Elastic IP moved to this instance");
        }
        if to.is_hub() {
            self.nudge_members();
        }
        crash_point("eip");
        Ok(())
    }

    fn pending(&self) -> Option<TransitionEvent> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn announced(&self, event: &TransitionEvent) {
        let now = unix_ms(std::time::SystemTime::now()) / 1000;
        let st = PersistedState::new(event.to_slot(), event.epoch, now);
        match state::store(&self.state_dir, &st) {
            Ok(()) => {
                *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            // The pending copy stays: a restart announces it again, and the
            // worker drops the duplicate by its ID.
            Err(e) => tracing::error!("clearing the pending event from the state file: {e}"),
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

/// Finish the takeover the last run was killed in (its event persisted with
/// the new slot): when this node now holds that slot at that epoch, the start
/// (tags, VPN identity, Elastic IP) completed it, and its event is announced;
/// otherwise the takeover is released and its event dropped. Either way the
/// state no longer holds it.
pub async fn finish_interrupted(
    mut ev: TransitionEvent,
    slot: Slot,
    epoch: u64,
    announcer: &impl Announcer,
    state_dir: &Path,
) -> Result<(), String> {
    let now = unix_ms(std::time::SystemTime::now());
    if ev.to_slot() == slot && ev.epoch == epoch {
        ev.timings.identity_up_ms = now;
        ev.timings.announced_ms = now;
        tracing::warn!(event_id = %ev.event_id, to = %slot, epoch, "completed the takeover of {slot} that the last run was killed in: announcing it");
        announcer.announce(&ev).await;
    } else {
        tracing::warn!(event_id = %ev.event_id, to = %ev.to_slot(), "the takeover of {} that the last run was killed in is released: this node is {slot} now; its event is dropped", ev.to_slot());
    }
    state::store(state_dir, &PersistedState::new(slot, epoch, now / 1000))
        .map_err(|e| e.to_string())
}
