//! `chainwatch config check`: validate the config and the PKI, and prove
//! the EC2 permissions with `DryRun` calls, before a node runs.

use std::path::Path;

use super::{CmdError, settings};
use crate::config::DEFAULT_PATH;
use crate::layout::Role;
use crate::shell::aws::ec2::{self, Ec2Registry, Permission};
use crate::shell::openvpn;

/// `config` actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Validate the config file and the PKI files, and prove the IAM
    /// permissions with DryRun calls of StopInstances, CreateTags,
    /// DescribeInstances and (with an Elastic IP) AssociateAddress.
    Check(CheckArgs),
}

/// Arguments of `config check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The role whose PKI files to check [default: both; the check passes
    /// when the PKI is complete for at least one].
    #[arg(long, value_enum)]
    pub role: Option<Role>,
    /// The instance the DryRun calls name [default: identity.instance_id,
    /// else the first instance of the fleet].
    #[arg(long)]
    pub instance: Option<String>,
    /// Skip the EC2 permission proof (no API calls).
    #[arg(long)]
    pub offline: bool,
}

/// Run the checks, print one line each; an error when any fails.
pub async fn main(config: Option<&Path>, action: &Action) -> Result<(), CmdError> {
    let Action::Check(args) = action;
    let s = settings(config)?;
    let mut failed = Vec::new();
    let source = s
        .source
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("built-in defaults ({DEFAULT_PATH} is absent)"));
    println!("ok    config: {source}");

    let vpn = crate::shell::openvpn::VpnSettings::from_settings(&s);
    let roles = match args.role {
        Some(r) => vec![r],
        None => vec![Role::Frontend, Role::Backend],
    };
    let mut complete = Vec::new();
    for role in &roles {
        match openvpn::check_pki(&vpn, *role) {
            Ok(()) => {
                println!("ok    PKI for {role} ({})", s.config.vpn.pki_dir.display());
                complete.push(*role);
            }
            Err(e) => println!(
                "{}  PKI for {role}: {e}",
                if args.role.is_some() { "FAIL" } else { "miss" }
            ),
        }
    }
    if complete.is_empty() {
        failed.push("PKI".to_string());
    }
    for role in complete.iter().copied().chain(args.role) {
        if let Err(e) = openvpn::render(&vpn, crate::layout::Slot::new(role, 1)) {
            println!("FAIL  OpenVPN templates: {e}");
            failed.push("templates".into());
            break;
        }
    }

    if args.offline {
        println!("skip  EC2 permissions (--offline)");
    } else {
        let registry = Ec2Registry::new(
            ec2::client(&s.config.aws).await,
            &s.config.aws,
            String::new(),
        );
        let target = match args
            .instance
            .clone()
            .or_else(|| s.config.identity.instance_id.clone())
        {
            Some(i) => Some(i),
            None => match registry.fleet_instances(None).await {
                Ok(list) => list
                    .iter()
                    .find_map(|i| i.instance_id().map(str::to_string)),
                Err(e) => {
                    println!("FAIL  EC2: cannot list fleet {:?}: {e}", s.config.aws.fleet);
                    failed.push("EC2".into());
                    None
                }
            },
        };
        match target {
            None if failed.iter().any(|f| f == "EC2") => {}
            None => {
                println!(
                    "FAIL  EC2 permissions: no instance of fleet {:?} to name; pass --instance",
                    s.config.aws.fleet
                );
                failed.push("EC2".into());
            }
            Some(target) => {
                for (action, verdict) in registry.prove_permissions(&target).await {
                    match verdict {
                        Permission::Granted => println!("ok    {action} on {target} (DryRun)"),
                        Permission::Denied(why) => {
                            println!(
                                "FAIL  {action} on {target}: {why}; attach the policy of `chainwatch iam-policy --role <role>` to the instance profile"
                            );
                            failed.push(action.to_string());
                        }
                        Permission::Unknown(why) => {
                            println!("FAIL  {action} on {target} not proven: {why}");
                            failed.push(action.to_string());
                        }
                    }
                }
            }
        }
    }
    if !args.offline {
        hub_path(&s, args.instance.as_deref(), &mut failed).await;
    }
    if failed.is_empty() {
        println!("config check passed");
        Ok(())
    } else {
        Err(CmdError::Other(format!(
            "config check failed: {}",
            failed.join(", ")
        )))
    }
}

/// The ICMP path to the hub's VPC address, from here: how a watcher of the
/// hub judges it besides the overlay. A security group without ICMP echo
/// between the members' VPC addresses fails it.
async fn hub_path(s: &crate::config::Settings, instance: Option<&str>, failed: &mut Vec<String>) {
    let me = instance
        .map(str::to_string)
        .or_else(|| s.config.identity.instance_id.clone())
        .unwrap_or_default();
    let registry = Ec2Registry::new(ec2::client(&s.config.aws).await, &s.config.aws, me);
    let hub = crate::layout::Slot::new(Role::Frontend, 1);
    let addr = match registry.underlay_of(hub).await {
        Ok(a) => a,
        Err(e) => {
            println!("skip  ICMP path to the hub: {e}");
            return;
        }
    };
    let prober = match crate::shell::prober::IcmpProber::new(s.config.probe.attempts) {
        Ok(p) => p,
        Err(e) => {
            println!("FAIL  ICMP path to the hub ({addr}): cannot open an ICMP socket: {e}");
            failed.push("ICMP".into());
            return;
        }
    };
    let wait = std::time::Duration::from_secs(1);
    match prober.probe(addr, wait).await {
        Some(rtt) => println!(
            "ok    ICMP echo to the hub's VPC address {addr} answers ({:.1} ms)",
            rtt.as_secs_f64() * 1000.0
        ),
        None => {
            println!(
                "FAIL  ICMP echo to the hub's VPC address {addr} unanswered in {wait:?}: allow ICMP echo request and reply between the members' VPC addresses in their security group (docs/src/deploy-aws.md)"
            );
            failed.push("ICMP".into());
        }
    }
}
