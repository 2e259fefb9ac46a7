//! The demo itself, as a user would do it: everything through the REST API
//! (tenant, token, provider, project, build, logs, artifacts), except the
//! cluster operator's part on kube-sim (namespace, Tasks, docker-config).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use imagefactory_domain::Secret;
use kube_sim::KubeSimHandle;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::instructions::{self, DemoResources};
use crate::sim;
use crate::sse::SseParser;

pub const DEMO_GIT_URL: &str = "https://git.example.com/demo/hello.git";

/// How the demo ended.
pub struct Outcome {
    /// The build's final status, e.g. `succeeded`.
    pub status: String,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
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

    async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, token, Some(&body), 201).await
    }

    async fn get(&self, path: &str, token: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, token, None, 200).await
    }

    /// Prints each `log` event of the followed log; the terminal status from
    /// the closing `end` event.
    async fn follow_logs(&self, token: &str, build: Uuid) -> anyhow::Result<String> {
        let path = format!("/api/v1/builds/{build}/logs?follow=true");
        let res = self
            .http
            .get(self.url(&path))
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        if !res.status().is_success() {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            bail!("GET {path} answered {status}: {text}");
        }
        let mut body = res.bytes_stream();
        let mut parser = SseParser::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("GET {path}: reading the stream"))?;
            for event in parser.push(&chunk) {
                match event.event.as_str() {
                    "log" => println!("  | {}", event.data),
                    "end" => return Ok(event.data),
                    "error" => bail!("GET {path}: the log stream reported: {}", event.data),
                    _ => {}
                }
            }
        }
        bail!("GET {path}: the stream ended before the build did")
    }
}

fn id_of(v: &Value, what: &str) -> anyhow::Result<Uuid> {
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{what}: no id in {v}"))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}

/// Runs the demo against the API at `base_url`, printing as it goes.
pub async fn run(
    base_url: &str,
    admin: &Secret,
    sim: &KubeSimHandle,
    kubeconfig: Option<&str>,
    timeout: Duration,
    keep_serving: bool,
) -> anyhow::Result<Outcome> {
    let api = Client {
        http: reqwest::Client::new(),
        base: base_url.to_owned(),
    };
    let ready = api
        .http
        .get(api.url("/readyz"))
        .send()
        .await
        .context("GET /readyz")?;
    if !ready.status().is_success() {
        bail!(
            "the API is not ready: GET /readyz answered {}",
            ready.status()
        );
    }

    println!("\nDemo, through the REST API as a user would:");
    let tenant_name = tenant_name();
    let tenant = api
        .post(
            "/api/v1/tenants",
            admin.expose(),
            json!({"name": tenant_name}),
        )
        .await?;
    let tenant_id = id_of(&tenant, "tenant")?;
    println!("  tenant    {tenant_name} ({tenant_id})");
    let created = api
        .post(
            &format!("/api/v1/tenants/{tenant_id}/tokens"),
            admin.expose(),
            json!({"name": "demo", "role": "admin"}),
        )
        .await?;
    let token = created["token"]
        .as_str()
        .context("token creation answered without a token")?
        .to_owned();
    println!("  token     role admin (shown at the end)");

    let prepared = sim::prepare_tenant(sim, tenant_id).await?;
    println!(
        "  cluster   operator setup on kube-sim: namespace {}, Tasks {}, Secret docker-config",
        prepared.namespace,
        prepared.tasks.join(", ")
    );

    let provider = api
        .post(
            "/api/v1/providers",
            &token,
            json!({"name": "kube-sim", "provider_type": "kubernetes",
                   "config": sim::provider_config(sim)}),
        )
        .await?;
    let provider_id = id_of(&provider, "provider")?;
    let report = api
        .call(
            Method::POST,
            &format!("/api/v1/providers/{provider_id}/test-connection"),
            &token,
            None,
            200,
        )
        .await?;
    if report["reachable"] != true || report["authenticated"] != true {
        bail!("the kube-sim provider does not connect: {report}");
    }
    println!(
        "  provider  kube-sim ({provider_id}) at {}: reachable, authenticated, Kubernetes {}, Tekton {}",
        sim.endpoint(),
        text(&report, "server_version"),
        report["tekton_versions"]
            .as_array()
            .map(|v| v
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );

    let project = api
        .post(
            "/api/v1/projects",
            &token,
            json!({"name": "hello", "git_url": DEMO_GIT_URL}),
        )
        .await?;
    let project_id = id_of(&project, "project")?;
    println!("  project   hello ({project_id}) {DEMO_GIT_URL}");

    let started = Instant::now();
    let build = api
        .post(
            "/api/v1/builds",
            &token,
            instructions::build_request(project_id, provider_id, "1.0"),
        )
        .await?;
    let build_id = id_of(&build, "build")?;
    println!(
        "  build     {build_id}: {} of {}@{} into {}, {}",
        text(&build, "method"),
        text(&build, "git_url"),
        text(&build, "git_ref"),
        text(&build, "image"),
        text(&build, "status")
    );
    println!(
        "\nBuild log (GET /api/v1/builds/{build_id}/logs?follow=true; kube-sim simulates the steps, nothing is cloned or pushed):"
    );
    let streamed = tokio::time::timeout(timeout, api.follow_logs(&token, build_id)).await;
    let ended_with = match streamed {
        Ok(r) => Some(r?),
        Err(_) => None,
    };

    let build = api
        .get(&format!("/api/v1/builds/{build_id}"), &token)
        .await?;
    let status = text(&build, "status").to_owned();
    let executions = api
        .get(&format!("/api/v1/builds/{build_id}/executions"), &token)
        .await?;
    let artifacts = api
        .get(&format!("/api/v1/builds/{build_id}/artifacts"), &token)
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
    println!("Artifacts (GET /api/v1/builds/{build_id}/artifacts):");
    let artifacts = artifacts["items"].as_array().cloned().unwrap_or_default();
    if artifacts.is_empty() {
        println!("  (none)");
    }
    for a in &artifacts {
        println!(
            "  {:<20} {:<13} {}",
            text(a, "name"),
            text(a, "kind"),
            text(a, "value")
        );
    }

    let resources = DemoResources {
        base_url: base_url.to_owned(),
        tenant_name,
        namespace: prepared.namespace,
        provider: provider_id,
        project: project_id,
        build: build_id,
    };
    // Instructions only for a server that stays up to answer them.
    if keep_serving {
        println!("\n{}", instructions::render(&resources, &token, kubeconfig));
    }
    Ok(Outcome { status })
}

#[cfg(test)]
mod tests {
    use super::*;

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
