//! The test database goes with its `TestDb`, also when the test fails.

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_dropped_when_the_test_ends_or_panics() {
    let db = TestDb::new().await;
    let name = db.name().to_owned();
    assert!(database_exists(&name).await);
    db.drop_db().await;
    assert!(!database_exists(&name).await, "{name} left behind");

    let (tx, rx) = tokio::sync::oneshot::channel();
    let failing = tokio::spawn(async move {
        let db = TestDb::new().await;
        tx.send(db.name().to_owned()).unwrap();
        panic!("a failing test (on purpose)");
    });
    assert!(failing.await.unwrap_err().is_panic());
    let name = rx.await.unwrap();
    assert!(
        !database_exists(&name).await,
        "{name} left behind by a panic"
    );
}
