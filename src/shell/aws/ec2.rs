//! EC2 as the registry and the fence (aws-sdk-ec2).
//!
//! Every instance of the fleet carries these tags:
//!
//! | tag | value |
//! |---|---|
//! | `chainwatch:fleet` | the fleet name (`aws.fleet`) |
//! | `chainwatch:role` | `frontend` or `backend` |
//! | `chainwatch:id` | the ID it holds now |
//! | `chainwatch:state` | `active`, or `fenced` once another node stopped it |
//! | `chainwatch:epoch` | the per-role epoch of its last takeover |
//!
//! A slot is *held* by every instance of the fleet tagged with its role and
//! ID that is not `stopped` or `terminated` (pending, running, stopping and
//! shutting-down all count: they may still answer). A slot with no holder is
//! *vacant*.
//!
//! Credentials and region come from the SDK's default chain; the endpoint
//! can be overridden the standard way (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_EC2`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName, Tag};

use crate::clock::unix_ms;
use crate::config::AwsConfig;
use serde::{Deserialize, Serialize};

use super::budget::Held;
use crate::core::{Fenced, Holder, Judged};
use crate::holders::{self, Claim, Holding, Power};
use crate::layout::{Layout, Role, Slot};

/// Tag keys.
pub mod tags {
    /// Fleet name.
    pub const FLEET: &str = "chainwatch:fleet";
    /// Role.
    pub const ROLE: &str = "chainwatch:role";
    /// Current ID.
    pub const ID: &str = "chainwatch:id";
    /// `active` or `fenced`.
    pub const STATE: &str = "chainwatch:state";
    /// Per-role epoch.
    pub const EPOCH: &str = "chainwatch:epoch";
    /// Maintenance: no fence of this instance until this time (RFC 3339,
    /// UTC); set and cleared by `chainwatch maint`.
    pub const MAINT_UNTIL: &str = "chainwatch:maint-until";
    /// When the instance was fenced (ms since the Unix epoch): what the
    /// fleet-wide fence budget counts.
    pub const FENCED_AT: &str = "chainwatch:fenced-at";
}

/// The end of `i`'s maintenance if it is in maintenance at `now`.
pub fn maintenance(i: &Instance, now: std::time::SystemTime) -> Option<String> {
    let v = tag(i, tags::MAINT_UNTIL)?;
    match humantime::parse_rfc3339_weak(v) {
        Ok(until) if until > now => Some(v.to_string()),
        Ok(_) => None,
        // A value that does not parse is taken as maintenance: whoever set
        // it meant to hold fences off; `fleet --check` reports it.
        Err(_) => Some(format!("{} (unparsable)", crate::layout::escaped(v))),
    }
}

/// Errors talking to EC2. Each says what failed; the core retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ec2Error {
    /// An API call failed (network, throttling, permissions, time-out).
    #[error("EC2 {op} failed: {message}")]
    Api {
        /// The operation.
        op: &'static str,
        /// The SDK's error with its context.
        message: String,
    },
    /// The fenced instances did not reach `stopped` in time.
    #[error(
        "{instances:?} not stopped after {after:?} (last states {states:?}); no takeover until EC2 reports them stopped"
    )]
    NotStopped {
        /// The instances.
        instances: Vec<String>,
        /// How long it waited.
        after: Duration,
        /// Their last reported states.
        states: Vec<String>,
    },
    /// The fleet used the fence budget of the role.
    #[error(
        "fence budget exhausted: {used} {role}s of the fleet fenced in the last hour (aws.fence_budget_per_hour = {per_hour}); no fence and no takeover until `chainwatch ack` on this node or the hour has passed"
    )]
    BudgetExhausted {
        /// Fences counted.
        used: usize,
        /// The budget.
        per_hour: u32,
        /// The role.
        role: Role,
    },
    /// This node took over within `aws.takeover_cooldown`.
    #[error(
        "cooldown after a takeover: this node's last fence was {ago_s} s ago (aws.takeover_cooldown = {cooldown_s} s); no new fence and no takeover for {left_s} s more, or until `chainwatch ack` on this node"
    )]
    Cooldown {
        /// Seconds since the last fence.
        ago_s: u64,
        /// The cooldown, in seconds.
        cooldown_s: u64,
        /// Seconds left.
        left_s: u64,
    },
    /// A holder to fence is in maintenance: no fence, so no takeover.
    #[error(
        "{instance} is in maintenance until {until}: no fence and no takeover until it ends (or `chainwatch maint off`)"
    )]
    Maintenance {
        /// The instance.
        instance: String,
        /// The tag's value.
        until: String,
    },
    /// This instance's own record is missing.
    #[error("this instance ({0}) is not known to EC2; check identity.instance_id / IMDS")]
    SelfUnknown(String),
    /// The slot was taken by another instance since its holder was judged:
    /// nothing is stopped, and the new holder is to be watched.
    #[error(
        "{slot} is held by {instance} at epoch {epoch} now, not by the instance judged dead: nothing stopped"
    )]
    Superseded {
        /// The slot.
        slot: Slot,
        /// Its admitted holder now.
        instance: String,
        /// Its epoch.
        epoch: u64,
    },
    /// Two running instances claim the slot at the same epoch: nobody holds
    /// it, and a fence would have to pick one.
    #[error(
        "{slot} is claimed by {instances:?} at the same epoch: not fencing either; the hub admits neither until one moves on"
    )]
    Tied {
        /// The slot.
        slot: Slot,
        /// The instances.
        instances: Vec<String>,
    },
    /// An epoch tag is at the top of its range: no later epoch exists, so
    /// no transition can be ordered after it.
    #[error(
        "instance {instance} carries chainwatch:epoch={epoch}, the largest possible value: no takeover can be ordered after it; check who wrote that tag and reset the role's epoch tags"
    )]
    EpochExhausted {
        /// The instance with the tag.
        instance: String,
        /// Its epoch.
        epoch: u64,
    },
}

impl Ec2Error {
    /// Whether `message`, an [`Ec2Error`] as text (the core carries fence
    /// errors as text), is a fence held back on purpose — the fence budget
    /// or a holder in maintenance — rather than one that failed.
    pub fn held_back(message: &str) -> bool {
        message.starts_with("fence budget exhausted")
            || message.starts_with("cooldown after a takeover")
            || message.contains(" is in maintenance until ")
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn held_back_fences_are_told_from_failed_ones_by_their_text() {
        let budget = Ec2Error::BudgetExhausted {
            role: Role::Frontend,
            used: 3,
            per_hour: 3,
        };
        let maint = Ec2Error::Maintenance {
            instance: "i-1".into(),
            until: "2026-11-26T03:00:00Z".into(),
        };
        assert!(Ec2Error::held_back(&budget.to_string()));
        assert!(Ec2Error::held_back(&maint.to_string()));
        let failed = Ec2Error::SelfUnknown("i-1".into());
        assert!(!Ec2Error::held_back(&failed.to_string()));
    }
}

/// The `chainwatch:state` of an instance that handed its slot over in a
/// switchover: it holds nothing (EC2 shows the slot vacant to its watcher).
pub const RELEASED: &str = "released";

/// What a node should do at boot about its ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejoin {
    /// Keep the slot it booted with.
    Keep(Slot),
    /// Take this slot at the tail instead, and why.
    Tail {
        /// The new slot.
        slot: Slot,
        /// Why the old one was given up.
        reason: String,
    },
    /// The chain is full; no free ID.
    Full {
        /// Why the old one was given up.
        reason: String,
    },
}

/// The EC2 registry of one instance.
pub struct Ec2Registry {
    client: Client,
    fleet: String,
    me: String,
    fence_timeout: Duration,
    fence_poll: Duration,
    eip_allocation: Option<String>,
    fabric_fence: bool,
    underlay: Mutex<HashMap<Slot, (Ipv4Addr, Instant)>>,
    held: Mutex<Option<(Vec<Slot>, Instant)>>,
    /// The instances a fence of a slot has sent a stop to, kept until that
    /// fence is confirmed. A stopped instance no longer holds its slot, so
    /// after a stop that went through but whose reply (or the tagging after
    /// it) was lost, a retry would otherwise find the slot vacant and
    /// neither tag the instance `fenced` nor name it in the event.
    fence_targets: Mutex<HashMap<Slot, Vec<String>>>,
    /// The power fences sent, latest per slot, updated by their background
    /// waits; shown by `chainwatch status`.
    power_fences: Arc<Mutex<Vec<PowerFence>>>,
    /// The fence budget (none: unlimited).
    budget: Option<super::budget::FenceBudget>,
    /// This instance's maintenance as last read ([`Ec2Registry::read_maintenance`]).
    maintenance: Mutex<Option<String>>,
}

/// How long an underlay address is cached. A slot's holder changes at every
/// takeover (frontend2 becoming frontend1 leaves its address behind), so not
/// long; a vacancy found by a holder look-up drops the entry at once. The
/// look-up itself runs inside the probe's time budget, so it must be rare.
const UNDERLAY_TTL: Duration = Duration::from_secs(10);

fn api<E: std::error::Error + 'static>(op: &'static str) -> impl FnOnce(E) -> Ec2Error {
    move |e| Ec2Error::Api {
        op,
        message: DisplayErrorContext(&e).to_string(),
    }
}

fn tag<'a>(i: &'a Instance, key: &str) -> Option<&'a str> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn state_name(i: &Instance) -> String {
    i.state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn is_down(i: &Instance) -> bool {
    matches!(
        i.state().and_then(|s| s.name()),
        Some(InstanceStateName::Stopped | InstanceStateName::Terminated)
    )
}

/// `i` as the holder rule sees it (see [`crate::holders`]).
pub fn claim_of(i: &Instance) -> Claim {
    let slot = tag(i, tags::ROLE)
        .and_then(|r| r.parse::<Role>().ok())
        .zip(tag(i, tags::ID).and_then(|v| v.parse::<u32>().ok()))
        .filter(|(_, id)| *id > 0)
        .map(|(role, id)| Slot::new(role, id));
    Claim {
        instance: i.instance_id().unwrap_or("?").to_string(),
        slot,
        power: Power::of(&state_name(i)),
        fenced: tag(i, tags::STATE) == Some("fenced"),
        released: tag(i, tags::STATE) == Some(RELEASED),
        epoch: tag(i, tags::EPOCH)
            .and_then(|e| e.parse().ok())
            .unwrap_or(0),
    }
}

fn filter(name: &str, value: impl Into<String>) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// `DescribeInstances` with `filters` and `ids` (either may be empty), every
/// page.
async fn describe(
    client: &Client,
    filters: Vec<Filter>,
    ids: Vec<String>,
) -> Result<Vec<Instance>, Ec2Error> {
    let reservations = client
        .describe_instances()
        .set_filters((!filters.is_empty()).then_some(filters))
        .set_instance_ids((!ids.is_empty()).then_some(ids))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(api("DescribeInstances"))?;
    Ok(reservations
        .into_iter()
        .flat_map(|r| r.instances.unwrap_or_default())
        .collect())
}

/// Poll until every instance is `stopped` (or `terminated`), bounded by
/// `timeout`, every `poll` (`aws.fence_poll`, 500 ms by default). Not the
/// SDK's `wait_until_instance_stopped`: its waiter sleeps 15 s between
/// calls, and every second of this wait is a second the takeover waits.
async fn wait_down(
    client: &Client,
    ids: &[String],
    timeout: Duration,
    poll: Duration,
) -> Result<(), Ec2Error> {
    let start = Instant::now();
    loop {
        let instances = describe(client, Vec::new(), ids.to_vec()).await?;
        let states: Vec<String> = instances.iter().map(state_name).collect();
        if instances.len() == ids.len() && instances.iter().all(is_down) {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Ec2Error::NotStopped {
                instances: ids.to_vec(),
                after: start.elapsed(),
                states,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Where a power fence (StopInstances) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerFenceState {
    /// Sent; EC2 still reports an instance running or `stopping` (the
    /// fabric fence keeps it off the overlay meanwhile).
    Stopping,
    /// EC2 reports every instance `stopped` (or `terminated`).
    Confirmed,
    /// EC2 did not report them stopped within `aws.fence_timeout`: check
    /// them in EC2.
    NotConfirmed,
}

/// One power fence, as `chainwatch status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerFence {
    /// The fenced slot's common name.
    pub slot: String,
    /// The instances stopped.
    pub instances: Vec<String>,
    /// Where it stands.
    pub state: PowerFenceState,
    /// When the stop was sent, ms since the Unix epoch.
    pub sent_ms: u64,
    /// When EC2 first reported them stopped (or the wait gave up).
    pub done_ms: Option<u64>,
}

impl PowerFence {
    /// One line for the status table.
    pub fn summary(&self) -> String {
        let after = self
            .done_ms
            .map(|d| {
                format!(
                    " {:.1} s after the stop",
                    d.saturating_sub(self.sent_ms) as f64 / 1000.0
                )
            })
            .unwrap_or_default();
        let state = match self.state {
            PowerFenceState::Stopping => "stopping (fabric fence holds it off the overlay)",
            PowerFenceState::Confirmed => "confirmed stopped",
            PowerFenceState::NotConfirmed => "NOT CONFIRMED: check it in EC2",
        };
        format!(
            "{} ({}): {state}{after}",
            self.slot,
            self.instances.join(",")
        )
    }
}

/// Build an EC2 client from the SDK's default chain, with the config's
/// region and per-call time-out.
pub async fn client(cfg: &AwsConfig) -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(cfg.api_timeout)
        .connect_timeout(cfg.api_timeout.min(super::CONNECT_TIMEOUT))
        .build();
    let shared = super::sdk_config(cfg.region.as_deref()).await;
    Client::from_conf(
        aws_sdk_ec2::config::Builder::from(&shared)
            .timeout_config(timeouts)
            .build(),
    )
}

impl Ec2Registry {
    /// A registry for instance `me`.
    pub fn new(client: Client, cfg: &AwsConfig, me: String) -> Self {
        Ec2Registry {
            client,
            fleet: cfg.fleet.clone(),
            me,
            fence_timeout: cfg.fence_timeout,
            fence_poll: cfg.fence_poll,
            eip_allocation: cfg.elastic_ip_allocation.clone(),
            fabric_fence: cfg.fabric_fence,
            underlay: Mutex::new(HashMap::new()),
            held: Mutex::new(None),
            fence_targets: Mutex::new(HashMap::new()),
            power_fences: Arc::new(Mutex::new(Vec::new())),
            budget: None,
            maintenance: Mutex::new(None),
        }
    }

    /// Read this instance's maintenance tag and keep it for `status`;
    /// returns whether it changed.
    pub async fn read_maintenance(&self) -> Result<bool, Ec2Error> {
        let me = self.describe(Vec::new(), vec![self.me.clone()]).await?;
        let me = me
            .first()
            .ok_or_else(|| Ec2Error::SelfUnknown(self.me.clone()))?;
        let now = maintenance(me, std::time::SystemTime::now());
        let mut kept = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        let changed = *kept != now;
        *kept = now;
        Ok(changed)
    }

    /// Count confirmed fences against `budget`; a new fence beyond it is
    /// refused.
    pub fn with_budget(mut self, budget: super::budget::FenceBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The power fences sent, latest per slot.
    pub fn power_fences(&self) -> Vec<PowerFence> {
        self.power_fences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Record where the power fence of `slot` stands (one entry per slot).
    fn note_power_fence(
        list: &Mutex<Vec<PowerFence>>,
        slot: Slot,
        instances: &[String],
        sent_ms: u64,
        state: PowerFenceState,
    ) {
        let done_ms =
            (state != PowerFenceState::Stopping).then(|| unix_ms(std::time::SystemTime::now()));
        let entry = PowerFence {
            slot: slot.common_name(),
            instances: instances.to_vec(),
            state,
            sent_ms,
            done_ms,
        };
        let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
        // A later fence of the slot is not overwritten by an earlier one's
        // background wait.
        if list
            .iter()
            .any(|f| f.slot == entry.slot && f.sent_ms > entry.sent_ms)
        {
            return;
        }
        list.retain(|f| f.slot != entry.slot);
        list.push(entry);
    }

    /// This instance's ID.
    pub fn instance_id(&self) -> &str {
        &self.me
    }

    /// All instances of the fleet (any state), optionally of one role.
    pub async fn fleet_instances(&self, role: Option<Role>) -> Result<Vec<Instance>, Ec2Error> {
        let mut filters = vec![filter(&format!("tag:{}", tags::FLEET), &self.fleet)];
        if let Some(role) = role {
            filters.push(filter(&format!("tag:{}", tags::ROLE), role.as_str()));
        }
        self.describe(filters, Vec::new()).await
    }

    async fn describe(
        &self,
        filters: Vec<Filter>,
        ids: Vec<String>,
    ) -> Result<Vec<Instance>, Ec2Error> {
        describe(&self.client, filters, ids).await
    }

    /// Set (`Some(until)`) or clear the maintenance tag of `ids`.
    pub async fn set_maintenance(
        &self,
        ids: &[String],
        until: Option<&str>,
    ) -> Result<(), Ec2Error> {
        if ids.is_empty() {
            return Ok(());
        }
        match until {
            Some(until) => {
                self.create_tags(ids, &[(tags::MAINT_UNTIL, until.to_string())])
                    .await
            }
            None => {
                self.client
                    .delete_tags()
                    .set_resources(Some(ids.to_vec()))
                    .tags(Tag::builder().key(tags::MAINT_UNTIL).build())
                    .send()
                    .await
                    .map_err(api("DeleteTags"))?;
                Ok(())
            }
        }
    }

    /// Every instance of the fleet as a [`crate::fleet::Member`], its tags
    /// checked against `layout`.
    pub async fn members(&self, layout: &Layout) -> Result<Vec<crate::fleet::Member>, Ec2Error> {
        let mut out = Vec::new();
        for i in self.fleet_instances(None).await? {
            let mut bad_tags = Vec::new();
            let role = match tag(&i, tags::ROLE) {
                Some(r) => match r.parse::<Role>() {
                    Ok(role) => Some(role),
                    Err(_) => {
                        bad_tags.push(format!(
                            "{} = {:?} is no role",
                            tags::ROLE,
                            crate::layout::escaped(r)
                        ));
                        None
                    }
                },
                None => {
                    bad_tags.push(format!("no {} tag", tags::ROLE));
                    None
                }
            };
            let id = match (role, tag(&i, tags::ID)) {
                (Some(role), Some(v)) => match layout.parse_id(role, v) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        bad_tags.push(format!(
                            "{} = {:?}: {e}",
                            tags::ID,
                            crate::layout::escaped(v)
                        ));
                        None
                    }
                },
                (Some(_), None) => {
                    bad_tags.push(format!("no {} tag", tags::ID));
                    None
                }
                (None, _) => None,
            };
            out.push(crate::fleet::Member {
                instance: i.instance_id().unwrap_or("?").to_string(),
                state: state_name(&i),
                role,
                id,
                epoch: tag(&i, tags::EPOCH).and_then(|e| e.parse().ok()),
                fenced: tag(&i, tags::STATE) == Some("fenced"),
                released: tag(&i, tags::STATE) == Some(RELEASED),
                az: i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .map(str::to_string),
                address: i.private_ip_address().map(str::to_string),
                maint_until: tag(&i, tags::MAINT_UNTIL).map(str::to_string),
                bad_tags,
            });
        }
        out.sort_by(|a, b| {
            (a.role.map(|r| r.as_str()), a.id, &a.instance).cmp(&(
                b.role.map(|r| r.as_str()),
                b.id,
                &b.instance,
            ))
        });
        Ok(out)
    }

    /// The fleet's instances tagged with `slot`'s role and ID, as the
    /// holder rule sees them (one filtered read).
    pub async fn slot_claims(&self, slot: Slot) -> Result<Vec<Claim>, Ec2Error> {
        Ok(self
            .slot_instances(slot)
            .await?
            .iter()
            .map(claim_of)
            .collect())
    }

    /// The fleet's instances tagged with `slot`'s role and ID, any state
    /// (one filtered read).
    async fn slot_instances(&self, slot: Slot) -> Result<Vec<Instance>, Ec2Error> {
        let filters = vec![
            filter(&format!("tag:{}", tags::FLEET), &self.fleet),
            filter(&format!("tag:{}", tags::ROLE), slot.role.as_str()),
            filter(&format!("tag:{}", tags::ID), slot.id.to_string()),
        ];
        self.describe(filters, Vec::new()).await
    }

    /// Instances other than this one that hold `slot` in the old, loose
    /// sense: not stopped, not released (stopping and fenced ones count).
    /// For the switchover's look-ups only; the watcher, the fence and the
    /// takeover ask [`Ec2Registry::slot_claims`] and the holder rule.
    pub async fn holders(&self, slot: Slot) -> Result<Vec<Instance>, Ec2Error> {
        Ok(self
            .slot_instances(slot)
            .await?
            .into_iter()
            .filter(|i| {
                !is_down(i)
                    && i.instance_id() != Some(self.me.as_str())
                    && tag(i, tags::STATE) != Some(RELEASED)
            })
            .collect())
    }

    /// Tag this instance `released` and read it back: it handed its slot
    /// over (its identity is down already) and holds nothing until it
    /// rejoins, which tags it `active` again.
    pub async fn release_self(&self) -> Result<(), Ec2Error> {
        self.create_tags(
            std::slice::from_ref(&self.me),
            &[(tags::STATE, RELEASED.to_string())],
        )
        .await?;
        self.read_back("it released", |i| tag(i, tags::STATE) == Some(RELEASED))
            .await
    }

    /// Read this instance's tags until `shows` holds: a write of its own
    /// tags counts once EC2 shows it (the hub's admission list is read from
    /// EC2 too). Bounded by 10 s.
    async fn read_back(
        &self,
        what: &str,
        shows: impl Fn(&Instance) -> bool,
    ) -> Result<(), Ec2Error> {
        let me = std::slice::from_ref(&self.me);
        let within = Duration::from_secs(10);
        self.until_tags_show(
            me,
            within,
            &format!("this instance's tags do not show {what}"),
            |found| found.first().is_some_and(&shows),
        )
        .await
    }

    /// Read the tags of `ids` every 100 ms until `shows` holds for what EC2
    /// returns, for at most `within`; the error says `missing`.
    async fn until_tags_show(
        &self,
        ids: &[String],
        within: Duration,
        missing: &str,
        shows: impl Fn(&[Instance]) -> bool,
    ) -> Result<(), Ec2Error> {
        let start = Instant::now();
        loop {
            if shows(&self.describe(Vec::new(), ids.to_vec()).await?) {
                return Ok(());
            }
            if start.elapsed() >= within {
                let message = format!("{missing} after {:?}", start.elapsed());
                return Err(Ec2Error::Api {
                    op: "CreateTags",
                    message,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fence the instance judged dead as `slot`'s holder (`judged`; when
    /// the watcher never learnt it, the slot's admitted holder now), and no
    /// other: an instance that took the slot since is not the one that went
    /// silent ([`Ec2Error::Superseded`]). Stopped with force and without an
    /// OS shutdown (`SkipOsShutdown`: a hung instance would otherwise take
    /// minutes to shut down gracefully) and tagged fenced. Never this
    /// instance.
    ///
    /// With `aws.fabric_fence` (and for frontend1, an Elastic IP to move)
    /// the fence is confirmed once the `fenced` tag reads back: the hub's
    /// admission list then refuses the old holder on the overlay, and EC2
    /// finishes stopping it in the background (logged when it has).
    /// Otherwise it waits until EC2 reports it stopped, then tags it.
    ///
    /// Idempotent: an instance already stopped, or fenced and stopping, is
    /// confirmed without a second StopInstances; one this node's earlier
    /// attempt stopped is not counted against the budget again.
    pub async fn fence_slot(
        &self,
        slot: Slot,
        judged: Option<&Judged>,
        chained: bool,
    ) -> Result<Fenced, Ec2Error> {
        let remembered: Vec<String> = self
            .fence_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&slot)
            .cloned()
            .unwrap_or_default();
        let retry = !remembered.is_empty();
        let now = std::time::SystemTime::now();
        // The slot's claims and the judged instance, read at once (two
        // round trips to EC2 on the path to the new identity).
        let judged_read = async {
            match judged {
                Some(j) => Some(self.describe(Vec::new(), vec![j.instance.clone()]).await),
                None => None,
            }
        };
        let (claims, judged_read) = tokio::join!(self.slot_claims(slot), judged_read);
        let claims = claims?;
        let current = holders::holding(&claims, slot);
        let target = match (judged, &current) {
            (Some(j), Holding::Held(c)) if c.instance != j.instance && c.instance != self.me => {
                return Err(Ec2Error::Superseded {
                    slot,
                    instance: c.instance.clone(),
                    epoch: c.epoch,
                });
            }
            (Some(j), _) => j.instance.clone(),
            (None, Holding::Held(c)) => c.instance.clone(),
            (None, Holding::Tied(v)) => {
                return Err(Ec2Error::Tied {
                    slot,
                    instances: v.iter().map(|c| c.instance.clone()).collect(),
                });
            }
            // Nobody holds the slot: nothing to stop, so nothing to count
            // against the budget (a taker that moved on leaves its old slot
            // vacant before its identity there goes down, and its watcher
            // may judge the silence before two look-ups found the vacancy).
            // (Unless this node's last attempt stopped its holder and lost
            // the reply or the tagging: that one is finished.)
            (None, Holding::Vacant) => match remembered.first() {
                Some(r) => r.clone(),
                None => return Ok(Fenced::default()),
            },
        };
        // A node never fences itself, even if asked for its own slot.
        if target == self.me {
            return Ok(Fenced::default());
        }
        let found = match judged_read {
            Some(read) if judged.is_some_and(|j| j.instance == target) => read?,
            _ => self.describe(Vec::new(), vec![target.clone()]).await?,
        };
        let Some(found) = found.into_iter().next() else {
            // Gone from EC2 altogether (terminated long ago): nothing holds.
            return Ok(Fenced::default());
        };
        let c = claim_of(&found);
        let ids = vec![target.clone()];
        // It handed its slot over (a switchover: released), or moved on
        // (rejoined elsewhere): it is not the slot's holder any more, is not
        // stopped, and the slot is whoever's the rule says.
        if c.released || (c.power == Power::Up && c.slot != Some(slot)) {
            return match current.holder() {
                Some(h) if h.instance != self.me && h.instance != target => {
                    Err(Ec2Error::Superseded {
                        slot,
                        instance: h.instance.clone(),
                        epoch: h.epoch,
                    })
                }
                _ => Ok(Fenced::default()),
            };
        }
        // Already fenced and on its way down, or down: confirm it (tag it
        // fenced if our last attempt's tagging was lost), no second stop.
        if c.power == Power::Down || (c.power == Power::Stopping && c.fenced) {
            if !c.fenced {
                self.create_tags(
                    &ids,
                    &[
                        (tags::STATE, "fenced".to_string()),
                        (tags::FENCED_AT, unix_ms(now).to_string()),
                    ],
                )
                .await?;
            }
            self.fence_targets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&slot);
            return Ok(Fenced { instances: ids });
        }
        if c.power == Power::Up
            && let Some(until) = maintenance(&found, now)
        {
            return Err(Ec2Error::Maintenance {
                instance: target,
                until,
            });
        }
        // A new fence (not the retry of one whose stop already went out)
        // must fit the budget.
        let now_ms = unix_ms(now);
        if !retry
            && let Some(b) = &self.budget
            && let Err(held) = b.check(now_ms, chained, &self.fenced_at(slot.role, b, now_ms).await)
        {
            return Err(match held {
                Held::Budget(used) => Ec2Error::BudgetExhausted {
                    used,
                    per_hour: b.per_hour(),
                    role: slot.role,
                },
                Held::Cooldown { ago_ms, left_ms } => Ec2Error::Cooldown {
                    ago_s: ago_ms / 1000,
                    cooldown_s: b.cooldown_ms() / 1000,
                    left_s: left_ms.div_ceil(1000),
                },
            });
        }
        self.fence_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slot, ids.clone());
        tracing::warn!(%slot, instance = %target, epoch = c.epoch, "stopping (force, skip OS shutdown) {target}, judged dead as {slot}");
        let sent_ms = unix_ms(std::time::SystemTime::now());
        self.client
            .stop_instances()
            .set_instance_ids(Some(ids.clone()))
            .force(true)
            .skip_os_shutdown(true)
            .send()
            .await
            .map_err(api("StopInstances"))?;
        crate::crashpoint::crash_point("stopped");
        // The fabric fence: for a client slot, the hub's admission list
        // drops an instance tagged `fenced`; for frontend1, the Elastic IP
        // moves at the takeover. Without either, wait for the power fence.
        let fabric = self.fabric_fence && (!slot.is_hub() || self.eip_allocation.is_some());
        if !fabric {
            self.wait_stopped(&ids).await?;
            Self::note_power_fence(
                &self.power_fences,
                slot,
                &ids,
                sent_ms,
                PowerFenceState::Confirmed,
            );
        }
        self.create_tags(
            &ids,
            &[
                (tags::STATE, "fenced".to_string()),
                (tags::FENCED_AT, now_ms.to_string()),
            ],
        )
        .await?;
        if fabric {
            // Read our write back: the hub must see it before the taker's
            // session as the slot can be admitted.
            self.wait_tagged_fenced(&ids).await?;
            tracing::warn!(%slot, instances = ?ids, "fabric fence of {slot} in place (tagged fenced); EC2 finishes stopping it in the background");
            Self::note_power_fence(
                &self.power_fences,
                slot,
                &ids,
                sent_ms,
                PowerFenceState::Stopping,
            );
            let client = self.client.clone();
            let list = Arc::clone(&self.power_fences);
            let (targets, timeout, poll) = (ids.clone(), self.fence_timeout, self.fence_poll);
            tokio::spawn(async move {
                let state = match wait_down(&client, &targets, timeout, poll).await {
                    Ok(()) => {
                        tracing::warn!(%slot, instances = ?targets, "power fence of {slot} confirmed: EC2 reports it stopped");
                        PowerFenceState::Confirmed
                    }
                    Err(e) => {
                        tracing::error!(%slot, "POWER FENCE NOT CONFIRMED: {e}; it is off the overlay (fenced), check it in EC2");
                        PowerFenceState::NotConfirmed
                    }
                };
                Self::note_power_fence(&list, slot, &targets, sent_ms, state);
            });
        }
        self.fence_targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&slot);
        if let Some(b) = &self.budget {
            b.record(now_ms);
        }
        Ok(Fenced { instances: ids })
    }

    /// When the fleet's instances of `role` were fenced (their
    /// `chainwatch:fenced-at` tags), for the fleet-wide budget; `None` when
    /// there is no budget or EC2 cannot say (the node's own ledger counts
    /// then).
    async fn fenced_at(
        &self,
        role: Role,
        b: &super::budget::FenceBudget,
        now_ms: u64,
    ) -> Option<Vec<u64>> {
        if b.per_hour() == 0 {
            return None;
        }
        match self.fleet_instances(Some(role)).await {
            // A time in the future is no fence (a tag written by hand or
            // by a clock far ahead must not hold every fence for an hour).
            Ok(all) => Some(
                all.iter()
                    .filter_map(|i| tag(i, tags::FENCED_AT)?.parse().ok())
                    .filter(|t| *t <= now_ms + 60_000)
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!("cannot count the fleet's fences ({e}); counting this node's own");
                None
            }
        }
    }

    /// Poll until every instance shows `chainwatch:state=fenced`, bounded
    /// by one API time-out.
    async fn wait_tagged_fenced(&self, ids: &[String]) -> Result<(), Ec2Error> {
        let within = self.fence_timeout.min(Duration::from_secs(10));
        let missing = format!("the fenced tag on {ids:?} did not show");
        self.until_tags_show(ids, within, &missing, |found| {
            found.len() == ids.len() && found.iter().all(|i| tag(i, tags::STATE) == Some("fenced"))
        })
        .await
    }

    /// Compute the hub's admission list (see [`crate::admission`]) from
    /// the fleet's instances. `fresh` (a claim waits on it): the instances
    /// found are read again by ID, which EC2 makes consistent sooner than a
    /// filtered read (a claimer's new tags show in a fraction of the time);
    /// one more call, made only when a member claims a slot.
    pub async fn admission(
        &self,
        layout: &Layout,
        fresh: bool,
    ) -> Result<crate::admission::Admission, Ec2Error> {
        let mut candidates = Vec::new();
        let mut found = self.fleet_instances(None).await?;
        if fresh && !found.is_empty() {
            let ids = found
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect();
            found = self.describe(Vec::new(), ids).await?;
        }
        for i in found {
            let slot = tag(&i, tags::ROLE)
                .and_then(|r| r.parse::<Role>().ok())
                .zip(tag(&i, tags::ID))
                .and_then(|(role, id)| {
                    layout.parse_id(role, id).ok().map(|id| Slot::new(role, id))
                });
            let (Some(slot), Some(id)) = (slot, i.instance_id()) else {
                continue;
            };
            let addrs = [i.private_ip_address(), i.public_ip_address()]
                .into_iter()
                .flatten()
                .filter_map(|a| a.parse().ok())
                .collect();
            candidates.push(crate::admission::Candidate {
                instance: id.to_string(),
                slot,
                up: matches!(
                    i.state().and_then(|s| s.name()),
                    Some(InstanceStateName::Running | InstanceStateName::Pending)
                ),
                fenced: tag(&i, tags::STATE) == Some("fenced"),
                epoch: tag(&i, tags::EPOCH)
                    .and_then(|e| e.parse().ok())
                    .unwrap_or(0),
                addrs,
            });
        }
        Ok(crate::admission::Admission::from_candidates(
            &candidates,
            crate::clock::unix_ms(std::time::SystemTime::now()),
        ))
    }

    /// Poll until every instance is `stopped` (or `terminated`), bounded by
    /// `aws.fence_timeout`.
    pub async fn wait_stopped(&self, ids: &[String]) -> Result<(), Ec2Error> {
        wait_down(&self.client, ids, self.fence_timeout, self.fence_poll).await
    }

    async fn create_tags(&self, ids: &[String], kv: &[(&str, String)]) -> Result<(), Ec2Error> {
        let tags: Vec<Tag> = kv
            .iter()
            .map(|(k, v)| Tag::builder().key(*k).value(v.clone()).build())
            .collect();
        self.client
            .create_tags()
            .set_resources(Some(ids.to_vec()))
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(api("CreateTags"))?;
        Ok(())
    }

    /// Tag this instance as the active holder of `slot` at `epoch`. Its
    /// fleet and role tags are set at launch and never written here (IAM
    /// allows them only at RunInstances).
    pub async fn tag_self(&self, slot: Slot, epoch: u64) -> Result<(), Ec2Error> {
        self.create_tags(
            std::slice::from_ref(&self.me),
            &[
                (tags::ID, slot.id.to_string()),
                (tags::STATE, "active".to_string()),
                (tags::EPOCH, epoch.to_string()),
            ],
        )
        .await
    }

    /// The next epoch of `role`: one more than the highest epoch tag of any
    /// instance of the role (stopped ones included, so it only grows).
    pub async fn next_epoch(&self, role: Role) -> Result<u64, Ec2Error> {
        let instances = self.fleet_instances(Some(role)).await?;
        let top = instances
            .iter()
            .filter_map(|i| {
                tag(i, tags::EPOCH)
                    .and_then(|e| e.parse::<u64>().ok())
                    .map(|e| (e, i))
            })
            .max_by_key(|(e, _)| *e);
        match top {
            None => Ok(1),
            Some((e, i)) => e.checked_add(1).ok_or_else(|| Ec2Error::EpochExhausted {
                instance: i.instance_id().unwrap_or("?").to_string(),
                epoch: e,
            }),
        }
    }

    /// This instance's tags as EC2 shows them now: whether it is tagged
    /// `fenced`, and the slot ID and epoch it is tagged with.
    pub async fn own_tags(&self) -> Result<(bool, Option<u32>, u64), Ec2Error> {
        let me = self.describe(Vec::new(), vec![self.me.clone()]).await?;
        let me = me
            .first()
            .ok_or_else(|| Ec2Error::SelfUnknown(self.me.clone()))?;
        Ok((
            tag(me, tags::STATE) == Some("fenced"),
            tag(me, tags::ID).and_then(|i| i.parse().ok()),
            tag(me, tags::EPOCH)
                .and_then(|e| e.parse().ok())
                .unwrap_or(0),
        ))
    }

    /// Tag this instance as the holder of `slot` at `epoch` and read it
    /// back (see `read_back`).
    pub async fn tag_self_confirmed(&self, slot: Slot, epoch: u64) -> Result<(), Ec2Error> {
        self.tag_self(slot, epoch).await?;
        let (id, epoch_tag) = (slot.id.to_string(), epoch.to_string());
        self.read_back(&format!("{slot} at epoch {epoch}"), |i| {
            tag(i, tags::ID) == Some(id.as_str()) && tag(i, tags::EPOCH) == Some(epoch_tag.as_str())
        })
        .await
    }

    /// The epoch tag of this instance (0 when it has none).
    pub async fn own_epoch(&self) -> Result<u64, Ec2Error> {
        let me = self.describe(Vec::new(), vec![self.me.clone()]).await?;
        let me = me
            .first()
            .ok_or_else(|| Ec2Error::SelfUnknown(self.me.clone()))?;
        Ok(tag(me, tags::EPOCH)
            .and_then(|e| e.parse().ok())
            .unwrap_or(0))
    }

    /// Move the Elastic IP to this instance.
    pub async fn take_elastic_ip(&self) -> Result<bool, Ec2Error> {
        let Some(alloc) = &self.eip_allocation else {
            return Ok(false);
        };
        self.client
            .associate_address()
            .allocation_id(alloc)
            .instance_id(&self.me)
            .allow_reassociation(true)
            .send()
            .await
            .map_err(api("AssociateAddress"))?;
        Ok(true)
    }

    /// The slot this instance holds by the holder rule (its tags name it,
    /// and it is that slot's admitted holder), with its epoch.
    pub async fn own_holding(&self, role: Role) -> Result<Option<(Slot, u64)>, Ec2Error> {
        let all = self.fleet_instances(Some(role)).await?;
        let claims: Vec<Claim> = all.iter().map(claim_of).collect();
        Ok(holders::held_by(&claims, &self.me).filter(|(slot, _)| slot.role == role))
    }

    /// Decide at boot whether this instance keeps `booted` or rejoins at the
    /// tail of its role: it rejoins when its own tags say it was fenced, or
    /// when another instance that is not stopped holds its ID.
    pub async fn rejoin(&self, layout: &Layout, booted: Slot) -> Result<Rejoin, Ec2Error> {
        let all = self.fleet_instances(Some(booted.role)).await?;
        let me = all
            .iter()
            .find(|i| i.instance_id() == Some(self.me.as_str()));
        let fenced = me.and_then(|i| tag(i, tags::STATE)) == Some("fenced");
        let others: Vec<&Instance> = all
            .iter()
            .filter(|i| i.instance_id() != Some(self.me.as_str()) && !is_down(i))
            .collect();
        // Another instance tagged `fenced` does not hold this node's slot:
        // EC2 is stopping it and the hub admits it nowhere. (For the tail
        // below its ID still counts: its successor may be taking it over.)
        let taken = others.iter().any(|i| {
            tag(i, tags::ID) == Some(booted.id.to_string().as_str())
                && tag(i, tags::STATE) != Some("fenced")
        });
        let reason = match (fenced, taken) {
            (true, _) => format!("this instance was fenced as {booted}"),
            (false, true) => format!("{booted} is held by another running instance"),
            (false, false) => return Ok(Rejoin::Keep(booted)),
        };
        let held: Vec<u32> = others
            .iter()
            .filter_map(|i| tag(i, tags::ID).and_then(|v| v.parse().ok()))
            .collect();
        Ok(match layout.tail_id(booted.role, &held) {
            Some(id) => Rejoin::Tail {
                slot: Slot::new(booted.role, id),
                reason,
            },
            None => Rejoin::Full { reason },
        })
    }
}

/// Retry an EC2 call at start a few times; then give up with its error.
pub async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Ec2Error>>,
{
    let mut delays = crate::backoff::delays(Duration::from_millis(500), Duration::from_secs(8));
    for attempt in 1..=5 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt == 5 => {
                return Err(format!("{what}: {e}"));
            }
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(8));
                tracing::warn!(attempt, "{what}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// How often a node reads its own maintenance tag for `status`.
const MAINT_READ: Duration = Duration::from_secs(10);

/// Read this instance's maintenance tag every [`MAINT_READ`], and say when
/// it changes (a failed read keeps the last value and is retried).
pub async fn follow_maintenance(registry: Arc<Ec2Registry>) {
    let mut tick = tokio::time::interval(MAINT_READ);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match registry.read_maintenance().await {
            Ok(true) => match registry.maintenance_until() {
                Some(until) => tracing::warn!(
                    %until,
                    "this instance is in maintenance until {until}: no member fences it, so nothing is taken over from it"
                ),
                None => tracing::info!("this instance's maintenance is over"),
            },
            Ok(false) => {}
            Err(e) => tracing::debug!("maintenance tag not read: {e}"),
        }
    }
}

/// What [`crate::shell::Registry`] asks of EC2 (the trait itself lives in
/// the shell, which implements it with these).
impl Ec2Registry {
    /// `slot`'s admitted holder (see [`crate::holders`]): the instance a
    /// watcher judges. A vacant slot drops its cached underlay address. Of
    /// two tied at the top epoch (the hub admits neither), the first by ID.
    pub async fn holder(&self, slot: Slot) -> Result<Holder, String> {
        let claims = self.slot_claims(slot).await.map_err(|e| e.to_string())?;
        let judged = |c: &Claim| {
            Holder::Held(Judged {
                instance: c.instance.clone(),
                epoch: c.epoch,
            })
        };
        Ok(match holders::holding(&claims, slot) {
            Holding::Vacant => {
                self.forget_underlay(Some(slot));
                Holder::Vacant
            }
            Holding::Held(c) => judged(c),
            Holding::Tied(v) => judged(v[0]),
        })
    }

    /// Drop the cached underlay address of `slot` (all of them: `None`):
    /// at every takeover, and when a round found the address silent, so a
    /// holder that changed is looked up afresh.
    pub fn forget_underlay(&self, slot: Option<Slot>) {
        let mut cache = self.underlay.lock().unwrap_or_else(|p| p.into_inner());
        match slot {
            Some(slot) => {
                cache.remove(&slot);
            }
            None => cache.clear(),
        }
    }

    /// One cheap call that must find this instance: the EC2 witness.
    pub async fn witness_call(&self) -> Result<(), String> {
        let found = self
            .describe(Vec::new(), vec![self.me.clone()])
            .await
            .map_err(|e| e.to_string())?;
        if found.is_empty() {
            return Err(Ec2Error::SelfUnknown(self.me.clone()).to_string());
        }
        Ok(())
    }

    /// The end of this instance's maintenance, as last read.
    pub fn maintenance_until(&self) -> Option<String> {
        self.maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The underlay address of `slot`'s holder (cached for a while).
    /// The slots held by running (or pending) instances of the fleet that
    /// are not tagged `fenced`, read at most every [`UNDERLAY_TTL`].
    pub async fn held_slots(&self, layout: &Layout) -> Result<Vec<Slot>, String> {
        {
            let cache = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((slots, at)) = cache.as_ref()
                && at.elapsed() < UNDERLAY_TTL
            {
                return Ok(slots.clone());
            }
        }
        self.held_slots_fresh(layout).await
    }

    /// [`Ec2Registry::held_slots`] read now (and cached for the others).
    pub async fn held_slots_fresh(&self, layout: &Layout) -> Result<Vec<Slot>, String> {
        let slots: Vec<Slot> = self
            .members(layout)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|m| m.holds() && matches!(m.state.as_str(), "running" | "pending"))
            .filter_map(|m| Some(Slot::new(m.role?, m.id?)))
            .collect();
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((slots.clone(), Instant::now()));
        Ok(slots)
    }

    /// The underlay (VPC) address of `slot`'s admitted holder (cached for
    /// a while): never a fenced, stopping or stopped instance's.
    pub async fn underlay_of(&self, slot: Slot) -> Result<Ipv4Addr, String> {
        {
            let cache = self.underlay.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((addr, at)) = cache.get(&slot)
                && at.elapsed() < UNDERLAY_TTL
            {
                return Ok(*addr);
            }
        }
        let found = self.slot_instances(slot).await.map_err(|e| e.to_string())?;
        let claims: Vec<Claim> = found.iter().map(claim_of).collect();
        let holder = holders::holding(&claims, slot)
            .holder()
            .map(|c| c.instance.clone())
            .ok_or_else(|| format!("no running instance holds {slot}: no underlay address"))?;
        let addr = found
            .iter()
            .filter(|i| i.instance_id() == Some(holder.as_str()))
            .filter_map(|i| i.private_ip_address())
            .find_map(|a| a.parse::<Ipv4Addr>().ok())
            .ok_or_else(|| format!("{holder}, the holder of {slot}, has no VPC address"))?;
        self.underlay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slot, (addr, Instant::now()));
        Ok(addr)
    }
}

/// What a `DryRun` call says about one permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    /// EC2 answered `DryRunOperation`: the call would have succeeded.
    Granted,
    /// EC2 answered `UnauthorizedOperation` (or another access error).
    Denied(String),
    /// Anything else (no answer, a bad argument): not proven either way.
    Unknown(String),
}

fn dry_run<T, E, R>(result: Result<T, aws_sdk_ec2::error::SdkError<E, R>>) -> Permission
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    match result {
        // A call with DryRun never succeeds; a success means DryRun was
        // ignored, which still proves the permission.
        Ok(_) => Permission::Granted,
        Err(e) => match e.code() {
            Some("DryRunOperation") => Permission::Granted,
            Some(code @ ("UnauthorizedOperation" | "AccessDenied" | "AuthFailure")) => {
                Permission::Denied(format!("{code}: {}", e.message().unwrap_or("no message")))
            }
            _ => Permission::Unknown(DisplayErrorContext(&e).to_string()),
        },
    }
}

impl Ec2Registry {
    /// Prove with `DryRun` calls that this node may fence and tag `target`
    /// (an instance of the fleet) and, when an Elastic IP is configured,
    /// move it to `target`: `(API action, verdict)`.
    pub async fn prove_permissions(&self, target: &str) -> Vec<(&'static str, Permission)> {
        let mut out = vec![
            (
                "ec2:StopInstances",
                dry_run(
                    self.client
                        .stop_instances()
                        .instance_ids(target)
                        .force(true)
                        .skip_os_shutdown(true)
                        .dry_run(true)
                        .send()
                        .await,
                ),
            ),
            (
                "ec2:CreateTags",
                dry_run(
                    self.client
                        .create_tags()
                        .resources(target)
                        .tags(Tag::builder().key(tags::STATE).value("fenced").build())
                        .dry_run(true)
                        .send()
                        .await,
                ),
            ),
            (
                "ec2:DescribeInstances",
                dry_run(
                    self.client
                        .describe_instances()
                        .instance_ids(target)
                        .dry_run(true)
                        .send()
                        .await,
                ),
            ),
        ];
        if let Some(alloc) = &self.eip_allocation {
            out.push((
                "ec2:AssociateAddress",
                dry_run(
                    self.client
                        .associate_address()
                        .allocation_id(alloc)
                        .instance_id(target)
                        .allow_reassociation(true)
                        .dry_run(true)
                        .send()
                        .await,
                ),
            ));
        }
        out
    }
}

/// What EC2 says about the instance an event names as the new holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderCheck {
    /// Running, tagged with the event's role, ID and epoch, not fenced.
    Holder,
    /// Tagged at a later epoch: a later transition supersedes the event.
    Superseded {
        /// The epoch tag.
        epoch: u64,
    },
    /// Not the holder the event claims; why.
    NotHolder(String),
}

/// Check `ev` against EC2: is its `instance_id` an instance of `fleet`,
/// running, tagged as the holder of the ID it took, at the event's epoch?
pub async fn check_holder(
    client: &Client,
    fleet: &str,
    ev: &crate::event::TransitionEvent,
) -> Result<HolderCheck, Ec2Error> {
    let found = describe(
        client,
        vec![
            filter("instance-id", &ev.instance_id),
            filter(&format!("tag:{}", tags::FLEET), fleet),
        ],
        Vec::new(),
    )
    .await?;
    let Some(i) = found.first() else {
        return Ok(HolderCheck::NotHolder(format!(
            "{} is not an instance of fleet {fleet}",
            ev.instance_id
        )));
    };
    let not = |why: String| Ok(HolderCheck::NotHolder(format!("{}: {why}", ev.instance_id)));
    if i.state().and_then(|s| s.name()) != Some(&InstanceStateName::Running) {
        return not(format!("{}, not running", state_name(i)));
    }
    if tag(i, tags::ROLE) != Some(ev.role.as_str()) {
        return not(format!("its role tag is {:?}", tag(i, tags::ROLE)));
    }
    let epoch = tag(i, tags::EPOCH).and_then(|e| e.parse::<u64>().ok());
    match epoch {
        Some(e) if e > ev.epoch => return Ok(HolderCheck::Superseded { epoch: e }),
        Some(e) if e == ev.epoch => {}
        other => {
            return not(format!(
                "tagged at epoch {}, the event claims {}",
                other.map_or("none".to_string(), |e| e.to_string()),
                ev.epoch
            ));
        }
    }
    if tag(i, tags::ID) != Some(ev.to_id.to_string().as_str()) {
        return not(format!(
            "tagged with ID {:?}, the event claims {}",
            tag(i, tags::ID),
            ev.to_id
        ));
    }
    if tag(i, tags::STATE) == Some("fenced") {
        return not("tagged fenced".into());
    }
    Ok(HolderCheck::Holder)
}

/// What the registry (EC2's tags) says MySQL's topology must be: the
/// backend that holds ID 1, and every other backend that runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct BackendView {
    /// The holder of backend1: running, not fenced nor released, the
    /// highest epoch among those tagged with ID 1. None while nobody is.
    pub primary: Option<String>,
    /// Its epoch tag.
    pub epoch: u64,
    /// The other running backends of the fleet, sorted: the replicas.
    pub replicas: Vec<String>,
    /// The fleet's backends that are not running, or tagged fenced: left
    /// alone.
    pub down: Vec<String>,
}

/// Read [`BackendView`] for `fleet` from EC2: one `DescribeInstances`.
pub async fn backend_view(client: &Client, fleet: &str) -> Result<BackendView, Ec2Error> {
    Ok(backend_servers(client, fleet).await?.0)
}

/// [`backend_view`], with the private address of each backend that has
/// one (where the worker reaches its MySQL server).
pub async fn backend_servers(
    client: &Client,
    fleet: &str,
) -> Result<(BackendView, std::collections::BTreeMap<String, String>), Ec2Error> {
    let found = describe(
        client,
        vec![
            filter(&format!("tag:{}", tags::FLEET), fleet),
            filter(&format!("tag:{}", tags::ROLE), Role::Backend.as_str()),
        ],
        Vec::new(),
    )
    .await?;
    let addresses = found
        .iter()
        .filter_map(|i| {
            Some((
                i.instance_id()?.to_string(),
                i.private_ip_address()?.to_string(),
            ))
        })
        .collect();
    Ok((BackendView::of(&found), addresses))
}

impl BackendView {
    /// The view of a fleet's backend instances: those not running, or
    /// tagged fenced, are down; of the others, the one tagged with ID 1 at
    /// the highest epoch (not released) is the primary, the rest replicas.
    pub fn of(instances: &[Instance]) -> BackendView {
        let mut view = BackendView::default();
        let mut live = Vec::new();
        for i in instances {
            let Some(id) = i.instance_id() else { continue };
            let running = i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Running);
            if !running || tag(i, tags::STATE) == Some("fenced") {
                view.down.push(id.to_string());
                continue;
            }
            live.push(id.to_string());
            let epoch = tag(i, tags::EPOCH).and_then(|e| e.parse::<u64>().ok());
            if tag(i, tags::ID) == Some("1")
                && tag(i, tags::STATE) != Some(RELEASED)
                && let Some(e) = epoch
                && (view.primary.is_none() || e > view.epoch)
            {
                view.primary = Some(id.to_string());
                view.epoch = e;
            }
        }
        view.replicas = live
            .into_iter()
            .filter(|id| Some(id) != view.primary.as_ref())
            .collect();
        view.replicas.sort();
        view.down.sort();
        view
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;
    use aws_sdk_ec2::types::InstanceState;

    fn inst(id: &str, state: InstanceStateName, kv: &[(&str, &str)]) -> Instance {
        let mut b = Instance::builder()
            .instance_id(id)
            .state(InstanceState::builder().name(state).build());
        for (k, v) in kv {
            b = b.tags(Tag::builder().key(*k).value(*v).build());
        }
        b.build()
    }

    #[test]
    fn the_primary_is_the_running_unfenced_holder_of_id_1_at_the_highest_epoch() {
        use InstanceStateName::{Running, Stopped, Stopping};
        let view = BackendView::of(&[
            // The fenced old holder, still stopping.
            inst(
                "i-01",
                Stopping,
                &[(tags::ID, "1"), (tags::EPOCH, "4"), (tags::STATE, "fenced")],
            ),
            // Tagged fenced but (yet) running: down all the same.
            inst(
                "i-02",
                Running,
                &[(tags::ID, "1"), (tags::EPOCH, "9"), (tags::STATE, "fenced")],
            ),
            inst(
                "i-03",
                Running,
                &[(tags::ID, "1"), (tags::EPOCH, "5"), (tags::STATE, "active")],
            ),
            // A lower epoch of ID 1 (a holder not yet fenced): a replica.
            inst(
                "i-04",
                Running,
                &[(tags::ID, "1"), (tags::EPOCH, "3"), (tags::STATE, "active")],
            ),
            // Released: holds nothing.
            inst(
                "i-05",
                Running,
                &[(tags::ID, "1"), (tags::EPOCH, "7"), (tags::STATE, RELEASED)],
            ),
            inst("i-06", Running, &[(tags::ID, "2"), (tags::EPOCH, "6")]),
            inst("i-07", Stopped, &[(tags::ID, "3"), (tags::EPOCH, "2")]),
        ]);
        assert_eq!(
            view,
            BackendView {
                primary: Some("i-03".into()),
                epoch: 5,
                replicas: vec!["i-04".into(), "i-05".into(), "i-06".into()],
                down: vec!["i-01".into(), "i-02".into(), "i-07".into()],
            }
        );
        // Nobody running holds ID 1: no primary, nothing to follow.
        let none = BackendView::of(&[inst(
            "i-06",
            Running,
            &[(tags::ID, "2"), (tags::EPOCH, "6")],
        )]);
        assert_eq!(none.primary, None);
    }
}
