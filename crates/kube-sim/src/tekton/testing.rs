//! A minimal in-memory [`Cluster`] for testing controllers without the API server.
//! It keeps the bookkeeping controllers rely on (uid, resourceVersion, generateName,
//! namespaces, status-only writes, cascading delete, events, logs) and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::model;
use crate::cluster::{Cluster, ClusterError, ClusterEvent, EventKind, Gvr, gvr};

type Key = (Gvr, String, String);

pub struct MemCluster {
    state: Mutex<State>,
    events: broadcast::Sender<ClusterEvent>,
}

#[derive(Default)]
struct State {
    objects: HashMap<Key, Value>,
    logs: HashMap<(String, String, String), Vec<String>>,
    rv: u64,
    names: u64,
}

fn cluster_scoped(g: &Gvr) -> bool {
    *g == gvr::NAMESPACES || *g == gvr::STORAGECLASSES || *g == gvr::CRDS
}

fn plural_name(g: &Gvr) -> String {
    if g.group.is_empty() {
        g.plural.to_string()
    } else {
        format!("{}.{}", g.plural, g.group)
    }
}

impl Default for MemCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl MemCluster {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1 << 16);
        MemCluster {
            state: Mutex::new(State::default()),
            events,
        }
    }

    /// Create a namespace (tests call this before creating objects in it).
    pub fn add_namespace(&self, ns: &str) {
        let _ = self.create(
            &gvr::NAMESPACES,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        );
    }

    /// Every line appended to a container's log.
    pub fn logs(&self, ns: &str, pod: &str, container: &str) -> Vec<String> {
        let st = self.state.lock().expect("lock");
        st.logs
            .get(&(ns.to_string(), pod.to_string(), container.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    fn emit(&self, kind: EventKind, gvr: Gvr, object: Arc<Value>) {
        let _ = self.events.send(ClusterEvent { kind, gvr, object });
    }

    fn key(g: &Gvr, ns: Option<&str>, name: &str) -> Key {
        (
            *g,
            if cluster_scoped(g) {
                String::new()
            } else {
                ns.unwrap_or("default").to_string()
            },
            name.to_string(),
        )
    }
}

impl Cluster for MemCluster {
    fn get(&self, g: &Gvr, ns: Option<&str>, name: &str) -> Option<Value> {
        self.state
            .lock()
            .expect("lock")
            .objects
            .get(&Self::key(g, ns, name))
            .cloned()
    }

    fn list(&self, g: &Gvr, ns: Option<&str>) -> Vec<Value> {
        let st = self.state.lock().expect("lock");
        st.objects
            .iter()
            .filter(|((kg, kns, _), _)| kg == g && ns.is_none_or(|n| cluster_scoped(g) || n == kns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn create(
        &self,
        g: &Gvr,
        ns: Option<&str>,
        mut object: Value,
    ) -> Result<Arc<Value>, ClusterError> {
        let mut st = self.state.lock().expect("lock");
        let ns_name = if cluster_scoped(g) {
            None
        } else {
            Some(ns.unwrap_or("default").to_string())
        };
        if let Some(n) = &ns_name
            && !st
                .objects
                .contains_key(&(gvr::NAMESPACES, String::new(), n.clone()))
        {
            return Err(ClusterError::NotFound(format!("namespaces \"{n}\"")));
        }
        let mut name = model::name(&object).to_string();
        if name.is_empty() {
            let prefix = model::str_at(&object, &["metadata", "generateName"])
                .unwrap_or("")
                .to_string();
            if prefix.is_empty() {
                return Err(ClusterError::Invalid(
                    "metadata.name: Required value: name or generateName is required".into(),
                ));
            }
            st.names += 1;
            let suffix: String = format!("{:05x}", (st.names * 7919) % 0xfffff)
                .chars()
                .map(|c| {
                    if c.is_ascii_digit() {
                        (b'a' + c as u8 - b'0') as char
                    } else {
                        c
                    }
                })
                .collect();
            name = format!("{prefix}{suffix}");
        }
        let key = Self::key(g, ns, &name);
        if st.objects.contains_key(&key) {
            return Err(ClusterError::AlreadyExists(format!(
                "{} \"{name}\"",
                plural_name(g)
            )));
        }
        st.rv += 1;
        let meta = model::obj_mut(&mut object, "metadata");
        meta.insert("name".into(), json!(name));
        if let Some(n) = &ns_name {
            meta.insert("namespace".into(), json!(n));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("resourceVersion".into(), json!(st.rv.to_string()));
        meta.insert("generation".into(), json!(1));
        meta.insert("creationTimestamp".into(), json!(model::now()));
        st.objects.insert(key, object.clone());
        drop(st);
        let object = Arc::new(object);
        self.emit(EventKind::Added, *g, object.clone());
        Ok(object)
    }

    fn update_status(
        &self,
        g: &Gvr,
        ns: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Arc<Value>, ClusterError> {
        let mut st = self.state.lock().expect("lock");
        st.rv += 1;
        let rv = st.rv;
        let obj = st
            .objects
            .get_mut(&Self::key(g, ns, name))
            .ok_or_else(|| ClusterError::NotFound(format!("{} \"{name}\"", plural_name(g))))?;
        obj["status"] = status;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let out = Arc::new(obj.clone());
        drop(st);
        self.emit(EventKind::Modified, *g, out.clone());
        Ok(out)
    }

    fn update(
        &self,
        g: &Gvr,
        ns: Option<&str>,
        mut object: Value,
    ) -> Result<Arc<Value>, ClusterError> {
        let mut st = self.state.lock().expect("lock");
        st.rv += 1;
        let rv = st.rv;
        let name = model::name(&object).to_string();
        let obj = st
            .objects
            .get_mut(&Self::key(g, ns, &name))
            .ok_or_else(|| ClusterError::NotFound(format!("{} \"{name}\"", plural_name(g))))?;
        if let Some(s) = obj.get("status") {
            object["status"] = s.clone();
        } else if let Some(o) = object.as_object_mut() {
            o.remove("status");
        }
        for k in ["uid", "creationTimestamp", "namespace"] {
            object["metadata"][k] = obj["metadata"][k].clone();
        }
        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1)
            + i64::from(obj.get("spec") != object.get("spec"));
        object["metadata"]["generation"] = json!(generation);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        *obj = object.clone();
        drop(st);
        let object = Arc::new(object);
        self.emit(EventKind::Modified, *g, object.clone());
        Ok(object)
    }

    fn delete(&self, g: &Gvr, ns: Option<&str>, name: &str) -> Result<(), ClusterError> {
        let removed = {
            let mut st = self.state.lock().expect("lock");
            st.objects
                .remove(&Self::key(g, ns, name))
                .ok_or_else(|| ClusterError::NotFound(format!("{} \"{name}\"", plural_name(g))))?
        };
        self.emit(EventKind::Deleted, *g, Arc::new(removed.clone()));
        // Background cascading deletion of owned objects.
        let uid = model::uid(&removed).to_string();
        let dependents: Vec<(Gvr, String, String)> = {
            let st = self.state.lock().expect("lock");
            st.objects
                .iter()
                .filter(|(_, v)| {
                    model::arr(v, &["metadata", "ownerReferences"])
                        .iter()
                        .any(|o| model::str_at(o, &["uid"]) == Some(&uid))
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        for (dg, dns, dname) in dependents {
            let _ = self.delete(&dg, Some(&dns), &dname);
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    fn append_pod_log(&self, ns: &str, pod: &str, container: &str, line: &str) {
        let mut st = self.state.lock().expect("lock");
        st.logs
            .entry((ns.to_string(), pod.to_string(), container.to_string()))
            .or_default()
            .push(line.to_string());
    }
}
