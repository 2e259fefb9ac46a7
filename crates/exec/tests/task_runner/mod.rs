//! Runs a Tekton Task's step scripts on this machine as Tekton would, with
//! fake build tools that record their arguments. Shared by
//! `crates/exec/tests/task_scripts.rs` (every shipped Task) and the attack
//! test `crates/imagefactory/tests/attacks/build_args.rs` (the Task kube-sim
//! holds, with the params of the PipelineRun the server submitted).
//!
//! A step runs as Tekton runs it: `$(params.x)`, `$(results.x.path)`,
//! `$(workspaces.x.path)` and `$(workspaces.x.bound)` are substituted
//! textually (one pass) in the script, args, env values and workingDir; an
//! args element `$(params.x[*])` becomes one element per array item; the
//! script is written to a file and run by the interpreter its shebang names
//! (no shebang: `sh`) with the args as `"$@"`, the environment cleared but
//! for `PATH`, `HOME`, `TMPDIR` and the step's `env`.
//!
//! Differences from a cluster, all in this harness: `/bin/sh` and kaniko's
//! `/busybox/sh` run as this machine's `sh` (dash here) and again as
//! `bash --posix` (buildah's image has bash as `/bin/sh`); the absolute path
//! `/kaniko/executor` in a script is rewritten to the fake's path, since it
//! cannot be put first on `PATH`. The fakes (`buildah`,
//! `buildctl-daemonless.sh`, `git`, `packer`, kaniko's executor) are sh
//! scripts first on `PATH` that append their name, argument count and
//! arguments, NUL-separated, to a record file, and write what the real tool
//! would (digest file, metadata file, digest on stdout, commit id).
#![allow(dead_code)] // each user takes part of it

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub const DIGEST: &str = "sha256:abababababababababababababababababababababababababababababababab";
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

pub enum Arg {
    Is(String),
    /// A path the script chose (mktemp): only its directory is known.
    Under(PathBuf),
}

pub fn is(s: impl Into<String>) -> Arg {
    Arg::Is(s.into())
}

pub fn all(values: &[String], prefix: &str) -> Vec<Arg> {
    values.iter().map(|v| is(format!("{prefix}{v}"))).collect()
}

pub fn pairs(flag: &str, values: &[String], prefix: &str) -> Vec<Arg> {
    values
        .iter()
        .flat_map(|v| [is(flag), is(format!("{prefix}{v}"))])
        .collect()
}

/// One scratch directory per Task run: fakes, home, results, workspaces.
pub struct Run {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub shell: Shell,
    /// Extra environment for every step (e.g. where a real tool keeps its
    /// storage), on top of `PATH`, `HOME`, `TMPDIR` and the step's `env`.
    pub env: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug)]
pub enum Shell {
    Sh,
    BashPosix,
}

impl Run {
    pub fn new(shell: Shell) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for sub in ["bin", "home", "tmp", "results", "scripts", "workspaces"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let run = Run {
            _dir: dir,
            root,
            shell,
            env: Vec::new(),
        };
        run.install_fakes(0);
        run
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.root.join(sub)
    }

    pub fn workspace(&self, name: &str) -> PathBuf {
        self.root.join("workspaces").join(name)
    }

    /// Bind a Secret to workspace `name` the way the kubelet mounts one: each
    /// key a file, reached through the `..data` symlink to a timestamped
    /// directory (so a tool sees exactly the Secret's keys, nothing more).
    pub fn secret_workspace(&self, name: &str, keys: &[(&str, &[u8])]) {
        let ws = self.workspace(name);
        let data = ws.join("..2026_01_01_00_00_00.000000001");
        std::fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink("..2026_01_01_00_00_00.000000001", ws.join("..data")).unwrap();
        for (key, bytes) in keys {
            std::fs::write(data.join(key), bytes).unwrap();
            std::os::unix::fs::symlink(format!("..data/{key}"), ws.join(key)).unwrap();
        }
    }

    pub fn result(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.join("results").join(name)).unwrap_or_default()
    }

    /// The fakes; `packer_exit` is what `packer build` exits with.
    pub fn install_fakes(&self, packer_exit: i32) {
        let record = self.path("record").display().to_string();
        let head = |name: &str| {
            format!(
                "#!/bin/sh\n{{ printf '%s\\0' '{name}' \"$#\"; if [ \"$#\" -gt 0 ]; then printf '%s\\0' \"$@\"; fi; }} >> '{record}'\n"
            )
        };
        // The file after a flag, in either `--flag=file` or `--flag file` form.
        let file_after = |flag: &str| {
            format!(
                "prev=''\nfor a in \"$@\"; do\n  case $a in {flag}=*) out=${{a#{flag}=}} ;; esac\n  [ \"$prev\" = '{flag}' ] && out=$a\n  prev=$a\ndone\n"
            )
        };
        let fakes = [
            (
                "buildah",
                format!(
                    "{}{}if [ \"$1\" = push ]; then printf '%s' '{DIGEST}' > \"$out\"; fi\n",
                    head("buildah"),
                    file_after("--digestfile")
                ),
            ),
            (
                "buildctl-daemonless.sh",
                format!(
                    "{}{}printf '{{\"containerimage.digest\": \"%s\"}}' '{DIGEST}' > \"$out\"\n",
                    head("buildctl-daemonless.sh"),
                    file_after("--metadata-file")
                ),
            ),
            (
                "kaniko-executor",
                format!(
                    "{}{}printf '%s' '{DIGEST}' > \"$out\"\n",
                    head("/kaniko/executor"),
                    file_after("--digest-file")
                ),
            ),
            (
                "packer",
                format!(
                    "{}if [ \"$1\" = build ]; then echo '1,,ui,say,pushed {DIGEST}'; exit {packer_exit}; fi\n",
                    head("packer")
                ),
            ),
            (
                "git",
                format!(
                    "{}if [ \"$1\" = rev-parse ]; then echo '{COMMIT}'; fi\n",
                    head("git")
                ),
            ),
        ];
        for (name, text) in fakes {
            let path = self.path("bin").join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    /// Every fake call so far: (tool, argv without the program name).
    pub fn calls(&self) -> Vec<(String, Vec<String>)> {
        let bytes = std::fs::read(self.path("record")).unwrap_or_default();
        let mut fields: Vec<String> = bytes
            .split(|b| *b == 0)
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect();
        fields.pop(); // after the last NUL
        let mut out = Vec::new();
        let mut it = fields.into_iter();
        while let Some(tool) = it.next() {
            let n: usize = it.next().unwrap().parse().unwrap();
            out.push((tool, it.by_ref().take(n).collect()));
        }
        out
    }

    /// Run every step of `task` with `params`; the exit code of the first
    /// failing step, or 0.
    pub fn task(&self, task: &str, spec: &Value, params: &BTreeMap<&str, Param>) -> i32 {
        self.steps(task, spec, params, None)
    }

    /// Run the step named `only` (every step when `None`) of `task`; the exit
    /// code of the first failing step, or 0.
    pub fn steps(
        &self,
        task: &str,
        spec: &Value,
        params: &BTreeMap<&str, Param>,
        only: Option<&str>,
    ) -> i32 {
        let (strings, arrays) = param_values(spec, params);
        let mut vars: BTreeMap<String, String> = strings
            .iter()
            .map(|(k, v)| (format!("params.{k}"), v.clone()))
            .collect();
        for r in spec["results"].as_array().into_iter().flatten() {
            let name = r["name"].as_str().unwrap();
            let path = self.root.join("results").join(name);
            vars.insert(format!("results.{name}.path"), path.display().to_string());
        }
        // An optional workspace is bound iff the caller created its directory;
        // unbound, Tekton gives it an empty path.
        for w in spec["workspaces"].as_array().into_iter().flatten() {
            let name = w["name"].as_str().unwrap();
            let bound = w["optional"] != true || self.workspace(name).is_dir();
            let path = if bound {
                std::fs::create_dir_all(self.workspace(name)).unwrap();
                self.workspace(name).display().to_string()
            } else {
                String::new()
            };
            vars.insert(format!("workspaces.{name}.path"), path);
            vars.insert(format!("workspaces.{name}.bound"), bound.to_string());
        }
        let steps = spec["steps"].as_array().unwrap();
        if let Some(only) = only {
            assert!(
                steps.iter().any(|s| s["name"] == only),
                "{task} has no step {only}"
            );
        }
        for step in steps
            .iter()
            .filter(|s| only.is_none_or(|only| s["name"] == only))
        {
            let code = self.step(task, step, &vars, &arrays);
            if code != 0 {
                return code;
            }
        }
        0
    }

    fn step(
        &self,
        task: &str,
        step: &Value,
        vars: &BTreeMap<String, String>,
        arrays: &BTreeMap<String, Vec<String>>,
    ) -> i32 {
        let name = step["name"].as_str().unwrap();
        let script = step["script"].as_str().expect("every step has a script");
        assert!(
            !script.contains("$(params."),
            "{task}/{name}: a param substituted into the script text becomes shell code"
        );
        let fake_kaniko = self.path("bin").join("kaniko-executor");
        let script = substitute(script, vars)
            .replace("/kaniko/executor", &fake_kaniko.display().to_string());
        let file = self.path("scripts").join(format!("{task}-{name}"));
        std::fs::write(&file, &script).unwrap();
        let mut args: Vec<String> = Vec::new();
        for a in step["args"].as_array().into_iter().flatten() {
            let a = a.as_str().unwrap();
            match array_reference(a) {
                Some(param) => args.extend(arrays[param].iter().cloned()),
                None => args.push(substitute(a, vars)),
            }
        }
        let mut cmd = match (script.lines().next(), self.shell) {
            (Some("#!/bin/sh" | "#!/busybox/sh"), Shell::Sh) => Command::new("sh"),
            (Some("#!/bin/sh" | "#!/busybox/sh"), Shell::BashPosix) => {
                let mut c = Command::new("bash");
                c.arg("--posix");
                c
            }
            (Some(other), _) if other.starts_with("#!") => panic!("{task}/{name}: {other}"),
            _ => Command::new("sh"),
        };
        let path = format!(
            "{}:/usr/local/bin:/usr/bin:/bin",
            self.path("bin").display()
        );
        cmd.arg(&file).args(&args).env_clear();
        cmd.env("PATH", path)
            .env("HOME", self.path("home"))
            .env("TMPDIR", self.path("tmp"));
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        for e in step["env"].as_array().into_iter().flatten() {
            let value = substitute(e["value"].as_str().unwrap(), vars);
            cmd.env(e["name"].as_str().unwrap(), value);
        }
        let dir = step["workingDir"]
            .as_str()
            .map(|d| PathBuf::from(substitute(d, vars)))
            .unwrap_or_else(|| self.root.clone());
        let out = cmd.current_dir(dir).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            eprintln!("{task}/{name} ({:?}) failed: {stderr}", self.shell);
        } else if !stderr.is_empty() {
            eprintln!("{task}/{name} ({:?}) stderr: {stderr}", self.shell);
        }
        out.status.code().unwrap_or(-1)
    }
}

#[derive(Clone, Debug)]
pub enum Param {
    S(String),
    A(Vec<String>),
}

pub fn s(v: impl Into<String>) -> Param {
    Param::S(v.into())
}

/// Declared params with their defaults, overridden by `given`.
fn param_values(
    spec: &Value,
    given: &BTreeMap<&str, Param>,
) -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let mut strings = BTreeMap::new();
    let mut arrays = BTreeMap::new();
    for p in spec["params"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let array = p["type"] == "array";
        match (given.get(name), array) {
            (Some(Param::S(v)), false) => {
                strings.insert(name.to_string(), v.clone());
            }
            (Some(Param::A(v)), true) => {
                arrays.insert(name.to_string(), v.clone());
            }
            (Some(_), _) => panic!("param {name}: wrong type"),
            (None, false) => {
                let default = p["default"].as_str();
                strings.insert(
                    name.to_string(),
                    default
                        .unwrap_or_else(|| panic!("{name} has no default"))
                        .into(),
                );
            }
            (None, true) => {
                let items = p["default"].as_array().expect("array default");
                arrays.insert(
                    name.to_string(),
                    items.iter().map(|i| i.as_str().unwrap().into()).collect(),
                );
            }
        }
    }
    for name in given.keys() {
        assert!(
            strings.contains_key(*name) || arrays.contains_key(*name),
            "undeclared param {name}"
        );
    }
    (strings, arrays)
}

/// `x` for an args element that is exactly `$(params.x[*])`.
fn array_reference(arg: &str) -> Option<&str> {
    arg.strip_prefix("$(params.")?.strip_suffix("[*])")
}

/// Tekton's textual substitution, in one pass: a `$(...)` naming a known
/// variable is replaced, any other (shell command substitution) is kept.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after
            .find(')')
            .and_then(|end| Some((vars.get(&after[..end])?, end)))
        {
            Some((value, end)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    for kind in ["$(params.", "$(results.", "$(workspaces."] {
        assert!(!out.contains(kind), "unsubstituted {kind} in {out:?}");
    }
    out
}

pub fn assert_argv(run: &Run, call: &(String, Vec<String>), tool: &str, expected: &[Arg]) {
    let (name, argv) = call;
    assert_eq!(name, tool, "{:?}", run.shell);
    let matches = argv.len() == expected.len()
        && argv.iter().zip(expected).all(|(a, e)| match e {
            Arg::Is(s) => a == s,
            Arg::Under(dir) => Path::new(a).starts_with(dir),
        });
    let shown: Vec<String> = expected
        .iter()
        .map(|e| match e {
            Arg::Is(s) => s.clone(),
            Arg::Under(d) => format!("{}/…", d.display()),
        })
        .collect();
    assert!(
        matches,
        "{tool} ({:?}) got\n{argv:#?}\nexpected\n{shown:#?}",
        run.shell
    );
}

pub fn shells() -> Vec<Shell> {
    let mut shells = vec![Shell::Sh];
    if Command::new("bash").arg("-c").arg("true").output().is_ok() {
        shells.push(Shell::BashPosix);
    }
    shells
}
