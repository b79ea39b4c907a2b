//! Upstream TLS: a DestinationRule's `tls` settings as a cluster transport socket.
//!
//! Envoy and gRPC get their certificates in different ways, so the same rule gives
//! two shapes:
//!
//! - Envoy (sidecars and gateways) reads certificate files or fetches secrets over
//!   SDS. `ISTIO_MUTUAL` names the workload's own secrets (`default` for its
//!   certificate, `ROOTCA` for the mesh root); a `credentialName` names a secret that
//!   holds the client certificate, with the CA bundle in `<credentialName>-cacert`.
//! - Proxyless gRPC clients speak no SDS and refuse SDS or file references (gRFC
//!   A29). They load certificates through *certificate provider instances* declared in
//!   their bootstrap file; pilot can only name an instance. The mesh convention is one
//!   instance called `default` serving the workload certificate (`default`) and the
//!   root (`ROOTCA`), which is exactly what `ISTIO_MUTUAL` needs (a client whose
//!   bootstrap lacks that instance refuses such clusters). `SIMPLE` and
//!   `MUTUAL` point at files or secrets that no bootstrap instance is known to serve,
//!   so they cannot be expressed for gRPC: such clusters stay plaintext for proxyless
//!   clients and the translation warns. gRPC reads server identities from the untyped
//!   `match_subject_alt_names`, Envoy from `match_typed_subject_alt_names`.
//!
//! Under `ISTIO_MUTUAL` the server identities checked are the rule's
//! `subjectAltNames`, or when it lists none the service's own identities (its
//! endpoints' SPIFFE ids and a ServiceEntry's `subjectAltNames`); with neither, any
//! certificate the mesh root signed is accepted.

use std::net::IpAddr;

use mesh_api::envoy::envoy::{
    config::core::v3::{
        DataSource, TransportSocket, data_source::Specifier, transport_socket::ConfigType,
    },
    extensions::transport_sockets::tls::v3::{
        CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
        SdsSecretConfig, SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext,
        common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
        subject_alt_name_matcher::SanType,
    },
    r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern},
};
use mesh_model::networking::{ClientTlsMode, ClientTlsSettings};

use super::super::{ads_config_source, pack_named};
use super::Notes;
use crate::proxy::ProxyKind;

/// Name of Envoy's TLS transport socket.
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// The SDS secret (and certificate name) of a workload's own certificate.
pub const WORKLOAD_SECRET: &str = "default";

/// The SDS secret (and certificate name) of the mesh root certificate.
pub const ROOT_CA_SECRET: &str = "ROOTCA";

/// The certificate provider instance proxyless clients declare in their bootstrap.
pub const PROVIDER_INSTANCE: &str = "default";

/// ALPN offered on mesh mTLS connections, so the server side knows a peer proxy is
/// calling (and can exchange metadata with it).
pub const ISTIO_ALPN: [&str; 2] = ["istio-peer-exchange", "istio"];

/// Which cluster a TLS context is for: its SNI derives from it.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClusterIdentity<'a> {
    /// Service host.
    pub host: &'a str,
    /// Service port.
    pub port: u32,
    /// Subset name, empty for the service cluster.
    pub subset: &'a str,
}

impl ClusterIdentity<'_> {
    /// `outbound_.<port>_.<subset>_.<host>`, the SNI mesh mTLS uses so a server-side
    /// proxy can tell which service and subset the client meant.
    pub fn istio_sni(&self) -> String {
        format!("outbound_.{}_.{}_.{}", self.port, self.subset, self.host)
    }
}

/// The transport socket for a cluster, `None` for plaintext.
pub(super) fn transport_socket(
    settings: Option<&ClientTlsSettings>,
    id: ClusterIdentity<'_>,
    identities: &[String],
    kind: ProxyKind,
    cluster: &str,
    notes: &mut Notes,
) -> Option<TransportSocket> {
    let settings = settings?;
    let mode = settings.mode.unwrap_or(ClientTlsMode::Disable);
    let context = match (kind, mode) {
        (_, ClientTlsMode::Disable) => return None,
        (ProxyKind::Proxyless, ClientTlsMode::IstioMutual) => {
            proxyless_istio_mutual(settings, id, istio_sans(settings, identities))
        }
        (ProxyKind::Proxyless, ClientTlsMode::Simple | ClientTlsMode::Mutual) => {
            notes.add(
                "proxyless gRPC clients cannot load DestinationRule certificate files or \
                 secrets (no SDS, no matching certificate provider); TLS left off",
                cluster,
            );
            return None;
        }
        (_, ClientTlsMode::IstioMutual) => {
            envoy_istio_mutual(settings, id, istio_sans(settings, identities))
        }
        (_, ClientTlsMode::Simple | ClientTlsMode::Mutual) => {
            envoy_simple_or_mutual(settings, id, mode == ClientTlsMode::Mutual, cluster, notes)
        }
    };
    Some(TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(ConfigType::TypedConfig(pack_named(&context))),
    })
}

/// The server identities `ISTIO_MUTUAL` checks: the rule's, else the service's.
fn istio_sans<'a>(settings: &'a ClientTlsSettings, identities: &'a [String]) -> &'a [String] {
    if settings.subject_alt_names.iter().any(|s| !s.is_empty()) {
        &settings.subject_alt_names
    } else {
        identities
    }
}

fn envoy_istio_mutual(
    settings: &ClientTlsSettings,
    id: ClusterIdentity<'_>,
    sans: &[String],
) -> UpstreamTlsContext {
    let common = CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds_secret(WORKLOAD_SECRET)],
        validation_context_type: Some(validation_over_sds(ROOT_CA_SECRET, sans)),
        alpn_protocols: ISTIO_ALPN.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: non_empty_or(&settings.sni, || id.istio_sni()),
        ..Default::default()
    }
}

fn envoy_simple_or_mutual(
    settings: &ClientTlsSettings,
    id: ClusterIdentity<'_>,
    mutual: bool,
    cluster: &str,
    notes: &mut Notes,
) -> UpstreamTlsContext {
    let sans = &settings.subject_alt_names;
    let skip_verify = settings.insecure_skip_verify == Some(true);
    let validation = if skip_verify {
        None
    } else if !settings.credential_name.is_empty() {
        Some(validation_over_sds(
            &format!("{}-cacert", settings.credential_name),
            sans,
        ))
    } else if !settings.ca_certificates.is_empty() {
        Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(file(&settings.ca_certificates)),
                crl: (!settings.ca_crl.is_empty()).then(|| file(&settings.ca_crl)),
                match_typed_subject_alt_names: typed_san_matchers(sans),
                ..Default::default()
            },
        ))
    } else {
        if !sans.is_empty() {
            // Envoy refuses SAN matching without a trusted CA.
            notes.add(
                "subjectAltNames need caCertificates or credentialName; not verified",
                cluster,
            );
        }
        None
    };
    let mut common = CommonTlsContext {
        validation_context_type: validation,
        ..Default::default()
    };
    if mutual {
        if !settings.credential_name.is_empty() {
            common
                .tls_certificate_sds_secret_configs
                .push(sds_secret(&settings.credential_name));
        } else if !settings.client_certificate.is_empty() && !settings.private_key.is_empty() {
            common.tls_certificates.push(TlsCertificate {
                certificate_chain: Some(file(&settings.client_certificate)),
                private_key: Some(file(&settings.private_key)),
                ..Default::default()
            });
        } else {
            notes.add(
                "MUTUAL TLS without clientCertificate and privateKey or credentialName; \
                 no client certificate sent",
                cluster,
            );
        }
    }
    let sni = if settings.sni.is_empty() && !id.host.contains('*') {
        id.host.to_string()
    } else {
        settings.sni.clone()
    };
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni,
        ..Default::default()
    }
}

fn proxyless_istio_mutual(
    settings: &ClientTlsSettings,
    id: ClusterIdentity<'_>,
    sans: &[String],
) -> UpstreamTlsContext {
    #[allow(deprecated)] // gRPC reads the untyped SAN matchers only.
    let validation = CertificateValidationContext {
        ca_certificate_provider_instance: Some(provider(ROOT_CA_SECRET)),
        match_subject_alt_names: sans
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| exact(s))
            .collect(),
        ..Default::default()
    };
    let common = CommonTlsContext {
        tls_certificate_provider_instance: Some(provider(WORKLOAD_SECRET)),
        validation_context_type: Some(ValidationContextType::ValidationContext(validation)),
        ..Default::default()
    };
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: non_empty_or(&settings.sni, || id.istio_sni()),
        ..Default::default()
    }
}

fn provider(certificate: &str) -> CertificateProviderPluginInstance {
    CertificateProviderPluginInstance {
        instance_name: PROVIDER_INSTANCE.to_string(),
        certificate_name: certificate.to_string(),
    }
}

/// A secret fetched over the ADS stream.
fn sds_secret(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads_config_source()),
    }
}

/// Validation with the trusted CA from SDS secret `secret`, plus SAN matching when
/// `sans` is not empty (which needs the combined form).
fn validation_over_sds(secret: &str, sans: &[String]) -> ValidationContextType {
    if sans.is_empty() {
        return ValidationContextType::ValidationContextSdsSecretConfig(sds_secret(secret));
    }
    ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
        default_validation_context: Some(CertificateValidationContext {
            match_typed_subject_alt_names: typed_san_matchers(sans),
            ..Default::default()
        }),
        validation_context_sds_secret_config: Some(sds_secret(secret)),
        ..Default::default()
    })
}

/// Exact SAN matchers, typed by what each name looks like: URIs (SPIFFE ids), IP
/// addresses, DNS names otherwise.
fn typed_san_matchers(sans: &[String]) -> Vec<SubjectAltNameMatcher> {
    sans.iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            let san_type = if s.contains("://") {
                SanType::Uri
            } else if s.parse::<IpAddr>().is_ok() {
                SanType::IpAddress
            } else {
                SanType::Dns
            };
            SubjectAltNameMatcher {
                san_type: san_type as i32,
                matcher: Some(exact(s)),
                oid: String::new(),
            }
        })
        .collect()
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.to_string())),
        ignore_case: false,
    }
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

fn non_empty_or(s: &str, default: impl FnOnce() -> String) -> String {
    if s.is_empty() {
        default()
    } else {
        s.to_string()
    }
}
