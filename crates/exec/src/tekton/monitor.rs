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
    /// created or read), so a run the shared watch saw before we subscribed is
    /// not missed; it also replaces a `Missing` state once a read confirmed
    /// the run exists.
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
