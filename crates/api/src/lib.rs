//! The REST API under `/api/v1` (axum): bearer-token auth with tenant
//! isolation, validation at the edge, RFC 9457 problem responses and an
//! OpenAPI 3.1 document generated from the same route registrations.
//!
//! The binary and the tests build it the same way:
//! `imagefactory_api::router(AppState::new(pool, cipher, admin_token))`.

pub mod auth;
pub mod connection;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
mod openapi;
pub mod queue_waker;
pub mod routes;
pub mod tekton;
pub mod token_cache;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Extension, Json, Router};
use imagefactory_domain::Secret;
use imagefactory_domain::address::AddressPolicy;
use imagefactory_store::build_reads::BuildReads;
use imagefactory_store::build_submits::BuildSubmits;
use imagefactory_store::crypto::Cipher;
use sqlx::PgPool;
use tower_http::trace::TraceLayer;

pub use connection::{ConnectionReport, ConnectionTarget, ConnectionTester};
pub use error::{ApiError, DATABASE_RETRY_AFTER_SECONDS, Problem};
pub use limits::HttpLimits;
use limits::{AuthThrottle, BodyReadTimeout, FollowerSlots};
pub use openapi::openapi;
use queue_waker::QueueWaker;
pub use token_cache::TokenCache;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub cipher: Cipher,
    /// The platform admin's bearer token; `None` disables the admin API.
    pub admin_token: Option<Secret>,
    /// The bearer token `GET /metrics` needs; `None`: the endpoint is open.
    pub metrics_token: Option<Secret>,
    /// How often a followed log stream checks for new lines.
    pub log_poll_interval: Duration,
    /// A dispatcher not seen for this long shows as `stale` in
    /// `GET /admin/dispatchers`; the binary derives it from the dispatcher
    /// settings (`imagefactory_dispatch::admin::stale_after`).
    pub dispatcher_stale_after: Duration,
    /// Answers `POST .../providers/{id}/test-connection`; `None` (e.g. a
    /// build of the API without cluster support) answers 503.
    pub connection_tester: Option<Arc<dyn ConnectionTester>>,
    /// Per-client limits (body deadline, log followers, failed auth).
    pub limits: HttpLimits,
    /// Open log follow streams per token (shared by clones of the state).
    pub followers: FollowerSlots,
    /// Failed authentication per client address (shared likewise).
    pub auth_throttle: AuthThrottle,
    /// Where tenant providers' endpoints may point (checked when a provider
    /// is saved; the executor checks resolved addresses again when it
    /// connects). Default: loopback, link-local and unspecified refused.
    pub provider_address_policy: Arc<AddressPolicy>,
    /// A global cluster is configured for the dispatchers
    /// (`IF_BUILD_TEKTON_KUBECONFIG` / `IF_BUILD_TEKTON_IN_CLUSTER`): a
    /// Kubernetes build naming no provider, when no global provider exists,
    /// is accepted and runs there.
    pub global_cluster: bool,
    /// Installs and checks the Tekton Task bundle (admin `.../tekton/...`);
    /// `None` answers 503.
    pub tekton_ops: Option<Arc<dyn tekton::TektonOps>>,
    /// A running install job whose heartbeat is older than this is taken as
    /// abandoned (its process died) and marked failed.
    pub tekton_job_lease: Duration,
    /// Verified tenant tokens (shared by clones); revocations reach it
    /// through `token_cache::listen`, which the server runs beside it.
    pub token_cache: TokenCache,
    /// Wakes the dispatchers after submits (coalesced NOTIFY).
    pub queue_waker: QueueWaker,
    /// `GET /builds/{id}` reads, answered together under load.
    pub build_reads: BuildReads,
    /// `POST /builds` inserts, stored together (one commit) under load.
    pub build_submits: BuildSubmits,
}

impl AppState {
    pub fn new(pool: PgPool, cipher: Cipher, admin_token: Option<Secret>) -> Self {
        Self {
            queue_waker: QueueWaker::new(pool.clone()),
            build_reads: BuildReads::new(pool.clone()),
            build_submits: BuildSubmits::new(pool.clone()),
            pool,
            cipher,
            admin_token,
            metrics_token: None,
            log_poll_interval: Duration::from_millis(500),
            // Three missed heartbeats at the dispatcher's default 5 s.
            dispatcher_stale_after: Duration::from_secs(15),
            connection_tester: None,
            limits: HttpLimits::default(),
            followers: FollowerSlots::default(),
            auth_throttle: AuthThrottle::default(),
            provider_address_policy: Arc::new(AddressPolicy::new(false)),
            global_cluster: false,
            tekton_ops: None,
            tekton_job_lease: Duration::from_secs(30),
            token_cache: TokenCache::default(),
        }
    }
}

/// The whole HTTP surface: `/healthz`, `/readyz`, `/api/v1/...`,
/// `/api/v1/openapi.json` and `/metrics`; unknown paths and methods answer
/// problem+json. Every request is counted in the metrics by route template.
pub fn router(state: AppState) -> Router {
    let (api, doc) = openapi::split();
    let doc = Arc::new(doc);
    api.route(
        "/api/v1/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { Json(doc.as_ref().clone()) }
        }),
    )
    .route("/metrics", get(metrics::scrape))
    .fallback(|| async { ApiError::NotFound("no such path".into()) })
    .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
    .layer(axum::middleware::from_fn(metrics::track))
    .layer(DefaultBodyLimit::max(BODY_LIMIT))
    .layer(Extension(BodyReadTimeout(state.limits.body_read_timeout)))
    .layer(
        // Failures are logged once by `ApiError` with their cause; the
        // trace layer's own failure line would repeat them without it.
        TraceLayer::new_for_http().on_failure(()),
    )
    .with_state(state)
}
