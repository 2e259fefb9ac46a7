//! The store-backed sink: idempotent log lines and resume positions for
//! re-attached executors.

use imagefactory_dispatch::sink::StoreSink;
use imagefactory_exec::{ExecutionSink, LogLine};
use uuid::Uuid;

use crate::helpers::*;

fn line(source: &str, position: i64) -> LogLine {
    LogLine {
        source: source.into(),
        position,
        line: format!("{source} line {position}"),
    }
}

#[tokio::test]
async fn log_positions_report_the_last_stored_line_per_source() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "sinky", 1).await;
    let build = submit(&db.pool, t, &[Spec::lasting(1)]).await[0];
    let execution = execution_row(&db.pool, build, t.0).await;
    let sink = StoreSink::new(db.pool.clone(), build, execution);

    assert!(sink.log_positions().await.unwrap().is_empty());
    sink.logs(&[
        line("clone/step-clone", 0),
        line("clone/step-clone", 1),
        line("build/step-build", 0),
    ])
    .await
    .unwrap();
    // A re-attached executor resending an overlapping window adds only the new line.
    sink.logs(&[line("clone/step-clone", 1), line("clone/step-clone", 2)])
        .await
        .unwrap();

    let positions = sink.log_positions().await.unwrap();
    assert_eq!(positions.get("clone/step-clone"), Some(&2));
    assert_eq!(positions.get("build/step-build"), Some(&0));
    assert_eq!(positions.len(), 2);
    let stored = count(
        &db.pool,
        &format!("SELECT count(*) FROM build_logs WHERE execution_id = '{execution}'"),
    )
    .await;
    assert_eq!(stored, 4);
    db.drop_db().await;
}

#[tokio::test]
async fn artifacts_are_stored_together_and_upserted_by_name() {
    use imagefactory_exec::{Artifact, ArtifactKind};
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "artsy", 1).await;
    let build = submit(&db.pool, t, &[Spec::lasting(1)]).await[0];
    let execution = execution_row(&db.pool, build, t.0).await;
    let sink = StoreSink::new(db.pool.clone(), build, execution);
    let artifact = |name: &str, value: &str, kind: ArtifactKind| Artifact {
        name: name.into(),
        value: value.into(),
        kind,
    };
    sink.artifact(&artifact("IMAGE_URL", "old", ArtifactKind::ImageUrl))
        .await
        .unwrap();
    sink.artifacts(&[
        artifact("IMAGE_URL", "r.example/app:1", ArtifactKind::ImageUrl),
        artifact("IMAGE_DIGEST", "sha256:1", ArtifactKind::ImageDigest),
        artifact("clone.commit", "abc", ArtifactKind::Result),
        artifact("clone.commit", "def", ArtifactKind::Result),
    ])
    .await
    .unwrap();
    sink.artifacts(&[]).await.unwrap();
    let stored: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT name, value, kind FROM build_artifacts WHERE execution_id = $1 ORDER BY name",
    )
    .bind(execution)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected = [
        ("IMAGE_DIGEST", "sha256:1", "image_digest"),
        ("IMAGE_URL", "r.example/app:1", "image_url"),
        ("clone.commit", "def", "result"),
    ];
    assert_eq!(
        stored,
        expected
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect::<Vec<_>>()
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_reported_together_are_all_stored_and_the_last_report_wins() {
    use imagefactory_dispatch::sink::reference_writer;
    use imagefactory_domain::ExecutorKind;
    use imagefactory_exec::ExecutionRef;
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "refs", 10).await;
    let builds = submit(&db.pool, t, &vec![Spec::lasting(1); 20]).await;
    let mut executions = Vec::new();
    for build in &builds {
        let execution = execution_row(&db.pool, *build, t.0).await;
        executions.push(execution);
    }
    let writer = reference_writer(db.pool.clone());
    let reference = |name: String| ExecutionRef {
        executor: ExecutorKind::Test,
        provider_id: None,
        namespace: Some("ns".into()),
        name: Some(name),
        uid: Some("uid".into()),
    };
    // All at once, and the first execution twice (a first and a second report).
    let sinks: Vec<StoreSink> = builds
        .iter()
        .zip(&executions)
        .map(|(b, e)| StoreSink::new(db.pool.clone(), *b, *e).with_reference_writer(writer.clone()))
        .collect();
    // Polled in order (join_all of fewer than 30), so the second report of
    // the first execution is queued after its first.
    let mut reports: Vec<(usize, ExecutionRef)> = (0..sinks.len())
        .map(|i| (i, reference(format!("run-{i}"))))
        .collect();
    reports.push((0, reference("run-0-again".into())));
    let reports = reports.iter().map(|(i, r)| sinks[*i].reference(r));
    for result in futures::future::join_all(reports).await {
        result.unwrap();
    }
    let stored: Vec<(Uuid, Option<String>, Option<String>, bool)> = sqlx::query_as(
        "SELECT id, pipeline_run_name, cluster_namespace, reference_at IS NOT NULL \
         FROM build_executions ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 20);
    for (id, name, namespace, referenced) in stored {
        let i = executions.iter().position(|e| *e == id).unwrap();
        let want = if i == 0 {
            "run-0-again".to_owned()
        } else {
            format!("run-{i}")
        };
        assert_eq!(
            (name.as_deref(), namespace.as_deref(), referenced),
            (Some(want.as_str()), Some("ns"), true)
        );
    }
    db.drop_db().await;
}

/// An attempt-1 execution row of `build`, as a claim writes it.
async fn execution_row(pool: &sqlx::PgPool, build: Uuid, tenant: Uuid) -> Uuid {
    let execution = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO build_executions (id, build_id, tenant_id, attempt, executor) VALUES ($1, $2, $3, 1, 'test')",
    )
    .bind(execution)
    .bind(build)
    .bind(tenant)
    .execute(pool)
    .await
    .unwrap();
    execution
}

/// The stored lines of an execution by (source, position).
async fn stored_lines(pool: &sqlx::PgPool, execution: Uuid) -> Vec<(String, i64, String)> {
    sqlx::query_as(
        "SELECT source, position, line FROM build_logs WHERE execution_id = $1 \
         ORDER BY source, position",
    )
    .bind(execution)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn text(source: &str, position: i64, line: &str) -> LogLine {
    LogLine {
        source: source.into(),
        position,
        line: line.into(),
    }
}

#[tokio::test]
async fn lines_with_nul_or_invalid_utf8_are_stored_replaced_with_the_rest_of_their_batch() {
    use imagefactory_store::executions::{
        NewLogLine, REPLACED_MARK, append_logs, log_text_from_bytes,
    };
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "nul", 1).await;
    let build = submit(&db.pool, t, &[Spec::lasting(1)]).await[0];
    let execution = execution_row(&db.pool, build, t.0).await;

    // Straight into the store: a NUL in a line (and in a source) of a batch.
    let rows = [
        NewLogLine {
            source: "s",
            position: 0,
            line: "before",
        },
        NewLogLine {
            source: "s",
            position: 1,
            line: "a\0b",
        },
        NewLogLine {
            source: "s\0x",
            position: 0,
            line: "odd source",
        },
        NewLogLine {
            source: "s",
            position: 2,
            line: "after",
        },
    ];
    assert_eq!(
        append_logs(&db.pool, build, execution, &rows)
            .await
            .unwrap(),
        4
    );

    // Through the sink, as an executor decodes a step's bytes.
    let sink = StoreSink::new(db.pool.clone(), build, execution);
    let decoded = log_text_from_bytes(b"bin \xff\xfe\0 end").into_owned();
    sink.logs(&[
        text("t", 0, "first"),
        text("t", 1, &decoded),
        text("t", 2, "nul \0 raw"),
        text("t", 3, "last"),
    ])
    .await
    .unwrap();

    let r = |s: &str| format!("{s}{REPLACED_MARK}");
    let expected: Vec<(String, i64, String)> = [
        ("s", 0, "before"),
        ("s", 1, &*r("a\u{FFFD}b")),
        ("s", 2, "after"),
        (&*r("s\u{FFFD}x"), 0, "odd source"),
        ("t", 0, "first"),
        ("t", 1, &*r("bin \u{FFFD}\u{FFFD}\u{FFFD} end")),
        ("t", 2, &*r("nul \u{FFFD} raw")),
        ("t", 3, "last"),
    ]
    .iter()
    .map(|(s, p, l)| (s.to_string(), *p, l.to_string()))
    .collect();
    assert_eq!(stored_lines(&db.pool, execution).await, expected);
    db.drop_db().await;
}

#[tokio::test]
async fn a_line_the_database_refuses_loses_only_itself_and_the_log_says_so() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "poison", 1).await;
    let build = submit(&db.pool, t, &[Spec::lasting(1)]).await[0];
    let execution = execution_row(&db.pool, build, t.0).await;
    // A refusal the sink cannot foresee (not NUL: that one is replaced).
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.line LIKE '%poison%' THEN RAISE EXCEPTION 'refused'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_poison BEFORE INSERT ON build_logs \
         FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let sink = StoreSink::new(db.pool.clone(), build, execution);
    let err = sink
        .logs(&[
            text("build/step-build", 0, "one"),
            text("build/step-build", 1, "poison"),
            text("build/step-build", 2, "three"),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1 log lines lost"), "{err}");
    let stored = stored_lines(&db.pool, execution).await;
    let lines: Vec<(&str, i64, &str)> = stored
        .iter()
        .map(|(s, p, l)| (s.as_str(), *p, l.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("build/step-build", 0, "one"),
            ("build/step-build", 2, "three"),
            (
                "imagefactory",
                0,
                "[imagefactory] 1 log line(s) of build/step-build could not be stored and are lost: \
                 the database refused them"
            ),
        ]
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_log_write_is_retried_while_the_database_is_unavailable() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "flaky", 1).await;
    let build = submit(&db.pool, t, &[Spec::lasting(1)]).await[0];
    let execution = execution_row(&db.pool, build, t.0).await;
    // The first two inserts fail as a database that is starting up does.
    sqlx::raw_sql(
        "CREATE SEQUENCE log_failures; \
         CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF nextval('log_failures') <= 2 THEN \
         RAISE EXCEPTION 'starting up' USING ERRCODE = '57P03'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER flaky BEFORE INSERT ON build_logs \
         FOR EACH STATEMENT EXECUTE FUNCTION flaky();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let sink = StoreSink::new(db.pool.clone(), build, execution);
    sink.logs(&[text("clone", 0, "a"), text("clone", 1, "b")])
        .await
        .unwrap();
    let stored = stored_lines(&db.pool, execution).await;
    assert_eq!(
        stored,
        vec![
            ("clone".to_string(), 0, "a".to_string()),
            ("clone".to_string(), 1, "b".to_string())
        ]
    );
    db.drop_db().await;
}

/// Issue 14 (3): a database restart while a build runs used to fail the
/// attempt at its first artifact or progress write ("saving artifacts
/// failed: error communicating with database"), and the retry ran the
/// build a second time. Every sink write now waits the outage out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_progress_and_references_wait_out_an_unavailable_database() {
    use imagefactory_domain::ExecutorKind;
    use imagefactory_exec::{Artifact, ArtifactKind, ExecutionRef};
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "restarting", 1).await;
    let build = submit(&db.pool, t, &[Spec::lasting(1)]).await[0];
    let execution = execution_row(&db.pool, build, t.0).await;
    // The first two writes to each table fail as a database starting up does.
    sqlx::raw_sql(
        "CREATE SEQUENCE artifact_failures; CREATE SEQUENCE execution_failures; \
         CREATE FUNCTION starting(seq text) RETURNS void LANGUAGE plpgsql AS $$ \
         BEGIN IF nextval(seq) <= 2 THEN \
         RAISE EXCEPTION 'starting up' USING ERRCODE = '57P03'; END IF; END $$; \
         CREATE FUNCTION flaky_artifacts() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM starting('artifact_failures'); RETURN NULL; END $$; \
         CREATE FUNCTION flaky_executions() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM starting('execution_failures'); RETURN NULL; END $$; \
         CREATE TRIGGER flaky BEFORE INSERT ON build_artifacts \
         FOR EACH STATEMENT EXECUTE FUNCTION flaky_artifacts(); \
         CREATE TRIGGER flaky BEFORE UPDATE ON build_executions \
         FOR EACH STATEMENT EXECUTE FUNCTION flaky_executions();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let sink = StoreSink::new(db.pool.clone(), build, execution);
    let artifact = |name: &str, value: &str| Artifact {
        name: name.into(),
        value: value.into(),
        kind: ArtifactKind::Result,
    };
    sink.artifacts(&[artifact("clone.commit", "abc")])
        .await
        .unwrap();
    sink.artifact(&artifact("clone.url", "https://git.example.com/a.git"))
        .await
        .unwrap();
    sink.progress("building").await.unwrap();
    sink.reference(&ExecutionRef {
        executor: ExecutorKind::Test,
        provider_id: None,
        namespace: Some("ns".into()),
        name: Some("run-1".into()),
        uid: Some("uid".into()),
    })
    .await
    .unwrap();
    let artifacts: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM build_artifacts WHERE execution_id = $1 ORDER BY name",
    )
    .bind(execution)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(artifacts, ["clone.commit", "clone.url"]);
    let (progress, name): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT message, pipeline_run_name FROM build_executions WHERE id = $1")
            .bind(execution)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(progress.as_deref(), Some("building"));
    assert_eq!(name.as_deref(), Some("run-1"));
    db.drop_db().await;
}
