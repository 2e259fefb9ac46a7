//! Keyset pagination shared by every list: a page is `limit` rows after the
//! row whose id is the cursor, in the list's own order (each list compares
//! its sort key with the cursor row's). A cursor that names no row of the
//! list is an error, not an empty page, so a client never mistakes a typo or
//! a deleted row for the end of the list.

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool};
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

/// A page of one tenant's rows of `table` (`columns` selected), in `order`
/// then id: the lists of projects, registry credentials and tokens. The
/// cursor row must be the tenant's too.
pub(crate) async fn tenant_page<T>(
    pool: &PgPool,
    (table, columns, order): (&str, &str, &str),
    tenant_id: Uuid,
    page: Page,
    id: impl Fn(&T) -> Uuid,
) -> StoreResult<(Vec<T>, Option<Uuid>)>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let sql = format!(
        "SELECT {columns} FROM {table} WHERE tenant_id = $1
           AND ($2::uuid IS NULL OR ({order}, id) > (
                SELECT {order}, id FROM {table} WHERE id = $2 AND tenant_id = $1))
         ORDER BY {order}, id LIMIT $3"
    );
    let rows: Vec<T> = sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(page.after)
        .bind(page.fetch())
        .fetch_all(pool)
        .await?;
    let known = format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1 AND tenant_id = $2)");
    finish(pool, rows, page, id, &known, &[tenant_id]).await
}

/// One of the tenant's rows of `table` by id; another tenant's is
/// [`StoreError::NotFound`], as a missing one.
pub(crate) async fn tenant_row<T>(
    pool: &PgPool,
    (table, columns): (&str, &str),
    tenant_id: Uuid,
    id: Uuid,
) -> StoreResult<T>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    // Not `tenant_id = $1`: keeps the planner on the primary key (see
    // `builds`' module documentation).
    let sql = format!(
        "SELECT {columns} FROM {table} WHERE id = $2 AND tenant_id IS NOT DISTINCT FROM $1"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)
}
