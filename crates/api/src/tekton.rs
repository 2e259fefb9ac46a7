//! The seam through which the admin API installs and checks Image Factory's
//! Tekton Tasks on a provider's cluster. The API never talks to Kubernetes:
//! the binary fills [`AppState::tekton_ops`] with the Tekton executor's
//! installer and readiness code.
//!
//! [`AppState::tekton_ops`]: crate::AppState::tekton_ops

use futures::future::BoxFuture;
use serde_json::Value;

use crate::connection::ConnectionTarget;

pub trait TektonOps: Send + Sync {
    /// Install the Task bundle; `Ok` is the per-namespace reports as JSON
    /// (`[{namespace, bundle_version, dry_run, objects: [{kind, namespace,
    /// name, before, action, detail}]}]`), `Err` what stopped it.
    fn install(
        &self,
        target: ConnectionTarget,
        namespace: Option<String>,
        dry_run: bool,
    ) -> BoxFuture<'static, Result<Value, String>>;

    /// The readiness report as JSON.
    fn status(
        &self,
        target: ConnectionTarget,
        namespace: Option<String>,
    ) -> BoxFuture<'static, Result<Value, String>>;
}
