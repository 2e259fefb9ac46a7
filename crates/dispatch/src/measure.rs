//! What the dispatcher records in the process's metrics
//! (`imagefactory_metrics`): queue wait at claim, start latency, build
//! duration and outcome, in-flight executions and leases held. Timestamps
//! come from what the claim already returned (database clock) and a
//! monotonic clock taken at the claim: no query of its own.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use imagefactory_domain::{BuildMethod, BuildStatus};
use imagefactory_metrics::{FinishedLabels, OutcomeLabels, metrics};
use imagefactory_store::executions::{ExecutionRow, NewLogLine};

/// When this dispatcher got an execution, and how old the execution was
/// then (a taken-over one started on another dispatcher).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    claimed: Instant,
    age_at_claim: Duration,
    /// Claimed from the queue (not taken over from an expired lease): its
    /// queue wait is this dispatcher's to record.
    pub from_queue: bool,
}

impl Timing {
    pub fn new(execution: &ExecutionRow, from_queue: bool) -> Self {
        Self {
            claimed: Instant::now(),
            age_at_claim: Duration::from_millis(execution.age_ms.max(0) as u64),
            from_queue,
        }
    }

    /// The monotonic time of the claim (start latency counts from it).
    pub fn claimed(&self) -> Instant {
        self.claimed
    }
}

/// The queue wait of an attempt claimed from the queue: from when it became
/// claimable to its execution's start (both by the database clock).
pub fn queue_wait(timing: &Timing, claimable_since: DateTime<Utc>, started_at: DateTime<Utc>) {
    if !timing.from_queue {
        return;
    }
    let waited = (started_at - claimable_since).to_std().unwrap_or_default();
    metrics().queue_wait.observe(waited.as_secs_f64());
}

/// The executor reported the work started, `since` the claim.
pub fn started(since: Instant) {
    metrics()
        .start_latency
        .observe(since.elapsed().as_secs_f64());
}

/// A build's end was recorded by this dispatcher.
pub fn finished(timing: &Timing, status: BuildStatus, method: Option<BuildMethod>) {
    let m = metrics();
    let took = timing.age_at_claim + timing.claimed.elapsed();
    let outcome = status.as_str();
    m.build_duration
        .get_or_create(&OutcomeLabels { outcome })
        .observe(took.as_secs_f64());
    m.builds_finished
        .get_or_create(&FinishedLabels {
            outcome,
            method: method.map_or("unknown", BuildMethod::as_str),
        })
        .inc();
}

/// `new` of `rows` were stored (the others were already: a re-attached
/// executor resending). Bytes are the stored text's; when only some rows
/// were new, which ones is unknown, so their share of the bytes is counted.
pub fn logs_stored(rows: &[NewLogLine<'_>], new: u64) {
    if new == 0 || rows.is_empty() {
        return;
    }
    let bytes: u64 = rows.iter().map(|r| r.line.len() as u64).sum();
    let m = metrics();
    m.log_lines.inc_by(new);
    m.log_bytes.inc_by(bytes * new / rows.len() as u64);
}

/// The service's own note (one line) was stored in a build's log.
pub fn note_stored(line: &str) {
    let m = metrics();
    m.log_lines.inc();
    m.log_bytes.inc_by(line.len() as u64);
}

// Gauges move by differences, not set: several dispatchers may share a
// process (tests, the benchmark) and each adds only its own part.

/// An execution joined this dispatcher's in-flight set.
pub fn execution_started() {
    metrics().in_flight.inc();
}

/// An execution left this dispatcher's in-flight set.
pub fn execution_ended() {
    metrics().in_flight.dec();
}

/// This dispatcher's leases renewed at its last heartbeat: `count` now,
/// `held` what it reported before (updated).
pub fn leases_held(held: &AtomicI64, count: usize) {
    let count = count as i64;
    let before = held.swap(count, Ordering::Relaxed);
    metrics().leases_held.inc_by(count - before);
}
