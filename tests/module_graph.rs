//! The layering of `src/`, checked: every `crate::<module>` path (and, in the binaries,
//! `ferrum_serve::<module>`) in every source file is an edge from the file's top-level module
//! to that module, and each edge must be one the layer graph in `src/lib.rs` allows. Fails on a
//! forbidden edge and on an import cycle among the modules, so the graph stays true as the code
//! grows. Reads the source only: no build of anything, milliseconds to run
//! (`cargo test --test module_graph`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which modules each layer may import: a module may import only those to its right. Edges
/// (`EDGES`) may import anything, and nothing below may import them.
const LAYERS: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("shutdown", &[]),
    ("listener", &[]),
    ("storage", &["model"]),
    ("lifecycle", &["model"]),
    ("telemetry", &["model"]),
    ("input", &["model"]),
    ("explain", &["model"]),
    ("batching", &["model", "telemetry"]),
    ("features", &["model", "telemetry", "input"]),
    ("monitor", &["model", "explain", "telemetry"]),
    (
        "serving",
        &[
            "model",
            "lifecycle",
            "telemetry",
            "input",
            "explain",
            "batching",
            "features",
            "monitor",
        ],
    ),
    (
        "api",
        &[
            "model",
            "lifecycle",
            "telemetry",
            "input",
            "explain",
            "batching",
            "features",
            "monitor",
            "serving",
        ],
    ),
    (
        "grpc",
        &[
            "model",
            "lifecycle",
            "telemetry",
            "input",
            "explain",
            "batching",
            "features",
            "monitor",
            "serving",
            "api",
        ],
    ),
];

/// The edges of the program: command line, start-up, offline jobs, the binaries. They read
/// clap types and wire the layers together.
const EDGES: &[&str] = &[
    "lib",
    "config",
    "server",
    "jobs",
    "healthcheck",
    "main",
    "bin",
];

/// Upward edges still in the code, each with why, until the work that removes it lands
/// (issue #12's `ServedModel`). The test fails when one of them disappears without being taken
/// off this list, so the list can only shrink.
const KNOWN_DEBT: &[(&str, &str, &str)] = &[];

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/x.rs` and `src/x/...` are `x`.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(src()).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    let first = first.to_str().unwrap();
    first.strip_suffix(".rs").unwrap_or(first).to_string()
}

/// The first path segment after each `prefix` in `code` (comments removed), expanding
/// `prefix{a, b::c}` groups to `a` and `b`.
fn imported(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + prefix.len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            out.extend(first_segment(rest));
        }
    }
    out
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    // Items of the crate root (`crate::BUILD_VERSION`, `self`) are not modules.
    let is_module = name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && name != "self";
    is_module.then_some(name)
}

/// Source without `//` comments (doc links name modules without importing them).
fn without_comments(code: &str) -> String {
    code.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module-to-module edge in `src/`, with a file that makes it.
fn edges() -> BTreeMap<(String, String), PathBuf> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut edges = BTreeMap::new();
    for file in files {
        let from = module_of(&file);
        let code = without_comments(&std::fs::read_to_string(&file).unwrap());
        let mut targets = imported(&code, "crate::");
        if from == "bin" || from == "main" {
            targets.extend(imported(&code, "ferrum_serve::"));
        }
        for to in targets {
            if to != from {
                edges
                    .entry((from.clone(), to))
                    .or_insert_with(|| file.clone());
            }
        }
    }
    edges
}

fn allowed(from: &str, to: &str) -> bool {
    if EDGES.contains(&from) {
        return true;
    }
    LAYERS
        .iter()
        .find(|(module, _)| *module == from)
        .is_some_and(|(_, may)| may.contains(&to))
}

#[test]
fn every_module_is_in_the_graph() {
    let known: BTreeSet<&str> = LAYERS
        .iter()
        .map(|(m, _)| *m)
        .chain(EDGES.iter().copied())
        .collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let unknown: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(f))
        .filter(|m| !known.contains(m.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "modules not in the layer graph: {unknown:?}"
    );
}

#[test]
fn no_import_goes_against_the_layers() {
    let edges = edges();
    let forbidden: Vec<String> = edges
        .iter()
        .filter(|((from, to), _)| !allowed(from, to))
        .filter(|((from, to), _)| !KNOWN_DEBT.iter().any(|(f, t, _)| f == from && t == to))
        .map(|((from, to), file)| format!("{from} -> {to} ({})", file.display()))
        .collect();
    assert!(
        forbidden.is_empty(),
        "forbidden imports:\n{}",
        forbidden.join("\n")
    );
    let stale: Vec<&(&str, &str, &str)> = KNOWN_DEBT
        .iter()
        .filter(|(f, t, _)| !edges.contains_key(&(f.to_string(), t.to_string())))
        .collect();
    assert!(
        stale.is_empty(),
        "no longer in the code, take off KNOWN_DEBT: {stale:?}"
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges().into_keys() {
        if !KNOWN_DEBT.iter().any(|(f, t, _)| *f == from && *t == to) {
            graph.entry(from).or_default().insert(to);
        }
    }
    // Depth-first search; a node met again while still on the stack closes a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        let cycle = visit(node, &graph, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn the_scanner_reads_grouped_and_nested_imports() {
    let code = "use crate::{api::{self, X}, model::Rows};\nlet v = crate::BUILD_VERSION;\nmycrate::x();\ncrate::telemetry::init();";
    let found: Vec<String> = imported(code, "crate::").into_iter().collect();
    assert_eq!(found, ["api", "model", "telemetry"]);
    assert_eq!(
        without_comments("use a; // crate::api\nlet s = \"http://x\"; crate::model"),
        "use a; \nlet s = \"http://x\"; crate::model"
    );
}
