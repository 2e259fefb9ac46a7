//! A database of its own per test, and the rows most tests start from.
#![allow(dead_code)] // each test binary uses its part

use imagefactory_domain::{
    BuildMethod, GitRef, GitUrl, ImageRef, InfrastructureType, MethodConfig,
};
use imagefactory_store::MIGRATOR;
use imagefactory_store::builds::{self, NewBuild};
use imagefactory_store::crypto::Cipher;
use imagefactory_store::projects::{self, NewProject};
use imagefactory_store::tenants::{self, NewTenant};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

pub struct Db {
    pub pool: PgPool,
    name: String,
    admin_url: String,
}

pub async fn database() -> Db {
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("if_store_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let opts: PgConnectOptions = admin_url.parse().unwrap();
    let pool = PgPool::connect(opts.database(&name).to_url_lossy().as_ref())
        .await
        .unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    Db {
        pool,
        name,
        admin_url,
    }
}

impl Db {
    pub async fn drop(self) {
        self.pool.close().await;
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

pub struct Fixture {
    pub tenant: Uuid,
    pub build: Uuid,
}

pub async fn new_tenant(pool: &PgPool, name: &str) -> tenants::Tenant {
    tenants::create(
        pool,
        NewTenant {
            name: name.into(),
            display_name: name.into(),
            max_concurrent_builds: None,
            allow_local_builds: false,
        },
    )
    .await
    .unwrap()
}

pub async fn one_build(pool: &PgPool) -> Fixture {
    let tenant = new_tenant(pool, "acme").await;
    let project = new_project(pool, tenant.id).await;
    let build = submit(pool, tenant.id, project, MethodConfig::default()).await;
    Fixture {
        tenant: tenant.id,
        build,
    }
}

/// A project of the tenant (`app`, no git credential).
pub async fn new_project(pool: &PgPool, tenant_id: Uuid) -> Uuid {
    let (cipher, _) = Cipher::random();
    projects::create(
        pool,
        &cipher,
        tenant_id,
        NewProject {
            name: "app".into(),
            git_url: GitUrl::parse("https://git.example/app.git").unwrap(),
            default_branch: GitRef::parse("main").unwrap(),
            git_credential: None,
        },
    )
    .await
    .unwrap()
    .id
}

/// A queued local kaniko build of the project, with this config.
pub async fn submit(
    pool: &PgPool,
    tenant_id: Uuid,
    project_id: Uuid,
    config: MethodConfig,
) -> Uuid {
    builds::submit(
        pool,
        &NewBuild {
            tenant_id,
            project_id,
            method: BuildMethod::Kaniko,
            infrastructure_type: InfrastructureType::Local,
            infrastructure_provider_id: None,
            registry_credential_id: None,
            git_ref: Some(GitRef::parse("v1.2").unwrap()),
            image: ImageRef::parse("r.example:5000/team/app:1").unwrap(),
            priority: 0,
            timeout_seconds: 60,
            created_by_token_id: None,
            config,
        },
    )
    .await
    .unwrap()
    .expect("the fixture's references are the tenant's")
    .id
}
