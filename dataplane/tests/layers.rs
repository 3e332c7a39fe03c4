//! The data plane's modules import each other without a circle (docs/architecture.md,
//! "Layers"): read from the source, so a new `use crate::…` that closes a circle fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its code (not its tests or comments) names:
/// `crate::a`, `crate::{a, b::c}` (over several lines too), and `super::` chains that climb
/// out of the module (`super::super::a` from `conn/h2/x.rs` names `conn`'s sibling `a`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let module = module_path(rel);
            let Some(top) = module.first().cloned() else {
                continue;
            };
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let deps = graph.entry(top.clone()).or_default();
            for name in named_modules(&without_tests(&without_comments(&text)), &module) {
                if name != top {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

/// `conn/h2/mod.rs` → [conn, h2]; `conn/h2/stream.rs` → [conn, h2, stream].
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn without_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text without the items `#[cfg(test)]` marks (a `mod tests { … }`, a test-only `use`
/// or function), wherever they are in the file.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        rest = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at a `;` before any `{`, or where its first `{` closes.
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Top-level modules named in `code`, a file of module `module`.
fn named_modules(code: &str, module: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let after = &code[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            names.extend(group_heads(group));
        } else {
            names.insert(ident(after));
        }
    }
    // `super::super::…`: climbing out of the top-level module names a sibling of it.
    let mut at = 0;
    while let Some(i) = code[at..].find("super::") {
        let start = at + i;
        let before = code[..start].chars().next_back();
        at = start + "super::".len();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut climbs = 1;
        let mut rest = &code[at..];
        while let Some(r) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = r;
        }
        at = code.len() - rest.len();
        // A file's own module counts: `super` of conn/h2/stream.rs is conn::h2.
        if climbs >= module.len() {
            match rest.strip_prefix('{') {
                Some(group) => names.extend(group_heads(group)),
                None => {
                    names.insert(ident(rest));
                }
            }
        }
    }
    names.remove("");
    names.remove("self");
    names
}

/// The first path segment of each entry of a `{a, b::c, d::{e, f}}` group.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expect_head = true,
            c if expect_head && (c.is_alphanumeric() || c == '_') => {
                heads.push(ident(&group[i..]));
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

/// A circle in the graph, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut c = path[at..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(graph, dep, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_module_graph_has_no_circle() {
    let graph = imports();
    assert!(graph.len() > 10, "read the modules: {graph:?}");
    assert_eq!(circle(&graph), None, "{graph:#?}");
    // Only the runtime loop knows the drivers.
    for (module, deps) in &graph {
        if deps.contains("conn") {
            assert_eq!(module, "shard_loop", "{module} imports the drivers");
        }
    }
}

#[test]
fn a_circle_would_be_found() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        circle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn every_form_of_import_is_read() {
    let file = |path: &str| module_path(Path::new(path));
    let code = "use crate::{auth, relay::pipe_pool,\n    stream::{self, Stream}};\nuse super::super::rt;\nfn f() { crate::sys::x(); super::h2::y(); }";
    let names = named_modules(code, &file("conn/h2/stream.rs"));
    // super::super from conn::h2::stream is conn (its own top-level module: not a name);
    // from a depth-2 file it is the crate root, so rt would be named.
    assert_eq!(
        names,
        BTreeSet::from(["auth".into(), "relay".into(), "stream".into(), "sys".into()])
    );
    let names = named_modules(code, &file("quic/conn.rs"));
    assert!(names.contains("rt"), "{names:?}");
    let code = "use crate::a;\n#[cfg(test)]\nmod tests { use crate::b; }\n#[cfg(test)]\nuse crate::c;\nuse crate::d;";
    let names = named_modules(&without_tests(code), &file("x.rs"));
    assert_eq!(names, BTreeSet::from(["a".into(), "d".into()]));
}
