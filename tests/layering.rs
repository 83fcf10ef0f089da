//! The manager's modules form layers: none imports a module that imports it back, directly or
//! through others (`docs/architecture.md`). Read from the source, so a new path that closes a
//! circle fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level items of a `{…}` group (nested groups kept whole), and the text after it.
fn group_items(text: &str) -> (Vec<&str>, &str) {
    let (mut depth, mut start, mut items) = (0usize, 0usize, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&text[start..i]);
                return (items, &text[i + 1..]);
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    (items, "")
}

/// The leading lowercase identifier of `text`.
fn leading_name(text: &str) -> String {
    text.trim()
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .collect()
}

/// The names a file's code (before its tests) reaches through `prefix` (`super::`,
/// `crate::manager::`): `prefix name`, `prefix {a, b::{c}}`.
fn referred(text: &str, prefix: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = &rest[..at];
        rest = &rest[at + prefix.len()..];
        // Part of a longer path (`super::super::x` seen from its second `super::`).
        if before.ends_with("::") || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let (items, _) = group_items(group);
            out.extend(items.into_iter().map(leading_name).filter(|n| !n.is_empty()));
        } else {
            let name = leading_name(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// What `manager/mod.rs` re-exports, by name → the module it comes from.
fn re_exports(mod_rs: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = mod_rs;
    while let Some(at) = rest.find("pub use ") {
        rest = &rest[at + "pub use ".len()..];
        let module = leading_name(rest);
        let after = &rest[module.len()..];
        if let Some(group) = after.strip_prefix("::{") {
            let (items, _) = group_items(group);
            for item in items {
                let name = item.trim().trim_start_matches(|c: char| c.is_whitespace());
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name, module.clone());
                }
            }
        }
    }
    out
}

/// Module → the sibling modules it reaches.
fn graph(manager: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let exported = re_exports(&std::fs::read_to_string(manager.join("mod.rs")).unwrap());
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(manager).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if ["mod", "tests", "testing"].contains(&name.as_str()) {
            continue;
        }
        let mut texts = Vec::new();
        if path.is_dir() {
            for file in std::fs::read_dir(&path).unwrap() {
                let file = file.unwrap().path();
                let own = if file.file_stem().unwrap() == "mod" {
                    "super::"
                } else {
                    "super::super::"
                };
                texts.push((std::fs::read_to_string(&file).unwrap(), own));
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            texts.push((std::fs::read_to_string(&path).unwrap(), "super::"));
        } else {
            continue;
        }
        // `store.rs` and `store/` are one module.
        let refs = g.entry(name.clone()).or_default();
        for (text, own) in &texts {
            for prefix in [*own, "crate::manager::"] {
                for r in referred(text, prefix) {
                    refs.insert(exported.get(&r).cloned().unwrap_or(r));
                }
            }
        }
        refs.remove(&name);
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
    assert!(
        g["tpc"].contains("images"),
        "the reader misses re-exported names (super::lock_images): {:?}",
        g["tpc"]
    );
    for module in g.keys() {
        if let Some(path) = circle(&g, module) {
            panic!("a circle of imports in manager/: {}", path.join(" → "));
        }
    }
}

#[test]
fn the_reader_finds_plain_grouped_nested_and_re_exported_imports() {
    let text = "use super::store::Store;\nuse super::{journal, tpc::{self, X}, volumes};\n\
                fn f() { super::events::emit(); crate::manager::status::get(); }\n\
                #[cfg(test)]\nmod tests { use super::upgrade; }";
    let found = referred(text, "super::");
    for name in ["store", "journal", "tpc", "volumes", "events"] {
        assert!(found.contains(name), "{name}: {found:?}");
    }
    assert!(!found.contains("upgrade"), "tests do not count: {found:?}");
    assert!(referred(text, "crate::manager::").contains("status"));
    let exported = re_exports("pub use images::{\n    IMAGES_PATIENCE, lock_images,\n};\n");
    assert_eq!(exported.get("lock_images").map(String::as_str), Some("images"));
    let g: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .map(|(m, r)| (m.to_string(), BTreeSet::from([r.to_string()])))
        .collect();
    assert_eq!(circle(&g, "a").unwrap(), ["a", "b", "c", "a"]);
    assert!(circle(&g, "d").is_none());
}
