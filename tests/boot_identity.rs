//! Boot identity through IMDSv2: the AWS SDK's own IMDS client against the
//! token-flow stand-in in `tests/support/imds.py`.

mod common;

use chainwatch::config::{Config, Settings};
use chainwatch::layout::{Role, Slot};
use chainwatch::shell::identity::{self, IdentityError, Source};
use chainwatch::state::{self, PersistedState};
use chainwatch::userdata::UserDataError;
use common::{Imds, have, prerequisite};

fn settings(endpoint: &str, state_dir: &std::path::Path) -> Settings {
    let mut config = Config::default();
    config.identity.imds_endpoint = Some(endpoint.to_string());
    config.node.state_dir = state_dir.to_path_buf();
    Settings {
        layout: config.validate().unwrap(),
        config,
        source: None,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn identity_comes_from_user_data_over_imdsv2() {
    if !prerequisite(have("python3"), "python3 for the IMDS stand-in") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ud = dir.path().join("user-data");
    std::fs::write(
        &ud,
        "#cloud-config\n# chainwatch: role=backend id=3\npackage_update: true\n",
    )
    .unwrap();
    let imds = Imds::start(&ud, None, "127.0.0.1");
    let s = settings(&imds.endpoint, &dir.path().join("state"));

    let id = identity::boot(&s).await.unwrap();
    assert_eq!(id.slot, Slot::new(Role::Backend, 3));
    assert_eq!(id.source, Source::UserData);
    assert_eq!(id.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    let stats = imds.stats();
    assert!(stats["tokens_issued"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["served"].as_u64().unwrap() >= 2, "{stats}");

    // After a takeover the state file wins.
    state::store(
        &s.config.node.state_dir,
        &PersistedState::new(Slot::new(Role::Backend, 2), 5, 0),
    )
    .unwrap();
    let id = identity::boot(&s).await.unwrap();
    assert_eq!(id.slot, Slot::new(Role::Backend, 2));
    assert_eq!(id.user_data, Slot::new(Role::Backend, 3));
    assert_eq!((id.source, id.epoch), (Source::StateFile, 5));

    // Malformed user-data names the line and the problem.
    std::fs::write(&ud, "#cloud-config\n# chainwatch: role=backend id=07\n").unwrap();
    let err = identity::boot(&s).await.unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::UserData(UserDataError::Value { line: 2, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("\"07\""), "{err}");

    // No user-data at all.
    std::fs::remove_file(&ud).unwrap();
    let err = identity::boot(&s).await.unwrap_err();
    assert!(matches!(err, IdentityError::NoUserData), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_unreachable_imds_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 of loopback.
    let s = settings("http://127.0.0.1:9", dir.path());
    let err = identity::boot(&s).await.unwrap_err().to_string();
    assert!(err.contains("instance metadata service"), "{err}");
    assert!(err.contains("identity.user_data_file"), "{err}");
}
