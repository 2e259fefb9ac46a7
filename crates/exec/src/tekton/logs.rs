//! Step logs into the sink as they arrive: childReferences → TaskRun →
//! status.podName → step containers (`follow=true`), in task and step order.
//! Each line's position is its 0-based line number within its source
//! (`<task>/<step>`), so a re-attached follower skips what the sink already
//! holds. Memory per run is bounded: a small batch and one line at a time.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::AsyncBufReadExt;
use futures::io::AsyncBufRead;
use imagefactory_domain::log_text::log_text_from_bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, LogParams};
use serde_json::Value;
use tokio::sync::watch;

use super::client::TektonVersion;
use super::error::{TektonError, describe_kube_error, status_code};
use super::logclient::LogClients;
use super::monitor::RunState;
use super::status::{
    child_taskruns, pipeline_task_order, step_containers, succeeded_condition, taskrun_summary,
};
use super::submit::taskrun_resource;
use crate::{ExecutionSink, LogLine};

/// Longest line kept; the rest of a longer line is dropped.
const MAX_LINE_BYTES: usize = 16 * 1024;
const BATCH_LINES: usize = 64;
const BATCH_DELAY: Duration = Duration::from_millis(200);

/// Waits between reads of a TaskRun without a pod yet, or reopenings of a
/// log stream that broke: 200 ms doubling up to 5 s, no jitter, no limit
/// (the run's end stops them).
const LOG_RETRY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(200))
    .with_max_delay(LOG_RETRY_MAX)
    .without_max_times();
const LOG_RETRY_MAX: Duration = Duration::from_secs(5);

/// The next wait of an unlimited backoff.
fn next_delay(backoff: &mut impl Iterator<Item = Duration>) -> Duration {
    backoff.next().unwrap_or(LOG_RETRY_MAX)
}

pub struct LogFollower {
    /// For the `pods/log` streams and TaskRun reads (HTTP/2-multiplexed
    /// when possible).
    pub log_clients: LogClients,
    pub version: TektonVersion,
    pub namespace: String,
    pub sink: Arc<dyn ExecutionSink>,
    /// Last position the sink holds per source.
    pub resume: HashMap<String, i64>,
    /// The run as the shared watch sees it; set by [`LogFollower::run`].
    pub run_state: Option<watch::Receiver<RunState>>,
    /// TaskRuns seen finished while following, by name: their results and
    /// step states are final, so the executor need not read them again.
    pub finished_taskruns: FinishedTaskRuns,
    /// How the reads go, for the end of the run (see [`LogReads`]).
    pub reads: LogReads,
    /// How long the last read of a finished step's log is retried while it
    /// fails: bounded by time, not tries, so an API server down for longer
    /// than a few retries does not cost the step's tail.
    pub patience: Duration,
}

/// How a follower's reads of the cluster are going, shared with the end of
/// the run: a follower whose reads fail transiently (the API server down or
/// failing) is waited for longer than one that is merely slow, and what it
/// could not read is named in the build's log.
#[derive(Clone)]
pub struct LogReads(Arc<watch::Sender<ReadState>>);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadState {
    /// No read has been answered since this instant: the first of the
    /// failures, and the last one's cause (never a remote body).
    pub failing: Option<(tokio::time::Instant, String)>,
    /// The sink has held a batch of lines since this instant (it retries
    /// while the database is away).
    pub storing_since: Option<tokio::time::Instant>,
    /// The step being read.
    pub source: Option<String>,
    /// Steps whose end the follower gave up reading (lines may be missing),
    /// with why.
    pub incomplete: Vec<(String, String)>,
}

impl ReadState {
    /// Whether the follower is waiting: for the cluster or the database.
    pub fn waiting(&self) -> bool {
        self.failing.is_some() || self.storing_since.is_some()
    }
}

impl Default for LogReads {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(ReadState::default())))
    }
}

impl LogReads {
    pub fn subscribe(&self) -> watch::Receiver<ReadState> {
        self.0.subscribe()
    }

    pub fn current(&self) -> ReadState {
        self.0.borrow().clone()
    }

    /// A read failed transiently; receivers hear only the first of a series.
    fn failed(&self, cause: String) {
        self.0.send_if_modified(|s| match &mut s.failing {
            Some((_, last)) => {
                *last = cause;
                false
            }
            None => {
                s.failing = Some((tokio::time::Instant::now(), cause));
                true
            }
        });
    }

    /// The cluster answered a read.
    fn answered(&self) {
        self.0.send_if_modified(|s| s.failing.take().is_some());
    }

    /// A batch of lines is with the sink (`true`), or stored or lost.
    fn storing(&self, on: bool) {
        self.0.send_if_modified(|s| match (on, s.storing_since) {
            (true, None) => {
                s.storing_since = Some(tokio::time::Instant::now());
                true
            }
            (false, Some(_)) => {
                s.storing_since = None;
                true
            }
            _ => false,
        });
    }

    fn reading(&self, source: &str) {
        self.0.send_if_modified(|s| {
            s.source = Some(source.to_string());
            false
        });
    }

    fn gave_up(&self, source: &str, why: String) {
        self.0.send_if_modified(|s| {
            s.incomplete.push((source.to_string(), why));
            false
        });
    }
}

/// Finished TaskRuns' summaries (`taskrun_summary`), by TaskRun name, held
/// from the moment the follower sees one finished until the run ends. Kept
/// as JSON text: a summary is a few hundred bytes of text, but several kB as
/// a `serde_json::Value` (a map node per small object), and thousands of
/// builds in flight each hold one or two for minutes.
#[derive(Clone, Default)]
pub struct FinishedTaskRuns(Arc<std::sync::Mutex<HashMap<String, Box<str>>>>);

impl FinishedTaskRuns {
    pub fn insert(&self, name: &str, summary: &Value) {
        self.0
            .lock()
            .unwrap()
            .insert(name.to_string(), summary.to_string().into_boxed_str());
    }

    /// The summary of `name`, if it was seen finished (and forgets it).
    pub fn take(&self, name: &str) -> Option<Value> {
        let text = self.0.lock().unwrap().remove(name)?;
        serde_json::from_str(&text).ok()
    }
}

pub fn source_name(task: &str, container: &str) -> String {
    format!(
        "{task}/{}",
        container.strip_prefix("step-").unwrap_or(container)
    )
}

impl LogFollower {
    /// Follow every task's steps until the run ends and its logs are read.
    pub async fn run(mut self, mut run: watch::Receiver<RunState>) -> Result<(), TektonError> {
        self.run_state = Some(run.clone());
        let mut done: Vec<String> = Vec::new();
        loop {
            let (object, finished) = match &*run.borrow_and_update() {
                RunState::Present(obj) => {
                    let finished = succeeded_condition(obj).is_some_and(|c| c.status != "Unknown");
                    (obj.clone(), finished)
                }
                RunState::Deleted => return Ok(()),
                RunState::Unknown | RunState::Missing => (Arc::new(Value::Null), false),
            };
            let children = child_taskruns(&object);
            let order = pipeline_task_order(&object);
            // Not held while a task's logs are followed (minutes): the watch
            // has newer versions by then, and each is kilobytes.
            drop(object);
            // Next task in declaration order not yet followed.
            let next = order.iter().find(|t| !done.contains(t));
            match next {
                None if !order.is_empty() => return Ok(()),
                Some(task) => {
                    if let Some((_, taskrun)) = children.iter().find(|(t, _)| t == task) {
                        let task = task.clone();
                        self.follow_task(&task, taskrun).await?;
                        done.push(task);
                        continue;
                    }
                    if finished {
                        // Never started (skipped or the run failed first).
                        done.push(task.clone());
                        continue;
                    }
                }
                None => {
                    if finished {
                        return Ok(());
                    }
                }
            }
            if run.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// TaskRuns, read over the log streams' multiplexed connections:
    /// thousands of followers reading at once would otherwise each open (and
    /// leave idle in the pool) an HTTP/1.1 + TLS connection. Taken per
    /// attempt, so a server without HTTP/2 switches the client.
    fn taskruns(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.log_clients.client(),
            &self.namespace,
            &taskrun_resource(self.version),
        )
    }

    // The kube request futures below are boxed: inline, the largest of them
    // would size this future (which lives as long as the build) while the
    // follower spends nearly all its time waiting for the next log line.
    async fn follow_task(&mut self, task: &str, taskrun_name: &str) -> Result<(), TektonError> {
        let Some((pod, containers)) = self.wait_for_pod(taskrun_name).await? else {
            return Ok(());
        };
        for container in containers {
            let source = source_name(task, &container);
            self.follow_container(taskrun_name, &pod, &container, &source)
                .await?;
        }
        Ok(())
    }

    /// The TaskRun's pod and step containers, once it has them (read with
    /// backoff); `None` when the TaskRun is gone or finished without a pod.
    async fn wait_for_pod(
        &mut self,
        taskrun_name: &str,
    ) -> Result<Option<(String, Vec<String>)>, TektonError> {
        let mut backoff = LOG_RETRY.build();
        loop {
            let taskrun = match self.noted(Box::pin(self.taskruns().get_opt(taskrun_name)).await) {
                Ok(Some(tr)) => serde_json::to_value(tr).unwrap_or(Value::Null),
                Ok(None) => return Ok(None),
                Err(e) if super::error::is_transient(&e) => {
                    tokio::time::sleep(next_delay(&mut backoff)).await;
                    continue;
                }
                Err(e) => {
                    return Err(TektonError::kube(
                        format!("reading TaskRun {taskrun_name}"),
                        e,
                    ));
                }
            };
            let finished = succeeded_condition(&taskrun).is_some_and(|c| c.status != "Unknown");
            let pod = taskrun
                .pointer("/status/podName")
                .and_then(Value::as_str)
                .map(str::to_string);
            let containers = step_containers(&taskrun);
            match pod {
                Some(pod) if !containers.is_empty() => return Ok(Some((pod, containers))),
                _ if finished => return Ok(None),
                _ => {
                    self.pause(next_delay(&mut backoff)).await;
                }
            }
        }
    }

    /// Stream one container's log, reopening it if the stream ends before the
    /// step did, and skipping lines the sink already has.
    async fn follow_container(
        &mut self,
        taskrun_name: &str,
        pod: &str,
        container: &str,
        source: &str,
    ) -> Result<(), TektonError> {
        let params = LogParams {
            container: Some(container.to_string()),
            follow: true,
            ..Default::default()
        };
        self.reads.reading(source);
        let mut backoff = LOG_RETRY.build();
        loop {
            // Per attempt: a server without HTTP/2 switches the log client.
            let pods: Api<Pod> = Api::namespaced(self.log_clients.client(), &self.namespace);
            let have = self.resume.get(source).copied().unwrap_or(-1);
            let mut ended_cleanly = false;
            match self.noted(Box::pin(pods.log_stream(pod, &params)).await) {
                Ok(stream) => {
                    let stream: Pin<Box<dyn AsyncBufRead + Send>> = Box::pin(stream);
                    ended_cleanly = self.copy_lines(stream, source, have).await?;
                }
                // Pod gone (run deleted or pruned): nothing more to read.
                Err(e) if status_code(&e) == Some(404) => return Ok(()),
                // Waiting to start (400) or a transient failure: retry below.
                Err(e) if status_code(&e) == Some(400) || super::error::is_transient(&e) => {}
                Err(e) => {
                    return Err(TektonError::kube(
                        format!("reading log of {pod}/{container}"),
                        e,
                    ));
                }
            }
            // The stream ended: is the step over, or did the connection drop?
            let over = match self.noted(Box::pin(self.taskruns().get_opt(taskrun_name)).await) {
                Ok(Some(tr)) => {
                    let tr = serde_json::to_value(tr).unwrap_or(Value::Null);
                    let finished = succeeded_condition(&tr).is_some_and(|c| c.status != "Unknown");
                    let over = finished || step_terminated(&tr, container);
                    if finished {
                        // Held until the run ends: keep only what the end needs.
                        self.finished_taskruns
                            .insert(taskrun_name, &taskrun_summary(&tr));
                    }
                    over
                }
                Ok(None) => return Ok(()),
                Err(e) if super::error::is_transient(&e) => false,
                Err(e) => {
                    return Err(TektonError::kube(
                        format!("reading TaskRun {taskrun_name}"),
                        e,
                    ));
                }
            };
            // A follow stream that ended cleanly usually means the container
            // just exited and the status is catching up: look again soon.
            let wait = if ended_cleanly {
                Duration::from_millis(100)
            } else {
                next_delay(&mut backoff)
            };
            if over && ended_cleanly {
                // The follow stream ran to the container's end: nothing left.
                return Ok(());
            }
            if over || self.pause(wait).await {
                return self.read_rest(&pods, pod, &params, source).await;
            }
        }
    }

    /// One last read of a finished container's log picks up lines written
    /// just before the end. Retried while the API server fails transiently
    /// or the stream breaks, for [`LogFollower::patience`]: a failed last
    /// read lost the step's tail (its error message, for a failing step)
    /// under injected 5xx/429s, and a count of tries ran out within a
    /// 30 s outage.
    async fn read_rest(
        &mut self,
        pods: &Api<Pod>,
        pod: &str,
        params: &LogParams,
        source: &str,
    ) -> Result<(), TektonError> {
        let last = LogParams {
            follow: false,
            ..params.clone()
        };
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut backoff = LOG_RETRY.build();
        loop {
            match self.noted(Box::pin(pods.log_stream(pod, &last)).await) {
                Ok(stream) => {
                    let have = self.resume.get(source).copied().unwrap_or(-1);
                    let stream: Pin<Box<dyn AsyncBufRead + Send>> = Box::pin(stream);
                    if self.copy_lines(stream, source, have).await? {
                        return Ok(());
                    }
                }
                Err(e) if super::error::is_transient(&e) => {}
                // Gone, or refused for good: nothing more can be read.
                Err(_) => return Ok(()),
            }
            // The last try comes at the deadline.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(next_delay(&mut backoff).min(left)).await;
        }
        tracing::warn!(pod, source, patience = ?self.patience, "the end of a step's log could not be read");
        let why = match &self.reads.current().failing {
            Some((_, cause)) => format!(
                "the cluster failed the reads for {:.0} s ({cause})",
                self.patience.as_secs_f64()
            ),
            None => format!(
                "the reads kept breaking for {:.0} s",
                self.patience.as_secs_f64()
            ),
        };
        self.reads.gave_up(source, why);
        Ok(())
    }

    /// `read`, after telling [`LogReads`] how it went: answered (whatever
    /// the answer) or failed transiently.
    fn noted<T>(&self, read: Result<T, kube::Error>) -> Result<T, kube::Error> {
        match &read {
            Err(e) if super::error::is_transient(e) => self.reads.failed(describe_kube_error(e)),
            _ => self.reads.answered(),
        }
        read
    }

    /// Sleep, waking early when the run ends; true if it has ended.
    async fn pause(&mut self, delay: Duration) -> bool {
        let Some(run) = self.run_state.as_mut() else {
            tokio::time::sleep(delay).await;
            return false;
        };
        let ended = |state: &RunState| match state {
            RunState::Present(obj) => {
                succeeded_condition(obj).is_some_and(|c| c.status != "Unknown")
            }
            RunState::Deleted => true,
            _ => false,
        };
        if ended(&run.borrow()) {
            return true;
        }
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return ended(&run.borrow()),
                changed = run.changed() => {
                    if changed.is_err() {
                        sleep.as_mut().await;
                        return false;
                    }
                    if ended(&run.borrow_and_update()) {
                        return true;
                    }
                }
            }
        }
    }

    async fn copy_lines(
        &mut self,
        mut stream: Pin<Box<dyn AsyncBufRead + Send>>,
        source: &str,
        have: i64,
    ) -> Result<bool, TektonError> {
        let mut position: i64 = 0;
        let mut batch: Vec<LogLine> = Vec::new();
        let mut line: Vec<u8> = Vec::new();
        // Lines go out at most BATCH_DELAY after they arrived.
        let mut batch_started = tokio::time::Instant::now();
        let mut clean = true;
        loop {
            let wait = if batch.is_empty() {
                Duration::from_secs(3600)
            } else {
                BATCH_DELAY.saturating_sub(batch_started.elapsed())
            };
            match tokio::time::timeout(wait, read_line(&mut stream, &mut line)).await {
                Err(_) => {
                    self.flush(&mut batch, source).await;
                    continue;
                }
                Ok(Err(e)) => {
                    self.reads
                        .failed(format!("a log stream broke ({})", e.kind()));
                    clean = false;
                    break;
                }
                Ok(Ok(false)) => break,
                Ok(Ok(true)) => {}
            }
            if position > have {
                if batch.is_empty() {
                    batch_started = tokio::time::Instant::now();
                }
                batch.push(LogLine {
                    source: source.to_string(),
                    position,
                    line: decode(&line),
                });
            }
            line.clear();
            position += 1;
            if batch.len() >= BATCH_LINES
                || (!batch.is_empty() && batch_started.elapsed() >= BATCH_DELAY)
            {
                self.flush(&mut batch, source).await;
            }
        }
        self.flush(&mut batch, source).await;
        Ok(clean)
    }

    async fn flush(&mut self, batch: &mut Vec<LogLine>, source: &str) {
        let Some(last) = batch.last() else {
            return;
        };
        let last = last.position;
        // Lost lines (the sink retried and reported them) must not stop the
        // following ones, of this step or of later tasks, from being stored.
        // While the sink holds the batch (retrying while the database is
        // away) the end of the run waits for it, as for failing reads.
        self.reads.storing(true);
        let stored = self.sink.logs(batch).await;
        self.reads.storing(false);
        if let Err(e) = stored {
            tracing::debug!(error = %e, source, lines = batch.len(), "log lines lost");
        }
        self.resume.insert(source.to_string(), last);
        batch.clear();
    }
}

/// Whatever bytes a step prints are stored (not text: replaced, marked),
/// except that a character cut by [`MAX_LINE_BYTES`] is dropped, not taken
/// for bytes that are not text.
fn decode(line: &[u8]) -> String {
    let mut bytes = line;
    if bytes.len() >= MAX_LINE_BYTES
        && let Err(e) = std::str::from_utf8(bytes)
        && e.error_len().is_none()
    {
        bytes = &bytes[..e.valid_up_to()];
    }
    log_text_from_bytes(bytes).into_owned()
}

/// Read one line (without its newline) into `line`, keeping at most
/// [`MAX_LINE_BYTES`]. `Ok(false)` at the end of the stream. Cancel-safe
/// enough for our use: a timeout only interrupts between buffer reads, and
/// bytes already taken stay in `line`.
async fn read_line(
    stream: &mut Pin<Box<dyn AsyncBufRead + Send>>,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut any = !line.is_empty();
    loop {
        let buf = stream.fill_buf().await?;
        if buf.is_empty() {
            return Ok(any);
        }
        any = true;
        let (chunk, found) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let consumed = found.unwrap_or(buf.len());
        stream.as_mut().consume(consumed);
        if found.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(true);
        }
    }
}

fn step_terminated(taskrun: &Value, container: &str) -> bool {
    taskrun
        .pointer("/status/steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|s| {
            let name_matches = s.get("container").and_then(Value::as_str) == Some(container)
                || s.get("name")
                    .and_then(Value::as_str)
                    .map(|n| format!("step-{n}"))
                    .as_deref()
                    == Some(container);
            name_matches && s.get("terminated").is_some()
        })
}

#[cfg(test)]
mod tests {
    use imagefactory_domain::log_text::REPLACED_MARK;

    use super::*;

    #[test]
    fn step_output_is_decoded_whatever_its_bytes() {
        assert_eq!(decode(b"plain"), "plain");
        assert_eq!(decode(b"a\0b"), format!("a\u{FFFD}b{REPLACED_MARK}"));
        assert_eq!(decode(b"\xff"), format!("\u{FFFD}{REPLACED_MARK}"));
        // Only a line at the length limit is taken as cut.
        assert_eq!(
            decode(b"short \xc3"),
            format!("short \u{FFFD}{REPLACED_MARK}")
        );
        // "é" cut after its first byte at the limit.
        let mut cut = "a".repeat(MAX_LINE_BYTES - 1).into_bytes();
        cut.push(0xc3);
        assert_eq!(decode(&cut), "a".repeat(MAX_LINE_BYTES - 1));
    }
}
