//! The dispatcher runtime: claim loop woken by LISTEN (poll as fallback),
//! one supervising task per execution (start or re-attach, timeout, stop
//! grace, finalize), lease/heartbeat renewal, cancel delivery and graceful
//! shutdown with handover.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use imagefactory_domain::{BuildStatus, ExecutorKind, InfrastructureType, ProviderStatus};
use imagefactory_exec::{ExecutionRef, Executor, Outcome, StopReason};
use imagefactory_store::crypto::Cipher;
use imagefactory_store::error::StoreError;
use imagefactory_store::executions::{self, ExecutionInputs, ExecutionRow};
use imagefactory_store::queue::{
    self, ClaimDecision, ClaimFacts, ClaimRequest, ClaimedBuild, Claimer, Finish,
};
use imagefactory_store::{CHANNEL_BUILD_CANCEL, CHANNEL_BUILD_QUEUED, dispatchers};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

use crate::context::build_context;
use crate::measure::{self, Timing};
use crate::outage::{OUTAGE_PATIENCE, retry_unavailable};
use crate::policy::{self, RetryPolicy};
use crate::select::{ProviderFacts, Slot, select_slot, tekton_off_reason};
use crate::settings::{DispatcherMode, DispatcherSettings};
use crate::sink::{NOTICE_SOURCE, ReferenceWriter, StoreSink, reference_writer};

/// The executors this dispatcher can hand builds to, by selection slot.
#[derive(Clone, Default)]
pub struct Executors {
    pub tekton: Option<Arc<dyn Executor>>,
    pub local: Option<Arc<dyn Executor>>,
}

impl Executors {
    fn for_slot(&self, slot: Slot) -> Option<&Arc<dyn Executor>> {
        match slot {
            Slot::Tekton => self.tekton.as_ref(),
            Slot::Local => self.local.as_ref(),
        }
    }

    /// The executor that owns executions recorded with `kind` (re-attach).
    fn by_kind(&self, kind: ExecutorKind) -> Option<&Arc<dyn Executor>> {
        [self.tekton.as_ref(), self.local.as_ref()]
            .into_iter()
            .flatten()
            .find(|e| e.kind() == kind)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("dispatcher database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub struct Dispatcher {
    shared: Arc<Shared>,
}

/// What the claim loop is doing, published after every claim cycle (see
/// [`Dispatcher::activity`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Claim cycles completed since the dispatcher started.
    pub claim_cycles: u64,
    /// The loop waits for its next wake-up with nothing left to do: LISTEN
    /// was up before its last claim cycle began, no wake-up is pending and
    /// nothing is in flight. From here only a notification, the poll
    /// interval or shutdown makes it claim again.
    pub idle: bool,
}

struct InFlight {
    stop: watch::Sender<Option<StopReason>>,
}

struct Shared {
    /// Executions (context loading, sink writes, finalization).
    pool: PgPool,
    /// Claiming, lease renewal and heartbeats: a separate small pool so they
    /// never queue behind hundreds of executions' writes (a starved renewal
    /// would lose leases under load).
    control: PgPool,
    settings: DispatcherSettings,
    executors: Executors,
    /// Claims, with this dispatcher's executor decisions remembered.
    claimer: Claimer,
    /// Executions' references, written together when reported together.
    references: Arc<ReferenceWriter>,
    cipher: Option<Cipher>,
    id: String,
    mode: DispatcherMode,
    host: String,
    in_flight: Mutex<HashMap<Uuid, InFlight>>,
    /// Cancel notifications for builds not (yet) held here, in case a claim
    /// transaction was committing as they arrived.
    pending_cancels: Mutex<HashMap<Uuid, Instant>>,
    wake: Notify,
    /// Look for expired or released leases in the next claim cycle. Set by
    /// the poll tick and by release notifications, so ordinary wake-ups do
    /// not pay for the takeover query.
    takeover_due: AtomicBool,
    /// The LISTEN connection is up: notifications reach this dispatcher.
    listening: AtomicBool,
    /// Closed (all senders gone) once nothing of this dispatcher runs.
    activity: watch::Sender<Activity>,
    /// Leases renewed at the last heartbeat, as last added to the metrics.
    leases: AtomicI64,
}

impl Dispatcher {
    pub fn new(
        pool: PgPool,
        settings: DispatcherSettings,
        executors: Executors,
        cipher: Option<Cipher>,
        mode: DispatcherMode,
    ) -> Self {
        let host = hostname();
        let id = format!(
            "{host}-{}-{}",
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..6]
        );
        Self {
            shared: Arc::new(Shared {
                control: PgPoolOptions::new()
                    .max_connections(2)
                    // No ping round trip before every claim: a dead
                    // connection fails the claim, which is logged, the
                    // connection dropped, and the claim retried next cycle.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // The claim's plan does not depend on its
                            // parameters, and keeps to the indexes however
                            // large the table has grown since it was made
                            // (store migration 0035); re-planning it per
                            // claim costs more than running it.
                            sqlx::query("SET plan_cache_mode = force_generic_plan")
                                .execute(conn)
                                .await
                                .map(|_| ())
                        })
                    })
                    .connect_lazy_with((*pool.connect_options()).clone()),
                references: reference_writer(pool.clone()),
                pool,
                settings,
                executors,
                claimer: Claimer::new(),
                cipher,
                id,
                mode,
                host,
                in_flight: Mutex::new(HashMap::new()),
                pending_cancels: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                takeover_due: AtomicBool::new(true),
                listening: AtomicBool::new(false),
                activity: watch::Sender::new(Activity::default()),
                leases: AtomicI64::new(0),
            }),
        }
    }

    /// Use a given instance id (it is the lease owner and heartbeat row key).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("with_id before run")
            .id = id.into();
        self
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The claim loop's [`Activity`], so a caller (tests, above all) can wait
    /// for "idle" instead of sleeping. The channel closes when `run` has
    /// returned and nothing of this dispatcher is left running.
    pub fn activity(&self) -> watch::Receiver<Activity> {
        self.shared.activity.subscribe()
    }

    /// Run until `shutdown` is cancelled, then hand over in-flight executions
    /// and return within about `shutdown_grace`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DispatchError> {
        let shared = self.shared;
        let span = info_span!("dispatcher", dispatcher.id = %shared.id);
        async move {
            shared.beat().await?;
            info!(mode = shared.mode.as_str(), "dispatcher started");
            let background = CancellationToken::new();
            let listener =
                tokio::spawn(listen(shared.clone(), background.clone()).in_current_span());
            let heartbeat =
                tokio::spawn(heartbeat(shared.clone(), background.clone()).in_current_span());

            let mut tasks: JoinSet<()> = JoinSet::new();
            shared.claim_loop(&mut tasks, &shutdown).await;
            shared.shut_down(&mut tasks).await;
            background.cancel();
            let _ = listener.await;
            let _ = heartbeat.await;
            if let Err(e) = dispatchers::mark_stopped(&shared.pool, &shared.id).await {
                warn!(error = %e, "could not mark dispatcher stopped");
            }
            shared.control.close().await;
            measure::leases_held(&shared.leases, 0);
            info!("dispatcher stopped");
            Ok(())
        }
        .instrument(span)
        .await
    }
}

impl Shared {
    /// Claim, then wait for a reason to claim again (a notification, an
    /// execution ending, the poll interval), until `shutdown`.
    async fn claim_loop(self: &Arc<Self>, tasks: &mut JoinSet<()>, shutdown: &CancellationToken) {
        // An interval, not a sleep per loop: a dispatcher woken more often
        // than the poll interval must still run the periodic checks. Its
        // first tick is the start itself (takeover is due from the start).
        let period = self.settings.poll_interval;
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.sweep_queued_cancels().await;
        loop {
            let listening = self.listening.load(Ordering::SeqCst);
            self.claim_cycle(tasks).await;
            let wake = self.wake.notified();
            tokio::pin!(wake);
            // `enable` consumes a pending wake-up: then the loop is not idle.
            let woken = wake.as_mut().enable();
            self.publish(listening && !woken && tasks.is_empty());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(joined) = tasks.join_next() => {
                    if let Err(e) = joined {
                        error!(error = %e, "execution task panicked");
                    }
                }
                _ = &mut wake => {}
                _ = poll.tick() => {
                    self.takeover_due.store(true, Ordering::SeqCst);
                    self.sweep_queued_cancels().await;
                }
            }
            self.activity
                .send_if_modified(|a| std::mem::replace(&mut a.idle, false));
        }
    }

    /// One claim cycle done; `idle` as [`Activity::idle`] defines it.
    fn publish(&self, idle: bool) {
        self.activity.send_modify(|a| {
            a.claim_cycles += 1;
            a.idle = idle;
        });
    }

    fn in_flight_count(&self) -> usize {
        self.in_flight.lock().unwrap().len()
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.settings.max_attempts,
            backoff_base: self.settings.backoff_base,
            backoff_max: self.settings.backoff_max,
            unreachable_grace: self.settings.unreachable_grace,
        }
    }

    async fn beat(&self) -> Result<(), sqlx::Error> {
        dispatchers::heartbeat(
            &self.control,
            dispatchers::Heartbeat {
                id: &self.id,
                mode: self.mode.as_str(),
                host: &self.host,
                in_flight: self.in_flight_count() as i32,
            },
        )
        .await
    }

    /// Send a stop to a held build; the first reason wins (a cancel is not
    /// turned into a handover, nor the reverse).
    fn stop(&self, build_id: Uuid, reason: StopReason) -> bool {
        let map = self.in_flight.lock().unwrap();
        match map.get(&build_id) {
            Some(f) => {
                f.stop.send_if_modified(|current| {
                    if current.is_none() {
                        *current = Some(reason);
                        true
                    } else {
                        false
                    }
                });
                true
            }
            None => false,
        }
    }

    /// Claim (take over expired leases, then queued builds) while there is
    /// capacity and work.
    async fn claim_cycle(self: &Arc<Self>, tasks: &mut JoinSet<()>) {
        loop {
            let free = self
                .settings
                .max_in_flight
                .saturating_sub(self.in_flight_count());
            if free == 0 {
                return;
            }
            let lease = self.settings.lease;
            let request = |limit: usize| ClaimRequest {
                owner: &self.id,
                lease,
                limit: limit as i64,
            };
            let mut free = free;
            if self.takeover_due.swap(false, Ordering::SeqCst) {
                let began = Instant::now();
                let following: Vec<Uuid> = self.in_flight.lock().unwrap().keys().copied().collect();
                let taken = match queue::take_over_expired(&self.control, request(free), &following)
                    .await
                {
                    Ok(t) => t,
                    Err(e) => {
                        self.takeover_due.store(true, Ordering::SeqCst);
                        warn!(error = %e, "taking over expired leases failed");
                        return;
                    }
                };
                if taken.len() == free {
                    // Possibly more waiting: look again next cycle.
                    self.takeover_due.store(true, Ordering::SeqCst);
                }
                free -= taken.len();
                let inputs = BatchInputs::new(&taken);
                for build in taken {
                    info!(build.id = %build.build_id, attempt = build.execution.attempt, "took over expired lease");
                    self.spawn_execution(tasks, build, began, inputs.clone(), false);
                }
                if free == 0 {
                    return;
                }
            }
            let limit = free.min(self.settings.claim_batch);
            let began = Instant::now();
            let batch = match self
                .claimer
                .claim(&self.control, request(limit), |f| self.decide(f))
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "claiming builds failed");
                    return;
                }
            };
            for (build_id, message) in &batch.failed {
                warn!(build.id = %build_id, %message, "build failed at claim time");
            }
            let inputs = BatchInputs::new(&batch.claimed);
            // Each claim is logged at info once its inputs are loaded
            // (`prepare`): the claim row holds no method or infrastructure.
            for build in batch.claimed {
                self.spawn_execution(tasks, build, began, inputs.clone(), true);
            }
            if batch.offered < limit {
                return;
            }
        }
    }

    /// Called once per distinct facts tuple (the claimer remembers it), so
    /// it may depend only on the facts and this dispatcher's fixed settings.
    fn decide(&self, c: &ClaimFacts) -> ClaimDecision {
        // Unknown stored values (rows of a newer version) fail the build
        // saying which value, rather than standing in for a known one.
        let infrastructure = match c.infrastructure() {
            Ok(i) => i,
            Err(e) => return ClaimDecision::Fail(format!("cannot run the build: {e}")),
        };
        let active = match c
            .provider_status
            .as_deref()
            .map(str::parse::<ProviderStatus>)
        {
            None => false,
            Some(Ok(status)) => status == ProviderStatus::Active,
            Some(Err(e)) => {
                return ClaimDecision::Fail(format!(
                    "cannot run the build: its infrastructure provider has {e}"
                ));
            }
        };
        let facts = c.provider_type.as_ref().map(|t| ProviderFacts {
            provider_type: t.clone(),
            tekton_enabled: c.provider_tekton_enabled.unwrap_or(false),
            active,
        });
        match select_slot(
            infrastructure,
            facts.as_ref(),
            &self.settings.tekton_policy(),
        ) {
            Ok(slot) => match self.executors.for_slot(slot) {
                Some(executor) => ClaimDecision::Run(executor.kind()),
                None => ClaimDecision::Fail(format!(
                    "no {} executor is configured on dispatcher {}",
                    match slot {
                        Slot::Tekton => "tekton",
                        Slot::Local => "local",
                    },
                    self.id
                )),
            },
            Err(message) => ClaimDecision::Fail(message),
        }
    }

    /// `claim_began`: when the claim that returned `build` started; a cancel
    /// notification older than that was already visible to the claim (which
    /// skips cancel-requested builds), so it belongs to an earlier attempt.
    /// `from_queue`: claimed from the queue, not taken over.
    fn spawn_execution(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        build: ClaimedBuild,
        claim_began: Instant,
        inputs: Arc<BatchInputs>,
        from_queue: bool,
    ) {
        let timing = Timing::new(&build.execution, from_queue);
        let (stop_tx, stop_rx) = watch::channel(None);
        {
            let mut pending = self.pending_cancels.lock().unwrap();
            let raced = pending
                .remove(&build.build_id)
                .is_some_and(|at| at >= claim_began);
            if raced || build.cancel_requested {
                stop_tx.send_replace(Some(StopReason::Cancel));
            }
            self.in_flight
                .lock()
                .unwrap()
                .insert(build.build_id, InFlight { stop: stop_tx });
        }
        measure::execution_started();
        let span = info_span!("execution", build.id = %build.build_id, tenant.id = %build.tenant_id,
            execution.id = %build.execution.id, attempt = build.execution.attempt);
        let shared = self.clone();
        tasks.spawn(
            async move {
                let build_id = build.build_id;
                shared.supervise(build, stop_rx, inputs, timing).await;
                shared.in_flight.lock().unwrap().remove(&build_id);
                measure::execution_ended();
                shared.wake.notify_one();
            }
            .instrument(span),
        );
    }

    /// Follow one execution to its end and record it.
    async fn supervise(
        self: &Arc<Self>,
        build: ClaimedBuild,
        stop: watch::Receiver<Option<StopReason>>,
        inputs: Arc<BatchInputs>,
        timing: Timing,
    ) {
        let execution = &build.execution;
        // `prepare` and `record` hold database futures that are large; boxed,
        // they take memory only while they run instead of sizing this task
        // (which lives as long as the build) for them.
        let prepared = Box::pin(self.prepare(&build, &inputs)).await;
        // The batch's inputs (a table sized for the whole claim batch) are
        // freed once its last build has taken its own, not when its last
        // build ends.
        drop(inputs);
        let mut ran_on: Option<Arc<dyn Executor>> = None;
        let mut method = None;
        let outcome = match prepared {
            Ok(Prepared {
                executor,
                ctx,
                reattach,
                claimable_since,
            }) => {
                ran_on = Some(executor.clone());
                method = Some(ctx.method);
                measure::queue_wait(&timing, claimable_since, execution.started_at);
                let mut sink = StoreSink::new(self.pool.clone(), build.build_id, execution.id)
                    .with_reference_writer(self.references.clone());
                if reattach.is_none() {
                    sink = sink.with_start_clock(timing.claimed());
                }
                let sink = Arc::new(sink);
                let remaining = Duration::from_millis(
                    (i64::from(build.timeout_seconds) * 1000 - execution.age_ms).max(0) as u64,
                );
                let work = match reattach {
                    Some(reference) => {
                        debug!("re-attaching to persisted execution");
                        executor.reattach(ctx, reference, sink, stop.clone())
                    }
                    None => executor.start(ctx, sink, stop.clone()),
                };
                self.watch(work, build.build_id, build.timeout_seconds, remaining, stop)
                    .await
            }
            Err(outcome) => outcome,
        };
        let recorded = Box::pin(self.record(&build, outcome)).await;
        if let Some(status) = recorded.filter(|s| s.is_terminal()) {
            measure::finished(&timing, status, method);
        }
        let recorded = recorded.is_some();
        if let Some(executor) = ran_on {
            executor.outcome_recorded(execution.id, recorded).await;
        }
    }

    async fn prepare(
        &self,
        build: &ClaimedBuild,
        batch: &BatchInputs,
    ) -> Result<Prepared, Outcome> {
        let execution = &build.execution;
        // Parsed once: an unknown stored executor (a row of a newer version)
        // fails the build naming it, never stands in for another executor.
        let kind: ExecutorKind = execution.executor.parse().map_err(|e| Outcome::Failed {
            message: format!("cannot run or follow the execution: it records {e}"),
        })?;
        let Some(executor) = self.executors.by_kind(kind) else {
            return Err(Outcome::Failed {
                message: format!("no {kind} executor is configured on dispatcher {}", self.id),
            });
        };
        let preloaded = batch.take(&self.pool, build.build_id).await;
        let inputs = match preloaded {
            Some(inputs) => Ok(Some(inputs)),
            // Not in the batch's result (load failed, build gone): ask
            // again for this build alone, so the error says what happened.
            // Through a database outage: failing here would requeue the
            // build as another attempt (another execution) for nothing.
            None => {
                retry_unavailable("loading the build's settings", OUTAGE_PATIENCE, || {
                    executions::load_inputs(&self.pool, build.build_id, execution.provider_id)
                })
                .await
            }
        };
        let inputs = inputs
            .map_err(|e| match e {
                // A stored value that does not parse fails the same way on
                // every attempt: the build fails saying which, not requeued.
                StoreError::Database(e) if executions::is_bad_stored_value(&e) => Outcome::Failed {
                    message: format!("the build's stored settings are invalid: {e}"),
                },
                e => Outcome::Transient {
                    message: format!("loading the build's settings failed: {e}"),
                },
            })?
            .ok_or_else(|| Outcome::Failed {
                message: "the build or its project no longer exists".to_owned(),
            })?;
        info!(
            build.id = %build.build_id,
            method = %inputs.method,
            infrastructure = %inputs.infrastructure_type,
            provider.id = ?inputs.provider_id,
            executor = %kind,
            attempt = execution.attempt,
            "{}",
            if execution.reference_at.is_none() { "build claimed" } else { "build claimed to re-attach" }
        );
        // A Kubernetes build with Tekton off was given the local slot at
        // claim time (under IF_BUILD_TEKTON_DISABLED=fail it failed there).
        let fallback = (inputs.infrastructure_type == InfrastructureType::Kubernetes)
            .then(|| {
                tekton_off_reason(self.settings.tekton_enabled, inputs.provider_tekton_enabled)
            })
            .flatten();
        // Starting new work is where host access is granted: a local build
        // queued before the opt-in was withdrawn, or written around the API,
        // never starts. (Re-attaching only cleans up what a crash left.)
        if execution.reference_at.is_none() {
            local_builds_allowed(&inputs, fallback)?;
        }
        let claimable_since = inputs.claimable_since;
        let ctx = build_context(inputs, execution, self.cipher.as_ref())
            .map_err(|message| Outcome::Failed { message })?;
        if let Some(reason) = fallback.filter(|_| execution.reference_at.is_none()) {
            let note = format!(
                "{reason}: this Kubernetes build runs on the local executor, on a dispatcher's \
                 host (IF_BUILD_TEKTON_DISABLED=local; the platform admin can set it to fail \
                 to fail such builds instead)"
            );
            match executions::append_notice(
                &self.pool,
                build.build_id,
                execution.id,
                NOTICE_SOURCE,
                &note,
            )
            .await
            {
                Ok(()) => measure::note_stored(&note),
                Err(e) => {
                    warn!(build.id = %build.build_id, error = %e, "could not log why the build runs locally")
                }
            }
        }
        Ok(Prepared {
            executor: executor.clone(),
            ctx,
            reattach: execution
                .reference_at
                .map(|_| reference_of(execution, kind)),
            claimable_since,
        })
    }

    /// Await the executor, enforcing the build timeout and the stop grace.
    async fn watch(
        &self,
        work: impl std::future::Future<Output = Outcome>,
        build_id: Uuid,
        timeout_seconds: i32,
        remaining: Duration,
        mut stop: watch::Receiver<Option<StopReason>>,
    ) -> Outcome {
        tokio::pin!(work);
        let deadline = tokio::time::sleep(remaining);
        tokio::pin!(deadline);
        let grace = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(grace);
        let mut asked: Option<StopReason> = *stop.borrow_and_update();
        if asked.is_some() {
            grace
                .as_mut()
                .reset(tokio::time::Instant::now() + self.settings.stop_grace);
        }
        let mut deadline_passed = false;
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                _ = &mut deadline, if !deadline_passed => {
                    deadline_passed = true;
                    info!(timeout_seconds, "build timeout reached; stopping the execution");
                    self.stop(build_id, StopReason::Timeout);
                }
                changed = stop.changed(), if asked.is_none() => {
                    if changed.is_err() {
                        continue;
                    }
                    asked = *stop.borrow_and_update();
                    grace.as_mut().reset(tokio::time::Instant::now() + self.settings.stop_grace);
                }
                _ = &mut grace, if asked.is_some() => {
                    let waited = self.settings.stop_grace;
                    warn!(reason = ?asked, ?waited, "executor did not stop in time; recording the end without it");
                    return match asked {
                        Some(StopReason::Timeout) => Outcome::TimedOut {
                            message: format!(
                                "build exceeded its timeout of {timeout_seconds}s; the executor did not confirm stopping within {waited:?}"
                            ),
                        },
                        Some(StopReason::Cancel) => Outcome::Cancelled {
                            message: format!(
                                "cancelled; the executor did not confirm stopping within {waited:?}"
                            ),
                        },
                        _ => Outcome::HandedOver,
                    };
                }
            }
        }
    }

    /// The build's attempts so far in this round (since its last manual
    /// retry), for a requeue decision. `None` if they could not be read.
    async fn round_so_far(&self, build: &ClaimedBuild) -> Option<queue::RoundSoFar> {
        retry_unavailable("reading the build's attempts", OUTAGE_PATIENCE, || {
            queue::round_so_far(
                &self.pool,
                build.tenant_id,
                build.build_id,
                build.execution.attempt,
            )
        })
        .await
        .inspect_err(|e| warn!(error = %e, "reading the build's earlier attempts failed"))
        .ok()
    }

    /// Record the outcome; `Some` if it was committed as the build's end
    /// (its status) or requeue (`Queued`), not when the execution was handed
    /// over or the lease lost.
    async fn record(&self, build: &ClaimedBuild, outcome: Outcome) -> Option<BuildStatus> {
        let execution = &build.execution;
        let jitter: f64 = rand::random();
        // The requeue budget counts the attempts since the last manual retry
        // that reached their cluster.
        let (outcome, attempt_in_round, unreached) = match outcome {
            Outcome::Transient { .. } | Outcome::Unreachable { .. } => {
                match self.round_so_far(build).await {
                    Some(round) => (
                        outcome,
                        round.counted_before + 1,
                        policy::Unreached {
                            tries: round.uncounted_before + 1,
                            lasted: round.uncounted_for,
                        },
                    ),
                    // Counting every attempt from the first can only give
                    // fewer automatic requeues than configured, never more.
                    None => {
                        let outcome = match outcome {
                            Outcome::Unreachable { message } => Outcome::Transient { message },
                            other => other,
                        };
                        (outcome, execution.attempt, policy::Unreached::default())
                    }
                }
            }
            _ => (outcome, execution.attempt, policy::Unreached::default()),
        };
        let decision = policy::decide(
            &outcome,
            attempt_in_round,
            build.max_attempts,
            self.retry_policy(),
            unreached,
            jitter,
        );
        // Through a database outage: the lease check inside makes a retry
        // after a lost reply (or a takeover meanwhile) answer false.
        let result = match &decision {
            None => retry_unavailable("releasing the lease", OUTAGE_PATIENCE, || {
                queue::release_leases(
                    &self.pool,
                    &self.id,
                    Some(std::slice::from_ref(&build.build_id)),
                )
            })
            .await
            .map(|released| !released.is_empty()),
            Some(finish) => {
                retry_unavailable("recording the outcome", OUTAGE_PATIENCE, || {
                    queue::finish(&self.pool, &self.id, build.build_id, execution.id, finish)
                })
                .await
            }
        };
        let committed = match (&result, &decision) {
            (Ok(true), Some(Finish::Terminal { status, .. })) => Some(*status),
            (Ok(true), Some(Finish::Requeue { .. })) => Some(BuildStatus::Queued),
            _ => None,
        };
        match (result, &decision) {
            (Ok(true), Some(Finish::Requeue { delay, message, .. })) => {
                info!(?delay, %message, "attempt failed transiently; requeued")
            }
            (Ok(true), Some(Finish::Terminal { status, message })) => {
                info!(status = %status, message = message.as_deref().unwrap_or(""), "build finished")
            }
            (Ok(true), None) => info!("execution handed over; lease released"),
            (Ok(false), _) => {
                warn!(
                    ?outcome,
                    "lease was lost before the outcome could be recorded; the new holder records it"
                )
            }
            // The lease expires and another dispatcher re-attaches; the
            // execution's reference is persisted, so nothing is lost.
            (Err(e), _) => error!(error = %e, ?outcome, "recording the outcome failed"),
        }
        committed
    }

    async fn sweep_queued_cancels(&self) {
        match queue::cancel_requested_queued(&self.pool).await {
            Ok(ids) => {
                for id in ids {
                    info!(build.id = %id, "queued build cancelled");
                }
            }
            Err(e) => warn!(error = %e, "cancelling queued builds failed"),
        }
    }

    async fn shut_down(&self, tasks: &mut JoinSet<()>) {
        let held: Vec<Uuid> = self.in_flight.lock().unwrap().keys().copied().collect();
        info!(
            in_flight = held.len(),
            "shutting down: handing over executions"
        );
        for id in &held {
            self.stop(*id, StopReason::Handover);
        }
        let deadline = tokio::time::sleep(self.settings.shutdown_grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => {
                    warn!(left = tasks.len(), "shutdown grace over; abandoning remaining executions");
                    break;
                }
                joined = tasks.join_next() => if joined.is_none() { break },
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        match queue::release_leases(&self.pool, &self.id, None).await {
            Ok(released) if !released.is_empty() => {
                info!(count = released.len(), "released remaining leases")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "releasing leases failed; they expire on their own"),
        }
    }
}

/// A local build runs on this host; only tenants the platform admin opted in
/// (`tenants.allow_local_builds`, read with the inputs) may start one. That
/// holds for a Kubernetes build sent to the local executor because Tekton is
/// off (`fallback`: why): the security wall does not move with the setting.
fn local_builds_allowed(inputs: &ExecutionInputs, fallback: Option<&str>) -> Result<(), Outcome> {
    let on_host = inputs.infrastructure_type == InfrastructureType::Local || fallback.is_some();
    if !on_host || inputs.local_builds_allowed {
        return Ok(());
    }
    warn!(tenant.id = %inputs.tenant_id, "local build of a tenant without allow_local_builds refused");
    let message = match fallback {
        None => "not run: local builds run on the server's own host and are not enabled for \
                 this tenant (the platform admin's tenant setting allow_local_builds)"
            .to_owned(),
        Some(reason) => format!(
            "not run: {reason}, so this Kubernetes build would run on the local executor, on \
             the server's own host, and local builds are not enabled for this tenant (the \
             platform admin's tenant setting allow_local_builds)"
        ),
    };
    Err(Outcome::Failed { message })
}

/// The execution inputs of one claimed batch, loaded with one query by
/// whichever of its executions asks first (instead of one query per build),
/// so the claim loop never waits for it.
struct BatchInputs {
    keys: Vec<(Uuid, Option<Uuid>)>,
    loaded: tokio::sync::OnceCell<Mutex<HashMap<Uuid, ExecutionInputs>>>,
}

impl BatchInputs {
    fn new(builds: &[ClaimedBuild]) -> Arc<Self> {
        Arc::new(Self {
            keys: builds
                .iter()
                .map(|b| (b.build_id, b.execution.provider_id))
                .collect(),
            loaded: tokio::sync::OnceCell::new(),
        })
    }

    /// This build's inputs, or `None` if the batch query failed or did not
    /// return it (the caller then loads it alone).
    async fn take(&self, pool: &PgPool, build_id: Uuid) -> Option<ExecutionInputs> {
        let loaded = self
            .loaded
            .get_or_init(|| async {
                let rows = executions::load_inputs_many(pool, &self.keys)
                    .await
                    .unwrap_or_else(|e| {
                        warn!(error = %e, "loading a batch's settings failed; loading one by one");
                        Vec::new()
                    });
                Mutex::new(rows.into_iter().map(|i| (i.build_id, i)).collect())
            })
            .await;
        let mut loaded = loaded.lock().unwrap();
        let inputs = loaded.remove(&build_id);
        if loaded.is_empty() {
            // Every build of the batch has its inputs: free the table.
            *loaded = HashMap::new();
        }
        inputs
    }
}

/// What an execution needs to run: its executor and context, and the
/// persisted reference when it re-attaches instead of starting.
struct Prepared {
    executor: Arc<dyn Executor>,
    ctx: imagefactory_exec::ExecutionContext,
    reattach: Option<ExecutionRef>,
    /// Start of the attempt's queue wait (see `measure::queue_wait`).
    claimable_since: chrono::DateTime<chrono::Utc>,
}

fn reference_of(execution: &ExecutionRow, executor: ExecutorKind) -> ExecutionRef {
    ExecutionRef {
        executor,
        provider_id: execution.provider_id,
        namespace: execution.cluster_namespace.clone(),
        name: execution.pipeline_run_name.clone(),
        uid: execution.pipeline_run_uid.clone(),
    }
}

/// Reconnect delays of the LISTEN connection: 100 ms doubling to 5 s, for as
/// long as it takes (claims fall back to polling meanwhile); a new round
/// starts after every lost connection.
const LISTEN_RECONNECT: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_secs(5))
    .without_max_times();

/// LISTEN for queued builds (wake the claim loop) and cancel requests (stop
/// the execution if held here). Reconnects on error; missed notifications are
/// covered by the poll interval and lease renewal.
async fn listen(shared: Arc<Shared>, stop: CancellationToken) {
    'connect: loop {
        let connect = (|| async {
            let mut l = PgListener::connect_with(&shared.pool).await?;
            l.listen_all([CHANNEL_BUILD_QUEUED, CHANNEL_BUILD_CANCEL])
                .await?;
            Ok::<_, sqlx::Error>(l)
        })
        .retry(LISTEN_RECONNECT)
        .notify(|e, _| warn!(error = %e, "LISTEN connection failed; polling until it is back"));
        let mut listener = tokio::select! {
            _ = stop.cancelled() => return,
            l = connect => match l {
                Ok(l) => l,
                // Unreachable: `LISTEN_RECONNECT` retries without a limit.
                Err(_) => continue 'connect,
            },
        };
        // Anything sent while we were not listening is caught by a claim
        // cycle, which starts after `listening` is set (see `Activity::idle`).
        shared.listening.store(true, Ordering::SeqCst);
        shared.wake.notify_one();
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                n = listener.recv() => n,
            };
            match received {
                Ok(n) if n.channel() == CHANNEL_BUILD_CANCEL => {
                    match n.payload().trim().parse::<Uuid>() {
                        Ok(id) => on_cancel(&shared, id).await,
                        Err(_) => warn!(
                            payload = n.payload(),
                            "ignoring build_cancel with a payload that is not a build id"
                        ),
                    }
                }
                Ok(n) => {
                    if n.payload() == queue::RELEASED_PAYLOAD {
                        shared.takeover_due.store(true, Ordering::SeqCst);
                    }
                    shared.wake.notify_one();
                }
                Err(e) => {
                    warn!(error = %e, "LISTEN connection lost; reconnecting");
                    shared.listening.store(false, Ordering::SeqCst);
                    shared.takeover_due.store(true, Ordering::SeqCst);
                    shared.wake.notify_one();
                    continue 'connect;
                }
            }
        }
    }
}

async fn on_cancel(shared: &Arc<Shared>, build_id: Uuid) {
    {
        // Under the pending lock, as in `spawn_execution`: a build registers
        // either before this check (stopped here) or after (finds it pending).
        let mut pending = shared.pending_cancels.lock().unwrap();
        if shared.stop(build_id, StopReason::Cancel) {
            info!(build.id = %build_id, "cancel requested; stopping the execution");
            return;
        }
        pending.retain(|_, at| at.elapsed() < Duration::from_secs(10));
        pending.insert(build_id, Instant::now());
    }
    // Not held here: it may be queued (cancel it now) or held elsewhere (its
    // holder got the same notification). If a claim of ours registers it
    // later, `spawn_execution` finds it in `pending_cancels`.
    shared.sweep_queued_cancels().await;
}

/// Renew leases of held builds, notice lost leases and missed cancels, and
/// refresh this dispatcher's heartbeat row.
async fn heartbeat(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(shared.settings.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let held: Vec<Uuid> = shared.in_flight.lock().unwrap().keys().copied().collect();
        match queue::renew_leases(&shared.control, &shared.id, &held, shared.settings.lease).await {
            Ok(renewed) => {
                measure::leases_held(&shared.leases, renewed.len());
                let still: HashMap<Uuid, bool> =
                    renewed.iter().map(|r| (r.id, r.cancel_requested)).collect();
                for id in held {
                    match still.get(&id) {
                        // Finished meanwhile, or taken over after our lease
                        // expired: stop following it (no-op if it ended).
                        None => {
                            if shared.stop(id, StopReason::Handover) {
                                debug!(build.id = %id, "lease no longer held; handing over");
                            }
                        }
                        Some(true) => {
                            shared.stop(id, StopReason::Cancel);
                        }
                        Some(false) => {}
                    }
                }
            }
            Err(e) => warn!(error = %e, "lease renewal failed"),
        }
        if let Err(e) = shared.beat().await {
            warn!(error = %e, "heartbeat failed");
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn listen_reconnects_double_from_100ms_to_5s_and_never_give_up() {
        let delays: Vec<u128> = LISTEN_RECONNECT
            .build()
            .take(50)
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(delays[..8], [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(delays.len(), 50);
        assert!(delays.iter().all(|&ms| ms <= 5000));
    }
}
