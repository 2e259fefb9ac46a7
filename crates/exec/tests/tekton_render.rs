//! Rendering PipelineRuns: params per method, injection-proofness, strict
//! undefined values, validation and v1beta1 conversion.

use std::collections::BTreeMap;
use std::time::Duration;

use imagefactory_domain::provider::ProviderOwner;
use imagefactory_domain::{BuildMethod, MethodConfig};
use imagefactory_exec::tekton::client::{ClusterSettings, TektonVersion};
use imagefactory_exec::tekton::plan::{BoundSecrets, render_context};
use imagefactory_exec::tekton::render::{Templates, build_task_name, run_params};
use imagefactory_exec::tekton::validate::{Expected, to_version, validate};
use imagefactory_exec::{ExecutionContext, GitSource};
use serde_json::{Value, json};
use uuid::Uuid;

fn parse(config: &Value) -> Result<ClusterSettings, String> {
    ClusterSettings::parse(config, ProviderOwner::Tenant)
}

fn settings() -> ClusterSettings {
    parse(&json!({
        "auth_method": "token", "endpoint": "https://127.0.0.1:6443", "token": "t"
    }))
    .unwrap()
}

fn context(method: BuildMethod, git_ref: &str, config: MethodConfig) -> ExecutionContext {
    ExecutionContext {
        build_id: Uuid::parse_str("0193abcd-1111-7000-8000-0000000a1b2c").unwrap(),
        tenant_id: Uuid::parse_str("aabbccdd-2222-4000-8000-000000000000").unwrap(),
        project_id: Uuid::nil(),
        execution_id: Uuid::parse_str("eeeeeeee-3333-4000-8000-000000000000").unwrap(),
        attempt: 2,
        method,
        source: GitSource {
            url: imagefactory_domain::GitUrl::parse("https://git.example.com/team/app.git")
                .unwrap(),
            git_ref: imagefactory_domain::GitRef::parse(git_ref).unwrap(),
            credential: None,
        },
        image: imagefactory_domain::ImageRef::parse("registry.example.com/team/app:1.0").unwrap(),
        config,
        registry: None,
        provider: None,
        timeout: Duration::from_secs(5400),
    }
}

fn secrets() -> BoundSecrets {
    BoundSecrets {
        registry: "if-reg-12345678-v3".into(),
        git_basic_auth: None,
    }
}

fn render(ctx: &ExecutionContext) -> Value {
    let rc = render_context(ctx, &settings(), "image-factory-aabbccdd", &secrets());
    Templates::embedded().render(ctx.method, &rc).unwrap()
}

fn expected<'a>(method: BuildMethod, name: &'a str) -> Expected<'a> {
    Expected {
        run_name: name,
        namespace: "image-factory-aabbccdd",
        build_task: build_task_name(method),
        registry_secret: "if-reg-12345678-v3",
    }
}

fn full_config() -> MethodConfig {
    MethodConfig {
        dockerfile: Some("docker/Dockerfile.prod".into()),
        context: Some("app".into()),
        build_args: BTreeMap::from([
            ("VERSION".into(), "1.2".into()),
            ("MODE".into(), "release".into()),
        ]),
        platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
        target: Some("runtime".into()),
        cache_enabled: true,
        cache_repo: Some("registry.example.com/cache".into()),
        packer_template: Some("packer/image.pkr.hcl".into()),
        packer_vars: BTreeMap::from([("region".into(), "eu".into())]),
        metadata: serde_json::Map::from_iter([(
            "registry_repo".into(),
            json!("registry.example.com/team"),
        )]),
        ..Default::default()
    }
}

#[test]
fn each_method_renders_a_valid_run_with_its_params() {
    for method in BuildMethod::ALL {
        let ctx = context(*method, "release/2.0", full_config());
        let run = render(&ctx);
        let name = "if-0193abcd-0000000a1b2c-2";
        validate(&run, &expected(*method, name)).unwrap_or_else(|e| panic!("{method}: {e}"));
        let params = run_params(&run);
        assert_eq!(
            params["git-url"], "https://git.example.com/team/app.git",
            "{method}"
        );
        assert_eq!(
            params["git-revision"], "release/2.0",
            "{method}: requested ref, not main"
        );
        assert_eq!(params["image"], "registry.example.com/team/app:1.0");
        match method {
            BuildMethod::Packer => {
                assert_eq!(params["packer-template"], "packer/image.pkr.hcl");
                assert_eq!(params["packer-vars"], json!(["region=eu"]));
            }
            _ => {
                assert_eq!(params["dockerfile"], "docker/Dockerfile.prod", "{method}");
                assert_eq!(params["context"], "app");
                assert_eq!(params["build-args"], json!(["MODE=release", "VERSION=1.2"]));
                assert_eq!(params["target"], "runtime");
            }
        }
        if *method == BuildMethod::Buildx {
            assert_eq!(params["platforms"], json!(["linux/amd64", "linux/arm64"]));
            assert_eq!(params["cache"], "true");
        }
        if *method == BuildMethod::Kaniko {
            assert_eq!(params["registry-repo"], "registry.example.com/team");
        }
        assert_eq!(run["metadata"]["name"], name);
        assert_eq!(run["spec"]["timeouts"]["pipeline"], "1h30m0s");
        assert_eq!(
            run["metadata"]["labels"]["imagefactory.io/build-id"],
            ctx.build_id.to_string()
        );
        assert_eq!(
            run["metadata"]["labels"]["imagefactory.io/execution-id"],
            ctx.execution_id.to_string()
        );
        assert_eq!(
            run["metadata"]["labels"]["imagefactory.io/tenant-id"],
            ctx.tenant_id.to_string()
        );
        assert_eq!(
            run["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "image-factory"
        );
        let tasks = run["spec"]["pipelineSpec"]["tasks"].as_array().unwrap();
        assert_eq!(
            tasks[0]["taskRef"],
            json!({"kind": "Task", "name": "git-clone"})
        );
        assert_eq!(tasks[1]["taskRef"]["name"], build_task_name(*method));
        assert_eq!(tasks[1]["runAfter"], json!(["clone"]));
    }
}

const NASTY: &[&str] = &[
    "main\"\nkind: Secret\n",
    "feat/'quoted' \"double\"",
    "{{ image }}{% raw %}",
    "$(params.image)$(context.pipelineRun.name)",
    "x: [1, 2]\n  - name: evil\n    value: y",
    "# comment &anchor *alias !!binary |\n>",
    "tab\tcr\rnul\u{0}bell\u{7}nel\u{85}ls\u{2028}emoji\u{1F600}\\",
];

/// A user value reaches the run verbatim as one param value and changes
/// nothing else: the render with the nasty value equals the render with a
/// plain value once that one param is swapped back.
fn assert_only_param_changes(
    method: BuildMethod,
    param: &str,
    plain: &Value,
    nasty: &Value,
    nasty_value: Value,
) {
    let params = run_params(nasty);
    assert_eq!(params[param], nasty_value, "{method} {param} verbatim");
    let mut patched = nasty.clone();
    let plain_value = run_params(plain)[param].clone();
    for p in patched["spec"]["params"].as_array_mut().unwrap() {
        if p["name"] == param {
            p["value"] = plain_value.clone();
        }
    }
    assert_eq!(
        &patched, plain,
        "{method}: a {param} value changed more than its param"
    );
}

#[test]
fn user_values_cannot_inject_yaml_or_template_syntax() {
    for method in [
        BuildMethod::Docker,
        BuildMethod::Buildx,
        BuildMethod::Kaniko,
    ] {
        let plain = render(&context(method, "main", full_config()));
        for nasty in NASTY {
            // branch: most of these are no git ref at all (`GitRef` refuses
            // them before a context exists); those that are one stay a param.
            if imagefactory_domain::GitRef::parse(nasty).is_ok() {
                let run = render(&context(method, nasty, full_config()));
                assert_only_param_changes(method, "git-revision", &plain, &run, json!(nasty));
            }
            // dockerfile path
            let mut config = full_config();
            config.dockerfile = Some(nasty.to_string());
            let run = render(&context(method, "main", config));
            assert_only_param_changes(method, "dockerfile", &plain, &run, json!(nasty));
            // build arg value and key
            let mut config = full_config();
            config
                .build_args
                .insert("VERSION".into(), nasty.to_string());
            let run = render(&context(method, "main", config));
            assert_only_param_changes(
                method,
                "build-args",
                &plain,
                &run,
                json!(["MODE=release", format!("VERSION={nasty}")]),
            );
        }
    }
    let plain = render(&context(BuildMethod::Packer, "main", full_config()));
    for nasty in NASTY {
        let mut config = full_config();
        config
            .packer_vars
            .insert("region".into(), nasty.to_string());
        let run = render(&context(BuildMethod::Packer, "main", config));
        assert_only_param_changes(
            BuildMethod::Packer,
            "packer-vars",
            &plain,
            &run,
            json!([format!("region={nasty}")]),
        );
    }
}

#[test]
fn git_credentials_add_the_basic_auth_workspace() {
    let ctx = context(BuildMethod::Kaniko, "main", full_config());
    let with = BoundSecrets {
        registry: "if-reg-12345678-v3".into(),
        git_basic_auth: Some("if-git-0123".into()),
    };
    let rc = render_context(&ctx, &settings(), "image-factory-aabbccdd", &with);
    let run = Templates::embedded()
        .render(BuildMethod::Kaniko, &rc)
        .unwrap();
    let ws = run["spec"]["workspaces"].as_array().unwrap();
    assert!(
        ws.iter()
            .any(|w| w["name"] == "basic-auth" && w["secret"]["secretName"] == "if-git-0123")
    );
    let clone = &run["spec"]["pipelineSpec"]["tasks"][0];
    assert!(
        clone["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "basic-auth")
    );
    let plain = render(&ctx);
    assert!(
        !plain["spec"]["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "basic-auth")
    );
}

#[test]
fn undefined_values_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tekton/templates/docker.yaml"
    ))
    .unwrap()
    .replace("{{ source.revision }}", "{{ source.branch }}");
    std::fs::write(dir.path().join("docker.yaml"), text).unwrap();
    let templates = Templates::with_overrides(dir.path()).unwrap();
    let ctx = context(BuildMethod::Docker, "main", full_config());
    let rc = render_context(&ctx, &settings(), "image-factory-aabbccdd", &secrets());
    let err = templates
        .render(BuildMethod::Docker, &rc)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`source.branch`"), "{err}");
    assert!(err.contains("docker.yaml"), "{err}");
    // Other methods still use the embedded templates.
    templates.render(BuildMethod::Kaniko, &rc).unwrap();
}

#[test]
fn an_override_that_breaks_the_contract_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tekton/templates/kaniko.yaml"
    ))
    .unwrap()
    .replace("runAfter: [clone]", "runAfter: []");
    std::fs::write(dir.path().join("kaniko.yaml"), text).unwrap();
    let templates = Templates::with_overrides(dir.path()).unwrap();
    let ctx = context(BuildMethod::Kaniko, "main", full_config());
    let rc = render_context(&ctx, &settings(), "image-factory-aabbccdd", &secrets());
    let run = templates.render(BuildMethod::Kaniko, &rc).unwrap();
    let err = validate(
        &run,
        &expected(BuildMethod::Kaniko, "if-0193abcd-0000000a1b2c-2"),
    )
    .unwrap_err();
    assert_eq!(err, "task \"build\" must have runAfter: [clone]");
    // And the wrong Task for the method is caught too.
    let run = render(&ctx);
    let err = validate(
        &run,
        &expected(BuildMethod::Docker, "if-0193abcd-0000000a1b2c-2"),
    )
    .unwrap_err();
    assert_eq!(err, "task \"build\" must reference Task \"docker-build\"");
}

#[test]
fn v1beta1_conversion_moves_the_service_account() {
    let run = render(&context(BuildMethod::Docker, "main", full_config()));
    let beta = to_version(run.clone(), TektonVersion::V1beta1);
    assert_eq!(beta["apiVersion"], "tekton.dev/v1beta1");
    assert_eq!(beta["spec"]["serviceAccountName"], "default");
    assert!(beta["spec"].get("taskRunTemplate").is_none());
    assert_eq!(beta["spec"]["params"], run["spec"]["params"]);
    assert_eq!(to_version(run.clone(), TektonVersion::V1), run);
}

#[test]
fn tasks_namespace_uses_the_cluster_resolver() {
    let settings = parse(&json!({
        "auth_method": "token", "endpoint": "https://k:6443", "token": "t", "tasks_namespace": "tekton-tasks"
    }))
    .unwrap();
    let ctx = context(BuildMethod::Buildx, "main", full_config());
    let rc = render_context(&ctx, &settings, "image-factory-aabbccdd", &secrets());
    let run = Templates::embedded()
        .render(BuildMethod::Buildx, &rc)
        .unwrap();
    validate(
        &run,
        &expected(BuildMethod::Buildx, "if-0193abcd-0000000a1b2c-2"),
    )
    .unwrap();
    let tasks =
        imagefactory_exec::tekton::validate::referenced_tasks(&run, "image-factory-aabbccdd");
    assert_eq!(
        tasks,
        vec![
            ("tekton-tasks".to_string(), "git-clone".to_string()),
            ("tekton-tasks".to_string(), "buildx".to_string())
        ]
    );
}

#[test]
fn provider_config_errors_name_the_field() {
    // The domain's parser, the API's rules: every problem, field by field.
    let err = parse(&json!({"auth_method": "token", "endpoint": "https://k"})).unwrap_err();
    assert_eq!(
        err,
        "invalid provider config: config.token: is required with auth_method token"
    );
    let err = parse(&json!({"auth_method": "magic"})).unwrap_err();
    assert!(err.contains("config.auth_method"), "{err}");
    let err =
        parse(&json!({"auth_method": "client-cert", "apiServer": "https://k", "client_cert": "c"}))
            .unwrap_err();
    assert_eq!(
        err,
        "invalid provider config: config.client_cert: must be PEM text containing a CERTIFICATE block; \
         config.client_key: is required with auth_method client-cert"
    );
    let err = parse(&json!({"auth_method": "token", "endpoint": "https://k", "token": "t", "insecure_skip_tls_verify": "yes"})).unwrap_err();
    assert!(err.contains("insecure_skip_tls_verify"), "{err}");
    let ok = parse(
        &json!({"auth_method": "token", "apiServer": "https://k", "token": "t",
        "retention": {"keep_last": 5, "ttl_seconds": 3600}}),
    )
    .unwrap();
    assert!(!ok.insecure_skip_tls_verify);
    assert_eq!(ok.retention.unwrap().keep_last, Some(5));
}

/// The `BUILDER_IMAGE` param each pipeline task passes, by task name.
fn builder_images(run: &Value) -> Vec<(String, String)> {
    run["spec"]["pipelineSpec"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            t["params"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["name"] == "BUILDER_IMAGE")
                .map(|p| {
                    (
                        t["name"].as_str().unwrap().to_string(),
                        p["value"].as_str().unwrap().to_string(),
                    )
                })
        })
        .collect()
}

#[test]
fn builder_images_are_passed_only_when_overridden() {
    let ctx = context(BuildMethod::Kaniko, "main", full_config());
    let render_with = |config: Value| {
        let rc = render_context(
            &ctx,
            &parse(&config).unwrap(),
            "image-factory-aabbccdd",
            &secrets(),
        );
        Templates::embedded()
            .render(BuildMethod::Kaniko, &rc)
            .unwrap()
    };
    let base = json!({"auth_method": "token", "endpoint": "https://k:6443", "token": "t"});
    assert!(builder_images(&render_with(base.clone())).is_empty());

    let mut mirrored = base.clone();
    mirrored["builder_images"] = json!({
        "kaniko": "mirror.internal/kaniko-project/executor:v1.23.2-debug",
        "packer": "mirror.internal/hashicorp/packer:1.11",
    });
    let run = render_with(mirrored);
    validate(
        &run,
        &expected(BuildMethod::Kaniko, "if-0193abcd-0000000a1b2c-2"),
    )
    .unwrap();
    assert_eq!(
        builder_images(&run),
        [(
            "build".to_string(),
            "mirror.internal/kaniko-project/executor:v1.23.2-debug".to_string()
        )]
    );

    let mut clone = base;
    clone["builder_images"] = json!({"git_clone": "mirror.internal/alpine/git:2.47.2"});
    assert_eq!(
        builder_images(&render_with(clone)),
        [(
            "clone".to_string(),
            "mirror.internal/alpine/git:2.47.2".to_string()
        )]
    );
    let err = parse(
        &json!({"auth_method": "token", "endpoint": "https://k:6443", "token": "t",
        "builder_images": {"kaniko": "not an image"}}),
    )
    .unwrap_err();
    assert!(err.contains("builder_images.kaniko"), "{err}");
}

/// The `TLS_VERIFY` param the run's build task passes.
fn build_tls_verify(run: &Value) -> Option<String> {
    let tasks = run["spec"]["pipelineSpec"]["tasks"].as_array().unwrap();
    let build = tasks.iter().find(|t| t["name"] == "build").unwrap();
    build["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "TLS_VERIFY")
        .map(|p| p["value"].as_str().unwrap().to_string())
}

#[test]
fn registry_tls_verify_reaches_every_build_task_verifying_by_default() {
    let base = json!({"auth_method": "token", "endpoint": "https://k:6443", "token": "t"});
    let mut insecure = base.clone();
    insecure["registry_tls_verify"] = json!(false);
    for method in BuildMethod::ALL {
        let ctx = context(*method, "main", full_config());
        let render_with = |config: &Value| {
            let rc = render_context(
                &ctx,
                &parse(config).unwrap(),
                "image-factory-aabbccdd",
                &secrets(),
            );
            let run = Templates::embedded().render(*method, &rc).unwrap();
            validate(&run, &expected(*method, "if-0193abcd-0000000a1b2c-2")).unwrap();
            run
        };
        assert_eq!(
            build_tls_verify(&render_with(&base)).as_deref(),
            Some("true"),
            "{method}"
        );
        assert_eq!(
            build_tls_verify(&render_with(&insecure)).as_deref(),
            Some("false"),
            "{method}"
        );
    }
}

/// Hostile non-empty text of bounded length (an empty dockerfile means the
/// default one): any unicode (NUL, control characters),
/// or template, YAML and Tekton syntax pieces strung together.
fn hostile() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        ".{1,40}",
        prop::collection::vec(
            prop::sample::select(vec![
                "{{",
                "}}",
                "{%",
                "%}",
                "{#",
                "$(params.",
                ")",
                "\n",
                "- ",
                ": ",
                "\"",
                "'",
                "\\",
                "&a",
                "*a",
                "!!",
                "|",
                "#",
                "\u{0}",
                "\u{2028}",
                "x",
            ]),
            1..12
        )
        .prop_map(|parts| parts.concat()),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any dockerfile, build arg or git ref value renders without panic,
    /// reaches the run verbatim as one param and changes nothing else.
    #[test]
    fn arbitrary_user_values_stay_one_param(value in hostile(), method_index in 0usize..3) {
        let method = [BuildMethod::Docker, BuildMethod::Buildx, BuildMethod::Kaniko][method_index];
        let plain = render(&context(method, "main", full_config()));
        if imagefactory_domain::GitRef::parse(&value).is_ok() {
            let run = render(&context(method, &value, full_config()));
            assert_only_param_changes(method, "git-revision", &plain, &run, json!(value));
        }
        let mut config = full_config();
        config.dockerfile = Some(value.clone());
        let run = render(&context(method, "main", config));
        assert_only_param_changes(method, "dockerfile", &plain, &run, json!(value));
        let mut config = full_config();
        config.build_args.insert("VERSION".into(), value.clone());
        let run = render(&context(method, "main", config));
        assert_only_param_changes(
            method,
            "build-args",
            &plain,
            &run,
            json!(["MODE=release", format!("VERSION={value}")]),
        );
    }
}
