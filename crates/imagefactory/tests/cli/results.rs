//! `build submit --follow`: state changes and step lines in order, and the
//! exit code of the build's result (README "Command-line client").

use std::time::Duration;

use crate::harness::{World, rule};

const PATIENCE: Duration = Duration::from_secs(120);

/// The lines a followed build printed for its log: `[source] line`.
fn log_lines(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with('['))
        .map(|l| l.split_once("] ").map_or("", |(_, text)| text).to_owned())
        .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn position(lines: &[&str], f: impl Fn(&str) -> bool, what: &str) -> usize {
    lines
        .iter()
        .position(|l| f(l))
        .unwrap_or_else(|| panic!("no {what} in {lines:#?}"))
}

#[tokio::test]
async fn submit_follow_shows_the_build_and_exits_with_its_result() {
    // kaniko builds fail in their first step; buildx builds take hours.
    let world = World::start(
        vec![
            rule("kaniko", |r| {
                r.exit_code = Some(1);
                r.logs = Some(vec!["error: boom".into()]);
            }),
            rule("buildx", |r| r.duration = Some("2h".into())),
        ],
        false,
    )
    .await;
    let cli = world.cli();
    let submit = |method: &'static str| {
        vec![
            "build",
            "submit",
            "--project",
            &world.project,
            "--method",
            method,
            "--image",
            "registry.example.com/team/web:1.0",
            "--follow",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<String>>()
    };

    // Success: queued, running, every step line in log order, succeeded; 0.
    let ran = cli.run(&args(&submit("docker"))).await;
    assert_eq!(ran.code(), 0, "{ran:?}");
    let lines = ran.lines();
    let id = lines[0]
        .strip_prefix("build ")
        .and_then(|l| l.strip_suffix(" submitted"))
        .unwrap_or_else(|| panic!("first line names the build: {lines:#?}"));
    let queued = position(&lines, |l| l == "state: queued", "queued");
    let running = position(&lines, |l| l == "state: running", "running");
    let clone = position(&lines, |l| l.starts_with("[clone/"), "a clone step line");
    let build = position(&lines, |l| l.starts_with("[build/"), "a build step line");
    let done = position(&lines, |l| l == "state: succeeded", "succeeded");
    assert!(
        queued < running && running < clone && clone < build && build < done,
        "{lines:#?}"
    );
    assert_eq!(
        done,
        lines
            .iter()
            .rposition(|l| l.starts_with("state: "))
            .unwrap()
    );
    // Exactly the stored log, each line once, in its order.
    assert_eq!(log_lines(&lines), world.plain_log(id).await, "{lines:#?}");
    assert_eq!(world.build(id).await["status"], "succeeded");
    // The plain log, as stored.
    let plain = cli.run(&["build", "logs", id]).await;
    assert_eq!(plain.code(), 0, "{plain:?}");
    assert_eq!(plain.lines(), world.plain_log(id).await, "{plain:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("IMAGE_DIGEST: sha256:")),
        "the image digest is shown: {lines:#?}"
    );

    // Failure: the failing step's line, failed, the error; exit 1.
    let ran = cli.run(&args(&submit("kaniko"))).await;
    assert_eq!(ran.code(), 1, "{ran:?}");
    let lines = ran.lines();
    let boom = position(
        &lines,
        |l| l.starts_with("[build/") && l.ends_with("error: boom"),
        "the step's line",
    );
    let failed = position(&lines, |l| l == "state: failed", "failed");
    assert!(boom < failed, "{lines:#?}");
    assert!(lines[failed + 1].starts_with("error: "), "{lines:#?}");

    // Cancelled while running: exit 3.
    let mut running = cli.spawn(&args(&submit("buildx")));
    running.wait_for_line("state: running", PATIENCE).await;
    let id = running.lines()[0]
        .trim_start_matches("build ")
        .trim_end_matches(" submitted")
        .to_owned();
    let cancel = cli.run(&["build", "cancel", &id]).await;
    assert_eq!(cancel.code(), 0, "{cancel:?}");
    let ran = running.finish(PATIENCE).await;
    assert_eq!(ran.code(), 3, "{ran:?}");
    assert_eq!(
        ran.lines().iter().rfind(|l| l.starts_with("state: ")),
        Some(&"state: cancelled")
    );

    // Timed out: exit 4.
    let mut argv = submit("buildx");
    argv.extend(["--timeout".to_owned(), "20s".to_owned()]);
    let ran = cli.run(&args(&argv)).await;
    assert_eq!(ran.code(), 4, "{ran:?}");
    assert!(ran.lines().contains(&"state: timed_out"), "{ran:?}");
}

#[tokio::test]
async fn on_a_terminal_a_live_status_line_and_colours() {
    // The build step takes 2 s of real time: the status line is drawn.
    let world = World::start(
        vec![rule("docker-build", |r| {
            r.step = Some("build".into());
            r.duration = Some("40s".into());
            r.logs = Some(vec![
                "STEP 1/2: FROM alpine".into(),
                "STEP 2/2: RUN make".into(),
            ]);
        })],
        false,
    )
    .await;
    let ran = world
        .cli()
        .run_in_terminal(&[
            "build",
            "submit",
            "--project",
            &world.project,
            "--method",
            "docker",
            "--image",
            "registry.example.com/team/web:4.0",
            "--follow",
        ])
        .await;
    assert_eq!(ran.code(), 0, "{ran:?}");
    let shown = &ran.stdout;
    // Colours: the final state in bold green.
    assert!(
        shown.contains("\u{1b}[32m\u{1b}[1msucceeded")
            || shown.contains("\u{1b}[1m\u{1b}[32msucceeded"),
        "{shown:?}"
    );
    // The status line: state, current task/step, line count.
    assert!(
        shown.contains(" · build/build · ") && shown.contains(" lines · "),
        "{shown:?}"
    );
    // Every log line above it, once, whatever the redraws.
    let id = shown
        .split("build ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the build id");
    for line in world.plain_log(id).await {
        assert_eq!(
            shown.matches(line.as_str()).count(),
            1,
            "{line:?} in {shown:?}"
        );
    }
}
