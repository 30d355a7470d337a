//! The README stays short and true (issue 28), checked with the standard
//! library only:
//!
//! * it has at most 200 lines;
//! * every figure in its prose appears in BENCHMARKS.md as it is written
//!   there. A figure is a decimal number (`0`, `1.22`, `10,556`) that is
//!   not part of a word, an address or a version (the character before it
//!   is not a letter, a digit, `.`, `-` or `_`), followed by one of the
//!   units `ms`, `s`, `min`, `%`, `kB`, `MB`, `MiB`, `GiB`, `B` or the word
//!   `lost`, with or without a space, and then by no letter or digit. So
//!   `1.22 s`, `0.27 %` and `0 lost` are figures; `p50`, `ID 1`,
//!   `UDP 7947` and `192.168.21.1` are not. Fenced code blocks are not
//!   prose: the quick start's run times and the demo's output are this
//!   machine's, not the benchmark's;
//! * every link into `docs/` points to an existing file;
//! * the quick start is two commands, the demo and the test command that
//!   `.ci/run` runs.

use std::fs;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    fs::read_to_string(root().join(name)).unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
}

/// The units a figure may carry; longer spellings first, so `ms` is not
/// read as `m` and `MiB` not as `M`.
const UNITS: [&str; 10] = ["lost", "min", "MiB", "GiB", "ms", "kB", "MB", "s", "%", "B"];

/// The text outside fenced code blocks.
fn prose(markdown: &str) -> String {
    let mut out = String::new();
    let mut open: Option<String> = None;
    for line in markdown.lines() {
        let t = line.trim_start();
        let first = t.chars().next().unwrap_or(' ');
        let marker: String = t.chars().take_while(|&c| c == first).collect();
        let is_fence = (first == '`' || first == '~') && marker.len() >= 3;
        let closes = matches!(&open, Some(m) if is_fence
            && marker.starts_with(m.as_str())
            && t.trim() == marker);
        if closes {
            open = None;
        } else if open.is_none() {
            if is_fence {
                open = Some(marker);
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Whether `c` may stand right before a figure.
fn starts_figure_after(c: Option<char>) -> bool {
    !c.is_some_and(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ','))
}

/// The figures of `text`, each as written (`"1.22 s"`).
fn figures(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let before = i.checked_sub(1).map(|b| chars[b]);
        if !chars[i].is_ascii_digit() || !starts_figure_after(before) {
            i += 1;
            continue;
        }
        // The number: digits, with `,` thousands and one `.` fraction.
        let mut j = i;
        while j < chars.len()
            && (chars[j].is_ascii_digit()
                || (matches!(chars[j], '.' | ',')
                    && chars.get(j + 1).is_some_and(char::is_ascii_digit)))
        {
            j += 1;
        }
        let number: String = chars[i..j].iter().collect();
        let spaced = chars.get(j) == Some(&' ');
        let at = if spaced { j + 1 } else { j };
        let rest: String = chars[at.min(chars.len())..].iter().take(4).collect();
        let unit = UNITS.iter().find(|u| {
            rest.starts_with(*u)
                && !chars
                    .get(at + u.chars().count())
                    .is_some_and(|c| c.is_alphanumeric())
        });
        if let Some(unit) = unit {
            let sep = if spaced { " " } else { "" };
            out.push(format!("{number}{sep}{unit}"));
        }
        i = j;
    }
    out
}

/// Whether `figure` occurs in `text` as a figure of its own (not inside a
/// longer number or word).
fn occurs(text: &str, figure: &str) -> bool {
    text.match_indices(figure).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + figure.len()..].chars().next();
        starts_figure_after(before) && !after.is_some_and(|c| c.is_alphanumeric())
    })
}

#[test]
fn the_readme_is_at_most_200_lines() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 200,
        "README.md has {lines} lines; at most 200: move the detail into the book (docs/src)"
    );
}

#[test]
fn every_figure_in_the_readme_is_quoted_from_benchmarks() {
    let readme = prose(&read("README.md"));
    let bench = read("BENCHMARKS.md");
    let found = figures(&readme);
    assert!(
        found.len() >= 3,
        "the README quotes {} figures ({found:?}); it shows three headline figures from BENCHMARKS.md",
        found.len()
    );
    let missing: Vec<&String> = found.iter().filter(|f| !occurs(&bench, f)).collect();
    assert!(
        missing.is_empty(),
        "README.md quotes figures that BENCHMARKS.md does not have, as written: {missing:?}"
    );
}

#[test]
fn every_link_of_the_readme_into_docs_points_to_a_file() {
    let readme = prose(&read("README.md"));
    let mut links = 0;
    let mut bad = Vec::new();
    for (at, _) in readme.match_indices("](docs/") {
        let dest: String = readme[at + 2..]
            .chars()
            .take_while(|&c| c != ')' && !c.is_whitespace())
            .collect();
        let file = dest.split('#').next().unwrap_or_default();
        links += 1;
        if !root().join(file).is_file() {
            bad.push(dest);
        }
    }
    assert!(
        links > 0,
        "the README has no map of the docs (links into docs/)"
    );
    assert!(bad.is_empty(), "README.md links to missing files: {bad:?}");
}

#[test]
fn the_quick_start_is_the_demo_and_the_test_command_ci_runs() {
    let readme = read("README.md");
    let start = readme
        .find("## Quick start")
        .expect("README.md has a `## Quick start` section");
    let section = &readme[start..];
    let block = section
        .split("```")
        .nth(1)
        .expect("the quick start shows its commands in a fenced block");
    let commands: Vec<&str> = block
        .lines()
        .skip(1) // the info string
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        commands,
        ["sudo demo/demo.sh", "cargo test"],
        "the quick start is exactly two commands"
    );
    assert!(
        root().join("demo/demo.sh").is_file(),
        "demo/demo.sh is the demo"
    );
    let ci = read(".ci/run");
    assert!(
        ci.lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("cargo test")),
        ".ci/run runs `cargo test`, the README's test command"
    );
}

#[test]
fn figures_are_read_as_the_module_doc_says() {
    let text = "declared in **0.83 s / 0.96 s**, 0 lost, 10,556 kB, 0.27 % of one core, \
                p50, ID 1, UDP 7947, 192.168.21.1 and v1.2 s3 5s";
    assert_eq!(
        figures(text),
        ["0.83 s", "0.96 s", "0 lost", "10,556 kB", "0.27 %", "5s"]
    );
    assert!(occurs("at 1.22 s / 1.31 s", "1.22 s"));
    assert!(!occurs("at 11.22 s", "1.22 s"));
    assert!(!occurs("at 1.22 seconds", "1.22 s"));
    assert_eq!(prose("a\n```text\n9 s\n```\nb\n"), "a\nb\n");
}
