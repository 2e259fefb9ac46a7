//! `GET /builds/{id}/logs`: the log as plain text (streamed page by page), or
//! with `?follow=true` a Server-Sent Events stream (`log` events, id = line
//! id) that ends with an `end` event once the build is terminal and every
//! line was sent; a token may hold `HttpLimits::log_followers_per_token`
//! such streams at once.
//!
//! Both give the lines in the store's log order (inserting transaction, then
//! id; see `attempts::logs_after`). While the build runs, the stream only
//! sends lines below the transaction horizon (`LogHorizon::Settled`), so a
//! line committed after a later-ordered one was read is still sent, in its
//! place, never skipped; a long transaction elsewhere only delays lines.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use imagefactory_store::attempts::{self, LogCursor, LogHorizon, LogRecord};
use imagefactory_store::builds;
use sqlx::PgPool;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::auth::TenantAuth;
use crate::error::{ApiError, ApiResult, OrNotFound, Problem};
use crate::extract::{PathIds, QueryParams};

const BATCH: i64 = 1000;

/// `Retry-After` for a follower refused by the per-token cap: when a slot
/// frees is not known, so a short wait.
const FOLLOWER_RETRY_AFTER: Duration = Duration::from_secs(5);

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(build_logs))
}

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LogsQuery {
    /// Stream as Server-Sent Events until the build ends.
    follow: Option<bool>,
    /// With `follow`: `json` makes each `log` event's data
    /// `{"source": "<task>/<step>", "line": "..."}` instead of the bare line
    /// (`text`, the default), for clients that show the task and step.
    #[param(value_type = Option<String>, pattern = r"^(text|json)$")]
    format: Option<String>,
}

#[utoipa::path(get, path = "/builds/{build_id}/logs", tag = "builds", security(("tenant_token" = [])),
    params(("build_id" = Uuid, Path), LogsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "resume a followed stream after this event id (a line id of this build; 0 = from the first line)")),
    responses(
        (status = 200, description = "log lines in log order: by writing transaction, then line id (a single writer's lines in arrival order); a followed stream sends a line once every line ordered before it is known, so none is skipped", content(
            (String = "text/plain"),
            (String = "text/event-stream"))),
        (status = 429, description = "the token already follows the most log streams allowed at once (`IF_HTTP_LOG_FOLLOWERS_PER_TOKEN`); see `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn build_logs(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
    query: QueryParams,
    headers: HeaderMap,
) -> ApiResult<Response> {
    query.only(&["follow", "format"])?;
    let follow = query.parse::<bool>("follow")?.unwrap_or(false);
    let with_source = match query.parse::<String>("format")?.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(_) => {
            return Err(ApiError::InvalidParameter {
                field: "format".into(),
                message: "must be text or json".into(),
            });
        }
    };
    let id = path.id("build_id")?;
    builds::get(&state.pool, auth.tenant_id, id)
        .await
        .or_not_found("build")?;

    if !follow {
        let mut response =
            Body::from_stream(plain_text(state.pool.clone(), auth.tenant_id, id)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Ok(response);
    }

    let bad_resume = || ApiError::InvalidParameter {
        field: "Last-Event-ID".into(),
        message: "must be an event id from this stream".into(),
    };
    let resume = match headers.get("last-event-id") {
        None => LogCursor::START,
        Some(v) => match resume_line(v) {
            // 0: before the first line.
            Some(0) => LogCursor::START,
            Some(line) => attempts::log_cursor(&state.pool, auth.tenant_id, id, line)
                .await?
                .ok_or_else(bad_resume)?,
            None => return Err(bad_resume()),
        },
    };
    let max = state.limits.log_followers_per_token;
    let slot =
        state
            .followers
            .acquire(auth.token_id, max)
            .ok_or_else(|| ApiError::TooManyRequests {
                detail: format!(
                    "this token already follows {max} log streams, the most allowed at once; \
                 close one or retry later"
                ),
                retry_after: FOLLOWER_RETRY_AFTER,
            })?;
    let stream = follow_stream(
        state.pool.clone(),
        auth.tenant_id,
        id,
        resume,
        state.log_poll_interval,
        with_source,
    )
    // The slot is held as long as the stream: freed when it ends or when the
    // client goes away and the response body is dropped.
    .map(move |event| {
        let _held = &slot;
        event
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The plain log, read page by page from the database as the body is
/// written: memory per request is one page, whatever the log's length. A
/// database error mid-way aborts the body (the client sees it cut).
fn plain_text(
    pool: PgPool,
    tenant_id: Uuid,
    build_id: Uuid,
) -> impl Stream<Item = Result<Bytes, imagefactory_store::StoreError>> + Send + 'static {
    futures::stream::try_unfold(Some(LogCursor::START), move |after| {
        let pool = pool.clone();
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let rows = attempts::logs_after(&pool, tenant_id, build_id, after, LogHorizon::Committed, BATCH)
                .await
                .inspect_err(|e| tracing::warn!(build.id = %build_id, error = %e, "log read failed mid-response"))?;
            let Some(last) = rows.last() else {
                return Ok(None);
            };
            let next = (rows.len() as i64 == BATCH).then(|| last.cursor());
            let mut text = String::new();
            for row in &rows {
                text.push_str(&row.line);
                text.push('\n');
            }
            Ok(Some((Bytes::from(text), next)))
        }
    })
}

enum Follow {
    Running { after: LogCursor },
    Done,
}

/// Poll for new lines; the build's status is read *before* the lines, so when
/// a terminal status is seen the writers are done and the fetch that follows
/// contains every line. Until then only settled lines are read (a line of a
/// transaction still in progress, or of one that may yet be followed by the
/// commit of an earlier-ordered line, is held back until that is decided);
/// once terminal the horizon is lifted, so an unrelated long transaction
/// cannot hold back the end of the stream.
fn follow_stream(
    pool: PgPool,
    tenant_id: Uuid,
    build_id: Uuid,
    after: LogCursor,
    interval: Duration,
    with_source: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(Follow::Running { after }, move |state| {
        let pool = pool.clone();
        async move {
            let Follow::Running { after } = state else {
                return None;
            };
            let mut first = true;
            loop {
                if !first {
                    tokio::time::sleep(interval).await;
                }
                first = false;
                let status = match builds::get(&pool, tenant_id, build_id).await {
                    Ok(b) => b.status,
                    Err(e) => return Some((vec![error_event(&e.to_string())], Follow::Done)),
                };
                let horizon = if status.is_terminal() {
                    LogHorizon::Committed
                } else {
                    LogHorizon::Settled
                };
                let rows =
                    match attempts::logs_after(&pool, tenant_id, build_id, after, horizon, BATCH)
                        .await
                    {
                        Ok(rows) => rows,
                        Err(e) => return Some((vec![error_event(&e.to_string())], Follow::Done)),
                    };
                if let Some(last) = rows.last() {
                    let next = last.cursor();
                    return Some((
                        rows.iter().map(|r| log_event(r, with_source)).collect(),
                        Follow::Running { after: next },
                    ));
                }
                if status.is_terminal() {
                    let end = Event::default().event("end").data(status.as_str());
                    return Some((vec![end], Follow::Done));
                }
            }
        }
    })
    .flat_map(|events: Vec<Event>| futures::stream::iter(events.into_iter().map(Ok)))
}

fn log_event(row: &LogRecord, with_source: bool) -> Event {
    let event = Event::default().id(row.id.to_string()).event("log");
    if with_source {
        let data = serde_json::json!({"source": row.source, "line": row.line});
        event.data(data.to_string())
    } else {
        event.data(&row.line)
    }
}

fn error_event(message: &str) -> Event {
    tracing::warn!(error = %message, "log stream ended by an error");
    Event::default().event("error").data(message)
}

/// The line id a `Last-Event-ID` header names, or `None` when it is no
/// integer (any bytes a client sends are only data).
fn resume_line(value: &HeaderValue) -> Option<i64> {
    value.to_str().ok().and_then(|s| s.parse::<i64>().ok())
}

#[cfg(test)]
mod resume_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn event_ids_round_trip(id in any::<i64>()) {
            let value = HeaderValue::from_str(&id.to_string()).unwrap();
            prop_assert_eq!(resume_line(&value), Some(id));
        }

        #[test]
        fn arbitrary_header_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            // Header values refuse some bytes (NUL, newlines) before we see them.
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let parsed = resume_line(&value);
                if bytes.iter().any(|b| !(b.is_ascii_digit() || *b == b'-' || *b == b'+')) {
                    prop_assert_eq!(parsed, None);
                }
            }
        }
    }
}
