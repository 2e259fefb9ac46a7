//! Batching log lines into the sink: one background task per execution
//! numbers lines per source and sends them every `batch_lines` lines or every
//! `flush_interval`, whichever comes first, so heavy output never waits on a
//! database write per line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{ExecutionSink, LogLine};

/// Longest line kept; the rest is cut (progress bars can be megabytes).
const MAX_LINE_BYTES: usize = 16 * 1024;

pub(crate) struct LogWriter {
    tx: mpsc::Sender<(&'static str, String)>,
    task: JoinHandle<()>,
}

impl LogWriter {
    pub(crate) fn spawn(
        sink: Arc<dyn ExecutionSink>,
        batch_lines: usize,
        flush_interval: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(batch_lines.max(1) * 4);
        let task = tokio::spawn(forward(sink, rx, batch_lines.max(1), flush_interval));
        Self { tx, task }
    }

    /// Queues one line (already redacted) of `source`.
    pub(crate) async fn line(&self, source: &'static str, mut text: String) {
        if text.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" [line truncated]");
        }
        // The forwarder only stops when this writer is finished.
        let _ = self.tx.send((source, text)).await;
    }

    /// Sends everything still buffered and stops the forwarder.
    pub(crate) async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

async fn forward(
    sink: Arc<dyn ExecutionSink>,
    mut rx: mpsc::Receiver<(&'static str, String)>,
    batch_lines: usize,
    flush_interval: Duration,
) {
    let mut positions: HashMap<&'static str, i64> = HashMap::new();
    let mut buffer: Vec<LogLine> = Vec::new();
    let mut flush_at: Option<Instant> = None;
    let mut warned = false;
    loop {
        let received = match flush_at {
            Some(at) => tokio::select! {
                received = rx.recv() => received,
                _ = tokio::time::sleep_until(at) => {
                    flush(&*sink, &mut buffer, &mut warned).await;
                    flush_at = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some((source, line)) = received else {
            flush(&*sink, &mut buffer, &mut warned).await;
            return;
        };
        let position = positions.entry(source).or_insert(0);
        buffer.push(LogLine {
            source: source.to_owned(),
            position: *position,
            line,
        });
        *position += 1;
        if buffer.len() >= batch_lines {
            flush(&*sink, &mut buffer, &mut warned).await;
            flush_at = None;
        } else if flush_at.is_none() {
            flush_at = Some(Instant::now() + flush_interval);
        }
    }
}

async fn flush(sink: &dyn ExecutionSink, buffer: &mut Vec<LogLine>, warned: &mut bool) {
    if buffer.is_empty() {
        return;
    }
    // Lost log lines do not fail a build; say so once per execution.
    if let Err(err) = sink.logs(buffer).await
        && !*warned
    {
        tracing::warn!(error = %err, "storing local build logs failed; some lines are lost");
        *warned = true;
    }
    buffer.clear();
}
