//! Where the Tekton test data is. By default the repository's own fixtures
//! (`tests/testdata/tekton`: `examples/` and `catalog/`); `KUBE_SIM_TEKTON_DIR`
//! points the example tests at another set with the same layout, such as
//! Tekton's own examples and catalog Tasks.

// Included by several test targets, each using part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Names a directory with `examples/` and `catalog/` to check instead of ours.
pub const DIR_VAR: &str = "KUBE_SIM_TEKTON_DIR";

/// The repository's own fixtures.
pub fn own_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/tekton")
}

/// The set under test: `KUBE_SIM_TEKTON_DIR` when set, else [`own_dir`].
pub fn tekton_dir() -> PathBuf {
    match std::env::var_os(DIR_VAR) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => own_dir(),
    }
}

/// The `*.yaml` files of `<root>/<sub>`, sorted.
pub fn yaml_files(root: &Path, sub: &str) -> Vec<PathBuf> {
    let dir = root.join(sub);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the Tekton test data; {DIR_VAR} names another set)",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// File names (no directory) of the `*.yaml` files of `<root>/<sub>`, sorted.
pub fn yaml_names(root: &Path, sub: &str) -> Vec<String> {
    yaml_files(root, sub)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}
