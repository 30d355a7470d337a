//! The second opinion: other members asked to probe a silent peer before
//! it is declared dead (Lifeguard's indirect probes), and what their
//! verdict allows.

use std::time::Instant;

use super::{Action, Event, Monitor, Phase, Verdict};
use crate::layout::Slot;

impl Monitor {
    /// One request at a time: while one is out, later misses wait for it.
    /// Only overlay rounds ask (the members' channel runs on the overlay),
    /// and rounds on the hub, whose helpers are asked on the underlay since
    /// the hub carries the overlay itself.
    pub(super) fn ask_helpers(&mut self, seq: u64, peer: Slot) {
        let channel_up = peer.is_hub() || self.overlay_up;
        if self.cfg.second_opinion && !self.view.asking && channel_up {
            self.view.asking = true;
            self.actions.push_back(Action::AskHelpers {
                round: seq,
                peer,
                timeout: self.pace(peer).1 * 3 / 2,
                overlay_only: self.view.sick_hub,
            });
        }
    }

    /// May a peer that has missed enough rounds be declared dead?
    /// `Err` says why not yet.
    pub(super) fn second_opinion(&self, need: u32) -> Result<(), &'static str> {
        let Some(peer) = self.peer() else {
            return Err("no peer");
        };
        if self.view.sick_hub {
            // Its underlay answers: only helpers that cannot reach its
            // overlay either condemn it, never the fallback.
            return match self.view.verdict {
                Some(Verdict::Unreached { .. }) => Ok(()),
                Some(Verdict::Reached) => Err("a helper reached the hub's overlay"),
                None => Err("waiting for the helpers' probes of the hub's overlay"),
                Some(_) => Err(
                    "no helper confirms the hub's overlay is down: a hub whose underlay answers is never fenced on this node's word alone",
                ),
            };
        }
        // Before any other fence, the hub's included, helpers are asked
        // (the hub's on the underlay); degraded rounds, whose channel is
        // down with the overlay, are judged by the witness rule alone.
        if !self.cfg.second_opinion || (!peer.is_hub() && !self.overlay_up) {
            return Ok(()); // the witness rule alone
        }
        match self.view.verdict {
            Some(Verdict::Unreached { .. } | Verdict::NoneToAsk) => Ok(()),
            // Lifeguard: a node its helpers do not answer suspects itself
            // first, and a lone "no" may come from the peer's partner in a
            // pairwise partition. Either way it falls back to the witness
            // rule, but only after twice the misses.
            Some(Verdict::TooFew { .. }) if self.view.misses >= need * 2 => Ok(()),
            Some(Verdict::TooFew { unreached: 0, .. }) => {
                Err("no helper answered this node, which may be the sick one")
            }
            Some(Verdict::TooFew { .. }) => Err(
                "too few helpers confirm: the one that could not reach the peer may share its path fault",
            ),
            Some(Verdict::Reached) => Err("a helper reached the peer"),
            None => Err("waiting for the helpers' probes"),
        }
    }

    pub(super) fn on_helpers(&mut self, now: Instant, seq: u64, verdict: Verdict) {
        self.view.asking = false;
        let Some(peer) = self.peer() else {
            return;
        };
        // Only a request of the current streak counts.
        let Some(start) = self.view.streak_seq else {
            return;
        };
        // Before the first miss only when asked early on a resignation.
        if seq < start || (self.view.misses == 0 && !self.resigned(now)) {
            return;
        }
        if verdict == Verdict::Reached {
            self.view.resigned_until = None;
            self.chained_peer = None;
            self.events.push_back(Event::Vouched {
                peer,
                after: self.view.misses,
            });
            self.view.misses = 0;
            self.view.silent_since = None;
            self.end_streak();
            self.call_off_fence();
            if self.detour.is_some() && self.phase == Phase::Watching {
                self.end_detour(now);
            }
            return;
        }
        self.view.verdict = Some(verdict);
        let need = self.misses_needed(now);
        if self.phase == Phase::Watching
            && self.view.misses >= need
            && !self.in_grace(now)
            && self.second_opinion(need).is_ok()
        {
            self.declare_dead(now, peer);
        }
    }
}
