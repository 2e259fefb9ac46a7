//! Image Factory's own Task definitions (`tekton/tasks/*.yaml`) and their
//! installation by server-side apply.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::client::TektonVersion;
use super::error::{TektonError, describe_kube_error, status_code};
use super::submit::tekton_resource;

pub const FIELD_MANAGER: &str = "image-factory";

/// `(name, YAML)` of every shipped Task.
pub const TASKS: [(&str, &str); 5] = [
    (
        "git-clone",
        include_str!("../../../../tekton/tasks/git-clone.yaml"),
    ),
    (
        "docker-build",
        include_str!("../../../../tekton/tasks/docker-build.yaml"),
    ),
    (
        "buildx",
        include_str!("../../../../tekton/tasks/buildx.yaml"),
    ),
    (
        "kaniko",
        include_str!("../../../../tekton/tasks/kaniko.yaml"),
    ),
    (
        "packer",
        include_str!("../../../../tekton/tasks/packer.yaml"),
    ),
];

/// The shipped Tasks parsed, in the API version the cluster serves.
pub fn task_objects(version: TektonVersion) -> Result<Vec<Value>, String> {
    TASKS
        .iter()
        .map(|(name, text)| {
            let mut task: Value = serde_saphyr::from_str(text)
                .map_err(|e| format!("Task {name} does not parse: {e}"))?;
            if task["metadata"]["name"] != *name || task["kind"] != "Task" {
                return Err(format!("tekton/tasks/{name}.yaml must define Task {name}"));
            }
            task["apiVersion"] = Value::from(version.api_version());
            Ok(task)
        })
        .collect()
}

/// Create or update every shipped Task in `namespace` (server-side apply,
/// field manager `image-factory`, forcing ownership of our fields), labelled
/// with the current bundle version (see `bundle`).
pub async fn install_tasks(
    client: &kube::Client,
    version: TektonVersion,
    namespace: &str,
) -> Result<Vec<String>, TektonError> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &tekton_resource(version, "Task", "tasks"),
    );
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut installed = Vec::new();
    for mut task in super::bundle::desired_tasks(version).map_err(TektonError::Build)? {
        let name = task["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        task["metadata"]["namespace"] = Value::from(namespace);
        match api.patch(&name, &params, &Patch::Apply(&task)).await {
            Ok(_) => installed.push(name),
            Err(e) if status_code(&e) == Some(403) => {
                return Err(TektonError::Build(format!(
                    "installing Task {name} in namespace {namespace} is forbidden: {}",
                    describe_kube_error(&e)
                )));
            }
            Err(e) => {
                return Err(TektonError::kube(
                    format!("installing Task {namespace}/{name}"),
                    e,
                ));
            }
        }
    }
    Ok(installed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_parses_and_declares_the_image_results() {
        let tasks = task_objects(TektonVersion::V1).unwrap();
        assert_eq!(tasks.len(), 5);
        for task in &tasks {
            let name = task["metadata"]["name"].as_str().unwrap();
            let results: Vec<&str> = task["spec"]["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap())
                .collect();
            if name == "git-clone" {
                assert_eq!(results, ["commit", "url"]);
            } else {
                assert!(
                    results.contains(&"IMAGE_URL") && results.contains(&"IMAGE_DIGEST"),
                    "{name}"
                );
            }
            assert!(
                !task["spec"]["steps"].as_array().unwrap().is_empty(),
                "{name}"
            );
        }
    }

    #[test]
    fn every_param_the_templates_pass_is_declared_by_the_task() {
        use crate::tekton::render::{Templates, build_task_name};
        use imagefactory_domain::BuildMethod;
        let tasks = task_objects(TektonVersion::V1).unwrap();
        let declared = |task: &str| -> Vec<String> {
            let t = tasks
                .iter()
                .find(|t| t["metadata"]["name"] == task)
                .unwrap();
            t["spec"]["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect()
        };
        let _ = Templates::embedded();
        for method in BuildMethod::ALL {
            let text = match method {
                BuildMethod::Docker => include_str!("../../../../tekton/templates/docker.yaml"),
                BuildMethod::Buildx => include_str!("../../../../tekton/templates/buildx.yaml"),
                BuildMethod::Kaniko => include_str!("../../../../tekton/templates/kaniko.yaml"),
                BuildMethod::Packer => include_str!("../../../../tekton/templates/packer.yaml"),
            };
            // Task params are the `- name: X` lines under the build task's params.
            let build_section = text.split("- name: build\n").nth(1).unwrap();
            let params_section = build_section.split("workspaces:").next().unwrap();
            for line in params_section.lines() {
                if let Some(name) = line.trim().strip_prefix("- name: ") {
                    assert!(
                        declared(build_task_name(*method)).contains(&name.to_string()),
                        "{method}: Task {} lacks param {name}",
                        build_task_name(*method)
                    );
                }
            }
        }
    }

    #[test]
    fn every_pushing_task_verifies_registry_tls_by_default() {
        let tasks = task_objects(TektonVersion::V1).unwrap();
        for name in ["docker-build", "buildx", "kaniko", "packer"] {
            let task = tasks
                .iter()
                .find(|t| t["metadata"]["name"] == name)
                .unwrap();
            let param = task["spec"]["params"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "TLS_VERIFY")
                .unwrap_or_else(|| panic!("{name} lacks TLS_VERIFY"));
            assert_eq!(param["default"], "true", "{name}");
            let steps = task["spec"]["steps"].to_string();
            assert!(
                steps.contains("$(params.TLS_VERIFY)"),
                "{name} ignores TLS_VERIFY"
            );
        }
    }
}
