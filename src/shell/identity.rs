//! Boot identity: which slot this node holds when it starts.
//!
//! The role and the initial ID come from the EC2 user-data (see
//! [`crate::userdata`]), read through IMDSv2 with the AWS SDK's own IMDS
//! client, or from a file when configured. Once the node has taken over
//! another ID, the persisted state file (see [`crate::state`]) wins over the
//! user-data; it must agree on the role.

use std::path::PathBuf;
use std::time::Duration;

use aws_config::imds;

use crate::clock::unix_ms;
use crate::config::{IdentityConfig, Settings};
use crate::layout::{Layout, Role, Slot};
use crate::shell::alert::Notifier;
use crate::shell::aws::ec2::{self, Ec2Registry, Rejoin};
use crate::state::{self, PersistedState, StateError};
use crate::userdata::{self, UserDataError};

/// Errors determining the boot identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The configured user-data file could not be read.
    #[error("cannot read user-data file {path}: {source}; fix identity.user_data_file")]
    UserDataFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// IMDS could not be reached or refused the request.
    #[error(
        "cannot read {what} from the instance metadata service: {message}; on EC2 enable IMDS (IMDSv2 is used), elsewhere set identity.user_data_file"
    )]
    Imds {
        /// What was being read.
        what: &'static str,
        /// The SDK's error chain.
        message: String,
    },
    /// The instance has no user-data.
    #[error(
        "this instance has no user-data; launch it with user-data that has a `# chainwatch: role=<role> id=<n>` line"
    )]
    NoUserData,
    /// The user-data is malformed.
    #[error(transparent)]
    UserData(#[from] UserDataError),
    /// The state file is unreadable or corrupt.
    #[error(transparent)]
    State(#[from] StateError),
    /// The state file and the user-data disagree on the role.
    #[error(
        "state file {path} says this node is a {state} but its user-data says {user_data}; a node never changes role: move the state file away if the instance was re-purposed"
    )]
    RoleChanged {
        /// The state file.
        path: PathBuf,
        /// Role in the state file.
        state: Role,
        /// Role in user-data.
        user_data: Role,
    },
}

/// Where the boot slot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The user-data's index line.
    UserData,
    /// The persisted state file (the node took over an ID earlier).
    StateFile,
}

impl Source {
    /// Lowercase name for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::UserData => "user-data",
            Source::StateFile => "state-file",
        }
    }
}

/// The identity a node boots with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootIdentity {
    /// The slot it holds.
    pub slot: Slot,
    /// Where that came from.
    pub source: Source,
    /// The slot in user-data (the initial one).
    pub user_data: Slot,
    /// The EC2 instance ID, when read from IMDS.
    pub instance_id: Option<String>,
    /// The epoch of the last transition, from the state file (0: none).
    pub epoch: u64,
}

/// Combine the user-data slot and the persisted state: the state wins once
/// present, but never across roles.
pub fn resolve(
    user_data: Slot,
    persisted: Option<&PersistedState>,
    state_path: PathBuf,
) -> Result<(Slot, Source, u64), IdentityError> {
    match persisted {
        None => Ok((user_data, Source::UserData, 0)),
        Some(s) if s.role != user_data.role => Err(IdentityError::RoleChanged {
            path: state_path,
            state: s.role,
            user_data: user_data.role,
        }),
        Some(s) => Ok((s.slot(), Source::StateFile, s.epoch)),
    }
}

/// User-data bytes and, from IMDS, the instance ID.
pub async fn fetch_user_data(
    cfg: &IdentityConfig,
) -> Result<(Vec<u8>, Option<String>), IdentityError> {
    if let Some(path) = &cfg.user_data_file {
        let bytes = std::fs::read(path).map_err(|source| IdentityError::UserDataFile {
            path: path.clone(),
            source,
        })?;
        return Ok((bytes, cfg.instance_id.clone()));
    }
    let client = imds_client(cfg)?;
    let user_data = match client.get("/latest/user-data").await {
        Ok(s) => s.as_ref().as_bytes().to_vec(),
        Err(imds::client::error::ImdsError::ErrorResponse(r))
            if r.response().status().as_u16() == 404 =>
        {
            return Err(IdentityError::NoUserData);
        }
        Err(e) => return Err(imds_error("user-data", &e)),
    };
    let instance_id = client
        .get("/latest/meta-data/instance-id")
        .await
        .map_err(|e| imds_error("the instance ID", &e))?
        .as_ref()
        .to_string();
    Ok((user_data, Some(instance_id)))
}

fn imds_client(cfg: &IdentityConfig) -> Result<imds::Client, IdentityError> {
    let mut builder = imds::Client::builder()
        .max_attempts(3)
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(2));
    if let Some(endpoint) = &cfg.imds_endpoint {
        builder = builder
            .endpoint(endpoint)
            .map_err(|e| IdentityError::Imds {
                what: "anything",
                message: format!("bad endpoint {endpoint:?}: {e}"),
            })?;
    }
    Ok(builder.build())
}

fn imds_error(what: &'static str, e: &dyn std::error::Error) -> IdentityError {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    IdentityError::Imds { what, message }
}

/// Determine the boot identity: user-data (file or IMDS), then the state
/// file.
pub async fn boot(settings: &Settings) -> Result<BootIdentity, IdentityError> {
    let (raw, instance_id) = fetch_user_data(&settings.config.identity).await?;
    from_parts(&raw, instance_id, settings)
}

/// The part of [`boot`] after the user-data has been fetched.
pub fn from_parts(
    raw: &[u8],
    instance_id: Option<String>,
    settings: &Settings,
) -> Result<BootIdentity, IdentityError> {
    let layout: &Layout = &settings.layout;
    let user_data = userdata::parse(raw, layout)?;
    let dir = &settings.config.node.state_dir;
    let persisted = state::load(dir, layout)?;
    let (slot, source, epoch) = resolve(user_data, persisted.as_ref(), state::path(dir))?;
    Ok(BootIdentity {
        slot,
        source,
        user_data,
        instance_id,
        epoch,
    })
}

/// Write the state file: this node holds `slot` at `epoch`.
fn persist(s: &Settings, slot: Slot, epoch: u64) -> Result<(), String> {
    let now = unix_ms(std::time::SystemTime::now()) / 1000;
    state::store(
        &s.config.node.state_dir,
        &PersistedState::new(slot, epoch, now),
    )
    .map_err(|e| e.to_string())
}

/// Settle the slot and epoch this node starts with, against EC2: a fenced
/// instance, or one whose ID someone else holds, rejoins at the tail of its
/// chain (a transition of its own, with a new epoch, persisted); a node that
/// keeps its slot keeps its epoch (the higher of its state's and its tag's).
/// Then this instance is tagged with both. EC2 must answer before anything
/// else happens (each call is retried a few times).
pub async fn settle(
    s: &Settings,
    registry: &Ec2Registry,
    boot: &mut BootIdentity,
    interrupted: bool,
) -> Result<(), String> {
    // The registry is authoritative and the state file a cache: an
    // instance that EC2 shows as the admitted holder of a slot resumes it,
    // at its epoch, with no fence, no new epoch and no event (its state
    // file may be lost, or older). Unless the last run was killed in a
    // takeover, which is finished first (the state file holds it).
    if !interrupted
        && let Some((slot, epoch)) =
            ec2::retry("own tags", || registry.own_holding(boot.slot.role)).await?
    {
        if (slot, epoch) != (boot.slot, boot.epoch) {
            tracing::warn!(
                booted = %boot.slot,
                state_epoch = boot.epoch,
                %slot,
                epoch,
                "EC2 shows this instance as the holder of {slot} at epoch {epoch}: resuming it (the state file said {} at epoch {})",
                boot.slot,
                boot.epoch
            );
            persist(s, slot, epoch)?;
        }
        boot.slot = slot;
        boot.epoch = epoch;
        // The same tags again, so that a fresh instance carries its epoch
        // and state tags too (launch sets only the fleet, role and ID).
        return ec2::retry("tagging this instance", || registry.tag_self(slot, epoch)).await;
    }
    // Rejoin: a fenced instance, or one whose ID someone else holds, goes to
    // the tail. EC2 must answer before anything else happens.
    let decision = ec2::retry("rejoin check", || registry.rejoin(&s.layout, boot.slot)).await?;
    let slot = match decision {
        Rejoin::Keep(slot) => slot,
        Rejoin::Tail { slot, reason } => {
            tracing::warn!(old = %boot.slot, new = %slot, "{reason}: rejoining at the tail of the chain as {slot}");
            // The outbox too: the delivery task, started later, sends it.
            let outbox = super::announce::open_outbox(s)
                .map_err(|e| tracing::error!("cannot open the outbox for the rejoin alert: {e}"))
                .ok()
                .map(|o| (std::sync::Arc::new(o), None));
            if let Some(n) = Notifier::from_settings(s, Some(registry.instance_id()), outbox) {
                n.raise(
                    "rejoin",
                    boot.slot.common_name(),
                    slot.common_name(),
                    None,
                    format!("{reason}: rejoined at the tail of the chain as {slot}"),
                );
            }
            slot
        }
        Rejoin::Full { reason } => {
            return Err(format!(
                "{reason}, and every ID of the {} chain is held: raise layout.max_{}s or stop this instance",
                boot.slot.role, boot.slot.role
            ));
        }
    };
    // A rejoin is a transition of its own and gets a new epoch; a node that
    // keeps its slot keeps its epoch.
    let epoch = if slot != boot.slot {
        ec2::retry("epoch", || registry.next_epoch(slot.role)).await?
    } else {
        boot.epoch
            .max(ec2::retry("own epoch", || registry.own_epoch()).await?)
    };
    let rejoined = slot != boot.slot;
    if rejoined {
        persist(s, slot, epoch)?;
        boot.slot = slot;
    }
    boot.epoch = epoch;
    if !rejoined {
        return ec2::retry("tagging this instance", || registry.tag_self(slot, epoch)).await;
    }
    // A rejoin connects as a slot the hub has not admitted yet: like a
    // taker, it waits until EC2 shows its new tags and the hub has reread
    // its list, so that its first handshake is admitted (a refused one is
    // retried only after the client's hand-window).
    ec2::retry("tagging this instance", || {
        registry.tag_self_confirmed(slot, epoch)
    })
    .await?;
    tokio::time::sleep(crate::admission::SETTLE).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_wins_but_never_across_roles() {
        let ud = Slot::new(Role::Frontend, 3);
        assert_eq!(
            resolve(ud, None, "s".into()).unwrap(),
            (ud, Source::UserData, 0)
        );
        let st = PersistedState::new(Slot::new(Role::Frontend, 2), 4, 0);
        assert_eq!(
            resolve(ud, Some(&st), "s".into()).unwrap(),
            (Slot::new(Role::Frontend, 2), Source::StateFile, 4)
        );
        let st = PersistedState::new(Slot::new(Role::Backend, 2), 4, 0);
        let err = resolve(ud, Some(&st), "/var/lib/chainwatch/state.json".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/var/lib/chainwatch/state.json"), "{err}");
        assert!(err.contains("never changes role"), "{err}");
    }

    #[test]
    fn from_parts_reads_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::default();
        config.node.state_dir = dir.path().to_path_buf();
        let settings = Settings {
            layout: config.validate().unwrap(),
            config,
            source: None,
        };
        let raw = b"#cloud-config\n# chainwatch: role=backend id=3\n";
        let id = from_parts(raw, Some("i-1".into()), &settings).unwrap();
        assert_eq!(id.slot, Slot::new(Role::Backend, 3));
        assert_eq!(id.source, Source::UserData);
        state::store(
            dir.path(),
            &PersistedState::new(Slot::new(Role::Backend, 1), 2, 0),
        )
        .unwrap();
        let id = from_parts(raw, None, &settings).unwrap();
        assert_eq!(id.slot, Slot::new(Role::Backend, 1));
        assert_eq!(id.user_data, Slot::new(Role::Backend, 3));
        assert_eq!((id.source, id.epoch), (Source::StateFile, 2));
        let err = from_parts(b"#cloud-config\n", None, &settings).unwrap_err();
        assert!(matches!(
            err,
            IdentityError::UserData(UserDataError::Missing)
        ));
    }
}
