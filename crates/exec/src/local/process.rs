//! Running one build tool: its own process group, output streamed line by
//! line, and the whole group terminated (SIGTERM, then SIGKILL after a grace
//! period) when the execution must stop.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use imagefactory_domain::log_text;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::logs::LogWriter;
use super::redact::Redactor;
use crate::{StopReason, StopSignal};

/// How many of a command's last output lines are kept for its error message.
const TAIL_LINES: usize = 12;

/// Environment variables a build tool inherits from the dispatcher; anything
/// else (database URLs, the secret key, tokens) is withheld.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "XDG_RUNTIME_DIR",
    "DOCKER_HOST",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "CONTAINERS_CONF",
    "CONTAINERS_REGISTRIES_CONF",
    "CONTAINERS_STORAGE_CONF",
    "PACKER_PLUGIN_PATH",
];

/// Marks every process of an execution, so a later dispatcher can find (and
/// end) processes a crashed one left behind.
pub(crate) const EXECUTION_MARKER_ENV: &str = "IF_EXECUTION_ID";

/// Combines the dispatcher's stop signal with the build's own deadline.
pub(crate) struct StopWatch {
    signal: StopSignal,
    deadline: Instant,
    signal_closed: bool,
}

impl StopWatch {
    pub(crate) fn new(signal: StopSignal, timeout: Duration) -> Self {
        let now = Instant::now();
        // A timeout too large to represent means no deadline of our own.
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        let deadline = now.checked_add(timeout).unwrap_or_else(|| now + far);
        Self {
            signal,
            deadline,
            signal_closed: false,
        }
    }

    /// A stop asked for already (or the deadline passed).
    pub(crate) fn current(&self) -> Option<StopReason> {
        if let Some(reason) = *self.signal.borrow() {
            return Some(reason);
        }
        (Instant::now() >= self.deadline).then_some(StopReason::Timeout)
    }

    /// Resolves when the execution must stop.
    pub(crate) async fn wait(&mut self) -> StopReason {
        loop {
            if let Some(reason) = self.current() {
                return reason;
            }
            if self.signal_closed {
                tokio::time::sleep_until(self.deadline).await;
                return StopReason::Timeout;
            }
            tokio::select! {
                changed = self.signal.changed() => {
                    // A dropped sender never asks for a stop; only the deadline remains.
                    if changed.is_err() {
                        self.signal_closed = true;
                    }
                }
                _ = tokio::time::sleep_until(self.deadline) => return StopReason::Timeout,
            }
        }
    }
}

/// One tool invocation. Its arguments never contain secrets: those travel in
/// files or in `env`, which other users cannot read from the process list.
#[derive(Debug, Clone)]
pub(crate) struct CommandSpec {
    /// Phase the output is logged under (`clone`, `build`, `push`, `packer`).
    pub source: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

impl CommandSpec {
    pub(crate) fn new(source: &'static str, program: &Path, cwd: &Path) -> Self {
        Self {
            source,
            program: program.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: cwd.to_path_buf(),
        }
    }

    pub(crate) fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// The command as shown in logs: program name and arguments.
    pub(crate) fn display(&self) -> String {
        let name = self
            .program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.display().to_string());
        std::iter::once(name)
            .chain(self.args.iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The tool's name for messages (`podman`, `git`...).
    pub(crate) fn tool(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Turns a raw output line into what is logged (`None` drops it), e.g. to
/// decode packer's machine-readable records.
pub(crate) trait LineObserver: Send {
    fn observe(&mut self, raw: &str) -> Option<String>;
}

/// Logs every line as it is.
pub(crate) struct PlainLines;

impl LineObserver for PlainLines {
    fn observe(&mut self, raw: &str) -> Option<String> {
        Some(raw.to_owned())
    }
}

/// Everything a command run needs from its execution.
pub(crate) struct Runner<'a> {
    pub logs: &'a LogWriter,
    pub redactor: &'a Redactor,
    pub stop: &'a mut StopWatch,
    pub grace_period: Duration,
    /// Base environment (allow-listed variables, TMPDIR, marker).
    pub base_env: &'a [(String, String)],
}

#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    /// Last logged lines (redacted), for error messages.
    pub tail: Vec<String>,
}

impl Finished {
    pub(crate) fn tail_text(&self) -> String {
        self.tail.join("\n")
    }
}

#[derive(Debug)]
pub(crate) enum RunError {
    /// The program could not be started at all (tool name, cause).
    Spawn(String, io::Error),
    /// The execution was told to stop; the process group is gone.
    Stopped(StopReason),
}

impl Runner<'_> {
    /// Runs `spec` to its end or until a stop, streaming its output.
    pub(crate) async fn run(
        &mut self,
        spec: &CommandSpec,
        observer: &mut dyn LineObserver,
    ) -> Result<Finished, RunError> {
        if let Some(reason) = self.stop.current() {
            return Err(RunError::Stopped(reason));
        }
        self.logs
            .line(
                spec.source,
                self.redactor.apply(&format!("$ {}", spec.display())),
            )
            .await;

        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .current_dir(&spec.cwd)
            .env_clear()
            .envs(self.base_env.iter().map(|(k, v)| (k, v)))
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so a stop reaches every process the tool starts.
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| RunError::Spawn(spec.tool(), e))?;
        let pgid = child.id().map(|id| id as i32).unwrap_or(0);
        let mut guard = GroupGuard {
            pgid,
            armed: pgid > 0,
        };

        let (tx, mut rx) = mpsc::channel::<String>(256);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(read_lines(out, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(read_lines(err, tx.clone()));
        }
        drop(tx);

        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        let mut output_open = true;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.map_err(|e| RunError::Spawn(spec.tool(), e))?,
                raw = rx.recv(), if output_open => match raw {
                    Some(raw) => self.log(spec.source, observer, &raw, &mut tail).await,
                    None => output_open = false,
                },
                reason = self.stop.wait() => {
                    terminate_group(&mut child, pgid, self.grace_period).await;
                    guard.armed = false;
                    return Err(RunError::Stopped(reason));
                }
            }
        };
        // Helpers the tool left running would keep the pipes open; they end
        // with the tool.
        kill_group(pgid, libc::SIGKILL);
        guard.armed = false;
        let drain_until = Instant::now() + Duration::from_secs(2);
        while output_open {
            match tokio::time::timeout_at(drain_until, rx.recv()).await {
                Ok(Some(raw)) => self.log(spec.source, observer, &raw, &mut tail).await,
                Ok(None) | Err(_) => output_open = false,
            }
        }
        Ok(Finished {
            status,
            tail: tail.into(),
        })
    }

    async fn log(
        &self,
        source: &'static str,
        observer: &mut dyn LineObserver,
        raw: &str,
        tail: &mut VecDeque<String>,
    ) {
        let Some(text) = observer.observe(raw) else {
            return;
        };
        for line in self.redactor.apply(&text).split('\n') {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
            self.logs.line(source, line.to_owned()).await;
        }
    }
}

async fn read_lines(stream: impl AsyncRead + Unpin, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let end = buf.iter().rposition(|b| !matches!(b, b'\n' | b'\r'));
                let line = &buf[..end.map_or(0, |i| i + 1)];
                // Progress output redraws with '\r'; keep the last state.
                let line = line.rsplit(|b| *b == b'\r').next().unwrap_or(line);
                // Whatever bytes a tool prints are stored (replaced, marked).
                let text = log_text::log_text_from_bytes(line);
                if tx.send(text.into_owned()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Kills the group if the run is abandoned (its future dropped) midway.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            kill_group(self.pgid, libc::SIGKILL);
        }
    }
}

pub(crate) fn kill_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: killpg only sends a signal; a vanished group yields ESRCH.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

/// SIGTERM to the group, SIGKILL to whatever is left after the grace period.
pub(crate) async fn terminate_group(child: &mut Child, pgid: i32, grace: Duration) {
    kill_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    let _ = tokio::time::timeout_at(deadline, child.wait()).await;
    while group_alive(pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if group_alive(pgid) {
        kill_group(pgid, libc::SIGKILL);
    }
    let _ = child.wait().await;
    // SIGKILL cannot be ignored; give the kernel a moment to tear them down.
    let settle = Instant::now() + Duration::from_secs(2);
    while group_alive(pgid) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process of group `pgid` still runs (zombies waiting for init to
/// reap them do not count: they hold no resources and cannot be signalled).
pub(crate) fn group_alive(pgid: i32) -> bool {
    !group_members(pgid).is_empty()
}

/// Live (non-zombie) processes whose process group is `pgid`, from /proc.
pub(crate) fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| matches!(proc_stat(*pid), Some((state, group)) if group == pgid && state != 'Z' && state != 'X'))
        .collect()
}

/// `(state, pgrp)` of a process from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split(' ');
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Process groups of processes carrying `IF_EXECUTION_ID=<id>` in their
/// environment: what a lost dispatcher left running for that execution.
pub(crate) fn groups_of_execution(execution_id: &str) -> Vec<i32> {
    let marker = format!("{EXECUTION_MARKER_ENV}={execution_id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut groups: Vec<i32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
                .unwrap_or(false)
        })
        .filter_map(|pid| proc_stat(pid).map(|(_, pgrp)| pgrp))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Finds a program the way the shell would: a path with a slash as is,
/// otherwise the first executable of that name on `PATH`.
pub(crate) fn find_program(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.components().count() > 1 || program.is_absolute() {
        return executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
}

/// The allow-listed part of the dispatcher's environment plus `extra` names.
pub(crate) fn inherited_env(extra: &[String]) -> Vec<(String, String)> {
    INHERITED_ENV
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .filter_map(|name| std::env::var(&name).ok().map(|v| (name, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let spec = CommandSpec::new("build", Path::new("/usr/bin/podman"), Path::new("/"))
            .args(["build", "--label", "a=b c", "it's"]);
        assert_eq!(spec.display(), r"podman build --label 'a=b c' 'it'\''s'");
        assert_eq!(spec.tool(), "podman");
    }

    #[test]
    fn finds_programs_on_path_and_by_path() {
        assert!(find_program(Path::new("sh")).is_some());
        assert!(find_program(Path::new("/bin/sh")).is_some());
        assert!(find_program(Path::new("surely-not-a-tool-xyz")).is_none());
        assert!(find_program(Path::new("/nonexistent/tool")).is_none());
    }

    #[test]
    fn reads_its_own_process_group() {
        let own = unsafe { libc::getpgrp() };
        assert!(group_members(own).contains(&(std::process::id() as i32)));
    }
}

#[cfg(test)]
mod output_tests {
    use super::*;
    use imagefactory_domain::log_text::REPLACED_MARK;

    #[tokio::test]
    async fn tool_output_that_is_not_text_is_kept_replaced_and_marked() {
        let (tx, mut rx) = mpsc::channel(16);
        let output: &[u8] = b"plain\r\nnul \0 here\ninvalid \xff\xfe\nstep 1\rstep 2\r\n\xc3";
        read_lines(output, tx).await;
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        assert_eq!(
            lines,
            [
                "plain".to_string(),
                format!("nul \u{FFFD} here{REPLACED_MARK}"),
                format!("invalid \u{FFFD}\u{FFFD}{REPLACED_MARK}"),
                "step 2".to_string(),
                format!("\u{FFFD}{REPLACED_MARK}"),
            ]
        );
    }
}
