//! Test scaffolding: a fresh migrated database per test (the shared
//! `imagefactory-test-support` one), rows inserted with
//! plain SQL (the API's repositories are another crate's), dispatchers with
//! the scripted test executor, and polling waits that fail with a diagnosis.

use std::sync::Arc;
use std::time::Duration;

use imagefactory_dispatch::testing::{TestExecutor, TestScript, WorkRecord};
use imagefactory_dispatch::{Activity, Dispatcher, DispatcherMode, DispatcherSettings, Executors};
use imagefactory_store::{CHANNEL_BUILD_CANCEL, CHANNEL_BUILD_QUEUED};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The shared [`imagefactory_test_support::TestDb`] (dropped with the
/// guard, after a panic too) with the test executor's table installed.
pub struct TestDb(imagefactory_test_support::TestDb);

impl TestDb {
    pub async fn new() -> TestDb {
        let db = imagefactory_test_support::TestDb::with_prefix("if_dispatch").await;
        TestExecutor::install(&db.pool).await.unwrap();
        TestDb(db)
    }

    /// A separate pool, as another dispatcher replica would have.
    pub async fn another_pool(&self) -> PgPool {
        self.0.another_pool(6).await
    }

    /// Close the pool; the database goes right here.
    pub async fn drop_db(self) {
        self.0.drop_db().await
    }
}

impl std::ops::Deref for TestDb {
    type Target = imagefactory_test_support::TestDb;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Short timings so tests run fast; assertions never depend on them.
pub fn fast_settings() -> DispatcherSettings {
    DispatcherSettings {
        poll_interval: Duration::from_millis(100),
        max_in_flight: 64,
        claim_batch: 32,
        lease: Duration::from_secs(10),
        heartbeat_interval: Duration::from_millis(250),
        max_attempts: 5,
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(10),
        stop_grace: Duration::from_millis(500),
        tekton_enabled: true,
        ..DispatcherSettings::default()
    }
}

pub struct Running {
    pub id: String,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<()>,
    pub activity: watch::Receiver<Activity>,
}

impl Running {
    /// Wait until the dispatcher is idle ([`Activity::idle`]): from here only
    /// a notification, its poll interval or shutdown makes it claim again.
    pub async fn wait_idle(&mut self) {
        tokio::time::timeout(Duration::from_secs(30), self.activity.wait_for(|a| a.idle))
            .await
            .expect("dispatcher not idle within 30 s")
            .expect("dispatcher stopped before it was idle");
    }

    /// Graceful stop; returns when `run` returned.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("dispatcher did not stop within 60 s")
            .expect("dispatcher task panicked");
    }
}

pub fn start_dispatcher(pool: PgPool, settings: DispatcherSettings) -> Running {
    let executor: Arc<dyn imagefactory_exec::Executor> = Arc::new(TestExecutor::new(pool.clone()));
    let executors = Executors {
        tekton: Some(executor.clone()),
        local: Some(executor),
    };
    start_dispatcher_with(pool, settings, executors)
}

/// A dispatcher with these executors (e.g. test executors of distinct kinds).
pub fn start_dispatcher_with(
    pool: PgPool,
    settings: DispatcherSettings,
    executors: Executors,
) -> Running {
    let dispatcher = Dispatcher::new(pool, settings, executors, None, DispatcherMode::Embedded);
    let id = dispatcher.id().to_owned();
    let activity = dispatcher.activity();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let handle =
        tokio::spawn(async move { dispatcher.run(token).await.expect("dispatcher run failed") });
    Running {
        id,
        shutdown,
        handle,
        activity,
    }
}

pub async fn tenant(pool: &PgPool, name: &str, max_concurrent: i32) -> (Uuid, Uuid) {
    let tenant = Uuid::now_v7();
    // Opted in to local builds: most tests run theirs on the local slot.
    sqlx::query("INSERT INTO tenants (id, name, display_name, max_concurrent_builds, allow_local_builds) VALUES ($1, $2, $2, $3, true)")
        .bind(tenant)
        .bind(name)
        .bind(max_concurrent)
        .execute(pool)
        .await
        .unwrap();
    let project = Uuid::now_v7();
    sqlx::query("INSERT INTO projects (id, tenant_id, name, git_url) VALUES ($1, $2, 'app', 'https://git.example/app.git')")
        .bind(project)
        .bind(tenant)
        .execute(pool)
        .await
        .unwrap();
    (tenant, project)
}

pub async fn provider(
    pool: &PgPool,
    kind: &str,
    tekton: bool,
    max_concurrent: Option<i32>,
) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO infrastructure_providers (id, name, is_global, provider_type, tekton_enabled, max_concurrent_builds) \
         VALUES ($1, $2, true, $3, $4, $5)",
    )
    .bind(id)
    .bind(format!("p-{}", id.simple()))
    .bind(kind)
    .bind(tekton)
    .bind(max_concurrent)
    .execute(pool)
    .await
    .unwrap();
    id
}

#[derive(Clone)]
pub struct Spec {
    pub script: TestScript,
    pub infrastructure: &'static str,
    pub provider: Option<Uuid>,
    pub priority: i32,
    pub timeout_seconds: i32,
    pub max_attempts: i32,
    /// Seconds until claimable.
    pub not_before_secs: f64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            script: TestScript::default(),
            infrastructure: "local",
            provider: None,
            priority: 0,
            timeout_seconds: 3600,
            max_attempts: 3,
            not_before_secs: 0.0,
        }
    }
}

impl Spec {
    pub fn lasting(ms: u64) -> Spec {
        Spec {
            script: TestScript {
                duration_ms: ms,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// Submit builds as the API does: rows and NOTIFY in one transaction.
pub async fn submit(pool: &PgPool, tenant: (Uuid, Uuid), specs: &[Spec]) -> Vec<Uuid> {
    submit_and(pool, tenant, specs, true).await
}

/// [`submit`], with or without the NOTIFY (without: a missed notification).
pub async fn submit_and(
    pool: &PgPool,
    tenant: (Uuid, Uuid),
    specs: &[Spec],
    notify: bool,
) -> Vec<Uuid> {
    let mut tx = pool.begin().await.unwrap();
    let mut ids = Vec::with_capacity(specs.len());
    for chunk in specs.chunks(500) {
        let n = chunk.len();
        let chunk_ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        let infra: Vec<&str> = chunk.iter().map(|s| s.infrastructure).collect();
        let providers: Vec<Option<Uuid>> = chunk.iter().map(|s| s.provider).collect();
        let priorities: Vec<i32> = chunk.iter().map(|s| s.priority).collect();
        let timeouts: Vec<i32> = chunk.iter().map(|s| s.timeout_seconds).collect();
        let max_attempts: Vec<i32> = chunk.iter().map(|s| s.max_attempts).collect();
        let delays: Vec<f64> = chunk.iter().map(|s| s.not_before_secs).collect();
        let metadata: Vec<serde_json::Value> =
            chunk.iter().map(|s| s.script.to_metadata()).collect();
        sqlx::query(
            "INSERT INTO builds (id, tenant_id, project_id, method, infrastructure_type, infrastructure_provider_id, \
                                 git_url, git_ref, image, priority, timeout_seconds, max_attempts, not_before, created_at) \
             SELECT b.id, $2, $3, 'docker', b.infra, b.provider, 'https://git.example/app.git', 'main', \
                    'registry.example/app:1', b.priority, b.timeout, b.max_attempts, \
                    now() + make_interval(secs => b.delay), clock_timestamp() \
             FROM UNNEST($1::uuid[], $4::text[], $5::uuid[], $6::int[], $7::int[], $8::int[], $9::float8[]) \
                  AS b(id, infra, provider, priority, timeout, max_attempts, delay)",
        )
        .bind(&chunk_ids)
        .bind(tenant.0)
        .bind(tenant.1)
        .bind(&infra)
        .bind(&providers)
        .bind(&priorities)
        .bind(&timeouts)
        .bind(&max_attempts)
        .bind(&delays)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query("INSERT INTO build_configs (build_id, metadata) SELECT * FROM UNNEST($1::uuid[], $2::jsonb[])")
            .bind(&chunk_ids)
            .bind(&metadata)
            .execute(&mut *tx)
            .await
            .unwrap();
        ids.extend(chunk_ids);
    }
    if notify {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL_BUILD_QUEUED)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    ids
}

/// Request cancellation as the API does.
pub async fn request_cancel(pool: &PgPool, build: Uuid) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE builds SET cancel_requested_at = now() WHERE id = $1")
        .bind(build)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL_BUILD_CANCEL)
        .bind(build.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

pub async fn status(pool: &PgPool, build: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM builds WHERE id = $1")
        .bind(build)
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Poll `sql` (returning a bigint) until it equals `want`; panics with the
/// last value and the queue state after `timeout`.
pub async fn wait_count(pool: &PgPool, sql: &str, want: i64, timeout: Duration) {
    let start = tokio::time::Instant::now();
    loop {
        let got = count(pool, sql).await;
        if got == want {
            return;
        }
        if start.elapsed() > timeout {
            let states: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, count(*) FROM builds GROUP BY status")
                    .fetch_all(pool)
                    .await
                    .unwrap();
            panic!(
                "waited {timeout:?} for `{sql}` = {want}, last {got}; builds by status: {states:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_status(pool: &PgPool, build: Uuid, want: &str, timeout: Duration) {
    wait_count(
        pool,
        &format!("SELECT count(*) FROM builds WHERE id = '{build}' AND status = '{want}'"),
        1,
        timeout,
    )
    .await;
}

pub async fn work(pool: &PgPool) -> Vec<WorkRecord> {
    TestExecutor::work(pool).await.unwrap()
}
