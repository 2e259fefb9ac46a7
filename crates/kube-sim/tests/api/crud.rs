use crate::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use serde_json::json;
use std::collections::BTreeMap;

/// An object's resourceVersion as the number it is.
fn rv(obj: &ConfigMap) -> u64 {
    let rv = obj.metadata.resource_version.as_deref();
    rv.expect("a resourceVersion").parse().unwrap()
}

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn typed_core_crud_with_bookkeeping() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    assert!(created.metadata.creation_timestamp.is_some());
    let rv1 = rv(&created);

    let mut got = cms.get("a").await.unwrap();
    assert_eq!(got.metadata.uid.as_deref(), Some(uid.as_str()));
    got.data.as_mut().unwrap().insert("k".into(), "w".into());
    let updated = cms
        .replace("a", &PostParams::default(), &got)
        .await
        .unwrap();
    let rv2 = rv(&updated);
    assert!(rv2 > rv1, "resourceVersion grows: {rv1} -> {rv2}");
    assert_eq!(updated.data.unwrap()["k"], "w");

    let dup = api_error(cms.create(&PostParams::default(), &cm("a", &[])).await);
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"a\" already exists");

    let missing = api_error(cms.get("nope").await);
    assert_eq!(
        (
            missing.code,
            missing.reason.as_str(),
            missing.message.as_str()
        ),
        (404, "NotFound", "configmaps \"nope\" not found")
    );

    let ghost: Api<ConfigMap> = Api::namespaced(client.clone(), "ghost");
    let e = api_error(ghost.create(&PostParams::default(), &cm("a", &[])).await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", "namespaces \"ghost\" not found")
    );

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(cms.get("a").await).code, 404);

    // Dry runs answer without writing (more in `patch::dry_run_…`).
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    cms.create(&dry, &cm("dry", &[])).await.unwrap();
    assert_eq!(api_error(cms.get("dry").await).code, 404);
}

#[tokio::test]
async fn generate_name_and_new_namespace_gets_default_service_account() {
    let (_sim, client) = start().await;
    namespace(&client, "team").await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    sas.get("default").await.expect("default service account");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team");
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"generateName": "creds-"}, "stringData": {"a": "b"}}),
    )
    .unwrap();
    let created = secrets.create(&PostParams::default(), &s).await.unwrap();
    let name = created.metadata.name.unwrap();
    assert!(
        name.starts_with("creds-") && name.len() == "creds-".len() + 5,
        "{name}"
    );
    let nss: Api<Namespace> = Api::all(client.clone());
    let team = nss.get("team").await.unwrap();
    assert_eq!(team.status.unwrap().phase.as_deref(), Some("Active"));
}

#[tokio::test]
async fn custom_resource_update_conflicts_and_requires_resource_version() {
    let (_sim, client) = start().await;
    let prs = pipelineruns(&client, "default");
    let created = prs
        .create(&PostParams::default(), &pipelinerun("build-1"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    let mut fresh = created.clone();
    fresh.data["spec"]["status"] = json!("Cancelled");
    let updated = prs
        .replace("build-1", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(
        updated.metadata.generation,
        Some(2),
        "spec change bumps generation"
    );

    // `created` now carries a stale resourceVersion.
    let e = api_error(
        prs.replace("build-1", &PostParams::default(), &created)
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on pipelineruns.tekton.dev \"build-1\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let mut no_rv = updated.clone();
    no_rv.metadata.resource_version = None;
    let e = api_error(prs.replace("build-1", &PostParams::default(), &no_rv).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "PipelineRun.tekton.dev \"build-1\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update"
    );

    let e = api_error(prs.get("nope").await);
    assert_eq!(e.message, "pipelineruns.tekton.dev \"nope\" not found");
    let dup = api_error(
        prs.create(&PostParams::default(), &pipelinerun("build-1"))
            .await,
    );
    assert_eq!(
        dup.message,
        "pipelineruns.tekton.dev \"build-1\" already exists"
    );
}

#[tokio::test]
async fn label_and_field_selectors_and_pagination() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (name, app, tier) in [
        ("a", "web", "front"),
        ("b", "web", "back"),
        ("c", "db", "back"),
        ("d", "cache", ""),
    ] {
        let mut labels = vec![("app", app)];
        if !tier.is_empty() {
            labels.push(("tier", tier));
        }
        cms.create(&PostParams::default(), &cm(name, &labels))
            .await
            .unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    let q = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(cms.list(&q("app=web")).await.unwrap()), ["a", "b"]);
    assert_eq!(
        names(cms.list(&q("app==web,tier=back")).await.unwrap()),
        ["b"]
    );
    assert_eq!(names(cms.list(&q("app!=web")).await.unwrap()), ["c", "d"]);
    assert_eq!(
        names(cms.list(&q("app in (db,cache)")).await.unwrap()),
        ["c", "d"]
    );
    assert_eq!(
        names(cms.list(&q("app notin (db,cache)")).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(names(cms.list(&q("tier")).await.unwrap()), ["a", "b", "c"]);
    assert_eq!(names(cms.list(&q("!tier")).await.unwrap()), ["d"]);
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=c"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.namespace!=default"))
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );
    let bad = api_error(cms.list(&q("app in web")).await);
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));

    let page1 = cms.list(&ListParams::default().limit(3)).await.unwrap();
    let token = page1.metadata.continue_.clone().expect("continue token");
    assert_eq!(page1.metadata.remaining_item_count, Some(1));
    let page2 = cms
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(page1), ["a", "b", "c"]);
    assert!(page2.metadata.continue_.is_none());
    assert_eq!(names(page2), ["d"]);
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        4
    );
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status() {
    let (_sim, client) = start().await;
    let prs = pipelineruns(&client, "default");
    let mut pr = pipelinerun("run");
    pr.data["status"] = json!({"conditions": [{"type": "Succeeded", "status": "True"}]});
    let created = prs.create(&PostParams::default(), &pr).await.unwrap();
    assert!(created.data.get("status").is_none(), "create drops status");

    let mut with_status = created.clone();
    with_status.data["status"] = json!({"startTime": "2026-01-01T00:00:00Z"});
    with_status.data["spec"]["status"] = json!("Cancelled");
    let s = prs
        .replace_status("run", &PostParams::default(), &with_status)
        .await
        .unwrap();
    assert_eq!(s.data["status"]["startTime"], "2026-01-01T00:00:00Z");
    assert!(
        s.data["spec"].get("status").is_none(),
        "status write ignores spec"
    );
    assert_eq!(s.metadata.generation, Some(1));

    // The run has started (status.startTime): Tekton's webhook then allows only spec.status.
    let mut denied = s.clone();
    denied.data["spec"]["timeouts"] = json!({"pipeline": "2h"});
    let e = api_error(prs.replace("run", &PostParams::default(), &denied).await);
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        e.message,
        "admission webhook \"validation.webhook.pipeline.tekton.dev\" denied the request: validation failed: invalid value: Once the PipelineRun has started, only status updates are allowed"
    );

    let mut main = s.clone();
    main.data["status"] = json!({"startTime": "changed"});
    main.data["spec"]["status"] = json!("Cancelled");
    let m = prs
        .replace("run", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(
        m.data["status"]["startTime"], "2026-01-01T00:00:00Z",
        "main write drops status"
    );
    assert_eq!(m.data["spec"]["status"], "Cancelled");
    assert_eq!(m.metadata.generation, Some(2));
}

#[tokio::test]
async fn v1beta1_serves_the_same_objects_with_renamed_results() {
    let (sim, client) = start().await;
    let prs = pipelineruns(&client, "default");
    prs.create(&PostParams::default(), &pipelinerun("r"))
        .await
        .unwrap();
    sim.cluster()
        .update_status(
            &kube_sim::cluster::gvr::PIPELINERUNS,
            Some("default"),
            "r",
            json!({"results": [{"name": "IMAGE_DIGEST", "value": "sha256:1"}]}),
        )
        .unwrap();
    let beta: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &pipelinerun_resource("v1beta1"));
    let b = beta.get("r").await.unwrap();
    assert_eq!(b.types.as_ref().unwrap().api_version, "tekton.dev/v1beta1");
    assert_eq!(
        b.data["status"]["pipelineResults"][0]["name"],
        "IMAGE_DIGEST"
    );
    let v1 = prs.get("r").await.unwrap();
    assert_eq!(v1.data["status"]["results"][0]["value"], "sha256:1");
    // Watches convert too.
    use futures::StreamExt;
    let mut w = beta
        .watch(&kube::api::WatchParams::default().disable_bookmarks(), "0")
        .await
        .unwrap()
        .boxed();
    match w.next().await.unwrap().unwrap() {
        kube::api::WatchEvent::Added(o) => {
            assert_eq!(o.types.unwrap().api_version, "tekton.dev/v1beta1");
            assert_eq!(o.data["status"]["pipelineResults"][0]["value"], "sha256:1");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cascading_delete_background_and_orphan() {
    let (_sim, client) = start().await;
    let prs = pipelineruns(&client, "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let owner = prs
        .create(&PostParams::default(), &pipelinerun("owner"))
        .await
        .unwrap();
    let owned = |name: &str, uid: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "ownerReferences": [{"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "name": "owner", "uid": uid, "controller": true}]},
            "spec": {"containers": [{"name": "step-a", "image": "busybox"}]}
        }))
        .unwrap()
    };
    let uid = owner.metadata.uid.clone().unwrap();
    pods.create(&PostParams::default(), &owned("p1", &uid))
        .await
        .unwrap();
    prs.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    assert_eq!(
        api_error(pods.get("p1").await).code,
        404,
        "dependent deleted with its owner"
    );

    let owner2 = prs
        .create(&PostParams::default(), &pipelinerun("owner"))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &owned("p2", owner2.metadata.uid.as_deref().unwrap()),
    )
    .await
    .unwrap();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    prs.delete("owner", &dp).await.unwrap();
    let orphan = pods.get("p2").await.expect("orphaned pod survives");
    assert!(
        orphan
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut c = cm("held", &[]);
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    let r = cms.delete("held", &DeleteParams::default()).await.unwrap();
    let pending = r.left().expect("object returned while finalizers pending");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let mut got = cms.get("held").await.unwrap();
    assert!(got.metadata.deletion_timestamp.is_some());
    got.metadata.finalizers = Some(vec![]);
    cms.replace("held", &PostParams::default(), &got)
        .await
        .unwrap();
    assert_eq!(
        api_error(cms.get("held").await).code,
        404,
        "gone once the last finalizer is removed"
    );
}

#[tokio::test]
async fn crds_and_default_storage_class_are_listed() {
    let (_sim, client) = start().await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    let prc = crds.get("pipelineruns.tekton.dev").await.unwrap();
    assert_eq!(prc.spec.names.short_names.unwrap(), ["pr", "prs"]);
    let scs: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(client.clone());
    let sc = scs.get("standard").await.unwrap();
    assert_eq!(
        sc.metadata.annotations.unwrap()["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
}
