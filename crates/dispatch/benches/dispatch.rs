//! Dispatcher benchmark (`cargo bench -p imagefactory-dispatch --bench dispatch`).
//!
//! Against a fresh database on DATABASE_URL, with the scripted test executor:
//! 1. submit→claimed latency with LISTEN/NOTIFY: builds submitted one at a
//!    time (row + NOTIFY in one transaction, as the API does) to an idle
//!    dispatcher whose poll interval is 10 s, so only notifications wake it.
//!    Latency = execution row's `started_at` (claim transaction) − build's
//!    `created_at` (submit transaction), both by the database clock.
//! 2. claim throughput (builds/s) of 1 and 3 dispatchers draining a backlog:
//!    claimed = build running with its execution row; the executor's start
//!    (work + reference) runs concurrently on the same pools.
//! 3. baselines in the same run: a minimal loop claiming the same backlog on
//!    one connection with `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
//!    LOCKED LIMIT n)`, nothing else: n = 1 is what a pgbench job-queue
//!    script does (the baseline: one claim per transaction), n = 32
//!    is the dispatchers' batch (what a bare batched claim costs).
//!
//! With `IF_BENCH_CPU=1` each phase also prints where the CPU went (this
//! process, each PostgreSQL backend by its last statement, the server's
//! own processes, the whole machine), read outside the timed intervals.
//!
//! Throughput and the baselines run in 5 interleaved rounds; the summary
//! gives the medians. Ends with one summary line:
//! `dispatch: p50_ms=… p99_ms=… claims_per_s_1=… claims_per_s_3=… baseline_per_s=… ratio=…`
//! where baseline_per_s is the pgbench-style one-row loop and ratio =
//! claims_per_s_1 / baseline_per_s; the line before it gives the ratio
//! against the batch-32 loop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imagefactory_dispatch::testing::{TestExecutor, TestScript};
use imagefactory_dispatch::{Dispatcher, DispatcherMode, DispatcherSettings, Executors};
use imagefactory_store::CHANNEL_BUILD_QUEUED;
use imagefactory_test_support::TestDb;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const LATENCY_SAMPLES: usize = 300;
const BACKLOG: usize = 4000;
const BATCH: usize = 32;
const ROUNDS: usize = 5;

fn settings() -> DispatcherSettings {
    DispatcherSettings {
        poll_interval: Duration::from_secs(10),
        max_in_flight: BACKLOG,
        claim_batch: BATCH,
        lease: Duration::from_secs(120),
        heartbeat_interval: Duration::from_secs(5),
        shutdown_grace: Duration::ZERO,
        ..DispatcherSettings::default()
    }
}

async fn pool(url: &str, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .connect(url)
        .await
        .expect("connect")
}

struct Bench {
    pool: PgPool,
    url: String,
    tenant: Uuid,
    project: Uuid,
}

impl Bench {
    fn start_dispatcher(&self, pool: PgPool) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let executor: Arc<dyn imagefactory_exec::Executor> =
            Arc::new(TestExecutor::new(pool.clone()));
        let executors = Executors {
            tekton: Some(executor.clone()),
            local: Some(executor),
        };
        let d = Dispatcher::new(
            pool,
            settings(),
            executors,
            None,
            DispatcherMode::Standalone,
        );
        let token = CancellationToken::new();
        let t = token.clone();
        (
            token,
            tokio::spawn(async move { d.run(t).await.expect("dispatcher") }),
        )
    }

    /// Insert `n` queued builds in one transaction with one NOTIFY.
    async fn submit(&self, n: usize, duration_ms: u64) {
        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        let meta = TestScript {
            duration_ms,
            ..Default::default()
        }
        .to_metadata();
        let mut tx = self.pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO builds (id, tenant_id, project_id, method, infrastructure_type, git_url, git_ref, image) \
             SELECT id, $2, $3, 'docker', 'local', 'https://git.example/a.git', 'main', 'r.example/a:1' \
             FROM UNNEST($1::uuid[]) AS id",
        )
        .bind(&ids)
        .bind(self.tenant)
        .bind(self.project)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query("INSERT INTO build_configs (build_id, metadata) SELECT id, $2 FROM UNNEST($1::uuid[]) AS id")
            .bind(&ids)
            .bind(&meta)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL_BUILD_QUEUED)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    async fn reset(&self) {
        sqlx::query("TRUNCATE builds, test_executor_work CASCADE")
            .execute(&self.pool)
            .await
            .unwrap();
    }

    async fn wait_for(&self, sql: &str, want: i64) {
        while self.count(sql).await < want {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// CPU time so far (with `IF_BENCH_CPU=1`; else nothing is read): see
    /// [`Cpu`]. Taken outside the timed intervals.
    async fn cpu(&self) -> Option<Cpu> {
        if std::env::var("IF_BENCH_CPU").ok().as_deref() != Some("1") {
            return None;
        }
        let rows: Vec<(i32, String, String)> = sqlx::query_as(
            "SELECT pid, COALESCE(backend_type, ''), COALESCE(query, '') FROM pg_stat_activity \
             WHERE datname = current_database() OR datname IS NULL",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let own: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        let mut backends = HashMap::new();
        for (pid, kind, query) in rows {
            if pid == own {
                continue;
            }
            if let Some(ns) = on_cpu_ns(&format!("/proc/{pid}/schedstat")) {
                let class = if kind == "client backend" {
                    format!("backend: {}", query_class(&query))
                } else {
                    format!("server: {kind}")
                };
                backends.insert(pid, (class, ns));
            }
        }
        let process = std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .flatten()
                    .filter_map(|t| on_cpu_ns(&format!("{}/schedstat", t.path().display())))
                    .sum()
            })
            .unwrap_or(0);
        Some(Cpu {
            process,
            machine_busy_ticks: machine_busy_ticks(),
            backends,
        })
    }

    async fn latency(&self) -> (f64, f64) {
        let (stop, handle) = self.start_dispatcher(pool(&self.url, 8).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..LATENCY_SAMPLES {
            self.submit(1, 0).await;
            // Wait for the claim before the next submit, so each sample is a
            // lone submit to an idle dispatcher.
            self.wait_for("SELECT count(*) FROM build_executions", (i + 1) as i64)
                .await;
        }
        stop.cancel();
        handle.await.unwrap();
        let mut ms: Vec<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (e.started_at - b.created_at))::float8 * 1000 \
             FROM build_executions e JOIN builds b ON b.id = e.build_id",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        self.reset().await;
        (percentile(&ms, 0.50), percentile(&ms, 0.99))
    }

    async fn throughput(&self, dispatchers: usize) -> f64 {
        let mut running = Vec::new();
        for _ in 0..dispatchers {
            running.push(self.start_dispatcher(pool(&self.url, 8).await));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu0 = self.cpu().await;
        // Long builds: they stay running, so the figure is claiming (and
        // starting), not finishing. The clock starts when the backlog's
        // transaction has committed, as the baselines' does: no dispatcher
        // can see a build before that.
        let s0 = Instant::now();
        self.submit(BACKLOG, 600_000).await;
        let submitted = s0.elapsed();
        let t0 = Instant::now();
        // The claim moves a build to running and writes its execution row in
        // one statement, so "none queued" = all claimed. One index probe per
        // poll (a count over the growing executions table would compete with
        // the dispatchers for the two cores).
        while sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM builds WHERE status = 'queued')",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let elapsed = t0.elapsed();
        let executions = self.count("SELECT count(*) FROM build_executions").await;
        assert_eq!(
            executions, BACKLOG as i64,
            "every claimed build has its execution row"
        );
        let cpu1 = self.cpu().await;
        let started = self
            .count("SELECT count(*) FROM build_executions WHERE reference_at IS NOT NULL")
            .await;
        for (stop, handle) in running {
            stop.cancel();
            handle.await.unwrap();
        }
        self.reset().await;
        let rate = BACKLOG as f64 / elapsed.as_secs_f64();
        println!(
            "throughput dispatchers={dispatchers}: {BACKLOG} claimed in {:.3}s = {rate:.0}/s after the submit committed (the submit took {:.3}s before that; {started} already started by the executor)",
            elapsed.as_secs_f64(),
            submitted.as_secs_f64()
        );
        print_cpu(&format!("dispatchers={dispatchers}"), &cpu0, &cpu1, elapsed);
        rate
    }

    /// The store's claim function alone in a loop (no executor work): shows
    /// what the fairness query and execution rows cost on top of the raw claim.
    async fn claim_function(&self) -> f64 {
        self.submit(BACKLOG, 0).await;
        // Like the dispatcher's control pool: no ping before each claim.
        let control = PgPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect(&self.url)
            .await
            .expect("connect");
        // As a dispatcher does: one claimer, so the executor decision is
        // made once, not per claim.
        let claimer = imagefactory_store::queue::Claimer::new();
        let cpu0 = self.cpu().await;
        let t0 = Instant::now();
        let mut claimed = 0;
        loop {
            let req = imagefactory_store::queue::ClaimRequest {
                owner: "claim-fn",
                lease: Duration::from_secs(60),
                limit: BATCH as i64,
            };
            let batch = claimer
                .claim(&control, req, |_| {
                    imagefactory_store::queue::ClaimDecision::Run(
                        imagefactory_domain::ExecutorKind::Test,
                    )
                })
                .await
                .unwrap();
            if batch.claimed.is_empty() {
                break;
            }
            claimed += batch.claimed.len();
        }
        let elapsed = t0.elapsed();
        let cpu1 = self.cpu().await;
        control.close().await;
        assert_eq!(claimed, BACKLOG);
        self.reset().await;
        let rate = BACKLOG as f64 / elapsed.as_secs_f64();
        println!(
            "store claim function alone (batch {BATCH}, fairness query + execution rows): {BACKLOG} in {:.3}s = {rate:.0}/s",
            elapsed.as_secs_f64()
        );
        print_cpu("claim function", &cpu0, &cpu1, elapsed);
        rate
    }

    /// The one-row baseline driven by `pgbench` itself (when it is
    /// installed): shows the minimal loop is the claim rate pgbench measures.
    async fn pgbench(&self) -> Option<f64> {
        const CLAIM: &str = "UPDATE builds SET status = 'running', lease_owner = 'baseline', \
             lease_expires_at = now() + interval '60 seconds', attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM builds WHERE status = 'queued' AND not_before <= now() \
             ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED);\n";
        let script = std::env::temp_dir().join(format!("if-claim-{}.sql", std::process::id()));
        std::fs::write(&script, CLAIM).ok()?;
        self.submit(BACKLOG, 0).await;
        let out = std::process::Command::new("pgbench")
            .args([
                "-n",
                "-M",
                "prepared",
                "-c",
                "1",
                "-t",
                &BACKLOG.to_string(),
                "-f",
            ])
            .arg(&script)
            // libpq refuses sqlx's own query parameters.
            .arg(self.url.split('?').next().unwrap_or(&self.url))
            .output();
        let _ = std::fs::remove_file(&script);
        let queued = self
            .count("SELECT count(*) FROM builds WHERE status = 'queued'")
            .await;
        self.reset().await;
        let out = match out {
            Ok(o) if o.status.success() => o,
            Ok(o) => {
                println!(
                    "pgbench failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                println!("pgbench not run: {e}");
                return None;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let tps: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        assert_eq!(queued, 0, "pgbench claimed the whole backlog");
        println!(
            "baseline: pgbench, the same claim, one row per transaction, 1 client: {tps:.0}/s"
        );
        Some(tps)
    }

    /// `batch` = 1 is what a pgbench job-queue script does: one row per claim.
    async fn baseline_loop(&self, batch: usize) -> f64 {
        self.submit(BACKLOG, 0).await;
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        let cpu0 = self.cpu().await;
        let t0 = Instant::now();
        let mut claimed = 0u64;
        loop {
            let n = sqlx::query(
                "UPDATE builds SET status = 'running', lease_owner = 'baseline', \
                 lease_expires_at = now() + interval '60 seconds', attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM builds WHERE status = 'queued' AND not_before <= now() \
                              ORDER BY priority DESC, created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)",
            )
            .bind(batch as i64)
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected();
            if n == 0 {
                break;
            }
            claimed += n;
        }
        let elapsed = t0.elapsed();
        let cpu1 = self.cpu().await;
        assert_eq!(claimed, BACKLOG as u64);
        self.reset().await;
        let rate = BACKLOG as f64 / elapsed.as_secs_f64();
        println!(
            "baseline: raw SKIP LOCKED loop (batch {batch}) claimed {BACKLOG} in {:.3}s = {rate:.0}/s",
            elapsed.as_secs_f64()
        );
        print_cpu(&format!("baseline batch={batch}"), &cpu0, &cpu1, elapsed);
        rate
    }
}

/// CPU time (ns on CPU, from `/proc/<pid>/schedstat`) of this process (all
/// threads: bench, dispatchers, test executor), of each PostgreSQL process
/// of the bench database (classed by the last statement it ran) or of the
/// server (WAL writer, checkpointer, ...), and the whole machine's busy time
/// (all processes, other sessions included). A diagnostic: a connection's
/// class is its *last* statement, so pooled connections that ran several
/// kinds are classed by one of them.
struct Cpu {
    process: u64,
    machine_busy_ticks: u64,
    backends: HashMap<i32, (String, u64)>,
}

fn on_cpu_ns(path: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Busy time of all CPUs in USER_HZ ticks (all but idle and iowait).
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    v.iter().sum::<u64>() - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0)
}

fn query_class(query: &str) -> String {
    let q: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
    let q = q.trim_start_matches("/* ").to_owned();
    q.chars().take(48).collect()
}

/// Print where the CPU went between two snapshots (ms of CPU, and per build).
fn print_cpu(phase: &str, a: &Option<Cpu>, b: &Option<Cpu>, elapsed: Duration) {
    let (Some(a), Some(b)) = (a, b) else { return };
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut classes: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    let mut total_pg = 0;
    for (pid, (class, end)) in &b.backends {
        let start = a.backends.get(pid).map(|x| x.1).unwrap_or(0);
        let d = end.saturating_sub(start);
        total_pg += d;
        let e = classes.entry(class.clone()).or_default();
        e.0 += d;
        e.1 += 1;
    }
    let process = b.process.saturating_sub(a.process);
    let machine = (b.machine_busy_ticks - a.machine_busy_ticks) as f64 * 10.0;
    println!(
        "  cpu {phase}: wall {:.0} ms; machine busy {machine:.0} ms (of {:.0} ms on 2 cores); bench process {:.0} ms; postgres {:.0} ms; per build: process {:.1} us, postgres {:.1} us",
        elapsed.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64() * 2000.0,
        ms(process),
        ms(total_pg),
        process as f64 / 1000.0 / BACKLOG as f64,
        total_pg as f64 / 1000.0 / BACKLOG as f64,
    );
    let mut sorted: Vec<_> = classes.into_iter().collect();
    sorted.sort_by_key(|c| std::cmp::Reverse(c.1.0));
    for (class, (ns, n)) in sorted.into_iter().filter(|c| c.1.0 > 1_000_000) {
        println!("    {:>7.1} ms  {n:>2} x {class}", ms(ns));
    }
}

/// The machine's 1-minute load average: figures from runs far apart in load
/// are not comparable on a shared machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Dropped when the benchmark ends (or panics).
        let db = TestDb::with_pool("if_bench", 4, Duration::from_secs(60)).await;
        TestExecutor::install(&db.pool).await.unwrap();
        let (p, url) = (db.pool.clone(), db.url.clone());
        let tenant = Uuid::now_v7();
        let project = Uuid::now_v7();
        // Its builds are local (the test executor's slot): opted in.
        sqlx::query("INSERT INTO tenants (id, name, display_name, max_concurrent_builds, allow_local_builds) VALUES ($1, 'bench', 'bench', 1000000, true)")
            .bind(tenant)
            .execute(&p)
            .await
            .unwrap();
        sqlx::query("INSERT INTO projects (id, tenant_id, name, git_url) VALUES ($1, $2, 'a', 'https://git.example/a.git')")
            .bind(project)
            .bind(tenant)
            .execute(&p)
            .await
            .unwrap();
        let bench = Bench { pool: p, url, tenant, project };

        println!("load average at start: {}", load_average());
        let (p50, p99) = bench.latency().await;
        println!("latency submit→claimed over {LATENCY_SAMPLES} lone submits: p50={p50:.2}ms p99={p99:.2}ms");
        // Interleaved rounds, medians reported: the machine's load drifts
        // during a run and hits the dispatchers and the baseline alike.
        let (mut ones, mut threes, mut singles, mut batched) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            ones.push(bench.throughput(1).await);
            threes.push(bench.throughput(3).await);
            singles.push(bench.baseline_loop(1).await);
            batched.push(bench.baseline_loop(BATCH).await);
        }
        let (one, three) = (median(ones), median(threes));
        let (baseline, batched) = (median(singles), median(batched));
        println!(
            "medians of {ROUNDS} rounds: claims_per_s_1={one:.0} claims_per_s_3={three:.0} baseline (one row per claim, pgbench-style)={baseline:.0} baseline (batch {BATCH})={batched:.0}"
        );
        bench.claim_function().await;
        if bench.pgbench().await.is_none() {
            println!("baseline: pgbench not run");
        }
        println!(
            "against the batch-{BATCH} raw loop: ratio {:.2} (3 dispatchers: {:.2})",
            one / batched,
            three / batched
        );
        let ratio = one / baseline;
        println!(
            "ratio claims_per_s_1 / baseline (one row per claim) = {ratio:.2} (3 dispatchers: {:.2})",
            three / baseline
        );
        println!("load average at end: {}", load_average());

        bench.pool.close().await;
        db.drop_db().await;
        println!(
            "dispatch: p50_ms={p50:.1} p99_ms={p99:.1} claims_per_s_1={one:.0} claims_per_s_3={three:.0} baseline_per_s={baseline:.0} ratio={ratio:.2}"
        );
    });
}
