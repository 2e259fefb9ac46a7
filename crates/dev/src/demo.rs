//! The demo itself, as a user would do it: everything through the REST API
//! (tenant, token, provider, project, build, logs, artifacts), except the
//! cluster operator's part on kube-sim (namespace, Tasks, docker-config).
//! With `--real-steps` the build clones the local sample repository and
//! pushes to the local registry, whose digest is then checked.

use std::pin::pin;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use imagefactory_domain::Secret;
use kube_sim::KubeSimHandle;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::instructions::{self, DEMO_IMAGE, DEMO_REPOSITORY, DEMO_TAG, DemoResources};
use imagefactory_cli::sse;
use imagefactory_dev::real::RealSteps;
use imagefactory_dev::sim;

pub const DEMO_GIT_URL: &str = "https://git.example.com/demo/hello.git";

/// How the demo ended.
pub struct Outcome {
    /// The build's final status, e.g. `succeeded`.
    pub status: String,
    /// With `--real-steps` and a succeeded build: whether the recorded
    /// `IMAGE_DIGEST` is the one the registry serves.
    pub digest_matches: Option<bool>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded" && self.digest_matches != Some(false)
    }
}

/// What the demo builds from and pushes to.
struct Target<'a> {
    git_url: String,
    /// Image repository, without tag.
    image: String,
    /// `--real-steps`' local services.
    real: Option<&'a RealSteps>,
}

impl<'a> Target<'a> {
    fn new(real: Option<&'a RealSteps>) -> Self {
        match real {
            Some(r) => Target {
                git_url: r.repo_url(),
                image: format!("{}/{DEMO_REPOSITORY}", r.registry().host()),
                real,
            },
            None => Target {
                git_url: DEMO_GIT_URL.to_owned(),
                image: DEMO_IMAGE.to_owned(),
                real,
            },
        }
    }
}

/// A fresh tenant name per run (names are unique), e.g. `demo-1a2b3c4d`.
pub fn tenant_name() -> String {
    format!("demo-{}", &Uuid::new_v4().simple().to_string()[..8])
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `method path` with `token`; the answer's JSON when the status is `expect`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        expect: u16,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = res.status().as_u16();
        let text = res
            .text()
            .await
            .with_context(|| format!("{method} {path}: reading the answer"))?;
        if status != expect {
            bail!("{method} {path} answered {status} (expected {expect}): {text}");
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: the answer is not JSON: {text}"))
    }

    /// `GET /readyz` answers success.
    async fn ready(&self) -> anyhow::Result<()> {
        let ready = self
            .http
            .get(self.url("/readyz"))
            .send()
            .await
            .context("GET /readyz")?;
        if !ready.status().is_success() {
            bail!(
                "the API is not ready: GET /readyz answered {}",
                ready.status()
            );
        }
        Ok(())
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, token, Some(&body), 201).await
    }

    async fn get(&self, path: &str, token: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, token, None, 200).await
    }

    /// Prints each `log` event of the followed log; the terminal status from
    /// the closing `end` event. A stream that breaks before `end` is opened
    /// again with `Last-Event-ID` (the API resumes after that line), up to
    /// `MAX_RESUMES` times.
    async fn follow_logs(&self, token: &str, build: Uuid) -> anyhow::Result<String> {
        let path = format!("/api/v1/builds/{build}/logs?follow=true");
        let mut last_id: Option<String> = None;
        let mut resumes = 0;
        loop {
            let res = self.open_events(&path, token, last_id.as_deref()).await?;
            let mut events = pin!(sse::events(res.bytes_stream()));
            let broke = loop {
                let event = match events.next().await {
                    Some(Ok(event)) => event,
                    Some(Err(e)) => break e.to_string(),
                    None => break "the stream ended before the build did".to_owned(),
                };
                last_id = event.id.or(last_id);
                match event.event.as_str() {
                    "log" => println!("  | {}", event.data),
                    "end" => return Ok(event.data),
                    "error" => bail!("GET {path}: the log stream reported: {}", event.data),
                    _ => {}
                }
            };
            if resumes == MAX_RESUMES {
                bail!("GET {path}: {broke}");
            }
            resumes += 1;
            println!("  (log stream interrupted: {broke}; resuming)");
        }
    }

    /// `GET path` as an event stream, resuming after `last_id` if given.
    async fn open_events(
        &self,
        path: &str,
        token: &str,
        last_id: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = req.send().await.with_context(|| format!("GET {path}"))?;
        if !res.status().is_success() {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            bail!("GET {path} answered {status}: {text}");
        }
        Ok(res)
    }
}

/// How often a broken log stream is opened again before the demo gives up.
const MAX_RESUMES: usize = 3;

fn id_of(v: &Value, what: &str) -> anyhow::Result<Uuid> {
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{what}: no id in {v}"))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}

/// What the demo created through the API for its build.
struct Created {
    tenant_name: String,
    /// The demo tenant's admin token.
    token: String,
    namespace: String,
    provider: Uuid,
    project: Uuid,
}

/// Runs the demo against the API at `base_url`, printing as it goes; with
/// `real`, building the sample repository for real into the local registry.
pub async fn run(
    base_url: &str,
    admin: &Secret,
    sim: &KubeSimHandle,
    kubeconfig: Option<&str>,
    timeout: Duration,
    keep_serving: bool,
    real: Option<&RealSteps>,
) -> anyhow::Result<Outcome> {
    let api = Client {
        http: reqwest::Client::new(),
        base: base_url.to_owned(),
    };
    api.ready().await?;
    let target = Target::new(real);
    println!("\nDemo, through the REST API as a user would:");
    let created = create_resources(&api, admin, sim, &target).await?;
    let started = Instant::now();
    let build = submit(&api, &created, &target).await?;
    let ended_with = follow(&api, &created.token, build, timeout, target.real.is_some()).await?;
    let (status, digest) =
        report(&api, &created.token, build, ended_with, timeout, started).await?;
    let digest_matches = match target.real {
        Some(real) if status == "succeeded" => Some(check_digest(real, digest.as_deref()).await?),
        _ => None,
    };

    // Instructions only for a server that stays up to answer them.
    if keep_serving {
        let resources = DemoResources {
            base_url: base_url.to_owned(),
            tenant_name: created.tenant_name,
            namespace: created.namespace,
            provider: created.provider,
            project: created.project,
            build,
            image: target.image.clone(),
            registry: real.map(|r| r.registry().host().to_owned()),
        };
        let text = instructions::render(&resources, &created.token, kubeconfig);
        println!("\n{text}");
    }
    Ok(Outcome {
        status,
        digest_matches,
    })
}

/// Prints the digest the build recorded and the one the registry serves for
/// the pushed tag; whether they are the same.
async fn check_digest(real: &RealSteps, recorded: Option<&str>) -> anyhow::Result<bool> {
    let registry = real.registry();
    let url = registry.manifest_url(DEMO_REPOSITORY, DEMO_TAG);
    let served = registry
        .manifest_digest(DEMO_REPOSITORY, DEMO_TAG)
        .await
        .context("asking the local registry for the pushed image")?;
    let recorded = recorded.unwrap_or("(none)");
    println!("\nRegistry check (HEAD {url}):");
    println!("  build recorded   IMAGE_DIGEST {recorded}");
    println!("  registry serves  Docker-Content-Digest {served}");
    let same = recorded == served;
    if same {
        println!("  the same: the image was built and pushed for real");
    } else {
        println!("  they differ: the recorded digest is not the pushed image's");
    }
    Ok(same)
}

/// Tenant and token (as the platform admin), the operator's part on
/// kube-sim, then provider and project (as the tenant).
async fn create_resources(
    api: &Client,
    admin: &Secret,
    sim: &KubeSimHandle,
    target: &Target<'_>,
) -> anyhow::Result<Created> {
    let (tenant_name, tenant, token) = create_tenant(api, admin).await?;
    let prepared = sim::prepare_tenant(sim, tenant).await?;
    println!(
        "  cluster   operator setup on kube-sim: namespace {}, Tasks {}, Secret docker-config",
        prepared.namespace,
        prepared.tasks.join(", ")
    );
    let provider = create_provider(api, &token, sim, target.real.is_some()).await?;
    let project = api
        .post(
            "/api/v1/projects",
            &token,
            json!({"name": "hello", "git_url": target.git_url}),
        )
        .await?;
    let project = id_of(&project, "project")?;
    println!("  project   hello ({project}) {}", target.git_url);
    Ok(Created {
        tenant_name,
        token,
        namespace: prepared.namespace,
        provider,
        project,
    })
}

/// A fresh tenant and an admin token of it: (name, id, token).
async fn create_tenant(api: &Client, admin: &Secret) -> anyhow::Result<(String, Uuid, String)> {
    let name = tenant_name();
    let tenant = api
        .post("/api/v1/tenants", admin.expose(), json!({"name": name}))
        .await?;
    let id = id_of(&tenant, "tenant")?;
    println!("  tenant    {name} ({id})");
    let created = api
        .post(
            &format!("/api/v1/tenants/{id}/tokens"),
            admin.expose(),
            json!({"name": "demo", "role": "admin"}),
        )
        .await?;
    let token = created["token"]
        .as_str()
        .context("token creation answered without a token")?
        .to_owned();
    println!("  token     role admin (shown at the end)");
    Ok((name, id, token))
}

/// The kube-sim provider, checked with the API's connection test. With
/// `plain_http_registry`, builds on it push without TLS (the local registry
/// of `--real-steps` speaks plain HTTP on loopback).
async fn create_provider(
    api: &Client,
    token: &str,
    sim: &KubeSimHandle,
    plain_http_registry: bool,
) -> anyhow::Result<Uuid> {
    let mut config = sim::provider_config(sim);
    if plain_http_registry {
        config["registry_tls_verify"] = json!(false);
    }
    let provider = api
        .post(
            "/api/v1/providers",
            token,
            json!({"name": "kube-sim", "provider_type": "kubernetes", "config": config}),
        )
        .await?;
    let id = id_of(&provider, "provider")?;
    let path = format!("/api/v1/providers/{id}/test-connection");
    let report = api.call(Method::POST, &path, token, None, 200).await?;
    if report["reachable"] != true || report["authenticated"] != true {
        bail!("the kube-sim provider does not connect: {report}");
    }
    let tekton = report["tekton_versions"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    println!(
        "  provider  kube-sim ({id}) at {}: reachable, authenticated, Kubernetes {}, Tekton {tekton}{}",
        sim.endpoint(),
        text(&report, "server_version"),
        if plain_http_registry {
            "; registry_tls_verify false (the local registry is plain HTTP)"
        } else {
            ""
        }
    );
    Ok(id)
}

/// Submits the demo build; its id.
async fn submit(api: &Client, created: &Created, target: &Target<'_>) -> anyhow::Result<Uuid> {
    let request =
        instructions::build_request(created.project, created.provider, &target.image, DEMO_TAG);
    let build = api.post("/api/v1/builds", &created.token, request).await?;
    let id = id_of(&build, "build")?;
    println!(
        "  build     {id}: {} of {}@{} into {}, {}",
        text(&build, "method"),
        text(&build, "git_url"),
        text(&build, "git_ref"),
        text(&build, "image"),
        text(&build, "status")
    );
    Ok(id)
}

/// Follows the build's log; the status its `end` event named, or `None`
/// when `timeout` passed first.
async fn follow(
    api: &Client,
    token: &str,
    build: Uuid,
    timeout: Duration,
    real: bool,
) -> anyhow::Result<Option<String>> {
    let steps = if real {
        "the steps run for real on this host: git clones, buildah builds and pushes"
    } else {
        "kube-sim simulates the steps, nothing is cloned or pushed"
    };
    println!("\nBuild log (GET /api/v1/builds/{build}/logs?follow=true; {steps}):");
    match tokio::time::timeout(timeout, api.follow_logs(token, build)).await {
        Ok(ended) => ended.map(Some),
        Err(_) => Ok(None),
    }
}

/// Reads the build, its executions and artifacts back and prints them; the
/// build's status and its `IMAGE_DIGEST` artifact. An error when the log did
/// not end within `timeout`.
async fn report(
    api: &Client,
    token: &str,
    build_id: Uuid,
    ended_with: Option<String>,
    timeout: Duration,
    started: Instant,
) -> anyhow::Result<(String, Option<String>)> {
    let build = api
        .get(&format!("/api/v1/builds/{build_id}"), token)
        .await?;
    let status = text(&build, "status").to_owned();
    let executions = api
        .get(&format!("/api/v1/builds/{build_id}/executions"), token)
        .await?;
    let artifacts = api
        .get(&format!("/api/v1/builds/{build_id}/artifacts"), token)
        .await?;
    if ended_with.is_none() {
        println!(
            "\nBuild {build_id}: still {status} after {timeout:?} (--demo-timeout); executions: {executions}"
        );
        bail!("the demo build did not finish within {timeout:?}");
    }
    println!(
        "\nBuild {build_id}: {status} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Some(message) = build["error_message"].as_str() {
        println!("  error: {message}");
    }
    print_executions(&executions);
    println!("Artifacts (GET /api/v1/builds/{build_id}/artifacts):");
    print_artifacts(&artifacts);
    let digest = artifacts["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == "IMAGE_DIGEST")
        .and_then(|a| a["value"].as_str())
        .map(str::to_owned);
    Ok((status, digest))
}

fn print_executions(executions: &Value) {
    for e in executions["items"].as_array().into_iter().flatten() {
        println!(
            "  attempt {} on {}: PipelineRun {}/{}, {}{}",
            e["attempt"],
            text(e, "executor"),
            text(e, "cluster_namespace"),
            text(e, "pipeline_run_name"),
            text(e, "status"),
            e["message"]
                .as_str()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        );
    }
}

fn print_artifacts(artifacts: &Value) {
    let items = artifacts["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("  (none)");
    }
    for a in &items {
        println!(
            "  {:<20} {:<13} {}",
            text(a, "name"),
            text(a, "kind"),
            text(a, "value")
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::HeaderMap;

    use super::*;

    /// An API whose log stream answers `bodies` in turn (the last one for
    /// any further request) and records each request's `Last-Event-ID`.
    async fn log_server(
        bodies: &'static [&'static str],
    ) -> (Client, Arc<Mutex<Vec<Option<String>>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/api/v1/builds/{id}/logs",
            axum::routing::get(move |headers: HeaderMap| {
                let mut seen = record.lock().unwrap();
                let id = headers
                    .get("last-event-id")
                    .map(|v| v.to_str().unwrap().to_owned());
                seen.push(id);
                let body = bodies[(seen.len() - 1).min(bodies.len() - 1)];
                async move { ([("content-type", "text/event-stream")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client {
            http: reqwest::Client::new(),
            base,
        };
        (client, seen)
    }

    #[tokio::test]
    async fn a_broken_log_stream_resumes_after_the_last_event() {
        let (api, seen) = log_server(&[
            "event: log\ndata: one\nid: 5\n\n",
            "event: log\ndata: two\nid: 6\n\nevent: end\ndata: succeeded\n\n",
        ])
        .await;
        let ended = api.follow_logs("t", Uuid::nil()).await.unwrap();
        assert_eq!(ended, "succeeded");
        assert_eq!(*seen.lock().unwrap(), [None, Some("5".to_owned())]);
    }

    #[tokio::test]
    async fn a_stream_that_keeps_breaking_is_given_up_and_errors_are_reported() {
        let (api, seen) = log_server(&[": nothing yet\n\n"]).await;
        let err = api.follow_logs("t", Uuid::nil()).await.unwrap_err();
        assert!(
            err.to_string().contains("ended before the build did"),
            "{err}"
        );
        assert_eq!(seen.lock().unwrap().len(), MAX_RESUMES + 1);

        let (api, _) = log_server(&["event: error\ndata: database unavailable\n\n"]).await;
        let err = api.follow_logs("t", Uuid::nil()).await.unwrap_err();
        assert!(
            err.to_string().contains("reported: database unavailable"),
            "{err}"
        );
    }

    #[test]
    fn tenant_names_are_valid_and_fresh() {
        let a = tenant_name();
        let b = tenant_name();
        assert_ne!(a, b);
        for n in [a, b] {
            imagefactory_domain::names::ResourceName::parse(&n).unwrap();
            assert_eq!(n.len(), "demo-".len() + 8, "{n}");
        }
    }
}
