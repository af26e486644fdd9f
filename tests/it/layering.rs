//! The shape of `src/`: data flows one way, so no top-level module may reach, through the
//! `crate::` paths its code names, a module that reaches it back (ARCHITECTURE.md); and no
//! file grows past what a reader takes in at once. Read from the source text: comments are
//! skipped, since a doc link is not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module and the top-level modules its code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, top, text) in sources(&src) {
        let uses = graph.entry(top.clone()).or_default();
        for line in text.lines().map(str::trim_start) {
            if line.starts_with("//") {
                continue;
            }
            for named in crate_paths(line) {
                if named != top {
                    uses.insert(named);
                }
            }
        }
    }
    graph
}

/// Every `.rs` file under `src/` with the top-level module it belongs to; `lib.rs` and
/// `main.rs` are the roots and belong to none.
fn sources(src: &Path) -> Vec<(std::path::PathBuf, String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let first = rel.components().next().unwrap().as_os_str();
            let top = first.to_str().unwrap().trim_end_matches(".rs").to_string();
            if top != "lib" && top != "main" {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((rel.to_path_buf(), top, text));
            }
        }
    }
    out
}

/// The top-level modules a line names: `crate::a::…` and each `b` of `crate::{b::…, c}`.
fn crate_paths(line: &str) -> Vec<String> {
    paths_after(line, "crate::")
}

/// The first names of the paths a line starts with `prefix` (`crate::` or `super::`).
fn paths_after(line: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in line.match_indices(prefix) {
        let rest = &line[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or_default();
            out.extend(group.split(',').map(|p| ident(p.trim())));
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

/// A cycle through `start`, as the path that closes it, if there is one.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flatten() {
            if next == start {
                let mut closed = path.clone();
                closed.push(next.clone());
                return Some(closed);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_top_level_module_depends_on_itself_through_others() {
    let graph = graph();
    assert!(
        graph.len() > 10 && graph["dispatch"].contains("store"),
        "the source was not read: {graph:?}"
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| c.join(" → "))
        .collect();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

/// Inside each module directory, the files its `mod.rs` declares and the siblings each
/// names through `super::` (items of `mod.rs` itself are not siblings).
fn sibling_graphs() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (rel, top, text) in sources(&src) {
        let parts: Vec<_> = rel
            .iter()
            .map(|p| p.to_string_lossy().to_string())
            .collect();
        if parts.len() == 2 && parts[1] != "mod.rs" {
            let name = parts[1].trim_end_matches(".rs").to_string();
            files.entry(top).or_default().push((name, text));
        }
    }
    files
        .into_iter()
        .map(|(dir, members)| {
            let names: BTreeSet<String> = members.iter().map(|(n, _)| n.clone()).collect();
            let graph = members
                .into_iter()
                .map(|(name, text)| {
                    let uses = text
                        .lines()
                        .map(str::trim_start)
                        .filter(|l| !l.starts_with("//"))
                        .flat_map(|l| paths_after(l, "super::"))
                        .filter(|n| names.contains(n) && *n != name)
                        .collect();
                    (name, uses)
                })
                .collect();
            (dir, graph)
        })
        .collect()
}

#[test]
fn no_file_of_a_module_depends_on_itself_through_its_siblings() {
    let graphs = sibling_graphs();
    assert!(
        graphs["store"]["deliveries"].contains("writes"),
        "the source was not read: {graphs:?}"
    );
    let cycles: Vec<String> = graphs
        .iter()
        .flat_map(|(dir, graph)| {
            graph
                .keys()
                .filter_map(|m| cycle_from(graph, m))
                .map(move |c| format!("{dir}: {}", c.join(" → ")))
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "cycles inside modules:\n{}",
        cycles.join("\n")
    );
}

/// The most lines a source file may have: past it, split the file by what its parts do.
const MAX_LINES: usize = 400;

#[test]
fn no_source_file_is_over_400_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&src);
    assert!(files.len() > 50, "the source was not read");
    let long: Vec<String> = files
        .iter()
        .map(|(path, _, text)| (path, text.lines().count()))
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(path, n)| format!("src/{}: {n} lines", path.display()))
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_reader_finds_paths_in_groups_and_skips_nothing_else() {
    assert_eq!(crate_paths("use crate::store::{Owner, Store};"), ["store"]);
    assert_eq!(
        crate_paths("use crate::{config::Settings, domain::Job, metrics};"),
        ["config", "domain", "metrics"]
    );
    assert_eq!(
        crate_paths("let t = crate::templates::Templates::load(&s)?; crate::render::x()"),
        ["templates", "render"]
    );
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle_from(&g, "a").unwrap(), ["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert_eq!(cycle_from(&g, "a"), None);
}
