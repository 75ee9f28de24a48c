//! docs/telemetry.md's table of metrics and the code name the same metrics, with the
//! same type: every `counter!`, `histogram!` and `gauge!` in the sources of the crates
//! is a row of the table, and every row is recorded somewhere.

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

/// The metrics the code records: name -> type (`counter`, `histogram`, `gauge`), with
/// the file each was found in.
fn recorded() -> BTreeMap<String, (String, PathBuf)> {
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
    let mut out = BTreeMap::new();
    for (path, source) in &sources {
        for line in source.lines() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for kind in ["counter", "histogram", "gauge"] {
                let macro_call = format!("{kind}!(");
                let mut rest = code;
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
                                .unwrap_or_else(|| panic!("{}: {kind}!({arg}) names no constant found", path.display()))
                                .clone()
                        }
                    };
                    out.insert(name, (kind.to_owned(), path.clone()));
                }
            }
        }
    }
    out
}

/// The rows of docs/telemetry.md's table: name -> type.
fn documented() -> BTreeMap<String, String> {
    let text = fs::read_to_string(workspace().join("docs/telemetry.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `name` | type | labels | meaning |
        if cells.len() < 5 {
            continue;
        }
        let Some(name) = cells[1].strip_prefix('`').and_then(|n| n.strip_suffix('`')) else { continue };
        assert!(out.insert(name.to_owned(), cells[2].to_owned()).is_none(), "{name} has two rows");
    }
    out
}

#[test]
fn every_metric_in_the_code_is_in_the_table_and_back() {
    let code = recorded();
    let table = documented();
    assert!(code.len() >= 20, "the scan found too few metrics: {code:?}");
    let mut problems = Vec::new();
    for (name, (kind, path)) in &code {
        match table.get(name) {
            None => problems.push(format!("{name} ({kind}, {}) is not in docs/telemetry.md", path.display())),
            Some(documented) if documented != kind => {
                problems.push(format!("{name} is a {kind} in {} but a {documented} in the table", path.display()))
            }
            Some(_) => {}
        }
    }
    let in_code: BTreeSet<&String> = code.keys().collect();
    for name in table.keys() {
        if !in_code.contains(name) {
            problems.push(format!("{name} is in docs/telemetry.md but no code records it"));
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
