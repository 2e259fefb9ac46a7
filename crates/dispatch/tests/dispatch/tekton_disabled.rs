//! Where a Kubernetes build goes when Tekton is off, and without a
//! provider: the local executor (allowed tenants only, the log says why), a
//! failure under `IF_BUILD_TEKTON_DISABLED=fail`, the global cluster when
//! one is configured. The Tekton and local slots hold test executors of
//! their own kinds, so each execution row shows which one a build was given.

use std::sync::Arc;
use std::time::Duration;

use imagefactory_dispatch::select::WhenTektonDisabled;
use imagefactory_dispatch::testing::TestExecutor;
use imagefactory_dispatch::{DispatcherSettings, Executors};
use imagefactory_domain::ExecutorKind;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::*;

fn executors(pool: &PgPool) -> Executors {
    Executors {
        tekton: Some(Arc::new(
            TestExecutor::new(pool.clone()).with_kind(ExecutorKind::Tekton),
        )),
        local: Some(Arc::new(
            TestExecutor::new(pool.clone()).with_kind(ExecutorKind::Local),
        )),
    }
}

async fn run(db: &TestDb, settings: DispatcherSettings, builds: &[(Uuid, &str)]) {
    let pool = db.another_pool().await;
    let d = start_dispatcher_with(pool.clone(), settings, executors(&pool));
    for (id, status) in builds {
        wait_status(&db.pool, *id, status, Duration::from_secs(30)).await;
    }
    d.stop().await;
}

/// The executors each attempt of `build` was given, in order.
async fn executors_of(pool: &PgPool, build: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT executor FROM build_executions WHERE build_id = $1 ORDER BY attempt")
        .bind(build)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn log_of(pool: &PgPool, build: Uuid) -> Vec<(String, String)> {
    sqlx::query_as("SELECT source, line FROM build_logs WHERE build_id = $1 ORDER BY id")
        .bind(build)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn error_of(pool: &PgPool, build: Uuid) -> String {
    sqlx::query_scalar("SELECT error_message FROM builds WHERE id = $1")
        .bind(build)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn kube(provider: Option<Uuid>) -> Spec {
    Spec {
        infrastructure: "kubernetes",
        provider,
        ..Spec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_builds_run_locally_when_tekton_is_disabled_and_the_log_says_why() {
    let db = TestDb::new().await;
    let allowed = tenant(&db.pool, "allowed", 10).await;
    let refused = tenant(&db.pool, "refused", 10).await;
    sqlx::query("UPDATE tenants SET allow_local_builds = false WHERE id = $1")
        .bind(refused.0)
        .execute(&db.pool)
        .await
        .unwrap();
    let on = provider(&db.pool, "kubernetes", true, None).await;
    let off = provider(&db.pool, "kubernetes", false, None).await;

    // Globally disabled (the default IF_BUILD_TEKTON_DISABLED=local).
    let global_off = DispatcherSettings {
        tekton_enabled: false,
        ..fast_settings()
    };
    let local = submit(&db.pool, allowed, &[kube(Some(on))]).await[0];
    let not_allowed = submit(&db.pool, refused, &[kube(Some(on))]).await[0];
    run(
        &db,
        global_off,
        &[(local, "succeeded"), (not_allowed, "failed")],
    )
    .await;
    assert_eq!(executors_of(&db.pool, local).await, ["local"]);
    let log = log_of(&db.pool, local).await;
    let (source, why) = &log[0];
    assert_eq!(source, "imagefactory", "{log:?}");
    assert!(
        why.starts_with("Tekton is disabled on this installation (IF_BUILD_TEKTON_ENABLED=false): this Kubernetes build runs on the local executor"),
        "{why}"
    );
    assert!(why.contains("IF_BUILD_TEKTON_DISABLED=local"), "{why}");
    // The executor's own lines follow the note.
    assert!(log.len() > 1, "{log:?}");
    let message = error_of(&db.pool, not_allowed).await;
    assert!(
        message.contains("IF_BUILD_TEKTON_ENABLED=false") && message.contains("allow_local_builds"),
        "{message}"
    );
    let started: Vec<Uuid> = work(&db.pool)
        .await
        .into_iter()
        .map(|w| w.build_id)
        .collect();
    assert!(
        !started.contains(&not_allowed),
        "never started: {started:?}"
    );

    // Enabled globally, disabled on the provider: local too; its own
    // provider's Tekton builds still go to Tekton.
    let provider_off = submit(&db.pool, allowed, &[kube(Some(off))]).await[0];
    let tekton = submit(&db.pool, allowed, &[kube(Some(on))]).await[0];
    run(
        &db,
        fast_settings(),
        &[(provider_off, "succeeded"), (tekton, "succeeded")],
    )
    .await;
    assert_eq!(executors_of(&db.pool, provider_off).await, ["local"]);
    let why = &log_of(&db.pool, provider_off).await[0].1;
    assert!(
        why.starts_with("Tekton is disabled on its infrastructure provider (tekton_enabled=false)"),
        "{why}"
    );
    assert_eq!(executors_of(&db.pool, tekton).await, ["tekton"]);
    assert!(
        !log_of(&db.pool, tekton)
            .await
            .iter()
            .any(|(_, l)| l.contains("local executor")),
        "a Tekton build says nothing of local execution"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fail_instead_kubernetes_builds_without_tekton_fail_saying_so() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let on = provider(&db.pool, "kubernetes", true, None).await;
    let off = provider(&db.pool, "kubernetes", false, None).await;
    let global = submit(&db.pool, t, &[kube(Some(on))]).await[0];
    let fail = DispatcherSettings {
        tekton_enabled: false,
        tekton_disabled: WhenTektonDisabled::Fail,
        ..fast_settings()
    };
    run(&db, fail.clone(), &[(global, "failed")]).await;
    let on_provider = submit(&db.pool, t, &[kube(Some(off))]).await[0];
    run(
        &db,
        DispatcherSettings {
            tekton_enabled: true,
            ..fail
        },
        &[(on_provider, "failed")],
    )
    .await;
    for (build, reason) in [
        (global, "IF_BUILD_TEKTON_ENABLED=false"),
        (on_provider, "tekton_enabled=false"),
    ] {
        let message = error_of(&db.pool, build).await;
        assert!(message.contains(reason), "{message}");
        assert!(
            message.contains("IF_BUILD_TEKTON_DISABLED=fail"),
            "{message}"
        );
        assert!(
            executors_of(&db.pool, build).await.is_empty(),
            "failed at claim time, never run"
        );
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_build_without_a_provider_runs_on_the_global_cluster_when_configured() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let none = submit(&db.pool, t, &[kube(None)]).await[0];
    run(&db, fast_settings(), &[(none, "failed")]).await;
    let message = error_of(&db.pool, none).await;
    assert!(
        message.contains("names no infrastructure provider")
            && message.contains("IF_BUILD_TEKTON_KUBECONFIG"),
        "{message}"
    );

    let global = submit(&db.pool, t, &[kube(None)]).await[0];
    let settings = DispatcherSettings {
        global_cluster: true,
        ..fast_settings()
    };
    run(&db, settings, &[(global, "succeeded")]).await;
    assert_eq!(executors_of(&db.pool, global).await, ["tekton"]);
    let provider: Option<Uuid> =
        sqlx::query_scalar("SELECT provider_id FROM build_executions WHERE build_id = $1")
            .bind(global)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(provider, None, "the global cluster is no provider row");
    db.drop_db().await;
}
