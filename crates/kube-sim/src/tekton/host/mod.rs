//! The host step runner: each step of a TaskRun's pod runs for real as a host
//! process (no image is pulled; the host's tools stand in for the image's).
//!
//! A pod gets a directory (`<root>/pods/<ns>/<pod>-<uid>`) holding
//! `workspace/`, `tekton/{results,home,scripts,steps}`, its volumes and one
//! directory per step standing for the container's own filesystem; a claim
//! is `<root>/claims/<ns>/<claim>-<uid>`, shared by the pods mounting it. The
//! container paths are mapped to those directories by rewriting them in the
//! step's text ([`paths`]). The pod directory goes when the run ends; a claim
//! directory when the claim is deleted.

pub mod paths;
pub mod process;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cluster::{Cluster, gvr};
use crate::tekton::model;
use paths::Mounts;
pub use process::{StepCommand, StepExit};
use volumes::Layout;

/// Tekton's limit on a step's termination message, which carries its results.
pub const MAX_RESULTS_BYTES: usize = 4096;

/// Where the host runner keeps pods' and claims' directories.
#[derive(Clone, Debug)]
pub struct HostSteps {
    pub root: PathBuf,
}

impl HostSteps {
    fn claims_root(&self) -> PathBuf {
        self.root.join("claims")
    }

    /// Remove the directory of a deleted claim.
    pub fn claim_deleted(&self, pvc: &Value) {
        let dir = volumes::claim_dir(
            &self.claims_root(),
            model::namespace(pvc),
            model::name(pvc),
            model::uid(pvc),
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A pod's directories and the container paths mapped to them.
pub struct HostPod {
    dir: PathBuf,
    ns: String,
    /// Pod-wide mappings: `/workspace`, `/tekton`, the workspaces.
    mounts: Mounts,
    /// Task volumes by name.
    volumes: BTreeMap<String, PathBuf>,
}

impl HostPod {
    /// Make the pod's directories and materialise its workspaces and volumes
    /// (`tr` with its claims filled in, `task_spec` after substitution).
    pub fn prepare(
        opts: &HostSteps,
        cluster: &dyn Cluster,
        tr: &Value,
        pod_name: &str,
        task_spec: &Value,
    ) -> Result<HostPod, String> {
        let ns = model::namespace(tr).to_string();
        let dir = opts
            .root
            .join("pods")
            .join(&ns)
            .join(format!("{pod_name}-{}", model::uid(tr)));
        let mut pod = HostPod {
            dir: dir.clone(),
            ns: ns.clone(),
            mounts: Mounts::default(),
            volumes: BTreeMap::new(),
        };
        for sub in [
            "workspace",
            "tekton/results",
            "tekton/home",
            "tekton/scripts",
        ] {
            volumes::mkdir(&dir.join(sub))?;
        }
        pod.mounts.add("/workspace", &dir.join("workspace"));
        pod.mounts.add("/tekton", &dir.join("tekton"));
        let claims_root = opts.claims_root();
        let layout = Layout {
            pod_dir: &dir,
            claims_root: &claims_root,
        };
        let bindings = model::arr(tr, &["spec", "workspaces"]);
        for w in model::arr(task_spec, &["workspaces"]) {
            let name = model::str_at(w, &["name"]).unwrap_or("");
            let Some(b) = bindings
                .iter()
                .find(|b| model::str_at(b, &["name"]) == Some(name))
            else {
                continue;
            };
            let mut host = volumes::materialise(cluster, &ns, &format!("ws-{name}"), b, &layout)
                .map_err(|e| format!("workspace \"{name}\": {e}"))?;
            if let Some(sub) = model::str_at(b, &["subPath"]).filter(|s| !s.is_empty()) {
                host = host.join(sub);
                volumes::mkdir(&host)?;
            }
            let mount = model::str_at(w, &["mountPath"])
                .map(String::from)
                .unwrap_or_else(|| format!("/workspace/{name}"));
            pod.mounts.add(&mount, &host);
        }
        for v in model::arr(task_spec, &["volumes"]) {
            let name = model::str_at(v, &["name"]).unwrap_or("").to_string();
            let host = volumes::materialise(cluster, &ns, &format!("vol-{name}"), v, &layout)?;
            pod.volumes.insert(name, host);
        }
        Ok(pod)
    }

    pub fn results_dir(&self) -> PathBuf {
        self.dir.join("tekton/results")
    }

    /// The command for step `idx` (`step` from the task spec after
    /// substitution). `Err` is why it cannot run (the container's message).
    pub fn command(
        &self,
        cluster: &dyn Cluster,
        idx: usize,
        name: &str,
        step: &Value,
    ) -> Result<StepCommand, String> {
        let root = self.dir.join("containers").join(name);
        volumes::mkdir(&root)?;
        self.step_dir(idx, name)?;
        let mut mounts = self.mounts.clone();
        for m in model::arr(step, &["volumeMounts"]) {
            let vol = model::str_at(m, &["name"]).unwrap_or("");
            let Some(host) = self.volumes.get(vol) else {
                return Err(format!("volumeMount \"{vol}\": no such volume"));
            };
            let mut host = host.clone();
            if let Some(sub) = model::str_at(m, &["subPath"]).filter(|s| !s.is_empty()) {
                host = host.join(sub);
                volumes::mkdir(&host)?;
            }
            mounts.add(model::str_at(m, &["mountPath"]).unwrap_or("/"), &host);
        }
        let text = |v: &Value| mounts.rewrite(&model::param_value_to_string(v));
        let args: Vec<String> = model::arr(step, &["args"]).iter().map(text).collect();
        let (program, args) = match step.get("script").and_then(Value::as_str) {
            Some(script) => self.script_command(idx, &mounts.rewrite(script), args)?,
            None => {
                let mut cmd: Vec<String> =
                    model::arr(step, &["command"]).iter().map(text).collect();
                if cmd.is_empty() {
                    return Err(
                        "the step has neither script nor command: an image's entrypoint cannot run on the host"
                            .into(),
                    );
                }
                let program = cmd.remove(0);
                cmd.extend(args);
                (program, cmd)
            }
        };
        let env = self.env(cluster, step, &mounts, &root)?;
        let cwd = match model::str_at(step, &["workingDir"]) {
            Some(w) if !w.is_empty() => mounts
                .host_path(w)
                .unwrap_or_else(|| container_path(&root, w)),
            _ => root.clone(),
        };
        volumes::mkdir(&cwd)?;
        Ok(StepCommand {
            program,
            args,
            env,
            cwd,
        })
    }

    /// The step's own directory, as Tekton's entrypoint makes it:
    /// `/tekton/steps/step-<name>/results` (where `$(step.results.<r>.path)`
    /// points, a StepAction's results), also reachable as `/tekton/steps/<idx>`.
    fn step_dir(&self, idx: usize, name: &str) -> Result<(), String> {
        let steps = self.dir.join("tekton/steps");
        let own = format!("step-{name}");
        volumes::mkdir(&steps.join(&own).join("results"))?;
        let link = steps.join(idx.to_string());
        match std::os::unix::fs::symlink(&own, &link) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(format!("cannot link {}: {e}", link.display()))
            }
            _ => Ok(()),
        }
    }

    /// A script is written to `/tekton/scripts`; its shebang line names the
    /// interpreter (and one argument), else it runs under `sh` with `set -e`,
    /// as Tekton's entrypoint does.
    fn script_command(
        &self,
        idx: usize,
        script: &str,
        args: Vec<String>,
    ) -> Result<(String, Vec<String>), String> {
        let file = self.dir.join(format!("tekton/scripts/script-{idx}"));
        let (interpreter, body) = match script.strip_prefix("#!") {
            Some(rest) => {
                let line = rest.lines().next().unwrap_or("").trim();
                let mut parts = line.splitn(2, char::is_whitespace);
                let prog = parts.next().unwrap_or("").to_string();
                let mut inter = vec![prog];
                inter.extend(parts.next().map(|a| a.trim().to_string()));
                (inter, script.to_string())
            }
            None => (vec!["/bin/sh".to_string()], format!("set -e\n{script}")),
        };
        std::fs::write(&file, body).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        let mut inter = interpreter.into_iter();
        let program = inter.next().unwrap_or_default();
        let mut all: Vec<String> = inter.collect();
        all.push(file.display().to_string());
        all.extend(args);
        Ok((program, all))
    }

    /// The step's environment: the host's PATH, HOME in `/tekton/home`, what the
    /// builder images set (chroot isolation, containers storage in the
    /// container's filesystem), then the step's `env` (values mapped).
    fn env(
        &self,
        cluster: &dyn Cluster,
        step: &Value,
        mounts: &Mounts,
        root: &Path,
    ) -> Result<Vec<(String, String)>, String> {
        let host_path =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), host_path.clone());
        env.insert(
            "HOME".into(),
            self.dir.join("tekton/home").display().to_string(),
        );
        env.insert("BUILDAH_ISOLATION".into(), "chroot".into());
        env.insert(
            "CONTAINERS_STORAGE_CONF".into(),
            storage_conf(root, mounts)?,
        );
        for e in model::arr(step, &["env"]) {
            let name = model::str_at(e, &["name"]).unwrap_or("").to_string();
            let value = match e.get("valueFrom") {
                Some(from) => self.value_from(cluster, from)?,
                None => mounts.rewrite(model::str_at(e, &["value"]).unwrap_or("")),
            };
            env.insert(name, value);
        }
        // A PATH the image set names its own directories: the host's tools follow.
        if let Some(p) = env.get_mut("PATH")
            && *p != host_path
        {
            *p = format!("{p}:{host_path}");
        }
        Ok(env.into_iter().collect())
    }

    fn value_from(&self, cluster: &dyn Cluster, from: &Value) -> Result<String, String> {
        let (sel, g, what) = if let Some(s) = from.get("secretKeyRef") {
            (s, &gvr::SECRETS, "secret")
        } else if let Some(c) = from.get("configMapKeyRef") {
            (c, &gvr::CONFIGMAPS, "configmap")
        } else {
            return Err(
                "env valueFrom: only secretKeyRef and configMapKeyRef run on the host".into(),
            );
        };
        let name = model::str_at(sel, &["name"]).unwrap_or("");
        let key = model::str_at(sel, &["key"]).unwrap_or("");
        let optional = sel
            .get("optional")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let obj = cluster.get(g, Some(&self.ns), name);
        let raw = match (&obj, what) {
            // `data` or `stringData`, as the Secret's volume files.
            (Some(o), "secret") => volumes::keys(o, true)
                .map_err(|e| format!("secret \"{name}\": {e}"))?
                .into_iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| String::from_utf8_lossy(&v).into_owned()),
            (Some(o), _) => model::str_at(o, &["data", key]).map(String::from),
            (None, _) => None,
        };
        match raw {
            Some(v) => Ok(v),
            None if optional => Ok(String::new()),
            None if obj.is_none() => Err(format!("{what} \"{name}\" not found")),
            None => Err(format!(
                "couldn't find key {key} in {what} {}/{name}",
                self.ns
            )),
        }
    }

    /// The results the Task declares that its steps wrote so far; `Err` when
    /// they exceed Tekton's termination message limit.
    pub fn read_results(&self, task_spec: &Value) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let mut size = 0;
        for r in model::arr(task_spec, &["results"]) {
            let Some(n) = model::str_at(r, &["name"]) else {
                continue;
            };
            if let Ok(bytes) = std::fs::read(self.results_dir().join(n)) {
                size += n.len() + bytes.len();
                out.push((n.to_string(), String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
        if size > MAX_RESULTS_BYTES {
            return Err(format!(
                "Termination message is above max allowed size {MAX_RESULTS_BYTES}, caused by large task result."
            ));
        }
        Ok(out)
    }
}

/// The pod's directory (its Secrets' files with it) goes with the run.
impl Drop for HostPod {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An absolute container path no mount covers lives in the container's own
/// filesystem (the step's directory).
fn container_path(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// A containers `storage.conf` whose graph and run roots are where the
/// container's `/var/lib/containers/storage` and `/run/containers/storage`
/// would be: a volume mounted there (shared by steps), else the step's own.
fn storage_conf(root: &Path, mounts: &Mounts) -> Result<String, String> {
    let at = |p: &str| {
        mounts
            .host_path(p)
            .unwrap_or_else(|| container_path(root, p))
    };
    let graph = at("/var/lib/containers/storage");
    let run = at("/run/containers/storage");
    let conf = root.join("storage.conf");
    let text = format!(
        "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
        graph.display(),
        run.display()
    );
    std::fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    Ok(conf.display().to_string())
}

/// Is `program` (a path, or a name looked up in `path`) on this host?
pub fn available(program: &str, path: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    path.split(':')
        .any(|d| !d.is_empty() && Path::new(d).join(program).is_file())
}
