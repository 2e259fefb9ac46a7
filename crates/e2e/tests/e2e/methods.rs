//! Each build method end to end: distinctive values submitted over HTTP reach
//! the PipelineRun as params; the build succeeds with its image artifacts and
//! the step logs in order.

use serde_json::{Value, json};

use crate::harness::{Options, TestApp, params, rule};

struct Case {
    method: &'static str,
    request: Value,
    git_ref: &'static str,
    image: &'static str,
    expected_params: Vec<(&'static str, Value)>,
    build_logs: Vec<&'static str>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            method: "docker",
            request: json!({"method": "docker", "git_ref": "release/2.x",
                "image": "registry.example.com/team/docker-app:2.0",
                "config": {"dockerfile": "docker/prod.Dockerfile", "context": "services/api",
                           "build_args": {"VERSION": "2.0", "FLAVOR": "slim"}}}),
            git_ref: "release/2.x",
            image: "registry.example.com/team/docker-app:2.0",
            expected_params: vec![
                ("dockerfile", json!("docker/prod.Dockerfile")),
                ("context", json!("services/api")),
                ("build-args", json!(["FLAVOR=slim", "VERSION=2.0"])),
            ],
            build_logs: vec!["[build] compiling", "[build] layer 2/2", "[push] pushed"],
        },
        Case {
            method: "buildx",
            request: json!({"method": "buildx", "git_ref": "v2.3.4",
                "image": "registry.example.com/team/multi:v2.3.4",
                "config": {"dockerfile": "Dockerfile.multi", "context": "app",
                           "platforms": ["linux/amd64", "linux/arm64/v8"],
                           "build_args": {"GOFLAGS": "-trimpath"}}}),
            git_ref: "v2.3.4",
            image: "registry.example.com/team/multi:v2.3.4",
            expected_params: vec![
                ("dockerfile", json!("Dockerfile.multi")),
                ("context", json!("app")),
                ("platforms", json!(["linux/amd64", "linux/arm64/v8"])),
                ("build-args", json!(["GOFLAGS=-trimpath"])),
            ],
            build_logs: vec![
                "[build-and-push] building 2 platforms",
                "[build-and-push] pushed",
            ],
        },
        Case {
            method: "kaniko",
            request: json!({"method": "kaniko", "git_ref": "3f2a9c1d4e5b6a7980123456789abcdef0123456",
                "image": null,
                "config": {"dockerfile": "kaniko/Dockerfile", "context": "svc",
                           "metadata": {"registry_repo": "registry.example.com/team/kaniko-app"}}}),
            git_ref: "3f2a9c1d4e5b6a7980123456789abcdef0123456",
            image: "registry.example.com/team/kaniko-app",
            expected_params: vec![
                ("dockerfile", json!("kaniko/Dockerfile")),
                ("context", json!("svc")),
                (
                    "registry-repo",
                    json!("registry.example.com/team/kaniko-app"),
                ),
            ],
            build_logs: vec![
                "[build-and-push] building 2 platforms",
                "[build-and-push] pushed",
            ],
        },
        Case {
            method: "packer",
            request: json!({"method": "packer", "git_ref": "feature/packer-ami",
                "image": "registry.example.com/team/vm-image:7",
                "config": {"packer_template": "images/base.pkr.hcl",
                           "packer_vars": {"region": "eu-west-1", "size": "large"}}}),
            git_ref: "feature/packer-ami",
            image: "registry.example.com/team/vm-image:7",
            expected_params: vec![
                ("packer-template", json!("images/base.pkr.hcl")),
                ("packer-vars", json!(["region=eu-west-1", "size=large"])),
            ],
            build_logs: vec!["[build] compiling", "[build] layer 2/2"],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_runs_as_a_pipelinerun_with_the_requested_values() {
    let app = TestApp::start(Options {
        rules: vec![
            rule(
                "clone",
                Some("clone"),
                None,
                &["[clone] fetching", "[clone] checked out"],
                None,
            ),
            rule(
                "build",
                Some("build"),
                None,
                &["[build] compiling", "[build] layer 2/2"],
                None,
            ),
            rule("build", Some("push"), None, &["[push] pushed"], None),
            rule(
                "build",
                Some("build-and-push"),
                None,
                &[
                    "[build-and-push] building 2 platforms",
                    "[build-and-push] pushed",
                ],
                None,
            ),
        ],
        ..Default::default()
    })
    .await;

    let cases = cases();
    let mut ids = Vec::new();
    for case in &cases {
        ids.push(app.submit(case.request.clone()).await);
    }
    for (case, id) in cases.iter().zip(&ids) {
        let method = case.method;
        let build = app.wait_terminal(*id).await;
        assert_eq!(build["status"], "succeeded", "{method}: {build}");

        let runs = app.pipelineruns(Some(*id)).await;
        assert_eq!(runs.len(), 1, "{method}: one PipelineRun");
        let p = params(&runs[0]);
        assert_eq!(
            p["git-url"], "https://git.example.com/team/app.git",
            "{method}"
        );
        assert_eq!(
            p["git-revision"], case.git_ref,
            "{method}: the requested ref"
        );
        if method != "kaniko" {
            assert_eq!(p["image"], case.image, "{method}");
        }
        for (name, value) in &case.expected_params {
            assert_eq!(&p[*name], value, "{method}: param {name}");
        }

        let artifacts = app.artifacts(*id).await;
        let url = artifacts
            .get("IMAGE_URL")
            .unwrap_or_else(|| panic!("{method}: {artifacts:?}"));
        assert!(url.starts_with(case.image), "{method}: IMAGE_URL {url}");
        let digest = &artifacts["IMAGE_DIGEST"];
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{method}: IMAGE_DIGEST {digest}"
        );

        let mut expected = vec!["[clone] fetching", "[clone] checked out"];
        expected.extend(&case.build_logs);
        // The executor's operator lines frame the step logs.
        let logs = app.logs(*id).await;
        assert!(logs.len() >= 3, "{method}: {logs:?}");
        let (first, rest) = logs.split_at(2);
        let (steps, last) = rest.split_at(rest.len() - 1);
        assert!(
            first[0].starts_with("Using Kubernetes namespace: image-factory-")
                && first[1].starts_with("Created PipelineRun: "),
            "{method}: {logs:?}"
        );
        assert!(
            last[0].starts_with("PipelineRun ") && last[0].contains(" finished: succeeded after "),
            "{method}: {logs:?}"
        );
        assert_eq!(steps, expected, "{method}: step logs in order");
    }
    app.finish().await;
}
