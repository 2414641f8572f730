//! The layer rules of docs/ARCHITECTURE.md, checked on the source: which
//! top-level modules each module names through `crate::` paths.
//!
//! `cargo test --test layers -- --nocapture` prints the arrows.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The modules each layer may name, lowest layer first. The engine is the
/// composition root: it may name every layer below it, and none names it.
/// Unit tests (a `#[cfg(test)] mod` at the end of a file) are not counted:
/// they may build their fixtures with the whole engine.
const RULES: &[(&str, &[&str])] = &[
    ("sync", &[]),
    ("error", &[]),
    ("storage", &["error", "sync"]),
    ("pg", &["error", "sync"]),
    ("lock", &["error", "pg", "sync"]),
    ("log", &["error", "pg", "storage", "sync"]),
    ("queue", &["error", "lock", "log", "pg", "storage", "sync"]),
    ("inspect", &["error", "log", "queue", "storage", "sync"]),
    ("fuzzing", &["error", "inspect", "log", "queue", "storage"]),
    ("engine", &["error", "lock", "log", "pg", "queue", "storage", "sync"]),
];

#[test]
fn lower_layers_never_name_higher_ones() {
    let arrows = arrows();
    let mut table = String::new();
    for (from, tos) in &arrows {
        let tos: Vec<&str> = tos.iter().map(String::as_str).collect();
        table.push_str(&format!("{from:>10} -> {}\n", tos.join(", ")));
    }
    println!("{table}");
    let mut broken = Vec::new();
    for (layer, allowed) in RULES {
        for to in arrows.get(*layer).into_iter().flatten() {
            if !allowed.contains(&to.as_str()) {
                broken.push(format!("{layer} -> {to}"));
            }
        }
    }
    assert!(broken.is_empty(), "arrows against the layer rules: {broken:?}\nall arrows:\n{table}");
}

/// `module -> modules it names`, for every top-level module of `src/`.
fn arrows() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    let owners = root_names(&src, &files);
    let mut arrows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(&src, file);
        let text = fs::read_to_string(file).expect("a source file");
        let entry = arrows.entry(from.clone()).or_default();
        for name in crate_paths(&text) {
            // A lowercase head is a module; anything else a root re-export.
            let to = match owners.get(&name) {
                Some(owner) if !name.starts_with(|c: char| c.is_lowercase()) => owner.clone(),
                _ => name,
            };
            if to != from {
                entry.insert(to);
            }
        }
    }
    arrows
}

/// The top-level module a file belongs to: `src/log/topic.rs` -> `log`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component").as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The first segment of every `crate::` path in the code of `text` (not its
/// comments, not its unit tests), with `crate::{a::x, b}` groups opened.
fn crate_paths(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" && lines.peek().is_some_and(|next| next.trim_start().starts_with("mod ")) {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let head = item.trim().split("::").next().unwrap_or("").trim();
                    if !head.is_empty() {
                        names.push(head.to_string());
                    }
                }
            } else {
                let head: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !head.is_empty() {
                    names.push(head);
                }
            }
        }
    }
    names
}

/// Which module defines each name the crate root re-exports (`crate::Engine`
/// is `engine`'s).
fn root_names(src: &Path, files: &[PathBuf]) -> BTreeMap<String, String> {
    let mut owners = BTreeMap::new();
    for file in files {
        let module = module_of(src, file);
        let text = fs::read_to_string(file).expect("a source file");
        for line in text.lines() {
            let line = line.trim_start();
            let Some(rest) = line.strip_prefix("pub ") else { continue };
            for kind in ["struct ", "enum ", "trait ", "fn ", "type ", "const "] {
                if let Some(name) = rest.strip_prefix(kind) {
                    let name: String = name.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    owners.entry(name).or_insert_with(|| module.clone());
                }
            }
        }
    }
    owners
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.ends_with("bin") {
                // `src/bin/` holds other crates: their `crate::` is their own.
                continue;
            } else if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("lib.rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// docs/ARCHITECTURE.md's reading order names every source file of the
/// repository, so that a newcomer can find each one's place.
#[test]
fn the_reading_order_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
    let order = &doc[doc.find("## Reading order").expect("a reading order")..];
    let mut missing = Vec::new();
    for dir in ["src", "tests", "examples", "benches", "fuzz/fuzz_targets"] {
        let mut files = Vec::new();
        let mut stack = vec![root.join(dir)];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).expect("a directory") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        for file in files {
            let name = file.strip_prefix(root).expect("under the root").to_string_lossy().replace('\\', "/");
            if !order.contains(&format!("`{name}`")) {
                missing.push(name);
            }
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md's reading order does not name: {missing:?}");
}
