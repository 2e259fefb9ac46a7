//! In-memory object storage with the API machinery's bookkeeping: uid,
//! resourceVersion (one global counter), generation, generateName, finalizers,
//! ownerReference cascading, a bounded per-resource event history for watch
//! resumption, and pod logs. One lock guards everything so every write gets a
//! unique, ordered resourceVersion; per-resource broadcast channels fan events
//! out to watchers without per-object tasks.

use crate::cluster::{Cluster, ClusterError, ClusterEvent, EventKind, Gvr, gvr};
use crate::status::ApiError;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, broadcast};

/// One change, as watchers receive it. `old` lets a filtered watch turn a
/// change that leaves its selector into DELETED.
#[derive(Debug)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub rv: u64,
    pub object: Arc<Value>,
    pub old: Option<Arc<Value>>,
    /// The object serialized once for all storage-version watchers (fan-out to
    /// thousands of watches must not serialize thousands of times).
    pub json: std::sync::OnceLock<bytes::Bytes>,
}

impl WatchEvent {
    pub fn new(kind: EventKind, rv: u64, object: Arc<Value>, old: Option<Arc<Value>>) -> Self {
        Self {
            kind,
            rv,
            object,
            old,
            json: std::sync::OnceLock::new(),
        }
    }

    pub fn object_json(&self) -> &bytes::Bytes {
        self.json.get_or_init(|| {
            serde_json::to_vec(&*self.object)
                .expect("JSON serializes")
                .into()
        })
    }
}

/// How a resource behaves in storage (a subset of `ResourceInfo`).
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    pub gvr: Gvr,
    pub kind: &'static str,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub custom: bool,
}

/// How `g` (any served version) is stored, from the resource table.
pub fn storage_kind(g: &Gvr) -> Option<Kind> {
    crate::resources::find(g.group, g.plural).map(|r| Kind {
        gvr: r.storage,
        kind: r.kind,
        namespaced: r.namespaced,
        status_subresource: r.status_subresource,
        custom: r.custom,
    })
}

/// Every stored group/version/plural, in the resource table's order.
pub const ALL_STORAGE: &[Gvr] = &{
    let resources = crate::resources::RESOURCES;
    let mut out = [gvr::NAMESPACES; crate::resources::RESOURCES.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = resources[i].storage;
        i += 1;
    }
    out
};

/// The namespace a new object goes to: the request's, else the body's; the
/// two must agree. Cluster-scoped objects have none.
fn create_namespace(k: &Kind, ns: Option<&str>, obj: &Value) -> Result<Option<String>, ApiError> {
    if !k.namespaced {
        return Ok(None);
    }
    let ns = ns
        .or_else(|| meta_str(obj, "namespace"))
        .map(str::to_string);
    if let Some(body_ns) = meta_str(obj, "namespace")
        && Some(body_ns) != ns.as_deref()
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(ns)
}

/// The server-set fields of a new object: type, name, namespace, uid,
/// resourceVersion, creation time, generation and create-time defaults.
fn stamp_created(k: &Kind, obj: &mut Value, name: &str, ns: Option<&str>, rv: u64, writer: Writer) {
    obj["apiVersion"] = json!(kind_api_version(k));
    obj["kind"] = json!(k.kind);
    if writer == Writer::Api
        && k.status_subresource
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    let meta = obj["metadata"].as_object_mut().expect("metadata object");
    meta.insert("name".into(), json!(name));
    match ns {
        Some(ns) => meta.insert("namespace".into(), json!(ns)),
        None => meta.remove("namespace"),
    };
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    if k.status_subresource || k.custom {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    apply_create_defaults(k, obj);
}

/// An update's `resourceVersion` must match the stored one; custom
/// resources written through the API must carry one.
fn check_update_precondition(
    k: &Kind,
    name: &str,
    obj: &Value,
    old: &Value,
    writer: Writer,
) -> Result<(), ApiError> {
    let old_rv = meta_str(old, "resourceVersion").unwrap_or("0");
    match meta_str(obj, "resourceVersion") {
        Some(rv) if !rv.is_empty() && rv != old_rv => {
            Err(ApiError::conflict(k.gvr.group, k.gvr.plural, name))
        }
        Some(rv) if !rv.is_empty() => Ok(()),
        _ if writer == Writer::Api && k.custom => Err(ApiError::invalid(
            k.kind,
            k.gvr.group,
            name,
            "metadata.resourceVersion",
            "Invalid value: 0: must be specified for an update",
        )),
        _ => Ok(()),
    }
}

/// A status write: everything but the status from the stored object (not
/// copying its old status), and the status as given (moved, not copied).
/// `None` when the status is unchanged.
fn status_write(mut obj: Value, old: &Value) -> Option<Value> {
    let given = obj.as_object_mut().and_then(|m| m.remove("status"));
    if old.is_object() && given.as_ref() == old.get("status") {
        return None;
    }
    let mut n: serde_json::Map<String, Value> = old
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "status")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(s) = given {
        n.insert("status".into(), s);
    }
    Some(Value::Object(n))
}

/// A write of the main resource: the status stays the stored one where a
/// status subresource owns it, server-owned metadata cannot change, and a
/// spec change bumps the generation.
fn main_write(k: &Kind, mut obj: Value, old: &Value, writer: Writer) -> Value {
    if k.status_subresource && writer == Writer::Api || writer == Writer::Controller {
        match old.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    let om = &old["metadata"];
    let meta = obj["metadata"].as_object_mut().expect("metadata object");
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        match om.get(f) {
            Some(v) => meta.insert(f.into(), v.clone()),
            None => meta.remove(f),
        };
    }
    obj["apiVersion"] = json!(kind_api_version(k));
    obj["kind"] = json!(k.kind);
    if (k.status_subresource || k.custom) && !same_spec(&obj, old) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        obj["metadata"]["generation"] = json!(g + 1);
    }
    obj
}

type Key = (String, String);

const FOREGROUND: &str = "foregroundDeletion";

struct Table {
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Arc<WatchEvent>>,
    /// Highest resourceVersion dropped from `history`: resuming at or below it is 410.
    compacted: u64,
    tx: broadcast::Sender<Arc<WatchEvent>>,
}

#[derive(Clone, Debug)]
pub struct LogLine {
    pub time: DateTime<Utc>,
    pub text: String,
}

struct State {
    rv: u64,
    tables: HashMap<Gvr, Table>,
    logs: HashMap<(String, String, String), Vec<LogLine>>,
    /// owner uid → dependents, so cascading deletion does not scan every object.
    owners: HashMap<String, std::collections::HashSet<(Gvr, Key)>>,
    /// Events just dropped from a history: the writes that produce most of them free
    /// them (often the last copy of an old object version) after unlocking.
    retired: Vec<Arc<WatchEvent>>,
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The table key of an object addressed by namespace and name; cluster-scoped
/// kinds ignore the namespace.
fn object_key(k: &Kind, ns: Option<&str>, name: &str) -> Key {
    let ns = if k.namespaced { ns.unwrap_or("") } else { "" };
    (ns.to_string(), name.to_string())
}

fn key_of(k: &Kind, obj: &Value) -> Key {
    let ns = if k.namespaced {
        meta_str(obj, "namespace").unwrap_or("")
    } else {
        ""
    };
    (
        ns.to_string(),
        meta_str(obj, "name").unwrap_or("").to_string(),
    )
}

/// Who performs a write: API clients get status/spec separation and
/// validation; the in-cluster controller writes what it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    Api,
    Controller,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

pub enum DeleteOutcome {
    /// Removed; the last state of the object.
    Gone(Value),
    /// Finalizers pending; the object now carries a deletionTimestamp.
    Pending(Value),
}

pub struct ListResult {
    pub items: Vec<Value>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

pub struct Store {
    state: Mutex<State>,
    global: broadcast::Sender<ClusterEvent>,
    /// Per pod (namespace, name): woken when a line is appended to one of
    /// its containers' logs or the pod changes, so a follow stream wakes for
    /// its own pod only (a global wake-up made every open stream re-read its
    /// pod on every line anywhere: thousands of streams, quadratic work).
    log_waiters: Mutex<HashMap<(String, String), Arc<Notify>>>,
    history_limit: usize,
}

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Whether finalizers still hold the object.
fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// A v4 UUID from the thread-local RNG (no syscall per object).
fn new_uid() -> String {
    uuid::Builder::from_random_bytes(rand::rng().random())
        .into_uuid()
        .to_string()
}

fn random_suffix() -> String {
    // The alphabet the API server's name generator uses (no vowels, no confusables).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Top-level fields that are not the spec: what `generation` does not track.
const NOT_SPEC: [&str; 4] = ["metadata", "status", "apiVersion", "kind"];

/// Whether everything but metadata and status (what `generation` tracks) is the same
/// in `a` and `b`; compared in place, without copying either object.
fn same_spec(a: &Value, b: &Value) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            let spec = |(k, _): &(&String, &Value)| !NOT_SPEC.contains(&k.as_str());
            a.iter().filter(spec).eq(b.iter().filter(spec))
        }
        _ => a == b,
    }
}

/// Metadata fields a write may change without changing the object.
const VOLATILE_META: [&str; 2] = ["resourceVersion", "managedFields"];

/// Whether `a` and `b` are the same object apart from `metadata.resourceVersion` and
/// `metadata.managedFields` (a no-op write); compared in place, without copying.
fn same_but_volatile_meta(a: &Value, b: &Value) -> bool {
    let (Some(ao), Some(bo)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    if ao.len() != bo.len() {
        return false;
    }
    ao.iter().zip(bo.iter()).all(|((ka, va), (kb, vb))| {
        ka == kb
            && match (ka.as_str(), va.as_object(), vb.as_object()) {
                ("metadata", Some(ma), Some(mb)) => ma
                    .iter()
                    .filter(|(k, _)| !VOLATILE_META.contains(&k.as_str()))
                    .eq(mb
                        .iter()
                        .filter(|(k, _)| !VOLATILE_META.contains(&k.as_str()))),
                _ => va == vb,
            }
    })
}

fn kind_api_version(k: &Kind) -> String {
    if k.gvr.group.is_empty() {
        k.gvr.version.to_string()
    } else {
        format!("{}/{}", k.gvr.group, k.gvr.version)
    }
}

fn to_cluster_error(e: ApiError) -> ClusterError {
    match e.reason {
        "NotFound" => ClusterError::NotFound(e.message),
        "AlreadyExists" => ClusterError::AlreadyExists(e.message),
        _ => ClusterError::Invalid(e.message),
    }
}

impl Store {
    pub fn new(history_limit: usize) -> Arc<Self> {
        let mut tables = HashMap::new();
        for g in ALL_STORAGE {
            tables.insert(
                *g,
                Table {
                    objects: BTreeMap::new(),
                    history: VecDeque::new(),
                    compacted: 0,
                    tx: broadcast::channel(4096).0,
                },
            );
        }
        Arc::new(Self {
            state: Mutex::new(State {
                rv: 1,
                tables,
                logs: HashMap::new(),
                owners: HashMap::new(),
                retired: Vec::new(),
            }),
            global: broadcast::channel(65536).0,
            log_waiters: Mutex::new(HashMap::new()),
            history_limit: history_limit.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    fn emit(
        &self,
        st: &mut State,
        k: &Kind,
        kind: EventKind,
        object: Arc<Value>,
        old: Option<Arc<Value>>,
    ) {
        let rv = st.rv;
        // Keep the owner index in step with every change (most updates keep their
        // ownerReferences: nothing to do then).
        let same_owners = kind == EventKind::Modified
            && old.as_ref().is_some_and(|o| {
                o.get("metadata").and_then(|m| m.get("ownerReferences"))
                    == object
                        .get("metadata")
                        .and_then(|m| m.get("ownerReferences"))
            });
        if !same_owners {
            Self::index_owners(st, k, kind, &object, old.as_deref());
        }
        let table = st.tables.get_mut(&k.gvr).expect("table exists");
        let ev = Arc::new(WatchEvent::new(kind, rv, object.clone(), old));
        table.history.push_back(ev.clone());
        while table.history.len() > self.history_limit {
            if let Some(dropped) = table.history.pop_front() {
                table.compacted = dropped.rv;
                st.retired.push(dropped);
            }
        }
        let _ = table.tx.send(ev);
        if self.global.receiver_count() > 0 {
            let _ = self.global.send(ClusterEvent {
                kind,
                gvr: k.gvr,
                object: object.clone(),
            });
        }
    }

    /// Move an object's entries in the owner index from its old to its new ownerReferences.
    fn index_owners(
        st: &mut State,
        k: &Kind,
        kind: EventKind,
        object: &Value,
        old: Option<&Value>,
    ) {
        let key = key_of(k, object);
        if let Some(o) = old {
            for uid in owner_uids(o) {
                if let Some(set) = st.owners.get_mut(&uid) {
                    set.remove(&(k.gvr, key.clone()));
                    if set.is_empty() {
                        st.owners.remove(&uid);
                    }
                }
            }
        }
        if kind != EventKind::Deleted {
            for uid in owner_uids(object) {
                st.owners
                    .entry(uid)
                    .or_default()
                    .insert((k.gvr, key.clone()));
            }
        }
    }

    fn next_rv(st: &mut State) -> u64 {
        st.rv += 1;
        st.rv
    }

    /// Put `obj` in its table under `key` and tell the watchers: `Added`
    /// without an `old` version, `Modified` with one.
    fn put_locked(
        &self,
        st: &mut State,
        k: &Kind,
        key: Key,
        obj: Arc<Value>,
        old: Option<Arc<Value>>,
    ) {
        st.tables
            .get_mut(&k.gvr)
            .expect("table")
            .objects
            .insert(key, obj.clone());
        let kind = if old.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.emit(st, k, kind, obj, old);
    }

    /// Store `new` as the next version of `old` (same key) under a fresh
    /// resourceVersion: every modification of a stored object ends here.
    fn replace_locked(
        &self,
        st: &mut State,
        k: &Kind,
        key: Key,
        mut new: Value,
        old: Arc<Value>,
    ) -> Arc<Value> {
        let rv = Self::next_rv(st);
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let arc = Arc::new(new);
        self.put_locked(st, k, key, arc.clone(), Some(old));
        arc
    }

    /// The objects whose ownerReferences name `uid`.
    fn dependents_locked(st: &State, uid: &str) -> Vec<(Gvr, Key)> {
        st.owners
            .get(uid)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// What a delete left: the object still there (held by finalizers), or
    /// `old`, the last state of the one removed.
    fn outcome_locked(
        st: &State,
        k: &Kind,
        ns: Option<&str>,
        name: &str,
        old: &Value,
    ) -> DeleteOutcome {
        match Self::get_locked(st, k, ns, name) {
            Some(o) => DeleteOutcome::Pending((*o).clone()),
            None => DeleteOutcome::Gone(old.clone()),
        }
    }

    fn get_locked(st: &State, k: &Kind, ns: Option<&str>, name: &str) -> Option<Arc<Value>> {
        let key = object_key(k, ns, name);
        st.tables.get(&k.gvr)?.objects.get(&key).cloned()
    }

    pub fn get(&self, k: &Kind, ns: Option<&str>, name: &str) -> Option<Value> {
        Self::get_locked(&self.lock(), k, ns, name).map(|a| (*a).clone())
    }

    /// A list in key order after `start_after`, filtered by `filter`, at most `limit` items.
    pub fn list(
        &self,
        k: &Kind,
        ns: Option<&str>,
        filter: &dyn Fn(&Value) -> bool,
        limit: Option<usize>,
        start_after: Option<(String, String)>,
    ) -> ListResult {
        let st = self.lock();
        let table = &st.tables[&k.gvr];
        let mut items = Vec::new();
        let lower = match &start_after {
            Some(key) => std::ops::Bound::Excluded(key.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let mut iter = table.objects.range((lower, std::ops::Bound::Unbounded));
        let mut last_key = None;
        let mut more = false;
        for (key, obj) in iter.by_ref() {
            if let (true, Some(ns)) = (k.namespaced, ns)
                && key.0 != ns
            {
                continue;
            }
            if !filter(obj) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                more = true;
                break;
            }
            items.push((**obj).clone());
            last_key = Some(key.clone());
        }
        let (continue_token, remaining) = if more {
            let remaining = 1 + iter
                .filter(|(key, obj)| {
                    (!k.namespaced || ns.is_none_or(|n| key.0 == n)) && filter(obj)
                })
                .count() as u64;
            let (kns, kname) = last_key.expect("a page before more");
            (Some(encode_continue(st.rv, &kns, &kname)), Some(remaining))
        } else {
            (None, None)
        };
        ListResult {
            items,
            resource_version: st.rv,
            continue_token,
            remaining,
        }
    }

    /// How many objects match `filter`, without copying them.
    pub fn count(&self, k: &Kind, ns: Option<&str>, filter: &dyn Fn(&Value) -> bool) -> usize {
        let st = self.lock();
        st.tables[&k.gvr]
            .objects
            .iter()
            .filter(|(key, obj)| (!k.namespaced || ns.is_none_or(|n| key.0 == n)) && filter(obj))
            .count()
    }

    /// Events for a watch from `from_rv` (`None`: synthetic ADDED for every object),
    /// and a receiver for everything after — taken under one lock so nothing is missed.
    #[allow(clippy::type_complexity)]
    pub fn watch(
        &self,
        k: &Kind,
        from_rv: Option<u64>,
    ) -> Result<(Vec<Arc<WatchEvent>>, broadcast::Receiver<Arc<WatchEvent>>), ApiError> {
        let st = self.lock();
        let table = &st.tables[&k.gvr];
        let rx = table.tx.subscribe();
        let backlog = match from_rv {
            None => table
                .objects
                .values()
                .map(|o| {
                    let rv = meta_str(o, "resourceVersion")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    Arc::new(WatchEvent::new(EventKind::Added, rv, o.clone(), None))
                })
                .collect(),
            Some(rv) => {
                if rv < table.compacted {
                    let oldest = table.history.front().map(|e| e.rv).unwrap_or(st.rv);
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({oldest})"
                    )));
                }
                table
                    .history
                    .iter()
                    .filter(|e| e.rv > rv)
                    .cloned()
                    .collect()
            }
        };
        Ok((backlog, rx))
    }

    /// `name` is the object's name as admission sees it (empty with generateName).
    fn check_namespace(st: &State, k: &Kind, ns: Option<&str>, name: &str) -> Result<(), ApiError> {
        if !k.namespaced {
            return Ok(());
        }
        let ns = ns.unwrap_or("");
        let nsk = storage_kind(&gvr::NAMESPACES).expect("namespaces");
        match Self::get_locked(st, &nsk, None, ns) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n)
                if n.pointer("/metadata/deletionTimestamp").is_some() && k.gvr != gvr::EVENTS =>
            {
                let mut e = ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        crate::status::qualified(k.gvr.group, k.gvr.plural),
                    ),
                );
                e.details = Some(json!({"name": name, "group": k.gvr.group, "kind": k.gvr.plural}));
                Err(e)
            }
            Some(_) => Ok(()),
        }
    }

    pub fn create(
        &self,
        k: &Kind,
        ns: Option<&str>,
        mut obj: Value,
        writer: Writer,
    ) -> Result<Arc<Value>, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON or YAML object",
            ));
        }
        let mut st = self.lock();
        let ns = create_namespace(k, ns, &obj)?;
        Self::check_namespace(&st, k, ns.as_deref(), meta_str(&obj, "name").unwrap_or(""))?;
        if obj.get("metadata").is_none_or(|m| !m.is_object()) {
            obj["metadata"] = json!({});
        }
        let name = Self::new_name(&st, k, ns.as_deref(), &obj)?;
        let rv = Self::next_rv(&mut st);
        stamp_created(k, &mut obj, &name, ns.as_deref(), rv, writer);
        let key = (ns.clone().unwrap_or_default(), name.clone());
        let arc = Arc::new(obj);
        self.put_locked(&mut st, k, key, arc.clone(), None);
        let retired = std::mem::take(&mut st.retired);
        drop(st);
        drop(retired);
        if k.gvr == gvr::NAMESPACES {
            // The service-account controller gives every namespace a `default` account.
            let sak = storage_kind(&gvr::SERVICEACCOUNTS).expect("sa");
            let _ = self.create(
                &sak,
                Some(&name),
                json!({"metadata": {"name": "default"}}),
                Writer::Controller,
            );
        }
        Ok(arc)
    }

    /// The name a new object gets: its own, or one generated from
    /// `generateName`; valid and not taken.
    fn new_name(st: &State, k: &Kind, ns: Option<&str>, obj: &Value) -> Result<String, ApiError> {
        let name = match (meta_str(obj, "name"), meta_str(obj, "generateName")) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => {
                // Retry on the (unlikely) collision like the server's generator would.
                let mut name;
                loop {
                    name = format!("{prefix}{}", random_suffix());
                    if Self::get_locked(st, k, ns, &name).is_none() {
                        break;
                    }
                }
                name
            }
            _ => {
                return Err(ApiError::required(
                    k.kind,
                    k.gvr.group,
                    "",
                    "metadata.name",
                    "name or generateName is required",
                ));
            }
        };
        if let Err(msg) = validate_name(&name) {
            return Err(ApiError::invalid(
                k.kind,
                k.gvr.group,
                &name,
                "metadata.name",
                &format!("Invalid value: \"{name}\": {msg}"),
            ));
        }
        if Self::get_locked(st, k, ns, &name).is_some() {
            return Err(ApiError::already_exists(k.gvr.group, k.gvr.plural, &name));
        }
        Ok(name)
    }

    /// Replace an object (`status_only`: the `/status` subresource).
    pub fn update(
        &self,
        k: &Kind,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        status_only: bool,
        writer: Writer,
    ) -> Result<Arc<Value>, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON or YAML object",
            ));
        }
        if let Some(body_name) = meta_str(&obj, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut st = self.lock();
        let key = object_key(k, ns, name);
        let Some(old) = st.tables[&k.gvr].objects.get(&key).cloned() else {
            return Err(ApiError::not_found(k.gvr.group, k.gvr.plural, name));
        };
        check_update_precondition(k, name, &obj, &old, writer)?;
        if obj.get("metadata").is_none_or(|m| !m.is_object()) {
            obj["metadata"] = json!({});
        }
        let new = if status_only {
            match status_write(obj, &old) {
                Some(new) => new,
                // Only the status can differ, and it does not: a no-op (see below).
                None => return Ok(old),
            }
        } else {
            main_write(k, obj, &old, writer)
        };
        // (A status write got here only with a different status.)
        if !status_only && same_but_volatile_meta(&new, &old) {
            // A no-op write keeps the resourceVersion and notifies nobody.
            return Ok(old);
        }
        let finalize =
            new.pointer("/metadata/deletionTimestamp").is_some() && !has_finalizers(&new);
        let arc = self.replace_locked(&mut st, k, key, new, old);
        if finalize {
            // The last finalizer is gone: the object is removed now.
            self.remove_locked(&mut st, k, ns, name, Propagation::Background);
        }
        let retired = std::mem::take(&mut st.retired);
        drop(st);
        drop(retired);
        if k.gvr == gvr::PODS {
            self.wake_log_streams(ns.unwrap_or(""), name);
        }
        Ok(arc)
    }

    /// Delete with `propagation`; `precondition` = (uid, resourceVersion) if given.
    pub fn delete(
        &self,
        k: &Kind,
        ns: Option<&str>,
        name: &str,
        propagation: Propagation,
        precondition: (Option<String>, Option<String>),
    ) -> Result<DeleteOutcome, ApiError> {
        let mut st = self.lock();
        let Some(old) = Self::get_locked(&st, k, ns, name) else {
            return Err(ApiError::not_found(k.gvr.group, k.gvr.plural, name));
        };
        if let Some(uid) = &precondition.0
            && meta_str(&old, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    crate::status::qualified(k.gvr.group, k.gvr.plural),
                    meta_str(&old, "uid").unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = &precondition.1
            && meta_str(&old, "resourceVersion") != Some(rv.as_str())
        {
            return Err(ApiError::conflict(k.gvr.group, k.gvr.plural, name));
        }
        if k.gvr == gvr::NAMESPACES {
            return Ok(self.delete_namespace_locked(&mut st, name, &old));
        }
        if propagation == Propagation::Foreground {
            return Ok(self.foreground_delete_locked(&mut st, k, ns, name, &old));
        }
        if has_finalizers(&old) {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(DeleteOutcome::Pending((*old).clone()));
            }
            let mut new = (*old).clone();
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let arc = self.replace_locked(&mut st, k, object_key(k, ns, name), new, old);
            return Ok(DeleteOutcome::Pending((*arc).clone()));
        }
        let gone = self.remove_locked(&mut st, k, ns, name, propagation);
        drop(st);
        Ok(DeleteOutcome::Gone(gone.unwrap_or_else(|| (*old).clone())))
    }

    /// Namespace deletion: the namespace turns `Terminating`, its contents are
    /// deleted, and it goes once nothing is left in it (at once, or when the
    /// last object held by a finalizer is finalized).
    fn delete_namespace_locked(
        &self,
        st: &mut State,
        name: &str,
        old: &Arc<Value>,
    ) -> DeleteOutcome {
        let nsk = storage_kind(&gvr::NAMESPACES).expect("namespaces");
        if old.pointer("/metadata/deletionTimestamp").is_none() {
            let mut new = (**old).clone();
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            new["status"]["phase"] = json!("Terminating");
            self.replace_locked(st, &nsk, key_of(&nsk, old), new, old.clone());
        }
        self.delete_namespace_contents_locked(st, name);
        self.finish_namespace_locked(st, name);
        Self::outcome_locked(st, &nsk, None, name, old)
    }

    /// Remove a terminating namespace once it is empty and has no finalizers.
    /// Delete (or mark, where finalizers hold them) every namespaced object in `ns`.
    fn delete_namespace_contents_locked(&self, st: &mut State, ns: &str) {
        for g in ALL_STORAGE {
            let dk = storage_kind(g).expect("known");
            if !dk.namespaced {
                continue;
            }
            let names: Vec<String> = st.tables[g]
                .objects
                .keys()
                .filter(|(n, _)| n == ns)
                .map(|(_, n)| n.clone())
                .collect();
            for n in names {
                self.delete_or_mark_locked(st, &dk, Some(ns), &n);
            }
        }
    }

    fn finish_namespace_locked(&self, st: &mut State, ns: &str) {
        let nsk = storage_kind(&gvr::NAMESPACES).expect("namespaces");
        let Some(obj) = Self::get_locked(st, &nsk, None, ns) else {
            return;
        };
        if obj.pointer("/metadata/deletionTimestamp").is_none() || has_finalizers(&obj) {
            return;
        }
        let occupied = ALL_STORAGE
            .iter()
            .filter(|g| storage_kind(g).is_some_and(|k| k.namespaced))
            .any(|g| {
                st.tables[g]
                    .objects
                    .range((ns.to_string(), String::new())..)
                    .next()
                    .is_some_and(|((n, _), _)| n == ns)
            });
        if !occupied {
            self.remove_locked(st, &nsk, None, ns, Propagation::Background);
        }
    }

    /// Foreground deletion: the owner gets a deletionTimestamp and the
    /// `foregroundDeletion` finalizer, its dependents are deleted, and the owner
    /// goes once none is left (at once, or when the last one is finalized).
    fn foreground_delete_locked(
        &self,
        st: &mut State,
        k: &Kind,
        ns: Option<&str>,
        name: &str,
        old: &Arc<Value>,
    ) -> DeleteOutcome {
        let mut new = (**old).clone();
        if new.pointer("/metadata/deletionTimestamp").is_none() {
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        let finalizers = new["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !finalizers.iter().any(|f| f == FOREGROUND) {
            let mut f = finalizers;
            f.push(json!(FOREGROUND));
            new["metadata"]["finalizers"] = json!(f);
        }
        if new != **old {
            self.replace_locked(st, k, key_of(k, old), new, old.clone());
        }
        let uid = meta_str(old, "uid").unwrap_or("");
        for (g, (dns, dname)) in Self::dependents_locked(st, uid) {
            let dk = storage_kind(&g).expect("known");
            self.delete_or_mark_locked(st, &dk, dk.namespaced.then_some(dns.as_str()), &dname);
        }
        self.finish_foreground_locked(st, k, ns, name);
        Self::outcome_locked(st, k, ns, name, old)
    }

    /// Drop the `foregroundDeletion` finalizer of an owner whose dependents are all gone.
    fn finish_foreground_locked(&self, st: &mut State, k: &Kind, ns: Option<&str>, name: &str) {
        let Some(obj) = Self::get_locked(st, k, ns, name) else {
            return;
        };
        let finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let uid = meta_str(&obj, "uid").unwrap_or("");
        if !finalizers.iter().any(|f| f == FOREGROUND)
            || st.owners.get(uid).is_some_and(|d| !d.is_empty())
        {
            return;
        }
        let remaining: Vec<Value> = finalizers.into_iter().filter(|f| f != FOREGROUND).collect();
        if remaining.is_empty() {
            self.remove_locked(st, k, ns, name, Propagation::Background);
            return;
        }
        let mut new = (*obj).clone();
        new["metadata"]["finalizers"] = json!(remaining);
        self.replace_locked(st, k, key_of(k, &obj), new, obj);
    }

    /// Owners (by ownerReference) of a just-removed object that wait in foreground deletion.
    fn finish_owners_locked(&self, st: &mut State, removed: &Value) {
        let refs = removed
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ns = meta_str(removed, "namespace").map(str::to_string);
        for r in refs {
            let (Some(kind), Some(name), Some(api_version)) = (
                r["kind"].as_str(),
                r["name"].as_str(),
                r["apiVersion"].as_str(),
            ) else {
                continue;
            };
            let group = api_version.split_once('/').map_or("", |(g, _)| g);
            let Some(ok) = ALL_STORAGE
                .iter()
                .filter_map(storage_kind)
                .find(|sk| sk.kind == kind && sk.gvr.group == group)
            else {
                continue;
            };
            let owner_ns = if ok.namespaced { ns.as_deref() } else { None };
            let is_waiting = Self::get_locked(st, &ok, owner_ns, name).is_some_and(|o| {
                o["metadata"]["uid"] == r["uid"]
                    && o.pointer("/metadata/finalizers")
                        .and_then(Value::as_array)
                        .is_some_and(|f| f.iter().any(|x| x == FOREGROUND))
            });
            if is_waiting {
                self.finish_foreground_locked(st, &ok, owner_ns, name);
            }
        }
    }

    /// Remove an object, then its dependents (or orphan them), then, for a
    /// namespace, everything in it.
    fn remove_locked(
        &self,
        st: &mut State,
        k: &Kind,
        ns: Option<&str>,
        name: &str,
        propagation: Propagation,
    ) -> Option<Value> {
        let key = object_key(k, ns, name);
        let old = st.tables.get_mut(&k.gvr)?.objects.remove(&key)?;
        let rv = Self::next_rv(st);
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = json!(rv.to_string());
        let last_arc = Arc::new(last.clone());
        self.emit(st, k, EventKind::Deleted, last_arc, Some(old.clone()));
        self.finish_owners_locked(st, &old);
        if k.namespaced
            && let Some(ns) = ns
        {
            self.finish_namespace_locked(st, ns);
        }
        if k.gvr == gvr::PODS {
            st.logs
                .retain(|(lns, pod, _), _| !(lns == ns.unwrap_or("") && pod == name));
            // Every removal passes here (API delete, owner cascade, last
            // finalizer, namespace deletion): the pod's follow streams end.
            self.wake_log_streams(ns.unwrap_or(""), name);
        }
        let uid = meta_str(&old, "uid").unwrap_or("");
        for (g, (dns, dname)) in Self::dependents_locked(st, uid) {
            let dk = storage_kind(&g).expect("known");
            let dns_opt = dk.namespaced.then_some(dns.as_str());
            if propagation == Propagation::Orphan {
                if let Some(obj) = Self::get_locked(st, &dk, dns_opt, &dname) {
                    let mut new = (*obj).clone();
                    if let Some(refs) = new["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"] != uid);
                    }
                    self.replace_locked(st, &dk, (dns.clone(), dname.clone()), new, obj);
                }
            } else {
                self.delete_or_mark_locked(st, &dk, dns_opt, &dname);
            }
        }
        if k.gvr == gvr::NAMESPACES {
            self.delete_namespace_contents_locked(st, name);
        }
        Some(last)
    }

    /// Garbage-collector deletion: honours finalizers like an API delete.
    fn delete_or_mark_locked(&self, st: &mut State, k: &Kind, ns: Option<&str>, name: &str) {
        let Some(obj) = Self::get_locked(st, k, ns, name) else {
            return;
        };
        if !has_finalizers(&obj) {
            self.remove_locked(st, k, ns, name, Propagation::Background);
        } else if obj.pointer("/metadata/deletionTimestamp").is_none() {
            let mut new = (*obj).clone();
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            self.replace_locked(st, k, object_key(k, ns, name), new, obj);
        }
    }

    pub fn append_log(&self, ns: &str, pod: &str, container: &str, line: &str) {
        {
            let mut st = self.lock();
            st.logs
                .entry((ns.to_string(), pod.to_string(), container.to_string()))
                .or_default()
                .push(LogLine {
                    time: Utc::now(),
                    text: line.to_string(),
                });
        }
        self.wake_log_streams(ns, pod);
    }

    /// Log lines from index `from` on.
    pub fn log_lines(&self, ns: &str, pod: &str, container: &str, from: usize) -> Vec<LogLine> {
        let st = self.lock();
        st.logs
            .get(&(ns.to_string(), pod.to_string(), container.to_string()))
            .map(|l| l.get(from..).unwrap_or_default().to_vec())
            .unwrap_or_default()
    }

    /// Notified when a line is appended to a log of pod `ns`/`pod` or the
    /// pod changes (or is deleted, or its namespace). Take
    /// `notified()` and `enable()` it before reading, so a change between
    /// the read and the wait is not lost.
    pub fn log_waiter(&self, ns: &str, pod: &str) -> Arc<Notify> {
        let mut waiters = self.log_waiters.lock().unwrap_or_else(|e| e.into_inner());
        // Forget pods nobody follows any more (only the map holds them).
        if waiters.len() > 64 && waiters.len().is_power_of_two() {
            waiters.retain(|_, n| Arc::strong_count(n) > 1);
        }
        waiters
            .entry((ns.to_string(), pod.to_string()))
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Wake the log follow streams of one pod.
    fn wake_log_streams(&self, ns: &str, pod: &str) {
        let waiters = self.log_waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = waiters.get(&(ns.to_string(), pod.to_string())) {
            n.notify_waiters();
        }
    }
}

fn validate_name(name: &str) -> Result<(), &'static str> {
    let ok = name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    }
}

/// Defaults the real API server fills on create.
fn apply_create_defaults(k: &Kind, obj: &mut Value) {
    match k.gvr.plural {
        "namespaces" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            let name = obj["metadata"]["name"].clone();
            let labels = &mut obj["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            labels["kubernetes.io/metadata.name"] = name;
        }
        "pods" if obj.get("status").is_none() => {
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        "persistentvolumeclaims" if obj.get("status").is_none() => {
            obj["status"] = json!({"phase": "Pending"});
        }
        "secrets" if obj.get("type").is_none() => {
            obj["type"] = json!("Opaque");
        }
        _ => {}
    }
}

pub fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rv, "ns": ns, "name": name}).to_string())
}

pub fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some((
        v["rv"].as_u64()?,
        v["ns"].as_str()?.to_string(),
        v["name"].as_str()?.to_string(),
    ))
}

fn kind_of(g: &Gvr) -> Result<Kind, ClusterError> {
    storage_kind(g).ok_or_else(|| {
        ClusterError::Invalid(format!(
            "unknown resource {}/{}/{}",
            g.group, g.version, g.plural
        ))
    })
}

impl Cluster for Store {
    fn get(&self, g: &Gvr, namespace: Option<&str>, name: &str) -> Option<Value> {
        let k = storage_kind(g)?;
        Store::get(self, &k, namespace, name)
    }

    fn list(&self, g: &Gvr, namespace: Option<&str>) -> Vec<Value> {
        match storage_kind(g) {
            Some(k) => Store::list(self, &k, namespace, &|_| true, None, None).items,
            None => Vec::new(),
        }
    }

    fn create(
        &self,
        g: &Gvr,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Arc<Value>, ClusterError> {
        let k = kind_of(g)?;
        Store::create(self, &k, namespace, object, Writer::Controller).map_err(to_cluster_error)
    }

    fn update_status(
        &self,
        g: &Gvr,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Arc<Value>, ClusterError> {
        let k = kind_of(g)?;
        Store::update(
            self,
            &k,
            namespace,
            name,
            json!({ "status": status }),
            true,
            Writer::Controller,
        )
        .map_err(to_cluster_error)
    }

    fn update(
        &self,
        g: &Gvr,
        namespace: Option<&str>,
        mut object: Value,
    ) -> Result<Arc<Value>, ClusterError> {
        let k = kind_of(g)?;
        let name = meta_str(&object, "name")
            .ok_or_else(|| ClusterError::Invalid("metadata.name is required".into()))?
            .to_string();
        // In-cluster writes are last-writer-wins: the controller works on fresh reads.
        if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        Store::update(
            self,
            &k,
            namespace,
            &name,
            object,
            false,
            Writer::Controller,
        )
        .map_err(to_cluster_error)
    }

    fn delete(&self, g: &Gvr, namespace: Option<&str>, name: &str) -> Result<(), ClusterError> {
        let k = kind_of(g)?;
        Store::delete(
            self,
            &k,
            namespace,
            name,
            Propagation::Background,
            (None, None),
        )
        .map(|_| ())
        .map_err(to_cluster_error)
    }

    fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.global.subscribe()
    }

    fn append_pod_log(&self, namespace: &str, pod: &str, container: &str, line: &str) {
        self.append_log(namespace, pod, container, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Arc<Store>, Kind, Kind) {
        let s = Store::new(100);
        let nsk = storage_kind(&gvr::NAMESPACES).unwrap();
        add(&s, &nsk, json!({"metadata": {"name": "ns"}}), Writer::Api);
        (s, nsk, storage_kind(&gvr::PIPELINERUNS).unwrap())
    }

    /// Create `obj` (in namespace `ns` where `k` is namespaced).
    fn add(s: &Store, k: &Kind, obj: Value, writer: Writer) -> Arc<Value> {
        s.create(k, k.namespaced.then_some("ns"), obj, writer)
            .unwrap()
    }

    /// Delete `name` (in namespace `ns` where `k` is namespaced), no preconditions.
    fn remove(s: &Store, k: &Kind, name: &str, propagation: Propagation) -> DeleteOutcome {
        s.delete(
            k,
            k.namespaced.then_some("ns"),
            name,
            propagation,
            (None, None),
        )
        .unwrap()
    }

    #[test]
    fn log_streams_wake_for_their_own_pod_only() {
        use futures::FutureExt;
        let (s, _, _) = setup();
        let pods = storage_kind(&gvr::PODS).unwrap();
        for name in ["a", "b"] {
            add(
                &s,
                &pods,
                json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c"}]}}),
                Writer::Api,
            );
        }
        let waiter = s.log_waiter("ns", "a");
        let mut woken = Box::pin(waiter.notified());
        woken.as_mut().enable();
        // Another pod's line or change does not wake pod a's streams.
        s.append_log("ns", "b", "c", "line of b");
        let b = s.get(&pods, Some("ns"), "b").unwrap();
        s.update(&pods, Some("ns"), "b", b, true, Writer::Api)
            .unwrap();
        assert!(woken.as_mut().now_or_never().is_none());
        // Its own line does.
        s.append_log("ns", "a", "c", "line of a");
        assert!(woken.as_mut().now_or_never().is_some());
        // So does a change of the pod (a container terminating), and its deletion.
        for change in ["update", "delete"] {
            let mut woken = Box::pin(waiter.notified());
            woken.as_mut().enable();
            if change == "update" {
                let mut a = s.get(&pods, Some("ns"), "a").unwrap();
                a["status"] = json!({"phase": "Succeeded"});
                s.update(&pods, Some("ns"), "a", a, true, Writer::Api)
                    .unwrap();
            } else {
                remove(&s, &pods, "a", Propagation::Background);
            }
            assert!(woken.as_mut().now_or_never().is_some(), "{change}");
        }
        // And a pod removed with its owner (garbage collection).
        let cms = storage_kind(&gvr::CONFIGMAPS).unwrap();
        let owner = add(
            &s,
            &cms,
            json!({"metadata": {"name": "owner"}}),
            Writer::Api,
        );
        let uid = owner["metadata"]["uid"].clone();
        add(
            &s,
            &pods,
            json!({"metadata": {"name": "owned", "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]},
                   "spec": {"containers": [{"name": "c"}]}}),
            Writer::Api,
        );
        let waiter = s.log_waiter("ns", "owned");
        let mut woken = Box::pin(waiter.notified());
        woken.as_mut().enable();
        remove(&s, &cms, "owner", Propagation::Background);
        assert!(
            s.get(&pods, Some("ns"), "owned").is_none(),
            "collected with its owner"
        );
        assert!(woken.as_mut().now_or_never().is_some(), "owner cascade");
    }

    #[test]
    fn create_fills_metadata_and_generate_name() {
        let (s, _, prk) = setup();
        let o = add(
            &s,
            &prk,
            json!({"metadata": {"generateName": "build-"}, "spec": {}}),
            Writer::Api,
        );
        let name = o["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("build-") && name.len() == 11, "{name}");
        assert_eq!(o["metadata"]["generation"], 1);
        assert!(o["metadata"]["uid"].as_str().is_some());
        let e = s
            .create(
                &prk,
                Some("ghost"),
                json!({"metadata": {"name": "x"}}),
                Writer::Api,
            )
            .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (404, "namespaces \"ghost\" not found")
        );
        // The namespace got its default service account.
        assert!(
            s.get(
                &storage_kind(&gvr::SERVICEACCOUNTS).unwrap(),
                Some("ns"),
                "default"
            )
            .is_some()
        );
    }

    #[test]
    fn generation_bumps_only_on_spec_change_and_noop_keeps_rv() {
        let (s, _, prk) = setup();
        let o = add(
            &s,
            &prk,
            json!({"metadata": {"name": "a"}, "spec": {"x": 1}}),
            Writer::Api,
        );
        let mut o2 = (*o).clone();
        o2["metadata"]["labels"] = json!({"l": "v"});
        let o2 = s
            .update(&prk, Some("ns"), "a", o2, false, Writer::Api)
            .unwrap();
        assert_eq!(o2["metadata"]["generation"], 1);
        let mut o3 = (*o2).clone();
        o3["spec"]["x"] = json!(2);
        let o3 = s
            .update(&prk, Some("ns"), "a", o3, false, Writer::Api)
            .unwrap();
        assert_eq!(o3["metadata"]["generation"], 2);
        let o4 = s
            .update(&prk, Some("ns"), "a", (*o3).clone(), false, Writer::Api)
            .unwrap();
        assert_eq!(
            o4["metadata"]["resourceVersion"],
            o3["metadata"]["resourceVersion"]
        );
    }

    #[test]
    fn status_write_replaces_only_status_and_noop_writes_change_nothing() {
        let (s, _, prk) = setup();
        let o = add(
            &s,
            &prk,
            json!({"metadata": {"name": "a", "labels": {"l": "v"}}, "spec": {"x": 1}}),
            Writer::Api,
        );
        let st = s
            .update(
                &prk,
                Some("ns"),
                "a",
                json!({"spec": {"x": 9}, "status": {"phase": "Done"}}),
                true,
                Writer::Controller,
            )
            .unwrap();
        assert_eq!(st["status"], json!({"phase": "Done"}));
        assert_eq!(
            (&st["spec"], &st["metadata"]["labels"]),
            (&o["spec"], &o["metadata"]["labels"])
        );
        assert_eq!(st["metadata"]["generation"], 1);
        assert_ne!(
            st["metadata"]["resourceVersion"],
            o["metadata"]["resourceVersion"]
        );
        // The same status again, or an update differing only in resourceVersion and
        // managedFields: no new resourceVersion, no event.
        let mut events = s.subscribe();
        let again = s
            .update(
                &prk,
                Some("ns"),
                "a",
                json!({"status": {"phase": "Done"}}),
                true,
                Writer::Controller,
            )
            .unwrap();
        let mut same = (*again).clone();
        same["metadata"]["managedFields"] = json!([{"manager": "m"}]);
        same["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        let again2 = s
            .update(&prk, Some("ns"), "a", same, false, Writer::Controller)
            .unwrap();
        assert_eq!(
            again["metadata"]["resourceVersion"],
            st["metadata"]["resourceVersion"]
        );
        assert_eq!(
            again2["metadata"]["resourceVersion"],
            st["metadata"]["resourceVersion"]
        );
        assert!(events.try_recv().is_err(), "no-op writes emit nothing");
        // Removing the status is a change.
        let cleared = s
            .update(&prk, Some("ns"), "a", json!({}), true, Writer::Controller)
            .unwrap();
        assert!(cleared.get("status").is_none());
        assert!(events.try_recv().is_ok());
    }

    #[test]
    fn watch_history_is_bounded() {
        let s = Store::new(3);
        let nsk = storage_kind(&gvr::NAMESPACES).unwrap();
        for i in 0..10 {
            add(
                &s,
                &nsk,
                json!({"metadata": {"name": format!("n{i}")}}),
                Writer::Api,
            );
        }
        let e = s.watch(&nsk, Some(2)).unwrap_err();
        assert_eq!(e.code, 410);
        let rv = s.current_rv();
        let (backlog, _) = s.watch(&nsk, Some(rv - 1)).unwrap();
        assert!(backlog.len() <= 1);
    }

    #[test]
    fn cascade_follows_owner_chains_and_honours_finalizers() {
        let (s, _, prk) = setup();
        let trk = storage_kind(&gvr::TASKRUNS).unwrap();
        let podk = storage_kind(&gvr::PODS).unwrap();
        let owned_by = |o: &Value| json!([{"uid": o["metadata"]["uid"], "name": o["metadata"]["name"], "kind": "x", "apiVersion": "v1"}]);
        let pr = add(&s, &prk, json!({"metadata": {"name": "pr"}}), Writer::Api);
        let tr = add(
            &s,
            &trk,
            json!({"metadata": {"name": "tr", "ownerReferences": owned_by(&pr)}}),
            Writer::Controller,
        );
        add(
            &s,
            &podk,
            json!({"metadata": {"name": "pod", "ownerReferences": owned_by(&tr)}}),
            Writer::Controller,
        );
        add(
            &s,
            &podk,
            json!({"metadata": {"name": "held", "finalizers": ["x/y"], "ownerReferences": owned_by(&tr)}}),
            Writer::Controller,
        );
        let mut events = s.subscribe();
        remove(&s, &prk, "pr", Propagation::Background);
        assert!(s.get(&trk, Some("ns"), "tr").is_none());
        assert!(s.get(&podk, Some("ns"), "pod").is_none());
        let held = s
            .get(&podk, Some("ns"), "held")
            .expect("finalizer keeps it");
        assert!(held.pointer("/metadata/deletionTimestamp").is_some());
        // The owner's DELETED comes first, like background deletion.
        let first = events.try_recv().unwrap();
        assert_eq!(
            (first.kind, first.gvr),
            (EventKind::Deleted, gvr::PIPELINERUNS)
        );
    }

    #[test]
    fn namespace_terminates_until_its_contents_are_gone() {
        let (s, nsk, prk) = setup();
        add(&s, &prk, json!({"metadata": {"name": "free"}}), Writer::Api);
        add(
            &s,
            &prk,
            json!({"metadata": {"name": "held", "finalizers": ["x/y"]}}),
            Writer::Api,
        );
        let DeleteOutcome::Pending(ns) = remove(&s, &nsk, "ns", Propagation::Background) else {
            panic!("a finalizer keeps the namespace terminating")
        };
        assert_eq!(ns["status"]["phase"], "Terminating");
        assert!(s.get(&prk, Some("ns"), "free").is_none());
        let e = s
            .create(
                &prk,
                Some("ns"),
                json!({"metadata": {"name": "new"}}),
                Writer::Api,
            )
            .unwrap_err();
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(
            e.message,
            "pipelineruns.tekton.dev \"new\" is forbidden: unable to create new content in namespace ns because it is being terminated"
        );
        let mut held = s.get(&prk, Some("ns"), "held").unwrap();
        held["metadata"]["finalizers"] = json!([]);
        s.update(&prk, Some("ns"), "held", held, false, Writer::Api)
            .unwrap();
        assert!(
            s.get(&nsk, None, "ns").is_none(),
            "namespace gone with its last object"
        );

        add(
            &s,
            &nsk,
            json!({"metadata": {"name": "empty"}}),
            Writer::Api,
        );
        let out = remove(&s, &nsk, "empty", Propagation::Background);
        assert!(
            matches!(out, DeleteOutcome::Gone(_)),
            "its default service account goes at once, then the namespace"
        );
    }

    #[test]
    fn foreground_deletion_waits_for_dependents() {
        let (s, _, prk) = setup();
        let podk = storage_kind(&gvr::PODS).unwrap();
        let pr = add(&s, &prk, json!({"metadata": {"name": "pr"}}), Writer::Api);
        let owner_ref = json!([{"uid": pr["metadata"]["uid"], "name": "pr", "kind": "PipelineRun", "apiVersion": "tekton.dev/v1"}]);
        add(
            &s,
            &podk,
            json!({"metadata": {"name": "free", "ownerReferences": owner_ref}}),
            Writer::Controller,
        );
        add(
            &s,
            &podk,
            json!({"metadata": {"name": "held", "finalizers": ["x/y"], "ownerReferences": owner_ref}}),
            Writer::Controller,
        );
        let out = remove(&s, &prk, "pr", Propagation::Foreground);
        let DeleteOutcome::Pending(owner) = out else {
            panic!("owner must wait for the held pod")
        };
        assert_eq!(
            owner["metadata"]["finalizers"],
            json!(["foregroundDeletion"])
        );
        assert!(s.get(&podk, Some("ns"), "free").is_none());
        let mut held = s.get(&podk, Some("ns"), "held").unwrap();
        held["metadata"]["finalizers"] = json!([]);
        s.update(&podk, Some("ns"), "held", held, false, Writer::Controller)
            .unwrap();
        assert!(s.get(&podk, Some("ns"), "held").is_none());
        assert!(
            s.get(&prk, Some("ns"), "pr").is_none(),
            "owner goes with its last dependent"
        );

        // Without dependents it is gone at once.
        add(&s, &prk, json!({"metadata": {"name": "lone"}}), Writer::Api);
        let out = remove(&s, &prk, "lone", Propagation::Foreground);
        assert!(matches!(out, DeleteOutcome::Gone(_)));
    }
}
