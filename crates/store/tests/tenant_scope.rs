//! "Every tenant-scoped query filters by the tenant" (ARCHITECTURE.md,
//! Invariants) as a static check: each `pub` function in `crates/store/src`
//! whose statements read or write a table holding tenants' data takes the
//! tenant (`tenant_id: Uuid` or `owner: Owner`), or is listed in
//! [`UNSCOPED`] with the reason it may not. A new unscoped reader fails here
//! (statements inside the migrations' SQL functions, such as
//! `claim_queued_builds`, are not seen: they are the dispatcher's);
//! that the parameter reaches the `WHERE` is held by the API tests
//! (`crates/api/tests/api/invariants.rs`, `isolation.rs`).

mod scan;

use scan::normalize;
use std::path::Path;

/// Tables whose rows belong to one tenant (directly or through their build).
const TENANT_TABLES: &[&str] = &[
    "api_tokens",
    "projects",
    "registry_credentials",
    "infrastructure_providers",
    "builds",
    "build_configs",
    "build_executions",
    "build_logs",
    "build_artifacts",
];

/// (file in `crates/store/src`, function, why it takes no tenant).
const UNSCOPED: &[(&str, &str, &str)] = &[
    (
        "builds.rs",
        "active_counts",
        "the metrics scrape's one aggregate over every tenant (counts by state, method and tenant \
         id); operator-only `/metrics`, no tenant reads it through the API",
    ),
    (
        "builds.rs",
        "submit_many",
        "inserts each `NewBuild::tenant_id` (`submit` is it for one build), its references read \
         with that tenant; the composite foreign keys (tenant_id, project_id) and (tenant_id, \
         registry_credential_id) refuse another tenant's references",
    ),
    (
        "tokens.rs",
        "authenticate",
        "finds the tenant of a bearer token: no tenant is known before it",
    ),
    (
        "providers.rs",
        "default_kubernetes",
        "reads global providers only (`is_global`)",
    ),
    (
        "dispatchers.rs",
        "list",
        "platform admin: every dispatcher with a count of the leases it holds",
    ),
    (
        "dispatchers.rs",
        "queue_depth",
        "platform admin: the queue of every tenant",
    ),
    (
        "queue.rs",
        "take_over_expired",
        "dispatcher: takes over expired leases of every tenant",
    ),
    (
        "queue.rs",
        "renew_leases",
        "dispatcher: its own leases (`lease_owner`)",
    ),
    (
        "queue.rs",
        "release_leases",
        "dispatcher: its own leases (`lease_owner`)",
    ),
    (
        "queue.rs",
        "finish",
        "dispatcher: a build it holds under its lease (`lease_owner`)",
    ),
    (
        "queue.rs",
        "cancel_requested_queued",
        "dispatcher: cancels queued builds of every tenant whose cancel was requested",
    ),
    (
        "executions.rs",
        "record_reference",
        "dispatcher: an execution it started, by execution id",
    ),
    (
        "executions.rs",
        "record_references",
        "dispatcher: executions it started, by execution id",
    ),
    (
        "executions.rs",
        "append_logs",
        "dispatcher: lines of an execution it runs",
    ),
    (
        "executions.rs",
        "append_notice",
        "dispatcher: a line of an execution it runs",
    ),
    (
        "executions.rs",
        "last_log_positions",
        "dispatcher: where an execution it re-attaches to left its logs",
    ),
    (
        "executions.rs",
        "put_artifact",
        "dispatcher: results of an execution it runs",
    ),
    (
        "executions.rs",
        "put_artifacts",
        "dispatcher: results of an execution it runs",
    ),
    (
        "executions.rs",
        "set_progress",
        "dispatcher: an execution it runs",
    ),
    (
        "executions.rs",
        "list_for_build",
        "dispatcher: executions of a build it holds",
    ),
    (
        "executions.rs",
        "load_inputs",
        "dispatcher: a build it claimed; the row's tenant scopes every join",
    ),
    (
        "executions.rs",
        "load_inputs_many",
        "dispatcher: builds it claimed; each row's tenant scopes every join",
    ),
];

/// `const NAME: &str = "…";` items of a file, so `{NAME}` in a statement
/// can be read as the text it stands for.
fn string_consts(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("const ") {
        let rest = &text[i + "const ".len()..];
        let Some((name, rest)) = rest.split_once(": &str =") else {
            continue;
        };
        let Some(end) = rest.find("\";") else {
            continue;
        };
        if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            out.push((name.to_owned(), rest[..end].to_owned()));
        }
    }
    out
}

#[derive(Debug)]
struct Function {
    name: String,
    signature: String,
    body: String,
}

/// Every `pub async fn` of a Rust source: its signature (up to the body's
/// `{`) and its body (up to the `}` at the function's own indentation).
fn functions(text: &str) -> Vec<Function> {
    let consts = string_consts(text);
    let mut out = Vec::new();
    for (i, _) in text.match_indices("pub async fn ") {
        let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
        let indent = &text[line_start..i];
        let rest = &text[i + "pub async fn ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let open = rest.find('{').expect("a body");
        let close = format!("\n{indent}}}");
        let end = rest[open..].find(&close).map_or(rest.len(), |e| open + e);
        let mut body = rest[open..end].to_owned();
        for (name, value) in &consts {
            body = body.replace(&format!("{{{name}}}"), value);
        }
        out.push(Function {
            name,
            signature: normalize(&rest[..open]),
            body: normalize(&body),
        });
    }
    out
}

/// Tenant tables a normalized statement text reads or writes.
fn tables_touched(body: &str) -> Vec<&'static str> {
    TENANT_TABLES
        .iter()
        .copied()
        .filter(|table| {
            ["from", "join", "update", "into"].iter().any(|kw| {
                let needle = format!("{kw} {table}");
                body.match_indices(&needle).any(|(i, _)| {
                    body[i + needle.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
                })
            })
        })
        .collect()
}

fn takes_tenant(signature: &str) -> bool {
    signature.contains("tenant_id: uuid") || signature.contains("owner: owner")
}

/// (file, function, tables) of every unscoped function touching tenant data.
fn unscoped(file: &str, text: &str) -> Vec<(String, String, Vec<&'static str>)> {
    functions(text)
        .into_iter()
        .filter(|f| !takes_tenant(&f.signature))
        .filter_map(|f| {
            let tables = tables_touched(&f.body);
            (!tables.is_empty()).then(|| (file.to_owned(), f.name, tables))
        })
        .collect()
}

fn store_sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_store_function_on_tenant_data_takes_the_tenant_or_says_why_not() {
    let sources = store_sources();
    let mut scoped = 0;
    let mut found = Vec::new();
    for (file, text) in &sources {
        scoped += functions(text)
            .iter()
            .filter(|f| takes_tenant(&f.signature) && !tables_touched(&f.body).is_empty())
            .count();
        found.extend(unscoped(file, text));
    }
    // The scan sees the tenant-scoped readers too (it is not blind).
    assert!(scoped >= 20, "only {scoped} scoped functions found");
    let missing: Vec<_> = found
        .iter()
        .filter(|(file, name, _)| !UNSCOPED.iter().any(|(f, n, _)| f == file && n == name))
        .collect();
    assert!(
        missing.is_empty(),
        "store functions touching tenant tables without a tenant parameter \
         (take `tenant_id: Uuid` and filter by it, or list them in UNSCOPED \
         with the reason): {missing:#?}"
    );
    let stale: Vec<_> = UNSCOPED
        .iter()
        .filter(|(f, n, _)| !found.iter().any(|(file, name, _)| file == f && name == n))
        .collect();
    assert!(
        stale.is_empty(),
        "UNSCOPED entries that no longer apply: {stale:#?}"
    );
}

#[test]
fn the_scan_flags_a_reader_without_a_tenant() {
    let text = r#"
const COLUMNS: &str = "id, line";

pub async fn get_config(pool: &PgPool, build_id: Uuid) -> StoreResult<MethodConfig> {
    sqlx::query_as("SELECT dockerfile FROM build_configs WHERE build_id = $1")
}

pub async fn log_cursor(pool: &PgPool, tenant_id: Uuid, build_id: Uuid) -> StoreResult<()> {
    sqlx::query_as("SELECT tx FROM build_logs l JOIN builds b ON b.id = l.build_id")
}

impl Queue {
    pub async fn lines(&self, id: Uuid) -> StoreResult<()> {
        let sql = format!("SELECT {COLUMNS} FROM build_logs\n WHERE id = $1");
    }
}

pub async fn builds_summary(pool: &PgPool) -> StoreResult<()> {
    sqlx::query("SELECT count(*) FROM builds_summary_view")
}
"#;
    let found = unscoped("x.rs", text);
    let names: Vec<&str> = found.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names, ["get_config", "lines"]);
    assert_eq!(found[0].2, ["build_configs"]);
    assert_eq!(found[1].2, ["build_logs"]);
}
