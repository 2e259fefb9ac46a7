//! Every write of `builds.status` in the repository's production code and
//! migrations is one of the known transition sites, and each takes its
//! transition from the domain (`imagefactory_domain::Transition`): the value
//! written is the transition's `to` and the statement is guarded by its
//! `from` states. A new `UPDATE builds SET status = …` anywhere else fails
//! here; the transitions test (`crates/dispatch/tests/dispatch/transitions.rs`)
//! checks what each site does against the domain's table.

mod scan;

use scan::normalize;
use std::path::{Path, PathBuf};

/// (file relative to `crates/`, enclosing function, value written).
const KNOWN: &[(&str, &str, &str)] = &[
    ("store/src/builds.rs", "cancel", "{to}"),
    ("store/src/builds.rs", "retry", "{to}"),
    ("store/src/queue.rs", "finish", "{to}"),
    ("store/src/queue.rs", "cancel_requested_queued", "{to}"),
    (
        "store/migrations/0035_claim_without_statistics.sql",
        "claim_queued_builds",
        "p_claim_to",
    ),
    (
        "store/migrations/0035_claim_without_statistics.sql",
        "claim_queued_builds",
        "p_reject_to",
    ),
];

#[derive(Debug, PartialEq)]
struct Site {
    file: String,
    function: String,
    value: String,
    /// The rest of the statement after its SET clause (lowercase).
    rest: String,
}

/// The name after the last `keyword` before `at`.
fn enclosing(text: &str, at: usize, keyword: &str) -> String {
    text[..at]
        .rfind(keyword)
        .map(|i| {
            text[i + keyword.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .unwrap_or_default()
}

fn end_of_clause(s: &str) -> usize {
    [" where ", " from ", " returning "]
        .iter()
        .filter_map(|k| s.find(k))
        .min()
        .unwrap_or(s.len())
}

/// Status assignments of `UPDATE builds [alias] SET …` statements in `text`.
fn sites(file: &str, text: &str, function_keyword: &str) -> Vec<Site> {
    let text = normalize(text);
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("update builds ") {
        let at = from + i;
        from = at + 1;
        let after = &text[at + "update builds ".len()..];
        // An optional alias, then SET.
        let Some(set) = after.find("set ").filter(|s| *s <= 3) else {
            continue;
        };
        let clause = &after[set + 4..];
        let end = end_of_clause(clause);
        for assignment in clause[..end].split(',') {
            let Some((column, value)) = assignment.split_once('=') else {
                continue;
            };
            let column = column.trim();
            let column = column.rsplit('.').next().unwrap_or(column);
            if column == "status" {
                found.push(Site {
                    file: file.to_owned(),
                    function: enclosing(&text, at, function_keyword),
                    value: value.trim().to_owned(),
                    rest: clause[end..].to_owned(),
                });
            }
        }
    }
    found
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn relative(path: &Path) -> String {
    path.strip_prefix(crates_dir())
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

/// Sites in every crate's `src` and in the migrations.
fn all_sites() -> (Vec<Site>, Vec<(String, String)>) {
    let mut sources = Vec::new();
    for krate in std::fs::read_dir(crates_dir()).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            files(&src, "rs", &mut sources);
        }
    }
    let mut migrations = Vec::new();
    files(
        &crates_dir().join("store/migrations"),
        "sql",
        &mut migrations,
    );
    migrations.sort();
    let mut found = Vec::new();
    for path in &sources {
        let text = std::fs::read_to_string(path).unwrap();
        found.extend(sites(&relative(path), &text, "fn "));
    }
    let mut sql = Vec::new();
    for path in &migrations {
        let text = std::fs::read_to_string(path).unwrap();
        found.extend(sites(&relative(path), &text, "function "));
        sql.push((relative(path), normalize(&text)));
    }
    assert!(!sources.is_empty() && !sql.is_empty(), "no files found");
    (found, sql)
}

/// A function defined by a migration is history once a later migration
/// drops it: its writes no longer run.
fn dropped_later(site: &Site, migrations: &[(String, String)]) -> bool {
    let drop = format!("drop function {}(", site.function);
    migrations
        .iter()
        .skip_while(|(file, _)| *file != site.file)
        .skip(1)
        .any(|(_, text)| text.contains(&drop))
}

#[test]
fn every_status_write_is_a_known_transition_site() {
    let (found, migrations) = all_sites();
    let live: Vec<&Site> = found
        .iter()
        .filter(|s| !(s.file.ends_with(".sql") && dropped_later(s, &migrations)))
        .collect();
    let mut got: Vec<(&str, &str, &str)> = live
        .iter()
        .map(|s| (s.file.as_str(), s.function.as_str(), s.value.as_str()))
        .collect();
    got.sort();
    let mut want = KNOWN.to_vec();
    want.sort();
    assert_eq!(
        got, want,
        "status writes outside the known transition sites; a new one must take \
         its Transition from the domain (store::status::guard) and be listed here \
         and in the dispatch transitions test"
    );
    for site in live {
        let guard = match site.value.as_str() {
            "{to}" => "status in ({from})".to_owned(),
            param => format!(
                "any (p_{}_from)",
                param.trim_start_matches("p_").trim_end_matches("_to")
            ),
        };
        let statement = site.rest.split('"').next().unwrap_or_default();
        assert!(
            statement.contains(&guard),
            "{} {}: the status write is not guarded by its transition's sources ({guard}): {statement}",
            site.file,
            site.function
        );
    }
}

#[test]
fn the_scanner_finds_writes_however_they_are_spelled() {
    let rust = "fn sneaky() { sqlx::query(\"UPDATE builds b \\\n  SET updated_at = now(), b.status = 'failed' WHERE id = $1\") }";
    let found = sites("x.rs", rust, "fn ");
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].function.as_str(), found[0].value.as_str()),
        ("sneaky", "'failed'")
    );
    // Other columns named like it are not status writes.
    let other =
        "fn f() { \"UPDATE builds SET provider_status = 'x', status_note = 'y' WHERE true\" }";
    assert!(sites("x.rs", other, "fn ").is_empty());
    // A function a later migration drops is history.
    let site = &sites(
        "a.sql",
        "CREATE FUNCTION f() AS $$ UPDATE builds SET status = 'x' $$",
        "function ",
    )[0];
    let migrations = vec![
        ("a.sql".to_owned(), String::new()),
        ("b.sql".to_owned(), "drop function f(text);".to_owned()),
    ];
    assert!(dropped_later(site, &migrations));
    assert!(!dropped_later(site, &migrations[..1]));
}
