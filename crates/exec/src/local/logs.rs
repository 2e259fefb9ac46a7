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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::{Artifact, ExecutionRef, SinkError};

    #[derive(Default)]
    struct Calls(Mutex<Vec<Vec<LogLine>>>);

    #[async_trait]
    impl ExecutionSink for Calls {
        async fn reference(&self, _: &ExecutionRef) -> Result<(), SinkError> {
            Ok(())
        }
        async fn logs(&self, lines: &[LogLine]) -> Result<(), SinkError> {
            self.0.lock().unwrap().push(lines.to_vec());
            Ok(())
        }
        async fn artifact(&self, _: &Artifact) -> Result<(), SinkError> {
            Ok(())
        }
        async fn progress(&self, _: &str) -> Result<(), SinkError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn heavy_output_goes_out_in_batches_numbered_per_source() {
        let calls = Arc::new(Calls::default());
        // A long interval: only the batch size may trigger sends here.
        let writer = LogWriter::spawn(calls.clone(), 100, Duration::from_secs(3600));
        for i in 0..1000 {
            let source = if i % 2 == 0 { "build" } else { "push" };
            writer.line(source, format!("line {i}")).await;
        }
        writer.finish().await;
        let calls = calls.0.lock().unwrap();
        assert_eq!(calls.len(), 10);
        assert!(calls.iter().all(|batch| batch.len() == 100));
        let lines: Vec<&LogLine> = calls.iter().flatten().collect();
        let build: Vec<i64> = lines
            .iter()
            .filter(|l| l.source == "build")
            .map(|l| l.position)
            .collect();
        assert_eq!(build, (0..500).collect::<Vec<_>>());
        assert_eq!(lines[999].line, "line 999");
        assert_eq!(lines[999].position, 499);
    }

    #[tokio::test]
    async fn a_quiet_line_is_sent_without_waiting_for_more() {
        let calls = Arc::new(Calls::default());
        let writer = LogWriter::spawn(calls.clone(), 100, Duration::from_millis(100));
        writer.line("clone", "Cloning into 'src'...".into()).await;
        // Delivered by the interval flush while the writer is still open.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while calls.0.lock().unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "line never sent");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(calls.0.lock().unwrap()[0][0].line, "Cloning into 'src'...");
        writer.finish().await;
        assert_eq!(calls.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn huge_lines_are_cut() {
        let calls = Arc::new(Calls::default());
        let writer = LogWriter::spawn(calls.clone(), 10, Duration::from_millis(10));
        writer.line("build", "é".repeat(MAX_LINE_BYTES)).await;
        writer.finish().await;
        let line = calls.0.lock().unwrap()[0][0].line.clone();
        assert!(line.len() <= MAX_LINE_BYTES + 20 && line.ends_with("[line truncated]"));
    }
}
