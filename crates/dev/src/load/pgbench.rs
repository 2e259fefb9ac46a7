//! The raw PostgreSQL figure printed beside the API's: `pgbench` inserting
//! one row per transaction into a table shaped like `builds`, on the same
//! server, in the same run.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::PgPool;

const TABLE: &str = "load_pgbench_builds";

/// One single-row INSERT per transaction, the columns a submission sets.
fn script() -> String {
    format!(
        "INSERT INTO {TABLE} (id, tenant_id, project_id, method, infrastructure_type, git_url, \
         git_ref, image) VALUES (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', \
         '00000000-0000-0000-0000-000000000002', 'docker', 'kubernetes', \
         'https://git.example.com/load/app.git', 'main', 'registry.example.com/load/app:1');\n"
    )
}

/// The `tps = …` figure of pgbench's report.
pub fn parse_tps(report: &str) -> Option<f64> {
    report
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tps = "))
        .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Inserts per second with `clients` connections for `duration`; the table
/// (with the same defaults, checks and indexes as `builds`) is dropped after.
pub async fn insert_rate(
    pool: &PgPool,
    database_url: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    sqlx::query(&format!(
        "CREATE TABLE {TABLE} (LIKE builds INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
    ))
    .execute(pool)
    .await
    .context("creating the pgbench table")?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("insert.sql");
    std::fs::write(&path, script())?;
    let secs = duration.as_secs().max(1).to_string();
    let clients = clients.to_string();
    let path = path.display().to_string();
    let url = database_url.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("pgbench")
            .args([
                "-n", "-c", &clients, "-j", "2", "-T", &secs, "-f", &path, &url,
            ])
            .output()
    })
    .await?
    .context("running pgbench (installed with PostgreSQL's client tools)")?;
    sqlx::query(&format!("DROP TABLE {TABLE}"))
        .execute(pool)
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_tps(&stdout).with_context(|| format!("no `tps = ` in pgbench's report:\n{stdout}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tps_is_read_from_either_report_format() {
        // PostgreSQL 15.
        let v15 = "latency average = 2.1 ms\n\
                   initial connection time = 12.3 ms\n\
                   tps = 15234.567890 (without initial connection time)\n";
        assert_eq!(parse_tps(v15), Some(15234.56789));
        // PostgreSQL 13 and older print two lines.
        let v13 = "tps = 900.5 (including connections establishing)\n\
                   tps = 910.25 (excluding connections establishing)\n";
        assert_eq!(parse_tps(v13), Some(900.5));
        assert_eq!(parse_tps("pgbench: error"), None);
    }

    #[test]
    fn the_script_inserts_one_row_into_the_bench_table() {
        let s = script();
        assert_eq!(s.matches("INSERT INTO load_pgbench_builds").count(), 1);
        assert_eq!(s.lines().count(), 1);
    }
}
