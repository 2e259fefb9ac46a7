//! Step output that is not text: a NUL byte in a step's log is stored
//! replaced, and neither its task's other lines nor later tasks' are lost.

use imagefactory_store::executions::REPLACED_MARK;
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_step_output_is_stored_replaced_and_no_other_line_is_lost() {
    let app = TestApp::start(Options {
        rules: vec![
            rule(
                "clone",
                None,
                None,
                &["cloning", "bad \0 byte", "cloned"],
                None,
            ),
            rule("build", None, None, &["building", "built"], None),
        ],
        ..Default::default()
    })
    .await;
    let id = app.submit(json!({"method": "kaniko"})).await;
    let build = app.wait_terminal(id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    let logs = app.logs(id).await;
    let replaced = format!("bad \u{FFFD} byte{REPLACED_MARK}");
    for wanted in ["cloning", replaced.as_str(), "cloned", "building", "built"] {
        assert!(
            logs.iter().any(|l| l == wanted),
            "{wanted:?} not in {logs:?}"
        );
    }
    let position = |wanted: &str| logs.iter().position(|l| l == wanted).unwrap();
    assert!(position("cloning") < position(&replaced));
    assert!(position(&replaced) < position("cloned"));
    assert!(!logs.iter().any(|l| l.contains("lost")), "{logs:?}");
    app.finish().await;
}
