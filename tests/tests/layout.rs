//! The crates' module trees have no import loops: within each crate, the modules
//! (a file, or a directory with its `mod.rs`) form layers where each uses only
//! those below it, so a reader can tell from the tree where a change belongs.
//! Read from the sources: every `crate::`, `super::` and `self::` path outside
//! the test modules is an edge.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// A crate's modules (`a::b`, the root as ``) and the modules each one uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Every `.rs` file under `dir`, with its module path.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            found.insert(parts.join("::"), path);
        }
    }
    found
}

/// The source without its test modules and comments.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths of the use-tree starting at `text` (after `prefix::`), e.g.
/// `{a::{b, c}, d}` → `a::b`, `a::c`, `d`.
fn use_tree(text: &str, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let bytes = text.as_bytes();
    let mut i = 0;
    if bytes.first() == Some(&b'{') {
        i += 1;
        loop {
            while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                i += 1;
            }
            if i >= bytes.len() || bytes[i] == b'}' {
                return i + 1;
            }
            i += use_tree(&text[i..], prefix, out);
        }
    }
    let name_len = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    if name_len == 0 {
        return 1;
    }
    let name = &text[..name_len];
    let mut path = prefix.to_vec();
    if name != "self" {
        path.push(name.to_owned());
    }
    i = name_len;
    if text[i..].starts_with("::") {
        return i + 2 + use_tree(&text[i + 2..], &path, out);
    }
    out.push(path);
    // `name as alias`: the alias is no path.
    let rest = &text[i..];
    if let Some(alias) = rest.trim_start().strip_prefix("as ") {
        let alias = alias.trim_start();
        let alias_len = alias
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(alias.len());
        i = text.len() - alias.len() + alias_len;
    }
    i
}

/// The module graph of the crate whose sources are in `src`.
fn graph(src: &Path) -> Graph {
    let modules = modules(src);
    let resolve = |path: &[String]| {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|candidate| modules.contains_key(candidate))
    };
    let mut graph = Graph::new();
    for (module, file) in &modules {
        let code = code(file);
        let own: Vec<String> = module
            .split("::")
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let mut paths = Vec::new();
        for (keyword, base) in [
            ("crate::", Vec::new()),
            ("super::", own[..own.len().saturating_sub(1)].to_vec()),
            ("self::", own.clone()),
        ] {
            for (at, _) in code.match_indices(keyword) {
                let before = code[..at].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                use_tree(&code[at + keyword.len()..], &base, &mut paths);
            }
        }
        let edges = graph.entry(module.clone()).or_default();
        for path in paths {
            if let Some(target) = resolve(&path)
                && !target.is_empty()
                && target != *module
                && !module.starts_with(&format!("{target}::"))
            {
                edges.insert(target);
            }
        }
    }
    graph
}

/// One import loop of `graph`, if there is any (as the modules along it).
fn a_loop(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut marks, &mut Vec::new()))
}

#[test]
fn no_crate_has_an_import_loop_between_its_modules() {
    for krate in [
        "gateway",
        "user-service",
        "runtime",
        "proto",
        "tests",
        "tests/support",
        "tests/loadgen",
    ] {
        let src = workspace().join(krate).join("src");
        let graph = graph(&src);
        assert!(
            graph.len() > 1 || krate == "proto",
            "{krate}: no modules read"
        );
        if let Some(cycle) = a_loop(&graph) {
            panic!("{krate}: an import loop: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_reader_finds_loops_and_nested_use_trees() {
    let mut paths = Vec::new();
    use_tree("{a::{b, c as d}, e, f::self}", &[], &mut paths);
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["a::b", "a::c", "e", "f"]);

    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default();
    assert_eq!(a_loop(&graph), None);
    graph.get_mut("c").unwrap().insert("a".into());
    assert_eq!(a_loop(&graph).unwrap(), ["a", "b", "c", "a"]);
}
