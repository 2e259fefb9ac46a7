use crate::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube_sim::{FaultAction, FaultRule, KubeSimOptions};
use serde_json::json;
use std::time::Duration;

fn cm(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}}})).unwrap()
}

#[tokio::test]
async fn watch_events_resume_and_label_filter() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &cm("a", "web"))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();

    // From "0": synthetic ADDED for what exists, then live events.
    let mut all = cms
        .watch(&WatchParams::default().disable_bookmarks(), "0")
        .await
        .unwrap()
        .boxed();
    match next(&mut all).await.unwrap() {
        WatchEvent::Added(c) => assert_eq!(c.metadata.name.as_deref(), Some("a")),
        other => panic!("{other:?}"),
    }
    let mut web = cms
        .watch(
            &WatchParams::default().labels("app=web").disable_bookmarks(),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("b", "db"))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "api"}}})),
    )
    .await
    .unwrap();
    cms.delete("b", &Default::default()).await.unwrap();

    let mut kinds = Vec::new();
    for _ in 0..4 {
        kinds.push(match next(&mut all).await.unwrap() {
            WatchEvent::Added(c) => format!("ADDED {}", c.metadata.name.unwrap()),
            WatchEvent::Modified(c) => format!("MODIFIED {}", c.metadata.name.unwrap()),
            WatchEvent::Deleted(c) => format!("DELETED {}", c.metadata.name.unwrap()),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(kinds, ["ADDED b", "MODIFIED a", "MODIFIED a", "DELETED b"]);

    // The label-filtered watch sees `a` modified, then leaving the selector as DELETED.
    match next(&mut web).await.unwrap() {
        WatchEvent::Modified(c) => assert_eq!(c.data.unwrap()["k"], "v"),
        other => panic!("{other:?}"),
    }
    match next(&mut web).await.unwrap() {
        WatchEvent::Deleted(c) => assert_eq!(c.metadata.name.as_deref(), Some("a")),
        other => panic!("{other:?}"),
    }

    // Resuming from the first rv replays everything after it.
    let mut resumed = cms
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    match next(&mut resumed).await.unwrap() {
        WatchEvent::Added(c) => assert_eq!(c.metadata.name.as_deref(), Some("b")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn too_old_resource_version_is_410_expired_in_stream() {
    let (_sim, client) = start_with(KubeSimOptions {
        history_limit: 2,
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &cm("a", "x"))
        .await
        .unwrap();
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("n{i}"), "x"))
            .await
            .unwrap();
    }
    let mut w = cms
        .watch(
            &WatchParams::default(),
            first.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match next(&mut w).await.unwrap() {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with("too old resource version: "),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_timeout_and_initial_events_end() {
    let (_sim, client) = start_with(KubeSimOptions {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("a", "x"))
        .await
        .unwrap();
    let mut w = cms
        .watch(&WatchParams::default().timeout(2), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(next(&mut w).await.unwrap(), WatchEvent::Added(_)));
    assert!(matches!(
        next(&mut w).await.unwrap(),
        WatchEvent::Bookmark(_)
    ));
    // timeoutSeconds ends the stream.
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(10), w.collect::<Vec<_>>())
        .await
        .expect("watch ends");
    assert!(
        rest.iter()
            .all(|e| matches!(e, Ok(WatchEvent::Bookmark(_))))
    );

    let mut s = cms
        .watch(&WatchParams::streaming_lists(), "")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(next(&mut s).await.unwrap(), WatchEvent::Added(_)));
    match next(&mut s).await.unwrap() {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.annotations["k8s.io/initial-events-end"], "true")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn kube_runtime_watcher_relists_after_410() {
    let (sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("a", "x"))
        .await
        .unwrap();
    let mut stream = watcher(cms.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut inits = 0;
    // Initial list.
    loop {
        match next(&mut stream).await.unwrap() {
            watcher::Event::Init => inits += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    // The next watch request is answered with 410: the watcher must relist.
    sim.faults()
        .add(FaultRule::new(Some("watch"), Some("configmaps"), FaultAction::ExpireWatch).times(1));
    sim.faults().drop_all_watches();
    cms.create(&PostParams::default(), &cm("b", "x"))
        .await
        .unwrap();
    let mut saw_b = false;
    while !(saw_b && inits == 2) {
        match tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("watcher progresses")
        {
            Some(Ok(watcher::Event::Init)) => inits += 1,
            Some(Ok(watcher::Event::InitApply(c))) | Some(Ok(watcher::Event::Apply(c))) => {
                saw_b |= c.metadata.name.as_deref() == Some("b")
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => eprintln!("watcher error (expected once): {e}"),
            None => panic!("watcher ended"),
        }
    }
    assert_eq!(inits, 2, "one relist after the 410");

    // And it keeps working after the API server goes away and comes back.
    sim.stop_server().await;
    sim.start_server().await.unwrap();
    cms.create(&PostParams::default(), &cm("c", "x"))
        .await
        .unwrap();
    let c = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c))) =
                stream.next().await
                && c.metadata.name.as_deref() == Some("c")
            {
                return c;
            }
        }
    })
    .await
    .expect("watcher sees objects created after the restart");
    assert_eq!(c.metadata.name.as_deref(), Some("c"));
}

#[tokio::test]
async fn kube_runtime_watcher_with_streaming_lists() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("a", "x"))
        .await
        .unwrap();
    let mut stream = watcher(cms.clone(), watcher::Config::default().streaming_lists())
        .default_backoff()
        .boxed();
    let mut initial = Vec::new();
    loop {
        match next(&mut stream).await.unwrap() {
            watcher::Event::InitApply(c) => initial.push(c.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["a"]);
    cms.create(&PostParams::default(), &cm("b", "x"))
        .await
        .unwrap();
    match next(&mut stream).await.unwrap() {
        watcher::Event::Apply(c) => assert_eq!(c.metadata.name.as_deref(), Some("b")),
        other => panic!("{other:?}"),
    }
}
