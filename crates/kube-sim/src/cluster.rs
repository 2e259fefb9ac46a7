//! The seam between the simulated API server (storage, HTTP, watch) and the
//! simulated controllers (Tekton). Controllers see the cluster only through
//! [`Cluster`], so they can be unit-tested against a small in-memory double and
//! the server can change its storage without touching them.
//!
//! Objects are `serde_json::Value`s in their *storage* version (`tekton.dev/v1`
//! for Tekton kinds); conversion to other served versions happens at the HTTP
//! layer.

use serde_json::Value;

/// Group/version/plural of a resource, e.g. `("tekton.dev", "v1", "pipelineruns")`
/// or `("", "v1", "pods")` for the core group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Gvr {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
}

impl Gvr {
    pub const fn new(group: &'static str, version: &'static str, plural: &'static str) -> Self {
        Self {
            group,
            version,
            plural,
        }
    }
}

pub mod gvr {
    use super::Gvr;
    pub const NAMESPACES: Gvr = Gvr::new("", "v1", "namespaces");
    pub const PODS: Gvr = Gvr::new("", "v1", "pods");
    pub const SECRETS: Gvr = Gvr::new("", "v1", "secrets");
    pub const CONFIGMAPS: Gvr = Gvr::new("", "v1", "configmaps");
    pub const SERVICEACCOUNTS: Gvr = Gvr::new("", "v1", "serviceaccounts");
    pub const PVCS: Gvr = Gvr::new("", "v1", "persistentvolumeclaims");
    pub const EVENTS: Gvr = Gvr::new("", "v1", "events");
    pub const STORAGECLASSES: Gvr = Gvr::new("storage.k8s.io", "v1", "storageclasses");
    pub const TASKS: Gvr = Gvr::new("tekton.dev", "v1", "tasks");
    pub const PIPELINES: Gvr = Gvr::new("tekton.dev", "v1", "pipelines");
    pub const PIPELINERUNS: Gvr = Gvr::new("tekton.dev", "v1", "pipelineruns");
    pub const TASKRUNS: Gvr = Gvr::new("tekton.dev", "v1", "taskruns");
    /// Stored as v1beta1 (and served as v1alpha1), as Tekton's CRD declares it.
    pub const STEPACTIONS: Gvr = Gvr::new("tekton.dev", "v1beta1", "stepactions");
    pub const CRDS: Gvr = Gvr::new("apiextensions.k8s.io", "v1", "customresourcedefinitions");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// A change to any stored object, in commit order. The object is shared (the
/// broadcast clones the event once per subscriber; an `Arc` keeps that cheap).
#[derive(Clone, Debug)]
pub struct ClusterEvent {
    pub kind: EventKind,
    pub gvr: Gvr,
    pub object: std::sync::Arc<Value>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(String),
}

/// What a controller may do to the cluster. Writes behave like a privileged
/// in-cluster client: no auth, no fault injection, but the same bookkeeping
/// (uid, resourceVersion, generation, events to watchers) as API writes.
/// Writes return the stored object shared, not copied: most callers ignore it
/// or read a field, and copying every written object was a large share of the
/// controller's cost.
pub trait Cluster: Send + Sync + 'static {
    fn get(&self, gvr: &Gvr, namespace: Option<&str>, name: &str) -> Option<Value>;
    fn list(&self, gvr: &Gvr, namespace: Option<&str>) -> Vec<Value>;
    /// Create; the server fills uid, resourceVersion, creationTimestamp,
    /// generateName. Fails if it exists or its namespace does not.
    fn create(
        &self,
        gvr: &Gvr,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<std::sync::Arc<Value>, ClusterError>;
    /// Replace `.status` only (status-subresource semantics); bumps resourceVersion.
    fn update_status(
        &self,
        gvr: &Gvr,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<std::sync::Arc<Value>, ClusterError>;
    /// Replace the whole object except `.status` (metadata/spec); bumps resourceVersion.
    fn update(
        &self,
        gvr: &Gvr,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<std::sync::Arc<Value>, ClusterError>;
    /// Delete with background cascading to owner-referenced dependents.
    fn delete(&self, gvr: &Gvr, namespace: Option<&str>, name: &str) -> Result<(), ClusterError>;
    /// Every change from now on, in order.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ClusterEvent>;
    /// Append one line to a container's log (served by `pods/{name}/log`).
    fn append_pod_log(&self, namespace: &str, pod: &str, container: &str, line: &str);
}
