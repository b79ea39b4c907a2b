//! `security.istio.io`: PeerAuthentication, AuthorizationPolicy and
//! RequestAuthentication; stored at v1, served at v1beta1 too.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Object, ResourceStatus, networking::MatchLabels, open_object, open_objects};

/// The mutual TLS mode workloads accept connections with.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "PeerAuthentication",
    doc = "The mutual TLS mode workloads accept.",
    plural = "peerauthentications",
    singular = "peerauthentication",
    shortname = "pa",
    category = "istio-io",
    category = "security-istio-io",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mtls.mode"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    /// Workloads the policy applies to; the whole namespace (or mesh) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<MatchLabels>,
    /// The mutual TLS mode for all ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// The mutual TLS mode per workload port number (needs a selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<String, MutualTls>>,
}

/// A mutual TLS setting.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutualTls {
    /// UNSET (inherit), DISABLE, PERMISSIVE or STRICT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// Who may do what to the workloads: ALLOW, DENY, AUDIT or CUSTOM rules.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "AuthorizationPolicy",
    doc = "Access control for workloads.",
    plural = "authorizationpolicies",
    singular = "authorizationpolicy",
    shortname = "ap",
    category = "istio-io",
    category = "security-istio-io",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// Workloads the policy applies to; the whole namespace (or mesh) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<MatchLabels>,
    /// The resource (a Gateway, say) the policy attaches to, instead of a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub target_ref: Option<Object>,
    /// Resources the policy attaches to, instead of a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub target_refs: Option<Vec<Object>>,
    /// Rules (`from`, `to`, `when`); a request matching any rule triggers the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub rules: Option<Vec<Object>>,
    /// ALLOW (default), DENY, AUDIT or CUSTOM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The external authorizer of a CUSTOM policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub provider: Option<Object>,
}

/// The JSON Web Tokens the workloads accept, by issuer.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "RequestAuthentication",
    doc = "The JSON Web Tokens workloads accept.",
    plural = "requestauthentications",
    singular = "requestauthentication",
    shortname = "ra",
    category = "istio-io",
    category = "security-istio-io",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthenticationSpec {
    /// Workloads the policy applies to; the whole namespace (or mesh) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<MatchLabels>,
    /// The resource the policy attaches to, instead of a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub target_ref: Option<Object>,
    /// Resources the policy attaches to, instead of a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub target_refs: Option<Vec<Object>>,
    /// Accepted issuers, where their keys are, and where tokens are found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_objects")]
    pub jwt_rules: Option<Vec<Object>>,
}
