//! Gateway validation, and the server TLS checks Sidecar ingress listeners share.

use super::{Checker, common};
use crate::{
    host,
    networking::{Gateway, Port, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol},
    protocol::{PROTOCOL_NAMES, Protocol},
};

pub(super) fn check(c: &mut Checker<'_>, gw: &Gateway) {
    if gw.servers.is_empty() {
        c.error_at("servers", "a Gateway needs at least one server");
    }
    c.each("servers", &gw.servers, |c, s| server(c, s));
    fn port_name(s: &Server) -> Option<&str> {
        s.port
            .as_ref()
            .filter(|p| !p.name.is_empty())
            .map(|p| p.name.as_str())
    }
    for i in common::repeated(&gw.servers, port_name) {
        let name = port_name(&gw.servers[i]).unwrap_or_default();
        c.at("servers", |c| {
            c.index(i, |c| {
                c.error_at(
                    "port.name",
                    format!(
                        "port name {name:?} is used by another server; port names must be unique"
                    ),
                )
            })
        });
    }
}

/// Checks a protocol name at `.protocol`; empty is accepted when `optional`.
pub(super) fn protocol(c: &mut Checker<'_>, port: &Port, optional: bool) -> Option<Protocol> {
    if port.protocol.is_empty() && optional {
        return None;
    }
    let p = Protocol::parse(&port.protocol);
    if p.is_none() {
        c.error_at(
            "protocol",
            format!(
                "unsupported protocol {:?}; supported: {PROTOCOL_NAMES}",
                port.protocol
            ),
        );
    }
    p
}

fn server(c: &mut Checker<'_>, s: &Server) {
    if s.hosts.is_empty() {
        c.error_at("hosts", "a server needs at least one host");
    }
    c.each("hosts", &s.hosts, |c, h| gateway_host(c, h));
    let unix_bind = s.bind.starts_with("unix://");
    common::bind(c, &s.bind);
    let proto = match &s.port {
        None => {
            c.error_at("port", "port is required");
            None
        }
        Some(port) => c.at("port", |c| {
            let proto = protocol(c, port, false);
            if unix_bind {
                if port.number != 0 {
                    c.error_at(
                        "number",
                        "the port number must be 0 when binding to a unix domain socket",
                    );
                }
            } else {
                c.at("number", |c| common::port(c, port.number));
            }
            if port.name.is_empty() {
                c.error_at("name", "port name is required");
            }
            if port.target_port.is_some() {
                c.error_at("targetPort", "targetPort has no effect on Gateways");
            }
            proto
        }),
    };
    if let Some(p) = proto {
        match &s.tls {
            None if p.is_tls() => c.error_at("tls", "HTTPS and TLS servers need tls settings"),
            Some(t) if !p.is_tls() => {
                let redirect_only = t.effective_mode() == ServerTlsMode::Passthrough
                    && t.server_certificate.is_empty()
                    && t.private_key.is_empty()
                    && t.ca_certificates.is_empty();
                if !p.is_http() {
                    c.error_at("tls", "only HTTPS and TLS servers can have tls settings");
                } else if !redirect_only {
                    c.error_at(
                        "tls",
                        "plain-text HTTP servers can only set tls.httpsRedirect",
                    );
                }
            }
            _ => {}
        }
    }
    c.opt("tls", &s.tls, |c, t| server_tls(c, t));
}

/// Checks a gateway server host: `host` or `<ns>/<host>`, the namespace `*`, `.` or a
/// DNS label, the host `*`, an IP address or an FQDN with an optional leading `*.`.
fn gateway_host(c: &mut Checker<'_>, entry: &str) {
    let host_part = match entry.split_once('/') {
        Some((ns, h)) => {
            if ns.is_empty() || h.is_empty() {
                c.error(format!("{entry:?}: namespace and host must not be empty"));
                return;
            }
            if ns != "*" && ns != "." && !host::is_dns1123_label(ns) {
                c.error(format!(
                    "{entry:?}: namespace {ns:?} must be `*`, `.` or a namespace name"
                ));
            }
            h
        }
        None => entry,
    };
    fqdn_or_wildcard_host(c, entry, host_part, true);
}

/// Checks the host part of a gateway or sidecar host entry.
pub(super) fn fqdn_or_wildcard_host(c: &mut Checker<'_>, entry: &str, h: &str, allow_ip: bool) {
    if h == "*" || (allow_ip && host::is_ip(h)) {
        return;
    }
    if !h.contains('.') {
        c.error(format!(
            "{entry:?}: short names are not allowed here; use a fully qualified name"
        ));
        return;
    }
    if let Err(e) = host::validate_host(h) {
        c.error(format!("{entry:?}: invalid host: {e}"));
    }
}

fn tls_rank(p: TlsProtocol) -> u8 {
    match p {
        TlsProtocol::TlsAuto => 0,
        TlsProtocol::TlsV1_0 => 1,
        TlsProtocol::TlsV1_1 => 2,
        TlsProtocol::TlsV1_2 => 3,
        TlsProtocol::TlsV1_3 => 4,
    }
}

/// Checks server TLS settings: what each mode needs and excludes.
pub(super) fn server_tls(c: &mut Checker<'_>, t: &ServerTlsSettings) {
    let mode = t.effective_mode();
    if mode == ServerTlsMode::IstioMutual {
        for (field, value) in [
            ("serverCertificate", &t.server_certificate),
            ("privateKey", &t.private_key),
            ("caCertificates", &t.ca_certificates),
            ("credentialName", &t.credential_name),
        ] {
            if !value.is_empty() {
                c.error_at(
                    field,
                    format!("ISTIO_MUTUAL uses the mesh's certificates; {field} must not be set"),
                );
            }
        }
        return;
    }
    if !t.credential_name.is_empty()
        && (!t.server_certificate.is_empty() || !t.private_key.is_empty())
    {
        c.error_at(
            "credentialName",
            "credentialName and serverCertificate/privateKey are mutually exclusive",
        );
    }
    let terminating = matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    if terminating && t.credential_name.is_empty() {
        let name = if mode == ServerTlsMode::Simple {
            "SIMPLE"
        } else {
            "MUTUAL"
        };
        if t.server_certificate.is_empty() {
            c.error_at(
                "serverCertificate",
                format!("{name} TLS needs serverCertificate and privateKey, or credentialName"),
            );
        }
        if t.private_key.is_empty() {
            c.error_at(
                "privateKey",
                format!("{name} TLS needs serverCertificate and privateKey, or credentialName"),
            );
        }
        if mode != ServerTlsMode::Simple && t.ca_certificates.is_empty() {
            c.error_at(
                "caCertificates",
                "MUTUAL TLS needs caCertificates (the client CA bundle), or credentialName",
            );
        }
    }
    if !t.ca_crl.is_empty() {
        if !t.credential_name.is_empty() {
            c.error_at(
                "caCrl",
                "caCrl cannot be combined with credentialName; put the CRL in the credential",
            );
        } else if mode == ServerTlsMode::Simple {
            c.error_at("caCrl", "caCrl is not supported with SIMPLE TLS");
        }
    }
    if let (Some(min), Some(max)) = (t.min_protocol_version, t.max_protocol_version)
        && tls_rank(min) > 0
        && tls_rank(max) > 0
        && tls_rank(min) > tls_rank(max)
    {
        c.error_at(
            "minProtocolVersion",
            "minProtocolVersion is above maxProtocolVersion",
        );
    }
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
