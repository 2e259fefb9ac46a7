//! A stored value this dispatcher does not know (a row written by a newer
//! version, simulated by dropping the column's CHECK) fails the build naming
//! the value; it never stands in for a known one.

use std::time::Duration;

use imagefactory_domain::ExecutorKind;
use imagefactory_store::queue::{self, ClaimDecision, ClaimRequest};

use crate::helpers::*;

async fn error_message(db: &TestDb, build: uuid::Uuid) -> String {
    sqlx::query_scalar("SELECT error_message FROM builds WHERE id = $1")
        .bind(build)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn drop_check(db: &TestDb, table: &str, constraint: &str) {
    sqlx::query(&format!("ALTER TABLE {table} DROP CONSTRAINT {constraint}"))
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_executor_of_a_taken_over_execution_fails_the_build() {
    let db = TestDb::new().await;
    drop_check(&db, "build_executions", "executions_executor_check").await;
    let t = tenant(&db.pool, "t", 10).await;
    let id = submit(&db.pool, t, &[Spec::default()]).await[0];
    // A dispatcher of a newer version claimed it, ran it on an executor this
    // one does not know, and died.
    let request = ClaimRequest {
        owner: "newer",
        lease: Duration::from_secs(60),
        limit: 1,
    };
    let claimed = queue::claim(&db.pool, request, |_| {
        ClaimDecision::Run(ExecutorKind::Test)
    })
    .await
    .unwrap();
    assert_eq!(claimed.claimed.len(), 1);
    sqlx::query(
        "UPDATE build_executions SET executor = 'buildkit', reference_at = now() WHERE build_id = $1",
    )
    .bind(id)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE builds SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();

    let d = start_dispatcher(db.another_pool().await, fast_settings());
    wait_status(&db.pool, id, "failed", Duration::from_secs(30)).await;
    d.stop().await;
    let message = error_message(&db, id).await;
    assert!(
        message.contains("unknown ExecutorKind \"buildkit\""),
        "{message}"
    );
    assert!(
        work(&db.pool).await.is_empty(),
        "nothing was started or re-attached"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_infrastructure_type_or_provider_status_fails_the_build_at_claim() {
    let db = TestDb::new().await;
    drop_check(&db, "builds", "builds_infrastructure_type_check").await;
    drop_check(&db, "infrastructure_providers", "providers_status_check").await;
    let t = tenant(&db.pool, "t", 10).await;
    let draining = provider(&db.pool, "kubernetes", true, None).await;
    sqlx::query("UPDATE infrastructure_providers SET status = 'draining' WHERE id = $1")
        .bind(draining)
        .execute(&db.pool)
        .await
        .unwrap();
    let ids = submit(
        &db.pool,
        t,
        &[
            Spec {
                infrastructure: "gpu-farm",
                ..Default::default()
            },
            Spec {
                infrastructure: "kubernetes",
                provider: Some(draining),
                ..Default::default()
            },
        ],
    )
    .await;
    let d = start_dispatcher(db.another_pool().await, fast_settings());
    for id in &ids {
        wait_status(&db.pool, *id, "failed", Duration::from_secs(30)).await;
    }
    d.stop().await;
    let infrastructure = error_message(&db, ids[0]).await;
    assert!(
        infrastructure.contains("unknown InfrastructureType \"gpu-farm\""),
        "{infrastructure}"
    );
    let provider_status = error_message(&db, ids[1]).await;
    assert!(
        provider_status.contains("unknown ProviderStatus \"draining\""),
        "{provider_status}"
    );
    assert!(work(&db.pool).await.is_empty(), "nothing was started");
    db.drop_db().await;
}
