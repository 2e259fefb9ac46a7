//! The managed Task bundle: Image Factory's shipped Tasks as one versioned
//! unit. Every applied Task carries the bundle version (a label) and the hash
//! of the spec it was applied with (an annotation), so a namespace's Tasks can
//! be classified present / current / outdated / modified, and brought to the
//! current bundle by server-side apply (field manager `image-factory`).

use std::collections::HashMap;
use std::sync::LazyLock;

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::client::{Cluster, TektonVersion};
use super::error::{TektonError, describe_kube_error, is_not_found, status_code};
use super::submit::tekton_resource;
use super::tasks::{FIELD_MANAGER, TASKS, task_objects};

/// Label holding the bundle version a Task was applied from.
pub const BUNDLE_LABEL: &str = "imagefactory.dev/bundle-version";
/// Annotation holding the SHA-256 of the spec Image Factory applied.
pub const SPEC_HASH_ANNOTATION: &str = "imagefactory.dev/spec-hash";
/// Build log source of the managed apply's lines.
pub const LOG_SOURCE: &str = "tekton-tasks";

/// The bundle version: 12 hex digits of the SHA-256 over every shipped
/// Task's name and text, so any change to a Task is a new version.
pub fn bundle_version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        let mut hash = Sha256::new();
        for (name, text) in TASKS {
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(text.as_bytes());
            hash.update([0]);
        }
        hex::encode(hash.finalize())[..12].to_string()
    });
    &VERSION
}

/// SHA-256 (hex) of a spec as JSON (keys sorted: serde_json's map is ordered).
pub fn spec_hash(spec: &Value) -> String {
    hex::encode(Sha256::digest(spec.to_string().as_bytes()))
}

/// The shipped Tasks as applied: in `version`'s API, labelled with the
/// bundle version and annotated with their spec's hash.
pub fn desired_tasks(version: TektonVersion) -> Result<Vec<Value>, String> {
    let mut tasks = task_objects(version)?;
    for task in &mut tasks {
        let hash = spec_hash(&task["spec"]);
        let metadata = task["metadata"]
            .as_object_mut()
            .ok_or("a shipped Task has no metadata")?;
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        labels[BUNDLE_LABEL] = Value::from(bundle_version());
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        annotations[SPEC_HASH_ANNOTATION] = Value::from(hash);
    }
    Ok(tasks)
}

/// What a namespace's copy of one shipped Task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Not there.
    Missing,
    /// The current bundle's Task, unchanged.
    Current,
    /// Applied from an older bundle, unchanged since.
    Outdated,
    /// Changed in the cluster since Image Factory applied it, or not applied
    /// by Image Factory at all (drift).
    Modified,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Current => "current",
            Self::Outdated => "outdated",
            Self::Modified => "modified",
        }
    }
}

/// Classify the live Task against the desired one.
///
/// A Task of the current bundle is current when its live spec still holds
/// the desired spec (the server may add defaults, so extra empty or
/// defaulted fields are not drift); one without our label and annotation
/// was not applied by Image Factory, which counts as modified.
pub fn classify(desired: &Value, live: Option<&Value>) -> TaskState {
    let Some(live) = live else {
        return TaskState::Missing;
    };
    let recorded_hash = live
        .pointer(&format!(
            "/metadata/annotations/{}",
            escape(SPEC_HASH_ANNOTATION)
        ))
        .and_then(Value::as_str);
    let live_version = live
        .pointer(&format!("/metadata/labels/{}", escape(BUNDLE_LABEL)))
        .and_then(Value::as_str);
    let (Some(recorded_hash), Some(live_version)) = (recorded_hash, live_version) else {
        return TaskState::Modified;
    };
    if live_version == bundle_version() {
        let desired_hash = spec_hash(&desired["spec"]);
        if recorded_hash == desired_hash && covers(&live["spec"], &desired["spec"]) {
            TaskState::Current
        } else {
            TaskState::Modified
        }
    } else {
        // An older bundle's Task is replaced by the current one: that is
        // what managed means (its own drift cannot be told from the server's
        // defaults without the older bundle's text).
        TaskState::Outdated
    }
}

/// JSON pointer escaping of one key.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Whether `live` holds everything `desired` says, allowing fields the
/// server adds with empty or default values.
fn covers(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => {
            d.iter()
                .all(|(k, dv)| l.get(k).is_some_and(|lv| covers(lv, dv)) || is_empty(dv))
                && l.iter()
                    .all(|(k, lv)| d.contains_key(k) || is_empty(lv) || is_default(k, lv))
        }
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| covers(lv, dv))
        }
        (l, d) => l == d,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Tekton's defaulting: a param without a type is a string.
fn is_default(key: &str, v: &Value) -> bool {
    key == "type" && v == "string"
}

/// What happened to one object in an apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Unchanged,
    Updated,
    /// Drift left alone: the provider does not say `repair_drift`.
    Drifted,
    Failed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Unchanged => "unchanged",
            Self::Updated => "updated",
            Self::Drifted => "drifted",
            Self::Failed => "failed",
        }
    }
}

/// One object's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectResult {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// What the object was before.
    pub before: TaskState,
    pub action: Action,
    /// Why, for drift and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ObjectResult {
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} {}/{}: {} (was {})",
            self.kind,
            self.namespace,
            self.name,
            self.action.as_str(),
            self.before.as_str()
        );
        if let Some(detail) = &self.detail {
            line.push_str(": ");
            line.push_str(detail);
        }
        line
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Overwrite modified Tasks too.
    pub repair_drift: bool,
    /// Ask the server to validate only (`dryRun=All`); nothing changes.
    pub dry_run: bool,
}

fn tasks_api(client: &kube::Client, version: TektonVersion, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &tekton_resource(version, "Task", "tasks"),
    )
}

/// The live copies of the shipped Tasks in `namespace`, by name (one list).
pub async fn live_tasks(
    client: &kube::Client,
    version: TektonVersion,
    namespace: &str,
) -> Result<HashMap<String, Value>, TektonError> {
    let list = match tasks_api(client, version, namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list,
        // A namespace that does not exist yet holds no Tasks.
        Err(e) if is_not_found(&e) => return Ok(HashMap::new()),
        // An identity that may read Tasks one by one but not list them.
        Err(e) if status_code(&e) == Some(403) => {
            return get_each(client, version, namespace).await;
        }
        Err(e) => {
            return Err(TektonError::kube(
                format!("listing Tasks in namespace {namespace}"),
                e,
            ));
        }
    };
    let shipped: Vec<&str> = TASKS.iter().map(|(name, _)| *name).collect();
    Ok(list
        .items
        .into_iter()
        .filter_map(|task| {
            let name = task.metadata.name.clone()?;
            shipped
                .contains(&name.as_str())
                .then(|| Some((name, serde_json::to_value(task).ok()?)))?
        })
        .collect())
}

/// [`live_tasks`] with one GET per shipped Task.
async fn get_each(
    client: &kube::Client,
    version: TektonVersion,
    namespace: &str,
) -> Result<HashMap<String, Value>, TektonError> {
    let api = tasks_api(client, version, namespace);
    let mut live = HashMap::new();
    for (name, _) in TASKS {
        match api.get_opt(name).await {
            Ok(Some(task)) => {
                let task = serde_json::to_value(task)
                    .map_err(|e| TektonError::Build(format!("Task {name}: {e}")))?;
                live.insert(name.to_string(), task);
            }
            Ok(None) => {}
            Err(e) if status_code(&e) == Some(403) => {
                return Err(TektonError::Build(format!(
                    "reading the Tasks in namespace {namespace} is forbidden: {}",
                    describe_kube_error(&e)
                )));
            }
            Err(e) => {
                return Err(TektonError::kube(
                    format!("reading Task {namespace}/{name}"),
                    e,
                ));
            }
        }
    }
    Ok(live)
}

/// Classify every shipped Task in `namespace` (one list request).
pub async fn task_states(
    client: &kube::Client,
    version: TektonVersion,
    namespace: &str,
) -> Result<Vec<(String, TaskState)>, TektonError> {
    let live = live_tasks(client, version, namespace).await?;
    let desired = desired_tasks(version).map_err(TektonError::Build)?;
    Ok(desired
        .iter()
        .map(|task| {
            let name = task["metadata"]["name"].as_str().unwrap_or_default();
            (name.to_string(), classify(task, live.get(name)))
        })
        .collect())
}

/// Bring `namespace` to the current bundle: create missing Tasks, upgrade
/// outdated ones, leave current ones alone, and repair modified ones only
/// with `repair_drift`. Every shipped Task gets a result; a failed apply of
/// one does not stop the others. Errors only when the Tasks cannot be read.
pub async fn apply_bundle(
    client: &kube::Client,
    version: TektonVersion,
    namespace: &str,
    options: ApplyOptions,
) -> Result<Vec<ObjectResult>, TektonError> {
    let live = live_tasks(client, version, namespace).await?;
    let api = tasks_api(client, version, namespace);
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = options.dry_run;
    let mut results = Vec::new();
    for mut task in desired_tasks(version).map_err(TektonError::Build)? {
        let name = task["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let before = classify(&task, live.get(&name));
        let mut result = ObjectResult {
            kind: "Task".into(),
            namespace: namespace.to_string(),
            name: name.clone(),
            before,
            action: Action::Unchanged,
            detail: None,
        };
        let action = match before {
            TaskState::Current => None,
            TaskState::Missing => Some(Action::Created),
            TaskState::Outdated => Some(Action::Updated),
            TaskState::Modified if options.repair_drift => Some(Action::Updated),
            TaskState::Modified => {
                result.action = Action::Drifted;
                result.detail = Some(
                    "changed in the cluster since Image Factory applied it; left alone (set repair_drift, or run the installer, to restore it)"
                        .into(),
                );
                None
            }
        };
        if let Some(action) = action {
            task["metadata"]["namespace"] = Value::from(namespace);
            match api.patch(&name, &params, &Patch::Apply(&task)).await {
                Ok(_) => result.action = action,
                Err(e) => {
                    result.action = Action::Failed;
                    result.detail = Some(describe_kube_error(&e));
                }
            }
        }
        results.push(result);
    }
    Ok(results)
}

/// Make sure `namespace` has the current bundle before a managed build,
/// once per cluster (provider and config version), namespace and bundle
/// version: later builds cost no Task requests. Returns the lines to log
/// (nothing when cached or when every Task was already current). Drift left alone is reported, not fatal: the
/// build's preflight still checks the Tasks are there.
pub async fn ensure_bundle(
    cluster: &Cluster,
    version: TektonVersion,
    namespace: &str,
) -> Result<Vec<String>, TektonError> {
    let key = format!("{namespace}:{}", bundle_version());
    if cluster.bundle_ensured(&key) {
        return Ok(Vec::new());
    }
    let options = ApplyOptions {
        repair_drift: cluster.settings.repair_drift,
        dry_run: false,
    };
    let results = apply_bundle(&cluster.client, version, namespace, options).await?;
    if let Some(failed) = results.iter().find(|r| r.action == Action::Failed) {
        return Err(TektonError::Build(format!(
            "installing Image Factory's Tasks (bundle {}) failed: {}",
            bundle_version(),
            failed.line()
        )));
    }
    cluster.remember_bundle(key);
    // A namespace already current is not worth a line in every first build.
    if results.iter().all(|r| r.action == Action::Unchanged) {
        return Ok(Vec::new());
    }
    let mut lines = vec![format!(
        "Image Factory Task bundle {} in namespace {namespace}:",
        bundle_version()
    )];
    lines.extend(results.iter().map(ObjectResult::line));
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(name: &str) -> Value {
        desired_tasks(TektonVersion::V1)
            .unwrap()
            .into_iter()
            .find(|t| t["metadata"]["name"] == name)
            .unwrap()
    }

    #[test]
    fn version_is_twelve_hex_digits_and_labels_every_task() {
        let v = bundle_version();
        assert_eq!(v.len(), 12);
        assert!(v.bytes().all(|b| b.is_ascii_hexdigit()));
        for task in desired_tasks(TektonVersion::V1).unwrap() {
            assert_eq!(task["metadata"]["labels"][BUNDLE_LABEL], v);
            assert_eq!(
                task["metadata"]["annotations"][SPEC_HASH_ANNOTATION],
                spec_hash(&task["spec"])
            );
            assert_eq!(
                task["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "image-factory"
            );
        }
    }

    #[test]
    fn classify_tells_the_four_states_apart() {
        let task = desired("kaniko");
        assert_eq!(classify(&task, None), TaskState::Missing);
        assert_eq!(classify(&task, Some(&task)), TaskState::Current);

        // Defaults the server adds are not drift.
        let mut defaulted = task.clone();
        defaulted["spec"]["steps"][0]["computeResources"] = serde_json::json!({});
        assert_eq!(classify(&task, Some(&defaulted)), TaskState::Current);

        let mut edited = task.clone();
        edited["spec"]["steps"][0]["image"] = "evil.example/kaniko:1".into();
        assert_eq!(classify(&task, Some(&edited)), TaskState::Modified);
        let mut added = task.clone();
        added["spec"]["steps"][0]["securityContext"] = serde_json::json!({"privileged": true});
        assert_eq!(classify(&task, Some(&added)), TaskState::Modified);

        let mut foreign = task.clone();
        foreign["metadata"]["annotations"] = serde_json::json!({});
        assert_eq!(classify(&task, Some(&foreign)), TaskState::Modified);

        let mut old = task.clone();
        old["spec"]["description"] = "an older bundle".into();
        old["metadata"]["labels"][BUNDLE_LABEL] = "000000000000".into();
        old["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = spec_hash(&old["spec"]).into();
        assert_eq!(classify(&task, Some(&old)), TaskState::Outdated);
    }
}
