//! The SDS server: `envoy.service.secret.v3.SecretDiscoveryService`, serving the
//! two secrets Istio's agent serves, so a stock Envoy takes its certificate and
//! every renewal without a restart:
//!
//! - `default`: the workload's certificate chain and private key
//!   (`tls_certificate`);
//! - `ROOTCA`: every trusted root (`validation_context.trusted_ca`).
//!
//! SDS is xDS with another service name: the same `DiscoveryRequest` and
//! `DiscoveryResponse` messages, nonces, ACKs and NACKs. So the streams are
//! mesh-xds's ADS state machines, reached through [`SdsService`], which renames the
//! two streaming methods to their ADS twins. A renewal publishes a new snapshot;
//! every open stream is pushed the secrets it asked for, with a new version.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use mesh_api::envoy::envoy::{
    config::core::v3::{DataSource, data_source::Specifier},
    extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, Secret, TlsCertificate, secret,
    },
};
use mesh_xds::{
    AdsServer, Any, ServerOptions, SingleGroup, Snapshot, SnapshotCache, SyncStatus,
    TypedResources, XdsMetrics, XdsResource, server::AdsService, type_url,
};
use prost::Message;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{
    Status,
    codegen::{BoxFuture, http},
    server::NamedService,
};

use super::CertBundle;

/// The full gRPC name of the SDS service.
pub const SDS_SERVICE: &str = "envoy.service.secret.v3.SecretDiscoveryService";
/// The workload certificate's secret name (Istio's).
pub const DEFAULT_SECRET: &str = "default";
/// The trusted roots' secret name (Istio's).
pub const ROOT_SECRET: &str = "ROOTCA";

const SDS_SOTW_PATH: &str = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets";
const SDS_DELTA_PATH: &str = "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets";
const ADS_SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const ADS_DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The snapshot group every SDS client is served from.
const GROUP: &str = "";

fn inline(bytes: &[u8]) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineBytes(bytes.to_vec())),
        ..Default::default()
    })
}

fn resource(secret: Secret) -> XdsResource {
    let name = secret.name.clone();
    XdsResource::new(
        name,
        Any {
            type_url: type_url::SECRET.to_string(),
            value: secret.encode_to_vec(),
        },
    )
}

/// The `default` and `ROOTCA` secrets of a bundle.
pub fn snapshot(bundle: &CertBundle) -> Snapshot {
    let default = Secret {
        name: DEFAULT_SECRET.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(bundle.chain_pem.as_bytes()),
            private_key: inline(bundle.key_pem().as_bytes()),
            ..Default::default()
        })),
    };
    let roots = Secret {
        name: ROOT_SECRET.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(bundle.roots_pem.as_bytes()),
                ..Default::default()
            },
        )),
    };
    Snapshot::new().with(
        type_url::SECRET,
        TypedResources::new([resource(default), resource(roots)]),
    )
}

/// The secrets served, published by the agent at each renewal.
///
/// Deliberately without `Debug`: the snapshot holds the private key.
#[derive(Clone)]
pub struct SecretCache {
    cache: SnapshotCache,
}

impl SecretCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            cache: SnapshotCache::new(),
        }
    }

    /// Publishes the secrets of `bundle` to every stream.
    pub fn publish(&self, bundle: &CertBundle) {
        self.cache.set(GROUP, snapshot(bundle));
    }
}

impl Default for SecretCache {
    fn default() -> Self {
        Self::new()
    }
}

/// The tonic service for SDS: `StreamSecrets` and `DeltaSecrets`, served by
/// mesh-xds's ADS streams. `FetchSecrets` (unary) answers `Unimplemented`.
#[derive(Clone)]
pub struct SdsService {
    inner: AdsService,
}

impl SdsService {
    /// A service streaming `cache`'s secrets; streams are refused with
    /// `Unavailable` while `ready` is false (no certificate yet).
    pub fn new(
        cache: &SecretCache,
        ready: watch::Receiver<bool>,
        metrics: Arc<XdsMetrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let server = AdsServer::new(
            cache.cache.clone(),
            Arc::new(SingleGroup),
            ready,
            SyncStatus::new(),
            metrics,
            ServerOptions {
                control_plane_id: Some("citadel-agent".into()),
                push_order: vec![type_url::SECRET],
                ..ServerOptions::default()
            },
            shutdown,
        );
        Self {
            inner: server.into_service(),
        }
    }
}

impl NamedService for SdsService {
    const NAME: &'static str = SDS_SERVICE;
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for SdsService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tonic::codegen::Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let target = match req.uri().path() {
            SDS_SOTW_PATH => ADS_SOTW_PATH,
            SDS_DELTA_PATH => ADS_DELTA_PATH,
            _ => {
                return Box::pin(async {
                    Ok(Status::unimplemented("only StreamSecrets and DeltaSecrets").into_http())
                });
            }
        };
        *req.uri_mut() = http::Uri::from_static(target);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_method_names_differ_from_ads_only_in_service() {
        assert_eq!(
            SDS_SOTW_PATH.rsplit_once('/').map(|(s, _)| s),
            Some(format!("/{SDS_SERVICE}").as_str())
        );
        assert!(ADS_SOTW_PATH.starts_with(&format!("/{}/", mesh_xds::server::SERVICE_NAME)));
        assert!(ADS_DELTA_PATH.starts_with(&format!("/{}/", mesh_xds::server::SERVICE_NAME)));
    }
}
