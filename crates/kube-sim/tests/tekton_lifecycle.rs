//! Run lifecycle: condition progression, cancellation, pending, timeouts, `when`,
//! scripting of steps and v1beta1 conversion of finished runs.

mod tekton_support;

use futures::{StreamExt, TryStreamExt};
use kube::api::{WatchEvent, WatchParams};
use kube_sim::cluster::{Gvr, gvr};

const V1BETA1_PIPELINERUNS: Gvr = Gvr::new("tekton.dev", "v1beta1", "pipelineruns");
const V1BETA1_TASKRUNS: Gvr = Gvr::new("tekton.dev", "v1beta1", "taskruns");
use kube_sim::tekton::{ControllerOptions, ScriptRule, model};
use serde_json::{Value, json};
use std::time::Duration;
use tekton_support::*;

fn inline_task(name: &str, step: &str) -> Value {
    json!({"name": name, "taskSpec": {"steps": [{"name": step, "image": "busybox", "script": "echo hi"}]}})
}

/// A step scripted to take an hour of simulated time.
fn slow(task: &str) -> ScriptRule {
    ScriptRule {
        task: Some(task.into()),
        duration: Some("1h".into()),
        ..Default::default()
    }
}

/// An environment where task `task`'s step takes an hour of simulated time.
async fn env_slow(task: &str) -> Env {
    env_with(ControllerOptions {
        rules: vec![slow(task)],
        ..fast_options()
    })
    .await
}

/// A pipeline of one inline task.
fn one_task(task: &str) -> Value {
    json!({"pipelineSpec": {"tasks": [inline_task(task, "s")]}})
}

/// Tasks `a` then `b`, and `f` in `finally`.
fn a_then_b_finally_f() -> Value {
    json!({"pipelineSpec": {
        "tasks": [inline_task("a", "s"), {"name": "b", "runAfter": ["a"], "taskSpec": {"steps": [{"name": "s", "image": "busybox"}]}}],
        "finally": [inline_task("f", "s")]
    }})
}

/// Task `a`, and `f` in `finally`.
fn a_finally_f() -> Value {
    json!({"pipelineSpec": {"tasks": [inline_task("a", "s")], "finally": [inline_task("f", "s")]}})
}

/// Stop the running `r` with `spec.status` = `how`: it ends `Cancelled`.
async fn stop_run(env: &Env, how: &str) -> Value {
    set_spec_status(env, "r", how).await;
    let pr = env.wait_done(&gvr::PIPELINERUNS, "ci", "r").await;
    assert_eq!(
        condition(&pr),
        failed("Cancelled", "PipelineRun \"r\" was cancelled")
    );
    pr
}

/// Set `spec.status` with a client's merge patch (the server's admission must allow it).
async fn set_spec_status(env: &Env, name: &str, value: &str) {
    env.merge_patch(
        &gvr::PIPELINERUNS,
        "ci",
        name,
        json!({"spec": {"status": value}}),
    )
    .await
    .unwrap_or_else(|e| panic!("merge-patch spec.status={value}: {e}"));
}

async fn wait_running(env: &Env, g: &kube_sim::cluster::Gvr, name: &str) -> Value {
    env.wait_reason(g, "ci", name, "Running").await
}

#[tokio::test]
async fn conditions_go_started_running_succeeded() {
    let env = env_with(fast_options()).await;
    // Watch through the API like a client would, from before the run exists.
    let mut events = env
        .api(&gvr::PIPELINERUNS, Some("ci"))
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    env.create(
        Some("ci"),
        pipelinerun(
            "r",
            json!({"pipelineSpec": {"tasks": [inline_task("a", "s"), inline_task("b", "s")]}}),
        ),
    )
    .await;
    let mut seen: Vec<(String, String, String)> = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), events.try_next())
            .await
            .expect("a watch event within 60s")
            .expect("watch stream ok")
            .expect("watch stream open");
        let (WatchEvent::Added(o) | WatchEvent::Modified(o)) = ev else {
            continue;
        };
        let o = serde_json::to_value(o).unwrap();
        if model::succeeded_condition(&o).is_some() {
            let c = condition(&o);
            if seen.last() != Some(&c) {
                seen.push(c);
            }
        }
        if model::is_done(&o) {
            break;
        }
    }
    let reasons: Vec<&str> = seen.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(reasons.first(), Some(&"Started"));
    assert_eq!(reasons.last(), Some(&"Succeeded"));
    assert!(seen.contains(&cond(
        "Unknown",
        "Running",
        "Tasks Completed: 0 (Failed: 0, Cancelled 0), Incomplete: 2, Skipped: 0"
    )));
    assert_eq!(
        seen.last().unwrap().2,
        "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0"
    );
}

#[tokio::test]
async fn cancelled_stops_tasks_and_skips_finally() {
    let env = env_slow("a").await;
    create_run(&env, a_then_b_finally_f()).await;
    wait_running(&env, &gvr::TASKRUNS, "r-a").await;
    // Once started, Tekton's webhook refuses any other spec change, in v1 and v1beta1.
    for g in [gvr::PIPELINERUNS, V1BETA1_PIPELINERUNS] {
        let denied = env
            .merge_patch(
                &g,
                "ci",
                "r",
                json!({"spec": {"timeouts": {"pipeline": "2h"}}}),
            )
            .await;
        let Err(kube::Error::Api(status)) = denied else {
            panic!("spec change on a started run was accepted: {denied:?}");
        };
        assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
        assert_eq!(
            status.message,
            "admission webhook \"validation.webhook.pipeline.tekton.dev\" denied the request: validation failed: invalid value: Once the PipelineRun has started, only status updates are allowed"
        );
    }
    let pr = stop_run(&env, "Cancelled").await;
    assert_eq!(pr["spec"]["timeouts"]["pipeline"], "1h0m0s");
    let tr = env.wait_done(&gvr::TASKRUNS, "ci", "r-a").await;
    assert_eq!(
        condition(&tr),
        failed(
            "TaskRunCancelled",
            "TaskRun \"r-a\" was cancelled. TaskRun cancelled as the PipelineRun it belongs to has been cancelled."
        )
    );
    assert_eq!(
        tr["status"]["steps"][0]["terminated"]["reason"],
        "TaskRunCancelled"
    );
    assert!(
        env.get(&gvr::TASKRUNS, "ci", "r-f").await.is_none(),
        "finally does not run"
    );
    env.wait_gone(&gvr::PODS, "ci", "r-a-pod").await;
}

#[tokio::test]
async fn cancelled_run_finally_cancels_tasks_then_runs_finally() {
    let env = env_slow("a").await;
    create_run(&env, a_finally_f()).await;
    wait_running(&env, &gvr::TASKRUNS, "r-a").await;
    stop_run(&env, "CancelledRunFinally").await;
    assert_eq!(
        env.reason(&gvr::TASKRUNS, "ci", "r-a").await,
        "TaskRunCancelled"
    );
    assert_eq!(env.reason(&gvr::TASKRUNS, "ci", "r-f").await, "Succeeded");
}

#[tokio::test]
async fn stopped_run_finally_lets_running_tasks_finish() {
    // Task "a" lasts 3.6 s of real time: the stop below must land before it
    // ends even on a loaded machine, or "b" would start.
    let rule = ScriptRule {
        task: Some("a".into()),
        duration: Some("30m".into()),
        ..Default::default()
    };
    let env = env_with(ControllerOptions {
        time_scale: 0.002,
        rules: vec![rule],
        ..fast_options()
    })
    .await;
    create_run(&env, a_then_b_finally_f()).await;
    wait_running(&env, &gvr::TASKRUNS, "r-a").await;
    let pr = stop_run(&env, "StoppedRunFinally").await;
    assert_eq!(
        env.reason(&gvr::TASKRUNS, "ci", "r-a").await,
        "Succeeded",
        "running task completes"
    );
    assert!(
        env.get(&gvr::TASKRUNS, "ci", "r-b").await.is_none(),
        "no new DAG task starts"
    );
    assert_eq!(
        pr["status"]["skippedTasks"][0],
        json!({"name": "b", "reason": "PipelineRun was gracefully stopped"})
    );
    assert_eq!(env.reason(&gvr::TASKRUNS, "ci", "r-f").await, "Succeeded");
}

#[tokio::test]
async fn pending_run_waits_until_released() {
    let env = env_with(fast_options()).await;
    let mut spec = one_task("a");
    spec["status"] = json!("PipelineRunPending");
    create_run(&env, spec).await;
    let pr = env
        .wait_reason(&gvr::PIPELINERUNS, "ci", "r", "PipelineRunPending")
        .await;
    assert_eq!(
        condition(&pr),
        cond(
            "Unknown",
            "PipelineRunPending",
            "PipelineRun \"r\" is pending"
        )
    );
    assert!(pr["status"].get("startTime").is_none());
    // The controller has handled the run and rests with nothing scheduled:
    // only a change to the run can start it, so no TaskRun appears by itself.
    let settled = env.settled().await;
    assert_eq!(settled.runs, 1, "the pending run is live: {settled:?}");
    assert_eq!(settled.next_wake, None, "a pending run schedules nothing");
    assert!(
        env.list(&gvr::TASKRUNS, "ci").await.is_empty(),
        "nothing runs while pending"
    );
    set_spec_status(&env, "r", "").await;
    let pr = env.wait_done(&gvr::PIPELINERUNS, "ci", "r").await;
    assert_eq!(condition(&pr).1, "Succeeded");
}

/// `settled` counts the live runs and their next wake-up, and only them.
#[tokio::test]
async fn settled_reports_live_runs_and_their_next_wake() {
    let env = env_slow("a").await;
    create_run(&env, one_task("a")).await;
    wait_running(&env, &gvr::TASKRUNS, "r-a").await;
    let settled = env.settled().await;
    assert_eq!(
        settled.runs, 2,
        "the PipelineRun and its TaskRun: {settled:?}"
    );
    assert!(settled.next_wake.is_some(), "a running step ends by itself");
    set_spec_status(&env, "r", "Cancelled").await;
    env.wait_done(&gvr::PIPELINERUNS, "ci", "r").await;
    env.wait_done(&gvr::TASKRUNS, "ci", "r-a").await;
    let settled = env.settled().await;
    assert_eq!(settled.runs, 0, "finished runs do not count: {settled:?}");
    assert_eq!(settled.next_wake, None);
}

#[tokio::test]
async fn pipeline_timeout_ends_run_with_pipelinerun_timeout() {
    let env = env_slow("a").await;
    let mut spec = a_finally_f();
    spec["timeouts"] = json!({"pipeline": "30s"});
    let pr = run_to_end(&env, spec).await;
    assert_eq!(
        condition(&pr),
        failed(
            "PipelineRunTimeout",
            "PipelineRun \"r\" failed to finish within \"30s\""
        )
    );
    assert!(
        env.get(&gvr::TASKRUNS, "ci", "r-f").await.is_none(),
        "finally is not started after the pipeline timeout"
    );
    let tr = env.wait_done(&gvr::TASKRUNS, "ci", "r-a").await;
    assert!(["TaskRunCancelled", "TaskRunTimeout"].contains(&condition(&tr).1.as_str()));
}

#[tokio::test]
async fn tasks_timeout_stops_dag_then_runs_finally() {
    let env = env_slow("a").await;
    let mut spec = a_finally_f();
    spec["timeouts"] = json!({"pipeline": "1h", "tasks": "30s"});
    let pr = run_to_end(&env, spec).await;
    assert_eq!(
        condition(&pr),
        failed(
            "Failed",
            "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0"
        )
    );
    let tr = env.get(&gvr::TASKRUNS, "ci", "r-a").await.unwrap();
    assert_eq!(
        tr["spec"]["statusMessage"],
        "TaskRun cancelled as the PipelineRun it belongs to has timed out."
    );
    assert_eq!(env.reason(&gvr::TASKRUNS, "ci", "r-f").await, "Succeeded");
}

#[tokio::test]
async fn taskrun_timeout_fails_the_taskrun() {
    let env = env_slow("a").await;
    create_run(&env, json!({
        "pipelineSpec": {"tasks": [{"name": "a", "timeout": "20s", "taskSpec": {"steps": [{"name": "s", "image": "busybox"}]}}]}
    })).await;
    let tr = env.wait_done(&gvr::TASKRUNS, "ci", "r-a").await;
    assert_eq!(
        condition(&tr),
        failed(
            "TaskRunTimeout",
            "TaskRun \"r-a\" failed to finish within \"20s\""
        )
    );
    let pr = env.wait_done(&gvr::PIPELINERUNS, "ci", "r").await;
    assert_eq!(condition(&pr).1, "Failed");
}

#[tokio::test]
async fn when_expressions_skip_tasks() {
    let env = env_with(fast_options()).await;
    let mut b = inline_task("b", "s");
    b["when"] = json!([{"input": "$(params.deploy)", "operator": "in", "values": ["yes"]}]);
    create_run(
        &env,
        json!({
            "params": [{"name": "deploy", "value": "no"}],
            "pipelineSpec": {"params": [{"name": "deploy"}], "tasks": [inline_task("a", "s"), b]}
        }),
    )
    .await;
    let pr = env.wait_done(&gvr::PIPELINERUNS, "ci", "r").await;
    assert_eq!(
        condition(&pr),
        cond(
            "True",
            "Completed",
            "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 1"
        )
    );
    assert_eq!(
        pr["status"]["skippedTasks"][0]["reason"],
        "When Expressions evaluated to false"
    );
    assert_eq!(
        pr["status"]["skippedTasks"][0]["whenExpressions"][0]["input"],
        "no"
    );
    assert!(env.get(&gvr::TASKRUNS, "ci", "r-b").await.is_none());
}

/// The Image Factory shape: clone then kaniko, results IMAGE_DIGEST/IMAGE_URL.
fn build_run(name: &str, image: &str) -> Value {
    pipelinerun(
        name,
        json!({
            "params": [{"name": "image", "value": image}],
            "workspaces": [{"name": "src", "emptyDir": {}}],
            "pipelineSpec": {
                "params": [{"name": "image"}],
                "workspaces": [{"name": "src"}],
                "tasks": [
                    {"name": "clone", "taskRef": {"name": "fetch-source"}, "params": [{"name": "url", "value": "https://git.example/app.git"}],
                     "workspaces": [{"name": "output", "workspace": "src"}]},
                    {"name": "build", "taskRef": {"name": "kaniko-push"}, "runAfter": ["clone"], "params": [{"name": "IMAGE", "value": "$(params.image)"}],
                     "workspaces": [{"name": "source", "workspace": "src"}]}
                ],
                "results": [
                    {"name": "IMAGE_DIGEST", "value": "$(tasks.build.results.IMAGE_DIGEST)"},
                    {"name": "IMAGE_URL", "value": "$(tasks.build.results.IMAGE_URL)"}
                ]
            }
        }),
    )
}

#[tokio::test]
async fn catalog_build_writes_deterministic_digest_and_url() {
    let env = env_with(fast_options()).await;
    for f in ["kaniko-push.yaml", "fetch-source.yaml"] {
        env.apply("ci", &own_catalog_file(f)).await;
    }
    env.create(Some("ci"), build_run("one", "registry.local/app:1"))
        .await;
    env.create(Some("ci"), build_run("two", "registry.local/app:1"))
        .await;
    env.create(Some("ci"), build_run("three", "registry.local/app:2"))
        .await;
    let one = env.wait_done(&gvr::PIPELINERUNS, "ci", "one").await;
    let two = env.wait_done(&gvr::PIPELINERUNS, "ci", "two").await;
    let three = env.wait_done(&gvr::PIPELINERUNS, "ci", "three").await;
    assert_eq!(condition(&one).1, "Succeeded");
    let digest = result(&one, "IMAGE_DIGEST").unwrap();
    assert!(
        digest.starts_with("sha256:")
            && digest.len() == 71
            && digest[7..].chars().all(|c| c.is_ascii_hexdigit()),
        "{digest}"
    );
    assert_eq!(
        result(&two, "IMAGE_DIGEST").unwrap(),
        digest,
        "same inputs, same digest"
    );
    assert_ne!(
        result(&three, "IMAGE_DIGEST").unwrap(),
        digest,
        "other inputs, other digest"
    );
    assert_eq!(result(&one, "IMAGE_URL").unwrap(), "registry.local/app:1");
    let logs = env.logs("ci", "one-build-pod", "step-build-and-push").await;
    assert!(
        logs.iter().any(|l| l.contains("registry.local/app:1")),
        "{logs:?}"
    );
    let clone_logs = env.logs("ci", "one-clone-pod", "step-clone").await;
    assert!(
        clone_logs
            .iter()
            .any(|l| l.contains("https://git.example/app.git")),
        "{clone_logs:?}"
    );

    // The same run read through the API as v1beta1 carries pipelineResults / taskResults.
    let beta = env
        .get(&V1BETA1_PIPELINERUNS, "ci", model::name(&one))
        .await
        .unwrap();
    assert_eq!(beta["apiVersion"], "tekton.dev/v1beta1");
    assert_eq!(
        beta["status"]["pipelineResults"][0]["value"],
        digest.as_str()
    );
    assert!(beta["status"].get("results").is_none());
    assert_eq!(beta["spec"]["serviceAccountName"], "default");
    let tr = env.get(&V1BETA1_TASKRUNS, "ci", "one-build").await.unwrap();
    assert_eq!(tr["apiVersion"], "tekton.dev/v1beta1");
    assert!(
        model::arr(&tr, &["status", "taskResults"])
            .iter()
            .any(|r| r["name"] == "IMAGE_URL")
    );
}

#[tokio::test]
async fn options_rules_script_steps() {
    let rules = vec![ScriptRule {
        task: Some("a".into()),
        step: Some("s".into()),
        logs: Some(vec!["line one".into(), "line two".into()]),
        exit_code: Some(3),
        ..Default::default()
    }];
    let env = env_with(ControllerOptions {
        rules,
        ..fast_options()
    })
    .await;
    create_run(&env, one_task("a")).await;
    let tr = env.wait_done(&gvr::TASKRUNS, "ci", "r-a").await;
    assert_eq!(condition(&tr).2, "\"step-s\" exited with code 3: Error");
    assert_eq!(
        env.logs("ci", "r-a-pod", "step-s").await,
        vec!["line one", "line two"]
    );
}

#[tokio::test]
async fn invalid_script_annotation_fails_the_taskrun_with_the_reason() {
    let env = env_with(fast_options()).await;
    let mut pr = pipelinerun("r", one_task("a"));
    pr["metadata"]["annotations"] = json!({"sim.imagefactory.io/script": "[{\"exitcode\": 1}]"});
    env.create(Some("ci"), pr).await;
    let tr = env.wait_done(&gvr::TASKRUNS, "ci", "r-a").await;
    assert_eq!(condition(&tr).1, "TaskRunValidationFailed");
    assert!(
        condition(&tr).2.contains("sim.imagefactory.io/script"),
        "{}",
        condition(&tr).2
    );
}

#[tokio::test]
async fn deleting_a_run_cascades_and_stops_it() {
    let env = env_slow("a").await;
    create_run(&env, one_task("a")).await;
    wait_running(&env, &gvr::TASKRUNS, "r-a").await;
    env.delete(&gvr::PIPELINERUNS, "ci", "r").await;
    env.wait_gone(&gvr::PIPELINERUNS, "ci", "r").await;
    env.wait_gone(&gvr::TASKRUNS, "ci", "r-a").await;
    env.wait_gone(&gvr::PODS, "ci", "r-a-pod").await;
    // A new run with the same name starts from scratch.
    create_run(&env, one_task("b")).await;
    assert_eq!(
        condition(&env.wait_done(&gvr::PIPELINERUNS, "ci", "r").await).1,
        "Succeeded"
    );
}

#[tokio::test]
async fn standalone_taskrun_cancel() {
    let env = env_slow("t").await;
    env.create(
        Some("ci"),
        json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "metadata": {"name": "t"},
        "spec": {"taskSpec": {"steps": [{"name": "s", "image": "busybox"}]}}}),
    )
    .await;
    let tr = wait_running(&env, &gvr::TASKRUNS, "t").await;
    assert_eq!(tr["spec"]["timeout"], "1h0m0s");
    env.merge_patch(
        &gvr::TASKRUNS,
        "ci",
        "t",
        json!({"spec": {"status": "TaskRunCancelled"}}),
    )
    .await
    .unwrap();
    let tr = env.wait_done(&gvr::TASKRUNS, "ci", "t").await;
    assert_eq!(
        condition(&tr),
        failed("TaskRunCancelled", "TaskRun \"t\" was cancelled.")
    );
}
