//! The soak's accounting: every build the API accepted must reach a
//! terminal state with exactly one execution.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

/// How the accepted builds ended up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accounting {
    pub accepted: u64,
    /// Accepted but not in the database.
    pub missing: u64,
    pub terminal: u64,
    pub succeeded: u64,
    pub one_execution: u64,
}

impl Accounting {
    /// Every accepted build is there, ended, and ran exactly once.
    pub fn all_accounted(&self) -> bool {
        self.missing == 0 && self.terminal == self.accepted && self.one_execution == self.accepted
    }

    pub fn line(&self) -> String {
        format!(
            "builds: accepted={} missing={} terminal={} succeeded={} exactly_one_execution={}",
            self.accepted, self.missing, self.terminal, self.succeeded, self.one_execution
        )
    }
}

/// Counts straight from the database (the API's view of one build at a
/// time would take as long as the soak).
pub async fn account(pool: &PgPool, ids: &[Uuid]) -> Result<Accounting, sqlx::Error> {
    let (found, terminal, succeeded, one): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE b.status IN ('succeeded', 'failed', 'cancelled', 'timed_out')),
                count(*) FILTER (WHERE b.status = 'succeeded'),
                count(*) FILTER (WHERE (SELECT count(*) FROM build_executions e WHERE e.build_id = b.id) = 1)
         FROM builds b WHERE b.id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(pool)
    .await?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    let accepted = ids.len() as u64;
    Ok(Accounting {
        accepted,
        missing: accepted.saturating_sub(n(found)),
        terminal: n(terminal),
        succeeded: n(succeeded),
        one_execution: n(one),
    })
}

/// Waits (up to `bound`) for every accepted build to end; the accounting
/// when they have or the bound ran out.
pub async fn drain(
    pool: &PgPool,
    ids: &[Uuid],
    bound: Duration,
) -> Result<Accounting, sqlx::Error> {
    let deadline = Instant::now() + bound;
    loop {
        let a = account(pool, ids).await?;
        if a.terminal + a.missing >= a.accepted || Instant::now() >= deadline {
            return Ok(a);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_lost_unfinished_or_run_twice_is_not_accounted_for() {
        let all = Accounting {
            accepted: 3,
            missing: 0,
            terminal: 3,
            succeeded: 3,
            one_execution: 3,
        };
        assert!(all.all_accounted());
        for broken in [
            Accounting { missing: 1, ..all },
            Accounting { terminal: 2, ..all },
            Accounting {
                one_execution: 2,
                ..all
            },
        ] {
            assert!(!broken.all_accounted(), "{broken:?}");
        }
    }
}
