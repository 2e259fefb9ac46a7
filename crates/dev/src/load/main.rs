//! `imagefactory-load`: load and soak of `imagefactory serve` (embedded
//! dispatcher, Tekton executor) on kube-sim, with a fresh database.
//!
//! Load (default): pgbench's raw single-row INSERT rate on the idle
//! database first, then the server, a warm-up, and phases of `--duration`
//! each — submits, gets, lists, log follows, mixed — printing a line per
//! phase and ending with exactly one line
//! `api-load: submit_per_s=… submit_p99_ms=… get_per_s=… errors=…`.
//!
//! Soak (`--soak 10m`): mixed traffic with builds submitted at a steady
//! rate and followed, the server's RSS after the warm-up and at the end,
//! then every accepted build checked: terminal, exactly one execution.

mod cpu;
mod pgbench;
mod report;
mod soak;
mod stack;
mod traffic;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use imagefactory_dispatch::settings::parse_duration;

use cpu::CpuSample;
use report::{Summary, TARGETS, change_pct};
use stack::Stack;
use traffic::{Mix, Op, PhaseResult, Target};

#[derive(Debug, Parser)]
#[command(
    name = "imagefactory-load",
    about = "Load and soak of imagefactory serve (embedded dispatcher, kube-sim) on a fresh database"
)]
pub struct Args {
    /// PostgreSQL server (no database part); the run creates its own
    /// database there and drops it at the end.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub database_server: String,
    /// The `imagefactory` binary; default: the one beside this binary.
    #[arg(long)]
    pub serve_bin: Option<PathBuf>,
    /// Concurrent connections (workers) per phase, and pgbench's clients.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Length of each phase.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Mixed traffic before anything is measured.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Concurrent log followers (follow phase, mixed phase, soak).
    #[arg(long, default_value_t = 8)]
    pub followers: usize,
    /// Serve without the embedded dispatcher (builds stay queued).
    #[arg(long)]
    pub no_dispatcher: bool,
    /// kube-sim's time scale: simulated build steps take this fraction of
    /// their simulated time. Default 1 for the load phases: as long as they
    /// say (a load build ~10 s, the dispatcher keeps its capacity in flight);
    /// 0.05 for the soak, whose builds must all end: the dispatcher then
    /// runs a whole build per submit within the phase (churn).
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Soak for this long instead of the load phases (e.g. `10m`).
    #[arg(long, value_parser = parse_duration)]
    pub soak: Option<Duration>,
    /// Builds submitted per second during the soak.
    #[arg(long, default_value_t = 20)]
    pub soak_builds_per_s: u32,
    /// After the soak's traffic, how long builds may take to end.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Keep the run's database (its name is printed).
    #[arg(long)]
    pub keep_db: bool,
}

impl Args {
    pub fn time_scale(&self) -> f64 {
        match (self.time_scale, self.soak) {
            (Some(scale), _) => scale,
            (None, Some(_)) => 0.05,
            (None, None) => 1.0,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("imagefactory-load: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(false)`: the run completed but failed its checks (errors, lost builds).
async fn run(args: Args) -> anyhow::Result<bool> {
    let (pool, url, name) = Stack::prepare(&args).await?;
    println!("database {name} (migrated)");
    // pgbench first, on the idle database: the raw figure to compare with
    // (the soak reports no rates).
    let inserts = match args.soak {
        None => pgbench::insert_rate(&pool, &url, args.connections, args.duration).await,
        Some(_) => Ok(0.0),
    };
    let stack = Stack::start(&args, pool, &url, name).await?;
    println!(
        "serve pid {} at {} (dispatcher {}), kube-sim at {} (time scale {})",
        stack.serve.pid(),
        stack.base_url,
        if args.no_dispatcher {
            "off"
        } else {
            "embedded"
        },
        stack.sim.endpoint(),
        args.time_scale()
    );
    let outcome = match args.soak {
        Some(length) => soak_run(&args, &stack, length).await,
        None => load_run(&args, &stack, inserts).await,
    };
    if outcome.is_err() {
        eprintln!("{}", stack.serve.output_tail());
    }
    stack.stop(args.keep_db).await?;
    outcome
}

fn print_failures(target: &Target) {
    for f in target.failures() {
        eprintln!("  failure: {f}");
    }
}

async fn load_run(
    args: &Args,
    stack: &Stack,
    inserts: anyhow::Result<f64>,
) -> anyhow::Result<bool> {
    let target = Target::setup(stack, args.connections).await?;
    let c = args.connections;
    let mixed = Mix::Mixed { submit_every: None };
    traffic::phase(&target, mixed, c, args.warmup).await;
    let only = |op| {
        measured(
            stack,
            traffic::phase(&target, Mix::Only(op), c, args.duration),
        )
    };
    let submit = only(Op::Submit).await;
    println!("{}", submit.submit.line("submit", submit.elapsed));
    println!("{}", submit.cpu_line("submit"));
    let get = only(Op::Get).await;
    println!("{}", get.get.line("get", get.elapsed));
    println!("{}", get.cpu_line("get"));
    let list = only(Op::List).await;
    println!("{}", list.list.line("list", list.elapsed));
    println!("{}", list.cpu_line("list"));
    let until = Instant::now() + args.duration;
    let follows = traffic::follow(&target, args.followers, until).await;
    println!("{}", follows.line());
    let (mix, mix_follows) = mixed_with_followers(args, &target, mixed, args.duration).await;
    println!("{}", mix.all().line("mixed", mix.elapsed));
    println!(
        "{}",
        mix_follows.line().replacen("follow:", "mixed-follow:", 1)
    );
    print_failures(&target);
    let summary = Summary {
        submit_per_s: submit.submit.per_s(submit.elapsed),
        submit_p99_ms: submit.submit.quantile_ms(0.99),
        get_per_s: get.get.per_s(get.elapsed),
        errors: submit.errors()
            + get.errors()
            + list.errors()
            + mix.errors()
            + follows.errors
            + mix_follows.errors,
    };
    let met = if summary.meets_targets() {
        "met"
    } else {
        "NOT met"
    };
    println!("targets ({TARGETS}): {met}");
    match inserts {
        Ok(rate) => println!(
            "pgbench: insert_per_s={rate:.0} (one-row INSERT per transaction into a builds-shaped table, {c} clients, same server, idle)"
        ),
        Err(e) => println!("pgbench: unavailable: {e:#}"),
    }
    println!("{}", summary.line());
    Ok(summary.errors == 0)
}

/// Runs a phase and notes the CPU the processes used meanwhile.
async fn measured(
    stack: &Stack,
    phase: impl std::future::Future<Output = PhaseResult>,
) -> PhaseResult {
    let before = CpuSample::take(stack.serve.pid()).ok();
    let mut result = phase.await;
    let after = CpuSample::take(stack.serve.pid()).ok();
    result.cpu = before.zip(after).map(|(a, b)| a.until(&b));
    result
}

async fn mixed_with_followers(
    args: &Args,
    target: &Arc<Target>,
    mix: Mix,
    length: Duration,
) -> (PhaseResult, traffic::Follows) {
    let until = Instant::now() + length;
    let followers = tokio::spawn({
        let target = target.clone();
        let n = args.followers;
        async move { traffic::follow(&target, n, until).await }
    });
    let result = traffic::phase(target, mix, args.connections, length).await;
    let follows = followers.await.unwrap_or_else(|_| traffic::Follows {
        errors: 1,
        ..Default::default()
    });
    (result, follows)
}

async fn soak_run(args: &Args, stack: &Stack, length: Duration) -> anyhow::Result<bool> {
    let target = Target::setup(stack, args.connections).await?;
    let every = Duration::from_secs(1) / args.soak_builds_per_s.max(1);
    let mix = Mix::Mixed {
        submit_every: Some(every),
    };
    mixed_with_followers(args, &target, mix, args.warmup).await;
    let rss_start = stack.serve.rss_kb()?;
    println!(
        "soak: {length:?} of mixed traffic, {} builds/s; serve RSS after warm-up {rss_start} KiB",
        args.soak_builds_per_s
    );
    let (traffic, follows) = mixed_with_followers(args, &target, mix, length).await;
    let rss_end = stack.serve.rss_kb()?;
    println!("{}", traffic.all().line("mixed", traffic.elapsed));
    println!("{}", traffic.submit.line("submit", traffic.elapsed));
    println!("{}", follows.line());
    let ids = target
        .submitted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let accounting = soak::drain(&stack.pool, &ids, args.drain_timeout).await?;
    println!("{}", accounting.line());
    print_failures(&target);
    let errors = traffic.errors() + follows.errors;
    let ok = errors == 0 && accounting.all_accounted();
    println!(
        "soak: duration_s={} rss_start_kb={rss_start} rss_end_kb={rss_end} rss_change_pct={:.1} builds={} unaccounted={} errors={errors} verdict={}",
        length.as_secs(),
        change_pct(rss_start, rss_end),
        accounting.accepted,
        accounting.accepted - accounting.terminal.min(accounting.one_execution),
        if ok { "ok" } else { "FAILED" }
    );
    Ok(ok)
}
