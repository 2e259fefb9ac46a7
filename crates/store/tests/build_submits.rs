//! `build_submits`: concurrent submissions share statements (one commit),
//! each is checked and stored or refused on its own, and one the database
//! refuses fails alone with its cause. Needs PostgreSQL (`DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::collections::BTreeMap;

use futures::future::join_all;
use imagefactory_domain::{
    BuildMethod, BuildStatus, GitRef, ImageRef, InfrastructureType, MethodConfig,
};
use imagefactory_store::StoreError;
use imagefactory_store::build_submits::BuildSubmits;
use imagefactory_store::builds::{self, NewBuild};
use sqlx::PgPool;
use uuid::Uuid;

mod common;
use common::{database, new_project, new_tenant};

fn new_build(tenant_id: Uuid, project_id: Uuid, n: usize) -> NewBuild {
    NewBuild {
        tenant_id,
        project_id,
        method: BuildMethod::Buildx,
        infrastructure_type: InfrastructureType::Local,
        infrastructure_provider_id: None,
        registry_credential_id: None,
        // Every third takes the project's default branch.
        git_ref: (!n.is_multiple_of(3)).then(|| GitRef::parse(&format!("v{n}")).unwrap()),
        image: ImageRef::parse(&format!("r.example:5000/team/app:{n}")).unwrap(),
        priority: n as i32 % 5,
        timeout_seconds: 60 + n as i32,
        created_by_token_id: None,
        config: MethodConfig {
            dockerfile: Some(format!("Dockerfile.{n}")),
            build_args: BTreeMap::from([("N".to_owned(), n.to_string())]),
            platforms: vec!["linux/amd64".into(), format!("linux/arm/v{n}")],
            labels: BTreeMap::from([("n".to_owned(), n.to_string())]),
            metadata: serde_json::Map::from_iter([("n".to_owned(), serde_json::json!(n))]),
            ..MethodConfig::default()
        },
    }
}

async fn stored_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM builds JOIN build_configs c ON c.build_id = builds.id")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_share_statements_and_each_is_checked_on_its_own() {
    let db = database().await;
    let pool = &db.pool;
    let a = new_tenant(pool, "a").await.id;
    let b = new_tenant(pool, "b").await.id;
    let project_a = new_project(pool, a).await;
    let project_b = new_project(pool, b).await;
    // 60 the tenants' own, 10 of b naming a's project (refused).
    let sent: Vec<NewBuild> = (0..70)
        .map(|n| match n % 7 {
            6 => new_build(b, project_a, n),
            k if k % 2 == 0 => new_build(a, project_a, n),
            _ => new_build(b, project_b, n),
        })
        .collect();

    let submits = BuildSubmits::with_max_in_flight(pool.clone(), 1);
    let answers = join_all(sent.iter().map(|new| submits.submit(new.clone()))).await;

    for (n, (new, answer)) in sent.iter().zip(answers).enumerate() {
        let answer = answer.unwrap();
        if n % 7 == 6 {
            assert!(
                answer.is_none(),
                "{n}: another tenant's project was accepted"
            );
            continue;
        }
        let build = answer.unwrap_or_else(|| panic!("{n} was refused"));
        assert_eq!(build.tenant_id, new.tenant_id);
        assert_eq!(build.project_id, new.project_id);
        assert_eq!(build.status, BuildStatus::Queued);
        assert_eq!(build.image, new.image);
        assert_eq!(
            (build.priority, build.timeout_seconds),
            (new.priority, new.timeout_seconds)
        );
        let expected_ref = new
            .git_ref
            .clone()
            .unwrap_or(GitRef::parse("main").unwrap());
        assert_eq!(build.git_ref, expected_ref, "{n}");
        let (_, config) = builds::get_with_config(pool, new.tenant_id, build.id)
            .await
            .unwrap();
        assert_eq!(config, new.config, "{n} was stored with another's config");
    }
    assert_eq!(stored_count(pool).await, 60);
    let statements = submits.statements();
    assert!(
        (1..=10).contains(&statements),
        "{statements} statements for 70 submissions"
    );
    db.drop().await;
}

#[tokio::test]
async fn a_submission_the_database_refuses_fails_alone_and_the_others_are_stored() {
    let db = database().await;
    let pool = &db.pool;
    let a = new_tenant(pool, "a").await.id;
    let project = new_project(pool, a).await;
    let mut bad = new_build(a, project, 1);
    // Past the API's checks, a value the table's CHECK refuses.
    bad.timeout_seconds = 0;
    let submits = BuildSubmits::with_max_in_flight(pool.clone(), 1);
    let answers = join_all(
        [new_build(a, project, 0), bad, new_build(a, project, 2)].map(|new| submits.submit(new)),
    )
    .await;
    let [first, bad, last] = <[_; 3]>::try_from(answers).unwrap();
    assert!(first.unwrap().is_some());
    assert!(last.unwrap().is_some());
    match bad {
        Err(StoreError::Check { constraint }) => assert_eq!(constraint, "builds_timeout_positive"),
        other => panic!("{other:?}"),
    }
    assert_eq!(stored_count(pool).await, 2);
    db.drop().await;
}
