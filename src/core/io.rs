//! What goes into the core and what comes out of it: probe targets and
//! outcomes, the inputs the shell reports, the actions it must perform.

use std::time::Duration;

use super::Transition;
use crate::layout::Slot;

/// Which of the two probes of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The watched peer (ID n-1).
    Peer,
    /// The witness that tells whether this node can see the fleet at all.
    Witness,
    /// frontend1 on the overlay, probed in degraded rounds (see
    /// [`Monitor`]) only to learn when the overlay is back.
    Overlay,
    /// frontend1 on the overlay, probed by frontend2 beside its underlay
    /// (with the second opinion on): a hub whose underlay answers while its
    /// overlay is silent is sick.
    HubOverlay,
    /// The peer's own predecessor (n-2), probed while the peer is missing
    /// rounds: if both died together, its misses are already counted when
    /// this node has taken over n-1.
    Beyond,
}

/// Where a probe goes; the shell turns it into an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAddr {
    /// ICMP echo to the slot's host name on the overlay.
    Overlay(Slot),
    /// ICMP echo to the slot's underlay (VPC) address, as EC2 reports it.
    /// Used for frontend1, the VPN hub, whose overlay is the thing in doubt.
    Underlay(Slot),
    /// A cheap EC2 API call; success is an answer. The witness for the hub.
    Ec2Api,
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// An answer, with its round-trip time.
    Reply {
        /// Round-trip time.
        rtt: Duration,
    },
    /// No answer within the timeout.
    Silent,
    /// The probe could not be sent: the target's address is unknown (not in
    /// the hosts file, or EC2 did not say in time). That is no evidence
    /// against the target: the round counts as inconclusive.
    NotSent,
}

/// What the other members said when asked to probe a silent peer on their
/// own paths ([`Action::AskHelpers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// At least one helper reached the peer: it lives, whatever this node's
    /// own path says.
    Reached,
    /// Helpers answered, and none of them reached the peer.
    Unreached {
        /// How many helpers answered.
        helpers: u32,
    },
    /// Helpers were asked, and fewer than the quorum answered that they
    /// could not reach the peer (none at all, perhaps): this node may be
    /// the sick one (Lifeguard's local health), or the one helper that
    /// answered may share the peer's path fault (a pairwise partition). It
    /// accuses later, by the witness rule.
    TooFew {
        /// How many were asked.
        asked: u32,
        /// How many answered that they did not reach the peer.
        unreached: u32,
    },
    /// There is no other member to ask: the witness rule decides.
    NoneToAsk,
}

impl Verdict {
    /// What the answers of `asked` helpers add up to: `reached` of them
    /// reached the peer, `unreached` answered that they did not (the others
    /// did not answer). One that reached it is enough to clear it; a death
    /// needs `quorum` helpers (`members.helpers`), or every one asked when
    /// fewer were, to say they could not reach it. A lone "no" proves
    /// little: in a pairwise partition it comes from the peer's partner.
    pub fn of(asked: u32, reached: u32, unreached: u32, quorum: u32) -> Verdict {
        if asked == 0 {
            Verdict::NoneToAsk
        } else if reached > 0 {
            Verdict::Reached
        } else if unreached >= quorum.min(asked).max(1) {
            Verdict::Unreached { helpers: unreached }
        } else {
            Verdict::TooFew { asked, unreached }
        }
    }
}

/// The instance a watcher judges: the slot's admitted holder when it was
/// last looked up (see `crate::holders`). A fence names it, never "every
/// holder of the slot": an instance that took the slot since is not the one
/// that went silent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Judged {
    /// Its EC2 instance ID.
    pub instance: String,
    /// The epoch of its tags.
    pub epoch: u64,
}

/// Whether a running instance holds a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// No instance is the slot's admitted holder (running, not fenced nor
    /// released).
    Vacant,
    /// This instance is: the one the watcher judges.
    Held(Judged),
}

/// A confirmed fence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fenced {
    /// Instances that were stopped; empty if the slot was vacant.
    pub instances: Vec<String>,
}

/// Inputs to the core. Each is handled with the time it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Result of an [`Action::Probe`].
    Probed {
        /// The round the probe belonged to.
        round: u64,
        /// Which probe.
        target: Target,
        /// What it found.
        outcome: ProbeOutcome,
    },
    /// Result of an [`Action::CheckHolder`].
    HolderChecked {
        /// The slot that was looked up.
        slot: Slot,
        /// The answer, or why there is none.
        result: Result<Holder, String>,
    },
    /// Result of an [`Action::Fence`]. `Ok` only when every holder is
    /// confirmed stopped.
    FenceDone {
        /// The slot that was fenced.
        slot: Slot,
        /// What was stopped, or why the fence failed.
        result: Result<Fenced, String>,
    },
    /// Result of an [`Action::TakeOver`]. `Ok` only when the new identity is
    /// up (state persisted, tags updated, VPN connected with the address).
    TakeOverDone {
        /// The slot taken.
        to: Slot,
        /// Success, or why not.
        result: Result<(), String>,
    },
    /// Result of an [`Action::AskHelpers`].
    HelpersSaid {
        /// The round whose miss asked.
        round: u64,
        /// What they said.
        verdict: Verdict,
    },
    /// The holder of `slot` said, over the members' channel, that it gave
    /// up its ID (its service failed). A hint that hurries the judgement of
    /// the watched peer, never a verdict.
    Resigned {
        /// The slot given up.
        slot: Slot,
    },
    /// New tunables (a config reload): they apply from the next round; the
    /// misses already counted stay.
    Reconfigure(super::CoreConfig),
    /// A fence or takeover of `slot` found another instance admitted as its
    /// holder (`holder`, when known): the slot was taken since the judgement,
    /// so the node stops and watches the new holder instead.
    Superseded {
        /// The slot.
        slot: Slot,
        /// Its holder now.
        holder: Option<Judged>,
    },
    /// The last member of this node's role as the registry shows it (`None`:
    /// none besides this node). ID 1 watches it.
    Tail {
        /// The tail's slot.
        slot: Option<Slot>,
    },
    /// At start: the last run recorded the fence of `judged`, the holder of
    /// `slot`, and was killed before its takeover began. If `slot` is still
    /// the watched peer, the fence is finished at once (the judgement was
    /// made, with its second opinion, before the crash); the peer answering
    /// still calls it off.
    ResumeFence {
        /// The slot.
        slot: Slot,
        /// The instance judged.
        judged: Judged,
    },
}

/// Work the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send one probe and report an [`Input::Probed`] within `timeout`.
    Probe {
        /// Round number to echo back.
        round: u64,
        /// Which probe of the round.
        target: Target,
        /// Where to send it.
        addr: ProbeAddr,
        /// How long to wait for an answer.
        timeout: Duration,
    },
    /// Ask other members to probe `peer` on the overlay from where they are,
    /// and report [`Input::HelpersSaid`] within `timeout`. About the hub they
    /// are asked on the underlay, and an answer on its underlay address
    /// counts as reaching it too, unless `overlay_only` (a sick hub: only its
    /// overlay is in doubt).
    AskHelpers {
        /// The round whose miss asks.
        round: u64,
        /// The silent peer.
        peer: Slot,
        /// How long to wait for their answers.
        timeout: Duration,
        /// Only an answer on the peer's overlay counts.
        overlay_only: bool,
    },
    /// Look up whether a running instance holds `slot`; report
    /// [`Input::HolderChecked`].
    CheckHolder {
        /// The slot to look up.
        slot: Slot,
    },
    /// Stop the instance judged dead (`judged`, or when it is not known the
    /// slot's admitted holder, one instance) and wait until the fence is
    /// confirmed; report [`Input::FenceDone`], or [`Input::Superseded`] when
    /// another instance holds the slot now.
    Fence {
        /// The dead peer's slot.
        slot: Slot,
        /// The instance judged dead, as last looked up.
        judged: Option<Judged>,
        /// 1 for the first try.
        attempt: u32,
        /// The peer's death was counted before this node took over its
        /// successor (look-ahead: both died together). Such a fence is part
        /// of the same failure, so the cooldown after a takeover
        /// (`aws.takeover_cooldown`) does not hold it.
        chained: bool,
    },
    /// Move this node from `from` to `to`; report [`Input::TakeOverDone`].
    TakeOver {
        /// This node's current slot.
        from: Slot,
        /// The slot to take.
        to: Slot,
        /// 1 for the first try.
        attempt: u32,
        /// The transition it makes, to be persisted with the new slot so
        /// that a restart mid-way still announces it.
        planned: Transition,
    },
    /// Announce a completed takeover (outbox, broker, CloudWatch).
    Announce(Transition),
}
