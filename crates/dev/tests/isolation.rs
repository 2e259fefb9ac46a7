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
    let metadata = metadata();
    let production = linked(&metadata, "imagefactory");
    assert!(production.contains("imagefactory-exec"), "{production:?}");
    assert!(!production.contains("kube-sim"), "{production:?}");
    // Nor the quick start's and tests' local git server and registry.
    assert!(
        !production.contains("imagefactory-loopback"),
        "{production:?}"
    );
    let dev = linked(&metadata, "imagefactory-dev");
    assert!(dev.contains("kube-sim"), "{dev:?}");
    assert!(dev.contains("imagefactory-loopback"), "{dev:?}");
}

/// The workspace's resolved graph on this host (`cargo metadata`), filtered
/// to the host so that no other platform's crates must be downloaded (works
/// offline once the build's crates are fetched).
fn metadata() -> Value {
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
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Package names `root` depends on directly (normal dependencies).
fn direct(metadata: &Value, root: &str) -> BTreeSet<String> {
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == root)
        .unwrap_or_else(|| panic!("package {root} not in the workspace"));
    package["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null())
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect()
}

/// ARCHITECTURE.md, Invariants: `domain` links neither axum nor sqlx nor
/// kube, and only `exec` depends on a Kubernetes client (the others reach
/// clusters through the `Executor` trait).
#[test]
fn domain_is_pure_and_only_exec_depends_on_kubernetes() {
    let metadata = metadata();
    let domain = linked(&metadata, "imagefactory-domain");
    for banned in ["axum", "sqlx", "kube", "kube-client"] {
        assert!(
            !domain.contains(banned),
            "domain links {banned}: {domain:?}"
        );
    }
    assert!(direct(&metadata, "imagefactory-exec").contains("kube"));
    for krate in [
        "imagefactory-domain",
        "imagefactory-store",
        "imagefactory-api",
        "imagefactory-dispatch",
        "imagefactory",
    ] {
        let deps = direct(&metadata, krate);
        for client in ["kube", "kube-client", "kube-runtime", "k8s-openapi"] {
            assert!(!deps.contains(client), "{krate} depends on {client}");
        }
    }
}

/// `imagefactory-test-support` (fresh databases, child processes, an API
/// client) is for tests: every crate that uses it does so as a
/// dev-dependency, so nothing built for production links it.
#[test]
fn test_support_is_only_ever_a_dev_dependency() {
    let metadata = metadata();
    let mut dev_users = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        for dep in package["dependencies"].as_array().unwrap() {
            if dep["name"] != "imagefactory-test-support" {
                continue;
            }
            assert_eq!(
                dep["kind"], "dev",
                "{name} depends on imagefactory-test-support as a {} dependency",
                dep["kind"]
            );
            dev_users.push(name.to_owned());
        }
    }
    // The check saw the crates that do use it.
    for user in [
        "imagefactory-api",
        "imagefactory-dispatch",
        "imagefactory",
        "imagefactory-dev",
    ] {
        assert!(
            dev_users.iter().any(|u| u == user),
            "{user} not among {dev_users:?}"
        );
    }
    for root in ["imagefactory", "imagefactory-dev"] {
        let linked = linked(&metadata, root);
        assert!(
            !linked.contains("imagefactory-test-support"),
            "{root} links it: {linked:?}"
        );
    }
}

/// ARCHITECTURE.md, Invariants: only `exec` runs programs (build tools,
/// git). No other crate's `src` spawns a process.
#[test]
fn only_exec_spawns_processes() {
    let crates = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut offenders = Vec::new();
    let mut scanned = 0;
    for krate in std::fs::read_dir(crates).unwrap() {
        let krate = krate.unwrap().path();
        let name = krate.file_name().unwrap().to_string_lossy().into_owned();
        // test-support runs the binaries under test; it is only ever a
        // dev-dependency (`test_support_is_only_ever_a_dev_dependency`).
        // loopback runs `git http-backend` and `docker-registry` for the
        // quick start's --real-steps and tests; the production binary does
        // not link it (`production_binary_does_not_link_kube_sim`).
        if name == "exec" || name == "test-support" || name == "loopback" {
            continue;
        }
        let mut stack = vec![krate.join("src")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                // The load generator runs the server under load and pgbench;
                // it is a binary of its own, never linked into the service.
                if path.ends_with("dev/src/load") {
                    continue;
                }
                // --real-steps makes the quick start's sample repository
                // with git; the dev binary is no part of the service either.
                if path.ends_with("dev/src/real.rs") {
                    continue;
                }
                // kube-sim's host step runner plays a kubelet running a
                // TaskRun's steps (off by default; tests and the simulator
                // only), never part of the service.
                if path.ends_with("kube-sim/src/tekton/host") {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    scanned += 1;
                    let text = std::fs::read_to_string(&path).unwrap();
                    if text.contains("process::Command") || text.contains("Command::new") {
                        offenders.push(path);
                    }
                }
            }
        }
    }
    assert!(scanned > 50, "only {scanned} files scanned");
    assert!(
        offenders.is_empty(),
        "spawning processes outside exec: {offenders:?}"
    );
}
