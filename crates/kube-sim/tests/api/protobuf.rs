//! Content negotiation with `application/vnd.kubernetes.protobuf`, as the
//! apiserver does it: protobuf in and out for the core kinds kube-sim
//! encodes, JSON for the rest when the Accept list allows it, 406/415
//! otherwise.

use crate::*;
use http_body_util::BodyExt;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use kube_sim::protobuf::{self, MEDIA_TYPE};
use prost::Message;
use serde_json::{Value, json};

struct Answer {
    code: u16,
    content_type: String,
    body: Vec<u8>,
}

async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    accept: &str,
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Accept", accept);
    if let Some((ct, _)) = &body {
        req = req.header("Content-Type", *ct);
    }
    let req = req
        .body(kube::client::Body::from(
            body.map(|b| b.1).unwrap_or_default(),
        ))
        .unwrap();
    let resp = client.send(req).await.expect("request sent");
    let code = resp.status().as_u16();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        code,
        content_type,
        body,
    }
}

/// The envelope's kind and the raw message inside it.
fn unwrap_envelope(bytes: &[u8]) -> (String, Vec<u8>) {
    let inner = bytes.strip_prefix(b"k8s\0").expect("protobuf magic");
    let u = Unknown::decode(inner).expect("runtime.Unknown");
    (u.type_meta.unwrap().kind.unwrap(), u.raw.unwrap())
}

fn json_body(a: &Answer) -> Value {
    assert_eq!(a.content_type, "application/json");
    serde_json::from_slice(&a.body).unwrap()
}

#[tokio::test]
async fn core_objects_go_both_ways_in_protobuf() {
    let (_sim, client) = start().await;
    namespace(&client, "pb").await;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "reg", "labels": {"team": "a"}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
    });
    let body = protobuf::encode(&secret).expect("Secret encodes");
    let a = send(
        &client,
        "POST",
        "/api/v1/namespaces/pb/secrets",
        &format!("{MEDIA_TYPE},application/json"),
        Some((MEDIA_TYPE, body)),
    )
    .await;
    assert_eq!(a.code, 201);
    assert_eq!(a.content_type, MEDIA_TYPE);
    let (kind, raw) = unwrap_envelope(&a.body);
    assert_eq!(kind, "Secret");
    let s = core::Secret::decode(&raw[..]).unwrap();
    let m = s.metadata.unwrap();
    assert_eq!(m.name.as_deref(), Some("reg"));
    assert_eq!(m.namespace.as_deref(), Some("pb"));
    assert!(m.uid.is_some_and(|u| !u.is_empty()));
    assert!(m.creation_timestamp.and_then(|t| t.seconds).unwrap() > 0);
    assert_eq!(m.labels["team"], "a");
    assert_eq!(s.data[".dockerconfigjson"], b"{\"auths\":{}}");

    // The same object read back as JSON (no Accept) is the stored shape.
    let a = send(
        &client,
        "GET",
        "/api/v1/namespaces/pb/secrets/reg",
        "",
        None,
    )
    .await;
    let v = json_body(&a);
    assert_eq!(v["data"], secret["data"]);
    assert_eq!(v["type"], "kubernetes.io/dockerconfigjson");

    // Lists and errors in protobuf.
    let a = send(
        &client,
        "GET",
        "/api/v1/namespaces/pb/secrets",
        MEDIA_TYPE,
        None,
    )
    .await;
    assert_eq!((a.code, a.content_type.as_str()), (200, MEDIA_TYPE));
    let (kind, raw) = unwrap_envelope(&a.body);
    assert_eq!(kind, "SecretList");
    let list = core::SecretList::decode(&raw[..]).unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.unwrap().resource_version.is_some());
    let a = send(
        &client,
        "GET",
        "/api/v1/namespaces/pb/configmaps/nope",
        MEDIA_TYPE,
        None,
    )
    .await;
    assert_eq!((a.code, a.content_type.as_str()), (404, MEDIA_TYPE));
    let (kind, raw) = unwrap_envelope(&a.body);
    assert_eq!(kind, "Status");
    let st = meta::Status::decode(&raw[..]).unwrap();
    assert_eq!(st.reason.as_deref(), Some("NotFound"));
    assert_eq!(st.message.as_deref(), Some("configmaps \"nope\" not found"));
    assert_eq!(st.code, Some(404));
}

#[tokio::test]
async fn other_kinds_fall_back_to_json_or_are_refused() {
    let (_sim, client) = start().await;
    namespace(&client, "pb").await;
    let prs = "/apis/tekton.dev/v1/namespaces/pb/pipelineruns";
    // Custom resources are JSON only, as on a cluster.
    let a = send(
        &client,
        "GET",
        prs,
        &format!("{MEDIA_TYPE}, application/json"),
        None,
    )
    .await;
    assert_eq!(a.code, 200);
    assert_eq!(json_body(&a)["kind"], "PipelineRunList");
    let a = send(&client, "GET", prs, MEDIA_TYPE, None).await;
    assert_eq!(a.code, 406);
    let st = json_body(&a);
    assert_eq!(st["reason"], "NotAcceptable");
    assert_eq!(
        st["message"],
        "only the following media types are accepted: application/json, application/yaml"
    );
    let cm = protobuf::encode(
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
    )
    .unwrap();
    let a = send(
        &client,
        "POST",
        prs,
        "application/json",
        Some((MEDIA_TYPE, cm.clone())),
    )
    .await;
    assert_eq!(a.code, 415);
    assert_eq!(json_body(&a)["reason"], "UnsupportedMediaType");
    // A watch is never protobuf here: 406 when JSON is not acceptable either.
    let a = send(
        &client,
        "GET",
        "/api/v1/namespaces/pb/secrets?watch=1",
        MEDIA_TYPE,
        None,
    )
    .await;
    assert_eq!(a.code, 406);
    // A malformed body is a 400 naming the problem, and nothing is created.
    let a = send(
        &client,
        "POST",
        "/api/v1/namespaces/pb/configmaps",
        "application/json",
        Some((MEDIA_TYPE, b"not protobuf".to_vec())),
    )
    .await;
    assert_eq!(a.code, 400);
    let msg = json_body(&a)["message"].as_str().unwrap().to_string();
    assert!(
        msg.starts_with("error decoding protobuf request body: "),
        "{msg}"
    );
    let a = send(
        &client,
        "GET",
        "/api/v1/namespaces/pb/configmaps/x",
        "",
        None,
    )
    .await;
    assert_eq!(a.code, 404);
    // A protobuf ConfigMap with JSON answer.
    let a = send(
        &client,
        "POST",
        "/api/v1/namespaces/pb/configmaps",
        "application/json",
        Some((MEDIA_TYPE, cm)),
    )
    .await;
    assert_eq!(a.code, 201);
    assert_eq!(json_body(&a)["metadata"]["namespace"], "pb");
}
