//! DestinationRule validation.

use super::{Checker, common};
use crate::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, LocalityLbSetting, OutlierDetection, PortTrafficPolicy, TrafficPolicy,
};

pub(super) fn check(c: &mut Checker<'_>, dr: &DestinationRule) {
    c.at("host", |c| {
        if dr.host.is_empty() {
            c.error("host is required");
        } else {
            common::host(c, &dr.host);
        }
    });
    c.opt("trafficPolicy", &dr.traffic_policy, |c, tp| {
        traffic_policy(c, tp)
    });
    c.each("subsets", &dr.subsets, |c, s| {
        c.at("name", |c| common::dns_label(c, &s.name, "subset name"));
        c.at("labels", |c| common::labels(c, &s.labels));
        c.opt("trafficPolicy", &s.traffic_policy, |c, tp| {
            traffic_policy(c, tp)
        });
    });
    for i in common::repeated(&dr.subsets, |s| {
        (!s.name.is_empty()).then_some(s.name.as_str())
    }) {
        let name = &dr.subsets[i].name;
        c.at("subsets", |c| {
            c.index(i, |c| {
                c.error_at("name", format!("duplicate subset name {name:?}"))
            })
        });
    }
    common::export_to(c, &dr.export_to, false);
    if let Some(sel) = &dr.workload_selector {
        c.at("workloadSelector", |c| {
            c.at("matchLabels", |c| {
                common::selector_labels(c, &sel.match_labels)
            })
        });
        let ns = c.namespace;
        if dr.export_to.iter().any(|e| e != "." && e != ns) {
            c.error_at("exportTo", "a DestinationRule with a workloadSelector cannot be exported beyond its own namespace");
        }
    }
}

fn traffic_policy(c: &mut Checker<'_>, tp: &TrafficPolicy) {
    if tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
    {
        c.error("a traffic policy must set at least one field");
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        c.error_at(
            "proxyProtocol",
            "tunnel and proxyProtocol are mutually exclusive",
        );
    }
    c.opt("loadBalancer", &tp.load_balancer, |c, lb| {
        load_balancer(c, lb)
    });
    c.opt("connectionPool", &tp.connection_pool, |c, cp| {
        connection_pool(c, cp)
    });
    c.opt("outlierDetection", &tp.outlier_detection, |c, od| {
        outlier_detection(c, od)
    });
    c.opt("tls", &tp.tls, |c, t| client_tls(c, t));
    c.each("portLevelSettings", &tp.port_level_settings, |c, p| {
        port_policy(c, p)
    });
    c.opt("tunnel", &tp.tunnel, |c, t| {
        if !t.protocol.is_empty() && t.protocol != "CONNECT" && t.protocol != "POST" {
            c.error_at("protocol", "tunnel protocol must be CONNECT or POST");
        }
        c.at("targetHost", |c| {
            if crate::host::validate_fqdn(&t.target_host).is_err()
                && !crate::host::is_ip(&t.target_host)
            {
                c.error(format!(
                    "tunnel target {:?} is not a host name or IP address",
                    t.target_host
                ));
            }
        });
        c.at("targetPort", |c| common::port(c, t.target_port));
    });
}

fn port_policy(c: &mut Checker<'_>, p: &PortTrafficPolicy) {
    match &p.port {
        None => c.error_at("port", "a port-level setting needs a port"),
        Some(port) => c.at("port", |c| c.at("number", |c| common::port(c, port.number))),
    }
    if p.load_balancer.is_none()
        && p.connection_pool.is_none()
        && p.outlier_detection.is_none()
        && p.tls.is_none()
    {
        c.error("a port-level setting must set at least one policy");
    }
    c.opt("loadBalancer", &p.load_balancer, |c, lb| {
        load_balancer(c, lb)
    });
    c.opt("connectionPool", &p.connection_pool, |c, cp| {
        connection_pool(c, cp)
    });
    c.opt("outlierDetection", &p.outlier_detection, |c, od| {
        outlier_detection(c, od)
    });
    c.opt("tls", &p.tls, |c, t| client_tls(c, t));
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut f = 3u64;
    while f.saturating_mul(f) <= n {
        if n.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

fn load_balancer(c: &mut Checker<'_>, lb: &LoadBalancerSettings) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        c.error("simple and consistentHash are mutually exclusive");
    }
    c.opt("consistentHash", &lb.consistent_hash, |c, ch| {
        let keys = usize::from(ch.http_header_name.is_some())
            + usize::from(ch.http_cookie.is_some())
            + usize::from(ch.use_source_ip.is_some())
            + usize::from(ch.http_query_parameter_name.is_some());
        if keys != 1 {
            c.error("exactly one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName must be set");
        }
        c.opt("httpCookie", &ch.http_cookie, |c, cookie| {
            if cookie.name.is_empty() {
                c.error_at("name", "cookie name is required");
            }
            common::duration_or_zero(c, "ttl", &cookie.ttl);
        });
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            c.error("ringHash and maglev are mutually exclusive");
        }
        if ch.minimum_ring_size.is_some() && (ch.ring_hash.is_some() || ch.maglev.is_some()) {
            c.error_at("minimumRingSize", "minimumRingSize cannot be combined with ringHash or maglev");
        }
        c.opt("maglev", &ch.maglev, |c, m| {
            if m.table_size == 0 || m.table_size >= 5_000_011 || !is_prime(m.table_size) {
                c.error_at("tableSize", "maglev tableSize must be a prime below 5000011");
            }
        });
    });
    c.opt("localityLbSetting", &lb.locality_lb_setting, |c, l| {
        locality(c, l)
    });
    common::duration(c, "warmupDurationSecs", &lb.warmup_duration_secs);
    c.opt("warmup", &lb.warmup, |c, w| {
        if w.duration.is_none() {
            c.error_at("duration", "duration is required");
        }
        common::duration(c, "duration", &w.duration);
        if let Some(p) = w.minimum_percent
            && !(0.0..=100.0).contains(&p)
        {
            c.error_at(
                "minimumPercent",
                format!("minimumPercent {p} must be in the range 0..100"),
            );
        }
        if let Some(a) = w.aggression
            && !(a > 0.0 && a.is_finite())
        {
            c.error_at(
                "aggression",
                format!("aggression {a} must be greater than 0"),
            );
        }
    });
}

fn locality(c: &mut Checker<'_>, l: &LocalityLbSetting) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        c.error("distribute and failover are mutually exclusive");
    }
    c.each("distribute", &l.distribute, |c, d| {
        c.at("from", |c| locality_name(c, &d.from));
        let mut total: u64 = 0;
        if !d.to.is_empty() {
            c.at("to", |c| {
                for (loc, w) in &d.to {
                    c.at(loc, |c| {
                        locality_name(c, loc);
                        if *w == 0 {
                            c.error("locality weight must be at least 1");
                        }
                    });
                    total += u64::from(*w);
                }
            });
        }
        if total != 100 {
            c.error_at(
                "to",
                format!("locality weights add up to {total}; they must add up to 100"),
            );
        }
    });
    c.each("failover", &l.failover, |c, f| {
        if f.from == f.to {
            c.error("failover must name two different regions");
        }
        if f.to.contains('*') {
            c.error_at("to", "the failover region must not contain a `*` wildcard");
        }
    });
}

fn locality_name(c: &mut Checker<'_>, loc: &str) {
    let stars = loc.matches('*').count();
    if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
        c.error(format!(
            "locality {loc:?}: at most one `*`, and only at the end"
        ));
    }
    if loc.is_empty() || loc.splitn(3, '/').any(str::is_empty) {
        c.error(format!(
            "locality {loc:?} must not have an empty region, zone or subzone"
        ));
    }
}

pub(super) fn connection_pool(c: &mut Checker<'_>, cp: &ConnectionPoolSettings) {
    if cp.tcp.is_none() && cp.http.is_none() {
        c.error("a connection pool must set tcp or http");
    }
    c.opt("tcp", &cp.tcp, |c, t| {
        common::duration(c, "connectTimeout", &t.connect_timeout);
        common::duration(c, "maxConnectionDuration", &t.max_connection_duration);
        common::duration_or_zero(c, "idleTimeout", &t.idle_timeout);
        c.opt("tcpKeepalive", &t.tcp_keepalive, |c, k| {
            common::duration(c, "time", &k.time);
            common::duration(c, "interval", &k.interval);
        });
    });
    c.opt("http", &cp.http, |c, h| {
        common::duration(c, "idleTimeout", &h.idle_timeout);
        c.opt("http2KeepAlive", &h.http2_keep_alive, |c, k| {
            for (field, value) in [("interval", &k.interval), ("timeout", &k.timeout)] {
                if value.is_none() {
                    c.error_at(field, format!("{field} is required"));
                }
                common::duration(c, field, value);
            }
        });
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && h.use_client_protocol {
            c.error_at(
                "useClientProtocol",
                "useClientProtocol cannot be true when h2UpgradePolicy is UPGRADE",
            );
        }
    });
}

fn outlier_detection(c: &mut Checker<'_>, od: &OutlierDetection) {
    common::duration(c, "interval", &od.interval);
    common::duration(c, "baseEjectionTime", &od.base_ejection_time);
    if let Some(p) = od.max_ejection_percent
        && p > 100
    {
        c.error_at(
            "maxEjectionPercent",
            format!("maxEjectionPercent {p} must be in the range 0..100"),
        );
    }
    if let Some(p) = od.min_health_percent
        && p > 100
    {
        c.error_at(
            "minHealthPercent",
            format!("minHealthPercent {p} must be in the range 0..100"),
        );
    }
    if od.consecutive_local_origin_failures.is_some_and(|n| n > 0)
        && !od.split_external_local_origin_errors
    {
        c.error_at(
            "consecutiveLocalOriginFailures",
            "consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true",
        );
    }
}

/// Checks client TLS settings: MUTUAL needs a certificate and key unless a
/// credentialName supplies them, and a credentialName excludes certificate files.
fn client_tls(c: &mut Checker<'_>, t: &ClientTlsSettings) {
    let mode = t.mode.unwrap_or(ClientTlsMode::Disable);
    let has_files = !t.client_certificate.is_empty()
        || !t.private_key.is_empty()
        || !t.ca_certificates.is_empty();
    if t.insecure_skip_verify == Some(true) {
        if mode == ClientTlsMode::Simple
            && (!t.ca_certificates.is_empty() || !t.credential_name.is_empty())
        {
            c.error_at(
                "insecureSkipVerify",
                "insecureSkipVerify cannot be combined with caCertificates or credentialName",
            );
        }
        if mode == ClientTlsMode::Mutual && !t.ca_certificates.is_empty() {
            c.error_at(
                "insecureSkipVerify",
                "insecureSkipVerify cannot be combined with caCertificates",
            );
        }
    }
    let by_credential = !t.credential_name.is_empty()
        && matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual);
    if by_credential {
        // The certificates come from the credential; files would be ignored.
        if has_files || !t.ca_crl.is_empty() {
            c.error_at(
                "credentialName",
                "credentialName cannot be combined with clientCertificate, privateKey, caCertificates or caCrl",
            );
        }
    } else if mode == ClientTlsMode::Mutual {
        if t.client_certificate.is_empty() {
            c.error_at(
                "clientCertificate",
                "MUTUAL TLS needs clientCertificate (or credentialName)",
            );
        }
        if t.private_key.is_empty() {
            c.error_at(
                "privateKey",
                "MUTUAL TLS needs privateKey (or credentialName)",
            );
        }
    }
}

#[cfg(test)]
#[path = "destination_rule_tests.rs"]
mod tests;
