//! The persisted state file (`<state_dir>/state.json`).
//!
//! Written once a node has taken over another ID, so that a restart keeps the
//! new ID instead of going back to the one in user-data. Writes are atomic:
//! a temporary file in the same directory is written and fsync'd, renamed
//! over the old one, and the directory is fsync'd. A crash leaves either the
//! old or the new file, never a torn one.

use std::fs;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::{Layout, Role, Slot};

/// File name inside the state directory.
pub const FILE_NAME: &str = "state.json";

/// Current schema version of the file.
pub const VERSION: u32 = 1;

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O failed.
    #[error(
        "state file {path}: {source}; check that the state directory exists and is writable by chainwatch"
    )]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid state file.
    #[error(
        "state file {path} is corrupt ({reason}); move it away to fall back to the ID in user-data"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What is persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    /// Schema version; must be [`VERSION`].
    pub version: u32,
    /// The node's role.
    pub role: Role,
    /// The ID the node holds now.
    pub id: u32,
    /// The per-role epoch of the last transition this node made (0: none).
    #[serde(default)]
    pub epoch: u64,
    /// Seconds since the Unix epoch of the last write.
    pub updated_unix: u64,
    /// The event of a takeover to this slot that is not yet in the outbox:
    /// written with the slot, so that a daemon killed mid-takeover and
    /// restarted completes it and announces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<crate::event::TransitionEvent>,
}

impl PersistedState {
    /// A state for `slot` written now.
    pub fn new(slot: Slot, epoch: u64, updated_unix: u64) -> Self {
        PersistedState {
            version: VERSION,
            role: slot.role,
            id: slot.id,
            epoch,
            updated_unix,
            pending: None,
        }
    }

    /// The slot it records.
    pub fn slot(&self) -> Slot {
        Slot::new(self.role, self.id)
    }
}

/// The path of the state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Read the state file; `Ok(None)` when there is none.
pub fn load(dir: &Path, layout: &Layout) -> Result<Option<PersistedState>, StateError> {
    let path = path(dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.clone(),
        reason,
    };
    let state: PersistedState =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if state.version != VERSION {
        return Err(corrupt(format!(
            "version {} is not the supported {VERSION}",
            state.version
        )));
    }
    layout
        .slot(state.role, state.id)
        .map_err(|e| corrupt(e.to_string()))?;
    if let Some(p) = &state.pending
        && (p.to_slot() != state.slot() || p.epoch != state.epoch)
    {
        return Err(corrupt(format!(
            "its pending event is for {} at epoch {}, the file for {} at epoch {}",
            p.to_slot(),
            p.epoch,
            state.slot(),
            state.epoch
        )));
    }
    Ok(Some(state))
}

/// Write the state file atomically and durably.
pub fn store(dir: &Path, state: &PersistedState) -> Result<(), StateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let final_path = path(dir);
    let mut body = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
        path: final_path.clone(),
        reason: e.to_string(),
    })?;
    body.push(b'\n');
    crate::fsio::write_atomic(&final_path, &body).map_err(io(&final_path))
}

/// File name of a fence's intent inside the state directory.
pub const FENCE_FILE: &str = "fence.json";

/// A fence this node decided on, recorded before its StopInstances and
/// cleared once the takeover it leads to has persisted its state (or it
/// was called off): a daemon killed in between finishes it at once when it
/// starts again, instead of judging the silent peer afresh (which, for a
/// peer it has never heard, waits out the startup grace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceIntent {
    /// The role of the slot fenced.
    pub role: Role,
    /// Its ID.
    pub id: u32,
    /// The instance judged dead.
    pub instance: String,
    /// Its epoch tag when judged.
    pub epoch: u64,
    /// When the fence was decided, ms since the Unix epoch.
    pub at_ms: u64,
}

impl FenceIntent {
    /// The slot fenced.
    pub fn slot(&self) -> Slot {
        Slot::new(self.role, self.id)
    }
}

/// Record `intent` atomically and durably.
pub fn store_fence(dir: &Path, intent: &FenceIntent) -> Result<(), StateError> {
    let path = dir.join(FENCE_FILE);
    let body = serde_json::to_vec(intent).map_err(|e| StateError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    crate::fsio::write_atomic(&path, &body).map_err(|source| StateError::Io { path, source })
}

/// The recorded fence, if any; a file that does not parse, or names a slot
/// outside the layout, is no intent (and is removed).
pub fn load_fence(dir: &Path, layout: &Layout) -> Option<FenceIntent> {
    let path = dir.join(FENCE_FILE);
    let bytes = fs::read(&path).ok()?;
    match serde_json::from_slice::<FenceIntent>(&bytes) {
        Ok(i) if layout.slot(i.role, i.id).is_ok() => Some(i),
        _ => {
            let _ = fs::remove_file(&path);
            None
        }
    }
}

/// Forget the recorded fence.
pub fn clear_fence(dir: &Path) {
    let _ = fs::remove_file(dir.join(FENCE_FILE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load() {
        let (_dir, sub) = crate::fsio::scratch("nested/state");
        let l = Layout::default();
        assert_eq!(load(&sub, &l).unwrap(), None);
        let s = PersistedState::new(Slot::new(Role::Backend, 1), 7, 1_700_000_000);
        store(&sub, &s).unwrap();
        assert_eq!(load(&sub, &l).unwrap(), Some(s.clone()));
        // Overwrite leaves no temporary file behind.
        let s2 = PersistedState::new(Slot::new(Role::Backend, 2), 8, 1_700_000_001);
        store(&sub, &s2).unwrap();
        assert_eq!(load(&sub, &l).unwrap(), Some(s2));
        let names: Vec<_> = fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![FILE_NAME.to_string()]);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path(&sub)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_files_are_reported_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::default();
        for body in [
            "",
            "{",
            r#"{"version":2,"role":"backend","id":1,"updated_unix":0}"#,
            r#"{"version":1,"role":"backend","id":9,"updated_unix":0}"#,
            r#"{"version":1,"role":"db","id":1,"updated_unix":0}"#,
            r#"{"version":1,"role":"backend","id":1,"updated_unix":0,"x":1}"#,
        ] {
            fs::write(path(dir.path()), body).unwrap();
            let err = load(dir.path(), &l).unwrap_err().to_string();
            assert!(err.contains("move it away"), "{body}: {err}");
        }
    }

    #[test]
    fn a_fence_intent_round_trips_and_a_bad_one_is_dropped() {
        let (_dir, sub) = crate::fsio::scratch("fence");
        std::fs::create_dir_all(&sub).unwrap();
        let l = Layout::default();
        assert_eq!(load_fence(&sub, &l), None);
        let i = FenceIntent {
            role: Role::Frontend,
            id: 1,
            instance: "i-0abc".into(),
            epoch: 4,
            at_ms: 1_000,
        };
        store_fence(&sub, &i).unwrap();
        assert_eq!(load_fence(&sub, &l), Some(i.clone()));
        clear_fence(&sub);
        assert_eq!(load_fence(&sub, &l), None);
        // Outside the layout: no intent, and the file is gone.
        store_fence(&sub, &FenceIntent { id: 999, ..i }).unwrap();
        assert_eq!(load_fence(&sub, &l), None);
        assert!(!sub.join(FENCE_FILE).exists());
    }
}
