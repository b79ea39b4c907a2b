//! Custom resources, discovery, TokenReviews, cluster-scoped types and unsupported
//! requests, through the real `kube` client.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::authentication::v1::{
    TokenReview, TokenReviewSpec, TokenReviewStatus, UserInfo,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::discovery::{Discovery, Scope};
use kube_testserver::KubeTestServer;
use serde_json::json;

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn virtual_service_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "virtualservices.networking.istio.io"},
        "spec": {
            "group": "networking.istio.io",
            "scope": "Namespaced",
            "names": {"plural": "virtualservices", "singular": "virtualservice",
                      "kind": "VirtualService", "shortNames": ["vs"]},
            "versions": [
                {"name": "v1beta1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                 "subresources": {"status": {}}},
                {"name": "v1alpha3", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}
            ]
        }
    }))
    .expect("crd")
}

#[tokio::test]
async fn a_crd_created_through_the_api_becomes_servable() {
    let server = KubeTestServer::start().await.expect("server");
    let client = server.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let created = crds
        .create(&PostParams::default(), &virtual_service_crd())
        .await
        .expect("crd");
    let established = created
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established);

    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1beta1", "VirtualService");
    let (resource, caps) = discovery.resolve_gvk(&gvk).expect("discovered");
    assert_eq!(resource.plural, "virtualservices");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(discovery.has_group("networking.istio.io"));
    let group = discovery.get("networking.istio.io").expect("group");
    assert_eq!(group.preferred_version_or_latest(), "v1beta1");

    let vs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
    }))
    .expect("object");
    let stored = vs
        .create(&PostParams::default(), &object)
        .await
        .expect("create vs");
    assert_eq!(stored.data["spec"]["hosts"][0], "reviews");
    let status = vs
        .patch_status(
            "reviews",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .expect("status");
    assert_eq!(status.data["status"]["observedGeneration"], 1);

    // The other served version reads the same object.
    let old_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1alpha3", "VirtualService"),
        "virtualservices",
    );
    let old: Api<DynamicObject> = Api::all_with(client.clone(), &old_ar);
    let listed = old
        .list(&ListParams::default())
        .await
        .expect("list v1alpha3");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0]
            .types
            .as_ref()
            .map(|t| t.api_version.as_str()),
        Some("networking.istio.io/v1alpha3")
    );

    // Deleting the definition removes the resource and its objects.
    crds.delete(
        "virtualservices.networking.istio.io",
        &DeleteParams::default(),
    )
    .await
    .expect("delete crd");
    assert_eq!(api_error(vs.list(&ListParams::default()).await).code, 404);
    assert!(
        server
            .objects("networking.istio.io/v1beta1", "VirtualService")
            .is_empty()
    );

    let mut bad = virtual_service_crd();
    bad.metadata.name = Some("wrong.example.com".to_string());
    assert_eq!(
        api_error(crds.create(&PostParams::default(), &bad).await).code,
        422
    );
}

#[tokio::test]
async fn registered_cluster_scoped_resource_and_all_with() {
    let server = KubeTestServer::start().await.expect("server");
    server.register_resource(
        "config.istio.io",
        "v1alpha2",
        "AttributeManifest",
        "attributemanifests",
        false,
    );
    let client = server.client();
    let discovery = Discovery::new(client.clone())
        .filter(&["config.istio.io"])
        .run()
        .await
        .expect("discovery");
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "config.istio.io",
            "v1alpha2",
            "AttributeManifest",
        ))
        .expect("discovered");
    assert_eq!(caps.scope, Scope::Cluster);
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let object =
        DynamicObject::new("istioproxy", &ar).data(json!({"spec": {"name": "istio-proxy"}}));
    api.create(&PostParams::default(), &object)
        .await
        .expect("create");
    let listed = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].name_any(), "istioproxy");
    assert!(listed.items[0].metadata.namespace.is_none());
}

#[tokio::test]
async fn token_reviews_are_answered_by_the_installed_callback() {
    let server = KubeTestServer::start().await.expect("server");
    let reviews: Api<TokenReview> = Api::all(server.client());
    let review = |token: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(vec!["istio-ca".to_string()]),
        },
        ..TokenReview::default()
    };
    let answer = reviews
        .create(&PostParams::default(), &review("t"))
        .await
        .expect("review");
    assert_eq!(answer.status.and_then(|s| s.authenticated), Some(false));

    server.set_token_reviewer(|spec: &TokenReviewSpec| {
        if spec.token.as_deref() == Some("good") {
            TokenReviewStatus {
                authenticated: Some(true),
                audiences: spec.audiences.clone(),
                user: Some(UserInfo {
                    username: Some("system:serviceaccount:bookinfo:reviews".to_string()),
                    ..UserInfo::default()
                }),
                ..TokenReviewStatus::default()
            }
        } else {
            TokenReviewStatus {
                authenticated: Some(false),
                error: Some("invalid bearer token".to_string()),
                ..TokenReviewStatus::default()
            }
        }
    });
    let good = reviews
        .create(&PostParams::default(), &review("good"))
        .await
        .expect("review");
    let status = good.status.expect("status");
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(status.audiences, Some(vec!["istio-ca".to_string()]));
    assert_eq!(
        status.user.and_then(|u| u.username).as_deref(),
        Some("system:serviceaccount:bookinfo:reviews")
    );
    let bad = reviews
        .create(&PostParams::default(), &review("bad"))
        .await
        .expect("review");
    assert_eq!(
        bad.status.and_then(|s| s.error).as_deref(),
        Some("invalid bearer token")
    );

    // TokenReviews are create-only.
    assert_eq!(
        api_error(reviews.list(&ListParams::default()).await).code,
        405
    );
}

#[tokio::test]
async fn webhook_configurations_are_cluster_scoped() {
    let server = KubeTestServer::start().await.expect("server");
    let api: Api<MutatingWebhookConfiguration> = Api::all(server.client());
    let config = MutatingWebhookConfiguration {
        metadata: kube::api::ObjectMeta {
            name: Some("istio-sidecar-injector".to_string()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "sidecar-injector.istio.io".to_string(),
            admission_review_versions: vec!["v1".to_string()],
            side_effects: "None".to_string(),
            client_config: WebhookClientConfig {
                url: Some("https://127.0.0.1:9443/inject".to_string()),
                ..WebhookClientConfig::default()
            },
            ..MutatingWebhook::default()
        }]),
    };
    api.create(&PostParams::default(), &config)
        .await
        .expect("create");
    let patched = api
        .patch(
            "istio-sidecar-injector",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "sidecar-injector"}}})),
        )
        .await
        .expect("patch");
    assert!(patched.metadata.namespace.is_none());
    assert_eq!(patched.webhooks.map(|w| w.len()), Some(1));
}

#[tokio::test]
async fn unsupported_requests_answer_a_status() {
    let server = KubeTestServer::start().await.expect("server");
    let client = server.client();
    let get = |path: &str| {
        axum::http::Request::get(path.to_string())
            .body(Vec::new())
            .expect("request")
    };
    let status = api_error(
        client
            .request::<serde_json::Value>(get("/api/v1/widgets"))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    let status = api_error(
        client
            .request::<serde_json::Value>(get("/apis/nope.example.com/v1"))
            .await,
    );
    assert_eq!(status.code, 404);
    let status = api_error(
        client
            .request::<serde_json::Value>(get("/api/v1/namespaces/default/pods/x/log"))
            .await,
    );
    assert_eq!(status.code, 404);
    assert!(status.message.contains("subresource"), "{}", status.message);
    let post = axum::http::Request::post("/api/v1/namespaces/default/pods/x")
        .body(b"{}".to_vec())
        .expect("request");
    let status = api_error(client.request::<serde_json::Value>(post).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (405, "MethodNotAllowed")
    );
    let bad_body = axum::http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(b"{not json".to_vec())
        .expect("request");
    assert_eq!(
        api_error(client.request::<serde_json::Value>(bad_body).await).code,
        400
    );
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
}
