//! Handlers, one module per resource. Each handler extracts the caller
//! (`AdminAuth` or `TenantAuth`), validated input, and returns
//! `Result<_, ApiError>`.

pub mod builds;
pub mod dispatchers;
pub mod health;
pub mod logs;
pub mod projects;
pub mod providers;
pub mod registry_credentials;
pub mod tenants;
pub mod tokens;

use serde::{Deserialize, Deserializer};

use crate::error::{ApiError, ApiResult};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub(crate) fn v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(tenants::routes())
        .merge(tokens::routes())
        .merge(projects::routes())
        .merge(registry_credentials::routes())
        .merge(providers::routes())
        .merge(builds::routes())
        .merge(logs::routes())
        .merge(dispatchers::routes())
}

/// For PATCH fields where `null` (remove) differs from absent (keep):
/// absent → `None`, `null` → `Some(None)`, value → `Some(Some(v))`.
pub(crate) fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Parse an enum column read from the database. Its CHECK constraint makes a
/// failure a schema/code mismatch, i.e. a bug: a 500, never a guess.
pub(crate) fn stored<T: std::str::FromStr>(column: &str, value: &str) -> ApiResult<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| ApiError::Internal(format!("stored {column}: {e}")))
}
