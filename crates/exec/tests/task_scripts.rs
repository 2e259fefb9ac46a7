//! Runs every step script of the shipped Tasks (`tekton/tasks/*.yaml`, read
//! from the repository) with hostile parameter values and fake build tools
//! (see `task_runner` for how a step runs and what differs from a cluster),
//! and checks that each value reaches the tool as exactly one argument and
//! nothing else does.

mod task_runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use task_runner::*;

const IMAGE: &str = "registry.example.com/team/app:1.0";
const CACHE_REPO: &str = "registry.example.com/team/cache";

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

fn task_spec(task: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tekton/tasks")
        .join(format!("{task}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    doc["spec"].clone()
}

/// Run every step of the repository's Task `name`.
fn run_task(run: &Run, name: &str, params: &BTreeMap<&str, Param>) -> i32 {
    run.task(name, &task_spec(name), params)
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
        assert_eq!(run_task(&run, "docker-build", &params), 0, "{shell:?}");
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
        assert_eq!(run_task(&run, "buildx", &params), 0, "{shell:?}");
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
fn buildx_keeps_labels_labels_when_build_args_and_platforms_are_empty() {
    let labels = vec!["org.example.a=1".to_string(), "-v".to_string()];
    for shell in shells() {
        let run = Run::new(shell);
        seed_source(&run);
        let params = BTreeMap::from([("IMAGE", s(IMAGE)), ("LABELS", Param::A(labels.clone()))]);
        assert_eq!(run_task(&run, "buildx", &params), 0, "{shell:?}");
        let calls = run.calls();
        let mut build = vec![
            is("build"),
            is("--frontend"),
            is("dockerfile.v0"),
            is("--local"),
            is("context=."),
            is("--local"),
            is("dockerfile=."),
            is("--opt"),
            is("filename=Dockerfile"),
        ];
        build.extend(pairs("--opt", &labels, "label:"));
        build.extend([
            is("--output"),
            is(format!("type=image,name={IMAGE},push=true")),
            is("--metadata-file"),
            Arg::Under(run.path("tmp")),
        ]);
        assert_argv(&run, &calls[0], "buildctl-daemonless.sh", &build);
    }
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
        assert_eq!(run_task(&run, "kaniko", &params), 0, "{shell:?}");
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
        assert_eq!(
            run_task(&run, "packer", &packer_params(&vars)),
            0,
            "{shell:?}"
        );
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
        let code = run_task(&run, "packer", &packer_params(&[]));
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
        assert_eq!(run_task(&run, "git-clone", &params), 0, "{shell:?}");
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

#[test]
fn git_clone_of_full_history_passes_no_depth() {
    for shell in shells() {
        let run = Run::new(shell);
        let params = BTreeMap::from([
            ("url", s("https://git.example.com/team/app.git")),
            ("depth", s("0")),
        ]);
        assert_eq!(run_task(&run, "git-clone", &params), 0, "{shell:?}");
        let fetch = &run.calls()[2];
        let want = [is("fetch"), is("-q"), is("origin"), is("--"), is("HEAD")];
        assert_argv(&run, fetch, "git", &want);
    }
}
