//! Who holds a slot: the one rule that every part asks — the watcher's
//! look-up and probe target, the fence, the takeover's last check, boot,
//! the hub's admission list.
//!
//! A slot's *admitted holder* is the instance of the fleet that EC2 shows
//! running (or pending) with the slot's role and ID tags, not tagged
//! `fenced` nor `released`, at the highest epoch among those. An instance
//! that is `stopping`, `stopped`, fenced or released holds nothing: it is
//! never watched, never admitted and never the reason a slot is "held". Two
//! at the top epoch hold it together, which nobody may act on: the hub
//! admits neither ([`Holding::Tied`]).
//!
//! Pure: instances come in as [`Claim`]s, built by the EC2 adapter.

use crate::layout::Slot;

/// An instance's power as EC2 reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// `pending` or `running`.
    Up,
    /// `stopping` or `shutting-down`: it may still answer, but a stop is
    /// under way.
    Stopping,
    /// `stopped` or `terminated`.
    Down,
}

impl Power {
    /// The power of an EC2 state name.
    pub fn of(state: &str) -> Power {
        match state {
            "pending" | "running" => Power::Up,
            "stopping" | "shutting-down" => Power::Stopping,
            _ => Power::Down,
        }
    }
}

/// One instance as its tags and state describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Its EC2 instance ID.
    pub instance: String,
    /// The slot its role and ID tags name (none when they name none).
    pub slot: Option<Slot>,
    /// Its power.
    pub power: Power,
    /// Tagged `chainwatch:state=fenced`.
    pub fenced: bool,
    /// Tagged `chainwatch:state=released` (handed its slot over).
    pub released: bool,
    /// Its epoch tag (0: none).
    pub epoch: u64,
}

impl Claim {
    /// Whether it may hold its slot at all: running, not fenced nor
    /// released.
    pub fn eligible(&self) -> bool {
        self.power == Power::Up && !self.fenced && !self.released
    }
}

/// Who holds a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding<'a> {
    /// Nobody is eligible.
    Vacant,
    /// This instance is the admitted holder.
    Held(&'a Claim),
    /// Several eligible instances share the top epoch: nobody is admitted
    /// until one of them is fenced or moves on.
    Tied(Vec<&'a Claim>),
}

impl<'a> Holding<'a> {
    /// The admitted holder, if there is one.
    pub fn holder(&self) -> Option<&'a Claim> {
        match self {
            Holding::Held(c) => Some(c),
            _ => None,
        }
    }
}

/// The holding of `slot` among `claims` (any instances; those of other
/// slots are ignored).
pub fn holding(claims: &[Claim], slot: Slot) -> Holding<'_> {
    let eligible: Vec<&Claim> = claims
        .iter()
        .filter(|c| c.slot == Some(slot) && c.eligible())
        .collect();
    let Some(top) = eligible.iter().map(|c| c.epoch).max() else {
        return Holding::Vacant;
    };
    let mut at_top: Vec<&Claim> = eligible.into_iter().filter(|c| c.epoch == top).collect();
    if at_top.len() == 1 {
        return Holding::Held(at_top[0]);
    }
    at_top.sort_by(|a, b| a.instance.cmp(&b.instance));
    Holding::Tied(at_top)
}

/// The slot `instance` holds by the rule: the slot its tags name, when it is
/// that slot's admitted holder.
pub fn held_by(claims: &[Claim], instance: &str) -> Option<(Slot, u64)> {
    let me = claims.iter().find(|c| c.instance == instance)?;
    let slot = me.slot?;
    match holding(claims, slot) {
        Holding::Held(c) if c.instance == instance => Some((slot, c.epoch)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Role;

    fn claim(instance: &str, id: u32, power: Power, epoch: u64) -> Claim {
        Claim {
            instance: instance.into(),
            slot: Some(Slot::new(Role::Frontend, id)),
            power,
            fenced: false,
            released: false,
            epoch,
        }
    }

    #[test]
    fn a_fenced_or_stopping_old_holder_holds_nothing_beside_its_successor() {
        let f1 = Slot::new(Role::Frontend, 1);
        // The hub died: fenced and still stopping; its successor holds ID 1
        // at the next epoch.
        let mut old = claim("i-old", 1, Power::Stopping, 3);
        old.fenced = true;
        let new = claim("i-new", 1, Power::Up, 4);
        let claims = vec![old.clone(), new.clone()];
        assert_eq!(holding(&claims, f1), Holding::Held(&claims[1]));
        // Stopping but not yet tagged (the fence's tag not read back yet):
        // still not eligible.
        let mut untagged = old.clone();
        untagged.fenced = false;
        untagged.epoch = 9;
        let claims = vec![untagged, new];
        assert_eq!(holding(&claims, f1).holder().unwrap().instance, "i-new");
        // Running but fenced: holds nothing.
        let mut fenced = claim("i-x", 1, Power::Up, 7);
        fenced.fenced = true;
        assert_eq!(holding(&[fenced], f1), Holding::Vacant);
        // Released: holds nothing.
        let mut released = claim("i-x", 1, Power::Up, 7);
        released.released = true;
        assert_eq!(holding(&[released], f1), Holding::Vacant);
        assert_eq!(
            holding(&[claim("i-d", 1, Power::Down, 1)], f1),
            Holding::Vacant
        );
    }

    #[test]
    fn the_highest_epoch_holds_and_a_tie_admits_nobody() {
        let f2 = Slot::new(Role::Frontend, 2);
        let claims = vec![
            claim("i-a", 2, Power::Up, 5),
            claim("i-b", 2, Power::Up, 6),
            claim("i-c", 3, Power::Up, 9),
        ];
        assert_eq!(holding(&claims, f2).holder().unwrap().instance, "i-b");
        assert_eq!(held_by(&claims, "i-b"), Some((f2, 6)));
        assert_eq!(held_by(&claims, "i-a"), None);
        assert_eq!(
            held_by(&claims, "i-c"),
            Some((Slot::new(Role::Frontend, 3), 9))
        );
        let tie = vec![claim("i-z", 2, Power::Up, 6), claim("i-y", 2, Power::Up, 6)];
        match holding(&tie, f2) {
            Holding::Tied(v) => assert_eq!(v[0].instance, "i-y"),
            other => panic!("{other:?}"),
        }
        assert_eq!(held_by(&tie, "i-y"), None);
    }
}
