//! Arbitrary bytes as an `AdmissionReview` through mesh-admission's decoder and
//! the sidecar injector's webhook, and (when UTF-8) as multi-document YAML
//! through `meshctl kube-inject`'s injection.
//!
//! - No panic.
//! - Every answer, including the one to a review that does not decode, is JSON
//!   naming the review's apiVersion and the request's uid; a refused answer has
//!   a status with a non-empty message.
//! - A patch applies to the request's object, and reviewing the patched object
//!   again allows it without a patch (injection is idempotent).
//! - Whatever `inject_documents` accepts, it accepts again, unchanged.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use mesh_admission::{
    AdmissionRequest, AdmissionResponse, ReviewVersion, decode_review, encode_review,
};
use serde_json::Value;
use sidecar_injector::{
    Injector, InjectorConfig,
    kube_inject::inject_documents,
    webhook::{self, Outcome},
};

static INJECTOR: LazyLock<Injector> = LazyLock::new(|| {
    Injector::new(InjectorConfig::default()).expect("the built-in template compiles")
});

/// The encoded answer is an AdmissionReview in `version` answering `response`.
fn check_answer(version: ReviewVersion, response: &AdmissionResponse) {
    if !response.allowed {
        let status = response.status.as_ref().expect("a refusal has a status");
        assert!(!status.message.is_empty(), "a refusal says why");
    }
    let body = encode_review(version, response);
    let review: Value = serde_json::from_slice(&body).expect("the answer is JSON");
    assert_eq!(review["apiVersion"].as_str(), Some(version.api_version()));
    assert_eq!(review["kind"].as_str(), Some("AdmissionReview"));
    let answer = &review["response"];
    assert_eq!(answer["uid"].as_str(), Some(response.uid.as_str()));
    assert_eq!(answer["allowed"].as_bool(), Some(response.allowed));
    if !response.allowed {
        let message = answer["status"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "the encoded refusal says why");
    }
    match &response.patch {
        Some(patch) => {
            assert_eq!(answer["patchType"].as_str(), Some("JSONPatch"));
            let encoded = answer["patch"].as_str().expect("the patch is a string");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("the patch is base64");
            assert_eq!(&decoded, patch);
        }
        None => assert!(answer.get("patch").is_none()),
    }
}

fn check_review(version: ReviewVersion, request: &AdmissionRequest) {
    let (response, outcome) = webhook::review(&INJECTOR, request);
    assert_eq!(response.uid, request.uid);
    assert_eq!(response.allowed, !matches!(outcome, Outcome::Failed(_)));
    assert_eq!(response.patch.is_some(), outcome == Outcome::Injected);
    check_answer(version, &response);

    let Some(patch) = response.patch.as_ref() else {
        return;
    };
    let operations = response.patch_operations().unwrap_or_else(|| {
        panic!(
            "the patch is a JSON patch: {}",
            String::from_utf8_lossy(patch)
        )
    });
    let object = request.object.as_ref().expect("a patch is for an object");
    let patched = mesh_admission::patch::apply(object, &operations)
        .unwrap_or_else(|e| panic!("the patch applies to the object: {e}"));
    let mut again = request.clone();
    again.object = Some(patched);
    let (second, outcome) = webhook::review(&INJECTOR, &again);
    assert!(
        second.allowed,
        "the injected pod is refused ({outcome:?}): {:?}",
        second.status
    );
    assert!(
        second.patch.is_none(),
        "the injected pod is patched again ({outcome:?})"
    );
    check_answer(version, &second);
}

fn check_kube_inject(text: &str) {
    let Ok((out, _)) = inject_documents(&INJECTOR, text, "default") else {
        return;
    };
    match inject_documents(&INJECTOR, &out, "default") {
        Ok((again, _)) => assert_eq!(again, out, "a second kube-inject changes the output"),
        Err(e) => panic!("kube-inject's output is refused: {e}\n{out}"),
    }
}

fuzz_target!(|data: &[u8]| {
    match decode_review(data) {
        Ok((version, request)) => {
            assert!(!request.uid.is_empty());
            check_review(version, &request);
        }
        Err(e) => {
            assert!(!e.message.is_empty());
            let response = e.response();
            assert!(!response.allowed);
            assert_eq!(response.uid, e.uid);
            check_answer(e.version, &response);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check_kube_inject(text);
    }
});
