//! `imagefactory serve` as a process: the embedded dispatcher claims a build
//! submitted over HTTP and the local executor runs it; SIGTERM stops both.

mod common;

use std::time::Duration;

use common::{Http, TERMINAL, free_port, fresh_database, spawn_serve};
use serde_json::json;

#[tokio::test]
async fn embedded_dispatcher_runs_a_local_build_and_sigterm_exits_cleanly() {
    let db = fresh_database("serve");
    let port = free_port();
    let workdir = tempfile::tempdir().unwrap();
    let mut proc = spawn_serve(&db.url, port, workdir.path(), "info");
    let http = Http::new(port);
    http.wait_ready(&mut proc, Duration::from_secs(60)).await;

    let (tenant, token) = http.tenant_with_token("serve-test").await;
    http.allow_local_builds(tenant["id"].as_str().unwrap())
        .await;
    // Nothing listens on port 1: `git clone` fails at once, no network or
    // container tools involved.
    let project = http
        .created(
            "/api/v1/projects",
            &token,
            json!({"name": "web", "git_url": "https://127.0.0.1:1/team/web.git"}),
        )
        .await;
    let build = http
        .created(
            "/api/v1/builds",
            &token,
            json!({"project_id": project["id"], "method": "docker", "infrastructure_type": "local",
                   "image": "127.0.0.1:5000/team/web:dev"}),
        )
        .await;
    let build_id = build["id"].as_str().unwrap().to_owned();

    let ended = http
        .wait_build(&token, &build_id, &TERMINAL, &proc, Duration::from_secs(60))
        .await;
    assert_eq!(ended["status"], "failed", "{ended}");
    let message = ended["error_message"].as_str().unwrap_or_default();
    assert!(
        message.contains("git") && message.contains("127.0.0.1"),
        "message should name the git error: {ended}"
    );

    // The embedded dispatcher ran it: one execution by the local executor.
    let (status, executions) = http
        .get(&format!("/api/v1/builds/{build_id}/executions"), &token)
        .await;
    assert_eq!(status, 200, "{executions}");
    let executions = executions["items"]
        .as_array()
        .cloned()
        .expect("executions page");
    assert_eq!(executions.len(), 1, "{executions:?}");
    assert_eq!(executions[0]["executor"], "local", "{executions:?}");
    assert_eq!(executions[0]["status"], "failed", "{executions:?}");

    proc.signal(libc::SIGTERM);
    let status = proc.wait_for_exit(Duration::from_secs(30)).await;
    let status =
        status.unwrap_or_else(|| panic!("no exit within 30s after SIGTERM:\n{}", proc.output()));
    assert!(status.success(), "exit {status}:\n{}", proc.output());
    let output = proc.output();
    assert!(output.contains("dispatcher started"), "{output}");
    assert!(output.contains("SIGTERM received"), "{output}");
}
