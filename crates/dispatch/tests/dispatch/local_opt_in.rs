//! Local builds run on the dispatcher's host: a build queued before its
//! tenant's opt-in was withdrawn (or written around the API) never starts.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn a_local_build_of_a_tenant_without_the_opt_in_fails_without_starting() {
    let db = TestDb::new().await;
    let allowed = tenant(&db.pool, "allowed", 10).await;
    let withdrawn = tenant(&db.pool, "withdrawn", 10).await;
    let ok = submit(&db.pool, allowed, &[Spec::default()]).await[0];
    let local = submit(&db.pool, withdrawn, &[Spec::default()]).await[0];
    let kube = submit(
        &db.pool,
        withdrawn,
        &[Spec {
            infrastructure: "kubernetes",
            provider: Some(provider(&db.pool, "kubernetes", true, None).await),
            ..Spec::default()
        }],
    )
    .await[0];
    // Withdrawn after the builds were queued.
    sqlx::query("UPDATE tenants SET allow_local_builds = false WHERE id = $1")
        .bind(withdrawn.0)
        .execute(&db.pool)
        .await
        .unwrap();

    let running = start_dispatcher(db.another_pool().await, fast_settings());
    wait_status(&db.pool, ok, "succeeded", Duration::from_secs(30)).await;
    wait_status(&db.pool, kube, "succeeded", Duration::from_secs(30)).await;
    wait_status(&db.pool, local, "failed", Duration::from_secs(30)).await;
    running.stop().await;

    let (message, attempts): (String, i32) =
        sqlx::query_as("SELECT error_message, attempts FROM builds WHERE id = $1")
            .bind(local)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(message.contains("allow_local_builds"), "{message}");
    assert_eq!(attempts, 1, "failed at once, not requeued");
    // The executor never saw it; the other tenant's and the kubernetes build ran.
    let started: Vec<_> = work(&db.pool)
        .await
        .into_iter()
        .map(|w| w.build_id)
        .collect();
    assert!(!started.contains(&local), "{started:?}");
    assert!(
        started.contains(&ok) && started.contains(&kube),
        "{started:?}"
    );
    db.drop_db().await;
}
