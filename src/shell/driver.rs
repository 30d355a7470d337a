//! The driver loop: feed inputs to the core, perform its actions, sleep until
//! its next deadline.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::prober::IcmpProber;
use super::resolve::HostsResolver;
use super::{Announcer, Registry, StatusReport, Switcher};
use crate::clock::{Clock, ms, unix_ms};
use crate::core::{Action, Event, Input, Monitor, ProbeAddr, ProbeOutcome};
use crate::event::TransitionEvent;
use crate::layout::Layout;
use crate::shell::identity::BootIdentity;

/// Everything the driver needs, handed in so tests can build it.
pub struct Driver<R, S, A> {
    /// The core.
    pub core: Monitor,
    /// The layout.
    pub layout: Layout,
    /// ICMP prober.
    pub prober: Arc<IcmpProber>,
    /// Hosts-file resolver.
    pub resolver: Arc<HostsResolver>,
    /// Registry (EC2).
    pub registry: Arc<R>,
    /// Identity switcher.
    pub switcher: Arc<S>,
    /// Transition announcer.
    pub announcer: Arc<A>,
    /// Observe mode: decide and log, never act.
    pub observe: bool,
    /// How this node booted.
    pub boot: BootIdentity,
    /// The fleet name, for events.
    pub fleet: String,
    /// Where status reports go.
    pub status: watch::Sender<StatusReport>,
    /// New core tunables from a config reload (SIGHUP).
    pub reload: mpsc::UnboundedReceiver<crate::core::CoreConfig>,
    /// Runs `alerts.notify_command` (none configured: `None`).
    pub notifier: Option<super::alert::Notifier>,
    /// The members' channel (no members key: `None`, and the core judges
    /// by the witness rule alone).
    pub members: Option<Arc<super::members::Members>>,
    /// Where a fence's intent is recorded before it is sent (the state
    /// directory; observe mode: `None`).
    pub state_dir: Option<std::path::PathBuf>,
}

/// How often ID 1 asks the registry for the tail of its role.
const TAIL_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Rate-limits repeated warnings: each kind of trouble is logged when its
/// message changes, not every round.
#[derive(Default)]
struct LastWarning(Mutex<std::collections::HashMap<&'static str, String>>);

impl LastWarning {
    fn warn_once(&self, what: &'static str, message: String) {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if last.get(what) != Some(&message) {
            tracing::warn!(what, "{message}");
            last.insert(what, message);
        }
    }
    fn clear(&self, what: &'static str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(what);
    }
}

impl<R: Registry, S: Switcher, A: Announcer> Driver<R, S, A> {
    /// The first status report, before the loop runs.
    pub fn initial_report(
        core: &Monitor,
        layout: &Layout,
        boot: &BootIdentity,
        observe: bool,
        icmp: &str,
    ) -> StatusReport {
        let mut r = StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: if observe { "observe" } else { "active" }.into(),
            role: boot.slot.role,
            id: boot.slot.id,
            common_name: String::new(),
            overlay_addr: layout.overlay_addr(boot.slot),
            peer: None,
            peer_target: None,
            phase: String::new(),
            last_rtt_ms: None,
            watch: Default::default(),
            last_transition: None,
            pending_events: 0,
            power_fences: Vec::new(),
            counters: Default::default(),
            members: Default::default(),
            members_channel: false,
            maintenance: None,
            icmp_socket: icmp.to_string(),
            identity_source: boot.source.as_str().to_string(),
            instance_id: boot.instance_id.clone(),
            started_ms: unix_ms(std::time::SystemTime::now()),
            pid: std::process::id(),
        };
        Self::fill(&mut r, core, layout);
        r
    }

    fn fill(r: &mut StatusReport, core: &Monitor, layout: &Layout) {
        let s = core.snapshot();
        r.role = s.me.role;
        r.id = s.me.id;
        r.common_name = s.me.common_name();
        r.overlay_addr = layout.overlay_addr(s.me);
        r.peer = s.peer.map(|p| p.common_name());
        r.peer_target = s.peer.map(|p| {
            if p.is_hub() || s.watch.degraded {
                "underlay address".to_string()
            } else {
                layout.host_name(p)
            }
        });
        r.phase = s.phase.as_str().to_string();
        r.last_rtt_ms = s.last_rtt.map(ms);
        r.watch = s.watch;
    }

    /// Run until `shutdown` resolves; returns the slot this node holds then.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> crate::layout::Slot {
        let clock = Clock::now();
        let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
        let mut tasks = JoinSet::new();
        let warnings = Arc::new(LastWarning::default());
        tokio::pin!(shutdown);
        let mut resignations = self.members.as_ref().and_then(|m| m.resignations());
        let mut tail_asked: Option<Instant> = None;
        // systemd: READY comes from `notify_ready_when_up` once the VPN
        // identity is up; with WatchdogSec, ping from this loop at half the
        // interval, so a hung loop gets the daemon restarted. Without
        // systemd (no NOTIFY_SOCKET) these are no-ops.
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut tick = tokio::time::interval(
            watchdog
                .unwrap_or(std::time::Duration::from_secs(1))
                .min(std::time::Duration::from_secs(1)),
        );
        loop {
            self.drain(&tx, &mut tasks, &clock, &warnings).await;
            if watchdog.is_some() {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            let deadline = self.core.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let resigned = async {
                match resignations.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                Some(input) = rx.recv() => self.core.handle_input(Instant::now(), input),
                Some(slot) = resigned => self.core.handle_input(Instant::now(), Input::Resigned { slot }),
                Some(mut cfg) = self.reload.recv() => {
                    cfg.second_opinion = self.members.is_some();
                    tracing::info!(?cfg, "probe and retry settings reloaded: they apply from the next round");
                    self.core.handle_input(Instant::now(), Input::Reconfigure(cfg));
                }
                _ = sleep => self.core.handle_timeout(Instant::now()),
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = tick.tick() => self.ask_tail(&tx, &mut tasks, &mut tail_asked),
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tasks.abort_all();
        tracing::info!("shutting down");
        self.core.me()
    }

    /// ID 1 watches the tail of its role: tell the core which slot that is,
    /// as the registry shows it (read at most every [`TAIL_EVERY`]; the
    /// registry caches it itself).
    fn ask_tail(
        &self,
        tx: &mpsc::UnboundedSender<Input>,
        tasks: &mut JoinSet<()>,
        asked: &mut Option<Instant>,
    ) {
        let me = self.core.me();
        if me.predecessor().is_some() || asked.is_some_and(|at| at.elapsed() < TAIL_EVERY) {
            return;
        }
        *asked = Some(Instant::now());
        let (registry, layout, tx) = (self.registry.clone(), self.layout.clone(), tx.clone());
        tasks.spawn(async move {
            let Ok(held) = registry.held_now(&layout).await else {
                return;
            };
            let tail = held
                .into_iter()
                .filter(|s| s.role == me.role && *s != me)
                .max_by_key(|s| s.id);
            let _ = tx.send(Input::Tail { slot: tail });
        });
    }

    /// Log the core's events and raise the alerts they call for.
    fn events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            log_event(&event, self.observe, self.core.rounds());
            match &event {
                // The holders changed: every cached address is looked up
                // afresh.
                Event::TookOver { .. } => self.registry.forget(None),
                // The fence is off: nothing to finish after a restart.
                Event::FenceCancelled { .. } | Event::Superseded { .. } => {
                    if let Some(dir) = &self.state_dir {
                        crate::state::clear_fence(dir);
                    }
                }
                _ => {}
            }
            self.status.send_modify(|r| r.counters.count(&event));
            if let Some(n) = &self.notifier
                && !self.observe
                && let Some((kind, slot, attempt, detail)) = super::alert::from_event(&event)
            {
                n.raise(kind, self.core.me().common_name(), slot, attempt, detail);
            }
        }
    }

    async fn drain(
        &mut self,
        tx: &mpsc::UnboundedSender<Input>,
        tasks: &mut JoinSet<()>,
        clock: &Clock,
        warnings: &Arc<LastWarning>,
    ) {
        self.events();
        while let Some(action) = self.core.poll_action() {
            self.perform(action, tx, tasks, clock, warnings).await;
        }
        self.events();
        let core = &self.core;
        let layout = &self.layout;
        let pending = self.announcer.pending();
        let power_fences = self.registry.power_fences();
        let members = self.members.as_ref().map(|m| m.counters());
        let maintenance = self.registry.maintenance();
        self.status.send_modify(|r| {
            Self::fill(r, core, layout);
            r.pending_events = pending;
            r.power_fences = power_fences;
            r.members_channel = members.is_some();
            r.members = members.unwrap_or_default();
            r.maintenance = maintenance;
        });
    }

    async fn perform(
        &mut self,
        action: Action,
        tx: &mpsc::UnboundedSender<Input>,
        tasks: &mut JoinSet<()>,
        clock: &Clock,
        warnings: &Arc<LastWarning>,
    ) {
        let tx = tx.clone();
        match action {
            Action::Probe {
                round,
                target,
                addr,
                timeout,
            } => {
                let prober = self.prober.clone();
                let resolver = self.resolver.clone();
                let registry = self.registry.clone();
                let layout = self.layout.clone();
                let warnings = warnings.clone();
                tasks.spawn(async move {
                    let started = Instant::now();
                    // Set once the echoes go out: from then on, running out of
                    // time means the target is silent.
                    let sending = std::sync::atomic::AtomicBool::new(false);
                    let work = async {
                        let (what, ip) = match &addr {
                            ProbeAddr::Overlay(slot) => (
                                "resolve",
                                resolver
                                    .resolve(&layout.host_name(*slot))
                                    .await
                                    .map_err(|e| e.to_string()),
                            ),
                            ProbeAddr::Underlay(slot) => {
                                ("underlay", registry.underlay_addr(*slot).await)
                            }
                            ProbeAddr::Ec2Api => {
                                return Ok(registry
                                    .witness()
                                    .await
                                    .map(|()| {
                                        warnings.clear("witness");
                                        Some(started.elapsed())
                                    })
                                    .map_err(|e| {
                                        warnings.warn_once("witness", format!("EC2 witness: {e}"))
                                    })
                                    .unwrap_or(None));
                            }
                        };
                        match ip {
                            Ok(ip) => {
                                warnings.clear(what);
                                // What is left of the budget goes to the echoes;
                                // too little left (a slow look-up) proves nothing.
                                let left = timeout.saturating_sub(started.elapsed());
                                if left < timeout / 2 {
                                    return Err(());
                                }
                                sending.store(true, std::sync::atomic::Ordering::SeqCst);
                                Ok(prober.probe(ip, left).await)
                            }
                            Err(e) => {
                                warnings.warn_once(what, e);
                                Err(())
                            }
                        }
                    };
                    // Report by the deadline whatever happens. An address that
                    // could not be found in time is no evidence of death.
                    let deadline = timeout + std::time::Duration::from_millis(50);
                    let outcome = match tokio::time::timeout(deadline, work).await {
                        Ok(Ok(Some(rtt))) => ProbeOutcome::Reply { rtt },
                        Ok(Ok(None)) => ProbeOutcome::Silent,
                        Err(_) if sending.load(std::sync::atomic::Ordering::SeqCst) => {
                            ProbeOutcome::Silent
                        }
                        Ok(Err(())) | Err(_) => ProbeOutcome::NotSent,
                    };
                    // A silent address may be an old holder's: the next
                    // round looks the holder up afresh.
                    if let (ProbeAddr::Underlay(slot), ProbeOutcome::Silent) = (&addr, outcome) {
                        registry.forget(Some(*slot));
                    }
                    let _ = tx.send(Input::Probed {
                        round,
                        target,
                        outcome,
                    });
                });
            }
            Action::AskHelpers {
                round,
                peer,
                timeout,
                overlay_only,
            } => {
                let me = self.core.me();
                let (members, registry) = (self.members.clone(), self.registry.clone());
                let layout = self.layout.clone();
                tasks.spawn(async move {
                    let started = Instant::now();
                    let verdict = match members {
                        Some(m) if peer.is_hub() => {
                            // The hub's overlay is in doubt: ask the others
                            // on their underlay addresses, looked up within
                            // a third of the time.
                            let others: Vec<_> = layout
                                .all_slots()
                                .filter(|s| *s != me && *s != peer)
                                .collect();
                            // Each look-up on its own deadline: a slow one
                            // (a vacant slot asks EC2 every time) costs only
                            // its own answer.
                            let lookups = futures_util::future::join_all(others.iter().map(|s| {
                                tokio::time::timeout(timeout / 3, registry.underlay_addr(*s))
                            }))
                            .await;
                            let addrs = lookups
                                .into_iter()
                                .filter_map(|r| r.ok().and_then(Result::ok))
                                .collect();
                            let left = timeout.saturating_sub(started.elapsed());
                            // Unless only its overlay is in doubt (a sick
                            // hub), an answer on its underlay address counts
                            // too: the hub is alive if it answers anywhere.
                            let underlay = if overlay_only {
                                None
                            } else {
                                registry.underlay_addr(peer).await.ok()
                            };
                            match underlay {
                                Some(hub) => m.ask_anywhere(peer, hub, addrs, left).await,
                                None => m.ask(peer, addrs, left).await,
                            }
                        }
                        Some(m) => {
                            // The members that hold a slot, so that the
                            // quorum counts only helpers that can answer;
                            // without EC2's word, every slot of the layout
                            // (vacant ones never answer, and the node waits
                            // twice the misses rather than accuse).
                            let held =
                                tokio::time::timeout(timeout / 3, registry.held_slots(&layout))
                                    .await
                                    .ok()
                                    .and_then(Result::ok);
                            let helpers = m.overlay_helpers(me, peer, held.as_deref());
                            m.ask(peer, helpers, timeout.saturating_sub(started.elapsed()))
                                .await
                        }
                        None => crate::core::Verdict::NoneToAsk,
                    };
                    let _ = tx.send(Input::HelpersSaid { round, verdict });
                });
            }
            Action::CheckHolder { slot } => {
                let registry = self.registry.clone();
                tasks.spawn(async move {
                    let result = registry.check_holder(slot).await;
                    if let Err(e) = &result {
                        tracing::debug!(%slot, error = %e, "holder check failed");
                    }
                    let _ = tx.send(Input::HolderChecked { slot, result });
                });
            }
            Action::Fence {
                slot,
                judged,
                attempt,
                chained,
            } => {
                if self.observe {
                    let would = format!("fence {slot} now (stop its instance through EC2)");
                    let result = Err(not_acting(&would, attempt));
                    let _ = tx.send(Input::FenceDone { slot, result });
                    return;
                }
                // The intent first: a daemon killed from here on finishes
                // this fence when it starts again.
                if let (Some(dir), Some(j)) = (&self.state_dir, &judged) {
                    let intent = crate::state::FenceIntent {
                        role: slot.role,
                        id: slot.id,
                        instance: j.instance.clone(),
                        epoch: j.epoch,
                        at_ms: unix_ms(std::time::SystemTime::now()),
                    };
                    if let Err(e) = crate::state::store_fence(dir, &intent) {
                        tracing::warn!("the fence's intent is not recorded: {e}");
                    }
                }
                let instance = judged.as_ref().map(|j| j.instance.as_str()).unwrap_or("-");
                tracing::warn!(peer = %slot, %instance, attempt, chained, "fencing {slot}");
                crate::crashpoint::crash_point("fencing");
                let registry = self.registry.clone();
                tasks.spawn(async move {
                    let input = match registry.fence(slot, judged, chained).await {
                        Ok(fenced) => Input::FenceDone {
                            slot,
                            result: Ok(fenced),
                        },
                        Err(super::ActError::Superseded(holder)) => {
                            Input::Superseded { slot, holder }
                        }
                        Err(super::ActError::Failed(e)) => Input::FenceDone {
                            slot,
                            result: Err(e),
                        },
                    };
                    let _ = tx.send(input);
                });
            }
            Action::TakeOver {
                from,
                to,
                attempt,
                planned,
            } => {
                if self.observe {
                    let result = Err(not_acting(
                        &format!("take over {to} now, from {from}"),
                        attempt,
                    ));
                    let _ = tx.send(Input::TakeOverDone { to, result });
                    return;
                }
                tracing::warn!(from = %from, to = %to, attempt, "taking over {to}");
                let switcher = self.switcher.clone();
                let planned = self.event(&planned, clock, 0);
                tasks.spawn(async move {
                    let input = match switcher.take_over(from, to, planned).await {
                        Ok(()) => Input::TakeOverDone { to, result: Ok(()) },
                        Err(super::ActError::Superseded(holder)) => {
                            Input::Superseded { slot: to, holder }
                        }
                        Err(super::ActError::Failed(e)) => {
                            Input::TakeOverDone { to, result: Err(e) }
                        }
                    };
                    let _ = tx.send(input);
                });
            }
            Action::Announce(transition) => {
                let mut event = self.event(&transition, clock, self.switcher.epoch());
                // The same event as the one persisted with the state: a
                // restart that announced it already is a duplicate by ID.
                if let Some(p) = self.switcher.pending()
                    && p.to_slot() == event.to_slot()
                {
                    event.event_id = p.event_id;
                }
                self.status
                    .send_modify(|r| r.last_transition = Some(event.clone()));
                self.announcer.announce(&event).await;
                self.switcher.announced(&event).await;
            }
        }
    }

    fn event(
        &self,
        transition: &crate::core::Transition,
        clock: &Clock,
        epoch: u64,
    ) -> TransitionEvent {
        TransitionEvent::new(
            transition,
            &self.layout,
            clock,
            &self.fleet,
            self.boot.instance_id.as_deref().unwrap_or("unknown"),
            epoch,
            unix_ms(std::time::SystemTime::now()),
        )
    }
}

/// Log one core event. `rounds` (rounds evaluated so far) lets a reader
/// measure gaps in probe rounds rather than in wall-clock stamps.
fn log_event(event: &Event, observe: bool, rounds: u64) {
    match event {
        Event::Watching { me, peer } => match peer {
            Some(p) => tracing::info!(me = %me, peer = %p, "watching {p}"),
            None => tracing::info!(me = %me, "ID 1: watching nobody"),
        },
        Event::Degraded { peer } => tracing::warn!(
            peer = %peer,
            "frontend1 is silent on the overlay: probing {peer} on its underlay with EC2 as the witness"
        ),
        Event::OverlayBack { peer } => {
            tracing::info!(peer = %peer, "frontend1 answers on the overlay again: probing {peer} there")
        }
        Event::Miss { peer, misses, of } => {
            tracing::info!(peer = %peer, misses, of, "{peer} silent while the witness answers: miss {misses} of {of}")
        }
        Event::Inconclusive { peer, discarded } => tracing::warn!(
            peer = %peer,
            discarded,
            "{peer} and the witness are both silent: this node may be cut off; counting nothing"
        ),
        Event::Recovered { peer, after } => {
            tracing::info!(peer = %peer, after, "{peer} answers again after {after} misses")
        }
        Event::SickHub { peer, silent_for } => {
            tracing::warn!(peer = %peer, silent_ms = silent_for.as_millis() as u64, "{peer} answers on its underlay but its overlay has been silent for {:.1} s: the hub is sick; its rounds count as misses, and the other members are asked on the underlay", silent_for.as_secs_f64())
        }
        Event::Resigned { peer } => {
            tracing::warn!(peer = %peer, "{peer} says it gave up its ID (its service failed, or a switchover): its next missed round is enough, with the second opinion, and a slot it released is taken without a fence")
        }
        Event::HandingOver { peer } => {
            tracing::warn!(peer = %peer, "{peer} says it is handing its ID over (a switchover): once EC2 shows the slot released, it is taken without a fence")
        }
        Event::Vouched { peer, after } => {
            tracing::info!(peer = %peer, after, "{peer} is silent to this node but another member reached it: {after} misses forgotten (a path fault, not a death)")
        }
        Event::Withheld { peer, misses, why } => {
            tracing::info!(peer = %peer, misses, "{peer} missed {misses} rounds; not declared dead yet: {why}")
        }
        Event::PeerDead { peer, misses } => {
            tracing::warn!(peer = %peer, misses, observe, rounds, "peer declared dead: {peer} missed {misses} rounds while the witness answered")
        }
        Event::Vacant { peer } => {
            tracing::warn!(peer = %peer, "{peer} is vacant: no running instance holds it")
        }
        Event::FenceFailed { peer, failure: f } => {
            let (attempt, retry_in_ms) = (f.attempt, f.retry_in.as_millis() as u64);
            if observe {
                tracing::info!(peer = %peer, attempt, retry_in_ms, "observe mode: no fence; asking again later")
            } else {
                tracing::error!(peer = %peer, attempt, error = %f.error, retry_in_ms, "FENCE FAILED for {peer}: no takeover until it is confirmed; retrying")
            }
        }
        Event::FenceCancelled { peer } => {
            tracing::warn!(peer = %peer, "fence of {peer} called off: it answered again, or this node lost the witness")
        }
        Event::FenceConfirmed { peer, instances } => {
            tracing::warn!(peer = %peer, instances = ?instances, "fence of {peer} confirmed")
        }
        Event::TakeOverFailed { to, failure: f } => {
            if !observe {
                tracing::error!(to = %to, attempt = f.attempt, error = %f.error, retry_in_ms = f.retry_in.as_millis() as u64, "takeover of {to} failed; retrying")
            }
        }
        Event::NewHolder {
            peer,
            instance,
            epoch,
        } => {
            tracing::info!(peer = %peer, %instance, epoch, "{peer} is held by {instance} at epoch {epoch} now: watching it afresh")
        }
        Event::Superseded { peer, instance } => {
            let by = instance.as_deref().unwrap_or("another instance");
            tracing::warn!(peer = %peer, holder = by, "{peer} is held by {by} now, not by the instance judged dead: nothing more is fenced or taken; watching it")
        }
        Event::FenceResumed { peer, instance } => {
            tracing::warn!(peer = %peer, %instance, "finishing the fence of {peer} ({instance}) that the last run recorded and was killed in")
        }
        Event::TailLost { peer, instances } => {
            tracing::error!(peer = %peer, instances = ?instances, "{peer}, the tail of the chain, is dead and fenced: nobody takes its ID, the chain is one shorter")
        }
        Event::Detour { dead, first } if first.is_hub() => {
            tracing::warn!(peer = %dead, "{dead}'s takeover needs the hub, which is silent: judging frontend1 first (taking its place if it is dead)")
        }
        Event::Detour { dead, first } => {
            tracing::warn!(peer = %dead, first = %first, "{first} has been silent as long as {dead}: judging it first (taking its place at once if it is dead)")
        }
        Event::TookOver { from, to } => {
            tracing::warn!(from = %from, to = %to, rounds, "took over {to} (was {from})")
        }
    }
}

/// Observe mode: log what an action would do, and the error that reports
/// it not done.
fn not_acting(would: &str, attempt: u32) -> String {
    tracing::warn!(attempt, "observe mode: would {would}; not acting");
    format!("observe mode: would {would}; not acting")
}
