//! ARCHITECTURE.md is checked against the code: the crate table against `cargo metadata` (each crate's
//! direct dependencies, both ways), the TorchScript worker's whole dependency tree against the crates it
//! must never link, and the app's module table ("uses") against the `crate::` paths each module's files
//! name. A dependency or an import the document doesn't list fails here until the document says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::*;

fn architecture() -> String {
    std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap()
}

/// The rows of the markdown table that follows `heading`, as cells (outer pipes dropped, header and rule
/// skipped).
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let at = doc.find(heading).unwrap_or_else(|| panic!("ARCHITECTURE.md has no {heading:?}"));
    let rows: Vec<Vec<String>> = doc[at..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim().trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
        .collect();
    assert!(rows.len() > 2, "the table under {heading:?} is empty");
    rows[2..].to_vec()
}

/// A comma-separated cell as a set of names: backticks, "(…)" remarks and "—" dropped.
fn names(cell: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut depth = 0;
    let mut cur = String::new();
    for ch in cell.chars().chain([',']) {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                let n = cur.trim().trim_matches('`').to_string();
                if !n.is_empty() && n != "—" {
                    out.insert(n);
                }
                cur.clear();
            }
            _ if depth == 0 => cur.push(ch),
            _ => {}
        }
    }
    out
}

/// This machine's target triple (`rustc -vV`): the metadata is resolved for it alone, so no manifest of a
/// package for another platform (never downloaded) is needed.
fn host() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().find_map(|l| l.strip_prefix("host: ")).unwrap().trim().to_string()
}

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host()])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_crate_table_lists_every_direct_dependency_of_every_crate() {
    let meta = metadata();
    let members: BTreeSet<&str> =
        meta["workspace_members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    let mut actual: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    let workspace_names: BTreeSet<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| members.contains(p["id"].as_str().unwrap()))
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    for p in meta["packages"].as_array().unwrap() {
        if !members.contains(p["id"].as_str().unwrap()) {
            continue;
        }
        let (mut inside, mut outside) = (BTreeSet::new(), BTreeSet::new());
        for d in p["dependencies"].as_array().unwrap() {
            if !d["kind"].is_null() {
                continue; // dev- and build-dependencies are not the architecture
            }
            let name = d["name"].as_str().unwrap().to_string();
            if workspace_names.contains(&name) {
                inside.insert(name)
            } else {
                outside.insert(name)
            };
        }
        actual.insert(p["name"].as_str().unwrap().to_string(), (inside, outside));
    }
    let doc = architecture();
    let mut documented = BTreeMap::new();
    for row in table(&doc, "## Crates") {
        assert_eq!(row.len(), 5, "a crate row has 5 cells: {row:?}");
        documented.insert(row[0].trim_matches('`').to_string(), (names(&row[3]), names(&row[4])));
    }
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "ARCHITECTURE.md's crate table names the workspace's crates"
    );
    for (name, (inside, outside)) in &actual {
        let (doc_inside, doc_outside) = &documented[name];
        assert_eq!(
            doc_inside, inside,
            "{name}: the workspace crates it depends on (ARCHITECTURE.md vs Cargo.toml)"
        );
        assert_eq!(
            doc_outside, outside,
            "{name}: the external crates it depends on (ARCHITECTURE.md vs Cargo.toml)"
        );
    }
}

#[test]
fn the_torchscript_worker_links_no_store_server_or_async_runtime() {
    let meta = metadata();
    let nodes = meta["resolve"]["nodes"].as_array().unwrap();
    let by_id: BTreeMap<&str, &serde_json::Value> =
        nodes.iter().map(|n| (n["id"].as_str().unwrap(), n)).collect();
    let name_of = |id: &str| -> String {
        meta["packages"].as_array().unwrap().iter().find(|p| p["id"] == id).unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let worker =
        meta["packages"].as_array().unwrap().iter().find(|p| p["name"] == "landscaped-worker").unwrap()["id"]
            .as_str()
            .unwrap();
    // Everything the worker's library and binary link: normal dependencies, transitively.
    let mut seen = BTreeSet::new();
    let mut todo = vec![worker];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in by_id[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null());
            if normal {
                todo.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    let linked: BTreeSet<String> = seen.iter().map(|id| name_of(id)).collect();
    assert!(linked.contains("tch") && linked.contains("landscaped-maths"), "{linked:?}");
    for never in ["landscaped", "sled", "axum", "tokio", "hyper", "plotters", "prometheus"] {
        assert!(!linked.contains(never), "landscaped-worker links {never}: {linked:?}");
    }
}

/// The `crate::X` modules and the workspace crates (`formats`, `maths`, `protocol`) named in `files`.
fn uses_of(files: &[PathBuf], own: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let before = code[..i].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue; // `landscaped_crate::` and the like
                }
                let name: String =
                    code[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != own {
                    out.insert(name);
                }
            }
            for c in ["formats", "maths", "protocol"] {
                if code.contains(&format!("landscaped_{c}")) {
                    out.insert(c.to_string());
                }
            }
        }
    }
    out
}

fn rust_files(p: &Path) -> Vec<PathBuf> {
    if p.is_file() {
        return vec![p.to_path_buf()];
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        out.extend(rust_files(&e.unwrap().path()));
    }
    out.retain(|f| f.extension().is_some_and(|x| x == "rs"));
    out
}

#[test]
fn the_module_table_says_what_each_app_module_uses() {
    let src = root().join("src");
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let file = p.file_name().unwrap().to_str().unwrap().to_string();
        if file == "lib.rs" || file == "main.rs" {
            continue;
        }
        let name = file.trim_end_matches(".rs").to_string();
        modules.entry(name).or_default().extend(rust_files(&p));
    }
    let doc = architecture();
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in table(&doc, "## The app's modules") {
        assert_eq!(row.len(), 3, "a module row has 3 cells: {row:?}");
        // The first cell names one module or several (`query/`, `table.rs`): each gets the same uses.
        for m in names(&row[0]) {
            let m = m.trim_end_matches('/').trim_end_matches(".rs").to_string();
            documented.entry(m).or_default().extend(names(&row[2]));
        }
    }
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        modules.keys().collect::<Vec<_>>(),
        "ARCHITECTURE.md's module table names every top-level module of src/"
    );
    for (m, files) in &modules {
        let uses = uses_of(files, m);
        assert_eq!(&documented[m], &uses, "module {m}: what it uses (ARCHITECTURE.md vs its imports)");
    }
}
