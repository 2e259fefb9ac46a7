//! The host step runner: Task steps run for real as host processes (scripts,
//! commands, env from Secrets and ConfigMaps, workspaces as directories,
//! results, logs, exit codes, missing tools, cancellation and timeouts).

mod tekton_support;

use std::path::Path;
use std::time::Duration;

use kube_sim::cluster::gvr;
use kube_sim::tekton::{ControllerOptions, HostSteps, model};
use serde_json::{Value, json};
use tekton_support::*;

/// A simulator whose steps run on the host under `root` (simulated time
/// 100× faster: timeouts and the pod start delay shrink, steps take what they take).
async fn host_env(root: &Path) -> Env {
    let env = env_with(ControllerOptions {
        time_scale: 0.01,
        host_steps: Some(HostSteps {
            root: root.to_path_buf(),
        }),
        ..ControllerOptions::default()
    })
    .await;
    env.default_storage_class().await;
    env
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn seed_secret_and_configmap(env: &Env) {
    env.create(
        Some("ci"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "data": {"token": b64("t0ken-value"), "config.json": b64("{\"auths\":{}}")}}),
    )
    .await;
    env.create(
        Some("ci"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"greeting": "hello from a configmap"}}),
    )
    .await;
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The TaskRun of pipeline task `task` in PipelineRun `r`.
async fn child(env: &Env, task: &str) -> Value {
    env.list(&gvr::TASKRUNS, "ci")
        .await
        .into_iter()
        .find(|tr| {
            model::str_at(tr, &["metadata", "labels", "tekton.dev/pipelineTask"]) == Some(task)
        })
        .unwrap_or_else(|| panic!("a TaskRun for {task}"))
}

fn write_task() -> Value {
    json!({
        "workspaces": [{"name": "src"}, {"name": "creds", "mountPath": "/etc/creds"}],
        "results": [{"name": "mode"}, {"name": "cwd"}],
        "steps": [
            {"name": "a", "image": "busybox", "workingDir": "$(workspaces.src.path)/sub",
             "env": [
                {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {"name": "OUT", "value": "$(workspaces.src.path)/token"}],
             "script": "echo \"$GREETING\"\necho to-stderr >&2\nprintf '%s' \"$TOKEN\" > \"$OUT\"\npwd > ../cwd\n"},
            {"name": "b", "image": "bash",
             "script": "#!/bin/bash\nset -eu\nprintf '%s' \"$(stat -c %a /etc/creds/cfg)\" > $(results.mode.path)\nprintf '%s' \"$(cat $(workspaces.src.path)/cwd)\" > $(results.cwd.path)\ntest -d /tekton/home && test \"$HOME\" = /tekton/home\n"}
        ]
    })
}

#[tokio::test]
async fn pipeline_steps_run_on_the_host_with_workspaces_secrets_and_results() {
    let root = tempfile::tempdir().unwrap();
    let env = host_env(root.path()).await;
    seed_secret_and_configmap(&env).await;
    let spec = json!({
        "workspaces": [
            {"name": "shared", "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}},
            {"name": "creds", "secret": {"secretName": "creds", "items": [{"key": "config.json", "path": "cfg", "mode": 256}]}}],
        "pipelineSpec": {
            "workspaces": [{"name": "shared"}, {"name": "creds"}],
            "results": [{"name": "got", "value": "$(tasks.read.results.got)"}],
            "tasks": [
                {"name": "write", "taskSpec": write_task(),
                 "workspaces": [{"name": "src", "workspace": "shared"}, {"name": "creds", "workspace": "creds"}]},
                {"name": "read", "runAfter": ["write"],
                 "workspaces": [{"name": "src", "workspace": "shared"}],
                 "taskSpec": {"workspaces": [{"name": "src"}], "results": [{"name": "got"}],
                    "steps": [{"name": "cat", "image": "busybox",
                        "command": ["sh", "-c", "cat \"$0\" > $(results.got.path)", "$(workspaces.src.path)/token"]}]}}
            ]
        }
    });
    let run = run_to_end(&env, spec).await;
    let write = child(&env, "write").await;
    assert_eq!(
        condition(&run).1,
        "Succeeded",
        "{:#}",
        write["status"]["steps"]
    );
    assert_eq!(
        result(&run, "got").as_deref(),
        Some("t0ken-value"),
        "the next task read the shared claim"
    );

    assert_eq!(
        result(&write, "mode").as_deref(),
        Some("400"),
        "secret item mode"
    );
    let cwd = result(&write, "cwd").unwrap();
    let claims = root.path().join("claims/ci");
    let claim = entries(&claims);
    assert_eq!(claim.len(), 1, "one claim directory shared by both tasks");
    assert_eq!(
        cwd,
        claims.join(&claim[0]).join("sub").display().to_string(),
        "workingDir in the claim"
    );
    let pod = model::str_at(&write, &["status", "podName"])
        .unwrap()
        .to_string();
    let mut logs = env.logs("ci", &pod, "step-a").await;
    // stdout and stderr are two pipes: their relative order is not kept.
    logs.sort();
    assert_eq!(logs, vec!["hello from a configmap", "to-stderr"]);

    assert!(
        entries(&root.path().join("pods/ci")).is_empty(),
        "pod directories (and the Secret's files) are gone"
    );
    env.delete(&gvr::PIPELINERUNS, "ci", "r").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !entries(&claims).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the claim's directory goes with the claim"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn taskrun(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "metadata": {"name": name}, "spec": spec})
}

fn one_step(step: Value) -> Value {
    json!({"taskSpec": {"steps": [step]}})
}

/// Secrets at the absolute paths a Task chooses — a Task volume a step
/// mounts at `/etc/signing`, a read-only workspace at `/etc/login` — with
/// keys from `data` and from `stringData` (kept as sent by kube-sim's API
/// server; a real one merges it into `data`, its keys winning), also through
/// `secretKeyRef`; and each step's own `/tekton/steps/step-<name>/results`
/// (where a StepAction's `$(step.results.<r>.path)` points), also
/// `/tekton/steps/<index>`.
#[tokio::test]
async fn secrets_at_absolute_mount_paths_and_step_result_directories() {
    let root = tempfile::tempdir().unwrap();
    let env = host_env(root.path()).await;
    env.create(
        Some("ci"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "signing"},
        "data": {"key.pem": b64("from-data"), "both": b64("data-loses")},
        "stringData": {"user": "robot", "both": "stringData-wins"}}),
    )
    .await;
    let read = "test \"$(cat /etc/signing/key.pem)\" = from-data\n\
        test \"$(cat /etc/login/user)\" = robot\n\
        printf '%s %s %s' \"$(cat /etc/login/both)\" \"$FROM_ENV\" \"$(cat /etc/signing/user)\" > $(results.seen.path)\n";
    let say = "printf hi > /tekton/steps/step-say/results/said\n\
        test \"$(cat /tekton/steps/1/results/said)\" = hi\n";
    let spec = json!({
        "workspaces": [{"name": "login", "secret": {"secretName": "signing"}}],
        "taskSpec": {
            "workspaces": [{"name": "login", "mountPath": "/etc/login", "readOnly": true}],
            "volumes": [{"name": "keys", "secret": {"secretName": "signing"}}],
            "results": [{"name": "seen"}],
            "steps": [
                {"name": "read", "image": "busybox",
                 "volumeMounts": [{"name": "keys", "mountPath": "/etc/signing", "readOnly": true}],
                 "env": [{"name": "FROM_ENV", "valueFrom": {"secretKeyRef": {"name": "signing", "key": "user"}}}],
                 "script": read},
                {"name": "say", "image": "alpine", "script": say}
            ]
        }
    });
    env.create(Some("ci"), taskrun("secrets", spec)).await;
    let tr = env.wait_done(&gvr::TASKRUNS, "ci", "secrets").await;
    assert_eq!(condition(&tr).1, "Succeeded", "{:#}", tr["status"]);
    assert_eq!(
        result(&tr, "seen").as_deref(),
        Some("stringData-wins robot robot")
    );
}

/// A step leads a session of its own, as a container's process does: no
/// controlling terminal, so a tool that would prompt (git asking for a
/// password) fails at once instead of waiting on the terminal of whoever
/// started kube-sim; its process group is its own.
#[tokio::test]
async fn a_step_runs_in_a_session_of_its_own_without_a_terminal() {
    let root = tempfile::tempdir().unwrap();
    let env = host_env(root.path()).await;
    // /proc/<pid>/stat after the command name: state ppid pgrp session …
    let script = "#!/bin/sh\nstat=`cat /proc/$$/stat`\nset -- ${stat##*) }\necho \"pid $$ pgrp $3 session $4\"\nif (exec 3</dev/tty) 2>/dev/null; then echo terminal; else echo no terminal; fi\n";
    env.create(
        Some("ci"),
        taskrun(
            "session",
            one_step(json!({"name": "s", "image": "busybox", "script": script})),
        ),
    )
    .await;
    let tr = env.wait_done(&gvr::TASKRUNS, "ci", "session").await;
    assert_eq!(condition(&tr).1, "Succeeded", "{:#}", tr["status"]);
    let pod = model::str_at(&tr, &["status", "podName"])
        .unwrap()
        .to_string();
    let logs = env.logs("ci", &pod, "step-s").await;
    assert_eq!(logs.len(), 2, "{logs:?}");
    let ids: Vec<&str> = logs[0].split(' ').skip(1).step_by(2).collect();
    assert_eq!(ids.len(), 3, "{logs:?}");
    assert!(
        ids[1] == ids[0] && ids[2] == ids[0],
        "the step leads its process group and session: {logs:?}"
    );
    assert_eq!(logs[1], "no terminal");
}

#[tokio::test]
async fn exit_codes_and_missing_tools_fail_the_step_clearly() {
    let root = tempfile::tempdir().unwrap();
    let env = host_env(root.path()).await;
    let cases = [
        (
            "exit3",
            one_step(json!({"name": "s", "image": "busybox", "script": "echo before\nexit 3"})),
            3,
            None,
        ),
        (
            "cmd",
            one_step(
                json!({"name": "s", "image": "kaniko", "command": ["no-such-tool-xyz", "--flag"]}),
            ),
            127,
            Some("no-such-tool-xyz is not available on this host"),
        ),
        (
            "script",
            one_step(
                json!({"name": "s", "image": "buildkit", "script": "#!/bin/sh\necho start\nbuildctl-missing-xyz build\n"}),
            ),
            127,
            Some("buildctl-missing-xyz is not available on this host"),
        ),
    ];
    for (name, spec, _, _) in &cases {
        env.create(Some("ci"), taskrun(name, spec.clone())).await;
    }
    for (name, _, code, message) in cases {
        let tr = env.wait_done(&gvr::TASKRUNS, "ci", name).await;
        assert_eq!(
            condition(&tr),
            failed(
                "StepFailed",
                &format!("\"step-s\" exited with code {code}: Error")
            ),
            "{name}"
        );
        let terminated = &tr["status"]["steps"][0]["terminated"];
        assert_eq!(terminated["exitCode"], code, "{name}");
        assert_eq!(terminated["message"].as_str(), message, "{name}");
        let pod = model::str_at(&tr, &["status", "podName"])
            .unwrap()
            .to_string();
        let logs = env.logs("ci", &pod, "step-s").await;
        if let Some(m) = message {
            assert_eq!(logs.last().map(String::as_str), Some(m), "{name}: {logs:?}");
        } else {
            assert_eq!(logs, vec!["before"]);
        }
    }
}

/// The process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// A step that leaves a background `sleep` and writes its pid to `pidfile`.
fn sleeper(pidfile: &Path, timeout: &str) -> Value {
    let mut spec = one_step(json!({"name": "s", "image": "busybox",
        "script": format!("sleep 300 &\necho $! > {}\necho started\nwait\n", pidfile.display())}));
    spec["timeout"] = json!(timeout);
    spec
}

/// The process dies soon (a SIGKILL is delivered asynchronously).
async fn assert_dies(pid: i32, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not kill process {pid}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_pid(pidfile: &Path) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the step did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cancel_and_timeout_kill_the_step_process_group() {
    let root = tempfile::tempdir().unwrap();
    let env = host_env(root.path()).await;
    let (cancel_pid, timeout_pid) = (
        root.path().join("cancel.pid"),
        root.path().join("timeout.pid"),
    );
    env.create(Some("ci"), taskrun("cancel", sleeper(&cancel_pid, "1h")))
        .await;
    // 300 simulated seconds at time scale 0.01: 3 s.
    env.create(Some("ci"), taskrun("slow", sleeper(&timeout_pid, "300s")))
        .await;
    let pid = wait_pid(&cancel_pid).await;
    assert!(alive(pid));
    env.merge_patch(
        &gvr::TASKRUNS,
        "ci",
        "cancel",
        json!({"spec": {"status": "TaskRunCancelled"}}),
    )
    .await
    .unwrap();
    env.wait_reason(&gvr::TASKRUNS, "ci", "cancel", "TaskRunCancelled")
        .await;
    assert_dies(pid, "cancelling").await;

    let pid = wait_pid(&timeout_pid).await;
    let tr = env
        .wait_reason(&gvr::TASKRUNS, "ci", "slow", "TaskRunTimeout")
        .await;
    assert_dies(pid, "the timeout").await;
    let pod = model::str_at(&tr, &["status", "podName"])
        .unwrap()
        .to_string();
    env.wait_gone(&gvr::PODS, "ci", &pod).await;
    assert!(entries(&root.path().join("pods/ci")).is_empty());
}
