//! What a node knows of the peer it watches now: the current round, the
//! streak of misses and its second opinion, the fence and takeover times,
//! the look-ahead, the peer's word. All of it is forgotten at once when the
//! peer changes (after a takeover), so nothing of one peer is judged
//! against the next.

use std::time::{Duration, Instant};

use super::detector::Round;
use super::{Judged, Verdict};

/// See the module docs; `Default` is the state of a peer not yet probed.
#[derive(Debug, Default)]
pub(super) struct PeerView {
    pub(super) round: Option<Round>,
    pub(super) misses: u32,
    pub(super) silent_since: Option<Instant>,
    pub(super) declared_at: Option<Instant>,
    pub(super) fenced_at: Option<Instant>,
    pub(super) last_rtt: Option<Duration>,
    pub(super) cut_off: bool,
    pub(super) holder_check_in_flight: bool,
    /// When EC2 first said the silent peer's slot is vacant (a vacancy is
    /// acted on only once a later look-up agrees: see
    /// [`super::VACANCY_CONFIRM`]).
    pub(super) vacant_since: Option<Instant>,
    /// The last evaluated round had no answer from the peer.
    pub(super) peer_silent: bool,
    /// Consecutive missed rounds of n-2 (see [`super::Target::Beyond`]).
    pub(super) beyond_misses: u32,
    /// Start of n-2's first missed round.
    pub(super) beyond_silent_since: Option<Instant>,
    /// The look-ahead probes the hub's underlay (degraded rounds of a
    /// frontend), not n-2: its misses carry to a detour, not a takeover.
    pub(super) beyond_is_hub: bool,
    /// Until then, the peer's resignation holds: one missed round is a
    /// death (with the second opinion).
    pub(super) resigned_until: Option<Instant>,
    /// Until then, after the peer's resignation, EC2 is asked every round
    /// whether it released its slot (a planned switchover): a released
    /// slot is taken without a fence even while its old holder answers.
    pub(super) released_until: Option<Instant>,
    /// An [`Action::AskHelpers`] is out.
    pub(super) asking: bool,
    /// The round of the current streak's first miss.
    pub(super) streak_seq: Option<u64>,
    /// The helpers' latest verdict in the current streak.
    pub(super) verdict: Option<Verdict>,
    /// Start of the hub's overlay silence while its underlay answers.
    pub(super) hub_silent_since: Option<Instant>,
    /// The hub has been silent on the overlay longer than
    /// `hub_overlay_grace` while its underlay answers.
    pub(super) sick_hub: bool,
    pub(super) last_error: Option<String>,
    /// The instance this node judges as the peer: the slot's admitted
    /// holder at the last look-up. A fence names it.
    pub(super) judged: Option<Judged>,
    /// When this peer began to be watched.
    pub(super) watched_since: Option<Instant>,
    /// The peer answered at least once since.
    pub(super) heard: bool,
    /// This node took its last slot over because its holder left it for
    /// the slot ahead (a vacancy hop): that holder, now the peer, may
    /// still be bringing its identity up. Until then, not heard, it is not
    /// declared dead (see `Monitor::in_grace`).
    pub(super) moved_up_until: Option<Instant>,
    /// The instance that left, when a look-up had named it.
    pub(super) mover: Option<String>,
}
