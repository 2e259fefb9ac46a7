//! Checks a rendered PipelineRun has the shape Image Factory relies on
//! before anything is submitted, and converts it for v1beta1-only clusters.

use serde_json::Value;

use super::client::TektonVersion;

/// What the rendered run must match.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub run_name: &'a str,
    pub namespace: &'a str,
    /// Task of the `build` step: `docker-build`, `buildx`, `kaniko` or `packer`.
    pub build_task: &'a str,
    pub registry_secret: &'a str,
}

/// Validate a rendered `tekton.dev/v1` PipelineRun. The error names the field.
pub fn validate(run: &Value, expected: &Expected<'_>) -> Result<(), String> {
    let field = |path: &str| run.pointer(path);
    let text = |path: &str| field(path).and_then(Value::as_str);
    if text("/apiVersion") != Some("tekton.dev/v1") {
        return Err(format!(
            "apiVersion must be tekton.dev/v1, found {:?}",
            field("/apiVersion")
        ));
    }
    if text("/kind") != Some("PipelineRun") {
        return Err(format!(
            "kind must be PipelineRun, found {:?}",
            field("/kind")
        ));
    }
    if text("/metadata/name") != Some(expected.run_name) {
        return Err(format!("metadata.name must be {:?}", expected.run_name));
    }
    if text("/metadata/namespace") != Some(expected.namespace) {
        return Err(format!(
            "metadata.namespace must be {:?}",
            expected.namespace
        ));
    }
    if text("/spec/timeouts/pipeline").is_none() {
        return Err("spec.timeouts.pipeline must be set to the build's timeout".into());
    }
    let tasks = field("/spec/pipelineSpec/tasks")
        .and_then(Value::as_array)
        .ok_or("spec.pipelineSpec.tasks must be a list (an inline pipelineSpec is required)")?;
    let task = |name: &str| {
        tasks
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| format!("spec.pipelineSpec.tasks must contain a task named {name:?}"))
    };
    let clone = task("clone")?;
    let build = task("build")?;
    check_task_ref(clone, "clone", "git-clone")?;
    check_task_ref(build, "build", expected.build_task)?;
    let runs_after_clone = build
        .get("runAfter")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|v| v == "clone"));
    if !runs_after_clone {
        return Err("task \"build\" must have runAfter: [clone]".into());
    }
    let workspaces = field("/spec/workspaces")
        .and_then(Value::as_array)
        .ok_or("spec.workspaces must be a list")?;
    if !workspaces
        .iter()
        .any(|w| w.get("volumeClaimTemplate").is_some())
    {
        return Err("spec.workspaces must include a workspace from a volumeClaimTemplate".into());
    }
    let binds_secret = workspaces.iter().any(|w| {
        w.pointer("/secret/secretName").and_then(Value::as_str) == Some(expected.registry_secret)
    });
    if !binds_secret {
        return Err(format!(
            "spec.workspaces must bind the registry Secret {:?}",
            expected.registry_secret
        ));
    }
    let declared: Vec<&str> = field("/spec/pipelineSpec/params")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .collect();
    for param in field("/spec/params")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = param
            .get("name")
            .and_then(Value::as_str)
            .ok_or("every spec.params item needs a name")?;
        if !declared.contains(&name) {
            return Err(format!(
                "spec.params {name:?} is not declared in spec.pipelineSpec.params"
            ));
        }
        let ok = match param.get("value") {
            Some(Value::String(_)) => true,
            Some(Value::Array(items)) => items.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "spec.params {name:?} must have a string or list-of-strings value"
            ));
        }
    }
    Ok(())
}

fn check_task_ref(task: &Value, name: &str, want: &str) -> Result<(), String> {
    let task_ref = task
        .get("taskRef")
        .ok_or_else(|| format!("task {name:?} must have a taskRef"))?;
    let by_name = task_ref.get("name").and_then(Value::as_str);
    let by_resolver = task_ref
        .get("params")
        .and_then(Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some("name"))
        })
        .and_then(|p| p.get("value"))
        .and_then(Value::as_str);
    if by_name.or(by_resolver) != Some(want) {
        return Err(format!("task {name:?} must reference Task {want:?}"));
    }
    Ok(())
}

/// The rendered v1 run in the version the cluster serves. v1beta1 keeps the
/// service account and pod template at the top of `spec`.
pub fn to_version(mut run: Value, version: TektonVersion) -> Value {
    if version == TektonVersion::V1 {
        return run;
    }
    run["apiVersion"] = Value::from(version.api_version());
    if let Some(spec) = run.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(Value::Object(template)) = spec.remove("taskRunTemplate")
    {
        if let Some(sa) = template.get("serviceAccountName") {
            spec.insert("serviceAccountName".into(), sa.clone());
        }
        if let Some(pod) = template.get("podTemplate") {
            spec.insert("podTemplate".into(), pod.clone());
        }
    }
    run
}

/// Which Tasks a run references: `(namespace, name)`; the namespace is the
/// run's own unless the cluster resolver names another.
pub fn referenced_tasks(run: &Value, run_namespace: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let tasks = ["/spec/pipelineSpec/tasks", "/spec/pipelineSpec/finally"];
    for path in tasks {
        for task in run
            .pointer(path)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(task_ref) = task.get("taskRef") else {
                continue;
            };
            if let Some(name) = task_ref.get("name").and_then(Value::as_str) {
                out.push((run_namespace.to_string(), name.to_string()));
            } else if task_ref.get("resolver").and_then(Value::as_str) == Some("cluster") {
                let param = |n: &str| {
                    task_ref
                        .get("params")
                        .and_then(Value::as_array)
                        .and_then(|ps| {
                            ps.iter()
                                .find(|p| p.get("name").and_then(Value::as_str) == Some(n))
                        })
                        .and_then(|p| p.get("value"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                if let Some(name) = param("name") {
                    out.push((
                        param("namespace").unwrap_or_else(|| run_namespace.to_string()),
                        name,
                    ));
                }
            }
        }
    }
    out
}

/// Secrets bound as workspaces.
pub fn bound_secrets(run: &Value) -> Vec<String> {
    run.pointer("/spec/workspaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|w| w.pointer("/secret/secretName").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// Whether the pipeline has `finally` tasks (cancel gracefully then).
pub fn has_finally(run: &Value) -> bool {
    run.pointer("/spec/pipelineSpec/finally")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}
