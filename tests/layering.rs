//! The manager's modules form layers: none imports a module that imports it back, directly or
//! through others (`docs/architecture.md`). Read from the source, so a new `super::` path that
//! closes a circle fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The `super::<name>` (or `super::{a, b}`) names a file refers to, before its tests.
fn referred(text: &str, prefix: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = &rest[..at];
        rest = &rest[at + prefix.len()..];
        // `super::super::x` seen from `super::x`'s position belongs to the longer prefix.
        if before.ends_with("::") || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            // Only sibling module names count in the end (functions of `manager` itself drop out).
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Module → the sibling modules it refers to.
fn graph(manager: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(manager).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if ["mod", "tests", "testing"].contains(&name.as_str()) {
            continue;
        }
        let mut refs = BTreeSet::new();
        if path.is_dir() {
            for file in std::fs::read_dir(&path).unwrap() {
                let file = file.unwrap().path();
                let text = std::fs::read_to_string(&file).unwrap();
                let prefix = if file.file_stem().unwrap() == "mod" {
                    "super::"
                } else {
                    "super::super::"
                };
                refs.extend(referred(&text, prefix));
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            refs.extend(referred(&std::fs::read_to_string(&path).unwrap(), "super::"));
        } else {
            continue;
        }
        refs.remove(&name);
        g.insert(name, refs);
    }
    let names: BTreeSet<String> = g.keys().cloned().collect();
    for refs in g.values_mut() {
        refs.retain(|r| names.contains(r));
    }
    g
}

/// A path from `from` back to itself, if there is one.
fn circle(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        goal: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in &g[at] {
            if next == goal {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, next, goal, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    walk(g, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_manager_module_imports_one_that_imports_it_back() {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/manager"));
    assert!(g.len() > 15, "modules found: {:?}", g.keys());
    assert!(
        g["tpc"].contains("container"),
        "the reader misses imports: {:?}",
        g["tpc"]
    );
    for module in g.keys() {
        if let Some(path) = circle(&g, module) {
            panic!("a circle of imports in manager/: {}", path.join(" → "));
        }
    }
}

#[test]
fn the_reader_finds_plain_grouped_and_nested_imports() {
    let text = "use super::store::Store;\nuse super::{journal, tpc::{self, X}};\n\
                fn f() { super::volumes::get(); }\n#[cfg(test)]\nmod tests { use super::upgrade; }";
    let found = referred(text, "super::");
    assert!(
        found.contains("store") && found.contains("journal") && found.contains("volumes"),
        "{found:?}"
    );
    assert!(!found.contains("upgrade"), "tests do not count: {found:?}");
    let g: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .map(|(m, r)| (m.to_string(), BTreeSet::from([r.to_string()])))
        .collect();
    assert_eq!(circle(&g, "a").unwrap(), ["a", "b", "c", "a"]);
    assert!(circle(&g, "d").is_none());
}
