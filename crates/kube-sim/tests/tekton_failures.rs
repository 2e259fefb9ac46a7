//! The failure modes Image Factory must recognise, with Tekton's reasons and messages.

mod tekton_support;

use kube_sim::cluster::gvr;
use kube_sim::tekton::model;
use serde_json::{Value, json};
use tekton_support::*;

fn step_task(name: &str) -> Value {
    json!({"apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": name},
        "spec": {"workspaces": [{"name": "source", "optional": true}], "steps": [{"name": "build", "image": "busybox", "script": "echo hi"}]}})
}

/// A run whose task `build` (Task `t`) mounts the pipeline workspace bound by
/// `binding` as its `source`.
fn build_with_workspace(binding: Value) -> Value {
    let name = binding["name"].clone();
    json!({
        "workspaces": [binding],
        "pipelineSpec": {"workspaces": [{"name": name}], "tasks": [
            {"name": "build", "taskRef": {"name": "t"}, "workspaces": [{"name": "source", "workspace": name}]}
        ]}
    })
}

fn docker_secret_workspace() -> Value {
    build_with_workspace(json!({"name": "docker", "secret": {"secretName": "docker-config"}}))
}

fn claim_template_workspace() -> Value {
    build_with_workspace(
        json!({"name": "src", "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}),
    )
}

#[tokio::test]
async fn missing_task_fails_with_couldnt_get_task() {
    let env = env_with(fast_options()).await;
    env.create(
        Some("ci"),
        pipelinerun(
            "build-abc12",
            json!({"pipelineSpec": {"tasks": [
                {"name": "build", "taskRef": {"kind": "Task", "name": "kaniko"}}
            ]}}),
        ),
    )
    .await;
    let pr = env.wait_done(&gvr::PIPELINERUNS, "ci", "build-abc12").await;
    assert_eq!(
        condition(&pr),
        failed(
            "CouldntGetTask",
            "Pipeline ci/build-abc12 can't be Run; it contains Tasks that don't exist: Couldn't retrieve Task \"kaniko\": tasks.tekton.dev \"kaniko\" not found"
        )
    );
    assert!(
        pr["status"]["pipelineSpec"]["tasks"].is_array(),
        "spec stored before task resolution"
    );
    assert!(pr["status"]["completionTime"].is_string());
    assert!(env.list(&gvr::TASKRUNS, "ci").await.is_empty());
}

#[tokio::test]
async fn missing_pipeline_fails_with_couldnt_get_pipeline() {
    let env = env_with(fast_options()).await;
    let pr = run_to_end(&env, json!({"pipelineRef": {"name": "nope"}})).await;
    assert_eq!(condition(&pr).1, "CouldntGetPipeline");
    assert_eq!(
        condition(&pr).2,
        "Error retrieving pipeline for pipelinerun ci/r: pipelines.tekton.dev \"nope\" not found"
    );
}

#[tokio::test]
async fn missing_param_fails_with_parameter_missing() {
    let env = env_with(fast_options()).await;
    env.create(Some("ci"), step_task("t")).await;
    let pr = run_to_end(
        &env,
        json!({"pipelineSpec": {
            "params": [{"name": "url", "type": "string"}, {"name": "rev", "default": "main"}],
            "tasks": [{"name": "a", "taskRef": {"name": "t"}}]
        }}),
    )
    .await;
    assert_eq!(
        condition(&pr),
        failed(
            "ParameterMissing",
            "PipelineRun ci parameters is missing some parameters required by Pipeline r's parameters: PipelineRun missing parameters: [url]"
        )
    );
}

#[tokio::test]
async fn unbound_workspace_fails_with_invalid_workspace_bindings() {
    let env = env_with(fast_options()).await;
    env.create(Some("ci"), step_task("t")).await;
    let pr = run_to_end(&env, json!({"pipelineSpec": {
        "workspaces": [{"name": "src"}],
        "tasks": [{"name": "a", "taskRef": {"name": "t"}, "workspaces": [{"name": "source", "workspace": "src"}]}]
    }})).await;
    assert_eq!(condition(&pr).1, "InvalidWorkspaceBindings");
    assert_eq!(
        condition(&pr).2,
        "PipelineRun ci/r doesn't bind Pipeline ci/r's Workspaces correctly: pipeline requires workspace with name \"src\" be provided by pipelinerun"
    );
}

#[tokio::test]
async fn task_param_not_given_fails_validation() {
    let env = env_with(fast_options()).await;
    env.create(
        Some("ci"),
        json!({"apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": "needs"},
        "spec": {"params": [{"name": "IMAGE"}], "steps": [{"name": "s", "image": "busybox"}]}}),
    )
    .await;
    let pr = run_to_end(
        &env,
        json!({"pipelineSpec": {"tasks": [{"name": "a", "taskRef": {"name": "needs"}}]}}),
    )
    .await;
    assert_eq!(condition(&pr).1, "PipelineValidationFailed");
    assert_eq!(
        condition(&pr).2,
        "invalid input params for task needs: missing parameters: [IMAGE]"
    );
}

/// A workspace Secret that does not exist: the pod stays Pending (FailedMount event)
/// and the run ends only by its timeout.
#[tokio::test]
async fn missing_workspace_secret_keeps_pod_pending_until_timeout() {
    let env = env_with(fast_options()).await;
    env.create(Some("ci"), step_task("t")).await;
    let mut spec = docker_secret_workspace();
    spec["timeouts"] = json!({"pipeline": "10m"});
    create_run(&env, spec).await;
    let tr = env
        .wait_for(&gvr::TASKRUNS, "ci", "r-build", "pending on its pod", |o| {
            condition(o).1 == "Pending" && condition(o).2 != "Pending"
        })
        .await;
    assert_eq!(
        condition(&tr).2,
        "pod status \"Ready\":\"False\"; message: \"containers with unready status: [step-build]\""
    );
    let pod = env.get(&gvr::PODS, "ci", "r-build-pod").await.unwrap();
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );
    let events = env.list(&gvr::EVENTS, "ci").await;
    let mount = events
        .iter()
        .find(|e| e["reason"] == "FailedMount")
        .expect("FailedMount event");
    assert_eq!(mount["involvedObject"]["name"], "r-build-pod");
    let msg = mount["message"].as_str().unwrap();
    assert!(
        msg.starts_with("MountVolume.SetUp failed for volume \"ws-")
            && msg.ends_with(": secret \"docker-config\" not found"),
        "{msg}"
    );
    assert!(
        !model::is_done(&env.get(&gvr::PIPELINERUNS, "ci", "r").await.unwrap()),
        "does not fail fast"
    );

    let pr = env.wait_done(&gvr::PIPELINERUNS, "ci", "r").await;
    assert_eq!(
        condition(&pr),
        failed(
            "PipelineRunTimeout",
            "PipelineRun \"r\" failed to finish within \"10m0s\""
        )
    );
    // The TaskRun's own timeout is the run's remaining time, so (as in Tekton) it is
    // either cancelled by the PipelineRun or times out at the same moment.
    let tr = env.wait_done(&gvr::TASKRUNS, "ci", "r-build").await;
    match condition(&tr).1.as_str() {
        "TaskRunCancelled" => {
            assert_eq!(
                tr["spec"]["statusMessage"],
                "TaskRun cancelled as the PipelineRun it belongs to has timed out."
            )
        }
        "TaskRunTimeout" => assert_eq!(
            condition(&tr).2,
            "TaskRun \"r-build\" failed to finish within \"10m0s\""
        ),
        other => panic!("unexpected TaskRun reason {other}"),
    }
}

#[tokio::test]
async fn secret_created_later_lets_the_pod_start() {
    let env = env_with(fast_options()).await;
    env.create(Some("ci"), step_task("t")).await;
    create_run(&env, docker_secret_workspace()).await;
    env.wait_for(&gvr::TASKRUNS, "ci", "r-build", "pending", |o| {
        condition(o).2.starts_with("pod status")
    })
    .await;
    env.create(Some("ci"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "docker-config"}, "data": {}})).await;
    let pr = env.wait_done(&gvr::PIPELINERUNS, "ci", "r").await;
    assert_eq!(condition(&pr).1, "Succeeded");
}

/// A volumeClaimTemplate without a default StorageClass: the PVC is created but never
/// binds, the pod is unschedulable, and the run times out.
#[tokio::test]
async fn claim_without_default_storage_class_never_binds() {
    let env = env_with(fast_options()).await;
    env.create(Some("ci"), step_task("t")).await;
    let mut spec = claim_template_workspace();
    spec["timeouts"] = json!({"pipeline": "10m"});
    let pr = env.create(Some("ci"), pipelinerun("r", spec)).await;
    let tr = env
        .wait_for(&gvr::TASKRUNS, "ci", "r-build", "unschedulable", |o| {
            condition(o).2.starts_with("pod status")
        })
        .await;
    assert_eq!(
        condition(&tr).2,
        "pod status \"PodScheduled\":\"False\"; message: \"0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.\""
    );
    let pvcs = env.list(&gvr::PVCS, "ci").await;
    assert_eq!(pvcs.len(), 1);
    assert_eq!(pvcs[0]["status"]["phase"], "Pending");
    assert_eq!(
        pvcs[0]["metadata"]["ownerReferences"][0]["uid"],
        pr["metadata"]["uid"]
    );
    let claim = pvcs[0]["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        tr["spec"]["workspaces"][0]["persistentVolumeClaim"]["claimName"],
        claim
    );
    let events = env.list(&gvr::EVENTS, "ci").await;
    assert!(events.iter().any(|e| e["reason"] == "FailedBinding"
        && e["message"]
            == "no persistent volumes available for this claim and no storage class is set"));
    assert!(events.iter().any(|e| e["reason"] == "FailedScheduling"));
    let pr = env.wait_done(&gvr::PIPELINERUNS, "ci", "r").await;
    assert_eq!(condition(&pr).1, "PipelineRunTimeout");
}

#[tokio::test]
async fn claim_binds_with_a_default_storage_class() {
    let env = env_with(fast_options()).await;
    env.default_storage_class().await;
    env.create(Some("ci"), step_task("t")).await;
    let pr = run_to_end(&env, claim_template_workspace()).await;
    assert_eq!(condition(&pr).1, "Succeeded");
    let pvcs = env.list(&gvr::PVCS, "ci").await;
    assert_eq!(pvcs[0]["status"]["phase"], "Bound");
    assert_eq!(pvcs[0]["status"]["capacity"]["storage"], "1Gi");
}

#[tokio::test]
async fn missing_service_account_fails_pod_creation() {
    let env = env_with(fast_options()).await;
    env.create(Some("ci"), step_task("t")).await;
    create_run(
        &env,
        json!({
            "taskRunTemplate": {"serviceAccountName": "builder"},
            "pipelineSpec": {"tasks": [
                {"name": "build", "taskRef": {"name": "t"}},
                {"name": "push", "taskRef": {"name": "t"}, "runAfter": ["build"]}
            ]}
        }),
    )
    .await;
    let tr = env.wait_done(&gvr::TASKRUNS, "ci", "r-build").await;
    assert_eq!(
        condition(&tr),
        failed(
            "PodCreationFailed",
            "failed to create task run pod \"r-build\": translating TaskSpec to Pod: serviceaccounts \"builder\" not found. Maybe missing or invalid Task ci/t"
        )
    );
    assert!(env.get(&gvr::PODS, "ci", "r-build-pod").await.is_none());
    let pr = env.wait_done(&gvr::PIPELINERUNS, "ci", "r").await;
    assert_eq!(
        condition(&pr),
        failed(
            "Failed",
            "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 1"
        )
    );
    assert_eq!(
        pr["status"]["skippedTasks"][0],
        json!({"name": "push", "reason": "PipelineRun was stopping"})
    );

    // With the service account present the same run succeeds.
    env.create(
        Some("ci"),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder"}}),
    )
    .await;
    env.create(
        Some("ci"),
        pipelinerun(
            "r2",
            json!({
                "taskRunTemplate": {"serviceAccountName": "builder"},
                "pipelineSpec": {"tasks": [{"name": "build", "taskRef": {"name": "t"}}]}
            }),
        ),
    )
    .await;
    assert_eq!(
        condition(&env.wait_done(&gvr::PIPELINERUNS, "ci", "r2").await).1,
        "Succeeded"
    );
}

#[tokio::test]
async fn failing_step_fails_taskrun_and_run_but_finally_runs() {
    let env = env_with(fast_options()).await;
    for f in ["kaniko-push.yaml", "fetch-source.yaml"] {
        env.apply("ci", &own_catalog_file(f)).await;
    }
    let mut pr = pipelinerun(
        "r",
        json!({
            "workspaces": [{"name": "src", "emptyDir": {}}],
            "pipelineSpec": {
                "workspaces": [{"name": "src"}],
                "tasks": [
                    {"name": "clone", "taskRef": {"name": "fetch-source"}, "params": [{"name": "url", "value": "https://git.example/app.git"}],
                     "workspaces": [{"name": "output", "workspace": "src"}]},
                    {"name": "build", "taskRef": {"name": "kaniko-push"}, "runAfter": ["clone"], "params": [{"name": "IMAGE", "value": "registry.local/app:1"}],
                     "workspaces": [{"name": "source", "workspace": "src"}]}
                ],
                "finally": [{"name": "report", "taskSpec": {"steps": [{"name": "say", "image": "busybox", "script": "echo reported"}]}}]
            }
        }),
    );
    pr["metadata"]["annotations"] = json!({"sim.imagefactory.io/script":
        r#"[{"task": "build", "step": "build-and-push", "exitCode": 1, "logs": ["error building image: exit status 1"]}]"#});
    env.create(Some("ci"), pr).await;
    let tr = env.wait_done(&gvr::TASKRUNS, "ci", "r-build").await;
    assert_eq!(
        condition(&tr),
        failed(
            "StepFailed",
            "\"step-build-and-push\" exited with code 1: Error"
        )
    );
    assert_eq!(tr["status"]["steps"][0]["terminated"]["exitCode"], 1);
    assert_eq!(tr["status"]["steps"][0]["terminationReason"], "Error");
    assert_eq!(tr["status"]["steps"][1]["terminationReason"], "Skipped");
    assert_eq!(
        env.logs("ci", "r-build-pod", "step-build-and-push").await,
        vec!["error building image: exit status 1"]
    );
    assert_eq!(
        env.get(&gvr::PODS, "ci", "r-build-pod").await.unwrap()["status"]["phase"],
        "Failed"
    );
    let pr = env.wait_done(&gvr::PIPELINERUNS, "ci", "r").await;
    assert_eq!(
        condition(&pr),
        failed(
            "Failed",
            "Tasks Completed: 3 (Failed: 1, Cancelled 0), Skipped: 0"
        )
    );
    assert_eq!(
        condition(&env.get(&gvr::TASKRUNS, "ci", "r-report").await.unwrap()).1,
        "Succeeded"
    );
}

/// A `ref:` step naming a StepAction that does not exist fails its TaskRun
/// (nothing runs), and the PipelineRun with it.
#[tokio::test]
async fn missing_step_action_fails_the_taskrun() {
    let env = env_with(fast_options()).await;
    let pr = run_to_end(
        &env,
        json!({"pipelineSpec": {"tasks": [{"name": "a", "taskSpec": {"steps": [
            {"name": "s", "ref": {"name": "absent"}}
        ]}}]}}),
    )
    .await;
    assert_eq!(condition(&pr).1, "Failed");
    let tr = env
        .get(&gvr::TASKRUNS, "ci", "r-a")
        .await
        .expect("TaskRun r-a");
    assert_eq!(
        condition(&tr),
        failed(
            "TaskRunResolutionFailed",
            "stepactions.tekton.dev \"absent\" not found"
        )
    );
    assert!(env.get(&gvr::PODS, "ci", "r-a-pod").await.is_none());
}
