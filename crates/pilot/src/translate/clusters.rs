//! CDS: one cluster per service port, plus one per DestinationRule subset.
//!
//! Clusters depend on the proxy that receives them. Envoy (sidecars, gateways) gets
//! every discovery type and load balancer Envoy has. A proxyless gRPC client accepts
//! far less (gRFC A27, A42, A48): EDS, LOGICAL_DNS and aggregate clusters only, and
//! the ROUND_ROBIN and RING_HASH policies everywhere; anything else makes it NACK the
//! whole CDS response. LEAST_REQUEST (A48) is known to Java and Go but refused by
//! C-core, which Python and C++ clients use. For proxyless clients pilot therefore
//! maps:
//!
//! - RANDOM, PASSTHROUGH, LEAST_REQUEST and unset simple policies to ROUND_ROBIN;
//! - MAGLEV to RING_HASH, the table size becoming the minimum ring size;
//! - DNS services to LOGICAL_DNS on their first endpoint (a wildcard host without
//!   endpoints, which no gRPC client can dial, gets no cluster);
//! - upstream TLS to certificate provider instances (see [`tls`]).
//!
//! Fields gRPC merely ignores (connect timeout, upstream HTTP protocol options,
//! consecutive-error outlier detection) are kept. Ring sizes are capped at 8M
//! entries, which both Envoy and gRPC require.
//!
//! Services resolved `NONE` (Kubernetes headless services, ServiceEntries without
//! endpoints) send a sidecar's connection where the application sent it: sidecars
//! get an `ORIGINAL_DST` cluster (load balancer `CLUSTER_PROVIDED`, no endpoints,
//! the DestinationRule's load balancer and locality settings not applying); a
//! ServiceEntry port's `targetPort` becomes the cluster's upstream port override.
//! Gateways, which receive connections addressed to themselves, and proxyless gRPC
//! clients, which have no original destination cluster, get an EDS cluster of the
//! service's endpoints instead.
//!
//! Under `ISTIO_MUTUAL` a cluster verifies the server's identity: the
//! DestinationRule's `subjectAltNames` when it lists some, else the service's
//! identities ([`Service::identities`]: its endpoints' service accounts as SPIFFE
//! ids, plus a ServiceEntry's `subjectAltNames`), the same list for every subset.

use std::collections::BTreeMap;

use mesh_api::envoy::{
    envoy::{
        config::{
            cluster::v3::{
                CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier,
                circuit_breakers::Thresholds,
                cluster::{
                    ClusterDiscoveryType, CommonLbConfig, DiscoveryType, EdsClusterConfig,
                    LbConfig, LbPolicy, MaglevLbConfig, OriginalDstLbConfig, RingHashLbConfig,
                    common_lb_config::{LocalityConfigSpecifier, LocalityWeightedLbConfig},
                },
            },
            core::v3::{
                Http1ProtocolOptions, Http2ProtocolOptions,
                HttpProtocolOptions as CommonHttpOptions, RoutingPriority,
            },
        },
        extensions::upstreams::http::v3::{
            HttpProtocolOptions,
            http_protocol_options::{
                ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
            },
        },
        r#type::v3::Percent as EnvoyPercent,
    },
    google::protobuf::{Any, Duration as PbDuration, UInt32Value, UInt64Value},
};
use mesh_model::{
    networking::{
        ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
        LoadBalancerSettings, OutlierDetection, Resolution, SimpleLb, Subset, TrafficPolicy,
    },
    protocol::Protocol,
};

use super::{
    MeshContext, NamedResource, ads_config_source, cluster_name,
    endpoints::{self, locality::LocalityPlan},
    into_sorted, pack, pack_named, parse_pb_duration, type_url,
};
use crate::model::{RegistryKind, Service, ServicePort};
use crate::proxy::{Proxy, ProxyKind};

pub mod tls;

/// Key of a cluster's upstream HTTP protocol options.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Connect timeout when no DestinationRule sets one.
pub const DEFAULT_CONNECT_TIMEOUT: PbDuration = PbDuration {
    seconds: 10,
    nanos: 0,
};

/// The largest ring (Envoy and gRPC both refuse more than 8M entries).
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;

/// Builds every cluster `proxy` receives, sorted by name.
pub fn build_clusters(ctx: &MeshContext, proxy: &Proxy) -> Vec<NamedResource> {
    let mut out: BTreeMap<String, Any> = BTreeMap::new();
    let mut notes = Notes::default();
    for service in ctx.services.values() {
        let rule = ctx.destination_rule(&service.host);
        let identities = service.identities(&ctx.trust_domain);
        for port in &service.ports {
            let subsets = rule.map(|r| r.subsets.as_slice()).unwrap_or(&[]);
            let subsets = std::iter::once(None)
                .chain(subsets.iter().filter(|s| !s.name.is_empty()).map(Some));
            for subset in subsets {
                let policy = effective_policy(rule, subset, port.number);
                let target = ClusterTarget {
                    service,
                    port,
                    subset,
                    identities: &identities,
                };
                if let Some(cluster) = build_cluster(target, &policy, proxy, &mut notes) {
                    out.insert(cluster.name.clone(), pack(type_url::CLUSTER, &cluster));
                }
            }
        }
    }
    notes.emit(proxy);
    into_sorted(out)
}

/// Problems met during one translation, by message, so each is logged once with the
/// clusters it concerns rather than once per cluster.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    by_message: BTreeMap<&'static str, Vec<String>>,
}

impl Notes {
    /// Records that `message` applies to `cluster`.
    pub(crate) fn add(&mut self, message: &'static str, cluster: &str) {
        self.by_message
            .entry(message)
            .or_default()
            .push(cluster.to_string());
    }

    fn emit(self, proxy: &Proxy) {
        for (message, clusters) in self.by_message {
            tracing::warn!(proxy = %proxy.group_key(), ?clusters, "{message}");
        }
    }
}

/// Whether `kind`'s clusters of `service` get their endpoints over EDS.
pub fn uses_eds(service: &Service, kind: ProxyKind) -> bool {
    match service.resolution {
        Resolution::Static => true,
        Resolution::None => !original_dst(service, kind),
        Resolution::Dns | Resolution::DnsRoundRobin => false,
    }
}

/// Whether `kind`'s clusters of `service` forward to the original destination:
/// services resolved `NONE`, for sidecars only.
pub fn original_dst(service: &Service, kind: ProxyKind) -> bool {
    service.resolution == Resolution::None && kind == ProxyKind::Sidecar
}

/// What one cluster is built for.
#[derive(Debug, Clone, Copy)]
struct ClusterTarget<'a> {
    service: &'a Service,
    port: &'a ServicePort,
    subset: Option<&'a Subset>,
    /// The identities the service's servers may present.
    identities: &'a [String],
}

/// The policies in force for one cluster: the rule's, then its port-level settings,
/// then the subset's, then the subset's port-level settings, each field overriding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EffectivePolicy {
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the upstream.
    pub tls: Option<ClientTlsSettings>,
}

impl EffectivePolicy {
    fn apply(&mut self, tp: &TrafficPolicy, port: u32) {
        if tp.load_balancer.is_some() {
            self.load_balancer.clone_from(&tp.load_balancer);
        }
        if tp.connection_pool.is_some() {
            self.connection_pool.clone_from(&tp.connection_pool);
        }
        if tp.outlier_detection.is_some() {
            self.outlier_detection.clone_from(&tp.outlier_detection);
        }
        if tp.tls.is_some() {
            self.tls.clone_from(&tp.tls);
        }
        let port_level = tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().is_some_and(|s| s.number == port));
        if let Some(p) = port_level {
            if p.load_balancer.is_some() {
                self.load_balancer.clone_from(&p.load_balancer);
            }
            if p.connection_pool.is_some() {
                self.connection_pool.clone_from(&p.connection_pool);
            }
            if p.outlier_detection.is_some() {
                self.outlier_detection.clone_from(&p.outlier_detection);
            }
            if p.tls.is_some() {
                self.tls.clone_from(&p.tls);
            }
        }
    }
}

/// The effective policy of a host's (or subset's) cluster on `port`.
pub fn effective_policy(
    rule: Option<&DestinationRule>,
    subset: Option<&Subset>,
    port: u32,
) -> EffectivePolicy {
    let mut policy = EffectivePolicy::default();
    if let Some(tp) = rule.and_then(|r| r.traffic_policy.as_deref()) {
        policy.apply(tp, port);
    }
    if let Some(tp) = subset.and_then(|s| s.traffic_policy.as_deref()) {
        policy.apply(tp, port);
    }
    policy
}

fn build_cluster(
    target: ClusterTarget<'_>,
    policy: &EffectivePolicy,
    proxy: &Proxy,
    notes: &mut Notes,
) -> Option<Cluster> {
    let ClusterTarget {
        service,
        port,
        subset,
        identities,
    } = target;
    let proxyless = proxy.kind == ProxyKind::Proxyless;
    let subset_name = subset.map(|s| s.name.as_str()).unwrap_or("");
    let name = cluster_name(port.number, subset_name, &service.host);
    let connect_timeout = policy
        .connection_pool
        .as_ref()
        .and_then(|cp| cp.tcp.as_ref())
        .and_then(|tcp| tcp.connect_timeout.as_deref())
        .and_then(parse_pb_duration)
        .filter(|d| d.seconds > 0 || d.nanos > 0)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let mut cluster = Cluster {
        name: name.clone(),
        connect_timeout: Some(connect_timeout),
        ..Default::default()
    };
    let plan = LocalityPlan::new(
        policy.load_balancer.as_ref(),
        policy.outlier_detection.as_ref(),
        proxy,
    );
    let original_dst = original_dst(service, proxy.kind);
    match service.resolution {
        Resolution::None if original_dst => {
            cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            cluster.lb_policy = LbPolicy::ClusterProvided as i32;
            let override_port = port
                .target_port
                .filter(|_| service.registry == RegistryKind::ServiceEntry);
            if let Some(value) = override_port {
                cluster.lb_config = Some(LbConfig::OriginalDstLbConfig(OriginalDstLbConfig {
                    upstream_port_override: Some(UInt32Value { value }),
                    ..Default::default()
                }));
            }
        }
        Resolution::Static | Resolution::None => {
            cluster.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            cluster.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads_config_source()),
                service_name: name.clone(),
            });
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            let labels = subset.map(|s| s.labels.clone()).unwrap_or_default();
            let round_robin = service.resolution == Resolution::DnsRoundRobin;
            // gRPC has no STRICT_DNS: proxyless clients resolve one name.
            let logical = round_robin || proxyless;
            let assignment =
                endpoints::dns_load_assignment(&name, service, port, &labels, logical, &plan);
            // A logical DNS cluster needs exactly one endpoint; with none (a wildcard
            // host without endpoints) Envoy gets a strict, empty cluster and gRPC,
            // which cannot dial a wildcard anyway, none at all.
            let count: usize = assignment
                .endpoints
                .iter()
                .map(|l| l.lb_endpoints.len())
                .sum();
            if proxyless && count != 1 {
                notes.add(
                    "DNS service without a resolvable endpoint; no cluster for proxyless gRPC",
                    &name,
                );
                return None;
            }
            let kind = if logical && count == 1 {
                DiscoveryType::LogicalDns
            } else {
                DiscoveryType::StrictDns
            };
            cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind as i32));
            cluster.load_assignment = Some(assignment);
        }
    }
    if !original_dst {
        apply_load_balancer(&mut cluster, policy.load_balancer.as_ref(), proxyless);
    }
    if let Some(cp) = &policy.connection_pool {
        cluster.circuit_breakers = circuit_breakers(cp);
    }
    if let Some(od) = &policy.outlier_detection {
        apply_outlier_detection(&mut cluster, od);
    }
    if plan.weighted() && !original_dst {
        cluster
            .common_lb_config
            .get_or_insert_with(CommonLbConfig::default)
            .locality_config_specifier = Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(
            LocalityWeightedLbConfig {},
        ));
    }
    let identity = tls::ClusterIdentity {
        host: &service.host,
        port: port.number,
        subset: subset_name,
    };
    cluster.transport_socket = tls::transport_socket(
        policy.tls.as_ref(),
        identity,
        identities,
        proxy.kind,
        &name,
        notes,
    );
    if let Some(options) = http_protocol_options(port, policy.connection_pool.as_ref()) {
        // A single entry, so the map encodes deterministically.
        cluster
            .typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), pack_named(&options));
    }
    Some(cluster)
}

/// Upstream HTTP settings for HTTP ports: HTTP/2 for gRPC and HTTP2 ports (or when
/// the pool asks to upgrade), and the pool's per-connection limits.
fn http_protocol_options(
    port: &ServicePort,
    pool: Option<&ConnectionPoolSettings>,
) -> Option<HttpProtocolOptions> {
    let protocol = port.protocol.filter(|p| p.is_http())?;
    let http = pool.and_then(|p| p.http.as_ref());
    let h2 = matches!(protocol, Protocol::Http2 | Protocol::Grpc)
        || http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade);
    let common = CommonHttpOptions {
        idle_timeout: http
            .and_then(|h| h.idle_timeout.as_deref())
            .and_then(parse_pb_duration),
        max_requests_per_connection: http
            .and_then(|h| h.max_requests_per_connection)
            .filter(|n| *n > 0)
            .map(|value| UInt32Value { value }),
        ..Default::default()
    };
    let has_common = common != CommonHttpOptions::default();
    if !h2 && !has_common {
        return None;
    }
    let protocol_config = if h2 {
        ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions {
            max_concurrent_streams: http
                .and_then(|h| h.max_concurrent_streams)
                .filter(|n| *n > 0)
                .map(|value| UInt32Value { value }),
            ..Default::default()
        })
    } else {
        ProtocolConfig::HttpProtocolOptions(Http1ProtocolOptions::default())
    };
    Some(HttpProtocolOptions {
        common_http_protocol_options: has_common.then_some(common),
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(protocol_config),
            },
        )),
        ..Default::default()
    })
}

/// The load balancer of a cluster. For proxyless clients only the policies every
/// gRPC client knows are used: MAGLEV becomes RING_HASH, the rest ROUND_ROBIN.
fn apply_load_balancer(cluster: &mut Cluster, lb: Option<&LoadBalancerSettings>, proxyless: bool) {
    let Some(lb) = lb else {
        cluster.lb_policy = LbPolicy::RoundRobin as i32;
        return;
    };
    if let Some(ch) = &lb.consistent_hash {
        let ring = match &ch.maglev {
            Some(maglev) if !proxyless => {
                cluster.lb_policy = LbPolicy::Maglev as i32;
                cluster.lb_config = Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
                    table_size: (maglev.table_size > 0).then_some(UInt64Value {
                        value: maglev.table_size,
                    }),
                }));
                return;
            }
            // A Maglev table of N entries spreads load like a ring of N entries.
            Some(maglev) => Some(maglev.table_size),
            None => ch
                .ring_hash
                .as_ref()
                .map(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size),
        };
        cluster.lb_policy = LbPolicy::RingHash as i32;
        cluster.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: ring.filter(|n| *n > 0).map(|n| UInt64Value {
                value: n.min(MAX_RING_SIZE),
            }),
            ..Default::default()
        }));
        return;
    }
    cluster.lb_policy = match lb.simple {
        Some(SimpleLb::LeastConn | SimpleLb::LeastRequest) if !proxyless => LbPolicy::LeastRequest,
        Some(SimpleLb::Random) if !proxyless => LbPolicy::Random,
        _ => LbPolicy::RoundRobin,
    } as i32;
}

fn circuit_breakers(cp: &ConnectionPoolSettings) -> Option<CircuitBreakers> {
    let u32v = |v: Option<u32>| v.filter(|n| *n > 0).map(|value| UInt32Value { value });
    let tcp = cp.tcp.as_ref();
    let http = cp.http.as_ref();
    let thresholds = Thresholds {
        priority: RoutingPriority::Default as i32,
        max_connections: u32v(tcp.and_then(|t| t.max_connections)),
        max_pending_requests: u32v(http.and_then(|h| h.http1_max_pending_requests)),
        max_requests: u32v(http.and_then(|h| h.http2_max_requests)),
        max_retries: u32v(http.and_then(|h| h.max_retries)),
        ..Default::default()
    };
    let empty = thresholds.max_connections.is_none()
        && thresholds.max_pending_requests.is_none()
        && thresholds.max_requests.is_none()
        && thresholds.max_retries.is_none();
    (!empty).then(|| CircuitBreakers {
        thresholds: vec![thresholds],
        ..Default::default()
    })
}

fn apply_outlier_detection(cluster: &mut Cluster, od: &OutlierDetection) {
    let u32v = |value: u32| UInt32Value { value };
    let mut out = EnvoyOutlier {
        interval: od.interval.as_deref().and_then(parse_pb_duration),
        base_ejection_time: od.base_ejection_time.as_deref().and_then(parse_pb_duration),
        max_ejection_percent: od.max_ejection_percent.map(|p| u32v(p.min(100))),
        // Istio turns success-rate ejection off; only consecutive errors eject.
        enforcing_success_rate: Some(u32v(0)),
        split_external_local_origin_errors: od.split_external_local_origin_errors,
        ..Default::default()
    };
    let five_xx = od.consecutive_5xx_errors.or(od.consecutive_errors);
    match five_xx {
        Some(n) if n > 0 => {
            out.consecutive_5xx = Some(u32v(n));
            out.enforcing_consecutive_5xx = Some(u32v(100));
        }
        _ => out.enforcing_consecutive_5xx = Some(u32v(0)),
    }
    if let Some(n) = od.consecutive_gateway_errors.filter(|n| *n > 0) {
        out.consecutive_gateway_failure = Some(u32v(n));
        out.enforcing_consecutive_gateway_failure = Some(u32v(100));
    }
    if let Some(n) = od
        .consecutive_local_origin_failures
        .filter(|n| *n > 0 && od.split_external_local_origin_errors)
    {
        out.consecutive_local_origin_failure = Some(u32v(n));
        out.enforcing_consecutive_local_origin_failure = Some(u32v(100));
    }
    cluster.outlier_detection = Some(out);
    if let Some(p) = od.min_health_percent {
        cluster
            .common_lb_config
            .get_or_insert_with(CommonLbConfig::default)
            .healthy_panic_threshold = Some(EnvoyPercent {
            value: f64::from(p.min(100)),
        });
    }
}
