//! The Kubernetes protobuf wire format (`application/vnd.kubernetes.protobuf`)
//! for the kinds kubectl's typed `create` commands send: Namespace, Secret,
//! ConfigMap, ServiceAccount, and the RBAC Role, RoleBinding, ClusterRole,
//! ClusterRoleBinding (and their lists), plus `Status` and `DeleteOptions`. An encoded object is the magic `k8s\0` followed by a
//! `runtime.Unknown` whose `raw` is the object's own message (types from
//! `k8s-pb`). Pure conversions between that and the JSON shape the store
//! keeps; the API layer decides when to use them (see `negotiate`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// (group, plural) of the resources whose objects this module encodes and decodes.
pub const RESOURCES: &[(&str, &str)] = &[
    ("", "namespaces"),
    ("", "secrets"),
    ("", "configmaps"),
    ("", "serviceaccounts"),
    (rbac::GROUP, "roles"),
    (rbac::GROUP, "rolebindings"),
    (rbac::GROUP, "clusterroles"),
    (rbac::GROUP, "clusterrolebindings"),
];

pub fn supports(group: &str, plural: &str) -> bool {
    RESOURCES.iter().any(|(g, p)| *g == group && *p == plural)
}

/// What a request's `Accept` header asks for, in the apiserver's order of
/// preference (the first acceptable clause wins; `q=0` excludes a clause).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Protobuf comes before any JSON clause.
    pub protobuf_first: bool,
    /// JSON (or a wildcard) is acceptable at all.
    pub json_ok: bool,
}

pub fn negotiate(accept: &str) -> Negotiated {
    let mut out = Negotiated {
        protobuf_first: false,
        json_ok: accept.trim().is_empty(),
    };
    let mut first: Option<bool> = None;
    for clause in accept.split(',') {
        let mut parts = clause.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<&str> = parts.collect();
        if params.iter().any(|p| p.replace(' ', "") == "q=0") {
            continue;
        }
        // `as=Table` and other conversions are JSON-only here.
        let converted = params.iter().any(|p| p.starts_with("as="));
        let is_pb = media == MEDIA_TYPE && !converted;
        let is_json = matches!(
            media.as_str(),
            "application/json" | "application/yaml" | "*/*" | "application/*"
        );
        if is_json {
            out.json_ok = true;
        }
        if first.is_none() && (is_pb || is_json) {
            first = Some(is_pb);
        }
    }
    out.protobuf_first = first == Some(true);
    out
}

/// Decode a protobuf request body into the JSON object it stands for.
pub fn decode(bytes: &[u8]) -> Result<Value, String> {
    let body = bytes
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the Kubernetes protobuf magic \"k8s\\x00\"")?;
    let unknown = Unknown::decode(body).map_err(|e| format!("invalid runtime.Unknown: {e}"))?;
    if let Some(enc) = unknown
        .content_encoding
        .as_deref()
        .filter(|e| !e.is_empty())
    {
        return Err(format!("unsupported contentEncoding {enc:?}"));
    }
    let tm = unknown.type_meta.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let err = |e: prost::DecodeError| format!("invalid {kind}: {e}");
    let mut v = match kind.as_str() {
        "Namespace" => namespace_json(&core::Namespace::decode(&raw[..]).map_err(err)?),
        "Secret" => secret_json(&core::Secret::decode(&raw[..]).map_err(err)?),
        "ConfigMap" => configmap_json(&core::ConfigMap::decode(&raw[..]).map_err(err)?),
        "ServiceAccount" => {
            serviceaccount_json(&core::ServiceAccount::decode(&raw[..]).map_err(err)?)
        }
        "DeleteOptions" => {
            delete_options_json(&meta::DeleteOptions::decode(&raw[..]).map_err(err)?)
        }
        k if rbac::KINDS.contains(&k) => rbac::decode(k, &raw).map_err(err)?,
        "" => return Err("the object has no kind".into()),
        other => return Err(format!("kube-sim does not decode {other} from protobuf")),
    };
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}

/// Encode a JSON object (or list, or Status) as protobuf; `None` when its
/// kind has no protobuf form here.
pub fn encode(v: &Value) -> Option<Vec<u8>> {
    let kind = v.get("kind")?.as_str()?;
    let raw = match kind {
        "Namespace" => namespace_pb(v).encode_to_vec(),
        "Secret" => secret_pb(v).encode_to_vec(),
        "ConfigMap" => configmap_pb(v).encode_to_vec(),
        "ServiceAccount" => serviceaccount_pb(v).encode_to_vec(),
        "NamespaceList" => core::NamespaceList {
            metadata: Some(list_meta_pb(&v["metadata"])),
            items: items(v).map(namespace_pb).collect(),
        }
        .encode_to_vec(),
        "SecretList" => core::SecretList {
            metadata: Some(list_meta_pb(&v["metadata"])),
            items: items(v).map(secret_pb).collect(),
        }
        .encode_to_vec(),
        "ConfigMapList" => core::ConfigMapList {
            metadata: Some(list_meta_pb(&v["metadata"])),
            items: items(v).map(configmap_pb).collect(),
        }
        .encode_to_vec(),
        "ServiceAccountList" => core::ServiceAccountList {
            metadata: Some(list_meta_pb(&v["metadata"])),
            items: items(v).map(serviceaccount_pb).collect(),
        }
        .encode_to_vec(),
        "Status" => status_pb(v).encode_to_vec(),
        other => rbac::encode(other, v)?,
    };
    let envelope = Unknown {
        type_meta: Some(TypeMeta {
            api_version: str_of(v, "apiVersion"),
            kind: Some(kind.to_string()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    envelope.encode(&mut out).ok()?;
    Some(out)
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("items")
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .unwrap_or_default()
}

fn str_of(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(String::from)
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn string_map(v: &Value, k: &str) -> BTreeMap<String, String> {
    v.get(k)
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// JSON base64 values (Secret `data`, ConfigMap `binaryData`) as bytes.
fn bytes_map(v: &Value, k: &str) -> BTreeMap<String, Vec<u8>> {
    string_map(v, k)
        .into_iter()
        .filter_map(|(k, s)| Some((k, B64.decode(s).ok()?)))
        .collect()
}

/// Adds `v` under `k` unless it is empty/absent (the JSON `omitempty` shape).
fn put(o: &mut Map<String, Value>, k: &str, v: Value) {
    let empty = match &v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        // Go's protobuf writes unset strings as "" (JSON omits them).
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    if !empty {
        o.insert(k.to_string(), v);
    }
}

fn map_json<T: Into<Value> + Clone>(m: &BTreeMap<String, T>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect(),
    )
}

fn b64_map_json(m: &BTreeMap<String, Vec<u8>>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), json!(B64.encode(v))))
            .collect(),
    )
}

fn time_pb(v: &Value) -> Option<meta::Time> {
    let t = DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
    Some(meta::Time {
        seconds: Some(t.timestamp()),
        nanos: Some(0),
    })
}

/// Go writes a zero `metav1.Time` as an empty message (kubectl sends one for
/// `creationTimestamp` on every create): that is no time, not 1970.
fn time_json(t: &Option<meta::Time>) -> Value {
    t.as_ref()
        .and_then(|t| t.seconds)
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        .map(|t| json!(t.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

fn object_meta_pb(m: &Value) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: str_of(m, "name"),
        generate_name: str_of(m, "generateName"),
        namespace: str_of(m, "namespace"),
        self_link: None,
        uid: str_of(m, "uid"),
        resource_version: str_of(m, "resourceVersion"),
        generation: m.get("generation").and_then(Value::as_i64),
        creation_timestamp: m.get("creationTimestamp").and_then(time_pb),
        deletion_timestamp: m.get("deletionTimestamp").and_then(time_pb),
        deletion_grace_period_seconds: m.get("deletionGracePeriodSeconds").and_then(Value::as_i64),
        labels: string_map(m, "labels"),
        annotations: string_map(m, "annotations"),
        owner_references: m
            .get("ownerReferences")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(owner_ref_pb).collect())
            .unwrap_or_default(),
        finalizers: strings(m, "finalizers"),
        managed_fields: m
            .get("managedFields")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(managed_fields_pb).collect())
            .unwrap_or_default(),
    }
}

fn owner_ref_pb(r: &Value) -> meta::OwnerReference {
    meta::OwnerReference {
        api_version: str_of(r, "apiVersion"),
        kind: str_of(r, "kind"),
        name: str_of(r, "name"),
        uid: str_of(r, "uid"),
        controller: r.get("controller").and_then(Value::as_bool),
        block_owner_deletion: r.get("blockOwnerDeletion").and_then(Value::as_bool),
    }
}

fn managed_fields_pb(f: &Value) -> meta::ManagedFieldsEntry {
    meta::ManagedFieldsEntry {
        manager: str_of(f, "manager"),
        operation: str_of(f, "operation"),
        api_version: str_of(f, "apiVersion"),
        time: f.get("time").and_then(time_pb),
        fields_type: str_of(f, "fieldsType"),
        fields_v1: f.get("fieldsV1").map(|v| meta::FieldsV1 {
            raw: serde_json::to_vec(v).ok(),
        }),
        subresource: str_of(f, "subresource"),
    }
}

fn object_meta_json(m: &Option<meta::ObjectMeta>) -> Value {
    let Some(m) = m else { return json!({}) };
    let mut o = Map::new();
    put(&mut o, "name", json!(m.name));
    put(&mut o, "generateName", json!(m.generate_name));
    put(&mut o, "namespace", json!(m.namespace));
    put(&mut o, "uid", json!(m.uid));
    put(&mut o, "resourceVersion", json!(m.resource_version));
    put(
        &mut o,
        "generation",
        json!(m.generation.filter(|g| *g != 0)),
    );
    put(
        &mut o,
        "creationTimestamp",
        time_json(&m.creation_timestamp),
    );
    put(
        &mut o,
        "deletionTimestamp",
        time_json(&m.deletion_timestamp),
    );
    put(
        &mut o,
        "deletionGracePeriodSeconds",
        json!(m.deletion_grace_period_seconds),
    );
    put(&mut o, "labels", map_json(&m.labels));
    put(&mut o, "annotations", map_json(&m.annotations));
    let owners = m.owner_references.iter().map(|r| {
        json!({"apiVersion": r.api_version, "kind": r.kind, "name": r.name, "uid": r.uid,
               "controller": r.controller, "blockOwnerDeletion": r.block_owner_deletion})
    });
    put(&mut o, "ownerReferences", drop_empty(owners.collect()));
    put(&mut o, "finalizers", json!(m.finalizers));
    // Clients do not send managedFields on create; a server answer carries them.
    o.retain(|_, v| !v.is_null());
    Value::Object(o)
}

/// Removes `null` and `""` members of each object in `items` (absent optional
/// fields: Go's protobuf writes unset strings as "").
fn drop_empty(items: Vec<Value>) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|mut v| {
                if let Some(o) = v.as_object_mut() {
                    o.retain(|_, x| !x.is_null() && x.as_str() != Some(""));
                }
                v
            })
            .collect(),
    )
}

fn namespace_pb(v: &Value) -> core::Namespace {
    let status = &v["status"];
    core::Namespace {
        metadata: Some(object_meta_pb(&v["metadata"])),
        spec: Some(core::NamespaceSpec {
            finalizers: strings(&v["spec"], "finalizers"),
        }),
        status: Some(core::NamespaceStatus {
            phase: str_of(status, "phase"),
            conditions: status
                .get("conditions")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|c| core::NamespaceCondition {
                            r#type: str_of(c, "type"),
                            status: str_of(c, "status"),
                            last_transition_time: c.get("lastTransitionTime").and_then(time_pb),
                            reason: str_of(c, "reason"),
                            message: str_of(c, "message"),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
    }
}

fn namespace_json(n: &core::Namespace) -> Value {
    let mut o = Map::new();
    o.insert("metadata".into(), object_meta_json(&n.metadata));
    if let Some(spec) = &n.spec {
        let mut s = Map::new();
        put(&mut s, "finalizers", json!(spec.finalizers));
        o.insert("spec".into(), Value::Object(s));
    }
    Value::Object(o)
}

fn secret_pb(v: &Value) -> core::Secret {
    core::Secret {
        metadata: Some(object_meta_pb(&v["metadata"])),
        immutable: v.get("immutable").and_then(Value::as_bool),
        data: bytes_map(v, "data"),
        string_data: string_map(v, "stringData"),
        r#type: str_of(v, "type"),
    }
}

fn secret_json(s: &core::Secret) -> Value {
    let mut o = Map::new();
    o.insert("metadata".into(), object_meta_json(&s.metadata));
    put(&mut o, "immutable", json!(s.immutable));
    put(&mut o, "data", b64_map_json(&s.data));
    put(&mut o, "stringData", map_json(&s.string_data));
    put(&mut o, "type", json!(s.r#type));
    Value::Object(o)
}

fn configmap_pb(v: &Value) -> core::ConfigMap {
    core::ConfigMap {
        metadata: Some(object_meta_pb(&v["metadata"])),
        immutable: v.get("immutable").and_then(Value::as_bool),
        data: string_map(v, "data"),
        binary_data: bytes_map(v, "binaryData"),
    }
}

fn configmap_json(c: &core::ConfigMap) -> Value {
    let mut o = Map::new();
    o.insert("metadata".into(), object_meta_json(&c.metadata));
    put(&mut o, "immutable", json!(c.immutable));
    put(&mut o, "data", map_json(&c.data));
    put(&mut o, "binaryData", b64_map_json(&c.binary_data));
    Value::Object(o)
}

fn serviceaccount_pb(v: &Value) -> core::ServiceAccount {
    let refs = |k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    core::ServiceAccount {
        metadata: Some(object_meta_pb(&v["metadata"])),
        secrets: refs("secrets")
            .iter()
            .map(|r| core::ObjectReference {
                kind: str_of(r, "kind"),
                namespace: str_of(r, "namespace"),
                name: str_of(r, "name"),
                uid: str_of(r, "uid"),
                api_version: str_of(r, "apiVersion"),
                resource_version: str_of(r, "resourceVersion"),
                field_path: str_of(r, "fieldPath"),
            })
            .collect(),
        image_pull_secrets: refs("imagePullSecrets")
            .iter()
            .map(|r| core::LocalObjectReference {
                name: str_of(r, "name"),
            })
            .collect(),
        automount_service_account_token: v
            .get("automountServiceAccountToken")
            .and_then(Value::as_bool),
    }
}

fn serviceaccount_json(s: &core::ServiceAccount) -> Value {
    let mut o = Map::new();
    o.insert("metadata".into(), object_meta_json(&s.metadata));
    let secrets = s.secrets.iter().map(|r| {
        json!({"kind": r.kind, "namespace": r.namespace, "name": r.name, "uid": r.uid,
               "apiVersion": r.api_version, "resourceVersion": r.resource_version,
               "fieldPath": r.field_path})
    });
    put(&mut o, "secrets", drop_empty(secrets.collect()));
    let pulls = s.image_pull_secrets.iter().map(|r| json!({"name": r.name}));
    put(&mut o, "imagePullSecrets", drop_empty(pulls.collect()));
    put(
        &mut o,
        "automountServiceAccountToken",
        json!(s.automount_service_account_token),
    );
    Value::Object(o)
}

fn delete_options_json(d: &meta::DeleteOptions) -> Value {
    let mut o = Map::new();
    put(&mut o, "gracePeriodSeconds", json!(d.grace_period_seconds));
    put(&mut o, "propagationPolicy", json!(d.propagation_policy));
    put(&mut o, "orphanDependents", json!(d.orphan_dependents));
    put(&mut o, "dryRun", json!(d.dry_run));
    if let Some(p) = &d.preconditions {
        let mut pre = Map::new();
        put(&mut pre, "uid", json!(p.uid));
        put(&mut pre, "resourceVersion", json!(p.resource_version));
        put(&mut o, "preconditions", Value::Object(pre));
    }
    Value::Object(o)
}

fn list_meta_pb(m: &Value) -> meta::ListMeta {
    meta::ListMeta {
        self_link: None,
        resource_version: str_of(m, "resourceVersion"),
        r#continue: str_of(m, "continue"),
        remaining_item_count: m.get("remainingItemCount").and_then(Value::as_i64),
    }
}

fn status_pb(v: &Value) -> meta::Status {
    let d = &v["details"];
    meta::Status {
        metadata: Some(list_meta_pb(&v["metadata"])),
        status: str_of(v, "status"),
        message: str_of(v, "message"),
        reason: str_of(v, "reason"),
        details: d.is_object().then(|| meta::StatusDetails {
            name: str_of(d, "name"),
            group: str_of(d, "group"),
            kind: str_of(d, "kind"),
            uid: str_of(d, "uid"),
            causes: d
                .get("causes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|c| meta::StatusCause {
                            reason: str_of(c, "reason"),
                            message: str_of(c, "message"),
                            field: str_of(c, "field"),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            retry_after_seconds: d
                .get("retryAfterSeconds")
                .and_then(Value::as_i64)
                .map(|s| s as i32),
        }),
        code: v.get("code").and_then(Value::as_i64).map(|c| c as i32),
    }
}

/// RBAC kinds (`rbac.authorization.k8s.io/v1`). A ClusterRole's
/// `aggregationRule` is not carried (kube-sim does not aggregate roles).
mod rbac {
    use super::*;
    use k8s_pb::api::rbac::v1 as pb;

    pub const GROUP: &str = "rbac.authorization.k8s.io";
    pub const KINDS: &[&str] = &["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"];

    pub fn decode(kind: &str, raw: &[u8]) -> Result<Value, prost::DecodeError> {
        Ok(match kind {
            "Role" => {
                let r = pb::Role::decode(raw)?;
                with_rules(object_meta_json(&r.metadata), &r.rules)
            }
            "ClusterRole" => {
                let r = pb::ClusterRole::decode(raw)?;
                with_rules(object_meta_json(&r.metadata), &r.rules)
            }
            "RoleBinding" => {
                let b = pb::RoleBinding::decode(raw)?;
                binding_json(&b.metadata, &b.subjects, &b.role_ref)
            }
            _ => {
                let b = pb::ClusterRoleBinding::decode(raw)?;
                binding_json(&b.metadata, &b.subjects, &b.role_ref)
            }
        })
    }

    pub fn encode(kind: &str, v: &Value) -> Option<Vec<u8>> {
        let list_meta = || Some(list_meta_pb(&v["metadata"]));
        Some(match kind {
            "Role" => role(v).encode_to_vec(),
            "ClusterRole" => cluster_role(v).encode_to_vec(),
            "RoleBinding" => binding(v).encode_to_vec(),
            "ClusterRoleBinding" => cluster_binding(v).encode_to_vec(),
            "RoleList" => pb::RoleList {
                metadata: list_meta(),
                items: items(v).map(role).collect(),
            }
            .encode_to_vec(),
            "ClusterRoleList" => pb::ClusterRoleList {
                metadata: list_meta(),
                items: items(v).map(cluster_role).collect(),
            }
            .encode_to_vec(),
            "RoleBindingList" => pb::RoleBindingList {
                metadata: list_meta(),
                items: items(v).map(binding).collect(),
            }
            .encode_to_vec(),
            "ClusterRoleBindingList" => pb::ClusterRoleBindingList {
                metadata: list_meta(),
                items: items(v).map(cluster_binding).collect(),
            }
            .encode_to_vec(),
            _ => return None,
        })
    }

    fn role(v: &Value) -> pb::Role {
        pb::Role {
            metadata: Some(object_meta_pb(&v["metadata"])),
            rules: rules(v),
        }
    }

    fn cluster_role(v: &Value) -> pb::ClusterRole {
        pb::ClusterRole {
            metadata: Some(object_meta_pb(&v["metadata"])),
            rules: rules(v),
            aggregation_rule: None,
        }
    }

    fn binding(v: &Value) -> pb::RoleBinding {
        pb::RoleBinding {
            metadata: Some(object_meta_pb(&v["metadata"])),
            subjects: subjects(v),
            role_ref: role_ref(v),
        }
    }

    fn cluster_binding(v: &Value) -> pb::ClusterRoleBinding {
        pb::ClusterRoleBinding {
            metadata: Some(object_meta_pb(&v["metadata"])),
            subjects: subjects(v),
            role_ref: role_ref(v),
        }
    }

    fn items_at<'a>(v: &'a Value, k: &str) -> impl Iterator<Item = &'a Value> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter())
            .unwrap_or_default()
    }

    fn rules(v: &Value) -> Vec<pb::PolicyRule> {
        items_at(v, "rules")
            .map(|r| pb::PolicyRule {
                verbs: strings(r, "verbs"),
                api_groups: strings(r, "apiGroups"),
                resources: strings(r, "resources"),
                resource_names: strings(r, "resourceNames"),
                non_resource_ur_ls: strings(r, "nonResourceURLs"),
            })
            .collect()
    }

    fn subjects(v: &Value) -> Vec<pb::Subject> {
        items_at(v, "subjects")
            .map(|s| pb::Subject {
                kind: str_of(s, "kind"),
                api_group: str_of(s, "apiGroup"),
                name: str_of(s, "name"),
                namespace: str_of(s, "namespace"),
            })
            .collect()
    }

    fn role_ref(v: &Value) -> Option<pb::RoleRef> {
        let r = v.get("roleRef")?;
        Some(pb::RoleRef {
            api_group: str_of(r, "apiGroup"),
            kind: str_of(r, "kind"),
            name: str_of(r, "name"),
        })
    }

    fn with_rules(metadata: Value, rules: &[pb::PolicyRule]) -> Value {
        let rules: Vec<Value> = rules
            .iter()
            .map(|r| {
                let mut o = Map::new();
                put(&mut o, "verbs", json!(r.verbs));
                put(&mut o, "apiGroups", json!(r.api_groups));
                put(&mut o, "resources", json!(r.resources));
                put(&mut o, "resourceNames", json!(r.resource_names));
                put(&mut o, "nonResourceURLs", json!(r.non_resource_ur_ls));
                Value::Object(o)
            })
            .collect();
        json!({"metadata": metadata, "rules": rules})
    }

    fn binding_json(
        metadata: &Option<meta::ObjectMeta>,
        subjects: &[pb::Subject],
        role_ref: &Option<pb::RoleRef>,
    ) -> Value {
        let subjects = subjects.iter().map(|s| {
            json!({"kind": s.kind, "apiGroup": s.api_group, "name": s.name, "namespace": s.namespace})
        });
        let mut o = Map::new();
        o.insert("metadata".into(), object_meta_json(metadata));
        put(&mut o, "subjects", drop_empty(subjects.collect()));
        if let Some(r) = role_ref {
            let mut rr = Map::new();
            rr.insert(
                "apiGroup".into(),
                json!(r.api_group.clone().unwrap_or_default()),
            );
            rr.insert("kind".into(), json!(r.kind.clone().unwrap_or_default()));
            rr.insert("name".into(), json!(r.name.clone().unwrap_or_default()));
            o.insert("roleRef".into(), Value::Object(rr));
        }
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_accept_list_order() {
        let kubectl = negotiate("application/vnd.kubernetes.protobuf,application/json");
        assert!(kubectl.protobuf_first && kubectl.json_ok);
        let json_first = negotiate("application/json, application/vnd.kubernetes.protobuf");
        assert!(!json_first.protobuf_first && json_first.json_ok);
        let only = negotiate("application/vnd.kubernetes.protobuf");
        assert!(only.protobuf_first && !only.json_ok);
        let table = negotiate("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io");
        assert!(!table.protobuf_first && !table.json_ok);
        let refused = negotiate("application/vnd.kubernetes.protobuf;q=0, */*");
        assert!(!refused.protobuf_first && refused.json_ok);
        assert!(negotiate("").json_ok);
        assert!(!negotiate("text/html").json_ok);
    }

    #[test]
    fn objects_survive_a_round_trip() {
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "n", "labels": {"a": "b"},
                         "creationTimestamp": "2026-01-02T03:04:05Z",
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u", "controller": true}]},
            "data": {"k": "v", "empty": ""},
            "binaryData": {"bin": "AAEC"},
        });
        assert_eq!(decode(&encode(&cm).unwrap()).unwrap(), cm);
        let sa = json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s"},
            "imagePullSecrets": [{"name": "reg"}], "automountServiceAccountToken": false,
        });
        assert_eq!(decode(&encode(&sa).unwrap()).unwrap(), sa);
        let rb = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "b"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        });
        assert_eq!(decode(&encode(&rb).unwrap()).unwrap(), rb);
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
        });
        assert_eq!(decode(&encode(&role).unwrap()).unwrap(), role);
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": {"finalizers": ["kubernetes"]}});
        assert_eq!(decode(&encode(&ns).unwrap()).unwrap(), ns);
    }

    #[test]
    fn an_empty_time_is_no_time() {
        let empty = Some(meta::Time::default());
        assert_eq!(time_json(&empty), Value::Null);
        let t = Some(meta::Time {
            seconds: Some(1_700_000_000),
            nanos: None,
        });
        assert_eq!(time_json(&t), json!("2023-11-14T22:13:20Z"));
    }

    #[test]
    fn bad_bodies_are_named() {
        assert!(decode(b"{}").unwrap_err().contains("magic"));
        assert!(
            decode(b"k8s\0\xff\xff")
                .unwrap_err()
                .contains("runtime.Unknown")
        );
        let pod = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
            }),
            raw: Some(Vec::new()),
            ..Default::default()
        };
        let mut b = MAGIC.to_vec();
        pod.encode(&mut b).unwrap();
        assert_eq!(
            decode(&b).unwrap_err(),
            "kube-sim does not decode Pod from protobuf"
        );
        assert!(encode(&json!({"kind": "Pod"})).is_none());
    }
}
