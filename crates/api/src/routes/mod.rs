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
pub mod tekton;
pub mod tenants;
pub mod tokens;

use imagefactory_store::page::Page;
use serde::{Deserialize, Deserializer};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::extract::QueryParams;

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
        .merge(tekton::routes())
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

/// Largest `limit` of any list.
pub const MAX_LIMIT: i64 = 100;
/// `limit` of a list that names none (builds: [`builds::DEFAULT_LIMIT`]).
pub const DEFAULT_LIMIT: i64 = 100;

/// Query of every list but builds (documentation; parsed by [`page`]).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageQuery {
    /// 1..=100, default 100.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page; an id that is no position in this
    /// list is refused (400), not an empty page.
    cursor: Option<Uuid>,
}

/// `limit` (1..=[`MAX_LIMIT`], default `default`) and `cursor` of a list.
pub(crate) fn page(query: &QueryParams, default: i64) -> ApiResult<Page> {
    let limit = query.parse::<i64>("limit")?.unwrap_or(default);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidParameter {
            field: "limit".into(),
            message: format!("must be between 1 and {MAX_LIMIT}"),
        });
    }
    Ok(Page {
        limit,
        after: query.parse::<Uuid>("cursor")?,
    })
}

/// A list handler's query: only `limit` and `cursor`.
pub(crate) fn list_page(query: &QueryParams) -> ApiResult<Page> {
    query.only(&["limit", "cursor"])?;
    page(query, DEFAULT_LIMIT)
}

/// One page of a list: `items` in the list's order and, when more follow,
/// `next_cursor` to pass as `cursor`. One named type per item type, so the
/// OpenAPI document names each.
macro_rules! page_of {
    ($page:ident, $item:ty) => {
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        pub struct $page {
            pub items: Vec<$item>,
            /// Pass as `cursor` to get the next page; absent on the last page.
            pub next_cursor: Option<uuid::Uuid>,
        }

        impl $page {
            pub(crate) fn new<R>(
                (rows, next_cursor): (Vec<R>, Option<uuid::Uuid>),
                f: impl FnMut(R) -> crate::error::ApiResult<$item>,
            ) -> crate::error::ApiResult<Self> {
                Ok(Self {
                    items: rows
                        .into_iter()
                        .map(f)
                        .collect::<crate::error::ApiResult<_>>()?,
                    next_cursor,
                })
            }
        }
    };
}
pub(crate) use page_of;
