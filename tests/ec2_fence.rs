//! The EC2 registry and fence against moto's server mode, reached by the real
//! aws-sdk-ec2 client through an endpoint override; failure modes through a
//! proxy that fails, hangs, or never lets an instance reach `stopped`.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{InstanceStateName, Tag};
use chainwatch::config::AwsConfig;
use chainwatch::core::{Action, CoreConfig, Event, Holder, Input, Monitor, ProbeOutcome, Target};
use chainwatch::layout::{Layout, Role, Slot};
use chainwatch::shell::aws::ec2::{Ec2Error, Ec2Registry, Rejoin, tags};
use chainwatch::shell::{PowerFenceState, Registry};
use common::{Ec2Proxy, Moto, ec2_client, launch, prerequisite};

fn fe(id: u32) -> Slot {
    Slot::new(Role::Frontend, id)
}

async fn describe(ec2: &Client, id: &str) -> aws_sdk_ec2::types::Instance {
    ec2.describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .clone()
}

fn tag_of(i: &aws_sdk_ec2::types::Instance, key: &str) -> Option<String> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value().map(str::to_string))
}

fn state(i: &aws_sdk_ec2::types::Instance) -> InstanceStateName {
    i.state().unwrap().name().unwrap().clone()
}

/// The power fence: these tests wait for EC2's `stopped` (the fabric
/// fence, which does not, has its own test below).
fn aws_cfg(fleet: &str) -> AwsConfig {
    AwsConfig {
        fleet: fleet.into(),
        fence_timeout: Duration::from_millis(1500),
        fence_poll: Duration::from_millis(100),
        fabric_fence: false,
        ..AwsConfig::default()
    }
}

fn moto() -> Option<Moto> {
    prerequisite(
        Moto::available(),
        "moto[server] in the virtualenv (.ci/run installs it)",
    )
    .then(|| Moto::start("127.0.0.1"))
}

#[tokio::test(flavor = "current_thread")]
async fn fencing_a_running_peer_stops_and_tags_it() {
    let Some(moto) = moto() else { return };
    let ec2 = ec2_client(&moto.endpoint).await;
    let f = "fleet-a";
    let f1 = launch(&ec2, f, fe(1), &[]).await;
    let f2 = launch(&ec2, f, fe(2), &[]).await;
    let f3 = launch(&ec2, f, fe(3), &[]).await;
    // Another fleet's frontend2 is never touched.
    let other = launch(&ec2, "fleet-b", fe(2), &[]).await;
    let reg = Ec2Registry::new(ec2.clone(), &aws_cfg(f), f3.clone());

    assert!(matches!(reg.check_holder(fe(2)).await, Ok(Holder::Held(_))));
    let fenced = reg.fence(fe(2), None, false).await.unwrap();
    assert_eq!(fenced.instances, vec![f2.clone()]);
    let i = describe(&ec2, &f2).await;
    assert_eq!(state(&i), InstanceStateName::Stopped);
    assert_eq!(tag_of(&i, tags::STATE).as_deref(), Some("fenced"));
    for id in [&f1, &f3, &other] {
        assert_eq!(state(&describe(&ec2, id).await), InstanceStateName::Running);
    }
    // Now the slot is vacant, and fencing it again is a no-op success.
    assert_eq!(reg.check_holder(fe(2)).await, Ok(Holder::Vacant));
    assert!(
        reg.fence(fe(2), None, false)
            .await
            .unwrap()
            .instances
            .is_empty()
    );
    // A node never fences itself, even if asked for its own slot.
    assert!(
        reg.fence(fe(3), None, false)
            .await
            .unwrap()
            .instances
            .is_empty()
    );
    assert_eq!(
        state(&describe(&ec2, &f3).await),
        InstanceStateName::Running
    );
}

#[tokio::test(flavor = "current_thread")]
async fn vacancy_and_the_hub_witness() {
    let Some(moto) = moto() else { return };
    let ec2 = ec2_client(&moto.endpoint).await;
    let f = "fleet-v";
    let f1 = launch(&ec2, f, fe(1), &[]).await;
    let f2 = launch(&ec2, f, fe(2), &[]).await;
    let reg = Ec2Registry::new(ec2.clone(), &aws_cfg(f), f2.clone());
    assert_eq!(reg.check_holder(fe(4)).await, Ok(Holder::Vacant));
    assert!(matches!(reg.check_holder(fe(1)).await, Ok(Holder::Held(_))));
    // The hub's underlay address is its private IP.
    let ip = describe(&ec2, &f1)
        .await
        .private_ip_address()
        .unwrap()
        .to_string();
    assert_eq!(reg.underlay_addr(fe(1)).await.unwrap().to_string(), ip);
    assert_eq!(reg.witness().await, Ok(()));
    // A stopped holder does not hold.
    ec2.stop_instances().instance_ids(&f1).send().await.unwrap();
    assert_eq!(reg.check_holder(fe(1)).await, Ok(Holder::Vacant));
    // An unknown self is no witness.
    let ghost = Ec2Registry::new(ec2.clone(), &aws_cfg(f), "i-00000000000000000".into());
    assert!(ghost.witness().await.is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_or_hanging_api_means_no_fence_and_no_takeover() {
    let Some(moto) = moto() else { return };
    let proxy = Ec2Proxy::start(&moto.endpoint);
    let direct = ec2_client(&moto.endpoint).await;
    let via = ec2_client(&proxy.endpoint).await;
    let f = "fleet-f";
    launch(&direct, f, fe(1), &[]).await;
    let f2 = launch(&direct, f, fe(2), &[]).await;
    let f3 = launch(&direct, f, fe(3), &[]).await;
    let reg = Ec2Registry::new(via, &aws_cfg(f), f3);

    // The core declares frontend2 dead and asks for a fence.
    let t0 = Instant::now();
    let cfg = CoreConfig {
        startup_grace: Duration::ZERO,
        ..CoreConfig::default()
    };
    let mut core = Monitor::new(cfg, fe(3), t0);
    let mut now = t0;
    let mut fence = None;
    for _ in 0..3 {
        core.handle_timeout(now);
        while let Some(a) = core.poll_action() {
            match a {
                Action::Probe { round, target, .. } => {
                    core.handle_input(now, peer_silent(round, target));
                }
                Action::CheckHolder { slot } => {
                    let result = reg.check_holder(slot).await;
                    assert!(matches!(result, Ok(Holder::Held(_))));
                    core.handle_input(now, Input::HolderChecked { slot, result });
                }
                Action::Fence { slot, .. } => fence = Some(slot),
                other => panic!("unexpected {other:?}"),
            }
        }
        now += Duration::from_secs(1);
    }
    let slot = fence.expect("the core asked for a fence");

    for mode in ["fail", "hang"] {
        proxy.mode(mode);
        let started = Instant::now();
        let result = reg
            .fence(slot, None, false)
            .await
            .map_err(|e| e.to_string());
        let took = started.elapsed();
        assert!(result.is_err(), "{mode}: {result:?}");
        let err = result.unwrap_err();
        assert!(err.contains("StopInstances"), "{mode}: {err}");
        // Bounded by the per-call time-out (3 s in this client).
        assert!(took < Duration::from_secs(10), "{mode}: {took:?}");
        core.handle_input(
            now,
            Input::FenceDone {
                slot,
                result: Err(err),
            },
        );
        let mut failed = false;
        while let Some(e) = core.poll_event() {
            failed |= matches!(e, Event::FenceFailed { .. });
        }
        assert!(failed, "{mode}");
        assert!(core.poll_action().is_none(), "{mode}: no takeover");
        assert_eq!(
            state(&describe(&direct, &f2).await),
            InstanceStateName::Running
        );
        // Let the back-off pass and the core retry.
        now += Duration::from_secs(60);
        core.handle_timeout(now);
        let mut retried = false;
        while let Some(a) = core.poll_action() {
            retried |= matches!(a, Action::Fence { .. });
        }
        assert!(retried, "{mode}: the fence is retried");
    }
}

/// A world where the peer (and n-2) are silent and everything else
/// answers: the result of one probe.
fn peer_silent(round: u64, target: Target) -> Input {
    let outcome = match target {
        Target::Peer | Target::Beyond => ProbeOutcome::Silent,
        _ => ProbeOutcome::Reply {
            rtt: Duration::from_millis(1),
        },
    };
    Input::Probed {
        round,
        target,
        outcome,
    }
}

/// Step `core` through rounds in which its peer is silent and its witness
/// answers, with holder look-ups and fences against `reg`, until a fence
/// has been tried `fences` times (or 30 rounds passed). Returns each
/// fence's result and the number of takeovers asked for.
async fn drive(
    core: &mut Monitor,
    reg: &Ec2Registry,
    now: &mut Instant,
    fences: usize,
) -> (Vec<Result<Vec<String>, String>>, usize) {
    let mut results = Vec::new();
    let mut takeovers = 0;
    for _ in 0..30 {
        core.handle_timeout(*now);
        while let Some(a) = core.poll_action() {
            match a {
                Action::Probe { round, target, .. } => {
                    core.handle_input(*now, peer_silent(round, target));
                }
                Action::CheckHolder { slot } => {
                    let result = reg.check_holder(slot).await;
                    core.handle_input(*now, Input::HolderChecked { slot, result });
                }
                Action::Fence { slot, judged, .. } => {
                    let result = reg
                        .fence(slot, judged, false)
                        .await
                        .map_err(|e| e.to_string());
                    results.push(result.clone().map(|f| f.instances));
                    core.handle_input(*now, Input::FenceDone { slot, result });
                }
                Action::TakeOver { .. } => takeovers += 1,
                // The default core asks no helpers (no members' channel).
                Action::Announce(_) | Action::AskHelpers { .. } => {}
            }
        }
        while core.poll_event().is_some() {}
        if results.len() >= fences {
            break;
        }
        *now += Duration::from_secs(1);
    }
    (results, takeovers)
}

/// The dangerous case: the stop is applied, but its reply is lost. That
/// attempt fails (no takeover) although the instance is stopped; the retry
/// finds the slot vacant in EC2, but still fences, tags and names the
/// instance it stopped, and exactly one takeover follows.
#[tokio::test(flavor = "current_thread")]
async fn a_stop_whose_reply_is_lost_is_confirmed_by_the_retry() {
    let Some(moto) = moto() else { return };
    let proxy = Ec2Proxy::start(&moto.endpoint);
    let direct = ec2_client(&moto.endpoint).await;
    let f = "fleet-l";
    launch(&direct, f, fe(1), &[]).await;
    let f2 = launch(&direct, f, fe(2), &[]).await;
    let f3 = launch(&direct, f, fe(3), &[]).await;
    let reg = Ec2Registry::new(ec2_client(&proxy.endpoint).await, &aws_cfg(f), f3);
    let t0 = Instant::now();
    let cfg = CoreConfig {
        startup_grace: Duration::ZERO,
        ..CoreConfig::default()
    };
    let mut core = Monitor::new(cfg, fe(3), t0);
    let mut now = t0;

    proxy.mode("lose");
    let (results, takeovers) = drive(&mut core, &reg, &mut now, 1).await;
    assert_eq!(results.len(), 1, "one fence");
    let err = results[0].clone().unwrap_err();
    assert!(err.contains("StopInstances"), "{err}");
    assert_eq!(takeovers, 0, "a lost reply is no confirmation");
    assert_eq!(
        state(&describe(&direct, &f2).await),
        InstanceStateName::Stopped,
        "the lost reply's stop was applied"
    );
    // The proxy passes again: the back-off runs out and the core retries.
    let (results, takeovers) = drive(&mut core, &reg, &mut now, 1).await;
    assert_eq!(
        results,
        vec![Ok(vec![f2.clone()])],
        "the retry confirms the stop of the instance it stopped"
    );
    assert_eq!(
        takeovers, 1,
        "exactly one takeover after the confirmed fence"
    );
    let i = describe(&direct, &f2).await;
    assert_eq!(tag_of(&i, tags::STATE).as_deref(), Some("fenced"));
}

/// frontend2 and frontend3 of `fleet`, and frontend3's registry through a
/// fresh misbehaving proxy: (proxy, direct client, frontend2's ID, registry).
async fn two_through_a_proxy(moto: &Moto, fleet: &str) -> (Ec2Proxy, Client, String, Ec2Registry) {
    let proxy = Ec2Proxy::start(&moto.endpoint);
    let direct = ec2_client(&moto.endpoint).await;
    let f2 = launch(&direct, fleet, fe(2), &[]).await;
    let f3 = launch(&direct, fleet, fe(3), &[]).await;
    let reg = Ec2Registry::new(ec2_client(&proxy.endpoint).await, &aws_cfg(fleet), f3);
    (proxy, direct, f2, reg)
}

#[tokio::test(flavor = "current_thread")]
async fn a_fence_whose_tagging_failed_still_tags_and_names_the_instance() {
    let Some(moto) = moto() else { return };
    let (proxy, direct, f2, reg) = two_through_a_proxy(&moto, "fleet-g").await;
    proxy.mode("failtags");
    let err = reg.fence(fe(2), None, false).await.unwrap_err().to_string();
    assert!(err.contains("CreateTags"), "{err}");
    proxy.mode("pass");
    assert_eq!(
        state(&describe(&direct, &f2).await),
        InstanceStateName::Stopped
    );
    // EC2 no longer lists it as a holder; the retry still knows it.
    assert_eq!(reg.check_holder(fe(2)).await, Ok(Holder::Vacant));
    let fenced = reg.fence(fe(2), None, false).await.unwrap();
    assert_eq!(fenced.instances, vec![f2.clone()]);
    let i = describe(&direct, &f2).await;
    assert_eq!(tag_of(&i, tags::STATE).as_deref(), Some("fenced"));
    // Confirmed: the next fence of the slot is a plain vacancy.
    assert!(
        reg.fence(fe(2), None, false)
            .await
            .unwrap()
            .instances
            .is_empty()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn stops_skip_the_os_shutdown_and_take_as_long_as_ec2_says() {
    let Some(moto) = moto() else { return };
    // A proxy with AWS-like stop times (short, to keep the test quick).
    let proxy = Ec2Proxy::start_slow(&moto.endpoint, 20_000, 1_500);
    let direct = ec2_client(&moto.endpoint).await;
    let f = "fleet-k";
    let f2 = launch(&direct, f, fe(2), &[]).await;
    let f3 = launch(&direct, f, fe(3), &[]).await;
    let cfg = AwsConfig {
        fence_timeout: Duration::from_millis(10_000),
        ..aws_cfg(f)
    };
    let reg = Ec2Registry::new(ec2_client(&proxy.endpoint).await, &cfg, f3);
    let t = Instant::now();
    let fenced = reg.fence(fe(2), None, false).await.unwrap();
    let took = t.elapsed();
    assert_eq!(fenced.instances, vec![f2.clone()]);
    // SkipOsShutdown: the short wait, not the graceful one.
    assert!(
        took >= Duration::from_millis(1_400) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let stops = proxy.stops();
    let last = stops.last().expect("a StopInstances went out");
    assert_eq!(last["force"], true, "{stops:?}");
    assert_eq!(last["skip_os_shutdown"], true, "{stops:?}");
    assert_eq!(last["instances"][0], f2.as_str());
}

#[tokio::test(flavor = "current_thread")]
async fn the_fabric_fence_is_confirmed_before_ec2_has_stopped_the_instance() {
    let Some(moto) = moto() else { return };
    let proxy = Ec2Proxy::start_slow(&moto.endpoint, 20_000, 3_000);
    let direct = ec2_client(&moto.endpoint).await;
    let f = "fleet-fab";
    let f2 = launch(&direct, f, fe(2), &[]).await;
    let f1 = launch(&direct, f, fe(1), &[]).await;
    let f3 = launch(&direct, f, fe(3), &[]).await;
    let cfg = AwsConfig {
        fence_timeout: Duration::from_millis(10_000),
        fabric_fence: true,
        ..aws_cfg(f)
    };
    let reg = Ec2Registry::new(ec2_client(&proxy.endpoint).await, &cfg, f3.clone());
    let t = Instant::now();
    let fenced = reg.fence(fe(2), None, false).await.unwrap();
    let took = t.elapsed();
    assert_eq!(fenced.instances, vec![f2.clone()]);
    // Confirmed while EC2 still stops it: tagged fenced, `stopping` (as
    // EC2, the proxy, shows it; moto applies the stop when it is due).
    assert!(took < Duration::from_millis(2_500), "{took:?}");
    let i = describe(&ec2_client(&proxy.endpoint).await, &f2).await;
    assert_eq!(tag_of(&i, tags::STATE).as_deref(), Some("fenced"));
    assert_eq!(state(&i), InstanceStateName::Stopping);
    // The hub's admission list no longer names it for frontend2.
    let list = reg.admission(&Layout::default(), false).await.unwrap();
    assert!(!list.slots.contains_key("frontend2"), "{list:?}");
    assert_eq!(list.slots["frontend3"].instance, f3);
    // `chainwatch status` shows the power fence still going ...
    let shown = reg.power_fences();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0].slot, "frontend2");
    assert_eq!(shown[0].instances, vec![f2.clone()]);
    assert_eq!(shown[0].state, PowerFenceState::Stopping);
    assert_eq!(shown[0].done_ms, None);
    // ... which completes in the background ...
    let mut stopped = false;
    for _ in 0..100 {
        if state(&describe(&direct, &f2).await) == InstanceStateName::Stopped {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stopped, "EC2 never stopped the fenced instance");
    // ... and is announced there once EC2 (through the proxy) says so.
    let mut confirmed = None;
    for _ in 0..50 {
        if let Some(p) = reg
            .power_fences()
            .into_iter()
            .find(|p| p.state == PowerFenceState::Confirmed)
        {
            confirmed = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let confirmed = confirmed.expect("the power fence was never shown confirmed");
    let after = confirmed.done_ms.unwrap() - confirmed.sent_ms;
    assert!((2_900..10_000).contains(&after), "{confirmed:?}");
    // frontend1 without an Elastic IP to move has no fabric fence: its
    // fence waits for `stopped`.
    let reg2 = Ec2Registry::new(ec2_client(&proxy.endpoint).await, &cfg, f2);
    let t = Instant::now();
    let fenced = reg2.fence(fe(1), None, false).await.unwrap();
    assert_eq!(fenced.instances, vec![f1.clone()]);
    assert!(
        t.elapsed() >= Duration::from_millis(2_900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        state(&describe(&direct, &f1).await),
        InstanceStateName::Stopped
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_wait_for_stopped_is_bounded() {
    let Some(moto) = moto() else { return };
    let (proxy, direct, f2, reg) = two_through_a_proxy(&moto, "fleet-s").await;
    proxy.mode("stall");
    let started = Instant::now();
    let err = reg.fence_slot(fe(2), None, false).await.unwrap_err();
    let took = started.elapsed();
    let Ec2Error::NotStopped {
        instances, states, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(instances, &vec![f2.clone()]);
    assert_eq!(states, &vec!["stopping".to_string()]);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(err.to_string().contains("no takeover"), "{err}");
    // Not tagged fenced: the fence was never confirmed.
    let i = describe(&direct, &f2).await;
    assert_eq!(tag_of(&i, tags::STATE).as_deref(), Some("active"));
    assert!(reg.power_fences().is_empty(), "{:?}", reg.power_fences());
}

#[tokio::test(flavor = "current_thread")]
async fn a_power_fence_that_never_completes_is_shown_not_confirmed() {
    let Some(moto) = moto() else { return };
    let proxy = Ec2Proxy::start(&moto.endpoint);
    let direct = ec2_client(&moto.endpoint).await;
    let f = "fleet-nc";
    let f2 = launch(&direct, f, fe(2), &[]).await;
    let f3 = launch(&direct, f, fe(3), &[]).await;
    let cfg = AwsConfig {
        fence_timeout: Duration::from_millis(1_500),
        fabric_fence: true,
        ..aws_cfg(f)
    };
    let reg = Ec2Registry::new(ec2_client(&proxy.endpoint).await, &cfg, f3);
    proxy.mode("stall");
    // The fabric fence is confirmed (the tag reads back) ...
    let fenced = reg.fence(fe(2), None, false).await.unwrap();
    assert_eq!(fenced.instances, vec![f2.clone()]);
    // ... the power fence never is, and status says so.
    let mut shown = None;
    for _ in 0..60 {
        if let Some(p) = reg
            .power_fences()
            .into_iter()
            .find(|p| p.state != PowerFenceState::Stopping)
        {
            shown = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = shown.expect("the stalled power fence stayed `stopping` in status");
    assert_eq!(shown.state, PowerFenceState::NotConfirmed, "{shown:?}");
    assert_eq!(shown.instances, vec![f2]);
    assert!(
        shown.summary().contains("NOT CONFIRMED"),
        "{}",
        shown.summary()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn rejoin_at_the_tail() {
    let Some(moto) = moto() else { return };
    let ec2 = ec2_client(&moto.endpoint).await;
    let f = "fleet-r";
    let layout = Layout::default();
    launch(&ec2, f, fe(1), &[]).await;
    let f2 = launch(&ec2, f, fe(2), &[]).await;
    launch(&ec2, f, fe(3), &[]).await;
    // frontend2 keeps its ID while nothing is wrong.
    let reg = Ec2Registry::new(ec2.clone(), &aws_cfg(f), f2.clone());
    assert_eq!(
        reg.rejoin(&layout, fe(2)).await.unwrap(),
        Rejoin::Keep(fe(2))
    );
    // Tagged fenced: it goes to the tail (after 1 and 3).
    ec2.create_tags()
        .resources(&f2)
        .tags(Tag::builder().key(tags::STATE).value("fenced").build())
        .send()
        .await
        .unwrap();
    let Rejoin::Tail { slot, reason } = reg.rejoin(&layout, fe(2)).await.unwrap() else {
        panic!("expected a tail rejoin");
    };
    assert_eq!(slot, fe(4));
    assert!(reason.contains("fenced"), "{reason}");
    // Another running instance holds its ID: a second frontend3 boots.
    let dup = launch(&ec2, f, fe(3), &[]).await;
    let reg_dup = Ec2Registry::new(ec2.clone(), &aws_cfg(f), dup);
    let Rejoin::Tail { slot, reason } = reg_dup.rejoin(&layout, fe(3)).await.unwrap() else {
        panic!("expected a tail rejoin");
    };
    // IDs 1, 2 (fenced but still running), 3 are held by others.
    assert_eq!(slot, fe(4));
    assert!(reason.contains("held by another"), "{reason}");
    // A fenced instance that still runs holds its ID: with a fenced
    // frontend4 still running, the tail is 5.
    let f4 = launch(&ec2, f, fe(4), &[(tags::STATE, "fenced")]).await;
    assert_eq!(
        reg_dup.rejoin(&layout, fe(3)).await.unwrap(),
        Rejoin::Tail {
            slot: fe(5),
            reason: "frontend3 is held by another running instance".into()
        }
    );
    // Once it is stopped, its ID no longer counts as held: the tail is 4.
    ec2.stop_instances().instance_ids(&f4).send().await.unwrap();
    assert_eq!(
        reg_dup.rejoin(&layout, fe(3)).await.unwrap(),
        Rejoin::Tail {
            slot: fe(4),
            reason: "frontend3 is held by another running instance".into()
        }
    );
    // Full chain: nowhere to go.
    let layout3 = chainwatch::layout::Layout::new(&chainwatch::layout::LayoutConfig {
        max_frontends: 3,
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        reg.rejoin(&layout3, fe(2)).await.unwrap(),
        Rejoin::Full { .. }
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn own_tags_epochs_and_the_elastic_ip() {
    let Some(moto) = moto() else { return };
    let ec2 = ec2_client(&moto.endpoint).await;
    let f = "fleet-t";
    launch(&ec2, f, fe(1), &[(tags::EPOCH, "4")]).await;
    let f2 = launch(&ec2, f, fe(2), &[(tags::EPOCH, "7")]).await;
    let f3 = launch(&ec2, f, fe(3), &[]).await;
    // Backend epochs are separate.
    launch(&ec2, f, Slot::new(Role::Backend, 1), &[(tags::EPOCH, "40")]).await;
    let alloc = ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .unwrap();
    let alloc_id = alloc.allocation_id().unwrap().to_string();
    let cfg = AwsConfig {
        elastic_ip_allocation: Some(alloc_id.clone()),
        ..aws_cfg(f)
    };
    let reg2 = Ec2Registry::new(ec2.clone(), &cfg, f2.clone());
    let reg3 = Ec2Registry::new(ec2.clone(), &cfg, f3.clone());
    assert_eq!(reg3.next_epoch(Role::Frontend).await.unwrap(), 8);
    assert_eq!(reg3.next_epoch(Role::Backend).await.unwrap(), 41);
    reg3.tag_self(fe(2), 8).await.unwrap();
    let i = describe(&ec2, &f3).await;
    assert_eq!(tag_of(&i, tags::ID).as_deref(), Some("2"));
    assert_eq!(tag_of(&i, tags::EPOCH).as_deref(), Some("8"));
    assert_eq!(tag_of(&i, tags::STATE).as_deref(), Some("active"));
    assert_eq!(reg3.next_epoch(Role::Frontend).await.unwrap(), 9);
    // A poisoned epoch tag is an error, not a wrap-around (or a panic).
    let poisoned = launch(&ec2, f, fe(4), &[(tags::EPOCH, "18446744073709551615")]).await;
    let err = reg3.next_epoch(Role::Frontend).await.unwrap_err();
    assert!(
        matches!(&err, Ec2Error::EpochExhausted { instance, epoch: u64::MAX } if *instance == poisoned),
        "{err}"
    );

    let holder = |ec2: Client, alloc: String| async move {
        ec2.describe_addresses()
            .allocation_ids(alloc)
            .send()
            .await
            .unwrap()
            .addresses()[0]
            .instance_id()
            .map(str::to_string)
    };
    assert!(reg2.take_elastic_ip().await.unwrap());
    assert_eq!(holder(ec2.clone(), alloc_id.clone()).await, Some(f2));
    assert!(reg3.take_elastic_ip().await.unwrap());
    assert_eq!(holder(ec2.clone(), alloc_id.clone()).await, Some(f3));
    // Without an allocation configured there is nothing to move.
    let plain = Ec2Registry::new(ec2.clone(), &aws_cfg(f), "i-x".into());
    assert!(!plain.take_elastic_ip().await.unwrap());
}

/// A fence names the instance judged and no other: a slot taken since by
/// another instance is superseded (nothing stopped), a judged instance
/// that handed its slot over (released) or moved on is not stopped, and an
/// instance already fenced and stopping is confirmed without a second stop.
#[tokio::test(flavor = "current_thread")]
async fn a_fence_stops_the_judged_instance_alone() {
    let Some(moto) = moto() else { return };
    let ec2 = ec2_client(&moto.endpoint).await;
    let f = "fleet-j";
    let old = launch(&ec2, f, fe(1), &[("chainwatch:epoch", "3")]).await;
    let new = launch(&ec2, f, fe(1), &[("chainwatch:epoch", "4")]).await;
    let me = launch(&ec2, f, fe(3), &[]).await;
    let reg = Ec2Registry::new(ec2.clone(), &aws_cfg(f), me);
    let judged = |i: &str, e: u64| {
        Some(chainwatch::core::Judged {
            instance: i.to_string(),
            epoch: e,
        })
    };
    // The old holder judged, a new one at a higher epoch holds the slot:
    // superseded, and nothing is stopped.
    let err = reg
        .fence_slot(fe(1), judged(&old, 3).as_ref(), false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Ec2Error::Superseded { instance, epoch: 4, .. } if *instance == new),
        "{err}"
    );
    for id in [&old, &new] {
        assert_eq!(state(&describe(&ec2, id).await), InstanceStateName::Running);
    }
    // A holder that released its slot (a switchover) is never stopped.
    let f2 = launch(&ec2, f, fe(2), &[("chainwatch:state", "released")]).await;
    let fenced = reg
        .fence_slot(fe(2), judged(&f2, 0).as_ref(), false)
        .await
        .unwrap();
    assert!(fenced.instances.is_empty(), "{fenced:?}");
    assert_eq!(
        state(&describe(&ec2, &f2).await),
        InstanceStateName::Running
    );
    // The judged holder itself: stopped, alone.
    let fenced = reg
        .fence_slot(fe(1), judged(&new, 4).as_ref(), false)
        .await
        .unwrap();
    assert_eq!(fenced.instances, vec![new.clone()]);
    assert_eq!(
        state(&describe(&ec2, &new).await),
        InstanceStateName::Stopped
    );
    assert_eq!(
        state(&describe(&ec2, &old).await),
        InstanceStateName::Running
    );
}
