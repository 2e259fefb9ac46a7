//! Group commit for small writes that many executions make at about the same
//! time (a claimed batch's starts): callers queue their request and wait; one
//! writer task takes everything queued so far and writes it with one
//! statement (one round trip, one commit), then answers each caller.
//!
//! - No artificial delay: a lone request is written at once; requests that
//!   arrive while a write is in flight form the next batch.
//! - A caller is answered only after its batch's statement returned, i.e.
//!   after the commit: nothing is acknowledged before it is durable.
//! - The write function answers per request, so one bad request need not
//!   fail the others (see [`Coalescer::new`]).
//! - A caller that stops waiting (its task aborted) does not cancel the
//!   write: the writes it is used for are idempotent.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

type Reply<R> = oneshot::Sender<Result<R, String>>;
type Queue<Q, R> = mpsc::UnboundedSender<(Q, Reply<R>)>;
type WriteFn<Q, R> =
    dyn Fn(Vec<Q>) -> Pin<Box<dyn Future<Output = Vec<Result<R, String>>> + Send>> + Send + Sync;

/// Queues requests of type `Q` for a writer task that answers `R` (or an
/// error message) to each.
pub struct Coalescer<Q, R> {
    max_batch: usize,
    write: Arc<WriteFn<Q, R>>,
    /// Started on first use (so a coalescer can be made outside a runtime).
    sender: Mutex<Option<Queue<Q, R>>>,
}

impl<Q: Send + 'static, R: Send + 'static> Coalescer<Q, R> {
    /// `write` gets up to `max_batch` requests in arrival order and must
    /// return one result per request, in the same order.
    pub fn new<F, Fut>(max_batch: usize, write: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<R, String>>> + Send + 'static,
    {
        Self {
            max_batch: max_batch.max(1),
            write: Arc::new(move |batch| Box::pin(write(batch))),
            sender: Mutex::new(None),
        }
    }

    /// Queue `request` and wait for its result.
    pub async fn submit(&self, request: Q) -> Result<R, String> {
        let (reply, answer) = oneshot::channel();
        self.sender()
            .send((request, reply))
            .map_err(|_| "the batch writer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the batch writer stopped before answering".to_owned())?
    }

    fn sender(&self) -> Queue<Q, R> {
        let mut sender = self.sender.lock().unwrap();
        if let Some(s) = sender.as_ref().filter(|s| !s.is_closed()) {
            return s.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(rx, self.max_batch, self.write.clone()));
        *sender = Some(tx.clone());
        tx
    }
}

async fn writer<Q, R>(
    mut queue: mpsc::UnboundedReceiver<(Q, Reply<R>)>,
    max_batch: usize,
    write: Arc<WriteFn<Q, R>>,
) {
    let mut waiting = Vec::with_capacity(max_batch);
    // Ends when every sender is gone (the coalescer was dropped).
    while queue.recv_many(&mut waiting, max_batch).await > 0 {
        let (requests, replies): (Vec<Q>, Vec<Reply<R>>) = waiting.drain(..).unzip();
        let n = requests.len();
        let mut results = write(requests).await;
        if results.len() != n {
            // A bug in the write function: answer everyone with it rather
            // than guessing which result is whose.
            let message = format!("batch write answered {} of {n} requests", results.len());
            results = (0..n).map(|_| Err(message.clone())).collect();
        }
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have stopped waiting; the write stands.
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_queued_during_a_write_form_the_next_batch_and_get_their_own_answers() {
        let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
        let seen = batches.clone();
        let c = Arc::new(Coalescer::new(100, move |batch: Vec<u32>| {
            let seen = seen.clone();
            let mut gate = gate_rx.clone();
            async move {
                seen.lock().unwrap().push(batch.clone());
                // The first batch waits until the test opens the gate.
                let _ = gate.wait_for(|open| *open).await;
                batch
                    .into_iter()
                    .map(|x| {
                        if x == 7 {
                            Err("seven".to_owned())
                        } else {
                            Ok(x * 10)
                        }
                    })
                    .collect()
            }
        }));
        let first = tokio::spawn({
            let c = c.clone();
            async move { c.submit(1).await }
        });
        // Wait until the first request is being written, then queue more:
        // polled once, a submit has sent its request.
        while batches.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut rest: Vec<_> = [2, 7, 3]
            .into_iter()
            .map(|x| Box::pin(c.submit(x)))
            .collect();
        for f in &mut rest {
            assert!(futures::poll!(f.as_mut()).is_pending());
        }
        gate_tx.send_replace(true);
        assert_eq!(first.await.unwrap(), Ok(10));
        let answers = futures::future::join_all(rest).await;
        assert_eq!(answers, vec![Ok(20), Err("seven".to_owned()), Ok(30)]);
        assert_eq!(*batches.lock().unwrap(), vec![vec![1], vec![2, 7, 3]]);
    }

    #[tokio::test]
    async fn a_write_that_answers_the_wrong_count_fails_its_batch_and_the_writer_goes_on() {
        let calls = Arc::new(AtomicUsize::new(0));
        let n = calls.clone();
        let c = Coalescer::new(10, move |batch: Vec<u32>| {
            let first = n.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    Vec::new()
                } else {
                    batch.into_iter().map(Ok).collect()
                }
            }
        });
        assert!(c.submit(1).await.unwrap_err().contains("answered 0 of 1"));
        assert_eq!(c.submit(2).await, Ok(2));
    }
}
