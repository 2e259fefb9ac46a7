//! Keyset pagination shared by every list: a page is `limit` rows after the
//! row whose id is the cursor, in the list's own order (each list compares
//! its sort key with the cursor row's). A cursor that names no row of the
//! list is an error, not an empty page, so a client never mistakes a typo or
//! a deleted row for the end of the list.

use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};

/// `after` is the last id of the previous page (its `next_cursor`).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub after: Option<Uuid>,
}

impl Page {
    /// The `LIMIT` to query: one more row than the page tells whether
    /// another page follows.
    pub(crate) fn fetch(&self) -> i64 {
        self.limit + 1
    }
}

/// The page and, when more rows remain, the cursor of the next page. Rows
/// were fetched with [`Page::fetch`]. An empty page after a cursor checks
/// the cursor with `cursor_sql` (`SELECT EXISTS (...)`, `$1` the cursor,
/// then `scope`): an unknown one is [`StoreError::UnknownCursor`].
pub(crate) async fn finish<T>(
    pool: &PgPool,
    mut rows: Vec<T>,
    page: Page,
    id: impl Fn(&T) -> Uuid,
    cursor_sql: &str,
    scope: &[Uuid],
) -> StoreResult<(Vec<T>, Option<Uuid>)> {
    if rows.is_empty() {
        if let Some(cursor) = page.after {
            let mut known = sqlx::query_scalar::<_, bool>(cursor_sql).bind(cursor);
            for s in scope {
                known = known.bind(*s);
            }
            if !known.fetch_one(pool).await? {
                return Err(StoreError::UnknownCursor);
            }
        }
        return Ok((rows, None));
    }
    let next = if rows.len() as i64 > page.limit {
        rows.truncate(page.limit as usize);
        rows.last().map(&id)
    } else {
        None
    };
    Ok((rows, next))
}
