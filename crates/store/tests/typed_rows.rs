//! Rows decode into domain types: what the repositories write reads back
//! typed, and a stored value that does not parse (written around the
//! repositories, or by another version) is a decode error naming the column
//! and the value, never a default. Needs PostgreSQL (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test makes its own
//! database.

use imagefactory_domain::{
    BuildMethod, BuildStatus, GitUrl, InfrastructureType, ProviderStatus, ProviderType, Role,
};
use imagefactory_store::builds::{self, BuildFilter};
use imagefactory_store::crypto::Cipher;
use imagefactory_store::page::Page;
use imagefactory_store::providers::{self, NewProvider, Owner};
use imagefactory_store::{StoreError, executions, projects, tenants, tokens};
use uuid::Uuid;

mod common;
use common::{database, new_tenant, one_build};

const PAGE: Page = Page {
    limit: 100,
    after: None,
};

/// The sqlx error inside a store error (decode errors are `Database`).
fn decode_message(err: StoreError) -> String {
    match err {
        StoreError::Database(e @ sqlx::Error::ColumnDecode { .. }) => e.to_string(),
        other => panic!("expected a column decode error, got {other:?}"),
    }
}

/// A git URL stored before the documented grammar was enforced (a trailing
/// slash, a `*`) is still read back: stored rows keep the safety rules
/// only (`GitUrl::stored`), so the stricter input check broke no GET.
#[tokio::test]
async fn a_git_url_stored_before_the_grammar_still_reads_back() {
    let db = database().await;
    let pool = &db.pool;
    let f = one_build(pool).await;
    let old = "https://git.example/team/app/*";
    assert!(GitUrl::parse(old).is_err());
    sqlx::query("UPDATE builds SET git_url = $1 WHERE id = $2")
        .bind(old)
        .bind(f.build)
        .execute(pool)
        .await
        .unwrap();
    let build = builds::get(pool, f.tenant, f.build).await.unwrap();
    assert_eq!(build.git_url.as_str(), old);
    db.drop().await;
}

/// A build's tenant is held by its project's key alone (no key of its own
/// to `tenants`): a build naming another tenant's project is refused, and
/// deleting the tenant still deletes its builds (through its projects).
#[tokio::test]
async fn a_build_belongs_to_its_projects_tenant_and_goes_with_it() {
    let db = database().await;
    let pool = &db.pool;
    let f = one_build(pool).await;
    let other = new_tenant(pool, "other").await;
    let copied = sqlx::query(
        "INSERT INTO builds (id, tenant_id, project_id, method, infrastructure_type, git_url, \
         git_ref, image) SELECT $1, $2, project_id, method, infrastructure_type, git_url, git_ref, \
         image FROM builds WHERE id = $3",
    )
    .bind(Uuid::now_v7())
    .bind(other.id)
    .bind(f.build)
    .execute(pool)
    .await;
    let err = copied.expect_err("a build under another tenant's project was stored");
    assert!(err.to_string().contains("builds_project_fk"), "{err}");

    tenants::delete(pool, f.tenant).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM builds")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    db.drop().await;
}

#[tokio::test]
async fn written_values_read_back_typed() {
    let db = database().await;
    let pool = &db.pool;
    let f = one_build(pool).await;
    let build = builds::get(pool, f.tenant, f.build).await.unwrap();
    assert_eq!(build.method, BuildMethod::Kaniko);
    assert_eq!(build.infrastructure_type, InfrastructureType::Local);
    assert_eq!(build.status, BuildStatus::Queued);
    assert_eq!(build.image.registry(), "r.example:5000");
    assert_eq!(build.image.to_string(), "r.example:5000/team/app:1");
    assert_eq!(build.git_ref.as_str(), "v1.2");
    assert_eq!(build.git_url.as_str(), "https://git.example/app.git");
    // The filter binds the status's text.
    let filter = BuildFilter {
        project_id: None,
        status: Some(BuildStatus::Running),
    };
    let (none, _) = builds::list(pool, f.tenant, &filter, PAGE).await.unwrap();
    assert!(none.is_empty());
    let filter = BuildFilter {
        project_id: None,
        status: Some(BuildStatus::Queued),
    };
    let (queued, _) = builds::list(pool, f.tenant, &filter, PAGE).await.unwrap();
    assert_eq!(queued.len(), 1);
    let cancelled = match builds::cancel(pool, f.tenant, f.build).await.unwrap() {
        builds::CancelOutcome::Cancelled(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(cancelled.status, BuildStatus::Cancelled);

    let inputs = executions::load_inputs(pool, f.build, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inputs.image, build.image);
    assert_eq!(inputs.method, BuildMethod::Kaniko);

    let (token, _) = tokens::create(pool, f.tenant, "ci", Role::Developer, None)
        .await
        .unwrap();
    assert_eq!(token.role, Role::Developer);

    let (cipher, _) = Cipher::random();
    let provider = providers::create(
        pool,
        &cipher,
        Owner::Tenant(f.tenant),
        NewProvider {
            name: "here".into(),
            provider_type: ProviderType::Local,
            config: serde_json::json!({}),
            tekton_enabled: false,
            status: ProviderStatus::Disabled,
            max_concurrent_builds: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (provider.provider_type, provider.status),
        (ProviderType::Local, ProviderStatus::Disabled)
    );
    db.drop().await;
}

#[tokio::test]
async fn an_unparsable_stored_value_is_an_error_naming_column_and_value() {
    let db = database().await;
    let pool = &db.pool;
    let f = one_build(pool).await;

    // A value no ImageRef parses (no CHECK guards this column).
    sqlx::query("UPDATE builds SET image = 'Not An Image' WHERE id = $1")
        .bind(f.build)
        .execute(pool)
        .await
        .unwrap();
    let message = decode_message(builds::get(pool, f.tenant, f.build).await.unwrap_err());
    assert!(
        message.contains("\"image\"") && message.contains("\"Not An Image\""),
        "{message}"
    );
    assert!(message.contains("is not a valid ImageRef"), "{message}");
    let err = executions::load_inputs(pool, f.build, None)
        .await
        .unwrap_err();
    assert!(executions::is_bad_stored_value(&err), "{err}");
    assert!(err.to_string().contains("Not An Image"), "{err}");
    // The batch load leaves the bad row out instead of failing the batch.
    let many = executions::load_inputs_many(pool, &[(f.build, None)])
        .await
        .unwrap();
    assert!(many.is_empty());

    // An unknown status: the CHECK would refuse it, as it would a value a
    // newer version writes after a migration this code does not know.
    sqlx::query("UPDATE builds SET image = 'r.example/app:1' WHERE id = $1")
        .bind(f.build)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE builds DROP CONSTRAINT builds_status_check")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE builds SET status = 'paused' WHERE id = $1")
        .bind(f.build)
        .execute(pool)
        .await
        .unwrap();
    let message = decode_message(builds::get(pool, f.tenant, f.build).await.unwrap_err());
    assert!(
        message.contains("\"status\"") && message.contains("\"paused\""),
        "{message}"
    );
    // Also where the status is read alone (cancel locks the row).
    let err = builds::cancel(pool, f.tenant, f.build).await.unwrap_err();
    assert!(err.to_string().contains("\"paused\""), "{err}");

    // A git ref that would reach git as an option.
    sqlx::query("UPDATE projects SET default_branch = '-rf' WHERE tenant_id = $1")
        .bind(f.tenant)
        .execute(pool)
        .await
        .unwrap();
    let err = projects::list(pool, f.tenant, PAGE).await.unwrap_err();
    let message = decode_message(err);
    assert!(
        message.contains("\"default_branch\"") && message.contains("\"-rf\""),
        "{message}"
    );

    // An unknown role.
    sqlx::query("ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check")
        .execute(pool)
        .await
        .unwrap();
    tokens::create(pool, f.tenant, "ci", Role::Viewer, None)
        .await
        .unwrap();
    sqlx::query("UPDATE api_tokens SET role = 'owner'")
        .execute(pool)
        .await
        .unwrap();
    let message = decode_message(tokens::list(pool, f.tenant, PAGE).await.unwrap_err());
    assert!(
        message.contains("\"role\"") && message.contains("\"owner\""),
        "{message}"
    );
    db.drop().await;
}
