//! `build logs -f` across a server restart: serve is killed mid-stream and
//! started again on the same port; the client reconnects with
//! `Last-Event-ID` and shows every line exactly once.

use std::time::Duration;

use crate::harness::{World, rule};

#[tokio::test]
async fn logs_follow_shows_every_line_once_across_a_server_restart() {
    // The build step writes 40 numbered lines over 10 s of real time; the
    // build runs on a standalone dispatcher, so it goes on while serve is down.
    let numbered: Vec<String> = (1..=40).map(|i| format!("progress line {i:02}")).collect();
    let mut world = World::start(
        vec![rule("docker-build", |r| {
            r.step = Some("build".into());
            r.duration = Some("200s".into());
            r.logs = Some(numbered.clone());
        })],
        true,
    )
    .await;
    let cli = world.cli();
    let submitted = cli
        .run(&[
            "build",
            "submit",
            "--project",
            &world.project,
            "--method",
            "docker",
            "--image",
            "registry.example.com/team/web:2.0",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(submitted.code(), 0, "{submitted:?}");
    let id = submitted.json()["id"].as_str().unwrap().to_owned();

    let running = world
        .http
        .api
        .as_token(&world.token)
        .poll_build(id.parse().unwrap(), &["running"], Duration::from_secs(60))
        .await;
    if running.is_err() {
        panic!(
            "not running: {running:?}\n{}",
            world.dispatcher.as_ref().unwrap().output()
        );
    }
    let mut follow = cli.spawn(&["build", "logs", &id, "-f"]);
    follow
        .wait_for_line("progress line 05", Duration::from_secs(120))
        .await;
    let before = follow.lines();
    world.restart_serve().await;
    let ran = follow.finish(Duration::from_secs(120)).await;
    assert_eq!(ran.code(), 0, "the build succeeded: {ran:?}");
    let seen: Vec<String> = ran
        .lines()
        .iter()
        .map(|l| l.split_once("] ").map_or(*l, |(_, t)| t).to_owned())
        .collect();
    let stored = world.plain_log(&id).await;
    let differs = seen.iter().zip(&stored).position(|(a, b)| a != b);
    assert_eq!(
        seen,
        stored,
        "each line once, in order; first difference at {differs:?}; {} vs {} lines",
        seen.len(),
        stored.len()
    );
    for line in &numbered {
        assert_eq!(seen.iter().filter(|l| *l == line).count(), 1, "{line}");
    }
    assert!(
        !before.iter().any(|l| l.ends_with("progress line 40")),
        "serve was killed before the last line: {before:?}"
    );
}
