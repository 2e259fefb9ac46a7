//! Status writes. Every statement that changes `builds.status` takes its
//! [`Transition`] from the domain: the states it may start from become the
//! statement's guard and the state it writes comes from the same entry, so
//! `imagefactory_domain::Transition` is the one table of the state machine.
//! `tests/status_writes.rs` fails when a status write appears anywhere else.

use imagefactory_domain::Transition;

/// A transition as SQL: `from` is a list of quoted literals for `status IN
/// (…)`, `to` one quoted literal. The values are the domain's fixed
/// spellings, never input, and literals (not parameters) let the planner
/// match the partial indexes on `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Guard {
    pub from: String,
    pub to: String,
}

/// The guard of `t`, or an error for a transition with no source state
/// (a finish to a non-terminal status), which no statement may write.
pub(crate) fn guard(t: Transition) -> Result<Guard, sqlx::Error> {
    if t.from().is_empty() {
        return Err(sqlx::Error::Protocol(format!(
            "{t:?} is not a transition of the build state machine"
        )));
    }
    let quote = |s: imagefactory_domain::BuildStatus| format!("'{}'", s.as_str());
    Ok(Guard {
        from: t
            .from()
            .iter()
            .map(|s| quote(*s))
            .collect::<Vec<_>>()
            .join(", "),
        to: quote(t.to()),
    })
}

/// `from` as a text array for a bind parameter (the claim function's guards).
pub(crate) fn sources(t: Transition) -> Vec<&'static str> {
    t.from().iter().map(|s| s.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagefactory_domain::BuildStatus;

    #[test]
    fn guards_come_from_the_domain_table() {
        let g = guard(Transition::Retry).unwrap();
        assert_eq!(g.from, "'failed', 'cancelled', 'timed_out'");
        assert_eq!(g.to, "'queued'");
        assert_eq!(sources(Transition::Claim), vec!["queued"]);
        let err = guard(Transition::Finish(BuildStatus::Running)).unwrap_err();
        assert!(err.to_string().contains("not a transition"), "{err}");
    }
}
