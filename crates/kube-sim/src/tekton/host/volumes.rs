//! Pod volumes as host directories: a claim is one directory per
//! PersistentVolumeClaim (shared by every pod that mounts it), an `emptyDir`
//! one per pod, a Secret or ConfigMap its keys written as files (with
//! `items` and modes) in a directory of the pod.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::cluster::{Cluster, gvr};
use crate::tekton::model;

/// Where the host runner keeps its directories.
pub struct Layout<'a> {
    pub pod_dir: &'a Path,
    pub claims_root: &'a Path,
}

/// The directory of a claim: named after the claim and its uid, so a claim
/// re-created under the same name starts empty.
pub fn claim_dir(claims_root: &Path, ns: &str, name: &str, uid: &str) -> PathBuf {
    claims_root.join(ns).join(format!("{name}-{uid}"))
}

/// The host directory standing for volume source `source` (a pod volume or a
/// workspace binding) called `name`, created and filled.
pub fn materialise(
    cluster: &dyn Cluster,
    ns: &str,
    name: &str,
    source: &Value,
    layout: &Layout,
) -> Result<PathBuf, String> {
    let own = layout.pod_dir.join("volumes").join(name);
    let dir = if let Some(claim) = model::str_at(source, &["persistentVolumeClaim", "claimName"]) {
        let pvc = cluster
            .get(&gvr::PVCS, Some(ns), claim)
            .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
        claim_dir(layout.claims_root, ns, claim, model::uid(&pvc))
    } else if source.get("emptyDir").is_some() {
        own
    } else if let Some(s) = source.get("secret") {
        let secret_name = model::str_at(s, &["secretName"]).unwrap_or("");
        let obj = cluster.get(&gvr::SECRETS, Some(ns), secret_name);
        write_keys(
            &own,
            obj.as_ref(),
            s,
            true,
            &format!("secret \"{secret_name}\""),
        )?;
        return Ok(own);
    } else if let Some(c) = source.get("configMap") {
        let cm_name = model::str_at(c, &["name"]).unwrap_or("");
        let obj = cluster.get(&gvr::CONFIGMAPS, Some(ns), cm_name);
        write_keys(
            &own,
            obj.as_ref(),
            c,
            false,
            &format!("configmap \"{cm_name}\""),
        )?;
        return Ok(own);
    } else {
        return Err(format!(
            "volume \"{name}\": only persistentVolumeClaim, emptyDir, secret and configMap volumes run on the host"
        ));
    };
    mkdir(&dir)?;
    Ok(dir)
}

pub fn mkdir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// The keys of a Secret (`data`, base64, then `stringData`, plain text, whose
/// keys win) or ConfigMap (`data`, `binaryData`). A real API server merges a
/// Secret's `stringData` into `data` when it stores the object; kube-sim's
/// keeps it as sent, so the kubelet's view is rebuilt here.
pub fn keys(obj: &Value, secret: bool) -> Result<Vec<(String, Vec<u8>)>, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut take = |field: &str, encoded: bool| -> Result<(), String> {
        for (k, v) in obj
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let s = v.as_str().unwrap_or("");
            let bytes = if encoded {
                b64.decode(s).map_err(|e| format!("{field}.{k}: {e}"))?
            } else {
                s.as_bytes().to_vec()
            };
            out.retain(|(o, _)| o != k);
            out.push((k.clone(), bytes));
        }
        Ok(())
    };
    if secret {
        take("data", true)?;
        take("stringData", false)?;
    } else {
        take("data", false)?;
        take("binaryData", true)?;
    }
    Ok(out)
}

/// Write the keys of `obj` into `dir` as the kubelet does: every key under
/// its own name, or only `items` (key → path, mode); files get `mode`, else
/// `defaultMode`, else 0644.
fn write_keys(
    dir: &Path,
    obj: Option<&Value>,
    source: &Value,
    secret: bool,
    what: &str,
) -> Result<(), String> {
    mkdir(dir)?;
    let optional = source
        .get("optional")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(obj) = obj else {
        return if optional {
            Ok(())
        } else {
            Err(format!("{what} not found"))
        };
    };
    let default_mode = source
        .get("defaultMode")
        .and_then(Value::as_u64)
        .unwrap_or(0o644) as u32;
    let keys = keys(obj, secret).map_err(|e| format!("{what}: {e}"))?;
    let items = model::arr(source, &["items"]);
    let files: Vec<(String, &[u8], u32)> = if items.is_empty() {
        keys.iter()
            .map(|(k, v)| (k.clone(), v.as_slice(), default_mode))
            .collect()
    } else {
        let mut files = Vec::new();
        for item in items {
            let key = model::str_at(item, &["key"]).unwrap_or("");
            let Some((_, v)) = keys.iter().find(|(k, _)| k == key) else {
                if optional {
                    continue;
                }
                return Err(format!("{what}: couldn't find key {key}"));
            };
            let path = model::str_at(item, &["path"]).unwrap_or(key).to_string();
            let mode = item
                .get("mode")
                .and_then(Value::as_u64)
                .map_or(default_mode, |m| m as u32);
            files.push((path, v.as_slice(), mode));
        }
        files
    };
    for (path, bytes, mode) in files {
        if path.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(format!("{what}: invalid path {path:?}"));
        }
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            mkdir(parent)?;
        }
        std::fs::write(&file, bytes)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| format!("cannot chmod {}: {e}", file.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap()
    }

    /// A Secret's `stringData` (as kube-sim stores it, beside `data`) gives
    /// files too, and wins over `data` for the same key, as the API server's
    /// merge would; `items` can pick its keys.
    #[test]
    fn secret_files_come_from_data_and_string_data() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let secret = json!({
            "data": {"password": b64.encode("pw"), "both": b64.encode("data")},
            "stringData": {"user": "robot", "both": "stringData"}
        });
        let tmp = tempfile::tempdir().unwrap();
        let all = tmp.path().join("all");
        write_keys(&all, Some(&secret), &json!({}), true, "secret").unwrap();
        assert_eq!(read(&all, "password"), "pw");
        assert_eq!(read(&all, "user"), "robot");
        assert_eq!(read(&all, "both"), "stringData");
        let mode = std::fs::metadata(all.join("user"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);

        let picked = tmp.path().join("picked");
        let source = json!({"items": [{"key": "user", "path": "login/name", "mode": 0o400}]});
        write_keys(&picked, Some(&secret), &source, true, "secret").unwrap();
        assert_eq!(read(&picked, "login/name"), "robot");
        assert!(!picked.join("password").exists());

        // A ConfigMap has no stringData: such a field is not a key.
        let cm = json!({"data": {"a": "1"}, "stringData": {"b": "2"}});
        let keys: Vec<String> = keys(&cm, false).unwrap().into_iter().map(|k| k.0).collect();
        assert_eq!(keys, ["a"]);
    }
}
