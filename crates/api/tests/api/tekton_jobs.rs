//! Tekton install jobs through the admin API: one running job per provider
//! (409 naming it), heartbeats keep a live job, and a job whose process died
//! is recovered instead of blocking the provider. The cluster side is a
//! scripted [`TektonOps`] that finishes when the test says so (the real one
//! is exercised by `crates/e2e` and `crates/imagefactory/tests/tekton_cli.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use imagefactory_api::ConnectionTarget;
use imagefactory_api::tekton::TektonOps;
use imagefactory_store::tekton_jobs::{self, JobOwner};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::helpers::*;

/// Installs wait for a permit; each returns one created Task.
struct GatedOps {
    gate: Arc<Semaphore>,
}

impl TektonOps for GatedOps {
    fn install(
        &self,
        target: ConnectionTarget,
        namespace: Option<String>,
        dry_run: bool,
    ) -> BoxFuture<'static, Result<Value, String>> {
        let gate = self.gate.clone();
        Box::pin(async move {
            gate.acquire().await.unwrap().forget();
            // The seam gets the provider's opened config.
            assert_eq!(target.config["token"], "global-token-value");
            Ok(
                json!([{ "namespace": namespace, "dry_run": dry_run, "objects": [
                    {"kind": "Task", "namespace": namespace, "name": "git-clone", "before": "missing", "action": "created"}
                ]}]),
            )
        })
    }

    fn status(
        &self,
        _: ConnectionTarget,
        namespace: Option<String>,
    ) -> BoxFuture<'static, Result<Value, String>> {
        Box::pin(async move { Ok(json!({ "namespaces": [namespace] })) })
    }
}

async fn app(lease: Duration) -> (TestDb, TestApp, Arc<Semaphore>) {
    let db = TestDb::new().await;
    let gate = Arc::new(Semaphore::new(0));
    let ops = Arc::new(GatedOps { gate: gate.clone() });
    let app = TestApp::spawn_with_state(db.pool.clone(), move |state| {
        state.tekton_ops = Some(ops);
        state.tekton_job_lease = lease;
    })
    .await;
    (db, app, gate)
}

fn install_path(provider: Uuid) -> String {
    format!("/api/v1/admin/providers/{provider}/tekton/install?namespace=tekton-tasks")
}

async fn wait_job(app: &TestApp, provider: Uuid, job: &str, status: &str) -> Value {
    for _ in 0..100 {
        let r = app
            .get(
                &format!("/api/v1/admin/providers/{provider}/tekton/install/{job}"),
                ADMIN_TOKEN,
            )
            .await;
        r.expect(200);
        if r.json()["status"] == status {
            return r.json();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {job} never became {status}");
}

#[tokio::test]
async fn one_install_per_provider_the_other_gets_409_naming_the_running_job() {
    let (_db, app, gate) = app(Duration::from_secs(30)).await;
    let provider = app.create_global_provider("cluster-a").await;
    let other = app.create_global_provider("cluster-b").await;

    let path = install_path(provider);
    let (a, b) = tokio::join!(
        app.post_empty(&path, ADMIN_TOKEN),
        app.post_empty(&path, ADMIN_TOKEN),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [202, 409], "{a:?} {b:?}");
    let (started, refused) = if a.status == 202 { (a, b) } else { (b, a) };
    let job = started.json();
    assert_eq!(job["status"], "running");
    assert_eq!(job["namespace"], "tekton-tasks");
    let job_id = job["id"].as_str().unwrap().to_string();
    assert_eq!(refused.problem(), "conflict");
    assert!(
        refused.json()["detail"].as_str().unwrap().contains(&job_id),
        "{}",
        refused.text
    );

    // Another provider is not blocked.
    app.post_empty(&install_path(other), ADMIN_TOKEN)
        .await
        .expect(202);

    gate.add_permits(2);
    let done = wait_job(&app, provider, &job_id, "succeeded").await;
    assert_eq!(done["results"][0]["objects"][0]["action"], "created");
    assert!(done["finished_at"].is_string());
    // Finished: the next install starts.
    app.post_empty(&install_path(provider), ADMIN_TOKEN)
        .await
        .expect(202);
    gate.add_permits(1);
}

#[tokio::test]
async fn a_live_job_keeps_its_lease_and_a_killed_ones_is_recovered() {
    let lease = Duration::from_millis(900);
    let (_db, app, gate) = app(lease).await;
    let provider = app.create_global_provider("cluster-a").await;

    // A job started by a process that was then killed: nobody renews it.
    let dead = tekton_jobs::start(
        &app.pool,
        provider,
        None,
        false,
        &JobOwner {
            host: "gone-host".into(),
            pid: 4242,
        },
        lease,
    )
    .await
    .unwrap();
    let r = app.post_empty(&install_path(provider), ADMIN_TOKEN).await;
    r.expect(409);
    assert!(r.text.contains(&dead.id.to_string()), "{}", r.text);

    tokio::time::sleep(lease * 2).await;
    // Recovered by the next request: reading it shows why.
    let old = wait_job(&app, provider, &dead.id.to_string(), "failed").await;
    let error = old["error"].as_str().unwrap();
    assert!(
        error.contains("abandoned") && error.contains("4242") && error.contains("gone-host"),
        "{error}"
    );

    // A live job renews its heartbeat: still running (409) well past the lease.
    let live = app.post_empty(&install_path(provider), ADMIN_TOKEN).await;
    live.expect(202);
    let live_id = live.json()["id"].as_str().unwrap().to_string();
    tokio::time::sleep(lease * 3).await;
    let r = app.post_empty(&install_path(provider), ADMIN_TOKEN).await;
    r.expect(409);
    assert!(r.text.contains(&live_id), "{}", r.text);
    gate.add_permits(1);
    wait_job(&app, provider, &live_id, "succeeded").await;
}

#[tokio::test]
async fn bad_parameters_are_refused_by_name_and_start_nothing() {
    let (_db, app, _gate) = app(Duration::from_secs(30)).await;
    let provider = app.create_global_provider("cluster-a").await;
    let base = format!("/api/v1/admin/providers/{provider}/tekton/install");
    for (query, field) in [
        ("?namespace=Not_A_Label", "namespace"),
        ("?dry_run=perhaps", "dry_run"),
        ("?force=true", "force"),
    ] {
        let r = app.post_empty(&format!("{base}{query}"), ADMIN_TOKEN).await;
        r.expect(400);
        assert_eq!(r.fields(), [field], "{}", r.text);
    }
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM tekton_install_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    // Unknown provider: 404; a tenant token: 401.
    app.post_empty(&install_path(Uuid::now_v7()), ADMIN_TOKEN)
        .await
        .expect(404);
    let tenant = app.tenant("t").await;
    app.post_empty(&install_path(provider), &tenant.admin)
        .await
        .expect(401);
    let status = app
        .get(
            &format!("/api/v1/admin/providers/{provider}/tekton/status?namespace=ns-1"),
            ADMIN_TOKEN,
        )
        .await;
    status.expect(200);
    assert_eq!(status.json()["namespaces"], json!(["ns-1"]));
}
