//! Dispatchers are woken after submits with coalesced notifications: a
//! burst of submits costs one NOTIFY (sent after their commits), and a
//! submit after it has gone out is announced again.

use std::time::Duration;

use imagefactory_api::queue_waker::QueueWaker;
use imagefactory_store::{CHANNEL_BUILD_QUEUED, queue::QUEUED_PAYLOAD};
use sqlx::postgres::PgListener;

use crate::helpers::TestDb;

/// Long enough for a notification to arrive on a busy machine.
const ARRIVAL: Duration = Duration::from_secs(20);
/// How long to wait to be fairly sure no further notification comes.
const QUIET: Duration = Duration::from_millis(500);

async fn next(listener: &mut PgListener, wait: Duration) -> Option<String> {
    tokio::time::timeout(wait, listener.recv())
        .await
        .ok()
        .map(|n| n.expect("LISTEN connection").payload().to_owned())
}

// A current-thread runtime: the sending task cannot run while the burst is
// being signalled, so the count is exact.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_of_wakes_sends_one_notification_and_a_later_wake_another() {
    let db = TestDb::new().await;
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen(CHANNEL_BUILD_QUEUED).await.unwrap();
    let waker = QueueWaker::new(db.pool.clone());

    for _ in 0..1_000 {
        waker.wake();
    }
    assert_eq!(
        next(&mut listener, ARRIVAL).await.as_deref(),
        Some(QUEUED_PAYLOAD)
    );
    assert_eq!(
        next(&mut listener, QUIET).await,
        None,
        "burst not coalesced"
    );

    waker.clone().wake();
    assert_eq!(
        next(&mut listener, ARRIVAL).await.as_deref(),
        Some(QUEUED_PAYLOAD),
        "a wake after the first notification went out was dropped"
    );
    assert_eq!(next(&mut listener, QUIET).await, None);
}
