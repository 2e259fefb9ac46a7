//! Shared watches: one label-selected PipelineRun watch per namespace of a
//! cluster, fanned out to per-run subscribers. API calls per build stay
//! constant however long it runs; kube's watcher relists on 410 and
//! reconnects when a watch stalls (client-side idle timeout).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::watch;

use super::status::run_summary;
use super::submit::MANAGED_BY_SELECTOR;

/// What the watch last saw of one PipelineRun.
#[derive(Debug, Clone)]
pub enum RunState {
    /// Nothing seen yet.
    Unknown,
    Present(Arc<Value>),
    /// Seen deleted (a DELETED event).
    Deleted,
    /// Missing from a relist: deleted while the watch was down, or created
    /// after the list was taken. The follower confirms with a GET.
    Missing,
}

/// The shared watches of one cluster.
pub struct WatchHub {
    client: kube::Client,
    namespaces: Mutex<HashMap<(String, String), Arc<NamespaceWatch>>>,
}

struct NamespaceWatch {
    runs: Mutex<HashMap<String, watch::Sender<RunState>>>,
    /// The last watch error, cleared by the next event.
    error: watch::Sender<Option<WatchTrouble>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for NamespaceWatch {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

impl Drop for WatchHub {
    fn drop(&mut self) {
        for (_, ns) in self.namespaces.lock().unwrap().drain() {
            if let Some(task) = ns.task.lock().unwrap().take() {
                task.abort();
            }
        }
    }
}

/// A subscriber's view of one run.
pub struct RunWatch {
    pub state: watch::Receiver<RunState>,
    pub watch_error: watch::Receiver<Option<WatchTrouble>>,
}

/// Why the shared watch is failing (it keeps retrying with backoff).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchTrouble {
    pub message: String,
    /// HTTP status of the API's answer, when it answered.
    pub code: Option<u16>,
}

impl WatchTrouble {
    fn from_error(e: &watcher::Error) -> Self {
        let code = match e {
            watcher::Error::InitialListFailed(k)
            | watcher::Error::WatchStartFailed(k)
            | watcher::Error::WatchFailed(k) => super::error::status_code(k),
            watcher::Error::WatchError(status) => Some(status.code),
            watcher::Error::NoResourceVersion => None,
        };
        let message = match e {
            watcher::Error::InitialListFailed(k)
            | watcher::Error::WatchStartFailed(k)
            | watcher::Error::WatchFailed(k) => super::error::describe_kube_error(k),
            other => other.to_string(),
        };
        Self { message, code }
    }

    /// The provider's identity may not list/watch PipelineRuns: retrying
    /// will not help, the build cannot be followed.
    pub fn is_permanent(&self) -> bool {
        matches!(self.code, Some(401 | 403))
    }
}

impl WatchHub {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            namespaces: Mutex::new(HashMap::new()),
        }
    }

    /// Follow one PipelineRun. `current` seeds the state (the object as just
    /// created or read); it also replaces a `Missing` state once a read
    /// confirmed the run exists.
    ///
    /// The watch publishes only changes of runs someone follows, and drops
    /// the rest. So subscribe (with [`RunState::Unknown`]) *before* the
    /// create or GET whose answer seeds the state, and keep that [`RunWatch`]
    /// until the seeding call: a change between the answer and a later first
    /// subscription would be lost, and a run that ended in that window would
    /// never be seen to end.
    pub fn subscribe(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
        current: RunState,
    ) -> RunWatch {
        // Keep only what following needs (see `run_summary`).
        let current = match current {
            RunState::Present(run) => RunState::Present(Arc::new(run_summary(&run))),
            other => other,
        };
        let ns = self.namespace_watch(resource, namespace);
        let mut runs = ns.runs.lock().unwrap();
        let sender = runs
            .entry(name.to_string())
            .or_insert_with(|| watch::channel(RunState::Unknown).0);
        sender.send_if_modified(|state| {
            if matches!(state, RunState::Unknown | RunState::Missing)
                && !matches!(current, RunState::Unknown)
            {
                *state = current;
                true
            } else {
                false
            }
        });
        RunWatch {
            state: sender.subscribe(),
            watch_error: ns.error.subscribe(),
        }
    }

    /// Publish a run as read by a GET (a resync of a run whose watch has
    /// been silent), unless the watch already holds the same or a newer
    /// version of it. True if that changed what followers see (the watch had missed it or
    /// not delivered it yet).
    pub fn refresh(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
        read: Arc<Value>,
    ) -> bool {
        let ns = self.namespace_watch(resource, namespace);
        let runs = ns.runs.lock().unwrap();
        let Some(sender) = runs.get(name) else {
            return false;
        };
        sender.send_if_modified(|state| {
            let newer = match state {
                RunState::Unknown | RunState::Missing => true,
                RunState::Deleted => false,
                RunState::Present(seen) => is_newer(&read, seen),
            };
            if newer {
                *state = RunState::Present(Arc::new(run_summary(&read)));
            }
            newer
        })
    }

    fn namespace_watch(&self, resource: &ApiResource, namespace: &str) -> Arc<NamespaceWatch> {
        let key = (resource.api_version.clone(), namespace.to_string());
        let mut namespaces = self.namespaces.lock().unwrap();
        if let Some(ns) = namespaces.get(&key) {
            return ns.clone();
        }
        let ns = Arc::new(NamespaceWatch {
            runs: Mutex::new(HashMap::new()),
            error: watch::channel(None).0,
            task: Mutex::new(None),
        });
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, resource);
        let weak = Arc::downgrade(&ns);
        let task = tokio::spawn(async move {
            // Server-side timeout 120 s: a silently dead watch is noticed by
            // the watcher's idle timeout (timeout + 5 s) and re-established.
            let config = watcher::Config::default()
                .labels(MANAGED_BY_SELECTOR)
                .timeout(120);
            let mut events = watcher::watcher(api, config).default_backoff().boxed();
            let mut relisted: HashSet<String> = HashSet::new();
            while let Some(event) = events.next().await {
                let Some(ns) = weak.upgrade() else { return };
                match event {
                    Ok(event) => {
                        ns.error.send_if_modified(|e| e.take().is_some());
                        ns.apply(event, &mut relisted);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "PipelineRun watch error; retrying with backoff");
                        ns.error.send_replace(Some(WatchTrouble::from_error(&e)));
                    }
                }
            }
        });
        *ns.task.lock().unwrap() = Some(task);
        namespaces.insert(key, ns.clone());
        ns
    }
}

/// Whether `read` is a later version of the run than `seen`. Resource
/// versions are compared as numbers when both are (etcd revisions, kube-sim);
/// otherwise any different version counts as newer (at worst an older state
/// shows until the next event or resync).
fn is_newer(read: &Value, seen: &Value) -> bool {
    let rv = |v: &Value| {
        v.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match (rv(read), rv(seen)) {
        (Some(r), Some(s)) => match (r.parse::<u64>(), s.parse::<u64>()) {
            (Ok(r), Ok(s)) => r > s,
            _ => r != s,
        },
        (Some(_), None) => true,
        (None, _) => false,
    }
}

impl NamespaceWatch {
    fn apply(&self, event: Event<DynamicObject>, relisted: &mut HashSet<String>) {
        let mut runs = self.runs.lock().unwrap();
        // Forget runs nobody follows any more.
        runs.retain(|_, sender| sender.receiver_count() > 0);
        let publish = |runs: &HashMap<String, watch::Sender<RunState>>,
                       obj: DynamicObject,
                       state: fn(Arc<Value>) -> RunState| {
            let Some(name) = obj.metadata.name.clone() else {
                return;
            };
            if let Some(sender) = runs.get(&name) {
                let value = serde_json::to_value(&obj).unwrap_or(Value::Null);
                sender.send_replace(state(Arc::new(run_summary(&value))));
            }
        };
        match event {
            Event::Apply(obj) => publish(&runs, obj, RunState::Present),
            Event::Delete(obj) => publish(&runs, obj, |_| RunState::Deleted),
            Event::Init => relisted.clear(),
            Event::InitApply(obj) => {
                if let Some(name) = &obj.metadata.name {
                    relisted.insert(name.clone());
                }
                publish(&runs, obj, RunState::Present);
            }
            Event::InitDone => {
                // A followed run missing from a full relist was deleted while
                // the watch was down.
                for (name, sender) in runs.iter() {
                    if !relisted.contains(name) {
                        sender.send_if_modified(|s| {
                            if matches!(s, RunState::Present(_)) {
                                *s = RunState::Missing;
                                true
                            } else {
                                false
                            }
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::TektonVersion;
    use super::super::submit::pipelinerun_resource;
    use super::*;

    fn run(rv: &str, reason: &str) -> Value {
        json!({
            "metadata": {"name": "r", "resourceVersion": rv, "managedFields": [{"big": "x"}]},
            "status": {"conditions": [{"type": "Succeeded", "status": "Unknown", "reason": reason}]}
        })
    }

    fn reason(w: &RunWatch) -> String {
        match &*w.state.borrow() {
            RunState::Present(v) => v["status"]["conditions"][0]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            other => format!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_resync_read_replaces_only_an_older_state_and_is_kept_as_a_summary() {
        // Nothing listens there: the hub's watch just retries in the background.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let hub = WatchHub::new(kube::Client::try_from(config).unwrap());
        let resource = pipelinerun_resource(TektonVersion::V1);
        let w = hub.subscribe(
            &resource,
            "ns",
            "r",
            RunState::Present(Arc::new(run("5", "Running"))),
        );
        assert_eq!(reason(&w), "Running");
        assert!(!hub.refresh(&resource, "ns", "r", Arc::new(run("3", "Pending"))));
        assert!(!hub.refresh(&resource, "ns", "r", Arc::new(run("5", "Pending"))));
        assert_eq!(reason(&w), "Running");
        assert!(hub.refresh(&resource, "ns", "r", Arc::new(run("12", "Finishing"))));
        assert_eq!(reason(&w), "Finishing");
        // Stored as the summary (versions still comparable), not the whole object.
        assert!(!hub.refresh(&resource, "ns", "r", Arc::new(run("7", "Pending"))));
        match &*w.state.borrow() {
            RunState::Present(v) => assert!(v.pointer("/metadata/managedFields").is_none()),
            other => panic!("{other:?}"),
        };
    }
}
