//! The requests: a tenant set up through the API as a user would, then
//! phases of concurrent workers (submit, get, list, mixed) and log
//! followers, each request timed and checked for its expected status.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use imagefactory_cli::sse;
use imagefactory_dev::sim;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::cpu::CpuUse;
use crate::report::Tally;
use crate::stack::Stack;

/// A request kind of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Submit,
    Get,
    List,
}

/// Which requests a phase's workers send.
#[derive(Debug, Clone, Copy)]
pub enum Mix {
    Only(Op),
    /// 1 submit : 6 gets : 3 lists; with `submit_every` set, submits come
    /// from one paced worker instead (the soak's steady build rate).
    Mixed {
        submit_every: Option<Duration>,
    },
}

/// The i-th request of a mixed worker.
pub fn mixed_op(i: u64) -> Op {
    match i % 10 {
        0 => Op::Submit,
        1..=6 => Op::Get,
        _ => Op::List,
    }
}

/// What every worker shares.
pub struct Target {
    http: reqwest::Client,
    base: String,
    token: String,
    project: Uuid,
    provider: Uuid,
    /// Builds this run submitted (accepted with 201).
    pub submitted: Mutex<Vec<Uuid>>,
    seq: AtomicU64,
    /// The first few failures, to print.
    failures: Mutex<Vec<String>>,
}

/// Results of one phase.
#[derive(Default)]
pub struct PhaseResult {
    pub submit: Tally,
    pub get: Tally,
    pub list: Tally,
    pub elapsed: Duration,
    /// CPU the server, PostgreSQL and this process used during the phase.
    pub cpu: Option<CpuUse>,
}

impl PhaseResult {
    pub fn errors(&self) -> u64 {
        self.submit.errors + self.get.errors + self.list.errors
    }

    fn tally(&mut self, op: Op) -> &mut Tally {
        match op {
            Op::Submit => &mut self.submit,
            Op::Get => &mut self.get,
            Op::List => &mut self.list,
        }
    }

    fn merge(&mut self, other: PhaseResult) {
        self.submit.merge(other.submit);
        self.get.merge(other.get);
        self.list.merge(other.list);
    }

    /// `<name>-cpu: …` per request of the phase (all kinds together).
    pub fn cpu_line(&self, name: &str) -> String {
        match &self.cpu {
            Some(cpu) => cpu.line(name, self.all().count() as u64),
            None => format!("{name}-cpu: unavailable"),
        }
    }

    /// All requests together.
    pub fn all(&self) -> Tally {
        let mut t = self.submit.clone();
        t.merge(self.get.clone());
        t.merge(self.list.clone());
        t
    }
}

/// `decode: false` checks the status and reads the body without decoding
/// it (`Value::Null`): the generator's own JSON work would take CPU from
/// the server it measures on the same machine.
async fn call(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<Value>,
    expect: StatusCode,
    decode: bool,
) -> anyhow::Result<Value> {
    let mut req = http.request(method.clone(), url).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = res.status();
    let bytes = res.bytes().await?;
    if status != expect {
        bail!(
            "{method} {url}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(match decode {
        true => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        false => Value::Null,
    })
}

fn id(v: &Value) -> anyhow::Result<Uuid> {
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no id in {v}"))
}

impl Target {
    /// Tenant (with room for many concurrent builds), developer token,
    /// kube-sim prepared for it, provider and project.
    pub async fn setup(stack: &Stack, connections: usize) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .build()?;
        let base = format!("{}/api/v1", stack.base_url);
        let admin = &stack.admin_token;
        let post = |path: &str, token: &str, body: Value| {
            let (http, url) = (http.clone(), format!("{base}{path}"));
            let token = token.to_owned();
            async move {
                call(
                    &http,
                    Method::POST,
                    &url,
                    &token,
                    Some(body),
                    StatusCode::CREATED,
                    true,
                )
                .await
            }
        };
        let name = format!("load-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let tenant = id(&post(
            "/tenants",
            admin,
            json!({"name": name, "max_concurrent_builds": 1000}),
        )
        .await?)?;
        let token = post(
            &format!("/tenants/{tenant}/tokens"),
            admin,
            json!({"name": "load", "role": "admin"}),
        )
        .await?["token"]
            .as_str()
            .context("no token")?
            .to_owned();
        sim::prepare_tenant(&stack.sim, tenant).await?;
        let provider = id(&post("/providers", &token, json!({"name": "kube-sim", "provider_type": "kubernetes", "config": sim::provider_config(&stack.sim)})).await?)?;
        let project = id(&post(
            "/projects",
            &token,
            json!({"name": "app", "git_url": "https://git.example.com/load/app.git"}),
        )
        .await?)?;
        Ok(Arc::new(Target {
            http,
            base,
            token,
            project,
            provider,
            submitted: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
        }))
    }

    fn failed(&self, what: String) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() < 5 {
            f.push(what);
        }
    }

    /// The first failures seen, for the report.
    pub fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A build to read: spread over what was submitted so far.
    fn some_build(&self, i: u64) -> Option<Uuid> {
        let ids = self.submitted.lock().unwrap_or_else(|e| e.into_inner());
        (!ids.is_empty()).then(|| ids[(i as usize).wrapping_mul(7919) % ids.len()])
    }

    async fn send(&self, op: Op, i: u64) -> anyhow::Result<()> {
        let (method, path, body, expect) = match op {
            Op::Submit => {
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                let body = json!({"project_id": self.project, "method": "docker",
                    "infrastructure_provider_id": self.provider,
                    "image": format!("registry.example.com/load/app:{n}")});
                (
                    Method::POST,
                    "/builds".to_owned(),
                    Some(body),
                    StatusCode::CREATED,
                )
            }
            Op::Get => match self.some_build(i) {
                Some(b) => (Method::GET, format!("/builds/{b}"), None, StatusCode::OK),
                None => (
                    Method::GET,
                    "/builds?limit=1".to_owned(),
                    None,
                    StatusCode::OK,
                ),
            },
            Op::List => (
                Method::GET,
                "/builds?limit=20".to_owned(),
                None,
                StatusCode::OK,
            ),
        };
        let url = format!("{}{path}", self.base);
        // Only a submit's answer is read (for the new build's id).
        let submit = op == Op::Submit;
        let v = call(&self.http, method, &url, &self.token, body, expect, submit).await?;
        if !submit {
            return Ok(());
        }
        let build = id(&v)?;
        self.submitted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(build);
        Ok(())
    }

    async fn timed(&self, op: Op, i: u64, result: &mut PhaseResult) {
        let started = Instant::now();
        match self.send(op, i).await {
            Ok(()) => result.tally(op).record(started.elapsed()),
            Err(e) => {
                result.tally(op).errors += 1;
                self.failed(format!("{e:#}"));
            }
        }
    }
}

async fn worker(target: Arc<Target>, mix: Mix, w: u64, until: Instant) -> PhaseResult {
    let mut result = PhaseResult::default();
    let mut i = w * 1_000_003;
    while Instant::now() < until {
        let op = match mix {
            Mix::Only(op) => op,
            Mix::Mixed { submit_every: None } => mixed_op(i),
            Mix::Mixed {
                submit_every: Some(_),
            } => match mixed_op(i) {
                Op::Submit => Op::Get,
                other => other,
            },
        };
        target.timed(op, i, &mut result).await;
        i += 1;
    }
    result
}

/// One submission every `every` until `until`.
async fn paced_submitter(target: Arc<Target>, every: Duration, until: Instant) -> PhaseResult {
    let mut result = PhaseResult::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i = 0;
    while Instant::now() < until {
        tick.tick().await;
        target.timed(Op::Submit, i, &mut result).await;
        i += 1;
    }
    result
}

/// `connections` workers sending `mix` for `duration`.
pub async fn phase(
    target: &Arc<Target>,
    mix: Mix,
    connections: usize,
    duration: Duration,
) -> PhaseResult {
    let started = Instant::now();
    let until = started + duration;
    let mut tasks: Vec<_> = (0..connections as u64)
        .map(|w| tokio::spawn(worker(target.clone(), mix, w, until)))
        .collect();
    if let Mix::Mixed {
        submit_every: Some(every),
    } = mix
    {
        tasks.push(tokio::spawn(paced_submitter(target.clone(), every, until)));
    }
    let mut total = PhaseResult::default();
    for t in tasks {
        match t.await {
            Ok(r) => total.merge(r),
            Err(e) => {
                total.submit.errors += 1;
                target.failed(format!("worker: {e}"));
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Log followers' outcome.
#[derive(Debug, Default)]
pub struct Follows {
    pub streams: u64,
    /// Streams that reached the `end` event.
    pub completed: u64,
    pub lines: u64,
    pub errors: u64,
}

impl Follows {
    pub fn line(&self) -> String {
        format!(
            "follow: streams={} completed={} lines={} errors={}",
            self.streams, self.completed, self.lines, self.errors
        )
    }
}

/// Follows logs of submitted builds (finished ones replay at once, running
/// ones stream), one after the other, until `until`; a stream still open
/// then is closed and counts as neither completed nor failed.
async fn follower(target: Arc<Target>, k: u64, until: Instant) -> Follows {
    let mut out = Follows::default();
    let mut i = k;
    while Instant::now() < until {
        i += 1;
        let Some(build) = target.some_build(i) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        out.streams += 1;
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, follow_one(&target, build)).await {
            Ok(Ok(lines)) => {
                out.completed += 1;
                out.lines += lines;
            }
            Ok(Err(e)) => {
                out.errors += 1;
                target.failed(format!("follow {build}: {e:#}"));
            }
            Err(_) => {}
        }
    }
    out
}

/// Lines of one followed log up to its `end` event.
async fn follow_one(target: &Target, build: Uuid) -> anyhow::Result<u64> {
    let url = format!("{}/builds/{build}/logs?follow=true", target.base);
    let res = target
        .http
        .get(&url)
        .bearer_auth(&target.token)
        .send()
        .await?;
    if res.status() != StatusCode::OK {
        bail!("GET {url}: {}", res.status());
    }
    let mut events = pin!(sse::events(res.bytes_stream()));
    let mut lines = 0;
    while let Some(event) = events.next().await {
        let event = event?;
        match event.event.as_str() {
            "log" => lines += 1,
            "end" => return Ok(lines),
            "error" => bail!("the stream reported: {}", event.data),
            _ => {}
        }
    }
    bail!("the stream ended before the build did")
}

/// `followers` log followers until `until`.
pub async fn follow(target: &Arc<Target>, followers: usize, until: Instant) -> Follows {
    let tasks: Vec<_> = (0..followers)
        .map(|k| tokio::spawn(follower(target.clone(), k as u64 * 1_000_003, until)))
        .collect();
    let mut total = Follows::default();
    for t in tasks {
        if let Ok(f) = t.await {
            total.streams += f.streams;
            total.completed += f.completed;
            total.lines += f.lines;
            total.errors += f.errors;
        } else {
            total.errors += 1;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mixed_worker_sends_one_submit_six_gets_and_three_lists_in_ten() {
        let ops: Vec<Op> = (0..10).map(mixed_op).collect();
        let count = |op| ops.iter().filter(|o| **o == op).count();
        assert_eq!(
            (count(Op::Submit), count(Op::Get), count(Op::List)),
            (1, 6, 3)
        );
    }
}
