//! The instance judged: the look-ups name the peer's holder, a fence names
//! it, a slot taken since supersedes the judgement, and a fence recorded by
//! the last run is finished at start.

use std::time::Instant;

use super::plan::Phase;
use super::{Event, Fenced, Holder, Judged, Monitor, VACANCY_CONFIRM};
use crate::layout::Slot;

impl Monitor {
    /// A look-up named `j` as the peer's admitted holder. While watching, a
    /// different instance than the one judged so far is a new peer (the
    /// slot was taken over): nothing counted against the old one holds
    /// against it. A fence under way keeps its judged instance.
    pub(super) fn note_holder(&mut self, j: Judged) {
        if self.phase != Phase::Watching {
            return;
        }
        let Some(peer) = self.peer() else {
            return;
        };
        match &self.view.judged {
            Some(old) if old.instance != j.instance => {
                self.events.push_back(Event::NewHolder {
                    peer,
                    instance: j.instance.clone(),
                    epoch: j.epoch,
                });
                self.view.misses = 0;
                self.view.silent_since = None;
                self.view.resigned_until = None;
                self.end_streak();
            }
            _ => {}
        }
        self.view.judged = Some(j);
    }

    /// The fence or takeover of `slot` found it held by another instance
    /// now: back to watching, the new holder judged afresh.
    pub(super) fn on_superseded(&mut self, now: Instant, slot: Slot, holder: Option<Judged>) {
        if Some(slot) != self.peer() {
            return;
        }
        if !matches!(self.phase, Phase::Fencing { .. } | Phase::TakingOver { .. }) {
            return;
        }
        self.events.push_back(Event::Superseded {
            peer: slot,
            instance: holder.as_ref().map(|h| h.instance.clone()),
        });
        if self.detour.is_some() {
            // Another instance holds the hub now: the takeover that waited
            // on it goes ahead.
            self.phase = Phase::Watching;
            self.end_detour(now);
            return;
        }
        self.phase = Phase::Watching;
        self.view.judged = holder;
        self.view.misses = 0;
        self.view.silent_since = None;
        self.view.declared_at = None;
        self.view.fenced_at = None;
        self.view.vacant_since = None;
        self.view.resigned_until = None;
        self.end_streak();
        if self.next_round_at.is_none() {
            self.next_round_at = Some(now);
        }
    }

    /// The fence the last run recorded is finished at once, if `slot` is
    /// still the watched peer and this node is only watching it.
    pub(super) fn on_resume_fence(&mut self, now: Instant, slot: Slot, judged: Judged) {
        if Some(slot) != self.peer() || self.phase != Phase::Watching {
            return;
        }
        self.events.push_back(Event::FenceResumed {
            peer: slot,
            instance: judged.instance.clone(),
        });
        self.view.judged = Some(judged);
        self.declare_dead(now, slot);
    }

    pub(super) fn on_holder(&mut self, now: Instant, slot: Slot, result: Result<Holder, String>) {
        if Some(slot) != self.peer() {
            return;
        }
        self.view.holder_check_in_flight = false;
        if let Ok(Holder::Held(j)) = &result {
            self.note_holder(j.clone());
        }
        // Only act while the peer is silent: a slot whose holder answers is
        // not vacant, whatever a stale look-up says; unless it resigned
        // lately, and so may have released the slot while it still answers
        // (a planned switchover).
        let silent = self.view.peer_silent || self.released(now);
        // The tail's slot vacant is nothing to take: it moved (it took over
        // a slot below), or it was fenced. Nothing is judged until the
        // registry names the next tail.
        if result == Ok(Holder::Vacant) && self.watches_tail() && self.phase == Phase::Watching {
            self.tail = None;
            self.watch_predecessor(now);
            return;
        }
        if result == Ok(Holder::Vacant)
            && self.phase == Phase::Watching
            && silent
            && !self.watches_tail()
        {
            // EC2's reads are eventually consistent: a look-up may miss a
            // node that tagged itself with the slot a moment ago. Believe a
            // vacancy only when a look-up at least VACANCY_CONFIRM after
            // the first still finds it.
            match self.view.vacant_since {
                Some(first) if now.saturating_duration_since(first) >= VACANCY_CONFIRM => {
                    self.view.vacant_since = None;
                    self.events.push_back(Event::Vacant { peer: slot });
                    self.view.declared_at = Some(now);
                    self.begin_takeover(now, Fenced::default(), true);
                }
                Some(_) => {}
                None => self.view.vacant_since = Some(now),
            }
        } else {
            self.view.vacant_since = None;
        }
    }
}
