//! Issue 4: kube-sim is never reachable from production code paths. In the
//! resolved dependency graph (normal dependencies only, as linked into a
//! binary), the `imagefactory` package must not reach `kube-sim`, while
//! `imagefactory-dev` does.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

/// Package names reachable from `root` through normal (non-dev, non-build) dependencies.
fn linked(metadata: &Value, root: &str) -> BTreeSet<String> {
    let packages: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let start = packages
        .iter()
        .find(|(_, name)| **name == root)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("package {root} not in the workspace"));
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        if !seen.insert(packages[id].to_owned()) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                stack.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    seen
}

/// The host's target triple (`rustc -vV`; rustc sits beside cargo).
fn host_triple() -> String {
    let cargo = std::path::Path::new(env!("CARGO"));
    let beside = cargo.with_file_name("rustc");
    let rustc = if beside.exists() {
        beside
    } else {
        "rustc".into()
    };
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("a host line")
        .to_owned()
}

#[test]
fn production_binary_does_not_link_kube_sim() {
    // Filtered to the host so that no other platform's crates must be
    // downloaded (works offline once the build's crates are fetched).
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host_triple(), "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let production = linked(&metadata, "imagefactory");
    assert!(production.contains("imagefactory-exec"), "{production:?}");
    assert!(!production.contains("kube-sim"), "{production:?}");
    let dev = linked(&metadata, "imagefactory-dev");
    assert!(dev.contains("kube-sim"), "{dev:?}");
}
