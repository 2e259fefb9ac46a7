//! Runs every step script of the shipped Tasks (`tekton/tasks/*.yaml`, read
//! from the repository) with hostile parameter values and fake build tools,
//! and checks that each value reaches the tool as exactly one argument.
//!
//! A step runs here as Tekton runs it: `$(params.x)`, `$(results.x.path)`,
//! `$(workspaces.x.path)` and `$(workspaces.x.bound)` are substituted
//! textually (one pass) in the script, args, env values and workingDir; an
//! args element `$(params.x[*])` becomes one element per array item; the
//! script is written to a file and run by the interpreter its shebang names
//! (no shebang: `sh`) with the args as `"$@"`, the environment cleared but
//! for `PATH`, `HOME`, `TMPDIR` and the step's `env`.
//!
//! Differences from a cluster, all in the harness: `/bin/sh` and kaniko's
//! `/busybox/sh` run as this machine's `sh` (dash here) and again as
//! `bash --posix` (buildah's image has bash as `/bin/sh`); the absolute path
//! `/kaniko/executor` in a script is rewritten to the fake's path, since it
//! cannot be put first on `PATH`. The fakes (`buildah`,
//! `buildctl-daemonless.sh`, `git`, `packer`, kaniko's executor) are sh
//! scripts first on `PATH` that append their name, argument count and
//! arguments, NUL-separated, to a record file, and write what the real tool
//! would (digest file, metadata file, digest on stdout, commit id).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const IMAGE: &str = "registry.example.com/team/app:1.0";
const CACHE_REPO: &str = "registry.example.com/team/cache";
const DIGEST: &str = "sha256:abababababababababababababababababababababababababababababababab";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A file outside the test's directory that an injected command would create.
fn marker() -> PathBuf {
    std::env::temp_dir().join(format!("if-task-scripts-pwned-{}", std::process::id()))
}

/// Values a tenant could send: spaces, an injected flag, quotes, command
/// substitution, backticks, a newline, glob characters, leading dashes.
fn hostile(key: &str) -> Vec<String> {
    let m = marker().display().to_string();
    vec![
        format!("{key}JAVA_OPTS=-Xmx1g -Xms1g"),
        format!("{key}A=a b --volume=/:/host"),
        format!("{key}Q=\"double\" 'single' \\"),
        format!("{key}SUB=$(touch {m})"),
        format!("{key}TICK=`touch {m}`"),
        format!("{key}SEMI=x; touch {m} && echo"),
        format!("{key}NL=line one\nline two"),
        format!("{key}GLOB=*"),
        format!("{key}EMPTY="),
        "*".to_string(),
        "-v".to_string(),
    ]
}

enum Arg {
    Is(String),
    /// A path the script chose (mktemp): only its directory is known.
    Under(PathBuf),
}

fn is(s: impl Into<String>) -> Arg {
    Arg::Is(s.into())
}

fn all(values: &[String], prefix: &str) -> Vec<Arg> {
    values.iter().map(|v| is(format!("{prefix}{v}"))).collect()
}

fn pairs(flag: &str, values: &[String], prefix: &str) -> Vec<Arg> {
    values
        .iter()
        .flat_map(|v| [is(flag), is(format!("{prefix}{v}"))])
        .collect()
}

/// One scratch directory per Task run: fakes, home, results, workspaces.
struct Run {
    _dir: tempfile::TempDir,
    root: PathBuf,
    shell: Shell,
}

#[derive(Clone, Copy, Debug)]
enum Shell {
    Sh,
    BashPosix,
}

impl Run {
    fn new(shell: Shell) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for sub in ["bin", "home", "tmp", "results", "scripts", "workspaces"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let run = Run {
            _dir: dir,
            root,
            shell,
        };
        run.install_fakes(0);
        run
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.root.join(sub)
    }

    fn workspace(&self, name: &str) -> PathBuf {
        self.root.join("workspaces").join(name)
    }

    fn result(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.join("results").join(name)).unwrap_or_default()
    }

    /// The fakes; `packer_exit` is what `packer build` exits with.
    fn install_fakes(&self, packer_exit: i32) {
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
    fn calls(&self) -> Vec<(String, Vec<String>)> {
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
    fn task(&self, task: &str, params: &BTreeMap<&str, Param>) -> i32 {
        let spec = task_spec(task);
        let (strings, arrays) = param_values(&spec, params);
        let mut vars: BTreeMap<String, String> = strings
            .iter()
            .map(|(k, v)| (format!("params.{k}"), v.clone()))
            .collect();
        for r in spec["results"].as_array().into_iter().flatten() {
            let name = r["name"].as_str().unwrap();
            let path = self.root.join("results").join(name);
            vars.insert(format!("results.{name}.path"), path.display().to_string());
        }
        for w in spec["workspaces"].as_array().into_iter().flatten() {
            let name = w["name"].as_str().unwrap();
            std::fs::create_dir_all(self.workspace(name)).unwrap();
            let path = self.workspace(name).display().to_string();
            vars.insert(format!("workspaces.{name}.path"), path);
            vars.insert(format!("workspaces.{name}.bound"), "true".into());
        }
        for step in spec["steps"].as_array().unwrap() {
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
        }
        out.status.code().unwrap_or(-1)
    }
}

enum Param {
    S(String),
    A(Vec<String>),
}

fn s(v: impl Into<String>) -> Param {
    Param::S(v.into())
}

fn task_spec(task: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tekton/tasks")
        .join(format!("{task}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    doc["spec"].clone()
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
fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
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

fn assert_argv(run: &Run, call: &(String, Vec<String>), tool: &str, expected: &[Arg]) {
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

fn shells() -> Vec<Shell> {
    let mut shells = vec![Shell::Sh];
    if Command::new("bash").arg("-c").arg("true").output().is_ok() {
        shells.push(Shell::BashPosix);
    }
    shells
}

/// The source workspace holds files a glob would expand to.
fn seed_source(run: &Run) {
    let src = run.workspace("source");
    std::fs::create_dir_all(&src).unwrap();
    for f in ["Dockerfile", "evil", "-rf"] {
        std::fs::write(src.join(f), "").unwrap();
    }
}

fn assert_no_marker() {
    assert!(
        !marker().exists(),
        "a value ran as a command: {} exists",
        marker().display()
    );
}

#[test]
fn docker_build_passes_every_value_as_one_argument() {
    let args = hostile("");
    let labels = hostile("org.example.");
    for shell in shells() {
        let run = Run::new(shell);
        seed_source(&run);
        let params = BTreeMap::from([
            ("IMAGE", s(IMAGE)),
            ("DOCKERFILE", s("build dir/Docker file")),
            ("CONTEXT", s("-ctx dir")),
            ("BUILD_ARGS", Param::A(args.clone())),
            ("TARGET", s("final")),
            ("LABELS", Param::A(labels.clone())),
        ]);
        assert_eq!(run.task("docker-build", &params), 0, "{shell:?}");
        let calls = run.calls();
        assert_eq!(calls.len(), 2, "{calls:#?}");
        let mut bud = vec![is("bud"), is("--storage-driver=vfs"), is("--format=docker")];
        bud.extend(all(&args, "--build-arg="));
        bud.extend(all(&labels, "--label="));
        bud.extend([
            is("--target=final"),
            is("--file=build dir/Docker file"),
            is(format!("--tag={IMAGE}")),
            is("--"),
            is("-ctx dir"),
        ]);
        assert_argv(&run, &calls[0], "buildah", &bud);
        let push = [
            is("push"),
            is("--storage-driver=vfs"),
            Arg::Under(run.path("tmp")),
            is("--"),
            is(IMAGE),
            is(format!("docker://{IMAGE}")),
        ];
        // `--digestfile=<mktemp dir>/digest`: compare its path part.
        let mut push_call = calls[1].clone();
        push_call.1[2] = push_call.1[2]
            .strip_prefix("--digestfile=")
            .unwrap_or("not --digestfile=")
            .to_string();
        assert_argv(&run, &push_call, "buildah", &push);
        assert_eq!(run.result("IMAGE_DIGEST"), DIGEST);
        assert_eq!(run.result("IMAGE_URL"), IMAGE);
    }
    assert_no_marker();
}

#[test]
fn buildx_passes_every_value_as_one_argument() {
    let args = hostile("");
    let labels = hostile("org.example.");
    for shell in shells() {
        let run = Run::new(shell);
        seed_source(&run);
        let params = BTreeMap::from([
            ("IMAGE", s(IMAGE)),
            ("DOCKERFILE", s("build dir/Docker file")),
            ("CONTEXT", s("-ctx dir")),
            ("BUILD_ARGS", Param::A(args.clone())),
            (
                "PLATFORMS",
                Param::A(vec!["linux/amd64".into(), "linux/arm64/v8".into()]),
            ),
            ("TARGET", s("final")),
            ("CACHE", s("true")),
            ("CACHE_REPO", s(CACHE_REPO)),
            ("LABELS", Param::A(labels.clone())),
        ]);
        assert_eq!(run.task("buildx", &params), 0, "{shell:?}");
        let calls = run.calls();
        assert_eq!(calls.len(), 1, "{calls:#?}");
        let mut build = vec![
            is("build"),
            is("--frontend"),
            is("dockerfile.v0"),
            is("--local"),
            is("context=-ctx dir"),
            is("--local"),
            is("dockerfile=build dir"),
            is("--opt"),
            is("filename=Docker file"),
        ];
        build.extend(pairs("--opt", &args, "build-arg:"));
        build.extend(pairs("--opt", &labels, "label:"));
        build.extend([
            is("--opt"),
            is("platform=linux/amd64,linux/arm64/v8"),
            is("--opt"),
            is("target=final"),
            is("--export-cache"),
            is(format!("type=registry,ref={CACHE_REPO}")),
            is("--import-cache"),
            is(format!("type=registry,ref={CACHE_REPO}")),
            is("--output"),
            is(format!("type=image,name={IMAGE},push=true")),
            is("--metadata-file"),
            Arg::Under(run.path("tmp")),
        ]);
        assert_argv(&run, &calls[0], "buildctl-daemonless.sh", &build);
        assert_eq!(run.result("IMAGE_DIGEST"), DIGEST);
        assert_eq!(run.result("IMAGE_URL"), IMAGE);
    }
    assert_no_marker();
}

#[test]
fn kaniko_passes_every_value_as_one_argument() {
    let args = hostile("");
    for shell in shells() {
        let run = Run::new(shell);
        seed_source(&run);
        let params = BTreeMap::from([
            ("IMAGE", s(IMAGE)),
            ("DOCKERFILE", s("build dir/Docker file")),
            ("CONTEXT", s("-ctx dir")),
            ("BUILD_ARGS", Param::A(args.clone())),
            ("TARGET", s("final")),
            ("CACHE", s("true")),
            ("CACHE_REPO", s(CACHE_REPO)),
        ]);
        assert_eq!(run.task("kaniko", &params), 0, "{shell:?}");
        let calls = run.calls();
        assert_eq!(calls.len(), 1, "{calls:#?}");
        let source = run.workspace("source").display().to_string();
        let digest_file = run.root.join("results/IMAGE_DIGEST");
        let mut expected = vec![
            is("--dockerfile=build dir/Docker file"),
            is(format!("--context=dir://{source}/-ctx dir")),
            is(format!("--destination={IMAGE}")),
            is(format!("--digest-file={}", digest_file.display())),
        ];
        expected.extend(all(&args, "--build-arg="));
        expected.extend([
            is("--target=final"),
            is("--cache=true"),
            is(format!("--cache-repo={CACHE_REPO}")),
        ]);
        assert_argv(&run, &calls[0], "/kaniko/executor", &expected);
        assert_eq!(run.result("IMAGE_DIGEST"), DIGEST);
        assert_eq!(run.result("IMAGE_URL"), IMAGE);
    }
    assert_no_marker();
}

fn packer_params(vars: &[String]) -> BTreeMap<&'static str, Param> {
    BTreeMap::from([
        ("IMAGE", s(IMAGE)),
        ("TEMPLATE", s("-my template.pkr.hcl")),
        ("VARS", Param::A(vars.to_vec())),
    ])
}

#[test]
fn packer_passes_every_value_as_one_argument() {
    let vars = hostile("");
    for shell in shells() {
        let run = Run::new(shell);
        seed_source(&run);
        assert_eq!(run.task("packer", &packer_params(&vars)), 0, "{shell:?}");
        let calls = run.calls();
        assert_eq!(calls.len(), 2, "{calls:#?}");
        let template = "./-my template.pkr.hcl";
        assert_argv(&run, &calls[0], "packer", &[is("init"), is(template)]);
        let mut build = vec![
            is("build"),
            is("-color=false"),
            is("-machine-readable"),
            is("-var"),
            is(format!("image={IMAGE}")),
        ];
        build.extend(pairs("-var", &vars, ""));
        build.push(is(template));
        assert_argv(&run, &calls[1], "packer", &build);
        assert_eq!(run.result("IMAGE_DIGEST"), DIGEST);
        assert_eq!(run.result("IMAGE_URL"), IMAGE);
    }
    assert_no_marker();
}

#[test]
fn a_failing_packer_build_fails_the_step_despite_the_tee() {
    for shell in shells() {
        let run = Run::new(shell);
        seed_source(&run);
        run.install_fakes(3);
        let code = run.task("packer", &packer_params(&[]));
        assert_eq!(code, 3, "{shell:?}: packer's exit status is the step's");
    }
}

#[test]
fn git_clone_passes_url_and_revision_as_one_argument_each() {
    let m = marker().display().to_string();
    let url = format!("--upload-pack=touch {m}; https://git.example.com/a b.git");
    let revision = format!("-b $(touch {m}) `id` *");
    for shell in shells() {
        let run = Run::new(shell);
        let auth = run.workspace("basic-auth");
        std::fs::create_dir_all(&auth).unwrap();
        std::fs::write(auth.join(".git-credentials"), "https://me:pw@h\n").unwrap();
        std::fs::write(auth.join(".gitconfig"), "[credential]\n").unwrap();
        std::fs::create_dir_all(run.workspace("output")).unwrap();
        std::fs::write(run.workspace("output").join("evil"), "").unwrap();
        let params = BTreeMap::from([("url", s(url.clone())), ("revision", s(revision.clone()))]);
        assert_eq!(run.task("git-clone", &params), 0, "{shell:?}");
        let calls = run.calls();
        let expected: [&[Arg]; 5] = [
            &[is("init"), is("-q"), is(".")],
            &[is("remote"), is("add"), is("--"), is("origin"), is(&url)],
            &[
                is("fetch"),
                is("-q"),
                is("--depth=1"),
                is("origin"),
                is("--"),
                is(&revision),
            ],
            &[is("checkout"), is("-q"), is("FETCH_HEAD")],
            &[is("rev-parse"), is("HEAD")],
        ];
        assert_eq!(calls.len(), expected.len(), "{calls:#?}");
        for (call, want) in calls.iter().zip(expected) {
            assert_argv(&run, call, "git", want);
        }
        assert_eq!(run.result("commit"), COMMIT);
        assert_eq!(run.result("url"), url);
        let copied = std::fs::read_to_string(run.path("home/.git-credentials")).unwrap();
        assert_eq!(copied, "https://me:pw@h\n");
    }
    assert_no_marker();
}
