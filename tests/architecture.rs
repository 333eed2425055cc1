//! The architecture's rules, checked on the source itself:
//! - no import cycle between the source files of any crate (parent and child modules included);
//! - the runner and the protocol crates depend on no daemon or CLI crate;
//! - `unsafe` only in the three system-call and FFI files, and every crate root denies it.
//!
//! Imports are read as text: `use` trees (braces expanded), and `crate::`, `super::`, `self::`
//! paths or a child module's name anywhere in the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 4] = ["protocol", "runner", "daemon", "cli"];
/// The only files that may hold `unsafe` code.
const UNSAFE_ALLOWED: [&str; 3] =
    ["crates/runner/src/sandbox/sys.rs", "crates/runner/src/plugin_host.rs", "crates/daemon/src/sys.rs"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

/// The module path of a source file: `api/mod.rs` is `[api]`, `api/error.rs` `[api, error]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "lib.rs" | "main.rs" | "mod.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The code of a file without comments and string literals (so no path in them counts).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => {}
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every path a `use` tree names, braces expanded: `a::{b, c::d}` is `a::b`, `a::c::d`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap().trim().to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(|item| expand(item).into_iter().map(move |p| format!("{prefix}{p}")))
        .collect()
}

/// The paths a file refers to, as module paths from its crate root.
fn references(code: &str, module: &[String], children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(end) = rest.find(';') {
            paths.extend(expand(&rest[..end]));
        }
    }
    // Paths anywhere: tokens of identifiers joined by `::`.
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_alphabetic() || bytes[i] == '_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_alphanumeric() || bytes[i] == '_' || bytes[i] == ':') {
                i += 1;
            }
            let token: String = bytes[start..i].iter().collect();
            let preceded = start > 0 && bytes[start - 1] == ':';
            let token = token.trim_end_matches(':');
            if token.contains("::") && !preceded {
                paths.push(token.to_string());
            }
        } else {
            i += 1;
        }
    }
    let own = module.to_vec();
    let parent = if module.is_empty() { vec![] } else { module[..module.len() - 1].to_vec() };
    paths
        .into_iter()
        .filter_map(|p| {
            let mut segments: Vec<String> = p.split("::").map(|s| s.trim().to_string()).collect();
            let first = segments.remove(0);
            let mut base = match first.as_str() {
                "crate" => vec![],
                "super" => parent.clone(),
                "self" => own.clone(),
                child if children.contains(child) => {
                    let mut m = own.clone();
                    m.push(child.to_string());
                    m
                }
                _ => return None,
            };
            while segments.first().is_some_and(|s| s == "super") {
                segments.remove(0);
                base.pop();
            }
            base.extend(segments);
            Some(base)
        })
        .collect()
}

#[test]
fn no_import_cycle_between_the_files_of_any_crate() {
    for krate in CRATES {
        let src = repo().join("crates").join(krate).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let modules: BTreeMap<Vec<String>, PathBuf> = files.iter().map(|f| (module_of(&src, f), f.clone())).collect();
        let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
        for (module, file) in &modules {
            let children: BTreeSet<String> = modules
                .keys()
                .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
                .map(|m| m.last().unwrap().clone())
                .collect();
            let text = code(&std::fs::read_to_string(file).unwrap());
            // Unit tests may use their own file's parent freely; they are not the module's imports.
            let text = text.split("#[cfg(test)]").next().unwrap();
            for target in references(text, module, &children) {
                // The longest module prefix of the path that is a file of this crate.
                let hit = (0..=target.len()).rev().find_map(|n| modules.get(&target[..n]));
                if let Some(to) = hit.filter(|to| *to != file) {
                    edges.entry(file.clone()).or_default().insert(to.clone());
                }
            }
        }
        // Depth-first search for a back edge.
        fn visit(
            node: &PathBuf,
            edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
            state: &mut BTreeMap<PathBuf, bool>,
            stack: &mut Vec<PathBuf>,
        ) -> Option<Vec<PathBuf>> {
            match state.get(node) {
                Some(true) => return None,
                Some(false) => {
                    let from = stack.iter().position(|n| n == node).unwrap();
                    return Some(stack[from..].to_vec());
                }
                None => {}
            }
            state.insert(node.clone(), false);
            stack.push(node.clone());
            for next in edges.get(node).into_iter().flatten() {
                if let Some(cycle) = visit(next, edges, state, stack) {
                    return Some(cycle);
                }
            }
            stack.pop();
            state.insert(node.clone(), true);
            None
        }
        let mut state = BTreeMap::new();
        for file in modules.values() {
            if let Some(cycle) = visit(file, &edges, &mut state, &mut Vec::new()) {
                let names: Vec<String> =
                    cycle.iter().map(|p| p.strip_prefix(repo()).unwrap().display().to_string()).collect();
                panic!("an import cycle in ironclaw-{krate}: {}", names.join(" -> "));
            }
        }
        let total: usize = edges.values().map(BTreeSet::len).sum();
        assert!(total > 0 || modules.len() == 1, "no import was read in ironclaw-{krate}: the reader is broken");
    }
}

#[test]
fn the_reader_finds_imports_in_use_trees_paths_and_child_modules() {
    let a = code("use super::{b::Thing, other};\nfn f() { let _ = \"crate::c\"; }\n");
    let children = BTreeSet::new();
    let refs = references(&a, &["x".into(), "a".into()], &children);
    assert!(refs.contains(&vec!["x".to_string(), "b".into(), "Thing".into()]), "{refs:?}");
    assert!(!refs.iter().any(|r| r.first().is_some_and(|s| s == "c")), "strings are not paths: {refs:?}");
    let b = code("fn g() { crate::x::a::f(); }\n");
    let refs = references(&b, &["x".into(), "b".into()], &children);
    assert!(refs.contains(&vec!["x".to_string(), "a".into(), "f".into()]), "{refs:?}");
    let children: BTreeSet<String> = ["fallback".to_string()].into();
    let refs = references("let f = fallback::Fallback::new();", &["resources".into()], &children);
    assert!(refs.contains(&vec!["resources".to_string(), "fallback".into(), "Fallback".into(), "new".into()]));
}

#[test]
fn the_runner_and_the_protocol_depend_on_no_daemon_crate() {
    for krate in ["runner", "protocol"] {
        let manifest = std::fs::read_to_string(repo().join("crates").join(krate).join("Cargo.toml")).unwrap();
        let dependencies = &manifest[manifest.find("[dependencies]").unwrap_or(manifest.len())..];
        for forbidden in ["ironclaw-daemon", "ironclaw-cli", "ironclaw-runner"] {
            assert!(!dependencies.contains(forbidden), "ironclaw-{krate} depends on {forbidden}");
        }
    }
}

#[test]
fn unsafe_code_only_where_the_rules_allow_it() {
    for krate in CRATES {
        let src = repo().join("crates").join(krate).join("src");
        let root = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        assert!(
            root.contains("#![deny(unsafe_code)]") || root.contains("#![forbid(unsafe_code)]"),
            "ironclaw-{krate}'s root does not deny unsafe code"
        );
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files {
            let rel = file.strip_prefix(repo()).unwrap().display().to_string();
            let text = code(&std::fs::read_to_string(&file).unwrap());
            let uses_unsafe =
                ["unsafe {", "unsafe fn", "unsafe impl", "unsafe extern"].iter().any(|u| text.contains(u));
            if uses_unsafe {
                assert!(UNSAFE_ALLOWED.contains(&rel.as_str()), "{rel} holds unsafe code");
            }
        }
    }
}
