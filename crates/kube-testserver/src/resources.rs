//! The resource types the server serves: built-in ones and registered custom resources.

use std::collections::BTreeMap;

/// How the server treats a resource type beyond plain storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Stored objects with the usual verbs.
    Stored,
    /// `authentication.k8s.io` TokenReview: create only, answered by the installed reviewer.
    TokenReview,
    /// `apiextensions.k8s.io` CustomResourceDefinition: creating one registers a resource.
    CustomResourceDefinition,
    /// core `namespaces`: deleting one deletes everything in it.
    Namespace,
}

/// One servable resource type (a group, its served versions, a plural name).
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: String,
    /// Served versions, the first being the preferred (storage) one.
    pub versions: Vec<String>,
    /// Kind, e.g. `Service`.
    pub kind: String,
    /// Plural resource name, e.g. `services`.
    pub plural: String,
    /// Singular resource name, e.g. `service`.
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether a `/status` subresource exists (status written apart from the rest).
    pub status_subresource: bool,
    /// Short names listed in discovery.
    pub short_names: Vec<String>,
    pub(crate) behaviour: Behaviour,
}

impl ResourceType {
    /// A stored resource type with one version and the singular name taken from the kind.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.to_string(),
            versions: vec![version.to_string()],
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            status_subresource: false,
            short_names: Vec::new(),
            behaviour: Behaviour::Stored,
        }
    }

    fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    fn with_behaviour(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = behaviour;
        self
    }

    /// `group/version` (or `version` for the core group) for a served version.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The verbs discovery lists for this type.
    pub(crate) fn verbs(&self) -> Vec<String> {
        let verbs: &[&str] = match self.behaviour {
            Behaviour::TokenReview => &["create"],
            _ => &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        };
        verbs.iter().map(|s| s.to_string()).collect()
    }

    /// Whether the type serves the given version.
    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// Field selector keys the server accepts for this type besides `metadata.name`
    /// and `metadata.namespace`.
    pub(crate) fn extra_field_labels(&self) -> &'static [&'static str] {
        match (self.group.as_str(), self.plural.as_str()) {
            ("", "pods") => &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            ("", "secrets") => &["type"],
            ("", "namespaces") => &["status.phase"],
            ("", "events") => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "reason",
                "type",
            ],
            _ => &[],
        }
    }
}

/// Key of a resource type: (group, plural).
pub(crate) type ResourceKey = (String, String);

/// Every resource type the server serves.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    types: BTreeMap<ResourceKey, ResourceType>,
}

impl Registry {
    /// The built-in types.
    pub(crate) fn builtin() -> Self {
        let core = |kind: &str, plural: &str, namespaced: bool| {
            ResourceType::new("", "v1", kind, plural, namespaced)
        };
        let types = vec![
            core("Namespace", "namespaces", false)
                .with_status()
                .with_short_names(&["ns"])
                .with_behaviour(Behaviour::Namespace),
            core("Service", "services", true)
                .with_status()
                .with_short_names(&["svc"]),
            core("Pod", "pods", true)
                .with_status()
                .with_short_names(&["po"]),
            core("Endpoints", "endpoints", true).with_short_names(&["ep"]),
            core("Secret", "secrets", true),
            core("ConfigMap", "configmaps", true).with_short_names(&["cm"]),
            core("ServiceAccount", "serviceaccounts", true).with_short_names(&["sa"]),
            core("Node", "nodes", false)
                .with_status()
                .with_short_names(&["no"]),
            core("Event", "events", true).with_short_names(&["ev"]),
            ResourceType::new("apps", "v1", "Deployment", "deployments", true)
                .with_status()
                .with_short_names(&["deploy"]),
            ResourceType::new(
                "discovery.k8s.io",
                "v1",
                "EndpointSlice",
                "endpointslices",
                true,
            ),
            ResourceType::new("coordination.k8s.io", "v1", "Lease", "leases", true),
            ResourceType::new(
                "admissionregistration.k8s.io",
                "v1",
                "MutatingWebhookConfiguration",
                "mutatingwebhookconfigurations",
                false,
            ),
            ResourceType::new(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingWebhookConfiguration",
                "validatingwebhookconfigurations",
                false,
            ),
            ResourceType::new(
                "authentication.k8s.io",
                "v1",
                "TokenReview",
                "tokenreviews",
                false,
            )
            .with_behaviour(Behaviour::TokenReview),
            ResourceType::new(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            )
            .with_status()
            .with_short_names(&["crd", "crds"])
            .with_behaviour(Behaviour::CustomResourceDefinition),
        ];
        let mut registry = Self {
            types: BTreeMap::new(),
        };
        for t in types {
            registry.insert(t);
        }
        registry
    }

    /// Adds or replaces a type.
    pub(crate) fn insert(&mut self, t: ResourceType) {
        self.types.insert((t.group.clone(), t.plural.clone()), t);
    }

    /// Removes a type.
    pub(crate) fn remove(&mut self, group: &str, plural: &str) -> Option<ResourceType> {
        self.types.remove(&(group.to_string(), plural.to_string()))
    }

    /// The type serving `group/version` under `plural`.
    pub(crate) fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .get(&(group.to_string(), plural.to_string()))
            .filter(|t| t.serves(version))
    }

    /// The type with this kind in `group/version`.
    pub(crate) fn find_kind(
        &self,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Option<&ResourceType> {
        self.types
            .values()
            .find(|t| t.group == group && t.kind == kind && t.serves(version))
    }

    /// All types.
    pub(crate) fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }
}
