//! Whether the host tools a test drives are installed.

use std::process::{Command, Stdio};

/// True when `tool` is a command on `PATH`.
pub fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v -- \"$1\"", "sh", tool])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when every tool is on `PATH`; otherwise prints which are missing
/// and that `test` is skipped (CI installs them: `.ci/install-local-tools.sh`).
pub fn have_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED {test}: {} not installed (run .ci/install-local-tools.sh)",
            missing.join(", ")
        );
    }
    missing.is_empty()
}
