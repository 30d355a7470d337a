//! Deterministic simulation of whole chains.
//!
//! Five frontends and five backends, each a real `chainwatch::core::Monitor`,
//! stepped in simulated time against a model of the world: an overlay where
//! nodes can crash, be cut off or lose packets, and an EC2 control plane that
//! can fail, which tags instances, answers holder look-ups and stops
//! instances when fenced. Faults are drawn from a seeded RNG; after a chaos
//! phase everything heals.
//!
//! Checked after every step:
//! * never two live nodes answering on one slot's address, never two running
//!   instances tagged with one slot;
//! * no node fences or takes over while its witness is unreachable (it has
//!   not heard the witness within the last round);
//! * after healing, every dead ID is filled within a bound: each role's live
//!   nodes hold exactly IDs 1..=k.
//!
//! EC2 stops take 1.5-6 s after the request reaches it (the instance keeps
//! running meanwhile), as a forced stop without OS shutdown does.
//!
//! Faults: whole-instance crashes (EC2 still says running), daemon crashes
//! behind a live kernel (the underlay still answers; systemd restarts the
//! daemon 2-4 s later and it rejoins as its state file and the tags say),
//! stops outside chainwatch, cut-off nodes, packet loss, EC2 outages and
//! error rates, restarts of stopped instances, one-way path faults (a node
//! deaf to one other), pairwise partitions, hung OpenVPNs (the host and the
//! daemon live, the overlay does not), and helpers that go silent or lie
//! either way when asked for a second opinion.
//!
//! Also checked: no healthy node is fenced. A node that answers without
//! loss, in a world that has been still for a while, is never fenced while
//! an honest helper with clean paths to it and to its accuser exists; with
//! the second-opinion rule switched off, that check trips (mutation check).
//!
//! Broken worlds (a fence that reports success while stopping nothing, a
//! witness that answers a cut-off node) must make the checks trip: those
//! tests are `#[should_panic]`, so the checks are known to be able to fail.
//!
//! `CHAINWATCH_SIM_SEEDS=n` runs n seeds (default 300, at least 1);
//! `CHAINWATCH_SIM_SEED=s` replays one. A failure prints its seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use chainwatch::core::{
    Action, CoreConfig, Fenced, Holder, Input, Judged, Monitor, PhaseName, ProbeAddr, ProbeOutcome,
    Target, Verdict,
};
use chainwatch::holders::{self, Claim, Holding, Power};
use chainwatch::layout::{Layout, Role, Slot};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const NODES_PER_ROLE: u32 = 5;

/// A deliberately broken world, to prove the checks can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    /// The world as it is.
    No,
    /// EC2 reports a fence confirmed while stopping nothing.
    FenceStopsNothing,
    /// A cut-off node's witness probe is answered anyway.
    WitnessLies,
    /// The second-opinion rule switched off: the witness rule alone judges.
    NoSecondOpinion,
    /// The code at 7d5e3fc, whole: the holder look-up keeps a fenced,
    /// stopping instance (the first tagged with the slot), a fence stops
    /// every instance tagged with the slot, not the one judged, and the hub
    /// is judged on its underlay alone (the world hides its overlay answers
    /// and its helpers from the watcher, as that code ignored them).
    FenceEveryHolder,
    /// A taker never learns that the hub died with its peer: the hub's
    /// overlay address answers it (a stale route, say), so it takes its
    /// peer's ID and waits on the dead hub for that identity.
    WaitsOnDeadHub,
}

#[derive(Debug)]
struct Node {
    name: String,
    role: Role,
    core: Monitor,
    /// The daemon (and its OpenVPN) runs.
    alive: bool,
    /// The instance's kernel runs: its underlay address answers ICMP even
    /// when the daemon is dead.
    kernel: bool,
    /// EC2 has stopped the instance (fenced or stopped): it may be restarted.
    stopped: bool,
    /// The EC2 tag: the slot this instance claims.
    tag: Slot,
    /// Its epoch tag.
    epoch: u64,
    /// The epoch tag before its last change (see `prev_tag`).
    prev_epoch: u64,
    /// A stop reached EC2: it reports the instance `stopping` until it is
    /// off.
    stopping: bool,
    /// Nodes whose ICMP to its underlay address is dropped (a security
    /// group without ICMP from them): its overlay still answers them.
    underlay_deaf_to: Vec<usize>,
    /// The state file's slot: what a restarted daemon boots as.
    state: Slot,
    /// The state file holds the event of a takeover not yet in the outbox.
    pending: bool,
    /// Tagged `chainwatch:state=fenced`: the hub admits it nowhere.
    fenced: bool,
    /// The tag before its last change, and when it changed: EC2's reads
    /// are eventually consistent, so another node may still see it.
    prev_tag: Option<(Slot, Instant)>,
    /// The slot it answers probes for (its VPN identity), if any.
    answering: Option<Slot>,
    /// Cut off from every network (overlay, underlay, EC2).
    cut: bool,
    /// Packet loss on its link, per packet.
    loss: f64,
    /// Nodes whose packets it drops (one-way and pairwise path faults):
    /// they reach it not, it reaches them, and everyone else reaches both.
    deaf_to: Vec<usize>,
    /// How it answers other members' requests for a second opinion.
    helper: Helper,
    /// Its OpenVPN hangs: the daemon and the kernel live, but it neither
    /// answers nor reaches anything on the overlay (the underlay answers).
    vpn_hung: bool,
    /// Its service failed and it gave up its ID: the kernel answers, the
    /// daemon waits for the service (until the heal) with its identity down.
    service_down: bool,
    /// Last time a probe of this node found its witness reachable.
    witness_ok_at: Option<Instant>,
    /// Last time EC2 answered this node.
    ec2_ok_at: Option<Instant>,
}

/// A member as a helper of others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Helper {
    /// Probes and answers what it found.
    Honest,
    /// Never answers in time (slow, overloaded, or an old version).
    Silent,
    /// Answers this, whatever it found.
    Lies(bool),
}

#[derive(Debug)]
enum Ev {
    Deliver {
        node: usize,
        input: Input,
    },
    /// The fence of `slot` by `by` reaches EC2 and takes effect on
    /// `target` (the judged instance; `None`: every holder, the mutant).
    StopHolders {
        by: usize,
        slot: Slot,
        target: Option<usize>,
        stopping: Vec<usize>,
    },
    /// The fabric fence: `by` has tagged `target` fenced and read the tag
    /// back; the hub drops it from the overlay.
    FabricFence {
        by: usize,
        slot: Slot,
        target: Option<usize>,
        stopping: Vec<usize>,
    },
    /// EC2 finishes stopping the instances a fence sent a stop to (the
    /// power fence, in the background of a fabric fence).
    PowerOff {
        slot: Slot,
        stopping: Vec<usize>,
    },
    /// A client identity waiting for the hub tries to connect again (its
    /// takeover's VPN step, from `since`, times out after 20 s).
    ClientUp {
        node: usize,
        to: Slot,
        since: Instant,
    },
    /// systemd restarts a crashed daemon whose instance still runs.
    Restart {
        node: usize,
    },
}

struct World {
    seed: u64,
    rng: StdRng,
    start: Instant,
    now: Instant,
    cfg: CoreConfig,
    layout: Layout,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    events: Vec<Option<Ev>>,
    seq: u64,
    ec2_down: bool,
    ec2_fail_rate: f64,
    takeovers: u32,
    /// Chance that a daemon is killed mid-takeover.
    crash_mid_takeover: f64,
    /// Chance that a takeover attempt fails (the VPN refuses it) and is
    /// retried after back-off.
    takeover_fail: f64,
    /// Kill the daemon of the next takeover after this step.
    forced_crash: Option<&'static str>,
    /// Fences are confirmed by the fabric (hub admission, Elastic IP),
    /// not by EC2's `stopped`.
    fabric: bool,
    /// Chance that an EC2 read misses the tag changes of the last second.
    stale_reads: f64,
    log: Vec<String>,
    broken: Broken,
    /// The last fault, heal or restart: the healthy-fence check applies
    /// only to a world that has been still for a while.
    changed_at: Instant,
    /// Per node: the slot it answers for while alive, and since when.
    answering_since: Vec<(Option<Slot>, Instant)>,
    /// How long a forced stop takes once it reaches EC2 (ms, low and high).
    stop_ms: (u64, u64),
    /// Every instance a fence sent a stop to: when, which, for which slot.
    stops: Vec<(Instant, String, Slot)>,
    /// Per node: the tail of its role it was last told (ID 1 watches it).
    told_tail: Vec<Option<Slot>>,
    /// Members of each role.
    per_role: u32,
}

impl World {
    fn new(seed: u64) -> Self {
        Self::sized(seed, NODES_PER_ROLE)
    }

    /// A world of `per_role` frontends and as many backends.
    fn sized(seed: u64, per_role: u32) -> Self {
        let start = Instant::now();
        // Every round at the API's pace (1 s, 800 ms), the hub's and the
        // degraded ones' as shipped: the chain's rules do not depend on the
        // pace, and this world's delays and bounds are written in it. The
        // overlay's faster pace is the core's unit tests' (tests/detector.rs).
        let d = CoreConfig::default();
        let cfg = CoreConfig {
            second_opinion: true,
            interval: d.api_interval,
            probe_timeout: d.api_timeout,
            ..d
        };
        let mut nodes = Vec::new();
        for role in Role::ALL {
            for id in 1..=per_role {
                let slot = Slot::new(role, id);
                nodes.push(Node {
                    name: format!("i-{slot}"),
                    role,
                    core: Monitor::new(cfg.clone(), slot, start),
                    alive: true,
                    kernel: true,
                    stopped: false,
                    tag: slot,
                    epoch: 0,
                    prev_epoch: 0,
                    stopping: false,
                    underlay_deaf_to: Vec::new(),
                    state: slot,
                    pending: false,
                    fenced: false,
                    prev_tag: None,
                    answering: Some(slot),
                    cut: false,
                    loss: 0.0,
                    deaf_to: Vec::new(),
                    helper: Helper::Honest,
                    vpn_hung: false,
                    service_down: false,
                    witness_ok_at: None,
                    ec2_ok_at: None,
                });
            }
        }
        World {
            seed,
            rng: StdRng::seed_from_u64(seed),
            start,
            now: start,
            cfg,
            layout: Layout::new(&chainwatch::layout::LayoutConfig {
                max_frontends: per_role.max(5),
                max_backends: per_role.max(5),
                ..chainwatch::layout::LayoutConfig::default()
            })
            .expect("a layout"),
            per_role,
            nodes,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            seq: 0,
            ec2_down: false,
            ec2_fail_rate: 0.0,
            takeovers: 0,
            crash_mid_takeover: 0.1,
            takeover_fail: 0.1,
            forced_crash: None,
            fabric: true,
            stale_reads: 0.2,
            log: Vec::new(),
            broken: Broken::No,
            changed_at: start,
            answering_since: Vec::new(),
            stop_ms: (1500, 6000),
            stops: Vec::new(),
            told_tail: Vec::new(),
        }
    }

    /// Tell every live ID 1 the tail of its role as the registry shows it
    /// (running, not fenced), as the shell does every few seconds.
    fn tell_tails(&mut self) {
        self.told_tail.resize(self.nodes.len(), None);
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            let me = self.nodes[i].core.me();
            if me.id != 1 {
                continue;
            }
            let tail = self
                .nodes
                .iter()
                .filter(|n| !n.stopped && !n.fenced && n.role == me.role && n.tag != me)
                .map(|n| n.tag)
                .max_by_key(|s| s.id);
            if self.told_tail[i] != tail {
                self.told_tail[i] = tail;
                self.nodes[i]
                    .core
                    .handle_input(self.now, Input::Tail { slot: tail });
                self.drain(i);
            }
        }
    }

    /// Node `n` as the holder rule sees it in one EC2 read (`stale`: the
    /// read may miss its last tag change).
    fn claim(&self, n: &Node, stale: bool) -> Claim {
        let slot = self.tag_as_read(n, stale);
        Claim {
            instance: n.name.clone(),
            slot: Some(slot),
            power: if n.stopped {
                Power::Down
            } else if n.stopping {
                Power::Stopping
            } else {
                Power::Up
            },
            fenced: n.fenced,
            released: false,
            epoch: if slot == n.tag { n.epoch } else { n.prev_epoch },
        }
    }

    /// The admitted holder of `slot` by the shell's own rule
    /// (`chainwatch::holders`), in one read; of two tied, the first.
    fn admitted(&self, slot: Slot, stale: bool) -> Option<usize> {
        let claims: Vec<Claim> = self.nodes.iter().map(|n| self.claim(n, stale)).collect();
        let name = match holders::holding(&claims, slot) {
            Holding::Vacant => return None,
            Holding::Held(c) => c.instance.clone(),
            Holding::Tied(v) => v[0].instance.clone(),
        };
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The instance the code at 7d5e3fc looked up for `slot`: the first one
    /// tagged with it that EC2 does not report stopped, fenced, stopping or
    /// dead as it may be.
    fn loose_holder(&self, slot: Slot) -> Option<usize> {
        self.nodes.iter().position(|n| !n.stopped && n.tag == slot)
    }

    /// One more than the highest epoch tag of `role` (the per-role counter).
    fn next_epoch(&self, role: Role) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| n.epoch)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// The instances a fence of `slot` by `by` acts on: the judged one, or
    /// in the mutant every instance tagged with the slot.
    fn fence_targets(&self, by: usize, slot: Slot, target: Option<usize>) -> Vec<usize> {
        match target {
            Some(t) => vec![t]
                .into_iter()
                .filter(|t| !self.nodes[*t].stopped)
                .collect(),
            None => (0..self.nodes.len())
                .filter(|j| *j != by && !self.nodes[*j].stopped && self.nodes[*j].tag == slot)
                .collect(),
        }
    }

    fn t(&self) -> f64 {
        (self.now - self.start).as_secs_f64()
    }

    fn note(&mut self, what: String) {
        let line = format!("{:9.3}s {what}", self.t());
        self.log.push(line);
    }

    fn fail(&self, what: &str) -> ! {
        let keep = std::env::var("CHAINWATCH_SIM_LOG")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(40);
        let tail: Vec<&String> = self.log.iter().rev().take(keep).collect();
        let mut msg = String::new();
        for l in tail.into_iter().rev() {
            msg.push_str(l);
            msg.push('\n');
        }
        panic!(
            "simulation seed {} failed at {:.3}s: {what}\nreplay with CHAINWATCH_SIM_SEED={}\nlast events:\n{msg}",
            self.seed,
            self.t(),
            self.seed
        );
    }

    fn schedule(&mut self, after: Duration, ev: Ev) {
        self.seq += 1;
        self.events.push(Some(ev));
        let idx = self.events.len() - 1;
        self.queue.push(Reverse((self.now + after, self.seq, idx)));
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(lo..=hi))
    }

    /// The live node answering for `slot`, if reachable.
    fn answerer(&self, slot: Slot) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.alive && !n.cut && !n.vpn_hung && n.answering == Some(slot))
    }

    fn ec2_reachable(&self, from: usize) -> bool {
        !self.ec2_down && !self.nodes[from].cut
    }

    /// Does an echo exchange between `a` and `b` survive the loss on both
    /// links (request and reply), with `attempts` tries?
    fn echo_survives(&mut self, a: usize, b: usize) -> bool {
        let pass = (1.0 - self.nodes[a].loss) * (1.0 - self.nodes[b].loss);
        let once = pass * pass;
        (0..4).any(|_| self.rng.random_bool(once))
    }

    /// Does `a` receive what `b` sends (no one-way fault at `a`)?
    fn hears(&self, a: usize, b: usize) -> bool {
        !self.nodes[a].deaf_to.contains(&b)
    }

    /// What helper `h` answers `asker` about the node at `target`: `None`
    /// when the request or the answer is lost (or `h` is down), else
    /// whether it reached the target.
    /// About the hub the request and the answer travel on the underlay
    /// (`underlay`); the helper still probes the hub's overlay.
    fn helper_says(
        &mut self,
        asker: usize,
        h: usize,
        target: Option<usize>,
        underlay: bool,
        anywhere: Option<usize>,
    ) -> Option<bool> {
        let n = &self.nodes[h];
        let mode = n.helper;
        let reachable = if underlay {
            n.kernel && !self.nodes[asker].cut
        } else {
            !n.vpn_hung && n.answering.is_some() && self.hub_up()
        };
        if !n.alive || n.cut || !reachable {
            return None;
        }
        if !self.hears(h, asker) || !self.hears(asker, h) || !self.echo_survives(asker, h) {
            return None;
        }
        match mode {
            Helper::Honest => {}
            Helper::Silent => return None,
            Helper::Lies(says) => return Some(says),
        }
        let n = &self.nodes[h];
        let on_overlay = !n.vpn_hung && n.answering.is_some() && self.hub_up();
        let overlay = match target {
            Some(t) if on_overlay => {
                self.hears(h, t) && self.hears(t, h) && self.echo_survives(h, t)
            }
            _ => false,
        };
        // Asked about the hub anywhere: its underlay address answers too,
        // from its kernel.
        let underlay = match anywhere {
            Some(u) => {
                let m = &self.nodes[u];
                m.kernel
                    && !m.cut
                    && !m.underlay_deaf_to.contains(&h)
                    && self.hears(h, u)
                    && self.hears(u, h)
                    && self.echo_survives(h, u)
            }
            None => false,
        };
        Some(overlay || underlay)
    }

    /// The healthy-fence invariant: a node fenced while it runs without
    /// loss, when a helper with clean paths to it and to the accuser could
    /// have vouched for it, in a world still for a while, is a healthy node
    /// fenced.
    /// A fence acts on the instance judged dead and on no other: one it
    /// stops that is not the judged one, while it answers as the slot's
    /// holder, is a healthy holder fenced for another's death (the hub's
    /// successor stopped for the old hub's silence).
    fn check_stopped_judged(&self, by: usize, slot: Slot, j: usize, target: Option<usize>) {
        let n = &self.nodes[j];
        if target != Some(j) && n.alive && n.kernel && n.answering == Some(slot) {
            self.fail(&format!(
                "{}'s fence of {slot} stopped {}, which answers as {slot} and was not the instance judged dead",
                self.nodes[by].name, n.name
            ));
        }
    }

    fn check_fence(&self, by: usize, slot: Slot) {
        let Some(t) = self.answerer(slot) else {
            return;
        };
        let me = self.nodes[by].answering;
        let clean = |i: usize| {
            let n = &self.nodes[i];
            n.alive && !n.cut && !n.vpn_hung && n.loss == 0.0 && n.answering.is_some()
        };
        let settle = self.cfg.interval * (self.cfg.misses * 2 + 3);
        let still = self.now.saturating_duration_since(self.changed_at) > settle
            && self
                .answering_since
                .get(t)
                .is_some_and(|(_, since)| self.now.saturating_duration_since(*since) > settle);
        let good_helper = (0..self.nodes.len()).any(|h| {
            h != by
                && h != t
                && clean(h)
                && self.nodes[h].helper == Helper::Honest
                && self.nodes[h].answering != me
                && self.hears(h, by)
                && self.hears(by, h)
                && self.hears(h, t)
                && self.hears(t, h)
        });
        if still && clean(t) && clean(by) && self.hub_up() && good_helper {
            self.fail(&format!(
                "healthy {slot} ({}) fenced by {}: a helper could reach it",
                self.nodes[t].name, self.nodes[by].name
            ));
        }
    }

    /// The overlay is a star through frontend1: it works while a live,
    /// reachable node answers as frontend1.
    fn hub_up(&self) -> bool {
        self.answerer(Slot::new(Role::Frontend, 1)).is_some()
    }

    fn probe(&mut self, from: usize, addr: &ProbeAddr) -> ProbeOutcome {
        if self.nodes[from].cut {
            return ProbeOutcome::Silent;
        }
        let answered = match addr {
            ProbeAddr::Overlay(slot) => {
                // Needs this node's own VPN identity, the hub, and the target.
                let target = self.answerer(*slot);
                match target {
                    Some(to)
                        if self.nodes[from].answering.is_some()
                            && !self.nodes[from].vpn_hung
                            && self.hub_up()
                            && self.hears(from, to)
                            && self.hears(to, from) =>
                    {
                        self.echo_survives(from, to)
                    }
                    _ => false,
                }
            }
            ProbeAddr::Underlay(slot) => {
                // The VPC address of the slot's admitted holder as one EC2
                // read shows it (the mutant: of any instance tagged with
                // it); its kernel answers whatever chainwatch is doing,
                // unless the path drops ICMP.
                let target = if self.broken == Broken::FenceEveryHolder {
                    self.loose_holder(*slot)
                } else {
                    let stale = self.rng.random_bool(self.stale_reads);
                    self.admitted(*slot, stale)
                };
                match target {
                    Some(to)
                        if self.nodes[to].kernel
                            && !self.nodes[to].cut
                            && !self.nodes[to].underlay_deaf_to.contains(&from) =>
                    {
                        self.echo_survives(from, to)
                    }
                    _ => false,
                }
            }
            ProbeAddr::Ec2Api => self.ec2_reachable(from),
        };
        if answered {
            ProbeOutcome::Reply {
                rtt: Duration::from_millis(2),
            }
        } else {
            ProbeOutcome::Silent
        }
    }

    fn perform(&mut self, i: usize, action: Action) {
        match action {
            Action::AskHelpers {
                round,
                peer,
                timeout,
                overlay_only,
            } => {
                // Every other slot is asked; the answers come within the
                // timeout (a helper's probe plus the way there and back).
                let target = self.answerer(peer);
                // About the hub, its underlay counts too (unless sick).
                let anywhere = if peer.is_hub() && !overlay_only {
                    if self.broken == Broken::FenceEveryHolder {
                        None // the old rule: its overlay alone, and only when sick
                    } else {
                        self.admitted(peer, false)
                    }
                } else {
                    None
                };
                let me = self.nodes[i].answering;
                let mut answered = 0;
                let mut reached = false;
                let mut asked = 0;
                for h in 0..self.nodes.len() {
                    if h == i || Some(h) == target || self.nodes[h].answering == me {
                        continue;
                    }
                    asked += 1;
                    match self.helper_says(i, h, target, peer.is_hub(), anywhere) {
                        Some(true) => reached = true,
                        Some(false) => answered += 1,
                        None => {}
                    }
                }
                // The shell's quorum: `members.helpers`, 3 by default.
                let mut verdict = Verdict::of(asked, u32::from(reached), answered, 3);
                if self.broken == Broken::FenceEveryHolder && peer.is_hub() && !overlay_only {
                    verdict = Verdict::NoneToAsk;
                }
                let after = if reached {
                    self.ms(5, 100)
                } else {
                    timeout.min(self.ms(800, 1300))
                };
                self.schedule(
                    after,
                    Ev::Deliver {
                        node: i,
                        input: Input::HelpersSaid { round, verdict },
                    },
                );
            }
            Action::Probe {
                round,
                target,
                addr,
                timeout,
            } => {
                let mut outcome = self.probe(i, &addr);
                if self.broken == Broken::FenceEveryHolder && target == Target::HubOverlay {
                    outcome = ProbeOutcome::Silent;
                }
                if self.broken == Broken::WaitsOnDeadHub
                    && addr == ProbeAddr::Overlay(Slot::new(Role::Frontend, 1))
                {
                    outcome = ProbeOutcome::Reply {
                        rtt: Duration::from_millis(2),
                    };
                }
                // The checks use the truth, whatever the node is told.
                if target == Target::Witness && matches!(outcome, ProbeOutcome::Reply { .. }) {
                    self.nodes[i].witness_ok_at = Some(self.now);
                }
                if self.broken == Broken::WitnessLies && target == Target::Witness {
                    outcome = ProbeOutcome::Reply {
                        rtt: Duration::from_millis(2),
                    };
                }
                let after = match outcome {
                    ProbeOutcome::Reply { .. } => self.ms(1, 30),
                    ProbeOutcome::Silent | ProbeOutcome::NotSent => timeout,
                };
                self.schedule(
                    after,
                    Ev::Deliver {
                        node: i,
                        input: Input::Probed {
                            round,
                            target,
                            outcome,
                        },
                    },
                );
            }
            Action::CheckHolder { slot } => {
                let result = if self.ec2_reachable(i) && !self.rng.random_bool(self.ec2_fail_rate) {
                    // Tag staleness: a read may miss a change of the last second.
                    let stale = self.rng.random_bool(self.stale_reads);
                    let holder = if self.broken == Broken::FenceEveryHolder {
                        self.loose_holder(slot)
                    } else {
                        self.admitted(slot, stale)
                    };
                    self.nodes[i].ec2_ok_at = Some(self.now);
                    Ok(match holder {
                        Some(h) => Holder::Held(Judged {
                            instance: self.nodes[h].name.clone(),
                            epoch: self.nodes[h].epoch,
                        }),
                        None => Holder::Vacant,
                    })
                } else {
                    Err("ec2 unreachable".to_string())
                };
                let after = self.ms(20, 300);
                self.schedule(
                    after,
                    Ev::Deliver {
                        node: i,
                        input: Input::HolderChecked { slot, result },
                    },
                );
            }
            Action::Fence {
                slot,
                judged,
                attempt,
                ..
            } => {
                self.check_witness(i, "fences", self.cfg.interval + self.cfg.probe_timeout);
                if attempt == 1 {
                    self.check_fence(i, slot);
                }
                self.note(format!(
                    "{} fences {slot} (judged {:?}, attempt {attempt})",
                    self.nodes[i].name,
                    judged.as_ref().map(|j| &j.instance)
                ));
                if !self.ec2_reachable(i) || self.rng.random_bool(self.ec2_fail_rate) {
                    let after = self.ms(100, 3000);
                    self.schedule(
                        after,
                        Ev::Deliver {
                            node: i,
                            input: Input::FenceDone {
                                slot,
                                result: Err("ec2 error".into()),
                            },
                        },
                    );
                    return;
                }
                // The shell's rule: the judged instance and no other; a
                // slot taken since is superseded (the mutant: every holder).
                let target = if self.broken == Broken::FenceEveryHolder {
                    None
                } else {
                    let now_held = self.admitted(slot, false);
                    let judged_node = judged
                        .as_ref()
                        .and_then(|j| self.nodes.iter().position(|n| n.name == j.instance));
                    match (judged_node, now_held) {
                        (Some(j), Some(h)) if h != j && h != i => {
                            let holder = Some(Judged {
                                instance: self.nodes[h].name.clone(),
                                epoch: self.nodes[h].epoch,
                            });
                            let after = self.ms(20, 300);
                            self.schedule(
                                after,
                                Ev::Deliver {
                                    node: i,
                                    input: Input::Superseded { slot, holder },
                                },
                            );
                            return;
                        }
                        (Some(j), _) => Some(j),
                        (None, Some(h)) if h != i => Some(h),
                        _ => {
                            let after = self.ms(20, 300);
                            self.schedule(
                                after,
                                Ev::Deliver {
                                    node: i,
                                    input: Input::FenceDone {
                                        slot,
                                        result: Ok(Fenced::default()),
                                    },
                                },
                            );
                            return;
                        }
                    }
                };
                // Already fenced and on its way down, or down: confirmed
                // without a second stop. One that moved on to another slot
                // is not stopped.
                if let Some(t) = target {
                    let n = &self.nodes[t];
                    if n.tag != slot && !n.stopped && !n.stopping {
                        let after = self.ms(20, 300);
                        self.schedule(
                            after,
                            Ev::Deliver {
                                node: i,
                                input: Input::FenceDone {
                                    slot,
                                    result: Ok(Fenced::default()),
                                },
                            },
                        );
                        return;
                    }
                    if n.stopped || (n.stopping && n.fenced) {
                        let instances = vec![n.name.clone()];
                        let after = self.ms(20, 300);
                        self.schedule(
                            after,
                            Ev::Deliver {
                                node: i,
                                input: Input::FenceDone {
                                    slot,
                                    result: Ok(Fenced { instances }),
                                },
                            },
                        );
                        return;
                    }
                }
                // The request reaches EC2; the instance stays `stopping`,
                // still running (and answering, if it can) for as long as a
                // forced stop without OS shutdown takes; then it is off and
                // EC2 reports it stopped.
                let reach = self.ms(10, 200);
                let stop = self.ms(self.stop_ms.0, self.stop_ms.1);
                let stopping = self.fence_targets(i, slot, target);
                for &t in &stopping {
                    self.nodes[t].stopping = true;
                    let name = self.nodes[t].name.clone();
                    self.stops.push((self.now, name, slot));
                }
                if self.fabric {
                    // Tagged fenced and read back at once; EC2 stops it
                    // later.
                    let tagged = reach + self.ms(50, 300);
                    let (by, s2) = (i, stopping.clone());
                    self.schedule(
                        tagged,
                        Ev::FabricFence {
                            by,
                            slot,
                            target,
                            stopping: s2,
                        },
                    );
                    self.schedule(reach + stop, Ev::PowerOff { slot, stopping });
                } else {
                    self.schedule(
                        reach + stop,
                        Ev::StopHolders {
                            by: i,
                            slot,
                            target,
                            stopping,
                        },
                    );
                }
            }
            Action::TakeOver {
                from,
                to,
                attempt,
                planned,
            } => {
                // The takeover's first steps read EC2 (its own tags, the
                // slot's holder): without EC2 the attempt fails. A takeover
                // that waited on a detour through the hub runs on a fence
                // confirmed earlier, and on this answer.
                if !self.ec2_reachable(i) || self.rng.random_bool(self.ec2_fail_rate) {
                    let after = self.ms(100, 800);
                    self.schedule(
                        after,
                        Ev::Deliver {
                            node: i,
                            input: Input::TakeOverDone {
                                to,
                                result: Err("ec2 unreachable".into()),
                            },
                        },
                    );
                    return;
                }
                self.nodes[i].ec2_ok_at = Some(self.now);
                if attempt == 1 {
                    // Right after a confirmed fence (EC2 answered) or a
                    // look-up that found the slot vacant (EC2 answered: for
                    // a slot nobody holds, that is the witness).
                    let recent = |at: Option<Instant>| {
                        at.is_some_and(|at| {
                            self.now.saturating_duration_since(at) <= Duration::from_secs(3)
                        })
                    };
                    if !recent(self.nodes[i].ec2_ok_at) {
                        self.fail(&format!(
                            "{} takes over {to} without a recent EC2 answer",
                            self.nodes[i].name
                        ));
                    }
                }
                self.note(format!(
                    "{} takes over {to} from {from} (attempt {attempt})",
                    self.nodes[i].name
                ));
                // The shell's last check: a slot another instance holds now
                // (by the rule), other than the one fenced, is superseded.
                if self.broken != Broken::FenceEveryHolder
                    && let Some(h) = self.admitted(to, false)
                    && h != i
                    && !planned.fenced.contains(&self.nodes[h].name)
                {
                    let holder = Some(Judged {
                        instance: self.nodes[h].name.clone(),
                        epoch: self.nodes[h].epoch,
                    });
                    self.note(format!(
                        "{}'s takeover of {to} is superseded by {}",
                        self.nodes[i].name, self.nodes[h].name
                    ));
                    let after = self.ms(20, 300);
                    self.schedule(
                        after,
                        Ev::Deliver {
                            node: i,
                            input: Input::Superseded { slot: to, holder },
                        },
                    );
                    return;
                }
                // A fenced instance refuses to take anything over (it reads
                // its own tags first).
                if self.nodes[i].fenced {
                    let after = self.ms(20, 300);
                    self.schedule(
                        after,
                        Ev::Deliver {
                            node: i,
                            input: Input::TakeOverDone {
                                to,
                                result: Err("this instance is fenced".into()),
                            },
                        },
                    );
                    return;
                }
                // Persist (the slot with the event), retag, and drop the old
                // VPN identity at once.
                if let Some(step) = self.forced_crash.take() {
                    self.crash_in_takeover(i, to, step);
                    return;
                }
                if !self.nodes[i].cut && self.rng.random_bool(self.crash_mid_takeover) {
                    let steps = ["epoch", "state", "tags", "vpn"];
                    let step = steps[self.rng.random_range(0..steps.len())];
                    self.crash_in_takeover(i, to, step);
                    return;
                }
                self.nodes[i].state = to;
                self.nodes[i].pending = true;
                self.retag(i, to);
                self.nodes[i].answering = None;
                // A client's new identity connects through the hub: with no
                // hub, it is not up after `vpn.up_timeout` (20 s).
                if !to.is_hub() && !self.hub_up() {
                    let since = self.now;
                    self.schedule(Duration::from_secs(2), Ev::ClientUp { node: i, to, since });
                    return;
                }
                let ok = !self.nodes[i].cut && !self.rng.random_bool(self.takeover_fail);
                let after = self.ms(100, 1500);
                self.schedule(
                    after,
                    Ev::Deliver {
                        node: i,
                        input: Input::TakeOverDone {
                            to,
                            result: if ok {
                                Ok(())
                            } else {
                                Err("AUTH_FAILED".into())
                            },
                        },
                    },
                );
            }
            Action::Announce(t) => {
                self.takeovers += 1;
                self.nodes[i].pending = false;
                self.take_elastic_ip(i, t.to);
                if self.nodes[i].fenced && !t.to.is_hub() {
                    // Fenced while its takeover was under way: the hub's
                    // admission list refuses it (or drops it within 1 s).
                    self.nodes[i].answering = None;
                    self.note(format!(
                        "{} is fenced: the hub refuses it as {}",
                        self.nodes[i].name, t.to
                    ));
                    return;
                }
                self.nodes[i].answering = Some(t.to);
                self.note(format!(
                    "{} is now {} (vacant: {})",
                    self.nodes[i].name, t.to, t.vacant
                ));
            }
        }
    }

    /// The daemon of node `i` is killed -9 after `step` of its takeover of
    /// `to` (its kernel lives); systemd restarts it about 2 s later.
    fn crash_in_takeover(&mut self, i: usize, to: Slot, step: &str) {
        let n = &mut self.nodes[i];
        if step != "epoch" {
            n.state = to;
            n.pending = true;
        }
        let retagged = step == "tags" || step == "vpn";
        n.alive = false;
        n.answering = None;
        let name = n.name.clone();
        if retagged {
            self.retag(i, to);
        }
        self.note(format!(
            "FAULT {name}'s daemon killed after the {step} step of its takeover of {to}"
        ));
        let after = self.ms(1500, 2500);
        self.schedule(after, Ev::Restart { node: i });
    }

    fn check_witness(&self, i: usize, what: &str, within: Duration) {
        let ok = self.nodes[i]
            .witness_ok_at
            .is_some_and(|at| self.now.saturating_duration_since(at) <= within);
        if !ok {
            self.fail(&format!(
                "{} {what} although it has not reached its witness within {within:?} (last: {:?})",
                self.nodes[i].name,
                self.nodes[i].witness_ok_at.map(|a| a - self.start)
            ));
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(a) = self.nodes[i].core.poll_action() {
            self.perform(i, a);
        }
        while let Some(e) = self.nodes[i].core.poll_event() {
            use chainwatch::core::Event;
            if let Event::Detour { .. }
            | Event::TailLost { .. }
            | Event::Superseded { .. }
            | Event::Degraded { .. }
            | Event::OverlayBack { .. }
            | Event::Vacant { .. }
            | Event::Miss { .. }
            | Event::Vouched { .. }
            | Event::Recovered { .. }
            | Event::FenceConfirmed { .. } = e
            {
                let name = self.nodes[i].name.clone();
                self.note(format!("{name}: {e:?}"));
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { node, input } => {
                if !self.nodes[node].alive {
                    return;
                }
                if matches!(input, Input::FenceDone { result: Ok(_), .. }) {
                    self.nodes[node].ec2_ok_at = Some(self.now);
                }
                self.nodes[node].core.handle_input(self.now, input);
                self.drain(node);
            }
            Ev::StopHolders {
                by,
                slot,
                target,
                stopping,
            } => {
                let mut stopped = Vec::new();
                for j in stopping {
                    self.check_stopped_judged(by, slot, j, target);
                    let n = &mut self.nodes[j];
                    if self.broken != Broken::FenceStopsNothing {
                        n.alive = false;
                        n.kernel = false;
                        n.stopped = true;
                        n.stopping = false;
                    }
                    stopped.push(n.name.clone());
                }
                self.note(format!("EC2 stopped {stopped:?} for {slot}"));
                let after = self.ms(50, 2000);
                self.schedule(
                    after,
                    Ev::Deliver {
                        node: by,
                        input: Input::FenceDone {
                            slot,
                            result: Ok(Fenced { instances: stopped }),
                        },
                    },
                );
            }
            Ev::FabricFence {
                by,
                slot,
                target,
                stopping,
            } => {
                let mut fenced = Vec::new();
                for j in stopping {
                    self.check_stopped_judged(by, slot, j, target);
                    let broken = self.broken;
                    let n = &mut self.nodes[j];
                    n.fenced = true;
                    // The hub's list drops it and its session is killed
                    // (frontend1's own fabric, the Elastic IP, moves at the
                    // takeover).
                    if !slot.is_hub()
                        && n.answering == Some(slot)
                        && broken != Broken::FenceStopsNothing
                    {
                        n.answering = None;
                    }
                    fenced.push(n.name.clone());
                }
                self.note(format!("fabric fence: {fenced:?} tagged fenced for {slot}"));
                self.nodes[by].ec2_ok_at = Some(self.now);
                let after = self.ms(10, 100);
                self.schedule(
                    after,
                    Ev::Deliver {
                        node: by,
                        input: Input::FenceDone {
                            slot,
                            result: Ok(Fenced { instances: fenced }),
                        },
                    },
                );
            }
            Ev::PowerOff { slot, stopping } => {
                let mut stopped = Vec::new();
                for j in stopping {
                    let n = &mut self.nodes[j];
                    // The stop went out: it completes, whatever the daemon
                    // did meanwhile (a restarted one may have rejoined
                    // elsewhere).
                    if !n.stopping {
                        continue;
                    }
                    if self.broken != Broken::FenceStopsNothing {
                        n.alive = false;
                        n.kernel = false;
                        n.stopped = true;
                        n.stopping = false;
                    }
                    stopped.push(n.name.clone());
                }
                self.note(format!("EC2 stopped {stopped:?} (power fence of {slot})"));
            }
            Ev::ClientUp { node, to, since } => {
                if !self.nodes[node].alive || self.nodes[node].state != to {
                    return;
                }
                let input = if self.hub_up() && !self.nodes[node].cut {
                    Input::TakeOverDone { to, result: Ok(()) }
                } else if self.now.saturating_duration_since(since) >= Duration::from_secs(20) {
                    Input::TakeOverDone {
                        to,
                        result: Err(format!("{to} not up after 20 s: last OpenVPN state WAIT")),
                    }
                } else {
                    self.schedule(Duration::from_secs(2), Ev::ClientUp { node, to, since });
                    return;
                };
                let after = self.ms(100, 1500);
                self.schedule(after, Ev::Deliver { node, input });
            }
            Ev::Restart { node } => self.restart_daemon(node),
        }
    }

    /// systemd starts the daemon again on a running instance. It boots as
    /// its state file says, unless another running instance is tagged with
    /// that slot: then it rejoins at the tail. A takeover the state file
    /// holds the event of is completed and announced, or released when
    /// the node goes to the tail.
    fn restart_daemon(&mut self, i: usize) {
        self.changed_at = self.now;
        let n = &self.nodes[i];
        if n.stopped || n.alive || !n.kernel {
            return;
        }
        let (role, mut slot) = (n.role, n.state);
        // Fenced, or its slot claimed by another running instance: to the
        // tail.
        let taken = n.fenced
            || self
                .nodes
                .iter()
                .enumerate()
                .any(|(j, m)| j != i && !m.stopped && !m.fenced && m.tag == slot);
        if taken {
            let held: Vec<u32> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(j, m)| *j != i && !m.stopped && m.role == role)
                .map(|(_, m)| m.tag.id)
                .collect();
            let Some(id) = self.layout.tail_id(role, &held) else {
                return;
            };
            slot = Slot::new(role, id);
        }
        if self.nodes[i].pending {
            self.nodes[i].pending = false;
            if slot == self.nodes[i].state {
                self.takeovers += 1;
                self.note(format!(
                    "{} completes and announces its interrupted takeover of {slot}",
                    self.nodes[i].name
                ));
            } else {
                self.note(format!(
                    "{} releases its interrupted takeover of {}",
                    self.nodes[i].name, self.nodes[i].state
                ));
            }
        }
        self.boot_as(i, slot, "'s daemon restarted by systemd as");
    }

    /// Node `i` tags itself with `slot`.
    fn retag(&mut self, i: usize, slot: Slot) {
        let epoch = self.next_epoch(self.nodes[i].role);
        let n = &mut self.nodes[i];
        if n.tag != slot {
            n.prev_tag = Some((n.tag, self.now));
            n.prev_epoch = n.epoch;
            n.tag = slot;
            n.epoch = epoch;
        }
    }

    /// The tag of node `n` as one EC2 read sees it: for up to 1 s after a
    /// change, a read may still return the previous one.
    fn tag_as_read(&self, n: &Node, stale: bool) -> Slot {
        match n.prev_tag {
            Some((old, at))
                if stale && self.now.saturating_duration_since(at) < Duration::from_secs(1) =>
            {
                old
            }
            _ => n.tag,
        }
    }

    /// Node `i` now holds `slot`; for frontend1 it moves the Elastic IP to
    /// itself, so the old hub, if it still runs, is off the overlay.
    fn take_elastic_ip(&mut self, i: usize, slot: Slot) {
        if slot.is_hub() && self.broken != Broken::FenceStopsNothing {
            for (j, n) in self.nodes.iter_mut().enumerate() {
                if j != i && n.answering == Some(slot) {
                    n.answering = None;
                }
            }
        }
    }

    /// Node `i`'s daemon starts (again) holding `slot`.
    fn boot_as(&mut self, i: usize, slot: Slot, how: &str) {
        self.take_elastic_ip(i, slot);
        self.retag(i, slot);
        let n = &mut self.nodes[i];
        n.alive = true;
        n.state = slot;
        n.fenced = false;
        n.answering = Some(slot);
        n.witness_ok_at = None;
        n.ec2_ok_at = None;
        n.core = Monitor::new(self.cfg.clone(), slot, self.now);
        if let Some(t) = self.told_tail.get_mut(i) {
            *t = None;
        }
        let name = n.name.clone();
        self.note(format!("{name}{how} {slot}"));
        self.drain(i);
    }

    /// Record when each node began answering for its current slot (a node
    /// that just took a slot over is not yet "healthy there" for the
    /// healthy-fence check: the helpers' probes may predate it).
    fn note_answering(&mut self) {
        for (i, n) in self.nodes.iter().enumerate() {
            let now_answering = if n.alive { n.answering } else { None };
            match self.answering_since.get_mut(i) {
                Some(e) if e.0 == now_answering => {}
                Some(e) => *e = (now_answering, self.now),
                None => self.answering_since.push((now_answering, self.now)),
            }
        }
    }

    fn check_safety(&self) {
        for slot in self.layout.all_slots() {
            let answering = self
                .nodes
                .iter()
                .filter(|n| n.alive && n.answering == Some(slot))
                .count();
            if answering > 1 {
                self.fail(&format!("{answering} live nodes answer for {slot}"));
            }
            let tagged = self
                .nodes
                .iter()
                .filter(|n| !n.stopped && !n.fenced && n.tag == slot)
                .count();
            if tagged > 1 {
                self.fail(&format!("{tagged} running instances are tagged {slot}"));
            }
        }
    }

    /// Run until `until`, processing events and timers in time order.
    fn run_until(&mut self, until: Instant) {
        loop {
            let next_ev = self.queue.peek().map(|Reverse((at, _, _))| *at);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.alive)
                .filter_map(|(i, n)| n.core.poll_timeout().map(|t| (t, i)))
                .min();
            let next = match (next_ev, next_timer) {
                (Some(e), Some((t, _))) => e.min(t),
                (Some(e), None) => e,
                (None, Some((t, _))) => t,
                (None, None) => until,
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            match (next_ev, next_timer) {
                (Some(e), timer) if timer.is_none_or(|(t, _)| e <= t) => {
                    let Reverse((_, _, idx)) = self.queue.pop().expect("peeked");
                    if let Some(ev) = self.events[idx].take() {
                        self.handle(ev);
                    }
                }
                (_, Some((_, i))) => {
                    self.nodes[i].core.handle_timeout(self.now);
                    self.drain(i);
                }
                (None, None) => {
                    self.now = until;
                    return;
                }
                (Some(_), None) => unreachable!("the first arm takes an event without timers"),
            }
            self.check_safety();
            self.note_answering();
            self.tell_tails();
        }
    }

    fn random_fault(&mut self) {
        self.changed_at = self.now;
        let i = self.rng.random_range(0..self.nodes.len());
        let kind = self.rng.random_range(0..134);
        let name = self.nodes[i].name.clone();
        match kind {
            0..=19 if self.nodes[i].alive => {
                // The instance dies whole (kernel too); EC2 still shows it
                // running.
                self.nodes[i].alive = false;
                self.nodes[i].kernel = false;
                self.note(format!("FAULT {name} crashes"));
            }
            20..=29 if self.nodes[i].alive => {
                // Only the daemon dies (its OpenVPN with it): the kernel
                // still answers on the underlay. systemd restarts it.
                self.nodes[i].alive = false;
                self.note(format!("FAULT {name}'s daemon crashes, its kernel lives"));
                let after = self.ms(2000, 4000);
                self.schedule(after, Ev::Restart { node: i });
            }
            30..=39 if self.nodes[i].alive => {
                // The instance is stopped outside chainwatch (vacancy).
                self.nodes[i].alive = false;
                self.nodes[i].kernel = false;
                self.nodes[i].stopped = true;
                self.note(format!("FAULT {name} stopped in EC2"));
            }
            40..=59 => {
                self.nodes[i].cut = !self.nodes[i].cut;
                self.note(format!("FAULT {name} cut = {}", self.nodes[i].cut));
            }
            60..=74 => {
                let loss = [0.0, 0.05, 0.2, 0.3][self.rng.random_range(0..4)];
                self.nodes[i].loss = loss;
                self.note(format!("FAULT {name} loss = {loss}"));
            }
            75..=84 => {
                self.ec2_down = !self.ec2_down;
                self.ec2_fail_rate = [0.0, 0.1, 0.5][self.rng.random_range(0..3)];
                self.note(format!(
                    "FAULT ec2 down = {} fail rate = {}",
                    self.ec2_down, self.ec2_fail_rate
                ));
            }
            85..=89 => {
                // A path that drops ICMP to one instance's VPC address only
                // (a security group without ICMP from one member): its
                // overlay still answers that member.
                let j = self.rng.random_range(0..self.nodes.len());
                if j != i && !self.nodes[j].underlay_deaf_to.contains(&i) {
                    self.nodes[j].underlay_deaf_to.push(i);
                    let other = self.nodes[j].name.clone();
                    self.note(format!(
                        "FAULT {name}'s ICMP to {other}'s VPC address dropped"
                    ));
                }
            }
            100..=107 => {
                // A one-way path fault: i stops hearing j, and only j.
                let j = self.rng.random_range(0..self.nodes.len());
                if j != i && !self.nodes[i].deaf_to.contains(&j) {
                    self.nodes[i].deaf_to.push(j);
                    let other = self.nodes[j].name.clone();
                    self.note(format!("FAULT {name} deaf to {other}"));
                }
            }
            108..=114 => {
                // A pairwise partition: i and j cannot reach each other.
                let j = self.rng.random_range(0..self.nodes.len());
                if j != i {
                    self.nodes[i].deaf_to.push(j);
                    self.nodes[j].deaf_to.push(i);
                    let other = self.nodes[j].name.clone();
                    self.note(format!("FAULT {name} and {other} partitioned"));
                }
            }
            115..=121 => {
                // A helper goes bad: silent, or lying either way.
                let h = [Helper::Silent, Helper::Lies(true), Helper::Lies(false)]
                    [self.rng.random_range(0..3)];
                self.nodes[i].helper = h;
                self.note(format!("FAULT {name} as a helper: {h:?}"));
            }
            122..=126 if self.nodes[i].alive => {
                // Its OpenVPN hangs: the host and the daemon live.
                self.nodes[i].vpn_hung = true;
                self.note(format!("FAULT {name}'s OpenVPN hangs"));
            }
            127..=129 if self.nodes[i].alive => {
                // Its service fails: the daemon gives up the ID (identity
                // down, daemon gone, kernel alive) and tells the watcher.
                let Some(slot) = self.nodes[i].answering.filter(|s| !s.is_hub()) else {
                    return;
                };
                self.nodes[i].alive = false;
                self.nodes[i].service_down = true;
                self.note(format!("FAULT {name}'s service fails: it gives up {slot}"));
                self.tell_watcher(i, slot);
            }
            130..=132 => {
                // A resignation its holder never sent (a replay, a key
                // holder lying): it must not fence a holder that answers.
                let Some(slot) = self.nodes[i].answering.filter(|s| !s.is_hub()) else {
                    return;
                };
                self.note(format!("FAULT a false resignation of {slot}"));
                self.tell_watcher(i, slot);
            }
            _ => self.restart_one(),
        }
    }

    /// `from`'s word that it gave up `slot`, to the node watching `slot`,
    /// on the underlay (lost if either end is cut off).
    fn tell_watcher(&mut self, from: usize, slot: Slot) {
        let Some(w) = slot.watcher().and_then(|w| {
            self.nodes
                .iter()
                .position(|n| n.alive && n.answering == Some(w))
        }) else {
            return;
        };
        if self.nodes[from].cut || self.nodes[w].cut {
            return;
        }
        let after = self.ms(1, 50);
        self.schedule(
            after,
            Ev::Deliver {
                node: w,
                input: Input::Resigned { slot },
            },
        );
    }

    /// A stopped instance is started again: it rejoins at the tail.
    fn restart_one(&mut self) {
        let Some(i) = self.nodes.iter().position(|n| n.stopped) else {
            return;
        };
        let role = self.nodes[i].role;
        let held: Vec<u32> = self
            .nodes
            .iter()
            .filter(|n| !n.stopped && n.role == role)
            .map(|n| n.tag.id)
            .collect();
        let Some(id) = self.layout.tail_id(role, &held) else {
            return;
        };
        let slot = Slot::new(role, id);
        let n = &mut self.nodes[i];
        n.alive = true;
        n.kernel = true;
        n.stopped = false;
        n.stopping = false;
        n.cut = false;
        n.loss = 0.0;
        n.vpn_hung = false;
        n.service_down = false;
        // A takeover it was stopped in is released: it rejoins at the tail,
        // tagged active again.
        n.pending = false;
        n.fenced = false;
        self.note(format!("FAULT {} restarted", self.nodes[i].name));
        self.boot_as(i, slot, " rejoins as");
    }

    fn heal(&mut self) {
        self.changed_at = self.now;
        // A service back: its daemon brings the node back (as its state
        // says, or at the tail if it was fenced or its ID taken).
        for i in 0..self.nodes.len() {
            if std::mem::take(&mut self.nodes[i].service_down) {
                self.schedule(Duration::ZERO, Ev::Restart { node: i });
            }
        }
        for n in &mut self.nodes {
            n.cut = false;
            n.loss = 0.0;
            n.deaf_to.clear();
            n.helper = Helper::Honest;
            n.vpn_hung = false;
            n.underlay_deaf_to.clear();
        }
        self.ec2_down = false;
        self.ec2_fail_rate = 0.0;
        self.note("HEAL".into());
    }

    /// The bound within which a healed chain is whole again: a retry that
    /// was backed off to the maximum, then one detection window, fence and
    /// takeover per hop of the longest chain.
    fn bound(&self) -> Duration {
        let c = &self.cfg;
        // A node restarted just before healing may still be in its grace.
        let grace = c.startup_grace;
        let detect = c.interval * (c.misses + 1) + c.probe_timeout;
        let fence = Duration::from_millis(200 + 6000 + 2000 + 3000);
        let takeover = Duration::from_millis(1500) * 3;
        grace + c.backoff_max + (detect + fence + takeover) * self.per_role
    }

    fn check_whole(&self) {
        for role in Role::ALL {
            // Every member but the hub connects through the hub: with no
            // frontend left alive there is no overlay to be whole.
            if role == Role::Backend
                && !self.hub_up()
                && !self
                    .nodes
                    .iter()
                    .any(|n| n.alive && n.role == Role::Frontend)
            {
                continue;
            }
            let mut ids: Vec<u32> = self
                .nodes
                .iter()
                .filter(|n| n.alive && n.role == role)
                .map(|n| match n.answering {
                    Some(s) => s.id,
                    None => self.fail(&format!("{} has no identity after healing", n.name)),
                })
                .collect();
            ids.sort_unstable();
            let want: Vec<u32> = (1..=ids.len() as u32).collect();
            if ids != want {
                self.fail(&format!(
                    "{role} chain not whole {:?} after healing: held IDs {ids:?}",
                    self.bound()
                ));
            }
            for n in self.nodes.iter().filter(|n| n.alive && n.role == role) {
                if n.pending {
                    self.fail(&format!(
                        "{} still holds the unannounced event of its takeover of {}",
                        n.name, n.state
                    ));
                }
                let phase = n.core.snapshot().phase;
                if !matches!(phase, PhaseName::Watching | PhaseName::Idle) {
                    self.fail(&format!("{} still {phase:?} after healing", n.name));
                }
            }
        }
    }
}

fn simulate(seed: u64) -> (u32, Duration) {
    simulate_in(seed, Broken::No)
}

fn simulate_in(seed: u64, broken: Broken) -> (u32, Duration) {
    let mut w = World::new(seed);
    w.broken = broken;
    if broken == Broken::NoSecondOpinion {
        w.cfg.second_opinion = false;
        for n in &mut w.nodes {
            n.core = Monitor::new(w.cfg.clone(), n.state, w.start);
        }
    }
    let epochs = w.rng.random_range(3..8);
    for _ in 0..epochs {
        let faults = w.rng.random_range(1..4);
        for _ in 0..faults {
            w.random_fault();
        }
        let dwell = w.ms(500, 20_000);
        let until = w.now + dwell;
        w.run_until(until);
        if w.rng.random_bool(0.3) {
            w.heal();
        }
    }
    w.heal();
    // Crashed processes whose instances still run stay dead (they will be
    // fenced); stopped ones may come back.
    let until = w.now + w.bound();
    w.run_until(until);
    w.check_whole();
    (w.takeovers, w.now - w.start)
}

#[test]
fn chains_stay_safe_and_whole_under_random_faults() {
    let seeds: Vec<u64> = match std::env::var("CHAINWATCH_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("CHAINWATCH_SIM_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("CHAINWATCH_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(300);
            assert!(n > 0, "CHAINWATCH_SIM_SEEDS=0 would check nothing");
            (1..=n).collect()
        }
    };
    let mut takeovers = 0;
    let mut simulated = Duration::ZERO;
    for seed in &seeds {
        let (t, d) = simulate(*seed);
        takeovers += t;
        simulated += d;
    }
    eprintln!(
        "simulated {} seeds, {:.0} s of chain time, {takeovers} takeovers",
        seeds.len(),
        simulated.as_secs_f64()
    );
    // The faults must actually exercise the takeover path.
    assert!(
        takeovers as usize >= seeds.len() / 2,
        "too few takeovers: {takeovers}"
    );
}

/// A single death in a quiet fleet is filled within one detection window
/// plus fence and takeover, and the vacancy left behind by a compacting
/// chain is filled hop by hop without a full window per hop.
#[test]
fn a_dead_head_compacts_the_chain_quickly() {
    let mut w = World::new(0);
    // A measure of speed: no daemon is killed and no attempt fails on the
    // way, and EC2's reads are fresh.
    w.crash_mid_takeover = 0.0;
    w.takeover_fail = 0.0;
    w.stale_reads = 0.0;
    w.run_until(w.start + Duration::from_secs(5));
    // frontend1 and frontend2 are stopped in EC2 at once.
    for i in 0..2 {
        w.nodes[i].alive = false;
        w.nodes[i].kernel = false;
        w.nodes[i].stopped = true;
    }
    let died = w.now;
    w.run_until(died + Duration::from_secs(30));
    w.check_whole();
    let ids: Vec<Option<Slot>> = w.nodes[2..5].iter().map(|n| n.answering).collect();
    assert_eq!(
        ids,
        vec![
            Some(Slot::new(Role::Frontend, 1)),
            Some(Slot::new(Role::Frontend, 2)),
            Some(Slot::new(Role::Frontend, 3))
        ]
    );
    // Vacant: each found by two look-ups a second apart, not after three
    // missed rounds.
    let filled: Vec<&String> = w
        .log
        .iter()
        .filter(|l| l.contains("is now") && l.contains("vacant: true"))
        .collect();
    assert!(filled.len() >= 3, "{:#?}", w.log);
    // Nobody was fenced: every hop was a vacancy.
    assert!(
        !w.log.iter().any(|l| l.contains(" fences ")),
        "{:#?}",
        w.log
    );
    // The last hop landed within about four detection windows of the
    // deaths, not one window per hop: frontend3 takes the hub's place
    // first (it judges the hub before a takeover that would need it), then
    // frontend4 and 5 fill the two gaps behind, as vacancies, at the API's
    // pace while the overlay comes back.
    let window = w.cfg.interval * w.cfg.misses + w.cfg.probe_timeout;
    let window = window * 4 / 3;
    let last = filled
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.trim_end_matches('s').parse::<f64>().ok())
        .expect("a time stamp");
    let took = Duration::from_secs_f64(last) - (died - w.start);
    assert!(
        took <= window * 3,
        "the chain compacted in {took:?}, more than three detection windows ({:?})\n{:#?}",
        window * 3,
        w.log
    );
}

/// A daemon that crashes behind a live kernel and is back within a
/// detection window keeps its ID: its successor saw a short silence only.
#[test]
fn a_daemon_back_within_a_window_keeps_its_id() {
    let mut w = World::new(11);
    w.run_until(w.start + Duration::from_secs(40));
    let i = 7; // backend3
    w.nodes[i].alive = false;
    w.schedule(Duration::from_millis(1200), Ev::Restart { node: i });
    w.run_until(w.now + Duration::from_secs(60));
    assert!(!w.nodes[i].stopped, "{:#?}", w.log);
    assert_eq!(w.nodes[i].answering, Some(Slot::new(Role::Backend, 3)));
    w.check_whole();
}

/// Mutation check: a fence that reports success while stopping nothing
/// must trip the safety checks (two live holders of one slot), not merely
/// some check (a liveness bound, say).
#[test]
#[should_panic(expected = "live nodes answer for")]
fn a_fence_that_stops_nothing_is_caught() {
    for seed in 1..=200 {
        simulate_in(seed, Broken::FenceStopsNothing);
    }
}

/// Mutation check: a witness that answers a cut-off node must trip the
/// check it breaks (a node fences although it cannot see the fleet), not
/// merely some check.
#[test]
#[should_panic(expected = "fences although it has not reached its witness")]
fn a_lying_witness_is_caught() {
    for seed in 1..=200 {
        simulate_in(seed, Broken::WitnessLies);
    }
}

/// Mutation check: without the second-opinion rule, one-way and pairwise
/// path faults fence healthy nodes, and the healthy-fence check trips.
#[test]
#[should_panic(expected = "healthy")]
fn without_the_second_opinion_a_healthy_node_is_fenced_and_caught() {
    for seed in 1..=1500 {
        simulate_in(seed, Broken::NoSecondOpinion);
    }
}

/// One node deaf to its peer for ten minutes: nobody is fenced, and the
/// peer's real death under the fault is still declared.
#[test]
fn a_one_way_fault_fences_nobody_and_a_death_behind_it_is_found() {
    let mut w = World::new(11);
    w.run_until(w.start + Duration::from_secs(40));
    let (observer, peer) = (7, 6); // backend3 watches backend2
    w.nodes[observer].deaf_to.push(peer);
    w.run_until(w.now + Duration::from_secs(600));
    assert_eq!(w.takeovers, 0, "{:#?}", w.log);
    assert!(w.nodes.iter().all(|n| !n.stopped));
    w.nodes[peer].alive = false;
    w.nodes[peer].kernel = false;
    let died = w.now;
    w.run_until(w.now + Duration::from_secs(30));
    assert_eq!(
        w.nodes[observer].answering,
        Some(Slot::new(Role::Backend, 2)),
        "{:#?}",
        w.log
    );
    eprintln!("taken over within 30 s of the death at {died:?}");
}

/// A node that is cut off from everything takes over nobody, for as long as
/// it stays cut off.
#[test]
fn a_cut_off_node_takes_over_nobody() {
    let mut w = World::new(7);
    w.run_until(w.start + Duration::from_secs(3));
    let i = 3; // frontend4
    w.nodes[i].cut = true;
    w.run_until(w.now + Duration::from_secs(120));
    assert_eq!(w.nodes[i].tag, Slot::new(Role::Frontend, 4));
    // frontend5 watches it: it is fenced (EC2 stops it) and replaced.
    assert!(w.nodes[i].stopped, "{:#?}", w.log);
    assert_eq!(w.nodes[4].answering, Some(Slot::new(Role::Frontend, 4)));
}

/// The taker's daemon is killed -9 after each step of a takeover and
/// restarted about 2 s later: the ID is filled, one event announced, and
/// no node keeps an unannounced takeover.
#[test]
fn a_takeover_killed_at_each_step_completes_after_the_restart() {
    for step in ["epoch", "state", "tags", "vpn"] {
        let mut w = World::new(7);
        w.crash_mid_takeover = 0.0;
        w.run_until(w.start + Duration::from_secs(5));
        // frontend2 dies whole; frontend3 takes it over and is killed.
        w.nodes[1].alive = false;
        w.nodes[1].kernel = false;
        w.forced_crash = Some(step);
        let died = w.now;
        w.run_until(died + Duration::from_secs(40));
        assert!(w.forced_crash.is_none(), "{step}: no takeover happened");
        w.check_whole();
        assert!(
            w.log.iter().any(|l| l.contains("killed after the")),
            "{step}: {:#?}",
            w.log
        );
        let at = |what: &str| -> f64 {
            w.log
                .iter()
                .find(|l| l.contains(what))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|t| t.trim_end_matches('s').parse().ok())
                .unwrap_or_else(|| panic!("{step}: no {what:?} in {:#?}", w.log))
        };
        let killed = at("killed after the");
        // Killed after the epoch, nothing was persisted: it takes over
        // again. Killed later, the restart completes and announces it.
        let done = if step == "epoch" {
            at("is now frontend2")
        } else {
            at("completes and announces its interrupted takeover of frontend2")
        };
        assert!(
            done > killed && done - killed <= 10.0,
            "{step}: filled {:.1} s after the kill\n{:#?}",
            done - killed,
            w.log
        );
        assert!(w.takeovers >= 1, "{step}: no event announced");
    }
}

/// The hub dies, and EC2 takes its time stopping it (6 s `stopping`, fenced
/// meanwhile), at a random phase, in a quiet fleet: exactly one instance is
/// stopped, the old hub; a survivor is the hub and the frontend chain is
/// whole. `broken` runs the same with a world whose look-up and fence are
/// the code at 7d5e3fc's.
fn hub_death_with_slow_stops(seed: u64, broken: Broken, dead: usize) {
    let mut w = World::new(seed);
    w.broken = broken;
    w.crash_mid_takeover = 0.0;
    w.takeover_fail = 0.0;
    w.stop_ms = (6000, 6000);
    let phase = w.ms(3000, 4000);
    w.run_until(w.start + phase);
    // The hub's instance dies whole (with frontend2's, for `dead` = 2);
    // EC2 still says running.
    for i in 0..dead {
        w.nodes[i].alive = false;
        w.nodes[i].kernel = false;
    }
    let died = w.now;
    w.note(format!("FAULT the first {dead} frontends die"));
    // The hub and its watcher dead together: frontend3 judges the hub
    // itself instead of waiting on it (the rig's bound is 10 s with the
    // overlay whole; here the hub alone, at the simulation's paces).
    if dead == 2 {
        w.run_until(died + Duration::from_secs(12));
        if w.answerer(Slot::new(Role::Frontend, 1)).is_none() {
            w.fail("no survivor is the hub 12 s after the hub and frontend2 died");
        }
    }
    w.run_until(died + Duration::from_secs(40));
    let mut stopped: Vec<&str> = w.stops.iter().map(|(_, name, _)| name.as_str()).collect();
    stopped.sort_unstable();
    let want: Vec<String> = (1..=dead).map(|i| format!("i-frontend{i}")).collect();
    if stopped != want {
        w.fail(&format!(
            "{dead} deaths stopped {stopped:?}, not exactly the old hub and the dead ({want:?})"
        ));
    }
    if w.answerer(Slot::new(Role::Frontend, 1)).is_none() {
        w.fail("no survivor is the hub 30 s after its death");
    }
    w.check_whole();
}

#[test]
fn a_hub_death_with_slow_stops_stops_the_old_hub_alone() {
    for seed in 0..100 {
        hub_death_with_slow_stops(seed, Broken::No, 1);
        hub_death_with_slow_stops(seed, Broken::No, 2);
    }
}

/// The mutant: a look-up that keeps the fenced, stopping old hub, and a
/// fence that stops every holder of the slot, stop its successor too.
#[test]
#[should_panic(expected = "answers as frontend1 and was not the instance judged dead")]
fn a_fence_of_every_holder_is_caught() {
    for seed in 0..100 {
        hub_death_with_slow_stops(seed, Broken::FenceEveryHolder, 1);
        hub_death_with_slow_stops(seed, Broken::FenceEveryHolder, 2);
    }
}

/// The mutant: a taker that waits on its dead hub (the hub's overlay
/// address answers it) leaves the hub's ID empty past the bound.
#[test]
#[should_panic(expected = "no survivor is the hub 12 s after the hub and frontend2 died")]
fn a_taker_waiting_on_its_dead_hub_is_caught() {
    for seed in 0..100 {
        hub_death_with_slow_stops(seed, Broken::WaitsOnDeadHub, 2);
    }
}

/// frontend2's ICMP to the hub's VPC address is dropped (a security group
/// without ICMP from it); the tunnel works. For a minute nobody is fenced:
/// the hub answers frontend2 on the overlay.
#[test]
fn an_icmp_path_dropped_to_the_hub_fences_nobody() {
    for seed in 0..50 {
        let mut w = World::new(seed);
        w.crash_mid_takeover = 0.0;
        w.run_until(w.start + Duration::from_secs(5));
        w.nodes[0].underlay_deaf_to.push(1);
        w.note("FAULT frontend2's ICMP to the hub's VPC address dropped".into());
        w.run_until(w.now + Duration::from_secs(60));
        if !w.stops.is_empty() {
            w.fail(&format!("stopped {:?}", w.stops));
        }
        if w.takeovers != 0 {
            w.fail(&format!("{} takeovers", w.takeovers));
        }
    }
}

/// `CHAINWATCH_SIM_SEEDS` (default 300).
fn seeds() -> u64 {
    std::env::var("CHAINWATCH_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

/// Up to half the members of a fleet of `per_role` frontends and as many
/// backends (a seeded set, the hub often among them) are killed at one
/// instant in a quiet fleet. Every ID left is filled within k detection
/// windows plus the fences and takeovers, and no survivor is stopped.
fn correlated_deaths(seed: u64, per_role: u32, broken: Broken) {
    let mut w = World::sized(seed, per_role);
    w.broken = broken;
    w.crash_mid_takeover = 0.0;
    w.takeover_fail = 0.0;
    let phase = w.ms(3000, 5000);
    w.run_until(w.start + phase);
    let n = w.nodes.len();
    let k = w.rng.random_range(1..=n / 2);
    let mut dead: Vec<usize> = (0..n).collect();
    // A seeded shuffle; the hub among the dead in every other seed.
    for i in (1..n).rev() {
        let j = w.rng.random_range(0..=i);
        dead.swap(i, j);
    }
    dead.truncate(k);
    if seed.is_multiple_of(2) && !dead.contains(&0) {
        dead[0] = 0;
    }
    for &i in &dead {
        w.nodes[i].alive = false;
        w.nodes[i].kernel = false;
    }
    let died = w.now;
    w.note(format!("FAULT {k} members die at once: {dead:?}"));
    // k windows (one per consecutive death in a role) plus a fence, a
    // takeover and a vacancy hop per ID moved, at the API's pace.
    let c = w.cfg.clone();
    let window = c.interval * (c.misses + 2) + c.probe_timeout * 2;
    let per_death = window + Duration::from_millis(6000 + 1500 + 2000);
    // Plus the chain's compaction: one vacancy hop (two look-ups a round
    // apart, and the takeover) per ID behind the dead.
    let hop = c.interval * 3 + Duration::from_millis(1500);
    let bound = per_death * k as u32 + hop * per_role + Duration::from_secs(10);
    w.run_until(died + bound);
    for (_, name, _) in &w.stops {
        let i = w
            .nodes
            .iter()
            .position(|m| &m.name == name)
            .expect("a node");
        if !dead.contains(&i) {
            w.fail(&format!("survivor {name} stopped"));
        }
    }
    w.check_whole();
}

/// Seeds `0..n`, or the one `CHAINWATCH_SIM_SEED` names (a replay).
fn seed_range(n: u64) -> Vec<u64> {
    match std::env::var("CHAINWATCH_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("CHAINWATCH_SIM_SEED is a number")],
        Err(_) => (0..n).collect(),
    }
}

#[test]
fn correlated_deaths_of_up_to_half_heal_in_a_fleet_of_ten() {
    for seed in seed_range(seeds() / 3) {
        correlated_deaths(seed, 5, Broken::No);
    }
}

#[test]
fn correlated_deaths_of_up_to_half_heal_in_a_fleet_of_fifty() {
    for seed in seed_range((seeds() / 60).max(1)) {
        correlated_deaths(seed, 25, Broken::No);
    }
}
