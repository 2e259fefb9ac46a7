//! One step as a host process in its own session and process group, with no
//! controlling terminal: output lines as they are written, the exit code,
//! and the whole group killed when the step ends or its future is dropped
//! (cancellation, timeout, deletion).

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// What to run for a step, with container paths already mapped.
#[derive(Clone, Debug, PartialEq)]
pub struct StepCommand {
    pub program: String,
    pub args: Vec<String>,
    /// The whole environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

/// How a step ended.
#[derive(Clone, Debug, PartialEq)]
pub struct StepExit {
    pub code: i32,
    /// A tool the step needed that is not on this host.
    pub missing_tool: Option<String>,
}

/// Kills the process group when dropped.
struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // SAFETY: killpg only sends a signal; a group that is gone yields ESRCH.
        unsafe {
            libc::killpg(self.0, libc::SIGKILL);
        }
    }
}

/// The tool a shell could not find, from its message: dash says
/// `script: 3: buildctl: not found`, bash `script: line 3: buildctl: command not found`.
pub fn not_found_tool(line: &str) -> Option<String> {
    let head = line
        .strip_suffix(": command not found")
        .or_else(|| line.strip_suffix(": not found"))?;
    let tool = head.rsplit(": ").next()?.trim();
    (!tool.is_empty()).then(|| tool.to_string())
}

/// Run `cmd`, passing each output line (stdout and stderr) to `on_line` as it
/// is written. `Err` when it cannot be started.
pub async fn run(cmd: &StepCommand, mut on_line: impl FnMut(String)) -> Result<StepExit, String> {
    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cmd.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // A session of its own (so also a process group of its own, the one
    // killed at the end): like a container's process, a step has no
    // controlling terminal, so a tool that would prompt — git asking for a
    // password — fails instead of waiting on the terminal kube-sim runs in.
    // SAFETY: between fork and exec only setsid, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cmd.program))?;
    let guard = child.id().map(|pid| GroupGuard(pid as i32));
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let (mut out_open, mut err_open) = (true, true);
    let mut missing = None;
    let mut take = |line: String, missing: &mut Option<String>| {
        if let Some(t) = not_found_tool(&line) {
            *missing = Some(t);
        }
        on_line(line);
    };
    let status = loop {
        tokio::select! {
            l = out.next_line(), if out_open => match l {
                Ok(Some(l)) => take(l, &mut missing),
                _ => out_open = false,
            },
            l = err.next_line(), if err_open => match l {
                Ok(Some(l)) => take(l, &mut missing),
                _ => err_open = false,
            },
            s = child.wait() => break s.map_err(|e| format!("waiting for {}: {e}", cmd.program))?,
        }
    };
    // The container ends with its main process: so does every process it left.
    drop(guard);
    while out_open || err_open {
        tokio::select! {
            l = out.next_line(), if out_open => match l {
                Ok(Some(l)) => take(l, &mut missing),
                _ => out_open = false,
            },
            l = err.next_line(), if err_open => match l {
                Ok(Some(l)) => take(l, &mut missing),
                _ => err_open = false,
            },
        }
    }
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(StepExit {
        code,
        missing_tool: if code == 127 { missing } else { None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_missing_tool_in_shell_messages() {
        assert_eq!(
            not_found_tool("/p/script-0: 12: buildctl-daemonless.sh: not found").as_deref(),
            Some("buildctl-daemonless.sh")
        );
        assert_eq!(
            not_found_tool("/p/s: line 3: kaniko: command not found").as_deref(),
            Some("kaniko")
        );
        assert_eq!(not_found_tool("all good"), None);
    }
}
