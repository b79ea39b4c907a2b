//! Traffic redirection settings: the defaults, overridden per pod by the
//! `traffic.sidecar.istio.io/*` annotations, checked before anything is injected
//! (a bad value refuses the pod with the annotation's name, rather than starting
//! a proxy whose iptables rules fail).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Values;

/// Annotation: outbound IP ranges redirected to the proxy (`*` for all).
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
/// Annotation: outbound IP ranges not redirected.
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
/// Annotation: inbound ports redirected (`*` for all).
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
/// Annotation: inbound ports not redirected.
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// Annotation: outbound ports redirected even when their IP range is not.
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
/// Annotation: outbound ports not redirected.
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
/// Annotation: `REDIRECT` (NAT) or `TPROXY`.
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";

/// A pod's redirection settings, comma-separated as the init container takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// `REDIRECT` or `TPROXY`.
    pub interception_mode: String,
    /// Outbound CIDRs redirected, or `*`.
    #[serde(rename = "includeOutboundIPRanges")]
    pub include_outbound_ip_ranges: String,
    /// Outbound CIDRs not redirected.
    #[serde(rename = "excludeOutboundIPRanges")]
    pub exclude_outbound_ip_ranges: String,
    /// Inbound ports redirected, or `*`.
    pub include_inbound_ports: String,
    /// Inbound ports not redirected: the pod's own plus the proxy's ports.
    pub exclude_inbound_ports: String,
    /// Outbound ports always redirected.
    pub include_outbound_ports: String,
    /// Outbound ports never redirected.
    pub exclude_outbound_ports: String,
}

/// A bad annotation value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}={value:?}: {reason}")]
pub struct AnnotationError {
    /// The annotation.
    pub annotation: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl Redirect {
    /// The settings for a pod with these annotations.
    pub fn for_pod(
        values: &Values,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Self, AnnotationError> {
        let get = |name: &'static str, default: &str| -> (&'static str, String) {
            (
                name,
                annotations
                    .get(name)
                    .map_or_else(|| default.to_string(), |v| v.trim().to_string()),
            )
        };
        let fail = |(annotation, value): (&'static str, String), reason: String| AnnotationError {
            annotation,
            value,
            reason,
        };
        let check_ranges = |entry: (&'static str, String), star: bool| {
            check_ip_ranges(&entry.1, star).map_err(|reason| fail(entry, reason))
        };
        let check_ports = |entry: (&'static str, String), star: bool| {
            check_ports(&entry.1, star).map_err(|reason| fail(entry, reason))
        };

        let mode = get(INTERCEPTION_MODE, "REDIRECT");
        let interception_mode = match mode.1.as_str() {
            "REDIRECT" | "TPROXY" => mode.1.clone(),
            _ => return Err(fail(mode, "must be REDIRECT or TPROXY".into())),
        };
        let include_outbound_ip_ranges = check_ranges(
            get(
                INCLUDE_OUTBOUND_IP_RANGES,
                &values.include_outbound_ip_ranges,
            ),
            true,
        )?;
        let exclude_outbound_ip_ranges = check_ranges(
            get(
                EXCLUDE_OUTBOUND_IP_RANGES,
                &values.exclude_outbound_ip_ranges,
            ),
            false,
        )?;
        let include_inbound_ports = check_ports(get(INCLUDE_INBOUND_PORTS, "*"), true)?;
        let mut exclude_inbound_ports = check_ports(get(EXCLUDE_INBOUND_PORTS, ""), false)?;
        // The proxy's own ports are never redirected to itself.
        for port in [values.status_port, values.readiness_port, values.stats_port] {
            let port = port.to_string();
            if !exclude_inbound_ports.split(',').any(|p| p == port) {
                if !exclude_inbound_ports.is_empty() {
                    exclude_inbound_ports.push(',');
                }
                exclude_inbound_ports.push_str(&port);
            }
        }
        let include_outbound_ports = check_ports(get(INCLUDE_OUTBOUND_PORTS, ""), false)?;
        let exclude_outbound_ports = check_ports(get(EXCLUDE_OUTBOUND_PORTS, ""), false)?;
        Ok(Self {
            interception_mode,
            include_outbound_ip_ranges,
            exclude_outbound_ip_ranges,
            include_inbound_ports,
            exclude_inbound_ports,
            include_outbound_ports,
            exclude_outbound_ports,
        })
    }
}

/// Checks a comma-separated CIDR list (`*` alone allowed when `star`), giving it
/// back trimmed.
pub fn check_ip_ranges(value: &str, star: bool) -> Result<String, String> {
    check_list(value, star, |entry| {
        let net: ipnet::IpNet = entry
            .parse()
            .map_err(|_| format!("{entry:?} is not a CIDR (e.g. 10.0.0.0/8)"))?;
        Ok(net.to_string())
    })
}

/// Checks a comma-separated port list (`*` alone allowed when `star`), giving it
/// back trimmed.
pub fn check_ports(value: &str, star: bool) -> Result<String, String> {
    check_list(value, star, |entry| match entry.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port.to_string()),
        _ => Err(format!("{entry:?} is not a port (1-65535)")),
    })
}

/// A comma-separated list, each entry checked and normalized by `entry`.
fn check_list(
    value: &str,
    star: bool,
    entry: impl Fn(&str) -> Result<String, String>,
) -> Result<String, String> {
    let value = value.trim();
    if value == "*" {
        return if star {
            Ok("*".into())
        } else {
            Err("`*` is not allowed here".into())
        };
    }
    let entries = value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(entry)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(entries.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_redirect_everything_but_the_proxy_ports() {
        let r = Redirect::for_pod(&Values::default(), &BTreeMap::new()).expect("defaults");
        assert_eq!(r.include_outbound_ip_ranges, "*");
        assert_eq!(r.exclude_outbound_ip_ranges, "");
        assert_eq!(r.include_inbound_ports, "*");
        assert_eq!(r.exclude_inbound_ports, "15020,15021,15090");
        assert_eq!(r.interception_mode, "REDIRECT");
    }

    #[test]
    fn annotations_override_and_are_normalized() {
        let r = Redirect::for_pod(
            &Values::default(),
            &annotations(&[
                (INCLUDE_OUTBOUND_IP_RANGES, " 10.0.0.0/8, fd00::/8 "),
                (EXCLUDE_INBOUND_PORTS, "8081,15020"),
                (EXCLUDE_OUTBOUND_PORTS, "5432"),
                (INCLUDE_INBOUND_PORTS, ""),
                (INTERCEPTION_MODE, "TPROXY"),
            ]),
        )
        .expect("valid");
        assert_eq!(r.include_outbound_ip_ranges, "10.0.0.0/8,fd00::/8");
        assert_eq!(r.exclude_inbound_ports, "8081,15020,15021,15090");
        assert_eq!(r.exclude_outbound_ports, "5432");
        assert_eq!(r.include_inbound_ports, "");
        assert_eq!(r.interception_mode, "TPROXY");
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (name, value) in [
            (INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "*"),
            (INCLUDE_INBOUND_PORTS, "80,http"),
            (EXCLUDE_INBOUND_PORTS, "0"),
            (EXCLUDE_OUTBOUND_PORTS, "70000"),
            (INTERCEPTION_MODE, "MAGIC"),
        ] {
            let err = Redirect::for_pod(&Values::default(), &annotations(&[(name, value)]))
                .expect_err(value);
            assert_eq!(err.annotation, name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
