//! `build_reads`: concurrent reads of single builds share queries, each
//! read gets only its own tenant's build, a failure reaches each caller
//! with its cause, and the shared query probes only the rows it is asked
//! for, however large and unanalyzed the table. Needs PostgreSQL
//! (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use imagefactory_domain::MethodConfig;
use imagefactory_store::StoreError;
use imagefactory_store::build_reads::BuildReads;
use imagefactory_store::builds;
use uuid::Uuid;

mod common;
use common::{database, new_project, new_tenant, submit};

fn config(n: usize) -> MethodConfig {
    MethodConfig {
        dockerfile: Some(format!("Dockerfile.{n}")),
        build_args: BTreeMap::from([("N".to_owned(), n.to_string())]),
        ..MethodConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_share_queries_and_each_gets_only_its_tenants_build() {
    let db = database().await;
    let pool = &db.pool;
    let owner = new_tenant(pool, "owner").await.id;
    let other = new_tenant(pool, "other").await.id;
    let project = new_project(pool, owner).await;
    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(submit(pool, owner, project, config(n)).await);
    }

    let reads = BuildReads::with_max_in_flight(pool.clone(), 1);
    let asked: Vec<(Uuid, Uuid)> = ids
        .iter()
        .flat_map(|&id| [(owner, id), (other, id), (owner, Uuid::now_v7())])
        .chain(ids.iter().map(|&id| (owner, id)))
        .collect();
    let answers = join_all(
        asked
            .iter()
            .map(|&(tenant, id)| reads.get_with_config(tenant, id)),
    )
    .await;

    for (&(tenant, id), answer) in asked.iter().zip(answers) {
        match ids.iter().position(|&b| b == id) {
            Some(n) if tenant == owner => {
                let (build, config_read) = answer.expect("the owner reads its build");
                assert_eq!((build.id, build.tenant_id), (id, owner));
                assert_eq!(
                    config_read,
                    config(n),
                    "build {n} came with another's config"
                );
                let alone = builds::get_with_config(pool, owner, id).await.unwrap();
                assert_eq!(format!("{:?}", alone.0), format!("{build:?}"));
            }
            _ => assert!(
                matches!(answer, Err(StoreError::NotFound)),
                "tenant {tenant} reading {id} got {answer:?}"
            ),
        }
    }
    // 120 reads waiting together: a few queries, not one per read.
    let queries = reads.queries();
    assert!(
        (1..=12).contains(&queries),
        "{queries} queries for {} reads",
        asked.len()
    );
    db.drop().await;
}

#[tokio::test]
async fn each_read_gets_its_own_error_when_the_database_is_gone() {
    let db = database().await;
    let pool = db.pool.clone();
    let owner = new_tenant(&pool, "owner").await.id;
    let project = new_project(&pool, owner).await;
    let id = submit(&pool, owner, project, config(1)).await;
    let reads = BuildReads::new(pool.clone());
    reads.get_with_config(owner, id).await.unwrap();

    pool.close().await;
    let answers = tokio::time::timeout(
        Duration::from_secs(10),
        join_all((0..10).map(|_| reads.get_with_config(owner, id))),
    )
    .await
    .expect("reads hung on a closed pool");
    for answer in answers {
        assert!(
            matches!(
                answer,
                Err(StoreError::Unavailable(sqlx::Error::PoolClosed))
            ),
            "{answer:?}"
        );
    }
    db.drop().await;
}

/// The plan is made once (the function's own generic plan), possibly on a
/// nearly empty table; with thousands of builds PostgreSQL has not analyzed
/// it still probes one primary key per id.
#[tokio::test]
async fn a_shared_read_fetches_only_the_rows_asked_for_on_an_unanalyzed_table() {
    let db = database().await;
    let pool = &db.pool;
    for table in ["builds", "build_configs"] {
        sqlx::query(&format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = false)"
        ))
        .execute(pool)
        .await
        .unwrap();
    }
    let owner = new_tenant(pool, "owner").await.id;
    let project = new_project(pool, owner).await;
    let first = submit(pool, owner, project, config(0)).await;

    let mut conn = pool.acquire().await.unwrap();
    let read = |ids: Vec<Uuid>| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM builds_with_config($1)").bind(ids)
    };
    assert_eq!(read(vec![first]).fetch_one(&mut *conn).await.unwrap(), 1);

    sqlx::query(
        "WITH copies AS (
             INSERT INTO builds (id, tenant_id, project_id, method, infrastructure_type, git_url,
                                 git_ref, image)
             SELECT gen_random_uuid(), tenant_id, project_id, method, infrastructure_type,
                    git_url, git_ref, image
             FROM builds, generate_series(1, 3000) WHERE id = $1
             RETURNING id)
         INSERT INTO build_configs (build_id) SELECT id FROM copies",
    )
    .bind(first)
    .execute(pool)
    .await
    .unwrap();
    let asked: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM builds ORDER BY random() LIMIT 5")
        .fetch_all(pool)
        .await
        .unwrap();

    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    assert_eq!(read(asked).fetch_one(&mut *tx).await.unwrap(), 5);
    let (seq, fetched): (i64, i64) = sqlx::query_as(
        "SELECT sum(seq_tup_read)::bigint, sum(idx_tup_fetch)::bigint FROM pg_stat_xact_user_tables
         WHERE relname IN ('builds', 'build_configs')",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(seq, 0, "rows read by sequential scans");
    // A probe per id and table (a few more for row versions), not thousands.
    assert!(
        fetched <= 20,
        "{fetched} rows fetched through indexes for 5 builds"
    );
    tx.rollback().await.unwrap();
    drop(conn);
    db.drop().await;
}
