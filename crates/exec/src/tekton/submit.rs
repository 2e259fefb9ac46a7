//! Submitting a run exactly once: a deterministic name per execution, the
//! Image Factory labels, and 409 AlreadyExists → adopt when the labels match.

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::Value;
use uuid::Uuid;

use super::client::TektonVersion;
use super::error::{
    TektonError, describe_kube_error, is_already_exists, not_acted_on, status_code,
};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=image-factory";
pub const BUILD_ID: &str = "imagefactory.io/build-id";
pub const TENANT_ID: &str = "imagefactory.io/tenant-id";
pub const EXECUTION_ID: &str = "imagefactory.io/execution-id";

/// `if-<first 8 hex of build id>-<last 12 hex>-<attempt>`. The tail keeps
/// names of builds created in the same minute apart: time-ordered (v7) ids
/// share their first 8 hex digits for about a minute, and their last 12 hex
/// digits are random. 12 digits (48 bits), not 6: with 24 bits two of 5,000
/// builds submitted within a minute collide about every other time (the
/// second build then fails, its run "not created for this execution").
pub fn run_name(build_id: Uuid, attempt: i32) -> String {
    let hex = build_id.simple().to_string();
    format!("if-{}-{}-{attempt}", &hex[..8], &hex[20..])
}

pub fn run_labels(build_id: Uuid, tenant_id: Uuid, execution_id: Uuid) -> BTreeMap<String, String> {
    [
        (MANAGED_BY, "image-factory".to_string()),
        (BUILD_ID, build_id.to_string()),
        (TENANT_ID, tenant_id.to_string()),
        (EXECUTION_ID, execution_id.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub fn tekton_resource(version: TektonVersion, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "tekton.dev".into(),
        version: version.as_str().into(),
        api_version: version.api_version().into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub fn pipelinerun_resource(version: TektonVersion) -> ApiResource {
    tekton_resource(version, "PipelineRun", "pipelineruns")
}

pub fn taskrun_resource(version: TektonVersion) -> ApiResource {
    tekton_resource(version, "TaskRun", "taskruns")
}

/// Whether an existing run carries exactly our build and execution labels.
pub fn labels_match(existing: &BTreeMap<String, String>, ours: &BTreeMap<String, String>) -> bool {
    [MANAGED_BY, BUILD_ID, TENANT_ID, EXECUTION_ID]
        .iter()
        .all(|k| existing.get(*k) == ours.get(*k))
}

/// Why a run was neither created nor adopted, and whether it may exist on
/// the cluster all the same: a create the server may have acted on before
/// failing, or a name taken (409) by a run that could not be read. Only
/// while it may not exist can the attempt be given up (another attempt
/// creates a run of another name); while it may, the attempt keeps trying
/// to create or adopt it (see `TektonExecutor::submit_retrying`).
#[derive(Debug)]
pub struct NotCreated {
    pub error: TektonError,
    pub may_exist: bool,
}

impl NotCreated {
    fn absent(error: TektonError) -> Self {
        Self {
            error,
            may_exist: false,
        }
    }
}

/// Create the run, or adopt it when an earlier attempt of this same
/// execution already created it; `true` with an adopted run.
pub async fn create_or_adopt(
    client: &kube::Client,
    version: TektonVersion,
    run: &Value,
) -> Result<(DynamicObject, bool), NotCreated> {
    let namespace = run
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = run
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let object: DynamicObject = serde_json::from_value(run.clone()).map_err(|e| {
        NotCreated::absent(TektonError::Build(format!(
            "rendered PipelineRun is not a Kubernetes object: {e}"
        )))
    })?;
    let ours = object.metadata.labels.clone().unwrap_or_default();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &pipelinerun_resource(version));
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => Ok((created, false)),
        Err(e) if is_already_exists(&e) => {
            let existing = api.get(name).await.map_err(|e| NotCreated {
                error: TektonError::kube(
                    format!("reading existing PipelineRun {namespace}/{name}"),
                    e,
                ),
                may_exist: true,
            })?;
            let labels = existing.metadata.labels.clone().unwrap_or_default();
            if labels_match(&labels, &ours) {
                Ok((existing, true))
            } else {
                Err(NotCreated::absent(TektonError::Build(format!(
                    "PipelineRun {namespace}/{name} already exists but was not created for this execution (labels differ); delete it or retry the build"
                ))))
            }
        }
        Err(e) if matches!(status_code(&e), Some(400 | 422)) => {
            Err(NotCreated::absent(TektonError::Build(format!(
                "the cluster rejected PipelineRun {namespace}/{name}: {}",
                describe_kube_error(&e)
            ))))
        }
        Err(e) if status_code(&e) == Some(403) => {
            Err(NotCreated::absent(TektonError::Build(format!(
                "the provider's credentials may not create PipelineRuns in namespace {namespace}: {}",
                describe_kube_error(&e)
            ))))
        }
        Err(e) => Err(NotCreated {
            may_exist: !not_acted_on(&e),
            error: TektonError::kube(format!("creating PipelineRun {namespace}/{name}"), e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_name_is_deterministic_per_attempt_and_apart_per_build() {
        let a = Uuid::parse_str("0193abcd-0000-7000-8000-00000000a1b2").unwrap();
        let b = Uuid::parse_str("0193abcd-0000-7000-8000-0000000c3d4e").unwrap();
        assert_eq!(run_name(a, 1), "if-0193abcd-00000000a1b2-1");
        // Same minute, same last 6 hex digits: still apart.
        let c = Uuid::parse_str("0193abcd-0000-7000-8000-01000000a1b2").unwrap();
        assert_ne!(run_name(a, 1), run_name(c, 1));
        // Pod names (`<run>-<task>-pod`) stay within 63 characters.
        assert!(format!("{}-build-pod", run_name(Uuid::max(), 99)).len() <= 63);
        assert_eq!(run_name(a, 1), run_name(a, 1));
        assert_ne!(run_name(a, 1), run_name(a, 2));
        assert_ne!(run_name(a, 1), run_name(b, 1));
    }

    #[test]
    fn adoption_requires_every_label_to_match() {
        let ours = run_labels(Uuid::nil(), Uuid::nil(), Uuid::max());
        assert!(labels_match(&ours, &ours));
        let mut other = ours.clone();
        other.insert(EXECUTION_ID.into(), Uuid::nil().to_string());
        assert!(!labels_match(&other, &ours));
        assert!(!labels_match(&BTreeMap::new(), &ours));
    }
}
