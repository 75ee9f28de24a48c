//! docs/telemetry.md's table of metrics and the code name the same metrics, with the
//! same type: every `counter!`, `histogram!` and `gauge!` in the sources of the crates
//! is a row of the table, and every row is recorded somewhere. The same for its table
//! of spans: every `*_span!` of the sources is a row, at the same level, and every row
//! is opened somewhere; the crates' `NAMES` and `SPANS` lists are the same names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The crates whose sources record metrics (the fake cluster's only appear in docs).
const CRATES: [&str; 6] =
    ["klife-protocol", "klife-connection", "klife-producer", "klife-fetcher", "klife-group", "klife"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `pub const NAME: &str = "value";` declarations of a source file.
fn constants(source: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in source.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else { continue };
        let Some((name, value)) = rest.split_once(": &str = ") else { continue };
        let value = value.trim_end_matches(';').trim_matches('"');
        out.insert(name.to_owned(), value.to_owned());
    }
    out
}

/// The sources of the crates, and every `pub const NAME: &str` they declare.
fn sources() -> (Vec<(PathBuf, String)>, BTreeMap<String, String>) {
    let mut files = Vec::new();
    for krate in CRATES {
        rust_files(&workspace().join("crates").join(krate).join("src"), &mut files);
    }
    let sources: Vec<(PathBuf, String)> =
        files.into_iter().map(|f| (f.clone(), fs::read_to_string(f).unwrap())).collect();
    let mut names = BTreeMap::new();
    for (_, source) in &sources {
        names.extend(constants(source));
    }
    (sources, names)
}

/// What the code names with these macros: name -> the macro's kind, with the file each
/// was found in. `kinds` are (macro name prefix, kind), e.g. `("counter", "counter")`,
/// `("debug_span", "debug")`.
fn scan(kinds: &[(&str, &str)]) -> BTreeMap<String, (String, PathBuf)> {
    let (sources, names) = sources();
    let mut out = BTreeMap::new();
    for (path, source) in &sources {
        // The code without its comment lines: a macro's first argument may be on the
        // line after the macro's name.
        let code: String = source.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        for (macro_name, kind) in kinds {
            let macro_call = format!("{macro_name}!(");
            let mut rest = code.as_str();
            while let Some(at) = rest.find(&macro_call) {
                rest = &rest[at + macro_call.len()..];
                let arg: String =
                    rest.chars().take_while(|c| *c != ',' && *c != ')').collect::<String>().trim().to_owned();
                let name = match arg.strip_prefix('"') {
                    Some(literal) => literal.trim_end_matches('"').to_owned(),
                    None => {
                        let ident = arg.rsplit("::").next().unwrap();
                        names
                            .get(ident)
                            .unwrap_or_else(|| {
                                panic!("{}: {macro_name}!({arg}) names no constant found", path.display())
                            })
                            .clone()
                    }
                };
                if let Some((other, first)) = out.insert(name.clone(), ((*kind).to_owned(), path.clone())) {
                    assert_eq!(
                        &other,
                        kind,
                        "{name} is a {other} in {} and a {kind} in {}",
                        first.display(),
                        path.display()
                    );
                }
            }
        }
    }
    out
}

/// The metrics the code records: name -> type (`counter`, `histogram`, `gauge`), with
/// the file each was found in.
fn recorded() -> BTreeMap<String, (String, PathBuf)> {
    scan(&[("counter", "counter"), ("histogram", "histogram"), ("gauge", "gauge")])
}

/// The spans the code opens: name -> level, with the file each was found in.
fn opened() -> BTreeMap<String, (String, PathBuf)> {
    scan(&[
        ("trace_span", "trace"),
        ("debug_span", "debug"),
        ("info_span", "info"),
        ("warn_span", "warn"),
        ("error_span", "error"),
    ])
}

/// The rows of the table under the `## {section}` heading of docs/telemetry.md:
/// name -> second column (a metric's type, a span's level).
fn documented_in(section: &str) -> BTreeMap<String, String> {
    let text = fs::read_to_string(workspace().join("docs/telemetry.md")).unwrap();
    let heading = format!("## {section}");
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("## ") {
            inside = line.trim() == heading;
            continue;
        }
        if !inside {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `name` | type | labels | meaning |
        if cells.len() < 5 {
            continue;
        }
        let Some(name) = cells[1].strip_prefix('`').and_then(|n| n.strip_suffix('`')) else { continue };
        assert!(out.insert(name.to_owned(), cells[2].to_owned()).is_none(), "{name} has two rows");
    }
    assert!(!out.is_empty(), "docs/telemetry.md has no table under {heading}");
    out
}

/// What is wrong between the names found in the code (name -> kind, file) and a table
/// of the docs (name -> kind).
fn compare(what: &str, code: &BTreeMap<String, (String, PathBuf)>, table: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, (kind, path)) in code {
        match table.get(name) {
            None => problems.push(format!("{what} {name} ({kind}, {}) is not in docs/telemetry.md", path.display())),
            Some(documented) if documented != kind => problems
                .push(format!("{what} {name} is a {kind} in {} but a {documented} in the table", path.display())),
            Some(_) => {}
        }
    }
    let in_code: BTreeSet<&String> = code.keys().collect();
    for name in table.keys() {
        if !in_code.contains(name) {
            problems.push(format!("{what} {name} is in docs/telemetry.md but no code uses it"));
        }
    }
    problems
}

#[test]
fn every_metric_in_the_code_is_in_the_table_and_back() {
    let code = recorded();
    assert!(code.len() >= 20, "the scan found too few metrics: {code:?}");
    let problems = compare("metric", &code, &documented_in("Metrics"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_span_in_the_code_is_in_the_table_and_back() {
    let code = opened();
    assert!(code.len() >= 8, "the scan found too few spans: {code:?}");
    let problems = compare("span", &code, &documented_in("Spans"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The names a `pub const LIST: &[&str] = &[A, B, ...];` of `source` lists, resolved
/// through the constants.
fn listed(source: &str, list: &str, names: &BTreeMap<String, String>) -> Option<BTreeSet<String>> {
    let start = source.find(&format!("pub const {list}: &[&str] ="))?;
    let body = &source[start..];
    let body = &body[body.find("= &[")? + 4..body.find("];")?];
    Some(
        body.split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(|i| names.get(i).unwrap_or_else(|| panic!("{list} lists {i}, not a constant")).clone())
            .collect(),
    )
}

/// The crate a source file belongs to: the folder under the last `crates/` of its path.
fn crate_of(path: &Path) -> String {
    let parts: Vec<String> = path.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let at = parts.iter().rposition(|p| p == "crates").unwrap();
    parts[at + 1].clone()
}

#[test]
fn the_crates_name_lists_hold_every_name_they_record() {
    let (sources, names) = sources();
    let (metrics, spans) = (recorded(), opened());
    let mut problems = Vec::new();
    for (path, source) in sources.iter().filter(|(p, _)| p.ends_with("telemetry.rs")) {
        let krate = crate_of(path);
        for (list, found) in [("NAMES", &metrics), ("SPANS", &spans)] {
            let Some(listed) = listed(source, list, &names) else { continue };
            let here: BTreeSet<String> =
                found.iter().filter(|(_, (_, p))| crate_of(p) == krate).map(|(name, _)| name.clone()).collect();
            for name in listed.difference(&here) {
                problems.push(format!("{krate}: {list} lists {name}, which the crate does not use"));
            }
            for name in here.difference(&listed) {
                problems.push(format!("{krate}: {list} leaves out {name}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn outcome_labels_are_ok_or_error() {
    let mut files = Vec::new();
    for krate in CRATES {
        rust_files(&workspace().join("crates").join(krate).join("src"), &mut files);
    }
    for file in files {
        let source = fs::read_to_string(&file).unwrap();
        for (n, line) in source.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("\"outcome\" => ") {
                rest = &rest[at + "\"outcome\" => ".len()..];
                // A literal must be one of the two words; an expression is checked
                // where it is built (it is a literal in each crate's telemetry.rs).
                if let Some(literal) = rest.strip_prefix('"') {
                    let word: String = literal.chars().take_while(|c| *c != '"').collect();
                    assert!(word == "ok" || word == "error", "{}:{}: outcome {word:?}", file.display(), n + 1);
                }
            }
        }
    }
}
