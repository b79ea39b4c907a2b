//! Per-kind validation with Istio's rules.
//!
//! Every error names the field path it is about, e.g. `spec.http[0].route[1].weight`,
//! in the notation parse errors use (`.field`, `[index]`, `.mapKey`). Validation never
//! panics and allocates only when it reports something: paths are built in one reused
//! buffer and the regular expressions it relies on are compiled once.
//!
//! Where classic Istio (1.4, the release the mixers belong to) and current Istio
//! disagree, the classic rule is kept and noted on the check.

mod checker;
mod common;
mod destination_rule;
mod gateway;
mod http_policies;
mod policy;
mod security;
mod service_entry;
mod sidecar;
mod virtual_service;

use crate::{error::FieldError, host, meta::ObjectMeta, resource::Resource, resource::Spec};

pub(crate) use checker::Checker;
pub use common::{validate_duration, validate_regex};

/// Validates the metadata common to every resource: the name must be a DNS-1123
/// subdomain and the namespace a DNS-1123 label.
pub fn validate_meta(meta: &ObjectMeta) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if meta.name.is_empty() {
        errors.push(FieldError::new("metadata.name", "name is required"));
    } else if !host::is_dns1123_subdomain(&meta.name) {
        errors.push(FieldError::new(
            "metadata.name",
            format!(
                "{:?} is not a valid name: lower-case letters, digits, '-' and '.', \
                 starting and ending with a letter or digit, at most 253 characters",
                meta.name
            ),
        ));
    }
    if !meta.namespace.is_empty() && !host::is_lower_dns1123_label(&meta.namespace) {
        errors.push(FieldError::new(
            "metadata.namespace",
            format!(
                "{:?} is not a valid namespace: lower-case letters, digits and '-', \
                 starting and ending with a letter or digit, at most 63 characters",
                meta.namespace
            ),
        ));
    }
    errors
}

/// Validates a resource's spec (and the kind-specific rules on its metadata).
pub fn validate(resource: &Resource) -> Vec<FieldError> {
    let mut c = Checker::new(&resource.meta.namespace);
    match &resource.spec {
        Spec::VirtualService(s) => virtual_service::check(&mut c, s),
        Spec::DestinationRule(s) => destination_rule::check(&mut c, s),
        Spec::Gateway(s) => {
            if !host::is_lower_dns1123_label(&resource.meta.name) {
                c.push_error(FieldError::new(
                    "metadata.name",
                    "a Gateway name must be a DNS-1123 label (no dots), as gateway references use it",
                ));
            }
            gateway::check(&mut c, s)
        }
        Spec::ServiceEntry(s) => service_entry::check(&mut c, s),
        Spec::Sidecar(s) => sidecar::check(&mut c, s),
        Spec::PeerAuthentication(s) => security::check_peer_authentication(&mut c, s),
        Spec::AuthorizationPolicy(s) => security::check_authorization_policy(&mut c, s),
        Spec::RequestAuthentication(s) => security::check_request_authentication(&mut c, s),
        Spec::Handler(s) => policy::check_handler(&mut c, s),
        Spec::Instance(s) => policy::check_instance(&mut c, s),
        Spec::Rule(s) => policy::check_rule(&mut c, s),
        Spec::AttributeManifest(s) => policy::check_attribute_manifest(&mut c, s),
    }
    c.into_errors()
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn meta(name: &str, ns: &str) -> ObjectMeta {
        ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_are_dns1123_subdomains() {
        assert!(validate_meta(&meta("reviews.v1", "default")).is_empty());
        let errs = validate_meta(&meta("Reviews", "default"));
        assert_eq!(errs[0].field, "metadata.name");
        let errs = validate_meta(&meta("", "default"));
        assert_eq!(errs[0].field, "metadata.name");
    }

    #[test]
    fn namespaces_are_dns1123_labels() {
        let errs = validate_meta(&meta("x", "book.info"));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.namespace");
    }
}
