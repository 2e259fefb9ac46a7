//! Headless Chromium (Debian's `chromium` + `chromium-driver`) driven over
//! WebDriver: a keyboard-only user signs in, watches a running build's log
//! arrive live, cancels it, and tests a provider; on every page Tab reaches
//! every action. Screenshots go to `target/test-output/web/`.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use crate::harness::{Env, PATIENCE};

const TAB: char = '\u{e004}';
const ENTER: char = '\u{e007}';

/// What identifies the focused element: tag and id, link target, name,
/// label or text (rows and buttons re-rendered by the live refresh keep it).
const KEY_OF: &str = "const key = (e) => e.tagName + '|' + (e.id || e.getAttribute('href') || \
    e.getAttribute('name') || e.getAttribute('aria-label') || e.textContent.trim());";

struct Driver {
    chromedriver: Child,
    client: Client,
    shots: PathBuf,
}

impl Driver {
    async fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let chromedriver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian package chromium-driver; .ci/run installs it)");
        let mut options = json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                                          "--disable-gpu", "--window-size=1280,1024"]});
        if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if started.elapsed() > Duration::from_secs(30) => {
                    panic!("no WebDriver session from chromedriver: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output/web");
        std::fs::create_dir_all(&shots).unwrap();
        Driver {
            chromedriver,
            client,
            shots,
        }
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    async fn press(&self, key: char) {
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.client.perform_actions(keys).await.unwrap();
    }

    async fn type_text(&self, text: &str) {
        let mut keys = KeyActions::new("keyboard".into());
        for c in text.chars() {
            keys = keys
                .then(KeyAction::Down { value: c })
                .then(KeyAction::Up { value: c });
        }
        self.client.perform_actions(keys).await.unwrap();
    }

    async fn focused(&self) -> String {
        let script = format!(
            "{KEY_OF} const e = document.activeElement; return (!e || e === document.body) ? '' : key(e);"
        );
        self.js(&script).await.as_str().unwrap_or("").to_owned()
    }

    /// Every action on the page: links, buttons, fields, focusable regions.
    async fn actions(&self) -> BTreeSet<String> {
        let script = format!(
            "{KEY_OF} return Array.from(document.querySelectorAll(\
             'a[href], button, input:not([type=hidden]), select, [tabindex=\"0\"]')).map(key);"
        );
        let keys = self.js(&script).await;
        keys.as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect()
    }

    /// Tab from the top of the page until `target` has focus.
    async fn tab_to(&self, target: &str) {
        self.js("document.activeElement && document.activeElement.blur();")
            .await;
        let mut seen = Vec::new();
        for _ in 0..60 {
            self.press(TAB).await;
            let now = self.focused().await;
            if now == target {
                return;
            }
            seen.push(now);
        }
        panic!("Tab never reached {target}; focus went through {seen:?}");
    }

    /// Tabs through the whole page: every action must get focus.
    async fn tab_reaches_every_action(&self, page: &str) {
        let wanted = self.actions().await;
        self.js("document.activeElement && document.activeElement.blur();")
            .await;
        let mut reached = BTreeSet::new();
        for _ in 0..wanted.len() + 10 {
            self.press(TAB).await;
            reached.insert(self.focused().await);
            if wanted.is_subset(&reached) {
                return;
            }
        }
        let missing: Vec<_> = wanted.difference(&reached).collect();
        panic!("{page}: Tab never reached {missing:?} (reached {reached:?})");
    }

    async fn wait_until(&self, name: &str, condition: &str) {
        let started = Instant::now();
        while started.elapsed() < PATIENCE {
            if self.js(&format!("return Boolean({condition});")).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.shot(&format!("timeout-{name}")).await;
        let body = self.js("return document.body.innerText;").await;
        panic!("{name}: `{condition}` never held; page:\n{body}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
    }
}

const LOG_LINES: &str = "document.querySelectorAll('#log .log-line').length";

#[tokio::test]
async fn a_keyboard_user_signs_in_watches_the_log_live_cancels_and_tests_a_provider() {
    let env = Env::start().await;
    env.api().create_provider("own-sim", env.sim_config()).await;
    let build = env.submit().await;
    let d = Driver::start().await;

    d.client.goto(&env.base).await.unwrap();
    d.wait_until("sign-in page", "location.pathname === '/sign-in'")
        .await;
    d.tab_reaches_every_action("sign-in").await;
    d.shot("1-sign-in").await;
    d.tab_to("INPUT|token").await;
    d.type_text(&env.token).await;
    d.press(ENTER).await;
    d.wait_until("builds page", "location.pathname === '/builds'")
        .await;
    let html = d.client.source().await.unwrap();
    assert!(!html.contains(&env.token), "the token is in the page");
    d.tab_reaches_every_action("builds").await;
    d.shot("2-builds").await;

    d.tab_to(&format!("A|/builds/{build}")).await;
    d.press(ENTER).await;
    d.wait_until(
        "build page",
        &format!("location.pathname === '/builds/{build}'"),
    )
    .await;
    // Lines keep arriving on the same page: no reload (the marker survives).
    d.js("window.stillTheSamePage = true;").await;
    d.wait_until("first log lines", &format!("{LOG_LINES} >= 2"))
        .await;
    let before = d
        .js(&format!("return {LOG_LINES};"))
        .await
        .as_u64()
        .unwrap();
    d.wait_until("more log lines", &format!("{LOG_LINES} > {before}"))
        .await;
    assert_eq!(
        d.js("return window.stillTheSamePage === true;").await,
        json!(true)
    );
    let groups = d.js("return Array.from(document.querySelectorAll('#log h3, #log h4')).map(h => h.textContent);").await;
    assert!(
        groups
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h.as_str().unwrap().starts_with("Step ")),
        "lines grouped by task and step: {groups}"
    );
    d.shot("3-build-live-log").await;
    d.tab_reaches_every_action("build").await;

    d.tab_to("BUTTON|cancel").await;
    d.press(ENTER).await;
    d.wait_until(
        "cancelled",
        "document.getElementById('build-status') && document.getElementById('build-status').textContent.trim() === 'cancelled'",
    )
    .await;
    d.wait_until(
        "timeline shows it",
        "document.querySelector('.timeline').textContent.includes('Build cancelled')",
    )
    .await;
    d.shot("4-cancelled").await;

    d.tab_to("A|/providers").await;
    d.press(ENTER).await;
    d.wait_until("providers page", "location.pathname === '/providers'")
        .await;
    let text = d
        .js("return document.querySelector('main').innerText;")
        .await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("kube-sim") && text.contains("own-sim"),
        "{text}"
    );
    d.tab_reaches_every_action("providers").await;
    d.tab_to("BUTTON|Test connection of own-sim").await;
    d.press(ENTER).await;
    d.wait_until(
        "readiness report",
        "document.querySelector('.report') !== null",
    )
    .await;
    let report = d
        .js("return document.querySelector('.report').innerText;")
        .await;
    assert!(report.as_str().unwrap().starts_with("Ready"), "{report}");
    d.shot("5-providers").await;

    d.client.clone().close().await.unwrap();
    drop(d);
    env.finish().await;
}
