//! The floors of ARCHITECTURE.md, checked from the source: every module of
//! `src/` sits on a floor, and every `crate::` or `super::` path in it
//! points to a module on a lower floor. So there is no import circle, and a
//! new module must be given its place here (and in ARCHITECTURE.md).
//!
//! A room is a top-level file of `src/` or a folder (`core/`, `shell/`,
//! `shell/aws/`, ...): the folder a module's file lives in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// ARCHITECTURE.md's floors, top first.
const FLOORS: &[&[&str]] = &[
    &["main", "lib", "cmd"],
    &["shell", "iam", "cloudinit"],
    &["shell/aws", "shell/members"],
    &["state"],
    &["config", "event"],
    &["core"],
    &["admission", "fleet", "userdata", "gtid", "holders"],
    &[
        "clock",
        "layout",
        "template",
        "fsio",
        "backoff",
        "crashpoint",
    ],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `shell/aws/ec2.rs` is `shell::aws::ec2`,
/// `shell/mod.rs` is `shell`, `lib.rs` is the crate root.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut m: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        m.pop();
    }
    m
}

/// The room of a file: its folder under `src/`, or its stem at the top.
fn room_of_file(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.len() == 1 {
        return rel.with_extension("").to_string_lossy().into_owned();
    }
    let folder = &parts[..parts.len() - 1];
    // A module's unit tests live in its folder's `tests/`: the same room.
    let folder: Vec<&String> = folder.iter().filter(|p| *p != "tests").collect();
    folder
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("/")
}

/// The room of a module path: the folder of the longest prefix that is a
/// file (`shell::members::wire::Key` is in `shell/members/wire.rs`).
fn room_of_module(path: &[String]) -> Option<String> {
    for k in (1..=path.len()).rev() {
        let base = src().join(path[..k].join("/"));
        for f in [base.with_extension("rs"), base.join("mod.rs")] {
            if f.is_file() {
                return Some(room_of_file(&f));
            }
        }
    }
    None
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(|i| expand(i).into_iter().map(move |e| format!("{prefix}{e}")))
        .collect()
}

/// The paths a file names from `crate::` and `super::`, as module paths.
fn references(file: &Path) -> Vec<Vec<String>> {
    let text: String = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let me = module_of(file);
    let mut out = Vec::new();
    for anchor in ["crate::", "super::"] {
        let mut rest = text.as_str();
        while let Some(i) = rest.find(anchor) {
            let before = rest[..i].chars().last();
            rest = &rest[i..];
            // A path segment, not the tail of another word (`my_crate::`)
            // or a `super::super::` counted twice.
            let standalone = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            // The path: word characters, `::` and globs, and within a brace
            // group also commas and white space.
            let (mut end, mut depth) = (0, 0);
            for (j, c) in rest.char_indices() {
                let part = match c {
                    '{' => {
                        depth += 1;
                        true
                    }
                    '}' if depth > 0 => {
                        depth -= 1;
                        true
                    }
                    c if c.is_alphanumeric() || c == '_' || c == ':' || c == '*' => true,
                    c if c == ',' || c.is_whitespace() => depth > 0,
                    _ => false,
                };
                if !part {
                    break;
                }
                end = j + c.len_utf8();
            }
            let tree = &rest[..end];
            rest = &rest[anchor.len()..];
            if !standalone {
                continue;
            }
            for path in expand(tree) {
                // `use super::*;` is how an inline test module takes in the
                // module around it (this reader does not track inline
                // modules): the same room.
                if path == "super::*" {
                    continue;
                }
                let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
                let mut base: Vec<String> = Vec::new();
                if segs.first() == Some(&"crate") {
                    segs.remove(0);
                } else {
                    // `super::` is the parent of this file's module (of
                    // `mod.rs`'s folder module too).
                    base = me.clone();
                    while segs.first() == Some(&"super") {
                        segs.remove(0);
                        base.pop();
                    }
                }
                base.extend(
                    segs.iter()
                        .filter(|s| **s != "self" && **s != "*")
                        .map(|s| s.to_string()),
                );
                if !base.is_empty() {
                    out.push(base);
                }
            }
        }
    }
    out
}

#[test]
fn every_module_imports_only_floors_below_its_own() {
    let floor: BTreeMap<&str, usize> = FLOORS
        .iter()
        .enumerate()
        .flat_map(|(i, rooms)| rooms.iter().map(move |r| (*r, i)))
        .collect();
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut edges: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut unplaced = BTreeSet::new();
    for f in &all {
        let from = room_of_file(f);
        if !floor.contains_key(from.as_str()) {
            unplaced.insert(from.clone());
        }
        for path in references(f) {
            if let Some(to) = room_of_module(&path)
                && to != from
            {
                let rel = f.strip_prefix(src()).unwrap().display().to_string();
                edges.insert((from.clone(), to, rel));
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "rooms without a floor (add them to FLOORS and ARCHITECTURE.md): {unplaced:?}"
    );
    assert!(
        edges.len() > 40,
        "only {} imports found: the reader is broken",
        edges.len()
    );
    let upward: Vec<String> = edges
        .iter()
        .filter(|(from, to, _)| {
            let (a, b) = (floor[from.as_str()], floor.get(to.as_str()).copied());
            b.is_none_or(|b| b <= a)
        })
        .map(|(from, to, file)| format!("{file}: {from} -> {to}"))
        .collect();
    assert!(
        upward.is_empty(),
        "imports that point up or sideways:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_reader_sees_grouped_and_relative_imports() {
    assert_eq!(
        expand("crate::shell::{alert::Notifier, aws::{ec2, budget}}"),
        [
            "crate::shell::alert::Notifier",
            "crate::shell::aws::ec2",
            "crate::shell::aws::budget"
        ]
    );
    // shell/members.rs names the prober through `super::`: the shell's
    // room, not its own folder's.
    let members = src().join("shell/members.rs");
    assert_eq!(room_of_file(&members), "shell");
    assert!(
        references(&members).iter().any(|p| p
            == &[
                "shell".to_string(),
                "prober".to_string(),
                "IcmpProber".to_string()
            ]),
        "{:?}",
        references(&members)
    );
    assert_eq!(
        room_of_module(&[
            "shell".into(),
            "members".into(),
            "wire".into(),
            "Key".into()
        ]),
        Some("shell/members".into())
    );
    assert_eq!(room_of_file(&src().join("core/tests/plan.rs")), "core");
}

#[test]
fn no_file_of_the_core_is_longer_than_500_lines() {
    let mut all = Vec::new();
    files(&src().join("core"), &mut all);
    assert!(all.len() >= 6, "the core's files: {all:?}");
    let long: Vec<String> = all
        .iter()
        .map(|f| (f, std::fs::read_to_string(f).unwrap().lines().count()))
        .filter(|(_, n)| *n > 500)
        .map(|(f, n)| format!("{}: {n} lines", f.display()))
        .collect();
    assert!(long.is_empty(), "split these by concern: {long:?}");
}

#[test]
fn the_code_map_names_every_folder_of_src_and_only_those() {
    let map =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    fn dirs(dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                let rel = p.strip_prefix(src()).unwrap().display().to_string();
                out.insert(format!("src/{rel}/"));
                dirs(&p, out);
            }
        }
    }
    let mut have = BTreeSet::from(["src/".to_string()]);
    dirs(&src(), &mut have);
    let named: BTreeSet<String> = map
        .split('`')
        .filter(|s| s.starts_with("src/") && s.ends_with('/'))
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = have.difference(&named).collect();
    let stale: Vec<&String> = named.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "folders the code map does not name: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "folders the code map names that do not exist: {stale:?}"
    );
}
