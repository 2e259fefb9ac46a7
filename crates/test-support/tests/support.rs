//! The scaffolding does what the tests rely on: databases go with their
//! guards (after a panic too), and the client sends what it says.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use imagefactory_test_support::{ApiClient, Body, ReservedDb, TestDb, database_exists};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_dropped_when_the_test_ends_or_panics() {
    let db = TestDb::with_prefix("if_support").await;
    let name = db.name().to_owned();
    assert!(database_exists(&name).await);
    // Migrated: the schema's tables are there.
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(tenants, 0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_database_is_dropped_once_something_created_it() {
    let reserved = ReservedDb::new("if_support_reserved");
    let name = reserved.name().to_owned();
    assert!(
        reserved.url.ends_with(&format!("/{name}")),
        "{}",
        reserved.url
    );
    assert!(!database_exists(&name).await, "reserved, not created");
    // As the process under test would: create it at that URL.
    use sqlx::migrate::MigrateDatabase;
    sqlx::Postgres::create_database(&reserved.url)
        .await
        .unwrap();
    assert!(database_exists(&name).await);
    drop(reserved);
    assert!(!database_exists(&name).await, "{name} left behind");
    // Never created: dropping the guard is quiet and harmless.
    drop(ReservedDb::new("if_support_reserved"));
}

/// Answers with what it received, so the test sees what the client sent.
async fn echo_server(polls: Arc<AtomicU32>) -> ApiClient {
    let app = axum::Router::new()
        .route(
            "/echo",
            post(|headers: HeaderMap, body: String| async move {
                let header = |n: &str| {
                    headers
                        .get(n)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default()
                };
                (
                    StatusCode::CREATED,
                    Json(json!({"id": "0190a3c4-0000-7000-8000-000000000001",
                                "authorization": header("authorization"),
                                "content_type": header("content-type"), "body": body})),
                )
            }),
        )
        .route(
            "/problem",
            get(|| async {
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    [("content-type", "application/problem+json")],
                    r#"{"type":"https://imagefactory.dev/problems/validation","status":422,"detail":"bad","errors":[{"field":"name"}]}"#,
                )
            }),
        )
        .route(
            "/api/v1/builds/{id}",
            get(move |Path(id): Path<String>| {
                let polls = polls.clone();
                async move {
                    // Running for two polls, then succeeded.
                    let n = polls.fetch_add(1, Ordering::SeqCst);
                    let status = if n < 2 { "running" } else { "succeeded" };
                    Json(json!({"id": id, "status": status}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    ApiClient::local(port)
}

#[tokio::test]
async fn the_client_sends_its_token_and_body_and_reads_problems() {
    let polls = Arc::new(AtomicU32::new(0));
    let api = echo_server(polls.clone()).await;

    let anonymous = api.post("/echo", json!({"a": 1})).await;
    anonymous.expect(201);
    assert_eq!(anonymous.json()["authorization"], "");
    assert_eq!(anonymous.json()["body"], r#"{"a":1}"#);

    let as_tenant = api.as_token("tok-1");
    let echoed: Value = as_tenant.created("/echo", json!({})).await;
    assert_eq!(echoed["authorization"], "Bearer tok-1");
    assert_eq!(as_tenant.token(), Some("tok-1"));
    assert_eq!(api.token(), None, "as_token leaves the original alone");

    let raw = as_tenant
        .send(
            reqwest::Method::POST,
            "/echo",
            Body::Raw {
                content_type: "text/plain",
                text: "{not json".into(),
            },
        )
        .await;
    assert_eq!(raw.json()["content_type"], "text/plain");
    assert_eq!(raw.json()["body"], "{not json");
    assert_eq!(raw.id().to_string(), "0190a3c4-0000-7000-8000-000000000001");

    let problem = api.get("/problem").await;
    assert_eq!(problem.problem(), "validation");
    assert_eq!(problem.fields(), ["name"]);
    assert_eq!(problem.parts().0, 422);

    let missing = api.get("/nowhere").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.value(), Value::String(missing.text.clone()));

    let id = uuid::Uuid::now_v7();
    let build = api
        .wait_build(id, &["succeeded"], Duration::from_secs(30))
        .await;
    assert_eq!(build["status"], "succeeded");
    assert_eq!(polls.load(Ordering::SeqCst), 3, "polled until it changed");
    let last = api
        .poll_build(id, &["failed"], Duration::from_millis(250))
        .await
        .unwrap_err();
    assert_eq!(last["status"], "succeeded", "the last build seen");
}

/// A private server stops and starts again on its port with its data, and
/// a pool on it recovers by itself; the shared server is not involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_server_stops_and_starts_again_with_its_data() {
    let mut server = imagefactory_test_support::PgServer::start();
    assert!(
        server
            .admin_url()
            .ends_with(&format!(":{}/postgres", server.port()))
    );
    let db = TestDb::on_server(
        &server.admin_url(),
        "if_pgserver",
        2,
        Duration::from_secs(2),
    )
    .await;
    sqlx::query(
        "INSERT INTO tenants (id, name, display_name) VALUES (gen_random_uuid(), 'kept', 'Kept')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    server.stop();
    let down = sqlx::query("SELECT 1").execute(&db.pool).await;
    assert!(down.is_err(), "a stopped server answered");
    server.start_again();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM tenants")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(names, ["kept"]);
    assert!(
        !database_exists(db.name()).await,
        "the test database was made on the shared server"
    );
    db.drop_db().await;
}

/// The git server speaks smart HTTP (a shallow clone works, which git's
/// "dumb" static-file protocol cannot serve) and lets in only its user.
#[test]
fn the_git_server_serves_shallow_clones_to_its_user_only() {
    use imagefactory_test_support::{GitServer, commit, git, git_repo, have_tools};
    if !have_tools("git server", &["git"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path(), &[("README", "one\n")]);
    let head = commit(&repo, &[("README", "two\n")], "second");
    let server = GitServer::start(&repo, Some(("alice", "pa55-w0rd")));

    let clone = |name: &str, url: &str| {
        std::process::Command::new("git")
            .args(["clone", "-q", "--depth=1", "--", url])
            .arg(tmp.path().join(name))
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap()
    };
    let anonymous = clone("anonymous", &server.url);
    assert!(!anonymous.status.success(), "cloned without a credential");
    assert!(server.denied() > 0);
    let wrong = clone("wrong", &server.url_with("alice", "wrong"));
    assert!(!wrong.status.success(), "cloned with a wrong password");
    assert_eq!(server.served(), 0, "nothing served without the credential");

    let ok = clone("ok", &server.url_with("alice", "pa55-w0rd"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let copy = tmp.path().join("ok");
    assert_eq!(git(&copy, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&copy, &["rev-list", "--count", "HEAD"]), "1", "shallow");
    assert_eq!(
        std::fs::read_to_string(copy.join("README")).unwrap(),
        "two\n"
    );
    assert!(server.served() > 0);
}
