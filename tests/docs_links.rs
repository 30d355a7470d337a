//! The docs stay linked (issue 28). The book in `docs/` and the README are
//! read as markdown, with the standard library only:
//!
//! * every relative link in `docs/src/**/*.md` and in `README.md` points
//!   to an existing file, and a link of the book stays inside `docs/src/`
//!   (the built book holds nothing else);
//! * every `#anchor` names a heading of the target page, by mdBook's rule:
//!   the heading's text, trimmed and lower-cased, whitespace to `-`, every
//!   character but alphanumerics, `-` and `_` dropped, and `-1`, `-2`, ...
//!   appended to repeats within a page;
//! * `docs/src/SUMMARY.md` lists every page once, and every page it lists
//!   exists.
//!
//! Links inside code (fenced blocks, code spans) are not links. Absolute
//! URLs (`https:`, `mailto:`) are not checked. `{{#include FILE}}` lines
//! are expanded as mdBook does before anything is read.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn book_src() -> PathBuf {
    root().join("docs/src")
}

/// `path` with `.` and `..` resolved by name (the file may not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Every `.md` file under `dir`, sorted.
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            markdown_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
}

/// The text of a page as mdBook sees it: `{{#include FILE}}` lines replaced
/// by the file (relative to the page).
fn page_text(path: &Path) -> String {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let dir = path.parent().expect("a page lives in a folder");
    let mut out = String::new();
    for line in text.lines() {
        let included = line
            .trim()
            .strip_prefix("{{#include ")
            .and_then(|rest| rest.strip_suffix("}}"));
        match included {
            Some(file) => {
                let file = dir.join(file.trim());
                let body = fs::read_to_string(&file).unwrap_or_else(|e| {
                    panic!("{} includes {}: {e}", path.display(), file.display())
                });
                out.push_str(&body);
                if !body.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// A markdown text split into what matters here: headings (their raw
/// text) and paragraphs of prose (lines joined), code fences left out.
#[derive(Debug, Default)]
struct Blocks {
    headings: Vec<String>,
    prose: Vec<String>,
}

/// The fence a line opens or closes (its character and length), if any.
fn fence(line: &str) -> Option<(char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let c = rest.chars().next()?;
    if c != '`' && c != '~' {
        return None;
    }
    let n = rest.chars().take_while(|&x| x == c).count();
    (n >= 3).then_some((c, n))
}

/// The text of an ATX heading (`# Title ##`), if the line is one.
fn atx_heading(line: &str) -> Option<String> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let level = rest.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let after = &rest[level..];
    if !after.is_empty() && !after.starts_with([' ', '\t']) {
        return None;
    }
    let mut text = after.trim();
    // A closing sequence of `#` after a space is not part of the text.
    let stripped = text.trim_end_matches('#');
    if stripped.is_empty() || stripped.ends_with([' ', '\t']) {
        text = stripped.trim_end();
    }
    Some(text.to_string())
}

fn blocks(text: &str) -> Blocks {
    let mut out = Blocks::default();
    let mut open: Option<(char, usize)> = None;
    let mut para = String::new();
    let flush = |para: &mut String, out: &mut Blocks| {
        if !para.trim().is_empty() {
            out.prose.push(std::mem::take(para));
        }
        para.clear();
    };
    for line in text.lines() {
        if let Some((c, n)) = open {
            if let Some((c2, n2)) = fence(line)
                && c2 == c
                && n2 >= n
                && line.trim().chars().all(|x| x == c)
            {
                open = None;
            }
            continue;
        }
        if let Some(f) = fence(line) {
            flush(&mut para, &mut out);
            open = Some(f);
        } else if let Some(h) = atx_heading(line) {
            flush(&mut para, &mut out);
            out.prose.push(h.clone());
            out.headings.push(h);
        } else if line.trim().is_empty() {
            flush(&mut para, &mut out);
        } else {
            para.push_str(line);
            para.push('\n');
        }
    }
    flush(&mut para, &mut out);
    out
}

/// Pieces of a paragraph: `(is_code, text)`, code spans split out (a run
/// of backticks closed by a run of the same length; an unclosed one is
/// literal text).
fn spans(text: &str) -> Vec<(bool, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut plain = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            plain.push(chars[i]);
            i += 1;
            continue;
        }
        let n = chars[i..].iter().take_while(|&&c| c == '`').count();
        let mut j = i + n;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let m = chars[j..].iter().take_while(|&&c| c == '`').count();
                if m == n {
                    close = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                out.push((false, std::mem::take(&mut plain)));
                out.push((true, chars[i + n..j].iter().collect()));
                i = j + n;
            }
            None => {
                plain.extend(&chars[i..i + n]);
                i += n;
            }
        }
    }
    out.push((false, plain));
    out
}

/// The destinations of the inline links and images in prose (code spans
/// left out): `[text](dest)`, `[text](<dest>)`, `[text](dest "title")`.
fn link_targets(prose: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (code, text) in spans(prose) {
        if code {
            continue;
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let before = &rest[..at];
            let after = &rest[at + 2..];
            rest = after;
            if !before.contains('[') {
                continue;
            }
            let after = after.trim_start();
            let dest = if let Some(inner) = after.strip_prefix('<') {
                inner.split('>').next().unwrap_or("")
            } else {
                after
                    .split(|c: char| c == ')' || c.is_whitespace())
                    .next()
                    .unwrap_or("")
            };
            out.push(dest.to_string());
        }
    }
    out
}

/// The visible text of a heading, as mdBook's renderer sees it: code spans
/// keep their content, links their text, emphasis marks and backslash
/// escapes go, and smart punctuation turns `--` into a dash (which the
/// id then drops).
fn heading_text(raw: &str) -> String {
    let mut out = String::new();
    for (code, text) in spans(raw) {
        if code {
            out.push_str(&text);
            continue;
        }
        // Links: keep the text between `[` and `]`, drop `(dest)`.
        let mut plain = String::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            plain.push_str(&rest[..at]);
            let tail = &rest[at + 2..];
            let end = tail.find(')').map_or(tail.len(), |e| e + 1);
            rest = &tail[end..];
        }
        plain.push_str(rest);
        let plain = plain.replace("---", "").replace("--", "");
        let mut escaped = false;
        for c in plain.chars() {
            if escaped {
                out.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if !matches!(c, '*' | '[' | ']' | '!') {
                out.push(c);
            }
        }
    }
    out
}

/// mdBook's id of a heading's text (`id_from_content` in mdbook-html).
fn mdbook_id(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c)
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The ids of a page's headings, repeats numbered as mdBook numbers them.
fn anchors(headings: &[String]) -> HashSet<String> {
    let mut used = HashSet::new();
    for h in headings {
        let id = mdbook_id(&heading_text(h));
        if used.insert(id.clone()) {
            continue;
        }
        let mut n = 1;
        while !used.insert(format!("{id}-{n}")) {
            n += 1;
        }
    }
    used
}

fn is_absolute_url(dest: &str) -> bool {
    let scheme: String = dest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
        .collect();
    !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && dest[scheme.len()..].starts_with(':')
}

/// The problems with the links of the page `page` (its `text` already
/// expanded); `inside`: the folder its links must stay in, if any.
fn check_links(page: &Path, text: &str, inside: Option<&Path>) -> Vec<String> {
    let mut bad = Vec::new();
    let own = blocks(text);
    let dir = page.parent().expect("a page lives in a folder");
    let name = page
        .strip_prefix(root())
        .unwrap_or(page)
        .display()
        .to_string();
    for prose in &own.prose {
        for dest in link_targets(prose) {
            if dest.is_empty() {
                bad.push(format!("{name}: an empty link"));
                continue;
            }
            if is_absolute_url(&dest) {
                continue;
            }
            let (file, anchor) = match dest.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (dest.as_str(), None),
            };
            let target = if file.is_empty() {
                page.to_path_buf()
            } else {
                normalize(&dir.join(file))
            };
            if !target.is_file() {
                bad.push(format!("{name}: {dest:?} is no file"));
                continue;
            }
            if let Some(folder) = inside
                && !target.starts_with(folder)
            {
                bad.push(format!(
                    "{name}: {dest:?} leaves {} (the built book holds nothing else)",
                    folder.display()
                ));
            }
            let Some(anchor) = anchor else {
                continue;
            };
            if target.extension().is_none_or(|x| x != "md") {
                bad.push(format!(
                    "{name}: {dest:?} has an anchor into a file that is not markdown"
                ));
                continue;
            }
            let ids = if target == page {
                anchors(&own.headings)
            } else {
                anchors(&blocks(&page_text(&target)).headings)
            };
            if !ids.contains(anchor) {
                let mut known: Vec<&String> = ids.iter().collect();
                known.sort();
                bad.push(format!(
                    "{name}: {dest:?}: no heading has the id {anchor:?} (the ids: {known:?})"
                ));
            }
        }
    }
    bad
}

#[test]
fn every_link_of_the_book_and_the_readme_points_to_a_file_and_a_heading() {
    let src = book_src();
    let mut pages = Vec::new();
    markdown_files(&src, &mut pages);
    assert!(pages.len() > 10, "the book has {} pages", pages.len());
    let mut bad = Vec::new();
    for page in &pages {
        bad.extend(check_links(page, &page_text(page), Some(&src)));
    }
    let readme = root().join("README.md");
    bad.extend(check_links(&readme, &page_text(&readme), None));
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

#[test]
fn the_summary_lists_every_page_once_and_only_pages_that_exist() {
    let src = book_src();
    let summary = src.join("SUMMARY.md");
    let text = page_text(&summary);
    let mut listed: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    for prose in blocks(&text).prose {
        for dest in link_targets(&prose) {
            if dest.is_empty() {
                bad.push("SUMMARY.md: a draft chapter (empty link): write the page".to_string());
                continue;
            }
            let page = normalize(&src.join(&dest));
            if !page.is_file() {
                bad.push(format!("SUMMARY.md lists {dest:?}, which does not exist"));
            }
            *listed.entry(page).or_default() += 1;
        }
    }
    for (page, n) in &listed {
        if *n > 1 {
            bad.push(format!("SUMMARY.md lists {} {n} times", page.display()));
        }
    }
    let mut pages = Vec::new();
    markdown_files(&src, &mut pages);
    let pages: BTreeSet<PathBuf> = pages.into_iter().filter(|p| *p != summary).collect();
    for page in &pages {
        if !listed.contains_key(page) {
            bad.push(format!(
                "{} is not in SUMMARY.md: mdBook would not build it",
                page.display()
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_markdown_reader_follows_mdbook() {
    // Ids as mdbook-html's own tests give them.
    assert_eq!(
        mdbook_id(&heading_text("`--passes`: add more rustdoc passes")),
        "--passes-add-more-rustdoc-passes"
    );
    assert_eq!(mdbook_id("Über"), "über");
    let ids = anchors(&[
        "[node]".to_string(),
        "`timeout`".to_string(),
        "`timeout`".to_string(),
        "The members' wire format".to_string(),
        "Check a node: status".to_string(),
    ]);
    for id in [
        "node",
        "timeout",
        "timeout-1",
        "the-members-wire-format",
        "check-a-node-status",
    ] {
        assert!(ids.contains(id), "{id} missing from {ids:?}");
    }
    // Links in code are not links; titles and angle brackets are not part
    // of the destination.
    let prose = "see [a](a.md#x) and `[b](b.md)` and [c](<c d.md>) [e](e.md \"E\")";
    assert_eq!(link_targets(prose), ["a.md#x", "c d.md", "e.md"]);
    // Headings and links inside fenced code are ignored.
    let b = blocks("# Title\n\n```text\n# not a heading\n[x](y.md)\n```\n\n## Next ##\n");
    assert_eq!(b.headings, ["Title", "Next"]);
    assert!(b.prose.iter().all(|p| link_targets(p).is_empty()));
    assert!(is_absolute_url("https://example.org/x"));
    assert!(!is_absolute_url("operations/ack.md#releasing-it"));
}
