//! Every example under the Tekton reference data runs to the terminal condition Tekton
//! would give it, and every catalog Task passes admission.

mod tekton_support;

use kube_sim::cluster::gvr;
use kube_sim::tekton::{admission, model};
use tekton_support::*;

/// (example file, expected run outcomes as (status, reason)), documented in README.md (Example outcomes).
const EXPECTED: &[(&str, &str, &str)] = &[
    ("pipelineruns__beta_git-resolver.yaml", "True", "Succeeded"),
    (
        "pipelineruns__no-ci_cluster-resolver.yaml",
        "False",
        "CouldntGetPipeline",
    ),
    (
        "pipelineruns__pipelinerun-results.yaml",
        "True",
        "Succeeded",
    ),
    (
        "pipelineruns__pipelinerun-with-final-tasks.yaml",
        "True",
        "Succeeded",
    ),
    (
        "pipelineruns__pipelinerun-with-parallel-tasks-using-pvc.yaml",
        "True",
        "Succeeded",
    ),
    (
        "pipelineruns__pipelinerun-with-params.yaml",
        "True",
        "Succeeded",
    ),
    (
        "pipelineruns__pipelinerun-with-pipelinespec.yaml",
        "True",
        "Succeeded",
    ),
    (
        "pipelineruns__pipelinerun-with-task-timeout-override.yaml",
        "True",
        "Succeeded",
    ),
    ("pipelineruns__pipelinerun.yaml", "True", "Succeeded"),
    (
        "pipelineruns__workspace-from-volumeclaimtemplate.yaml",
        "True",
        "Succeeded",
    ),
    ("pipelineruns__workspaces.yaml", "True", "Succeeded"),
    ("taskruns__secret-volume.yaml", "True", "Succeeded"),
    ("taskruns__task-result.yaml", "True", "Succeeded"),
    ("taskruns__unnamed-steps.yaml", "True", "Succeeded"),
    (
        "taskruns__workspace-with-volumeClaimTemplate.yaml",
        "True",
        "Succeeded",
    ),
    ("taskruns__workspace.yaml", "True", "Succeeded"),
];

#[test]
fn every_catalog_task_and_example_object_passes_admission() {
    let mut checked = 0;
    let mut files: Vec<_> = std::fs::read_dir(tekton_dir().join("catalog"))
        .unwrap()
        .chain(std::fs::read_dir(tekton_dir().join("examples")).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        for doc in load_yaml(&f) {
            let Some(g) = gvr_of(doc["kind"].as_str().unwrap_or("")) else {
                continue;
            };
            if g.group != "tekton.dev" {
                continue;
            }
            let mut doc = doc;
            admission::apply_defaults(&g, &mut doc);
            admission::validate_create(&g, &doc)
                .unwrap_or_else(|e| panic!("{}: {} rejected: {e}", f.display(), model::name(&doc)));
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} Tekton objects found");
}

#[test]
fn every_example_file_is_listed() {
    let mut files: Vec<String> = std::fs::read_dir(tekton_dir().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let listed: Vec<String> = EXPECTED.iter().map(|(f, _, _)| f.to_string()).collect();
    assert_eq!(files, listed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_run_reaches_the_condition_tekton_gives_it() {
    let env = Env::start(fast_options()).await;
    env.default_storage_class().await;
    let mut runs = Vec::new();
    for (i, (file, status, reason)) in EXPECTED.iter().enumerate() {
        let ns = format!("ex{i}");
        env.namespace(&ns).await;
        let docs = load_yaml(&tekton_dir().join("examples").join(file));
        let created = env.apply(&ns, &docs).await;
        assert!(!created.is_empty(), "{file} has no runs");
        for run in created {
            runs.push((file, ns.clone(), run, *status, *reason));
        }
    }
    for (file, ns, run, status, reason) in &runs {
        let g = if run["kind"] == "PipelineRun" {
            gvr::PIPELINERUNS
        } else {
            gvr::TASKRUNS
        };
        let done = env.wait_done(&g, ns, model::name(run)).await;
        let (s, r, m) = condition(&done);
        assert_eq!((s.as_str(), r.as_str()), (*status, *reason), "{file}: {m}");
        assert!(
            done["status"]["startTime"].is_string() && done["status"]["completionTime"].is_string(),
            "{file}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_details_match_tekton() {
    let env = Env::start(fast_options()).await;
    env.default_storage_class().await;
    env.namespace("ci").await;
    let ex = |f: &str| load_yaml(&tekton_dir().join("examples").join(f));

    // Results: $(tasks.X.results.Y) resolved into the pipeline results.
    env.apply("ci", &ex("pipelineruns__pipelinerun-results.yaml"))
        .await;
    let pr = env
        .wait_done(&gvr::PIPELINERUNS, "ci", "sum-three-pipeline-run")
        .await;
    assert_eq!(
        condition(&pr).2,
        "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0"
    );
    let sum = result(&pr, "sum").expect("sum");
    let partial = result(&pr, "partial-sum").expect("partial-sum");
    assert_eq!(result(&pr, "all-sum").unwrap(), format!("{sum}-{partial}"));
    assert_eq!(
        pr["metadata"]["labels"]["tekton.dev/pipeline"],
        "sum-three-pipeline"
    );
    assert_eq!(pr["spec"]["timeouts"]["pipeline"], "1h0m0s");
    assert_eq!(
        pr["status"]["pipelineSpec"]["tasks"][0]["params"][0]["value"], "2",
        "params substituted"
    );
    let children = model::arr(&pr, &["status", "childReferences"]);
    assert_eq!(children.len(), 2);
    assert_eq!(children[0]["name"], "sum-three-pipeline-run-first-add");
    let second = env
        .get(&gvr::TASKRUNS, "ci", "sum-three-pipeline-run-second-add")
        .await
        .unwrap();
    assert_eq!(
        second["spec"]["params"][0]["value"],
        partial.as_str(),
        "result passed on as a param"
    );
    assert_eq!(
        second["metadata"]["labels"]["tekton.dev/pipelineRun"],
        "sum-three-pipeline-run"
    );
    assert_eq!(
        second["metadata"]["labels"]["tekton.dev/pipelineTask"],
        "second-add"
    );
    assert_eq!(second["metadata"]["labels"]["tekton.dev/task"], "add-task");
    assert_eq!(
        second["metadata"]["ownerReferences"][0]["uid"],
        pr["metadata"]["uid"]
    );
    assert_eq!(
        second["status"]["podName"],
        "sum-three-pipeline-run-second-add-pod"
    );
    assert_eq!(second["status"]["steps"][0]["container"], "step-add");
    assert_eq!(second["status"]["steps"][0]["terminated"]["exitCode"], 0);
    let pod = env
        .get(&gvr::PODS, "ci", "sum-three-pipeline-run-second-add-pod")
        .await
        .unwrap();
    assert_eq!(pod["status"]["phase"], "Succeeded");
    assert_eq!(pod["spec"]["containers"][0]["name"], "step-add");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "TaskRun");

    // Params with defaults and legacy $(inputs.params.x); echo output in the logs.
    env.apply(
        "ci",
        &ex("pipelineruns__pipelinerun-with-pipelinespec.yaml"),
    )
    .await;
    env.wait_reason(
        &gvr::PIPELINERUNS,
        "ci",
        "pipelinerun-echo-greetings",
        "Succeeded",
    )
    .await;
    let logs = env
        .logs(
            "ci",
            "pipelinerun-echo-greetings-echo-good-morning-pod",
            "step-echo",
        )
        .await;
    assert_eq!(logs, vec!["Good Morning, Bob!"]);

    // taskRunSpecs timeout overrides the pipeline task's.
    env.apply(
        "ci",
        &ex("pipelineruns__pipelinerun-with-task-timeout-override.yaml"),
    )
    .await;
    env.wait_reason(
        &gvr::PIPELINERUNS,
        "ci",
        "taskrun-timeout-override",
        "Succeeded",
    )
    .await;
    let tr = env
        .get(
            &gvr::TASKRUNS,
            "ci",
            "taskrun-timeout-override-long-running-task",
        )
        .await
        .unwrap();
    assert_eq!(tr["spec"]["timeout"], "40s");

    // Finally tasks run after the DAG and see its results.
    env.apply("ci", &ex("pipelineruns__pipelinerun-with-final-tasks.yaml"))
        .await;
    let pr = env
        .wait_reason(
            &gvr::PIPELINERUNS,
            "ci",
            "write-and-cleanup-workspace",
            "Succeeded",
        )
        .await;
    assert_eq!(
        condition(&pr).2,
        "Tasks Completed: 3 (Failed: 0, Cancelled 0), Skipped: 0"
    );
    assert!(pr["status"]["finallyStartTime"].is_string());
    let check = env
        .get(
            &gvr::TASKRUNS,
            "ci",
            "write-and-cleanup-workspace-check-git-commit",
        )
        .await
        .unwrap();
    assert_eq!(
        check["metadata"]["labels"]["tekton.dev/memberOf"],
        "finally"
    );
    let commit = result(
        &env.get(
            &gvr::TASKRUNS,
            "ci",
            "write-and-cleanup-workspace-clone-app-repo",
        )
        .await
        .unwrap(),
        "commit",
    )
    .unwrap();
    assert_eq!(check["spec"]["params"][0]["value"], commit.as_str());

    // Unnamed steps get Tekton's names.
    let runs = env.apply("ci", &ex("taskruns__unnamed-steps.yaml")).await;
    let tr = env
        .wait_reason(&gvr::TASKRUNS, "ci", model::name(&runs[0]), "Succeeded")
        .await;
    assert_eq!(tr["status"]["steps"][2]["container"], "step-unnamed-2");
    assert_eq!(condition(&tr).2, "All Steps have completed executing");

    // A standalone TaskRun's volumeClaimTemplate becomes a bound PVC it owns.
    let runs = env
        .apply(
            "ci",
            &ex("taskruns__workspace-with-volumeClaimTemplate.yaml"),
        )
        .await;
    let tr = env
        .wait_reason(&gvr::TASKRUNS, "ci", model::name(&runs[0]), "Succeeded")
        .await;
    let pvcs: Vec<_> = env
        .list(&gvr::PVCS, "ci")
        .await
        .into_iter()
        .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == tr["metadata"]["uid"])
        .collect();
    assert_eq!(pvcs.len(), 1);
    assert_eq!(pvcs[0]["status"]["phase"], "Bound");
    assert_eq!(pvcs[0]["spec"]["storageClassName"], "standard");
}
