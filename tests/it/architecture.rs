//! The layering of `src/lib.rs`, enforced: reads every `crate::…` path in `src/` and fails on an
//! import that runs up a layer, on any circle between top-level modules, and on the design's
//! "never" rules, naming the file and line of each offending import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One use of another top-level module: `from` (file, line) names `to`.
#[derive(Debug, Clone)]
struct Import {
    from_module: String,
    file: String,
    line: usize,
    to: String,
}

fn root() -> PathBuf {
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

/// The top-level module a file belongs to: `src/chat/discord/mod.rs` → `chat`.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The layers `src/lib.rs` states, lowest first: lines like ``//! 3. `store`: …``.
fn layers() -> Vec<Vec<String>> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let mut layers = Vec::new();
    for line in lib.lines() {
        let Some(rest) = line.strip_prefix("//! ") else {
            continue;
        };
        let Some((number, names)) = rest.split_once(". ") else {
            continue;
        };
        if number.parse::<usize>().is_err() {
            continue;
        }
        let names = names.split(':').next().unwrap();
        let modules: Vec<String> = names
            .split(',')
            .map(|n| n.trim().trim_matches('`').to_string())
            .filter(|n| !n.is_empty())
            .collect();
        assert!(
            modules
                .iter()
                .all(|m| m.chars().all(|c| c.is_ascii_lowercase() || c == '_')),
            "src/lib.rs: cannot read the layer line {line:?}"
        );
        layers.push(modules);
    }
    assert!(
        layers.len() >= 3,
        "src/lib.rs must state the layers as numbered lines"
    );
    layers
}

/// One path into the crate, outside comments and unit-test modules: `crate::a::b` as `a::b`,
/// or `super::x` as written.
struct Use {
    rel: PathBuf,
    line: usize,
    path: String,
}

/// Every path into the crate in `src/`, once: the layer rules and the engine rule read the same
/// list. Items of a `use crate::{…}` spread over several lines count as `crate::` paths.
fn uses() -> Vec<Use> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().to_path_buf();
        let text = std::fs::read_to_string(&file).unwrap();
        let mut in_use_block = false;
        for (i, raw) in production_lines(&text) {
            let code = raw.split("//").next().unwrap();
            let mut push = |path: String| {
                out.push(Use {
                    rel: rel.clone(),
                    line: i + 1,
                    path,
                })
            };
            let trimmed = code.trim_start();
            if trimmed.starts_with("use super::") {
                push(path_at(&trimmed["use ".len()..]));
            }
            if let Some((_, list)) = code.split_once("crate::{") {
                in_use_block = !code.contains("};");
                braced_paths(list).into_iter().for_each(&mut push);
                continue;
            }
            if in_use_block {
                in_use_block = !code.contains("};");
                braced_paths(code).into_iter().for_each(&mut push);
                continue;
            }
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let path = path_at(rest);
                if !path.is_empty() {
                    push(path);
                }
            }
        }
    }
    out
}

/// The path at the start of `text`: `a::b::C` of `a::b::C;`.
fn path_at(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
        .collect::<String>()
        .trim_end_matches(':')
        .to_string()
}

/// The paths at the start of each item of a braced `use` list that name a module (`a::…`).
fn braced_paths(list: &str) -> Vec<String> {
    list.split(',')
        .map(|item| path_at(item.trim().trim_start_matches('{')))
        .filter(|p| p.contains("::"))
        .collect()
}

/// Every use of another top-level module.
fn imports() -> Vec<Import> {
    uses()
        .into_iter()
        .filter_map(|u| {
            let from_module = module_of(&u.rel);
            let to = u.path.split("::").next().unwrap().to_string();
            (from_module != "main" && from_module != "lib" && to != "super" && to != from_module)
                .then(|| Import {
                    from_module,
                    file: format!("src/{}", u.rel.display()),
                    line: u.line,
                    to,
                })
        })
        .collect()
}

/// A file's lines up to its unit-test module: `#[cfg(test)]` followed by `mod …`, which by
/// habit ends the file. Tests may reach up a layer for their fixtures; the code they test may not.
fn production_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
        .unwrap_or(lines.len());
    lines.into_iter().take(end).enumerate()
}

fn show(i: &Import) -> String {
    format!("{}:{}: {} imports {}", i.file, i.line, i.from_module, i.to)
}

/// `src/executors/<engine>/engine.rs` and what lies under `engine/`: the drivers.
fn is_engine(rel: &Path) -> bool {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.len() >= 3 && parts[0] == "executors" && (parts[2] == "engine.rs" || parts[2] == "engine")
}

#[test]
fn every_module_is_in_one_layer() {
    let layers = layers();
    let mut seen = BTreeMap::new();
    for (n, layer) in layers.iter().enumerate() {
        for m in layer {
            assert!(
                seen.insert(m.clone(), n).is_none(),
                "{m} is in two layers of src/lib.rs"
            );
        }
    }
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|p| module_of(p.strip_prefix(root().join("src")).unwrap()))
        .filter(|m| m != "main" && m != "lib")
        .collect();
    let missing: Vec<_> = modules.iter().filter(|m| !seen.contains_key(*m)).collect();
    assert!(
        missing.is_empty(),
        "modules not placed in a layer of src/lib.rs: {missing:?}"
    );
}

#[test]
fn no_import_runs_up_a_layer() {
    let layer: BTreeMap<String, usize> = layers()
        .into_iter()
        .enumerate()
        .flat_map(|(n, ms)| ms.into_iter().map(move |m| (m, n)))
        .collect();
    let up: Vec<String> = imports()
        .iter()
        .filter(|i| match (layer.get(&i.from_module), layer.get(&i.to)) {
            (Some(from), Some(to)) => to > from,
            _ => false,
        })
        .map(show)
        .collect();
    assert!(
        up.is_empty(),
        "imports that run up a layer:\n{}",
        up.join("\n")
    );
}

#[test]
fn no_circle_between_top_level_modules() {
    let all = imports();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in &all {
        edges.entry(&i.from_module).or_default().insert(&i.to);
    }
    // A module is in a circle when it can reach itself; report each circle's imports.
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(m) = todo.pop() {
            for next in edges.get(m).into_iter().flatten() {
                if seen.insert(*next) {
                    todo.push(next);
                }
            }
        }
        seen
    };
    let mut circles = Vec::new();
    for i in &all {
        if reach(&i.to).contains(i.from_module.as_str()) {
            circles.push(show(i));
        }
    }
    assert!(
        circles.is_empty(),
        "imports that are part of a circle:\n{}",
        circles.join("\n")
    );
}

#[test]
fn engines_import_only_leaves_and_other_engines() {
    let mut broken = Vec::new();
    for u in uses().into_iter().filter(|u| is_engine(&u.rel)) {
        let segments: Vec<&str> = u.path.split("::").collect();
        let allowed = match segments[0] {
            "domain" | "request" => true,
            "executors" => segments.get(2) == Some(&"engine"),
            // From `engine.rs`, `super` is its commands; from under `engine/`, the engine.
            "super" => u.rel.file_name().is_none_or(|n| n != "engine.rs"),
            _ => false,
        };
        if !allowed {
            broken.push(format!(
                "src/{}:{}: an engine imports {}",
                u.rel.display(),
                u.line,
                u.path
            ));
        }
    }
    assert!(
        broken.is_empty(),
        "engines import only domain, request and other engines:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_never_rules_of_the_design_hold() {
    let core = ["alerts", "invocation", "policy", "executors"];
    let mut broken = Vec::new();
    for i in imports() {
        let to = i.to.as_str();
        let from = i.from_module.as_str();
        let rule = if core.contains(&from) && (to == "chat" || to == "http") {
            Some("the core never imports a chat platform or http")
        } else if from == "policy" && to == "executors" {
            Some("policy never imports an engine or executor")
        } else if from == "store" && (to == "alerts" || to == "executors") {
            Some("the store never imports the lifecycle or an executor")
        } else {
            None
        };
        if let Some(rule) = rule {
            broken.push(format!("{} ({rule})", show(&i)));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
