use crate::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn merge_json_strategic_and_apply_patches() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let c: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}))
            .unwrap();
    cms.create(&PostParams::default(), &c).await.unwrap();

    let p = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        p.data.unwrap(),
        [
            ("b".to_string(), "2".to_string()),
            ("c".to_string(), "3".to_string())
        ]
        .into()
    );

    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/b", "value": "20"}]))
            .unwrap();
    let p = cms
        .patch("c", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(p.data.unwrap()["b"], "20");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/b", "value": "nope"}]))
            .unwrap();
    let e = api_error(
        cms.patch("c", &PatchParams::default(), &Patch::<()>::Json(failing))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));

    let p = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"d": "4"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data.unwrap()["d"], "4");

    // Strategic merge merges containers by name (a merge patch would replace the list).
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": "x"}, {"name": "b", "image": "y"}
    ]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let patched = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [{"name": "b", "image": "z"}]}})),
        )
        .await
        .unwrap();
    let images: Vec<_> = patched
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| (c.name, c.image.unwrap()))
        .collect();
    assert_eq!(
        images,
        [
            ("a".to_string(), "x".to_string()),
            ("b".to_string(), "z".to_string())
        ]
    );

    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"x": "1"}});
    let a = cms
        .patch(
            "applied",
            &PatchParams::apply("mgr-a"),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    assert_eq!(a.data.unwrap()["x"], "1");
    let mf = a.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("mgr-a"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"x": "2"}});
    let e = api_error(
        cms.patch(
            "applied",
            &PatchParams::apply("mgr-b"),
            &Patch::Apply(&other),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"mgr-a\": .data.x"
    );
    let forced = cms
        .patch(
            "applied",
            &PatchParams::apply("mgr-b").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["x"], "2");

    // Apply requires a field manager.
    let e = api_error(
        cms.patch("applied", &PatchParams::default(), &Patch::Apply(&other))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
}

#[tokio::test]
async fn custom_resources_refuse_strategic_merge_and_patch_status() {
    let (_sim, client) = start().await;
    let prs = pipelineruns(&client, "default");
    prs.create(&PostParams::default(), &pipelinerun("p"))
        .await
        .unwrap();
    let e = api_error(
        prs.patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"status": "Cancelled"}})),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
    assert_eq!(
        e.message,
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
    let m = prs
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"status": "Cancelled"}})),
        )
        .await
        .unwrap();
    assert_eq!(m.data["spec"]["status"], "Cancelled");
    assert_eq!(m.metadata.generation, Some(2));

    let s = prs
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"status": null}, "status": {"startTime": "2026-01-01T00:00:00Z"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(s.data["status"]["startTime"], "2026-01-01T00:00:00Z");
    assert_eq!(
        s.data["spec"]["status"], "Cancelled",
        "status patch ignores spec"
    );

    let pr = json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": "ssa"}, "spec": {"pipelineRef": {"name": "x"}}});
    let created = prs
        .patch(
            "ssa",
            &PatchParams::apply("imagefactory"),
            &Patch::Apply(&pr),
        )
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["pipelineRef"]["name"], "x");

    // A stale resourceVersion in a merge patch is a precondition.
    let stale =
        json!({"metadata": {"resourceVersion": "1"}, "spec": {"status": "StoppedRunFinally"}});
    let e = api_error(
        prs.patch("p", &PatchParams::default(), &Patch::Merge(stale))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
}

#[tokio::test]
async fn dry_run_apply_create_and_patch_answer_but_store_nothing() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut dry = PatchParams::apply("tester");
    dry.dry_run = true;
    let doc = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}, "data": {"a": "1"}});

    // Apply of a missing object: answered as created, not stored.
    let answered = cms.patch("d", &dry, &Patch::Apply(&doc)).await.unwrap();
    assert_eq!(answered.data.unwrap()["a"], "1");
    assert!(cms.get_opt("d").await.unwrap().is_none());

    // Create with dryRun: the same.
    let c: ConfigMap = serde_json::from_value(doc.clone()).unwrap();
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    cms.create(&pp, &c).await.unwrap();
    assert!(cms.get_opt("d").await.unwrap().is_none());

    // Patch of an existing object: the answer has the change, the store not.
    cms.create(&PostParams::default(), &c).await.unwrap();
    let before = cms.get("d").await.unwrap();
    let changed = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}, "data": {"a": "2"}});
    let answered = cms.patch("d", &dry, &Patch::Apply(&changed)).await.unwrap();
    assert_eq!(answered.data.unwrap()["a"], "2");
    let after = cms.get("d").await.unwrap();
    assert_eq!(after.data.unwrap()["a"], "1");
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );

    // Deletes take no dry run here, and only "All" is a dry-run mode.
    let e = api_error(
        cms.delete(
            "d",
            &kube::api::DeleteParams {
                dry_run: true,
                ..Default::default()
            },
        )
        .await
        .map(|_| ()),
    );
    assert_eq!(e.code, 400);
    assert!(cms.get_opt("d").await.unwrap().is_some());
}
