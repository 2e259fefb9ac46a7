//! Every example of the Tekton test data runs to the terminal condition Tekton
//! would give it, with the details checked that show the feature it exercises,
//! and every catalog Task passes admission. The data is the repository's own
//! fixtures (`tests/testdata/tekton`) unless `KUBE_SIM_TEKTON_DIR` names another
//! set with the same layout, such as Tekton's own examples and catalog.
//! Every example also runs on the host step runner (steps as host processes),
//! where the outcome differs only for the examples of [`EXPECTED_ON_HOST`].

mod tekton_support;

use Set::{Own, Tekton};
use kube_sim::cluster::gvr;
use kube_sim::tekton::{ControllerOptions, HostSteps, admission, model};
use serde_json::Value;
use tekton_support::*;

/// Whose example an entry of [`EXPECTED`] describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Set {
    /// The repository's fixtures, `tests/testdata/tekton/examples`.
    Own,
    /// Tekton's `examples/v1` as `<kind>__<file>` (tektoncd/pipeline 3ee1745a).
    Tekton,
}

/// A run that succeeded.
const OK: (&str, &str) = ("True", "Succeeded");
/// A run whose Pipeline could not be resolved.
const COULDNT_GET_PIPELINE: (&str, &str) = ("False", "CouldntGetPipeline");

/// (set, example file, (status, reason) every run in it must end with),
/// documented in README.md (Example outcomes). Every file of the set under
/// test must have an entry.
const EXPECTED: &[(Set, &str, (&str, &str))] = &[
    (Own, "pipelinerun-chained-results.yaml", OK),
    (Own, "pipelinerun-claim-template.yaml", OK),
    (Own, "pipelinerun-clone-and-build.yaml", OK),
    (
        Own,
        "pipelinerun-cluster-resolver-missing.yaml",
        COULDNT_GET_PIPELINE,
    ),
    (Own, "pipelinerun-fan-out-shared-claim.yaml", OK),
    (Own, "pipelinerun-finally.yaml", OK),
    (Own, "pipelinerun-inline-spec.yaml", OK),
    (Own, "pipelinerun-param-defaults.yaml", OK),
    (Own, "pipelinerun-remote-catalog.yaml", OK),
    (Own, "pipelinerun-taskrunspecs-timeout.yaml", OK),
    (Own, "pipelinerun-workspace-kinds.yaml", OK),
    (Own, "taskrun-anonymous-steps.yaml", OK),
    (Own, "taskrun-claim-template.yaml", OK),
    (Own, "taskrun-results.yaml", OK),
    (Own, "taskrun-secret-mount.yaml", OK),
    (Own, "taskrun-step-actions.yaml", OK),
    (Own, "taskrun-step-template.yaml", OK),
    (Own, "taskrun-volume-kinds.yaml", OK),
    (Tekton, "pipelineruns__beta_git-resolver.yaml", OK),
    (
        Tekton,
        "pipelineruns__no-ci_cluster-resolver.yaml",
        COULDNT_GET_PIPELINE,
    ),
    (Tekton, "pipelineruns__pipelinerun-results.yaml", OK),
    (
        Tekton,
        "pipelineruns__pipelinerun-with-final-tasks.yaml",
        OK,
    ),
    (
        Tekton,
        "pipelineruns__pipelinerun-with-parallel-tasks-using-pvc.yaml",
        OK,
    ),
    (Tekton, "pipelineruns__pipelinerun-with-params.yaml", OK),
    (
        Tekton,
        "pipelineruns__pipelinerun-with-pipelinespec.yaml",
        OK,
    ),
    (
        Tekton,
        "pipelineruns__pipelinerun-with-task-timeout-override.yaml",
        OK,
    ),
    (Tekton, "pipelineruns__pipelinerun.yaml", OK),
    (
        Tekton,
        "pipelineruns__workspace-from-volumeclaimtemplate.yaml",
        OK,
    ),
    (Tekton, "pipelineruns__workspaces.yaml", OK),
    (Tekton, "taskruns__secret-volume.yaml", OK),
    (Tekton, "taskruns__task-result.yaml", OK),
    (Tekton, "taskruns__unnamed-steps.yaml", OK),
    (
        Tekton,
        "taskruns__workspace-with-volumeClaimTemplate.yaml",
        OK,
    ),
    (Tekton, "taskruns__workspace.yaml", OK),
];

/// A run that failed (a step exited non-zero).
const FAILED: (&str, &str) = ("False", "Failed");

/// Outcomes on the host step runner that differ from [`EXPECTED`]: (file,
/// outcome, why) where `why` is in a failed step's termination message or
/// log — a step's program that comes from its image (Tekton's `git-init`,
/// kaniko's executor) and is not on this host (the runner's "<tool> is not
/// available on this host"), or a host the example only names. Documented
/// in README.md (Example outcomes). Every other example must reach its
/// [`EXPECTED`] outcome there too.
const EXPECTED_ON_HOST: &[(&str, (&str, &str), &str)] = &[
    (
        "pipelinerun-clone-and-build.yaml",
        FAILED,
        "/ko-app/git-init is not available on this host",
    ),
    (
        "pipelinerun-finally.yaml",
        FAILED,
        "Could not resolve host: git.example",
    ),
    (
        "pipelinerun-remote-catalog.yaml",
        FAILED,
        "/ko-app/git-init is not available on this host",
    ),
    (
        "pipelineruns__beta_git-resolver.yaml",
        FAILED,
        "/ko-app/git-init is not available on this host",
    ),
    (
        "pipelineruns__pipelinerun-with-final-tasks.yaml",
        FAILED,
        "/ko-app/git-init is not available on this host",
    ),
    (
        "pipelineruns__pipelinerun.yaml",
        FAILED,
        "/ko-app/git-init is not available on this host",
    ),
];

fn expected(file: &str) -> (&'static str, &'static str) {
    EXPECTED
        .iter()
        .find(|(_, f, _)| *f == file)
        .map(|(_, _, outcome)| *outcome)
        .unwrap_or_else(|| panic!("{file}: no expected outcome in EXPECTED"))
}

#[test]
fn every_catalog_task_and_example_object_passes_admission() {
    let root = tekton_dir();
    let mut checked = 0;
    let files = yaml_files(&root, "catalog")
        .into_iter()
        .chain(yaml_files(&root, "examples"));
    for f in files {
        for mut doc in load_yaml(&f) {
            let Some(g) = gvr_of(doc["kind"].as_str().unwrap_or("")) else {
                continue;
            };
            if g.group != "tekton.dev" {
                continue;
            }
            admission::apply_defaults(&g, &mut doc);
            admission::validate_create(&g, &doc)
                .unwrap_or_else(|e| panic!("{}: {} rejected: {e}", f.display(), model::name(&doc)));
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} Tekton objects found");
}

#[test]
fn every_example_file_has_an_expected_outcome() {
    for file in yaml_names(&tekton_dir(), "examples") {
        expected(&file);
    }
    // Our own entries and files match exactly, whichever set is under test.
    let own: Vec<&str> = EXPECTED
        .iter()
        .filter(|(set, ..)| *set == Set::Own)
        .map(|(_, f, _)| *f)
        .collect();
    assert_eq!(yaml_names(&own_dir(), "examples"), own);
    // Host outcomes are exceptions to known examples, never the same outcome.
    for (file, outcome, _) in EXPECTED_ON_HOST {
        assert_ne!(expected(file), *outcome, "{file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_run_reaches_the_condition_tekton_gives_it() {
    let env = Env::start(fast_options()).await;
    run_every_example(&env, false).await;
}

/// The same examples with their steps run for real as host processes: the
/// outcome Tekton gives them where their tools exist here, the missing tool
/// named where not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_on_the_host_runner_reaches_its_outcome() {
    let root = tempfile::tempdir().unwrap();
    let env = Env::start(ControllerOptions {
        // Steps take real time; keep timeouts real.
        time_scale: 1.0,
        pod_start_delay: std::time::Duration::ZERO,
        host_steps: Some(HostSteps {
            root: root.path().join("sim"),
        }),
        ..fast_options()
    })
    .await;
    run_every_example(&env, true).await;
}

/// The outcome on the host runner and the tool whose absence explains a
/// difference from [`EXPECTED`], if any.
fn expected_on_host(file: &str) -> ((&'static str, &'static str), Option<&'static str>) {
    match EXPECTED_ON_HOST.iter().find(|(f, ..)| *f == file) {
        Some((_, outcome, why)) => (*outcome, Some(*why)),
        None => (expected(file), None),
    }
}

/// Applies every example of the set under test to its own namespace and
/// checks each run's outcome (and the details that show its feature); with
/// `host`, against the host runner's outcomes.
async fn run_every_example(env: &Env, host: bool) {
    env.default_storage_class().await;
    let files = yaml_names(&tekton_dir(), "examples");
    let mut created = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let ns = format!("ex{i}");
        env.namespace(&ns).await;
        let runs = env
            .apply(&ns, &load_yaml(&tekton_dir().join("examples").join(file)))
            .await;
        assert!(!runs.is_empty(), "{file} has no runs");
        created.push((file, ns, runs));
    }
    let mut detailed = 0;
    let mut wrong = Vec::new();
    for (file, ns, runs) in &created {
        let (outcome, missing) = if host {
            expected_on_host(file)
        } else {
            (expected(file), None)
        };
        let mut done = Vec::new();
        let mut as_expected = true;
        for run in runs {
            let finished = env.wait_done(&run_gvr(run), ns, model::name(run)).await;
            let (s, r, m) = condition(&finished);
            if (s.as_str(), r.as_str()) != outcome {
                // All of them at the end: one difference hides no other.
                wrong.push(format!("{file}: {s}/{r} ({m}), expected {outcome:?}"));
                as_expected = false;
            }
            assert!(
                finished["status"]["startTime"].is_string()
                    && finished["status"]["completionTime"].is_string(),
                "{file}"
            );
            done.push(finished);
        }
        if !as_expected {
            continue;
        }
        if let Some(why) = missing {
            assert_a_step_failed_with(env, ns, file, why).await;
            continue;
        }
        if details(env, ns, file, &done).await {
            detailed += 1;
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Most examples have details; a set with none would check outcomes only.
    assert!(
        detailed * 2 >= files.len(),
        "details for {detailed} of {}",
        files.len()
    );
}

/// A failed step of `file`'s TaskRuns has `why` in its termination message
/// or its log.
async fn assert_a_step_failed_with(env: &Env, ns: &str, file: &str, why: &str) {
    let mut seen = Vec::new();
    for tr in env.list(&gvr::TASKRUNS, ns).await {
        let pod = model::str_at(&tr, &["status", "podName"]).unwrap_or("");
        for step in model::arr(&tr, &["status", "steps"]) {
            let ended = &step["terminated"];
            if ended["exitCode"].as_i64().unwrap_or(0) == 0 {
                continue;
            }
            let message = ended["message"].as_str().unwrap_or("").to_owned();
            let container = step["container"].as_str().unwrap_or("");
            let logs = env.logs(ns, pod, container).await;
            if container == why || message.contains(why) || logs.iter().any(|l| l.contains(why)) {
                return;
            }
            seen.push((container.to_owned(), message, logs));
        }
    }
    panic!("{file}: no failed step says {why:?}; failed steps: {seen:#?}");
}

fn run_gvr(run: &Value) -> kube_sim::cluster::Gvr {
    if run["kind"] == "PipelineRun" {
        gvr::PIPELINERUNS
    } else {
        gvr::TASKRUNS
    }
}

/// Checks beyond the outcome for `file`'s finished `runs`; false when it has none.
async fn details(env: &Env, ns: &str, file: &str, runs: &[Value]) -> bool {
    let run = &runs[0];
    match file {
        "pipelinerun-chained-results.yaml" => own::chained_results(env, ns, run).await,
        "pipelinerun-claim-template.yaml" => own::claim_owned_by(env, ns, run).await,
        "pipelinerun-clone-and-build.yaml" => own::clone_and_build(env, ns, run).await,
        "pipelinerun-cluster-resolver-missing.yaml" => own::cluster_resolver(ns, run),
        "pipelinerun-fan-out-shared-claim.yaml" => own::fan_out(env, ns, run).await,
        "pipelinerun-finally.yaml" => own::finally(env, ns, run).await,
        "pipelinerun-inline-spec.yaml" => own::inline_spec(env, ns).await,
        "pipelinerun-param-defaults.yaml" => own::param_defaults(env, ns).await,
        "pipelinerun-remote-catalog.yaml" => own::remote_catalog(env, ns, run).await,
        "pipelinerun-taskrunspecs-timeout.yaml" => own::timeout_override(env, ns).await,
        "pipelinerun-workspace-kinds.yaml" => own::workspace_kinds(env, ns, run).await,
        "taskrun-anonymous-steps.yaml" => own::anonymous_steps(run),
        "taskrun-claim-template.yaml" => own::claim_owned_by(env, ns, run).await,
        "taskrun-results.yaml" => own::taskrun_results(run),
        "taskrun-secret-mount.yaml" => own::secret_mount(env, ns, run).await,
        "taskrun-step-actions.yaml" => own::step_actions(env, ns, run).await,
        "taskrun-step-template.yaml" => own::step_template(env, ns, run).await,
        "taskrun-volume-kinds.yaml" => own::volume_kinds(env, ns, run).await,
        "pipelineruns__pipelinerun-results.yaml" => tekton::results(env, ns).await,
        "pipelineruns__pipelinerun-with-pipelinespec.yaml" => tekton::pipelinespec(env, ns).await,
        "pipelineruns__pipelinerun-with-task-timeout-override.yaml" => {
            tekton::timeout_override(env, ns).await
        }
        "pipelineruns__pipelinerun-with-final-tasks.yaml" => tekton::final_tasks(env, ns).await,
        "taskruns__unnamed-steps.yaml" => tekton::unnamed_steps(run),
        "taskruns__workspace-with-volumeClaimTemplate.yaml"
        | "pipelineruns__workspace-from-volumeclaimtemplate.yaml" => {
            own::claim_owned_by(env, ns, run).await
        }
        "pipelineruns__beta_git-resolver.yaml" => tekton::git_resolver(env, ns, run).await,
        "pipelineruns__no-ci_cluster-resolver.yaml" => tekton::cluster_resolver(run),
        "pipelineruns__pipelinerun.yaml" => tekton::clone_and_build(env, ns).await,
        "pipelineruns__pipelinerun-with-parallel-tasks-using-pvc.yaml" => {
            assert_eq!(child_names(run).len(), 5);
            own::claim_owned_by(env, ns, run).await
        }
        "taskruns__task-result.yaml" => {
            for r in ["current-date-unix-timestamp", "current-date-human-readable"] {
                assert!(result(run, r).is_some(), "{r}");
            }
        }
        _ => return false,
    }
    true
}

async fn taskrun(env: &Env, ns: &str, name: &str) -> Value {
    env.get(&gvr::TASKRUNS, ns, name)
        .await
        .unwrap_or_else(|| panic!("TaskRun {ns}/{name} missing"))
}

fn child_names(run: &Value) -> Vec<String> {
    model::arr(run, &["status", "childReferences"])
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn containers(tr: &Value) -> Vec<String> {
    model::arr(tr, &["status", "steps"])
        .iter()
        .map(|s| s["container"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Details of the repository's own examples.
mod own {
    use super::*;

    /// Results passed on as params and resolved into the pipeline's results; the
    /// TaskRun, its pod and their labels and owners.
    pub async fn chained_results(env: &Env, ns: &str, pr: &Value) {
        assert_eq!(
            condition(pr).2,
            "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0"
        );
        let area = result(pr, "area").expect("area");
        let volume = result(pr, "volume").expect("volume");
        assert_eq!(
            result(pr, "report").unwrap(),
            format!("area={area} volume={volume}")
        );
        assert_eq!(
            pr["metadata"]["labels"]["tekton.dev/pipeline"],
            "box-volume"
        );
        assert_eq!(pr["spec"]["timeouts"]["pipeline"], "1h0m0s", "defaulted");
        assert_eq!(
            pr["status"]["pipelineSpec"]["tasks"][0]["params"][0]["value"], "3",
            "params substituted"
        );
        assert_eq!(
            child_names(pr),
            ["box-volume-run-base-area", "box-volume-run-volume"]
        );
        let second = taskrun(env, ns, "box-volume-run-volume").await;
        assert_eq!(second["spec"]["params"][0]["value"], area.as_str());
        let labels = &second["metadata"]["labels"];
        assert_eq!(labels["tekton.dev/pipelineRun"], "box-volume-run");
        assert_eq!(labels["tekton.dev/pipelineTask"], "volume");
        assert_eq!(labels["tekton.dev/task"], "multiply");
        assert_eq!(
            second["metadata"]["ownerReferences"][0]["uid"],
            pr["metadata"]["uid"]
        );
        assert_eq!(second["status"]["podName"], "box-volume-run-volume-pod");
        assert_eq!(containers(&second), ["step-multiply"]);
        assert_eq!(second["status"]["steps"][0]["terminated"]["exitCode"], 0);
        let pod = env
            .get(&gvr::PODS, ns, "box-volume-run-volume-pod")
            .await
            .unwrap();
        assert_eq!(pod["status"]["phase"], "Succeeded");
        assert_eq!(pod["spec"]["containers"][0]["name"], "step-multiply");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "TaskRun");
    }

    /// A volumeClaimTemplate gives the run its own claim, bound by the default
    /// StorageClass.
    pub async fn claim_owned_by(env: &Env, ns: &str, run: &Value) {
        let pvcs: Vec<Value> = env
            .list(&gvr::PVCS, ns)
            .await
            .into_iter()
            .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"])
            .collect();
        assert_eq!(pvcs.len(), 1, "{}", model::name(run));
        assert_eq!(pvcs[0]["status"]["phase"], "Bound");
        assert_eq!(pvcs[0]["spec"]["storageClassName"], "standard");
    }

    pub async fn clone_and_build(env: &Env, ns: &str, pr: &Value) {
        assert_eq!(
            result(pr, "IMAGE_URL").unwrap(),
            "registry.example/demo/app:latest",
            "the Pipeline's param default"
        );
        let digest = result(pr, "IMAGE_DIGEST").unwrap();
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{digest}"
        );
        let logs = env
            .logs(ns, "clone-and-build-run-clone-pod", "step-clone")
            .await;
        assert!(
            logs.iter()
                .any(|l| l.contains("https://git.example/demo/app.git")),
            "{logs:?}"
        );
        claim_owned_by(env, ns, pr).await;
    }

    pub fn cluster_resolver(ns: &str, pr: &Value) {
        let message = condition(pr).2;
        assert!(
            message.starts_with(&format!(
                "Error retrieving pipeline for pipelinerun {ns}/shared-pipeline-missing: "
            )) && message.contains("pipelines.tekton.dev \"org-wide-release\" not found"),
            "{message}"
        );
        assert!(child_names(pr).is_empty());
    }

    /// Two branches after `seed`, joined; a result crosses from one branch to a
    /// task without the workspace. TaskRuns start only after what they follow.
    pub async fn fan_out(env: &Env, ns: &str, pr: &Value) {
        let name = model::name(pr);
        let mut runs = Vec::new();
        for task in ["seed", "shout", "hush", "announce", "join"] {
            runs.push(taskrun(env, ns, &format!("{name}-{task}")).await);
        }
        let [seed, shout, hush, announce, join] = &runs[..] else {
            unreachable!()
        };
        assert_eq!(child_names(pr).len(), 5);
        let created = |t: &Value| {
            t["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let finished = |t: &Value| t["status"]["completionTime"].as_str().unwrap().to_string();
        for branch in [shout, hush] {
            assert!(created(branch) >= finished(seed));
            assert!(created(join) >= finished(branch));
            assert_eq!(
                branch["spec"]["workspaces"][0]["persistentVolumeClaim"]["claimName"],
                "fan-out-data"
            );
        }
        assert_eq!(
            announce["spec"]["params"][0]["value"].as_str(),
            result(shout, "text").as_deref()
        );
        let claim = env.get(&gvr::PVCS, ns, "fan-out-data").await.unwrap();
        assert_eq!(claim["status"]["phase"], "Bound");
    }

    pub async fn finally(env: &Env, ns: &str, pr: &Value) {
        assert_eq!(
            condition(pr).2,
            "Tasks Completed: 3 (Failed: 0, Cancelled 0), Skipped: 0"
        );
        assert!(pr["status"]["finallyStartTime"].is_string());
        let fetch = taskrun(env, ns, "checkout-then-tidy-run-fetch").await;
        let report = taskrun(env, ns, "checkout-then-tidy-run-report-commit").await;
        let tidy = taskrun(env, ns, "checkout-then-tidy-run-tidy").await;
        assert_eq!(
            report["metadata"]["labels"]["tekton.dev/memberOf"],
            "finally"
        );
        assert_eq!(tidy["metadata"]["labels"]["tekton.dev/memberOf"], "finally");
        assert_eq!(fetch["metadata"]["labels"]["tekton.dev/memberOf"], "tasks");
        let commit = result(&fetch, "commit").unwrap();
        assert_eq!(report["spec"]["params"][0]["value"], commit.as_str());
        assert!(
            report["status"]["startTime"].as_str().unwrap()
                >= fetch["status"]["completionTime"].as_str().unwrap()
        );
    }

    /// Pipeline param defaults, a run value and a command step's args.
    pub async fn inline_spec(env: &Env, ns: &str) {
        let logs = env
            .logs(ns, "inline-status-status-line-pod", "step-print")
            .await;
        assert_eq!(logs, ["the build has finished"]);
        let logs = env
            .logs(ns, "inline-status-footer-pod", "step-footer")
            .await;
        assert_eq!(logs, ["-- end of report --"]);
    }

    /// A run value, a Pipeline default, a Task default, the legacy syntax.
    pub async fn param_defaults(env: &Env, ns: &str) {
        let polite = env.logs(ns, "greetings-run-polite-pod", "step-say").await;
        assert_eq!(polite, ["Guten Tag, Ada!"]);
        let loud = env.logs(ns, "greetings-run-loud-pod", "step-say").await;
        assert_eq!(loud, ["HEY, Ada!!!"]);
    }

    /// The git resolver served the clone and buildah-like Tasks, the hub
    /// resolver the kaniko-like one.
    pub async fn remote_catalog(env: &Env, ns: &str, pr: &Value) {
        let name = model::name(pr);
        let clone = taskrun(env, ns, &format!("{name}-clone")).await;
        let build = taskrun(env, ns, &format!("{name}-build")).await;
        assert_eq!(containers(&clone), ["step-clone"]);
        assert_eq!(
            containers(&build),
            ["step-build-and-push", "step-write-url"]
        );
        let oci = taskrun(env, ns, &format!("{name}-build-oci")).await;
        assert_eq!(containers(&oci), ["step-build", "step-push"]);
        assert_eq!(
            result(&oci, "IMAGE_URL").as_deref(),
            Some("registry.example/shop/frontend:oci")
        );
        assert_eq!(
            result(&clone, "url").as_deref(),
            Some("https://git.example/shop/frontend.git")
        );
        assert_eq!(
            result(pr, "image").as_deref(),
            Some("registry.example/shop/frontend:remote")
        );
        claim_owned_by(env, ns, pr).await;
    }

    /// `taskRunSpecs[].timeout` beats the pipeline task's own `timeout`.
    pub async fn timeout_override(env: &Env, ns: &str) {
        let tr = taskrun(env, ns, "pause-then-confirm-run-pause").await;
        // Stored as a Go duration, like the `metav1.Duration` Tekton keeps.
        assert_eq!(tr["spec"]["timeout"], "1m0s");
    }

    /// The pod mounts the Secret, the ConfigMap (renamed key) and the claim.
    pub async fn workspace_kinds(env: &Env, ns: &str, pr: &Value) {
        let pod = env
            .get(&gvr::PODS, ns, &format!("{}-prepare-pod", model::name(pr)))
            .await
            .unwrap();
        let volumes = model::arr(&pod, &["spec", "volumes"]);
        let has =
            |key: &str, field: &str, name: &str| volumes.iter().any(|v| v[key][field] == name);
        assert!(has("secret", "secretName", "deploy-token"), "{volumes:?}");
        assert!(has("configMap", "name", "release-settings"), "{volumes:?}");
        assert!(
            has("persistentVolumeClaim", "claimName", "handover"),
            "{volumes:?}"
        );
    }

    /// Tekton names steps without a name `unnamed-<index>`.
    pub fn anonymous_steps(tr: &Value) {
        assert_eq!(
            containers(tr),
            ["step-first", "step-unnamed-1", "step-unnamed-2"]
        );
        assert_eq!(condition(tr).2, "All Steps have completed executing");
    }

    pub fn taskrun_results(tr: &Value) {
        assert!(result(tr, "build-id").is_some_and(|v| !v.is_empty()));
        assert!(result(tr, "built-at").is_some_and(|v| !v.is_empty()));
    }

    pub async fn secret_mount(env: &Env, ns: &str, tr: &Value) {
        let pod = env
            .get(&gvr::PODS, ns, &format!("{}-pod", model::name(tr)))
            .await
            .unwrap();
        let volumes = model::arr(&pod, &["spec", "volumes"]);
        assert!(
            volumes
                .iter()
                .any(|v| v["name"] == "keys" && v["secret"]["secretName"] == "signing-key"),
            "{volumes:?}"
        );
    }

    /// The steps' containers carry the stepTemplate's fields unless the
    /// step sets its own (image, one variable); the run succeeded through
    /// admission that checks the merged steps.
    pub async fn step_template(env: &Env, ns: &str, tr: &Value) {
        let pod = env
            .get(&gvr::PODS, ns, &format!("{}-pod", model::name(tr)))
            .await
            .unwrap();
        let c = model::arr(&pod, &["spec", "containers"]);
        assert_eq!(c[0]["name"], "step-from-template");
        assert_eq!(c[0]["image"], "docker.io/library/alpine:3.20");
        assert_eq!(c[0]["workingDir"], "/workspace/src");
        assert_eq!(c[0]["env"][1]["value"], "template");
        assert_eq!(c[1]["image"], "docker.io/library/busybox:1.36");
        assert_eq!(c[1]["workingDir"], "/workspace/src");
        assert_eq!(c[1]["env"][0]["value"], "Hello");
        assert_eq!(c[1]["env"][1]["value"], "step");
    }

    /// `ref` steps run their StepAction's image and script with the step's
    /// params (a Task param passed through, a default) and result path.
    pub async fn step_actions(env: &Env, ns: &str, tr: &Value) {
        assert_eq!(containers(tr), ["step-greet", "step-look", "step-done"]);
        let pod_name = format!("{}-pod", model::name(tr));
        let pod = env.get(&gvr::PODS, ns, &pod_name).await.unwrap();
        let c = model::arr(&pod, &["spec", "containers"]);
        assert_eq!(c[0]["image"], "docker.io/library/alpine:3.20");
        assert_eq!(c[1]["image"], "docker.io/library/busybox:1.36");
        assert_eq!(c[1]["command"], serde_json::json!(["ls"]));
        assert_eq!(c[1]["args"], serde_json::json!(["-la", "/workspace"]));
        let greet = &tr["status"]["taskSpec"]["steps"][0];
        assert_eq!(
            greet["script"],
            "echo \"Hello, Grace!\"\nprintf '%s' \"Hello\" > /tekton/steps/step-greet/results/said\n"
        );
        assert_eq!(greet["results"][0]["name"], "said");
        let logs = env.logs(ns, &pod_name, "step-greet").await;
        assert_eq!(logs, ["Hello, Grace!"]);
    }

    /// Every workspace binding kind becomes a pod volume.
    pub async fn volume_kinds(env: &Env, ns: &str, tr: &Value) {
        let pod = env
            .get(&gvr::PODS, ns, &format!("{}-pod", model::name(tr)))
            .await
            .unwrap();
        let volumes = model::arr(&pod, &["spec", "volumes"]);
        for kind in ["persistentVolumeClaim", "emptyDir", "configMap", "secret"] {
            assert!(
                volumes.iter().any(|v| v.get(kind).is_some()),
                "{kind}: {volumes:?}"
            );
        }
        assert_eq!(containers(tr).len(), 5);
    }
}

/// Details of Tekton's own examples (checked when `KUBE_SIM_TEKTON_DIR` names them).
mod tekton {
    use super::*;

    pub async fn results(env: &Env, ns: &str) {
        let pr = env
            .get(&gvr::PIPELINERUNS, ns, "sum-three-pipeline-run")
            .await
            .unwrap();
        assert_eq!(
            condition(&pr).2,
            "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0"
        );
        let sum = result(&pr, "sum").expect("sum");
        let partial = result(&pr, "partial-sum").expect("partial-sum");
        assert_eq!(result(&pr, "all-sum").unwrap(), format!("{sum}-{partial}"));
        assert_eq!(
            pr["status"]["pipelineSpec"]["tasks"][0]["params"][0]["value"], "2",
            "params substituted"
        );
        assert_eq!(child_names(&pr)[0], "sum-three-pipeline-run-first-add");
        let second = taskrun(env, ns, "sum-three-pipeline-run-second-add").await;
        assert_eq!(second["spec"]["params"][0]["value"], partial.as_str());
        assert_eq!(second["metadata"]["labels"]["tekton.dev/task"], "add-task");
        assert_eq!(containers(&second), ["step-add"]);
    }

    pub async fn pipelinespec(env: &Env, ns: &str) {
        let logs = env
            .logs(
                ns,
                "pipelinerun-echo-greetings-echo-good-morning-pod",
                "step-echo",
            )
            .await;
        assert_eq!(logs, ["Good Morning, Bob!"]);
    }

    pub async fn timeout_override(env: &Env, ns: &str) {
        let tr = taskrun(env, ns, "taskrun-timeout-override-long-running-task").await;
        assert_eq!(tr["spec"]["timeout"], "40s");
    }

    pub async fn final_tasks(env: &Env, ns: &str) {
        let pr = env
            .get(&gvr::PIPELINERUNS, ns, "write-and-cleanup-workspace")
            .await
            .unwrap();
        assert_eq!(
            condition(&pr).2,
            "Tasks Completed: 3 (Failed: 0, Cancelled 0), Skipped: 0"
        );
        assert!(pr["status"]["finallyStartTime"].is_string());
        let check = taskrun(env, ns, "write-and-cleanup-workspace-check-git-commit").await;
        assert_eq!(
            check["metadata"]["labels"]["tekton.dev/memberOf"],
            "finally"
        );
        let clone = taskrun(env, ns, "write-and-cleanup-workspace-clone-app-repo").await;
        let commit = result(&clone, "commit").unwrap();
        assert_eq!(check["spec"]["params"][0]["value"], commit.as_str());
    }

    /// git-clone 0.10 came from the catalog through the git resolver.
    pub async fn git_resolver(env: &Env, ns: &str, pr: &Value) {
        let tr = taskrun(env, ns, &format!("{}-task1", model::name(pr))).await;
        assert_eq!(containers(&tr), ["step-clone"]);
        assert!(result(&tr, "commit").is_some());
        own::claim_owned_by(env, ns, pr).await;
    }

    pub fn cluster_resolver(pr: &Value) {
        let message = condition(pr).2;
        assert!(
            message.contains("pipelines.tekton.dev \"some-pipeline\" not found"),
            "{message}"
        );
    }

    /// The Pipeline's param default reaches the kaniko Task's result.
    pub async fn clone_and_build(env: &Env, ns: &str) {
        let build = taskrun(env, ns, "demo-pipeline-run-1-build-image").await;
        assert_eq!(
            result(&build, "IMAGE_URL").as_deref(),
            Some("gcr.io/christiewilson-catfactory/getting-started")
        );
    }

    pub fn unnamed_steps(tr: &Value) {
        assert_eq!(containers(tr)[2], "step-unnamed-2");
        assert_eq!(condition(tr).2, "All Steps have completed executing");
    }
}
