//! `chainwatch maint`: hold fences off an instance, or the whole fleet, for
//! patching. A successor never fences an instance in maintenance, so it
//! takes nothing over from it; a fleet-wide freeze holds every fence. The
//! `chainwatch:maint-until` tag carries the end: expiry needs nobody.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{CmdError, settings};
use crate::layout::escaped;
use crate::shell::aws::ec2::{self, Ec2Registry};

/// The longest maintenance one command sets: a freeze nobody ends must
/// still end.
const MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// `maint` actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Start maintenance: no fence (so no takeover) of the target until it
    /// ends.
    On {
        /// How long: `30m`, `2h` (at most 7 days).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Which instances.
        #[command(flatten)]
        target: Target,
    },
    /// End maintenance now.
    Off {
        /// Which instances.
        #[command(flatten)]
        target: Target,
    },
    /// The instances with a maintenance tag, active or expired.
    List,
}

/// The instances `on` and `off` act on.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// This instance [default: identity.instance_id].
    #[arg(long, conflicts_with = "fleet")]
    pub instance: Option<String>,
    /// Every instance of the fleet (a freeze: no fence at all).
    #[arg(long)]
    pub fleet: bool,
}

/// Run the action.
pub async fn main(config: Option<&Path>, action: &Action) -> Result<(), CmdError> {
    let s = settings(config)?;
    let registry = Ec2Registry::new(
        ec2::client(&s.config.aws).await,
        &s.config.aws,
        String::new(),
    );
    let fleet = &s.config.aws.fleet;
    let members = registry
        .members(&s.layout)
        .await
        .map_err(|e| CmdError::Other(format!("cannot read fleet {fleet:?} from EC2: {e}")))?;
    let targets = |t: &Target| -> Result<Vec<String>, CmdError> {
        if t.fleet {
            return Ok(members
                .iter()
                .filter(|m| m.state != "terminated")
                .map(|m| m.instance.clone())
                .collect());
        }
        let id = t
            .instance
            .clone()
            .or_else(|| s.config.identity.instance_id.clone())
            .ok_or_else(|| {
                CmdError::Other(
                    "which instance? pass --instance I (or --fleet), or set identity.instance_id"
                        .into(),
                )
            })?;
        if !members.iter().any(|m| m.instance == id) {
            return Err(CmdError::Other(format!(
                "{} is not an instance of fleet {fleet:?}",
                escaped(&id)
            )));
        }
        Ok(vec![id])
    };
    match action {
        Action::On { duration, target } => {
            let d = humantime::parse_duration(duration)
                .map_err(|e| CmdError::Other(format!("--for {duration:?}: {e} (e.g. 30m, 2h)")))?;
            if d.is_zero() || d > MAX {
                return Err(CmdError::Other(format!(
                    "--for {duration:?}: must be more than 0 and at most 7 days"
                )));
            }
            let ids = targets(target)?;
            let until = humantime::format_rfc3339_seconds(SystemTime::now() + d).to_string();
            registry
                .set_maintenance(&ids, Some(&until))
                .await
                .map_err(|e| CmdError::Other(e.to_string()))?;
            println!(
                "maintenance until {until} for {}: no fence of {} until then",
                ids.join(", "),
                if ids.len() == 1 { "it" } else { "them" }
            );
        }
        Action::Off { target } => {
            let ids = targets(target)?;
            registry
                .set_maintenance(&ids, None)
                .await
                .map_err(|e| CmdError::Other(e.to_string()))?;
            println!("maintenance ended for {}", ids.join(", "));
        }
        Action::List => {
            let now = SystemTime::now();
            for m in members.iter().filter(|m| m.maint_until.is_some()) {
                let until = m.maint_until.as_deref().unwrap_or("");
                let active = humantime::parse_rfc3339_weak(until).map_or(true, |t| t > now);
                println!(
                    "{:<22} {:<10} {:<16} until {} ({})",
                    escaped(&m.instance),
                    m.role.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                    m.role
                        .zip(m.id)
                        .map(|(r, id)| format!("{r}{id}"))
                        .unwrap_or_else(|| "-".into()),
                    escaped(until),
                    if active { "active" } else { "expired" }
                );
            }
        }
    }
    Ok(())
}
