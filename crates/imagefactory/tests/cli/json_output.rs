//! `--output json` parses for every command; `login` writes a private
//! config file the other commands use; API errors show the problem's
//! detail and field with their own exit code; completions are generated.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::common::ADMIN_TOKEN;
use crate::harness::{Cli, Ran, World, rule};

async fn json(cli: &Cli, args: &[&str]) -> Value {
    let mut argv = args.to_vec();
    argv.extend(["--output", "json"]);
    let ran = cli.run(&argv).await;
    assert_eq!(ran.code(), 0, "{args:?}: {ran:?}");
    ran.json()
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

/// Every stdout line is a JSON document (streams).
fn json_lines(ran: &Ran) -> Vec<Value> {
    ran.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in {ran:?}")))
        .collect()
}

#[tokio::test]
async fn every_command_speaks_json_and_login_keeps_a_private_config() {
    // buildx builds take hours: one is there to cancel and retry.
    let world = World::start(
        vec![rule("buildx", |r| r.duration = Some("2h".into()))],
        false,
    )
    .await;
    let cli = world.cli();
    let admin = world.admin_cli();

    // login: verified, stored 0600 under the config dir, token not printed.
    let bare = cli.bare();
    let ran = bare
        .run_with_input(
            &["login", "--url", &world.http.base, "-o", "json"],
            &format!("{}\n", world.token),
        )
        .await;
    assert_eq!(ran.code(), 0, "{ran:?}");
    assert_eq!(ran.json()["token_kind"], "tenant");
    assert!(!ran.stdout.contains(&world.token) && !ran.stderr.contains(&world.token));
    let path = bare.home.path().join(".config/imagefactory/config.json");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    // Later commands need neither flag nor environment.
    let projects = json(&bare, &["project", "list"]).await;
    assert_eq!(
        projects["items"][0]["id"],
        world.project.as_str(),
        "{projects}"
    );
    // A wrong token is refused at login and nothing is stored.
    let ran = cli
        .bare()
        .run_with_input(&["login", "--url", &world.http.base], "ifk_wrong\n")
        .await;
    assert_eq!(ran.code(), 5, "{ran:?}");

    // Projects, registry credentials (password on stdin), providers.
    let project = json(
        &cli,
        &[
            "project",
            "create",
            "--name",
            "api",
            "--git-url",
            "https://git.example.com/team/api.git",
        ],
    )
    .await;
    json(&cli, &["project", "get", &id(&project)]).await;
    let ran = cli
        .run_with_input(
            &[
                "registry-credential",
                "create",
                "--name",
                "hub",
                "--registry",
                "registry.example.com",
                "--username",
                "bot",
                "--password-stdin",
                "-o",
                "json",
            ],
            "s3cret-pw\n",
        )
        .await;
    assert_eq!(ran.code(), 0, "{ran:?}");
    let credential = ran.json();
    assert_eq!(credential["password_set"], true);
    assert!(!ran.stdout.contains("s3cret-pw"));
    let credentials = json(&cli, &["registry-credential", "list"]).await;
    assert_eq!(credentials["items"].as_array().unwrap().len(), 1);
    json(&cli, &["registry-credential", "get", &id(&credential)]).await;
    let provider = world
        .http
        .created(
            "/api/v1/providers",
            &world.token,
            serde_json::json!({"name": "nowhere", "provider_type": "kubernetes",
                "config": {"auth_method": "token", "endpoint": "https://127.0.0.1:1", "token": "t"}}),
        )
        .await;
    let providers = json(&cli, &["provider", "list"]).await;
    assert!(
        providers["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == provider["id"])
    );
    json(&cli, &["provider", "get", &id(&provider)]).await;
    // A provider that cannot be reached: the report, and exit 1.
    let ran = cli
        .run(&["provider", "test", &id(&provider), "-o", "json"])
        .await;
    assert_eq!(ran.code(), 1, "{ran:?}");
    assert_eq!(ran.json()["reachable"], false);

    // Builds: submit, list (paged), get, logs, follow, retry, cancel.
    let submit = [
        "build",
        "submit",
        "--project",
        &world.project,
        "--method",
        "docker",
        "--image",
        "registry.example.com/team/web:3.0",
    ];
    let mut slow = submit.to_vec();
    slow[5] = "buildx";
    let first = json(&cli, &slow).await;
    let mut follow = submit.to_vec();
    follow.extend(["--follow", "-o", "json"]);
    let ran = cli.run(&follow).await;
    assert_eq!(ran.code(), 0, "{ran:?}");
    let events = json_lines(&ran);
    assert_eq!(events[0]["event"], "build");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "log" && e["source"].is_string()),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap()["event"], "end");
    assert_eq!(events.last().unwrap()["status"], "succeeded");
    let followed = events[0]["build"]["id"].as_str().unwrap().to_owned();
    let page = json(&cli, &["build", "list", "--limit", "1"]).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let rest = json(
        &cli,
        &["build", "list", "--limit", "1", "--cursor", &cursor],
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_ne!(rest["items"][0]["id"], page["items"][0]["id"]);
    let all = json(&cli, &["build", "list", "--limit", "1", "--all"]).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
    let filtered = json(
        &cli,
        &[
            "build",
            "list",
            "--status",
            "succeeded",
            "--project",
            &world.project,
        ],
    )
    .await;
    assert!(
        filtered["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"] == "succeeded")
    );
    assert_eq!(
        json(&cli, &["build", "get", &followed]).await["status"],
        "succeeded"
    );
    let logs = json(&cli, &["build", "logs", &followed]).await;
    assert_eq!(
        logs["lines"].as_array().unwrap().len(),
        world.plain_log(&followed).await.len()
    );
    let ran = cli
        .run(&["build", "logs", &followed, "-f", "-o", "json"])
        .await;
    assert_eq!(ran.code(), 0, "{ran:?}");
    assert_eq!(json_lines(&ran).last().unwrap()["status"], "succeeded");
    let cancelled = json(&cli, &["build", "cancel", &id(&first)]).await;
    assert!(cancelled["cancel_requested_at"].is_string(), "{cancelled}");
    world
        .http
        .wait_build(
            &world.token,
            &id(&first),
            &["cancelled"],
            &world.serve,
            std::time::Duration::from_secs(60),
        )
        .await;
    let retried = json(&cli, &["build", "retry", &id(&first)]).await;
    assert_eq!(retried["status"], "queued");

    // Tokens (the tenant's own) and the admin's tenants and tokens.
    let token = json(
        &cli,
        &["token", "create", "--name", "ci", "--role", "viewer"],
    )
    .await;
    let token_id = token["id"].as_str().expect("the created token").to_owned();
    json(&cli, &["token", "list"]).await;
    json(&cli, &["token", "revoke", &token_id]).await;
    let tenant = json(&admin, &["tenant", "create", "--name", "other-team"]).await;
    json(&admin, &["tenant", "list"]).await;
    json(&admin, &["tenant", "get", &id(&tenant)]).await;
    let admin_made = json(
        &admin,
        &[
            "token",
            "create",
            "--tenant",
            &id(&tenant),
            "--name",
            "a",
            "--role",
            "admin",
        ],
    )
    .await;
    json(&admin, &["token", "list", "--tenant", &id(&tenant)]).await;
    json(
        &admin,
        &[
            "token",
            "revoke",
            admin_made["id"].as_str().unwrap(),
            "--tenant",
            &id(&tenant),
        ],
    )
    .await;
    json(&admin, &["provider", "list", "--global"]).await;
    json(&admin, &["tenant", "delete", &id(&tenant)]).await;
    json(&cli, &["registry-credential", "delete", &id(&credential)]).await;
    json(&cli, &["project", "delete", &id(&project)]).await;
    assert!(ADMIN_TOKEN != world.token);
}

#[tokio::test]
async fn errors_show_the_problem_and_completions_are_generated() {
    let world = World::start(Vec::new(), false).await;
    let cli = world.cli();
    // A field error: the detail and the field, no Rust error chain.
    let ran = cli
        .run(&[
            "build",
            "submit",
            "--project",
            &world.project,
            "--method",
            "kaniko",
        ])
        .await;
    assert_eq!(ran.code(), 5, "{ran:?}");
    assert!(
        ran.stderr.contains("image: kaniko needs a destination"),
        "{ran:?}"
    );
    assert!(
        !ran.stderr.contains("Caused by") && !ran.stderr.contains("Error {"),
        "{ran:?}"
    );
    // Unknown build: 404 detail.
    let missing = "00000000-0000-0000-0000-000000000001";
    let ran = cli.run(&["build", "get", missing, "-o", "json"]).await;
    assert_eq!(ran.code(), 5, "{ran:?}");
    let err: Value = serde_json::from_str(ran.stderr.trim()).unwrap();
    assert_eq!(err["status"], 404, "{err}");
    // No server: its own code, the cause, never the token.
    let mut away = cli.bare();
    away.env = vec![
        ("IF_URL".into(), "http://127.0.0.1:1".into()),
        ("IF_TOKEN".into(), world.token.clone()),
    ];
    let ran = away.run(&["build", "list"]).await;
    assert_eq!(ran.code(), 6, "{ran:?}");
    assert!(
        ran.stderr.contains("127.0.0.1:1") && !ran.stderr.contains(&world.token),
        "{ran:?}"
    );
    // Following a server that stays away: reconnects for the window, then 6.
    let ran = away
        .run(&["build", "logs", missing, "-f", "--reconnect-timeout", "1s"])
        .await;
    assert_eq!(ran.code(), 6, "{ran:?}");
    assert!(ran.stderr.contains("cannot connect"), "{ran:?}");
    // No URL or token at all: usage, saying what to do.
    let ran = cli.bare().run(&["build", "list"]).await;
    assert_eq!(ran.code(), 2, "{ran:?}");
    assert!(ran.stderr.contains("imagefactory login"), "{ran:?}");
    // Completions for the whole binary.
    let ran = cli.run(&["completions", "bash"]).await;
    assert_eq!(ran.code(), 0, "{ran:?}");
    assert!(ran.stdout.contains("registry-credential") && ran.stdout.contains("submit"));
}
