//! PipelineRun rendering: an explicit [`RenderContext`] goes through a
//! minijinja template per build method. Every `{{ value }}` is emitted as a
//! quoted YAML scalar (or a flow sequence/mapping of quoted scalars), so no
//! user value can add, remove or reshape YAML structure; user values reach the
//! run as Tekton `params`. Undefined values are errors naming them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use imagefactory_domain::BuildMethod;
use imagefactory_domain::task_bundle::BuilderImages;
use minijinja::value::ValueKind;
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Value, json};

/// The templates shipped with Image Factory.
const EMBEDDED: [(BuildMethod, &str); 4] = [
    (
        BuildMethod::Docker,
        include_str!("../../../../tekton/templates/docker.yaml"),
    ),
    (
        BuildMethod::Buildx,
        include_str!("../../../../tekton/templates/buildx.yaml"),
    ),
    (
        BuildMethod::Kaniko,
        include_str!("../../../../tekton/templates/kaniko.yaml"),
    ),
    (
        BuildMethod::Packer,
        include_str!("../../../../tekton/templates/packer.yaml"),
    ),
];

/// The Task a method's `build` step runs.
pub fn build_task_name(method: BuildMethod) -> &'static str {
    match method {
        BuildMethod::Docker => "docker-build",
        BuildMethod::Buildx => "buildx",
        BuildMethod::Kaniko => "kaniko",
        BuildMethod::Packer => "packer",
    }
}

/// Everything a template may use. Optional settings carry their defaults
/// here, so templates never meet a missing value by design.
#[derive(Debug, Clone, Serialize)]
pub struct RenderContext {
    pub build: BuildValues,
    pub tenant: TenantValues,
    pub provider: ProviderValues,
    pub source: SourceValues,
    /// `docker`, `buildx`, `kaniko` or `packer`.
    pub method: String,
    pub config: MethodValues,
    /// Destination image reference.
    pub image: String,
    /// Secret bound as the `dockerconfig` workspace.
    pub registry_secret: String,
    /// `taskRef` objects for the `clone` and `build` tasks.
    pub tasks: TaskRefs,
    /// Labels of the PipelineRun.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildValues {
    pub id: String,
    pub execution_id: String,
    pub attempt: String,
    /// PipelineRun name, `if-<build8>-<attempt>`.
    pub run_name: String,
    /// Go duration for `spec.timeouts.pipeline`, e.g. `1h0m0s`.
    pub timeout: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantValues {
    pub id: String,
    pub namespace: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderValues {
    pub id: String,
    pub name: String,
    pub service_account: String,
    /// Empty: the cluster's default StorageClass.
    pub storage_class: String,
    pub workspace_size: String,
    /// `"true"` or `"false"`: the build Task's `TLS_VERIFY` param.
    pub registry_tls_verify: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceValues {
    pub url: String,
    /// The branch, tag or commit the user asked for.
    pub revision: String,
    /// Secret for the git-clone `basic-auth` workspace; empty when none.
    pub basic_auth_secret: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MethodValues {
    pub dockerfile: String,
    pub context: String,
    /// `KEY=value` items.
    pub build_args: Vec<String>,
    pub platforms: Vec<String>,
    pub target: String,
    /// `"true"` or `"false"` (Tekton params are strings).
    pub cache: String,
    pub cache_repo: String,
    /// `key=value` items.
    pub labels: Vec<String>,
    pub packer_template: String,
    /// `key=value` items.
    pub packer_vars: Vec<String>,
    /// `metadata.registry_repo` (kaniko), empty when unset.
    pub registry_repo: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskRefs {
    pub clone: Value,
    pub build: Value,
    /// The provider's builder image override for the clone / build Task
    /// (`builder_images`); empty keeps the Task's pinned default, and the
    /// templates then pass no `BUILDER_IMAGE` param.
    pub clone_image: String,
    pub build_image: String,
}

impl TaskRefs {
    /// Namespaced Tasks, or the cluster resolver when Tasks live elsewhere.
    pub fn new(method: BuildMethod, tasks_namespace: Option<&str>) -> Self {
        let task_ref = |name: &str| match tasks_namespace {
            None => json!({ "kind": "Task", "name": name }),
            Some(ns) => json!({
                "resolver": "cluster",
                "params": [
                    { "name": "kind", "value": "task" },
                    { "name": "name", "value": name },
                    { "name": "namespace", "value": ns },
                ]
            }),
        };
        Self {
            clone: task_ref("git-clone"),
            build: task_ref(build_task_name(method)),
            clone_image: String::new(),
            build_image: String::new(),
        }
    }

    /// With the provider's builder image overrides for these Tasks.
    pub fn with_images(mut self, method: BuildMethod, images: &BuilderImages) -> Self {
        let image = |task: &str| {
            images
                .for_task(task)
                .map(ToString::to_string)
                .unwrap_or_default()
        };
        self.clone_image = image("git-clone");
        self.build_image = image(build_task_name(method));
        self
    }
}

/// Go's duration format, which `spec.timeouts` expects.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    format!("{}h{}m{}s", secs / 3600, (secs % 3600) / 60, secs % 60)
}

pub fn key_values(map: &BTreeMap<String, String>) -> Vec<String> {
    map.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("PipelineRun template {template}: {message}")]
    Template { template: String, message: String },
}

/// The PipelineRun templates, one per method: embedded, or overridden by
/// `<dir>/<method>.yaml` files.
#[derive(Debug, Clone)]
pub struct Templates {
    sources: HashMap<BuildMethod, (String, String)>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::embedded()
    }
}

impl Templates {
    pub fn embedded() -> Self {
        Self {
            sources: EMBEDDED
                .iter()
                .map(|(m, text)| (*m, (format!("embedded {m}.yaml"), text.to_string())))
                .collect(),
        }
    }

    /// Embedded templates, with any `<method>.yaml` in `dir` taking precedence.
    pub fn with_overrides(dir: &Path) -> Result<Self, String> {
        let mut templates = Self::embedded();
        for method in BuildMethod::ALL {
            let path = dir.join(format!("{method}.yaml"));
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    templates
                        .sources
                        .insert(*method, (path.display().to_string(), text));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("reading template {} failed: {e}", path.display())),
            }
        }
        Ok(templates)
    }

    /// Render the method's template and parse it; not yet validated.
    pub fn render(&self, method: BuildMethod, ctx: &RenderContext) -> Result<Value, RenderError> {
        let (name, source) = &self.sources[&method];
        let err = |message: String| RenderError::Template {
            template: name.clone(),
            message,
        };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_formatter(|out, _state, value| {
            let json = serde_json::to_value(value).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
            })?;
            if value.kind() == ValueKind::Undefined {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::UndefinedError,
                    "undefined value",
                ));
            }
            out.write_str(&yaml_flow(&json)).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
            })
        });
        let template = env
            .template_from_named_str(name, source)
            .map_err(|e| err(format!("does not parse: {e}")))?;
        let values = serde_json::to_value(ctx).expect("the render context serializes");
        // Name the missing value instead of minijinja's bare "undefined value".
        let mut undeclared: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        undeclared.sort();
        for path in undeclared {
            if lookup(&values, &path).is_none() && !is_builtin(&path) {
                return Err(err(format!("uses undefined value `{path}`")));
            }
        }
        let text = template
            .render(&values)
            .map_err(|e| err(format!("rendering failed: {e:#}")))?;
        let parsed: Value = serde_saphyr::from_str(&text)
            .map_err(|e| err(format!("did not render to valid YAML: {e}")))?;
        Ok(parsed)
    }
}

fn is_builtin(path: &str) -> bool {
    let head = path.split('.').next().unwrap_or(path);
    matches!(head, "range" | "dict" | "namespace" | "loop" | "debug")
}

fn lookup<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(values, |v, key| v.get(key))
}

/// A value as YAML flow text that parses back to exactly that value: strings
/// double-quoted with every non-printable or non-ASCII character escaped.
pub fn yaml_flow(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_quote(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(yaml_flow).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", yaml_quote(k), yaml_flow(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

pub fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFF => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Param values the run carries, by name: what the injection tests compare.
pub fn run_params(run: &Value) -> BTreeMap<String, Value> {
    run.pointer("/spec/params")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.get("name")?.as_str()?.to_string(),
                p.get("value")?.clone(),
            ))
        })
        .collect()
}
