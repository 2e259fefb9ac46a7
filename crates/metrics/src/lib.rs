//! The process's Prometheus metrics (`prometheus-client`): one registry per
//! process, as `tracing` has one subscriber, so the API, the dispatcher and
//! the executors record without a handle threaded through every call.
//! Recording is an atomic add (plus a label lookup for labelled families);
//! nothing here does I/O. The figures computed at scrape time from the
//! database (active builds, queue depth) are set by the caller through
//! [`render_with_active`].
//!
//! Every label value is bounded: states, methods, outcomes and verbs are
//! enumerations; tenant and provider ids are as many as tenants and
//! providers exist; HTTP routes are the router's templates, never raw paths.
//! The README's "Metrics" section lists every metric.

use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `imagefactory_builds{state,method}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
    pub method: String,
}

/// `imagefactory_queue_depth{tenant_id}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant_id: String,
}

/// `imagefactory_build_duration_seconds{outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// `imagefactory_builds_finished_total{outcome,method}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    pub outcome: &'static str,
    pub method: &'static str,
}

/// `imagefactory_kube_requests_total{provider,verb}` and its errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeLabels {
    /// The provider's id, or `global` for the dispatchers' global cluster.
    pub provider: String,
    pub verb: &'static str,
}

/// `imagefactory_http_requests_total{method,route,status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

/// `imagefactory_http_request_duration_seconds{method,route}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: String,
}

/// A labelled counter.
pub type CounterFamily<L> = Family<L, Counter>;
/// A labelled histogram with this crate's buckets.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the process. Reach it with [`metrics`].
pub struct Metrics {
    registry: Registry,
    /// Builds in a non-terminal state, from the database at scrape (`serve`).
    pub builds: Family<StateLabels, Gauge>,
    /// Queued builds per tenant, from the database at scrape (`serve`).
    pub queue_depth: Family<TenantLabels, Gauge>,
    /// Submission (or requeue / manual retry) to the claim of an attempt.
    pub queue_wait: Histogram,
    /// Claim to the executor reporting the work started.
    pub start_latency: Histogram,
    /// Claim to the recorded end of a build's last attempt, by outcome.
    pub build_duration: HistogramFamily<OutcomeLabels>,
    pub builds_finished: Family<FinishedLabels, Counter>,
    pub kube_requests: Family<KubeLabels, Counter>,
    pub kube_errors: Family<KubeLabels, Counter>,
    pub log_lines: Counter,
    pub log_bytes: Counter,
    pub leases_held: Gauge,
    pub in_flight: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: HistogramFamily<RouteLabels>,
    /// One scrape at a time resets and sets the database-derived gauges.
    scrape: Mutex<()>,
}

fn queue_wait_histogram() -> Histogram {
    // 10 ms .. ~22 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 18))
}

fn start_histogram() -> Histogram {
    // 50 ms .. ~7 min.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

fn duration_histogram() -> Histogram {
    // 1 s .. ~4.5 h.
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

fn http_histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let m = Self {
            registry: Registry::with_prefix("imagefactory"),
            builds: Family::default(),
            queue_depth: Family::default(),
            queue_wait: queue_wait_histogram(),
            start_latency: start_histogram(),
            build_duration: Family::new_with_constructor(duration_histogram),
            builds_finished: Family::default(),
            kube_requests: Family::default(),
            kube_errors: Family::default(),
            log_lines: Counter::default(),
            log_bytes: Counter::default(),
            leases_held: Gauge::default(),
            in_flight: Gauge::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_histogram),
            scrape: Mutex::new(()),
        };
        m.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "builds",
            "Builds in a non-terminal state (queued, running), by method; from the database at scrape",
            self.builds.clone(),
        );
        r.register(
            "queue_depth",
            "Queued builds per tenant; from the database at scrape",
            self.queue_depth.clone(),
        );
        r.register_with_unit(
            "build_queue_wait",
            "Time from submission (or requeue, or manual retry) to the claim of an attempt",
            Unit::Seconds,
            self.queue_wait.clone(),
        );
        r.register_with_unit(
            "build_start",
            "Time from the claim of an attempt to its executor reporting the work started",
            Unit::Seconds,
            self.start_latency.clone(),
        );
        r.register_with_unit(
            "build_duration",
            "Time from the claim of a build's last attempt to its recorded end, by outcome",
            Unit::Seconds,
            self.build_duration.clone(),
        );
        r.register(
            "builds_finished",
            "Builds this process's dispatcher recorded as ended, by outcome and method",
            self.builds_finished.clone(),
        );
        r.register(
            "kube_requests",
            "Kubernetes API requests sent, by provider and verb",
            self.kube_requests.clone(),
        );
        r.register(
            "kube_request_errors",
            "Kubernetes API requests answered with status >= 400 or not answered, by provider and verb",
            self.kube_errors.clone(),
        );
        r.register(
            "log_lines_stored",
            "Build log lines stored",
            self.log_lines.clone(),
        );
        r.register_with_unit(
            "log_stored",
            "Bytes of build log lines stored (line text, UTF-8)",
            Unit::Bytes,
            self.log_bytes.clone(),
        );
        r.register(
            "dispatcher_leases_held",
            "Build leases this process's dispatcher renewed at its last heartbeat",
            self.leases_held.clone(),
        );
        r.register(
            "dispatcher_executions_in_flight",
            "Executions this process's dispatcher is running or following",
            self.in_flight.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            self.http_requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (until the response head), by method and route template",
            Unit::Seconds,
            self.http_duration.clone(),
        );
        self
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// One row of the scrape-time aggregate: `count` builds in `state` of
/// `method`, of `tenant_id` for queued builds (queue depth per tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCount {
    pub state: String,
    pub method: String,
    pub tenant_id: Option<String>,
    pub count: i64,
}

/// The exposition text (Prometheus text format 0.0.4) of every metric, with
/// the database-derived gauges replaced by `active` (`None`: a process
/// without them, e.g. a standalone dispatcher, leaves them empty).
pub fn render_with_active(active: Option<&[ActiveCount]>) -> String {
    let m = metrics();
    let _one_scrape = m.scrape.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rows) = active {
        // Rebuilt from scratch: a tenant whose queue emptied disappears
        // instead of showing its last value forever.
        m.builds.clear();
        m.queue_depth.clear();
        for row in rows {
            m.builds
                .get_or_create(&StateLabels {
                    state: row.state.clone(),
                    method: row.method.clone(),
                })
                .inc_by(row.count);
            if let Some(tenant) = &row.tenant_id {
                m.queue_depth
                    .get_or_create(&TenantLabels {
                        tenant_id: tenant.clone(),
                    })
                    .inc_by(row.count);
            }
        }
    }
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry)
        .expect("writing to a String does not fail");
    out
}

/// The label value of an HTTP method: the standard ones, else `other` (a
/// client's made-up method must not create a series).
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_rows_replace_the_previous_scrape_and_sum_per_label() {
        let row = |state: &str, tenant: Option<&str>, count| ActiveCount {
            state: state.into(),
            method: "docker".into(),
            tenant_id: tenant.map(Into::into),
            count,
        };
        let first = render_with_active(Some(&[
            row("queued", Some("t1"), 2),
            row("queued", Some("t2"), 3),
            row("running", None, 4),
        ]));
        assert!(
            first.contains("imagefactory_builds{state=\"queued\",method=\"docker\"} 5\n"),
            "{first}"
        );
        assert!(
            first.contains("imagefactory_queue_depth{tenant_id=\"t2\"} 3\n"),
            "{first}"
        );
        let second = render_with_active(Some(&[row("running", None, 1)]));
        assert!(!second.contains("tenant_id=\"t2\""), "{second}");
        assert!(!second.contains("state=\"queued\""), "{second}");
        assert!(
            second.contains("imagefactory_builds{state=\"running\",method=\"docker\"} 1\n"),
            "{second}"
        );
    }

    #[test]
    fn unknown_http_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "other");
    }
}
