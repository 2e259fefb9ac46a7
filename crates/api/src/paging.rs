//! `limit` and `cursor` of the lists other than builds. The body stays a
//! JSON array (as before pagination); when more items follow, the response
//! carries `Link: <same path?limit=…&cursor=…>; rel="next"` (RFC 8288).

use axum::Json;
use axum::extract::OriginalUri;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use imagefactory_store::StoreError;
use imagefactory_store::page::{Page, Paged};
use serde::Serialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::extract::QueryParams;

/// Items per page unless `limit` says otherwise, and the most it may say.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageQuery {
    /// Items per page, 1 to 1000 (default 100).
    limit: Option<i64>,
    /// Where the next page starts: taken from the `Link: <…>; rel="next"`
    /// header of the previous page.
    cursor: Option<Uuid>,
}

/// The page asked for; no query parameters but these are accepted.
pub fn page(query: &QueryParams) -> ApiResult<Page> {
    query.only(&["limit", "cursor"])?;
    let limit = query.parse::<i64>("limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidParameter {
            field: "limit".into(),
            message: format!("must be between 1 and {MAX_LIMIT}"),
        });
    }
    Ok(Page {
        after: query.parse::<Uuid>("cursor")?,
        limit,
    })
}

/// A cursor that is no item of this list answers 400 naming `cursor`.
pub fn cursor_error(err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound => ApiError::InvalidParameter {
            field: "cursor".into(),
            message: "is no item of this list; use the cursor the previous page gave".into(),
        },
        other => other.into(),
    }
}

/// The page's items as a JSON array, with a `Link` to the next page if any.
pub fn respond<T, R: Serialize>(
    paged: Paged<T>,
    uri: &OriginalUri,
    page: Page,
    item: impl Fn(T) -> ApiResult<R>,
) -> ApiResult<Response> {
    let items = paged
        .items
        .into_iter()
        .map(item)
        .collect::<ApiResult<Vec<R>>>()?;
    let mut response = Json(items).into_response();
    if let Some(next) = paged.next {
        let link = format!(
            "<{}?limit={}&cursor={next}>; rel=\"next\"",
            uri.path(),
            page.limit
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}
