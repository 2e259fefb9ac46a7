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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_image_or_ref_that_does_not_parse_fails_that_build_only() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let ids = submit(
        &db.pool,
        t,
        &[Spec::default(), Spec::default(), Spec::default()],
    )
    .await;
    // Written around the API (no CHECK guards these columns): values the
    // API's parse would have refused, one of them option-like.
    sqlx::query("UPDATE builds SET image = 'Not An Image' WHERE id = $1")
        .bind(ids[0])
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE builds SET git_ref = '--upload-pack=x' WHERE id = $1")
        .bind(ids[1])
        .execute(&db.pool)
        .await
        .unwrap();
    let d = start_dispatcher(db.another_pool().await, fast_settings());
    wait_status(&db.pool, ids[0], "failed", Duration::from_secs(30)).await;
    wait_status(&db.pool, ids[1], "failed", Duration::from_secs(30)).await;
    // Claimed in the same batch, the good build is not held back by them.
    wait_status(&db.pool, ids[2], "succeeded", Duration::from_secs(30)).await;
    d.stop().await;
    let image = error_message(&db, ids[0]).await;
    assert!(
        image.contains("stored settings are invalid")
            && image.contains("\"image\"")
            && image.contains("\"Not An Image\" is not a valid ImageRef"),
        "{image}"
    );
    let git_ref = error_message(&db, ids[1]).await;
    assert!(
        git_ref.contains("\"git_ref\"")
            && git_ref.contains("\"--upload-pack=x\" is not a valid GitRef"),
        "{git_ref}"
    );
    // Failed at once, not requeued: one attempt, and no work started.
    let attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempts FROM builds WHERE id = ANY($1) ORDER BY id")
            .bind(&ids[..2])
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(attempts, vec![1, 1]);
    let started: Vec<uuid::Uuid> = work(&db.pool).await.iter().map(|w| w.build_id).collect();
    assert!(
        !started.contains(&ids[0]) && !started.contains(&ids[1]),
        "{started:?}"
    );
    db.drop_db().await;
}
