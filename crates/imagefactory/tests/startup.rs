//! The binary's own settings as a process sees them: the secrets key is
//! required outside dev mode, `migrate` finds its database through
//! `IF_DATABASE_URL` then `DATABASE_URL` and creates it, logs can be JSON
//! lines, and with debug logging on no secret reaches the log.

mod common;

use std::process::ExitStatus;
use std::time::Duration;

use common::{ADMIN_TOKEN, Http, Proc, SECRET_KEY, free_port, fresh_database, spawn_serve};
use kube_sim::{KubeSim, KubeSimOptions};
use serde_json::{Value, json};
use sqlx::migrate::MigrateDatabase;

/// How long a process that only parses settings or migrates may take on a
/// loaded machine.
const EXIT_BOUND: Duration = Duration::from_secs(60);

async fn exited(proc: &mut Proc) -> ExitStatus {
    proc.wait_for_exit(EXIT_BOUND)
        .await
        .unwrap_or_else(|| panic!("still running after {EXIT_BOUND:?}:\n{}", proc.output()))
}

fn stderr(proc: &Proc) -> String {
    std::fs::read_to_string(&proc.stderr).unwrap_or_default()
}

async fn exists(url: &str) -> bool {
    sqlx::Postgres::database_exists(url).await.unwrap()
}

/// Migrations the binary must have applied to `url`.
async fn applied_migrations(url: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let n = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

fn migration_files() -> i64 {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/migrations");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sql")
        })
        .count() as i64
}

#[tokio::test]
async fn without_a_secret_key_only_dev_mode_starts() {
    let db = fresh_database("nokey");
    for command in ["serve", "dispatcher"] {
        let mut proc = Proc::spawn(
            &[command],
            &[
                ("IF_DATABASE_URL", db.url.clone()),
                ("IF_LISTEN_ADDR", format!("127.0.0.1:{}", free_port())),
                ("IF_ADMIN_TOKEN", ADMIN_TOKEN.into()),
            ],
        );
        let status = exited(&mut proc).await;
        assert!(!status.success(), "{command} started without a key");
        let err = stderr(&proc);
        assert!(
            err.contains("IF_SECRET_KEY is required"),
            "{command}: the refusal names the setting:\n{err}"
        );
        assert!(
            !exists(&db.url).await,
            "{command} touched the database before refusing"
        );
    }

    // A key that is not 64 hex characters is refused as well.
    let mut proc = Proc::spawn(
        &["serve"],
        &[
            ("IF_DATABASE_URL", db.url.clone()),
            ("IF_SECRET_KEY", "00112233".into()),
        ],
    );
    assert!(!exited(&mut proc).await.success());
    assert!(stderr(&proc).contains("IF_SECRET_KEY"), "{}", proc.output());

    // Explicit dev mode starts with a throwaway key, loudly.
    let port = free_port();
    let mut proc = Proc::spawn(
        &["serve"],
        &[
            ("IF_DATABASE_URL", db.url.clone()),
            ("IF_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("IF_DEV_MODE", "true".into()),
            ("IF_DISPATCHER_ENABLED", "false".into()),
        ],
    );
    Http::new(port)
        .wait_ready(&mut proc, Duration::from_secs(60))
        .await;
    assert!(stderr(&proc).contains("DEV MODE"), "{}", proc.output());
    drop(proc);
}

#[tokio::test]
async fn migrate_creates_the_database_named_by_database_url_unless_if_database_url_is_set() {
    // DATABASE_URL alone: the database is created and migrated; JSON logs.
    let fallback = fresh_database("migrate_fallback");
    let mut proc = Proc::spawn(
        &["migrate"],
        &[
            ("DATABASE_URL", fallback.url.clone()),
            ("IF_LOG_FORMAT", "json".into()),
        ],
    );
    let status = exited(&mut proc).await;
    assert!(status.success(), "{}", proc.output());
    assert_eq!(applied_migrations(&fallback.url).await, migration_files());
    let lines: Vec<Value> = stderr(&proc)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert!(
        messages.contains(&"created database") && messages.contains(&"migrations applied"),
        "{messages:?}"
    );
    assert!(lines.iter().all(|l| l["level"].is_string()), "{lines:?}");

    // Again: nothing to create, nothing to apply, still success.
    let mut again = Proc::spawn(&["migrate"], &[("DATABASE_URL", fallback.url.clone())]);
    assert!(exited(&mut again).await.success(), "{}", again.output());
    assert_eq!(applied_migrations(&fallback.url).await, migration_files());

    // IF_DATABASE_URL wins over a DATABASE_URL that leads nowhere.
    let chosen = fresh_database("migrate_chosen");
    let mut proc = Proc::spawn(
        &["migrate"],
        &[
            (
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/nowhere".into(),
            ),
            ("IF_DATABASE_URL", chosen.url.clone()),
        ],
    );
    assert!(exited(&mut proc).await.success(), "{}", proc.output());
    assert_eq!(applied_migrations(&chosen.url).await, migration_files());

    // And the one that leads nowhere fails, saying where it tried.
    let mut proc = Proc::spawn(
        &["migrate"],
        &[(
            "IF_DATABASE_URL",
            "postgres://postgres:pw-Kk9@127.0.0.1:1/nowhere".into(),
        )],
    );
    assert!(!exited(&mut proc).await.success());
    let err = stderr(&proc);
    assert!(
        err.contains("cannot reach PostgreSQL at postgres://postgres:***@127.0.0.1:1/nowhere"),
        "{err}"
    );
    assert!(!err.contains("pw-Kk9"), "{err}");
}

#[tokio::test]
async fn debug_logs_never_contain_a_secret() {
    const REGISTRY_PASSWORD: &str = "registry-pass-Lq31";
    const GIT_PASSWORD: &str = "git-pass-Wm72";
    const REFUSED_PASSWORD: &str = "refused-pass-Tz08";
    const WRONG_TOKEN: &str = "ift_wrongprefix_0123456789abcdef0123456789abcdef";

    let sim = KubeSim::start(KubeSimOptions::default())
        .await
        .expect("kube-sim starts");
    let db = fresh_database("quietlogs");
    let port = free_port();
    let workdir = tempfile::tempdir().unwrap();
    let mut proc = spawn_serve(&db.url, port, workdir.path(), "debug");
    let http = Http::new(port);
    http.wait_ready(&mut proc, Duration::from_secs(60)).await;

    let (tenant, token) = http.tenant_with_token("quiet").await;
    http.allow_local_builds(tenant["id"].as_str().unwrap())
        .await;
    // A provider whose token the cluster accepts, used by test-connection.
    let provider = http
        .created(
            "/api/v1/providers",
            &token,
            json!({"name": "sim", "provider_type": "kubernetes",
                   "config": {"auth_method": "token", "endpoint": sim.endpoint(),
                              "token": sim.admin_token(), "ca_cert": sim.ca_pem()}}),
        )
        .await;
    let (status, report) = http
        .post(
            &format!(
                "/api/v1/providers/{}/test-connection",
                provider["id"].as_str().unwrap()
            ),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["authenticated"], true, "{report}");
    let credential = http
        .created(
            "/api/v1/registry-credentials",
            &token,
            json!({"name": "reg", "registry": "127.0.0.1:5000", "username": "bot",
                   "password": REGISTRY_PASSWORD}),
        )
        .await;
    // A request refused for another reason still carries a secret.
    let (status, refused) = http
        .post(
            "/api/v1/registry-credentials",
            &token,
            json!({"name": "reg2", "registry": "127.0.0.1:5000", "username": "bot",
                   "password": REFUSED_PASSWORD, "pasword": "typo"}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    let (status, _) = http.get("/api/v1/projects", WRONG_TOKEN).await;
    assert_eq!(status, 401);
    // Nothing listens on port 1: the clone fails at once, after the git
    // credential and the registry auth file were handed to the tools.
    let project = http
        .created(
            "/api/v1/projects",
            &token,
            json!({"name": "web", "git_url": "http://127.0.0.1:1/team/web.git",
                   "git_credential": {"username": "deploy", "password": GIT_PASSWORD}}),
        )
        .await;
    let build = http
        .created(
            "/api/v1/builds",
            &token,
            json!({"project_id": project["id"], "method": "docker", "infrastructure_type": "local",
                   "image": "127.0.0.1:5000/team/web:dev", "registry_credential_id": credential["id"]}),
        )
        .await;
    let build_id = build["id"].as_str().unwrap().to_owned();
    http.wait_build(
        &token,
        &build_id,
        &["failed"],
        &proc,
        Duration::from_secs(60),
    )
    .await;

    proc.signal(libc::SIGTERM);
    let status = exited(&mut proc).await;
    assert!(status.success(), "{}", proc.output());
    let log = proc.output();
    // The log is not empty: requests, the build and the dispatcher are in it.
    for expected in [
        "finished processing request",
        &build_id,
        "dispatcher started",
    ] {
        assert!(log.contains(expected), "no {expected:?} in the log:\n{log}");
    }
    for secret in [
        ADMIN_TOKEN,
        SECRET_KEY,
        token.as_str(),
        sim.admin_token(),
        REGISTRY_PASSWORD,
        GIT_PASSWORD,
        REFUSED_PASSWORD,
        WRONG_TOKEN,
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
}
