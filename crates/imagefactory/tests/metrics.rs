//! `GET /metrics` of a real `imagefactory serve` (embedded dispatcher, the
//! global cluster on kube-sim) after builds of every outcome: docker builds
//! succeed, kaniko's step fails, a long buildx build is cancelled. The
//! exposition text is parsed line by line and the figures checked exactly
//! where the run makes them deterministic.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Http, Proc, free_port, fresh_database, serve_env};
use imagefactory_exec::tekton::TektonVersion;
use imagefactory_exec::tekton::namespace::ensure_namespace;
use imagefactory_exec::tekton::secrets::operator_docker_config;
use imagefactory_exec::tekton::tasks::install_tasks;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube_sim::tekton::{ControllerOptions, ScriptRule};
use kube_sim::{KubeSim, KubeSimHandle, KubeSimOptions};
use serde_json::json;

const METRICS_TOKEN: &str = "metrics-scrape-token";

/// One sample: metric name and its labels, sorted.
type Key = (String, BTreeMap<String, String>);

/// Parses the Prometheus text format: comments skipped, every other line
/// `name{label="value",...} number`, label values unescaped. Panics on a
/// line that is not a sample (a broken exposition fails the test).
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                (name.to_owned(), parse_labels(body, line))
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line:?}"
        );
        assert!(
            samples.insert((name, labels), value).is_none(),
            "duplicate series: {line:?}"
        );
    }
    samples
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label value not quoted: {line:?}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("dangling escape: {line:?}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value: {line:?}"),
            }
        }
        labels.insert(name, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

struct Scrape(BTreeMap<Key, f64>);

impl Scrape {
    /// The sample `name` with exactly `labels`; 0 when absent (a series is
    /// created at its first event).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// Every series of `name`.
    fn series(&self, name: &str) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.0
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l, *v))
            .collect()
    }

    /// A histogram's count, checked against its buckets: cumulative,
    /// non-decreasing, ending at `+Inf` with the count.
    fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let count = self.get(&format!("{name}_count"), labels);
        let mut buckets: Vec<(f64, f64)> = self
            .series(&format!("{name}_bucket"))
            .into_iter()
            .filter(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                    && l.len() == labels.len() + 1
            })
            .map(|(l, v)| {
                let le = &l["le"];
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                (bound, v)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(!buckets.is_empty(), "{name}{labels:?} has no buckets");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name}{labels:?} buckets not cumulative: {buckets:?}"
        );
        let last = buckets.last().unwrap();
        assert_eq!(last.0, f64::INFINITY, "{name}{labels:?}");
        assert_eq!(last.1, count, "{name}{labels:?} +Inf bucket vs count");
        count
    }
}

struct Setup {
    proc: Proc,
    /// The standalone dispatcher and its metrics port, when `serve` runs none.
    dispatcher: Option<(Proc, Http)>,
    http: Http,
    token: String,
    tenant: String,
    project: String,
    _sim: KubeSimHandle,
    _db: common::ReservedDb,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn rule(task: &str, duration: Option<&str>, logs: &[&str], exit_code: Option<i32>) -> ScriptRule {
    ScriptRule {
        task: Some(task.into()),
        step: None,
        duration: duration.map(Into::into),
        logs: Some(logs.iter().map(|s| s.to_string()).collect()),
        exit_code,
        results: Default::default(),
    }
}

/// kube-sim (kaniko's step fails, buildx runs an hour of simulated time),
/// `serve` on it as its global cluster, one build at a time, and a tenant
/// whose namespace the operator prepared.
async fn setup() -> Setup {
    setup_with(false).await
}

/// As [`setup`]; with `standalone`, `serve` runs no dispatcher and an
/// `imagefactory dispatcher` serves its own `/metrics` on another port.
async fn setup_with(standalone: bool) -> Setup {
    let sim = KubeSim::start(KubeSimOptions {
        tekton: Some(ControllerOptions {
            time_scale: 0.02,
            rules: vec![
                rule("kaniko", None, &["error building image"], Some(3)),
                rule("buildx", Some("1h"), &["building slowly"], None),
            ],
            ..ControllerOptions::default()
        }),
        ..KubeSimOptions::default()
    })
    .await
    .expect("kube-sim starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let db = fresh_database("metrics");
    let port = free_port();
    let workdir = tempfile::tempdir().unwrap();
    let mut env = serve_env(&db.url, port, workdir.path(), "info");
    env.extend([
        (
            "IF_BUILD_TEKTON_KUBECONFIG",
            kubeconfig.display().to_string(),
        ),
        ("IF_METRICS_TOKEN", METRICS_TOKEN.into()),
        ("IF_DISPATCHER_MAX_IN_FLIGHT", "1".into()),
        ("IF_DISPATCHER_HEARTBEAT_INTERVAL", "200ms".into()),
    ]);
    let dispatcher_env = env.clone();
    if standalone {
        env.push(("IF_DISPATCHER_ENABLED", "false".into()));
    }
    let mut proc = Proc::spawn(&["serve"], &env);
    let http = Http::new(port);
    http.wait_ready(&mut proc, Duration::from_secs(60)).await;
    // After serve made the database and its schema.
    let dispatcher = standalone.then(|| {
        let metrics_port = free_port();
        let mut denv = dispatcher_env;
        denv.retain(|(k, _)| *k != "IF_LISTEN_ADDR");
        denv.push((
            "IF_METRICS_LISTEN_ADDR",
            format!("127.0.0.1:{metrics_port}"),
        ));
        (Proc::spawn(&["dispatcher"], &denv), Http::new(metrics_port))
    });
    let (tenant, token) = http.tenant_with_token("metrics").await;
    let tenant = tenant["id"].as_str().unwrap().to_owned();
    let project = http
        .created(
            "/api/v1/projects",
            &token,
            json!({"name": "web", "git_url": "https://git.example.com/team/web.git"}),
        )
        .await;
    let client = sim.kube_client().await.unwrap();
    let namespace = ensure_namespace(&client, tenant.parse().unwrap())
        .await
        .unwrap();
    install_tasks(&client, TektonVersion::V1, &namespace)
        .await
        .unwrap();
    let secret = operator_docker_config(&namespace, br#"{"auths":{}}"#);
    Api::<Secret>::namespaced(client, &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    Setup {
        proc,
        dispatcher,
        http,
        token,
        tenant,
        project: project["id"].as_str().unwrap().to_owned(),
        _sim: sim,
        _db: db,
        _dirs: (dir, workdir),
    }
}

impl Setup {
    async fn submit(&self, method: &str) -> String {
        let build = self
            .http
            .created(
                "/api/v1/builds",
                &self.token,
                json!({"project_id": self.project, "method": method,
                       "image": "registry.example.com/team/web:1.0"}),
            )
            .await;
        build["id"].as_str().unwrap().to_owned()
    }

    async fn wait(&self, id: &str, wanted: &[&str]) {
        self.http
            .wait_build(&self.token, id, wanted, &self.proc, Duration::from_secs(60))
            .await;
    }

    async fn log(&self, id: &str) -> Vec<String> {
        let text = self
            .http
            .client
            .get(format!("{}/api/v1/builds/{id}/logs", self.http.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines().map(str::to_owned).collect()
    }

    async fn scrape_as(&self, token: Option<&str>) -> (u16, String) {
        scrape_at(&self.http, token).await
    }

    async fn scrape(&self) -> (String, Scrape) {
        let (status, text) = self.scrape_as(Some(METRICS_TOKEN)).await;
        assert_eq!(status, 200, "{text}");
        let parsed = Scrape(parse(&text));
        (text, parsed)
    }

    /// Scrapes until `ok` holds (gauges set by the heartbeat), or panics.
    async fn scrape_until(&self, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (text, scrape) = self.scrape().await;
            if ok(&scrape) {
                return scrape;
            }
            assert!(Instant::now() < deadline, "{what} never held:\n{text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_builds_of_every_outcome() {
    let mut s = setup().await;
    // Without the token, or with another, nothing is shown.
    assert_eq!(s.scrape_as(None).await.0, 401);
    assert_eq!(s.scrape_as(Some("wrong")).await.0, 401);

    let succeeded = s.submit("docker").await;
    s.wait(&succeeded, &["succeeded"]).await;
    let failed = s.submit("kaniko").await;
    s.wait(&failed, &["failed"]).await;
    // The buildx build holds the only slot; a docker build waits queued.
    let cancelled = s.submit("buildx").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s
        .log(&cancelled)
        .await
        .iter()
        .any(|l| l.starts_with("Created PipelineRun"))
    {
        assert!(
            Instant::now() < deadline,
            "buildx never started\n{}",
            s.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queued = s.submit("docker").await;
    let mid = s
        .scrape_until("one lease held", |m| {
            m.get("imagefactory_dispatcher_leases_held", &[]) == 1.0
        })
        .await;
    let (running, waiting) = (
        [("state", "running"), ("method", "buildx")],
        [("state", "queued"), ("method", "docker")],
    );
    assert_eq!(mid.get("imagefactory_builds", &running), 1.0);
    assert_eq!(mid.get("imagefactory_builds", &waiting), 1.0);
    assert_eq!(mid.series("imagefactory_builds").len(), 2);
    let tenant = [("tenant_id", s.tenant.as_str())];
    assert_eq!(mid.get("imagefactory_queue_depth", &tenant), 1.0);
    assert_eq!(
        mid.get("imagefactory_dispatcher_executions_in_flight", &[]),
        1.0
    );

    let (status, _) = s
        .http
        .post(
            &format!("/api/v1/builds/{cancelled}/cancel"),
            &s.token,
            json!({}),
        )
        .await;
    assert!(status < 300, "cancel answered {status}");
    s.wait(&cancelled, &["cancelled"]).await;
    s.wait(&queued, &["succeeded"]).await;
    // A path no route matches, holding what must never become a label.
    let (status, _) = s
        .http
        .get("/api/v1/no-such/secret-in-path", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 404);

    let end = s
        .scrape_until("no lease held", |m| {
            m.get("imagefactory_dispatcher_leases_held", &[]) == 0.0
        })
        .await;
    check_builds(&end);
    check_logs(&s, &end, [&succeeded, &failed, &cancelled, &queued]).await;
    check_http_and_kube(&s, &end).await;
    s.proc.signal(libc::SIGTERM);
    s.proc.wait_for_exit(Duration::from_secs(20)).await;
}

fn check_builds(end: &Scrape) {
    assert!(end.series("imagefactory_builds").is_empty());
    assert!(end.series("imagefactory_queue_depth").is_empty());
    assert_eq!(
        end.get("imagefactory_dispatcher_executions_in_flight", &[]),
        0.0
    );
    let duration = "imagefactory_build_duration_seconds";
    for (outcome, count) in [("succeeded", 2.0), ("failed", 1.0), ("cancelled", 1.0)] {
        assert_eq!(
            end.histogram_count(duration, &[("outcome", outcome)]),
            count,
            "{outcome}"
        );
        let sum = end.get(&format!("{duration}_sum"), &[("outcome", outcome)]);
        assert!(sum > 0.0, "{outcome}: {sum}");
    }
    assert_eq!(end.series(&format!("{duration}_count")).len(), 3);
    for (outcome, method, count) in [
        ("succeeded", "docker", 2.0),
        ("failed", "kaniko", 1.0),
        ("cancelled", "buildx", 1.0),
    ] {
        let labels = [("outcome", outcome), ("method", method)];
        assert_eq!(
            end.get("imagefactory_builds_finished_total", &labels),
            count
        );
    }
    assert_eq!(end.series("imagefactory_builds_finished_total").len(), 3);
    // Four attempts, each claimed from the queue and started once.
    assert_eq!(
        end.histogram_count("imagefactory_build_queue_wait_seconds", &[]),
        4.0
    );
    assert_eq!(
        end.histogram_count("imagefactory_build_start_seconds", &[]),
        4.0
    );
    // The queued docker build waited for the buildx one (cancelled after
    // a scrape at least): its wait is in a bucket above the smallest.
    let waited = end.get("imagefactory_build_queue_wait_seconds_sum", &[]);
    assert!(waited > 0.0, "{waited}");
}

async fn check_logs(s: &Setup, end: &Scrape, builds: [&String; 4]) {
    let (mut lines, mut bytes) = (0.0, 0.0);
    for id in builds {
        let log = s.log(id).await;
        lines += log.len() as f64;
        bytes += log.iter().map(|l| l.len() as f64).sum::<f64>();
    }
    assert!(lines > 8.0, "{lines}");
    assert_eq!(end.get("imagefactory_log_lines_stored_total", &[]), lines);
    assert_eq!(end.get("imagefactory_log_stored_bytes_total", &[]), bytes);
}

async fn check_http_and_kube(s: &Setup, end: &Scrape) {
    let http = "imagefactory_http_requests_total";
    let submits = [
        ("method", "POST"),
        ("route", "/api/v1/builds"),
        ("status", "201"),
    ];
    assert_eq!(end.get(http, &submits), 4.0);
    let cancels = [
        ("method", "POST"),
        ("route", "/api/v1/builds/{build_id}/cancel"),
        ("status", "202"),
    ];
    let cancels_ok =
        end.get(http, &cancels) + end.get(http, &[cancels[0], cancels[1], ("status", "200")]);
    assert_eq!(cancels_ok, 1.0);
    let refused = [("method", "GET"), ("route", "/metrics"), ("status", "401")];
    assert_eq!(end.get(http, &refused), 2.0);
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(end.get(http, &unmatched), 1.0);
    let route = [("method", "POST"), ("route", "/api/v1/builds")];
    let latency = "imagefactory_http_request_duration_seconds";
    assert_eq!(end.histogram_count(latency, &route), 4.0);
    // No raw path, id or secret is a label value.
    let (text, _) = s.scrape().await;
    for leak in [
        "secret-in-path",
        METRICS_TOKEN,
        ADMIN_TOKEN,
        s.token.as_str(),
    ] {
        assert!(!text.contains(leak), "{leak} in the exposition");
    }
    for (labels, _) in end.series(http) {
        assert!(!labels["route"].contains(&s.project), "{labels:?}");
    }

    // The executor's Kubernetes requests: at least the four PipelineRuns
    // created, all on the global cluster.
    let kube = end.series("imagefactory_kube_requests_total");
    assert!(!kube.is_empty());
    assert!(
        kube.iter().all(|(l, _)| l["provider"] == "global"),
        "{kube:?}"
    );
    let created = end.get(
        "imagefactory_kube_requests_total",
        &[("provider", "global"), ("verb", "create")],
    );
    assert!(created >= 4.0, "{kube:?}");
    for (labels, errors) in end.series("imagefactory_kube_request_errors_total") {
        let verb = labels["verb"].as_str();
        let sent = end.get(
            "imagefactory_kube_requests_total",
            &[("provider", "global"), ("verb", verb)],
        );
        assert!(errors <= sent, "{labels:?}: {errors} errors of {sent}");
    }
}

/// `GET /metrics` on `http`'s server, with `token` as bearer when given.
async fn scrape_at(http: &Http, token: Option<&str>) -> (u16, String) {
    let mut request = http.client.get(format!("{}/metrics", http.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// A standalone dispatcher serves its own `/metrics` (`IF_METRICS_LISTEN_ADDR`,
/// same token rule): the build it ran is counted there, not by `serve`, and it
/// shows no database gauges (those are `serve`'s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_dispatcher_serves_its_own_metrics() {
    let mut s = setup_with(true).await;
    let (mut dispatcher, metrics) = s.dispatcher.take().expect("standalone dispatcher");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match metrics
            .client
            .get(format!("{}/metrics", metrics.base))
            .send()
            .await
        {
            Ok(r) => break r.status().as_u16(),
            Err(e) => {
                assert!(
                    dispatcher.child.try_wait().unwrap().is_none(),
                    "dispatcher exited"
                );
                assert!(
                    Instant::now() < deadline,
                    "dispatcher metrics never listened: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(status, 401, "no token");
    assert_eq!(scrape_at(&metrics, Some("wrong")).await.0, 401);

    let id = s.submit("docker").await;
    s.wait(&id, &["succeeded"]).await;
    let (status, text) = scrape_at(&metrics, Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    let ran = Scrape(parse(&text));
    let labels = [("outcome", "succeeded"), ("method", "docker")];
    assert_eq!(
        ran.get("imagefactory_builds_finished_total", &labels),
        1.0,
        "{text}"
    );
    assert_eq!(
        ran.histogram_count("imagefactory_build_start_seconds", &[]),
        1.0
    );
    assert!(ran.series("imagefactory_builds").is_empty(), "{text}");
    // `serve` ran no build.
    let (_, served) = s.scrape().await;
    assert_eq!(
        served.get("imagefactory_builds_finished_total", &labels),
        0.0
    );
    drop(dispatcher);
}
