//! Databases of a test's own on the PostgreSQL server `DATABASE_URL` names
//! (default the local one), dropped when their guard is, after a panic too.
//!
//! Not `#[sqlx::test]`: it names a test's database after the test's path and
//! first drops any database of that name, so two processes running one test
//! binary against one server (CI while someone runs the tests) dropped each
//! other's databases mid-test. A random name cannot collide.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server's admin database: `DATABASE_URL` if set and not empty.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN_URL.into())
}

/// The URL of database `name` on the admin URL's server (same user, host,
/// port and query parameters).
pub fn database_url(name: &str) -> String {
    url_on(&admin_url(), name)
}

fn url_on(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin, String::new()),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority..].find('/') {
        Some(i) => &base[..authority + i],
        None => base,
    };
    format!("{server}/{name}{query}")
}

/// `<prefix>_<random>`; the prefix says which tests left a database behind
/// if a process is killed before its guards drop.
fn unique_name(prefix: &str) -> String {
    assert!(
        !prefix.is_empty()
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "database prefix {prefix:?}: lowercase letters, digits and _ only (it is spliced into SQL)"
    );
    format!("{prefix}_{}", Uuid::new_v4().simple())
}

pub async fn database_exists(name: &str) -> bool {
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("connect to PostgreSQL (DATABASE_URL)");
    let exists = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .expect("query pg_database");
    let _ = admin.close().await;
    exists
}

/// Drops `name` from a thread with a runtime of its own: `Drop` runs while
/// the test's runtime finishes or unwinds, and cannot block on it.
fn drop_database_now(admin: &str, name: &str) {
    let owned = name.to_owned();
    let admin = admin.to_owned();
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime to drop the test database");
        runtime.block_on(async move {
            let mut admin = sqlx::PgConnection::connect(&admin).await?;
            // FORCE: a pool or a killed server may still hold connections.
            sqlx::query(&format!("DROP DATABASE IF EXISTS {owned} WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
            admin.close().await
        })
    })
    .join();
    match dropped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("could not drop test database {name}: {e}"),
        Err(_) => eprintln!("could not drop test database {name}: the dropping thread panicked"),
    }
}

/// A freshly created and migrated database of the test's own, dropped when
/// the guard goes out of scope (after a failure too).
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    name: String,
    admin: String,
}

impl TestDb {
    /// `if_test_<random>`, migrated, a pool of 8 connections.
    pub async fn new() -> TestDb {
        Self::with_prefix("if_test").await
    }

    pub async fn with_prefix(prefix: &str) -> TestDb {
        Self::with_pool(prefix, 8, Duration::from_secs(60)).await
    }

    /// With the pool's size and acquire timeout of the caller's choosing
    /// (load tests want more connections and more patience).
    pub async fn with_pool(
        prefix: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> TestDb {
        Self::on_server(&admin_url(), prefix, max_connections, acquire_timeout).await
    }

    /// [`TestDb::with_pool`] on the server whose admin database is `admin`
    /// (a [`crate::PgServer`] of the test's own).
    pub async fn on_server(
        admin: &str,
        prefix: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> TestDb {
        let name = unique_name(prefix);
        let admin_db = admin;
        let mut admin = sqlx::PgConnection::connect(admin_db)
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        // From here the guard exists: a failed migration still drops it.
        let url = url_on(admin_db, &name);
        let db = TestDb {
            pool: connect(&url, max_connections, acquire_timeout).await,
            url,
            name,
            admin: admin_db.to_owned(),
        };
        imagefactory_store::MIGRATOR
            .run(&db.pool)
            .await
            .expect("migrations");
        db
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A separate pool, as another process (a second dispatcher) would have.
    pub async fn another_pool(&self, max_connections: u32) -> PgPool {
        connect(&self.url, max_connections, Duration::from_secs(60)).await
    }

    /// Close the pool, then drop the database, right here.
    pub async fn drop_db(self) {
        // A connection still checked out (a `PgListener` holds one) would
        // keep `close` waiting for ever; the forced drop ends it instead.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pool.close()).await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database_now(&self.admin, &self.name);
    }
}

async fn connect(url: &str, max_connections: u32, acquire_timeout: Duration) -> PgPool {
    let options: PgConnectOptions = url.parse().expect("a test database URL");
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_with(options.disable_statement_logging())
        .await
        .expect("connect to the test database")
}

/// A database name and URL nobody uses yet, for a process under test that
/// creates the database itself (`imagefactory serve`, `migrate`, the dev
/// demo); dropped, if it was created, when the guard is.
pub struct ReservedDb {
    pub url: String,
    name: String,
}

impl ReservedDb {
    pub fn new(prefix: &str) -> ReservedDb {
        let name = unique_name(prefix);
        ReservedDb {
            url: database_url(&name),
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ReservedDb {
    fn drop(&mut self) {
        drop_database_now(&admin_url(), &self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_keeps_server_user_and_parameters() {
        let cases = [
            ("postgres://u@h:1/postgres", "postgres://u@h:1/x"),
            (
                "postgres://u:p@h/db?sslmode=disable",
                "postgres://u:p@h/x?sslmode=disable",
            ),
            ("postgres://h", "postgres://h/x"),
        ];
        for (admin, want) in cases {
            assert_eq!(url_on(admin, "x"), want, "{admin}");
        }
    }

    #[test]
    #[should_panic(expected = "lowercase letters, digits and _ only")]
    fn a_prefix_that_is_not_a_plain_identifier_is_refused() {
        unique_name("x; DROP DATABASE postgres");
    }
}
