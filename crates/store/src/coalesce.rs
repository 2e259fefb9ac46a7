//! Requests waiting at one moment answered by one statement.
//!
//! Under load a request's cost in PostgreSQL is less its statement than its
//! round trips: the pool pings a connection when it hands it out and again
//! when it takes it back, every message wakes a backend and the server in
//! turn, and every write commits on its own. A [`Coalescer`] queues the
//! requests and runs them together through its [`Batch`], at most
//! `max_in_flight` statements at once: an idle server answers a lone request
//! at once (a batch of one), a busy one answers many per statement.
//!
//! A batch is taken from the queue only when its statement is about to
//! start, so a request never sees data older than its own arrival (a client
//! reads its own writes). When the shared statement fails, each request
//! runs alone ([`Batch::alone`]), so each caller gets its own answer or its
//! own error with its cause — unless the database is away (each caller
//! gets that error, 503, at once rather than waiting for it again), or the
//! statement may have taken effect all the same (the connection broke
//! after it was sent, so its commit is unknown): a write is then never run
//! again, and each caller gets the error.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::error::{StoreError, StoreResult};

/// How requests of one kind are answered together, and alone.
pub trait Batch: Send + Sync + 'static {
    type Request: Send + Sync + 'static;
    type Answer: Send + 'static;
    /// Running a request twice does no harm (a read). A write runs alone
    /// after its shared statement failed only if the failure shows the
    /// statement took no effect ([`surely_without_effect`]).
    const IDEMPOTENT: bool;

    /// One answer per request, in the requests' order, from one statement.
    fn together(
        &self,
        requests: &[Self::Request],
    ) -> impl Future<Output = StoreResult<Vec<Self::Answer>>> + Send;

    /// The request by itself (after the shared statement failed).
    fn alone(
        &self,
        request: Self::Request,
    ) -> impl Future<Output = StoreResult<Self::Answer>> + Send;
}

/// The statement failed before it was sent (no connection), or PostgreSQL
/// answered it with an error (its transaction rolled back): nothing of it
/// was committed. Any other failure (the connection broke, or the answer
/// did not decode) may come after the commit.
pub fn surely_without_effect(error: &StoreError) -> bool {
    match error {
        StoreError::Unique { .. }
        | StoreError::ForeignKey { .. }
        | StoreError::Check { .. }
        | StoreError::InUse { .. }
        | StoreError::Database(sqlx::Error::Database(_)) => true,
        StoreError::Unavailable(cause) => {
            matches!(cause, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
        }
        _ => false,
    }
}

/// The same failure for another caller of the batch (sqlx's errors cannot
/// be cloned): the kind and the cause's text are kept.
fn copy_of(error: &StoreError) -> StoreError {
    match error {
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Unique { constraint } => StoreError::Unique {
            constraint: constraint.clone(),
        },
        StoreError::ForeignKey { constraint } => StoreError::ForeignKey {
            constraint: constraint.clone(),
        },
        StoreError::Check { constraint } => StoreError::Check {
            constraint: constraint.clone(),
        },
        StoreError::InUse { constraint } => StoreError::InUse {
            constraint: constraint.clone(),
        },
        StoreError::UnknownCursor => StoreError::UnknownCursor,
        StoreError::State(message) => StoreError::State(message.clone()),
        StoreError::Unavailable(sqlx::Error::PoolTimedOut) => {
            StoreError::Unavailable(sqlx::Error::PoolTimedOut)
        }
        StoreError::Unavailable(sqlx::Error::PoolClosed) => {
            StoreError::Unavailable(sqlx::Error::PoolClosed)
        }
        StoreError::Unavailable(cause) => {
            StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(cause.to_string())))
        }
        StoreError::Crypto(_) | StoreError::Database(_) => {
            StoreError::Database(sqlx::Error::Protocol(error.to_string()))
        }
    }
}

/// Cheap to clone; clones share the queue.
pub struct Coalescer<B: Batch> {
    inner: Arc<Inner<B>>,
}

impl<B: Batch> Clone for Coalescer<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<B: Batch> {
    batch: B,
    max_in_flight: usize,
    /// Requests per statement at most (bounds its parameters and reply).
    max_batch: usize,
    state: Mutex<State<B>>,
    /// Shared statements started (for tests and figures).
    statements: AtomicU64,
}

struct State<B: Batch> {
    waiting: VecDeque<Waiter<B>>,
    /// Runner tasks alive (each runs one statement at a time).
    running: usize,
}

struct Waiter<B: Batch> {
    request: B::Request,
    reply: oneshot::Sender<Result<B::Answer, Failure<B::Request>>>,
}

/// Why a request has no answer from the shared statement.
enum Failure<R> {
    /// The statement failed: the request, given back, runs alone.
    RunAlone(R),
    /// The caller's answer is this error.
    Error(StoreError),
}

impl<B: Batch> Coalescer<B> {
    /// At most `max_in_flight` statements at once (1: a single writer, the
    /// requests that arrive during a statement form the next), each of at
    /// most `max_batch` requests in arrival order.
    pub fn new(batch: B, max_in_flight: usize, max_batch: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                batch,
                max_in_flight: max_in_flight.max(1),
                max_batch: max_batch.max(1),
                state: Mutex::new(State {
                    waiting: VecDeque::new(),
                    running: 0,
                }),
                statements: AtomicU64::new(0),
            }),
        }
    }

    pub async fn call(&self, request: B::Request) -> StoreResult<B::Answer> {
        let (reply, answer) = oneshot::channel();
        let start_runner = {
            let mut state = self.inner.lock();
            state.waiting.push_back(Waiter { request, reply });
            let start = state.running < self.inner.max_in_flight;
            if start {
                state.running += 1;
            }
            start
        };
        if start_runner {
            // A task of its own: a caller that goes away (its client hung
            // up) must not take the other requests of its batch with it.
            tokio::spawn(run(self.inner.clone()));
        }
        match answer.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(Failure::RunAlone(request))) => self.inner.batch.alone(request).await,
            Ok(Err(Failure::Error(error))) => Err(error),
            // The runner panicked, perhaps after its statement was sent.
            Err(_) => Err(StoreError::Unavailable(sqlx::Error::Io(
                std::io::Error::other("the shared statement ended without an answer"),
            ))),
        }
    }

    /// Shared statements started so far.
    pub fn statements(&self) -> u64 {
        self.inner.statements.load(Ordering::Relaxed)
    }
}

impl<B: Batch> Inner<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        // The state stays consistent across a panic (push and drain only).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Answers batches until the queue is empty, then ends.
async fn run<B: Batch>(inner: Arc<Inner<B>>) {
    let mut runner = Runner {
        inner: &inner,
        ended: false,
    };
    while let Some(batch) = runner.next_batch() {
        let (requests, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|w| (w.request, w.reply)).unzip();
        inner.statements.fetch_add(1, Ordering::Relaxed);
        match inner.batch.together(&requests).await {
            Ok(answers) if answers.len() == replies.len() => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // The caller may have gone away meanwhile.
                    let _ = reply.send(Ok(answer));
                }
            }
            Ok(answers) => {
                // A Batch answering the wrong number is a bug; each runs alone.
                tracing::error!(
                    requests = replies.len(),
                    answers = answers.len(),
                    "shared statement answered another number of requests"
                );
                give_back(requests, replies);
            }
            // While the database is away each request would only wait for
            // it again: every caller gets the error (503) at once.
            Err(error)
                if !matches!(error, StoreError::Unavailable(_))
                    && (B::IDEMPOTENT || surely_without_effect(&error)) =>
            {
                tracing::debug!(%error, requests = replies.len(), "shared statement failed; each request runs alone");
                give_back(requests, replies);
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(Failure::Error(copy_of(&error))));
                }
            }
        }
    }
}

/// Each request back to its caller, to run alone.
fn give_back<R, A>(requests: Vec<R>, replies: Vec<oneshot::Sender<Result<A, Failure<R>>>>) {
    for (request, reply) in requests.into_iter().zip(replies) {
        let _ = reply.send(Err(Failure::RunAlone(request)));
    }
}

struct Runner<'a, B: Batch> {
    inner: &'a Inner<B>,
    ended: bool,
}

impl<B: Batch> Runner<'_, B> {
    /// The requests queued now, or `None` (and the runner ends) when none
    /// is: checked and counted under one lock, so a request queued
    /// meanwhile always finds a runner or starts one.
    fn next_batch(&mut self) -> Option<Vec<Waiter<B>>> {
        let mut state = self.inner.lock();
        if state.waiting.is_empty() {
            state.running -= 1;
            self.ended = true;
            return None;
        }
        let n = state.waiting.len().min(self.inner.max_batch);
        Some(state.waiting.drain(..n).collect())
    }
}

impl<B: Batch> Drop for Runner<'_, B> {
    /// A runner that unwinds releases its count and sends the requests
    /// still queued to run alone, so none waits for a runner that is gone.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let waiting = {
            let mut state = self.inner.lock();
            state.running -= 1;
            std::mem::take(&mut state.waiting)
        };
        // Not sent yet: running them alone cannot repeat a write.
        for waiter in waiting {
            let _ = waiter.reply.send(Err(Failure::RunAlone(waiter.request)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Doubles numbers; fails any batch holding a negative one, and answers
    /// a negative one alone with an error of its own.
    #[derive(Default)]
    struct Doubler {
        batch_sizes: Mutex<Vec<usize>>,
        alone: AtomicUsize,
    }

    impl Batch for Arc<Doubler> {
        type Request = i64;
        type Answer = i64;
        const IDEMPOTENT: bool = true;

        async fn together(&self, requests: &[i64]) -> StoreResult<Vec<i64>> {
            self.batch_sizes.lock().unwrap().push(requests.len());
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            if requests.iter().any(|&n| n < 0) {
                return Err(StoreError::State("a negative number".into()));
            }
            Ok(requests.iter().map(|n| n * 2).collect())
        }

        async fn alone(&self, request: i64) -> StoreResult<i64> {
            self.alone.fetch_add(1, Ordering::Relaxed);
            if request < 0 {
                return Err(StoreError::State(format!("{request} is negative")));
            }
            Ok(request * 2)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_requests_share_statements_and_each_gets_its_answer() {
        let doubler = Arc::new(Doubler::default());
        let coalescer = Coalescer::new(doubler.clone(), 2, 64);
        let answers = futures::future::join_all((0..200).map(|n| coalescer.call(n))).await;
        for (n, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap(), 2 * n as i64);
        }
        let sizes = doubler.batch_sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        assert!(sizes.len() <= 10, "{} statements: {sizes:?}", sizes.len());
        assert!(sizes.iter().all(|&n| n <= 64), "{sizes:?}");
        assert_eq!(doubler.alone.load(Ordering::Relaxed), 0);
        assert_eq!(coalescer.statements(), sizes.len() as u64);
    }

    #[tokio::test]
    async fn a_failed_statement_sends_each_request_alone_with_its_own_error() {
        let doubler = Arc::new(Doubler::default());
        let coalescer = Coalescer::new(doubler.clone(), 1, 64);
        let answers = futures::future::join_all([3, -1, 4].map(|n| coalescer.call(n))).await;
        let answers: Vec<String> = answers
            .into_iter()
            .map(|a| match a {
                Ok(n) => n.to_string(),
                Err(e) => e.to_string(),
            })
            .collect();
        assert_eq!(answers, ["6", "-1 is negative", "8"]);
        assert_eq!(*doubler.batch_sizes.lock().unwrap(), [3]);
        assert_eq!(doubler.alone.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_lone_request_is_answered_at_once_and_the_runner_ends() {
        let doubler = Arc::new(Doubler::default());
        let coalescer = Coalescer::new(doubler.clone(), 4, 64);
        for n in 0..3 {
            assert_eq!(coalescer.call(n).await.unwrap(), 2 * n);
        }
        assert_eq!(*doubler.batch_sizes.lock().unwrap(), [1, 1, 1]);
        assert_eq!(coalescer.inner.lock().running, 0);
    }

    /// A write whose shared statement fails with the error it is given.
    struct Writer {
        fails_with: fn() -> StoreError,
        alone: AtomicUsize,
    }

    impl Batch for Arc<Writer> {
        type Request = i64;
        type Answer = i64;
        const IDEMPOTENT: bool = false;

        async fn together(&self, _requests: &[i64]) -> StoreResult<Vec<i64>> {
            Err((self.fails_with)())
        }

        async fn alone(&self, request: i64) -> StoreResult<i64> {
            self.alone.fetch_add(1, Ordering::Relaxed);
            Ok(request)
        }
    }

    async fn write_three(fails_with: fn() -> StoreError) -> (Vec<StoreResult<i64>>, usize) {
        let writer = Arc::new(Writer {
            fails_with,
            alone: AtomicUsize::new(0),
        });
        let coalescer = Coalescer::new(writer.clone(), 1, 64);
        let answers = futures::future::join_all([1, 2, 3].map(|n| coalescer.call(n))).await;
        (answers, writer.alone.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_write_whose_statement_may_have_committed_is_never_run_again() {
        let (answers, alone) = write_three(|| {
            StoreError::Unavailable(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            )))
        })
        .await;
        assert_eq!(alone, 0, "a write was run again after an unknown outcome");
        for answer in answers {
            match answer {
                Err(StoreError::Unavailable(cause)) => {
                    assert!(
                        cause.to_string().contains("connection reset by peer"),
                        "{cause}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_write_whose_statement_was_refused_runs_alone() {
        let (answers, alone) = write_three(|| StoreError::Check {
            constraint: "c".into(),
        })
        .await;
        assert_eq!(alone, 3);
        assert_eq!(
            answers.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[tokio::test]
    async fn while_the_database_is_away_each_caller_gets_the_error_at_once() {
        let (answers, alone) =
            write_three(|| StoreError::Unavailable(sqlx::Error::PoolTimedOut)).await;
        assert_eq!(alone, 0);
        for answer in answers {
            assert!(
                matches!(
                    answer,
                    Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut))
                ),
                "{answer:?}"
            );
        }
    }

    /// Answers no request the first time (a bug in a Batch).
    #[derive(Default)]
    struct Forgetful {
        calls: AtomicUsize,
    }

    impl Batch for Arc<Forgetful> {
        type Request = i64;
        type Answer = i64;
        const IDEMPOTENT: bool = true;

        async fn together(&self, requests: &[i64]) -> StoreResult<Vec<i64>> {
            if self.calls.fetch_add(1, Ordering::Relaxed) == 0 {
                return Ok(Vec::new());
            }
            Ok(requests.to_vec())
        }

        async fn alone(&self, request: i64) -> StoreResult<i64> {
            Ok(-request)
        }
    }

    #[tokio::test]
    async fn a_batch_answering_the_wrong_number_sends_its_requests_alone_and_goes_on() {
        let coalescer = Coalescer::new(Arc::new(Forgetful::default()), 1, 64);
        let first = futures::future::join_all([1, 2].map(|n| coalescer.call(n))).await;
        let first: Vec<i64> = first.into_iter().map(Result::unwrap).collect();
        assert_eq!(first, [-1, -2], "answered alone");
        assert_eq!(coalescer.call(3).await.unwrap(), 3);
    }
}
