//! The web dashboard: server-rendered pages at `/` over the same REST API
//! that `/api/v1` serves. Each page calls the API in process with the
//! signed-in token (`api_call`), so tenant scoping, roles and validation are
//! exactly the API's (another tenant's build is a 404 here too).
//!
//! Sign-in keeps the token in an HttpOnly, SameSite=Strict cookie (Secure
//! behind TLS); writes are POST forms carrying a CSRF token derived from the
//! session and checked with the request's `Origin` (`session`). Templates
//! and assets are embedded in the binary (`render`, `assets`).

mod api_call;
mod assets;
mod error;
mod headers;
mod log_events;
mod pages;
mod render;
pub mod session;

use axum::Router;
use axum::routing::{get, post};
use imagefactory_api::AppState;
use tower::ServiceBuilder;

/// What the dashboard's handlers reach: the API's state (its token check,
/// pool, limits) and the API router they call in process.
#[derive(Clone)]
pub struct WebState {
    pub app: AppState,
    pub api: Router,
}

/// The API router with the dashboard merged in: `/` and its pages, plus
/// everything `imagefactory_api::router` serves.
pub fn app(state: AppState) -> Router {
    let api = imagefactory_api::router(state.clone());
    dashboard(WebState {
        app: state,
        api: api.clone(),
    })
    .merge(api)
}

/// The dashboard's own routes (no fallback: the API's answers unknown paths).
pub fn dashboard(state: WebState) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/sign-in", get(pages::sign_in_form).post(pages::sign_in))
        .route("/sign-out", post(pages::sign_out))
        .route("/builds", get(pages::builds::list))
        .route("/builds/rows", get(pages::builds::rows))
        .route("/builds/{build_id}", get(pages::build::page))
        .route("/builds/{build_id}/summary", get(pages::build::summary))
        .route("/builds/{build_id}/log-events", get(log_events::follow))
        .route("/builds/{build_id}/cancel", post(pages::build::cancel))
        .route("/builds/{build_id}/retry", post(pages::build::retry))
        .route("/projects", get(pages::resources::projects))
        .route("/providers", get(pages::resources::providers))
        .route(
            "/providers/{provider_id}/test-connection",
            post(pages::resources::test_provider),
        )
        .route("/admin/tenants", get(pages::resources::tenants))
        .route("/admin/dispatchers", get(pages::resources::dispatchers))
        .route("/assets/{name}", get(assets::serve))
        .layer(ServiceBuilder::new().map_response(headers::set_headers))
        .with_state(state)
}
