//! The completions and man pages in `dist/` (shipped in the .deb) match the
//! command line: regenerate them with
//! `cargo run -- generate-assets --out dist` after changing it.

mod common;

use std::process::Command;

use common::bin;

#[test]
fn the_shipped_completions_and_man_pages_are_current() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["generate-assets", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    let mut compared = 0;
    for sub in ["completions", "man"] {
        let mut fresh: Vec<_> = std::fs::read_dir(dir.path().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        fresh.sort();
        let mut shipped: Vec<_> = std::fs::read_dir(dist.join(sub))
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        shipped.sort();
        assert_eq!(
            fresh, shipped,
            "dist/{sub} is stale: run `cargo run -- generate-assets --out dist`"
        );
        for name in fresh {
            let a = std::fs::read(dir.path().join(sub).join(&name)).unwrap();
            let b = std::fs::read(dist.join(sub).join(&name)).unwrap();
            assert!(
                a == b,
                "dist/{sub}/{name:?} is stale: run `cargo run -- generate-assets --out dist`"
            );
            compared += 1;
        }
    }
    // bash, zsh, fish, and a page for the command and each subcommand.
    assert!(compared > 10, "{compared}");
    let page = std::fs::read_to_string(dist.join("man/chainwatch-fleet.1")).unwrap();
    assert!(page.contains("\\-\\-check"), "{page}");
}
