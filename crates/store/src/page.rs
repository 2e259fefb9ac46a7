//! Keyset pagination of the lists other than builds: a page is the rows
//! after a cursor row (its id) in the list's order, so pages stay correct
//! while rows are added, and reading one costs the same wherever it is.

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};

/// Which page: the rows after the row `after` (none: the first page), at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// One page and the cursor of the next (`None`: this is the last).
#[derive(Debug)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<Uuid>,
}

/// A list query: `SELECT columns FROM table WHERE scope ORDER BY order`,
/// where `scope` may use `$1` (a uuid, possibly NULL) and `order` is unique
/// within the scope (e.g. `name`, or `created_at, id`).
pub(crate) struct List<'a> {
    pub columns: &'a str,
    pub table: &'a str,
    pub scope: &'a str,
    pub order: &'a str,
}

impl List<'_> {
    /// The page; `Err(NotFound)` if the cursor is no row of this list (a
    /// cursor from another list, or a row deleted since).
    pub(crate) async fn page<T>(
        &self,
        pool: &PgPool,
        scope_id: Option<Uuid>,
        page: Page,
        id_of: impl Fn(&T) -> Uuid,
    ) -> StoreResult<Paged<T>>
    where
        T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        let List {
            columns,
            table,
            scope,
            order,
        } = self;
        if let Some(after) = page.after {
            let exists: bool = sqlx::query_scalar(&format!(
                "SELECT EXISTS (SELECT 1 FROM {table} WHERE {scope} AND id = $2)"
            ))
            .bind(scope_id)
            .bind(after)
            .fetch_one(pool)
            .await?;
            if !exists {
                return Err(StoreError::NotFound);
            }
        }
        // One row more than asked tells whether another page follows.
        let mut items: Vec<T> = sqlx::query_as(&format!(
            "SELECT {columns} FROM {table} WHERE {scope} \
             AND ($2::uuid IS NULL OR ({order}) > (SELECT {order} FROM {table} WHERE {scope} AND id = $2)) \
             ORDER BY {order} LIMIT $3"
        ))
        .bind(scope_id)
        .bind(page.after)
        .bind(page.limit + 1)
        .fetch_all(pool)
        .await?;
        let next = if items.len() as i64 > page.limit {
            items.truncate(page.limit as usize);
            items.last().map(&id_of)
        } else {
            None
        };
        Ok(Paged { items, next })
    }
}
