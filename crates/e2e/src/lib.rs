//! End-to-end tests of Image Factory: the API, PostgreSQL, dispatchers with
//! the Tekton executor and kube-sim composed in one process. The tests live
//! in `tests/e2e` and the Tekton benchmark in `benches/tekton.rs`; this
//! library holds what both need.

use std::time::Duration;

use imagefactory_store::MIGRATOR;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

/// A freshly created and migrated database of its own.
pub struct FreshDatabase {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
    /// The server's URL as given (`DATABASE_URL`), for dropping it afterwards.
    pub admin_url: String,
}

/// Create `<prefix>_<random>` on the server `DATABASE_URL` names (default the
/// local PostgreSQL) and run the migrations. Panics: a harness, not a service.
pub async fn fresh_database(prefix: &str, acquire_timeout: Duration) -> FreshDatabase {
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("{prefix}_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let opts: PgConnectOptions = admin_url.parse().unwrap();
    let url = opts.database(&name).to_url_lossy().to_string();
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(acquire_timeout)
        .connect(&url)
        .await
        .expect("connect to the fresh database");
    MIGRATOR.run(&pool).await.expect("migrations");
    FreshDatabase {
        pool,
        url,
        name,
        admin_url,
    }
}
