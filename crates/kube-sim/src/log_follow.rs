//! `pods/{name}/log?follow=true`: the stream of a container's lines until it
//! has terminated and everything it wrote was sent.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use crate::api::LogOptions;
use crate::store::{Kind, LogLine, Store};

/// Where a followed log comes from. The seam lets a test write a line at
/// the worst moment (between two of the follower's reads).
pub(crate) trait LogSource: Send + Sync + 'static {
    /// The lines from index `from` on.
    fn lines(&self, from: usize) -> Vec<LogLine>;
    /// Whether the container (or its pod) is gone for good. A container is
    /// marked terminated only after its last line was written.
    fn terminated(&self) -> bool;
    /// Notified when a line is appended or the pod changes.
    fn waiter(&self) -> Arc<Notify>;
}

/// One container's log in the store.
pub(crate) struct StoreLog {
    pub store: Arc<Store>,
    pub kind: Kind,
    pub ns: String,
    pub pod_name: String,
    pub container: String,
}

impl LogSource for StoreLog {
    fn lines(&self, from: usize) -> Vec<LogLine> {
        self.store
            .log_lines(&self.ns, &self.pod_name, &self.container, from)
    }

    fn terminated(&self) -> bool {
        match self.store.get(&self.kind, Some(&self.ns), &self.pod_name) {
            None => true,
            Some(p) => crate::api::container_terminated(&p, &self.container),
        }
    }

    fn waiter(&self) -> Arc<Notify> {
        self.store.log_waiter(&self.ns, &self.pod_name)
    }
}

/// A followed container log: sends new lines until the container has
/// terminated and everything it wrote was sent, or the client went away.
pub(crate) struct LogFollow<S> {
    pub source: S,
    /// Lines of the log already looked at.
    pub seen: usize,
    pub opts: LogOptions,
}

impl<S: LogSource> LogFollow<S> {
    pub async fn run(mut self, initial: Vec<Bytes>, tx: mpsc::Sender<Bytes>) {
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let waiter = self.source.waiter();
        loop {
            let notified = waiter.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Termination before the read: the last lines are written before
            // the container is marked terminated, so a read after seeing it
            // terminated has them all. (Read first, a line written between
            // the read and the check was lost.)
            let ended = self.source.terminated();
            let new = self.source.lines(self.seen);
            self.seen += new.len();
            for l in &new {
                if tx.send(self.opts.format(l)).await.is_err() {
                    return;
                }
            }
            if ended {
                return;
            }
            if !new.is_empty() {
                continue;
            }
            tokio::select! {
                _ = notified => {}
                _ = tx.closed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A container that writes its last line and terminates exactly when
    /// the follower asks whether it has terminated: the race a real writer
    /// can win between the follower's two reads.
    struct LastLineAtTheEnd {
        lines: Mutex<Vec<LogLine>>,
        done: AtomicBool,
        notify: Arc<Notify>,
    }

    fn line(text: &str) -> LogLine {
        LogLine {
            time: chrono::Utc::now(),
            text: text.to_string(),
        }
    }

    impl LogSource for Arc<LastLineAtTheEnd> {
        fn lines(&self, from: usize) -> Vec<LogLine> {
            let lines = self.lines.lock().unwrap();
            lines.get(from..).unwrap_or_default().to_vec()
        }

        fn terminated(&self) -> bool {
            if !self.done.swap(true, Ordering::SeqCst) {
                self.lines.lock().unwrap().push(line("last"));
            }
            true
        }

        fn waiter(&self) -> Arc<Notify> {
            self.notify.clone()
        }
    }

    #[tokio::test]
    async fn a_line_written_just_before_termination_is_sent() {
        let source = Arc::new(LastLineAtTheEnd {
            lines: Mutex::new(vec![line("first")]),
            done: AtomicBool::new(false),
            notify: Arc::new(Notify::new()),
        });
        let follow = LogFollow {
            source,
            seen: 1,
            opts: LogOptions::default(),
        };
        let (tx, mut rx) = mpsc::channel(16);
        follow.run(vec![Bytes::from("first\n")], tx).await;
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.push(String::from_utf8(b.to_vec()).unwrap());
        }
        assert_eq!(got, ["first\n", "last\n"]);
    }
}
