//! ARCHITECTURE.md's invariants that the API's storage holds: the store's
//! tenant-scoped reads filter by the tenant they are given (a foreign build
//! reads as missing), and a provider's `config_version` moves iff its
//! config changes.

use imagefactory_store::attempts::{self, LogCursor, LogHorizon};
use imagefactory_store::build_reads::BuildReads;
use imagefactory_store::{StoreError, builds, page::Page};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, id_of};

/// Every store read of a build's data, called with another tenant's id,
/// finds nothing; with the owner's id it finds the row (so the test cannot
/// pass by finding nothing at all).
#[tokio::test]
async fn store_reads_of_a_build_are_scoped_by_the_tenant_passed() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let project = app.create_project(&a.admin, "p").await;
    let provider = app.create_k8s_provider(&a.admin, "k").await;
    let build = id_of(&app.submit_build(&a.developer, project, provider).await);
    let execution = app.insert_execution(build, a.id, 1, "running").await;
    app.insert_log(build, execution, 0, "tenant a's line").await;
    let line: i64 = sqlx::query_scalar("SELECT id FROM build_logs WHERE build_id = $1")
        .bind(build)
        .fetch_one(&pool)
        .await
        .unwrap();

    assert!(builds::get_config(&pool, a.id, build).await.is_ok());
    assert!(matches!(
        builds::get_config(&pool, b.id, build).await,
        Err(StoreError::NotFound)
    ));
    let reads = BuildReads::new(pool.clone());
    assert!(reads.get_with_config(a.id, build).await.is_ok());
    assert!(matches!(
        reads.get_with_config(b.id, build).await,
        Err(StoreError::NotFound)
    ));

    for horizon in [LogHorizon::Committed, LogHorizon::Settled] {
        // The settled horizon is cluster-wide: transactions of tests running
        // beside this one may hold the line back for a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let own = attempts::logs_after(&pool, a.id, build, LogCursor::START, horizon, 10);
            let n = own.await.unwrap().len();
            if n == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{horizon:?}: {n} lines"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let foreign = attempts::logs_after(&pool, b.id, build, LogCursor::START, horizon, 10);
        assert!(foreign.await.unwrap().is_empty(), "{horizon:?}");
    }

    let own = attempts::log_cursor(&pool, a.id, build, line)
        .await
        .unwrap();
    assert_eq!(own.map(|c| c.id), Some(line));
    assert_eq!(
        attempts::log_cursor(&pool, b.id, build, line)
            .await
            .unwrap(),
        None
    );

    assert_eq!(
        builds::attempts_before_retry(&pool, a.id, build)
            .await
            .unwrap(),
        0
    );
    assert!(matches!(
        builds::attempts_before_retry(&pool, b.id, build).await,
        Err(sqlx::Error::RowNotFound)
    ));

    let page = Page {
        limit: 10,
        after: None,
    };
    let (own, _) = attempts::executions(&pool, a.id, build, page)
        .await
        .unwrap();
    assert_eq!(own.len(), 1);
    let (foreign, _) = attempts::executions(&pool, b.id, build, page)
        .await
        .unwrap();
    assert!(foreign.is_empty());
    let (foreign, _) = attempts::artifacts(&pool, b.id, build, page).await.unwrap();
    assert!(foreign.is_empty());
    assert!(matches!(
        builds::get(&pool, b.id, build).await,
        Err(StoreError::NotFound)
    ));
}

async fn stored_config(app: &TestApp, id: Uuid) -> String {
    sqlx::query_scalar("SELECT config::text FROM infrastructure_providers WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// `config_version` counts config changes: a PATCH that repeats the config
/// (secret left out and kept, or sent again unchanged) leaves the version
/// and the stored ciphertext alone; a changed field or secret adds one.
#[tokio::test]
async fn config_version_changes_iff_the_config_changes() {
    let db = TestDb::new().await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let t = app.tenant("team-v").await;
    let created = app
        .post(
            "/api/v1/providers",
            &t.admin,
            json!({"name": "k", "provider_type": "kubernetes",
                   "config": {"auth_method": "token", "endpoint": "https://a.example.com", "token": "first"}}),
        )
        .await;
    created.expect(201);
    assert_eq!(created.json()["config_version"], 1);
    let id = id_of(&created.json());
    let path = format!("/api/v1/providers/{id}");
    let sealed = stored_config(&app, id).await;

    let steps = [
        // The same config, the secret left out (kept).
        (
            json!({"auth_method": "token", "endpoint": "https://a.example.com"}),
            1,
        ),
        // The same config, the same secret sent again.
        (
            json!({"auth_method": "token", "endpoint": "https://a.example.com", "token": "first"}),
            1,
        ),
        // A changed field.
        (
            json!({"auth_method": "token", "endpoint": "https://b.example.com"}),
            2,
        ),
        // A changed secret.
        (
            json!({"auth_method": "token", "endpoint": "https://b.example.com", "token": "second"}),
            3,
        ),
        // The changed config again: unchanged.
        (
            json!({"auth_method": "token", "endpoint": "https://b.example.com", "token": "second"}),
            3,
        ),
        // A field added.
        (
            json!({"auth_method": "token", "endpoint": "https://b.example.com", "namespace": "ns"}),
            4,
        ),
    ];
    for (i, (config, version)) in steps.into_iter().enumerate() {
        let r = app
            .patch(&path, &t.admin, json!({ "config": config }))
            .await;
        r.expect(200);
        assert_eq!(r.json()["config_version"], version, "step {i}: {config}");
        let read = app.get(&path, &t.admin).await;
        assert_eq!(read.json()["config_version"], version, "step {i} read back");
        if i < 2 {
            assert_eq!(
                stored_config(&app, id).await,
                sealed,
                "step {i}: not resealed"
            );
        }
    }
    let opened: String = {
        let p = imagefactory_store::providers::get_owned(
            &app.pool,
            imagefactory_store::providers::Owner::Tenant(t.id),
            id,
        )
        .await
        .unwrap();
        let config = imagefactory_store::providers::open_config(&app.cipher, &p).unwrap();
        config["token"].as_str().unwrap().to_owned()
    };
    assert_eq!(opened, "second", "the kept secret is the last one sent");
}

/// One execution row per (build, attempt): a second row for the same attempt
/// is refused by the named unique constraint, a next attempt is not.
#[tokio::test]
async fn one_execution_row_per_build_and_attempt() {
    let db = TestDb::new().await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let (t, build) = app.tenant_with_build("team-e").await;
    app.insert_execution(build, t.id, 1, "failed").await;
    let again = sqlx::query(
        "INSERT INTO build_executions (id, build_id, tenant_id, attempt, executor, status)
         VALUES ($1, $2, $3, 1, 'test', 'running')",
    )
    .bind(Uuid::now_v7())
    .bind(build)
    .bind(t.id)
    .execute(&app.pool)
    .await
    .unwrap_err();
    let constraint = again
        .as_database_error()
        .and_then(|e| e.constraint())
        .map(str::to_owned);
    assert_eq!(constraint.as_deref(), Some("build_executions_attempt_key"));
    app.insert_execution(build, t.id, 2, "running").await;
}
