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

fn not_found(g: &Gvr, name: &str) -> ClusterError {
    ClusterError::NotFound(format!("{} \"{name}\"", plural_name(g)))
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

    /// Apply `change` to a stored object and store it under the next
    /// resourceVersion: every write to an existing object ends here.
    fn modify(
        &self,
        g: &Gvr,
        ns: Option<&str>,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Result<Arc<Value>, ClusterError> {
        let mut st = self.state.lock().expect("lock");
        st.rv += 1;
        let rv = st.rv;
        let obj = st
            .objects
            .get_mut(&Self::key(g, ns, name))
            .ok_or_else(|| not_found(g, name))?;
        change(obj);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let out = Arc::new(obj.clone());
        drop(st);
        self.emit(EventKind::Modified, *g, out.clone());
        Ok(out)
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
        self.modify(g, ns, name, |obj| obj["status"] = status)
    }

    fn update(
        &self,
        g: &Gvr,
        ns: Option<&str>,
        mut object: Value,
    ) -> Result<Arc<Value>, ClusterError> {
        let name = model::name(&object).to_string();
        self.modify(g, ns, &name, |obj| {
            // A main-resource write keeps the stored status and bookkeeping.
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
            *obj = object;
        })
    }

    fn delete(&self, g: &Gvr, ns: Option<&str>, name: &str) -> Result<(), ClusterError> {
        let removed = {
            let mut st = self.state.lock().expect("lock");
            st.objects
                .remove(&Self::key(g, ns, name))
                .ok_or_else(|| not_found(g, name))?
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rv(obj: &Value) -> u64 {
        model::str_at(obj, &["metadata", "resourceVersion"])
            .and_then(|v| v.parse().ok())
            .expect("a numeric resourceVersion")
    }

    #[test]
    fn writes_bump_the_resource_version_and_keep_status_and_spec_apart() {
        let c = MemCluster::new();
        c.add_namespace("ns");
        let g = gvr::PIPELINERUNS;
        let created = c
            .create(
                &g,
                Some("ns"),
                json!({"metadata": {"name": "r"}, "spec": {"x": 1}}),
            )
            .unwrap();
        let mut events = c.subscribe();

        let st = c
            .update_status(&g, Some("ns"), "r", json!({"phase": "Done"}))
            .unwrap();
        assert_eq!(st["status"], json!({"phase": "Done"}));
        assert_eq!(st["spec"], json!({"x": 1}));
        assert!(rv(&st) > rv(&created));

        let mut main = (*st).clone();
        main["spec"]["x"] = json!(2);
        main["status"] = json!({"phase": "Overwritten"});
        main["metadata"]["uid"] = json!("another");
        let m = c.update(&g, Some("ns"), main).unwrap();
        assert_eq!(
            m["status"],
            json!({"phase": "Done"}),
            "a main write keeps the status"
        );
        assert_eq!(m["spec"], json!({"x": 2}));
        assert_eq!(m["metadata"]["uid"], created["metadata"]["uid"]);
        assert_eq!(m["metadata"]["generation"], 2, "the spec changed");
        assert!(rv(&m) > rv(&st));
        assert_eq!(c.get(&g, Some("ns"), "r").as_ref(), Some(&*m));

        for written in [st, m] {
            let ev = events.try_recv().expect("an event per write");
            assert_eq!((ev.kind, ev.object), (EventKind::Modified, written));
        }
        assert_eq!(
            c.update_status(&g, Some("ns"), "nope", json!({})),
            Err(ClusterError::NotFound(
                "pipelineruns.tekton.dev \"nope\"".into()
            ))
        );
    }
}
