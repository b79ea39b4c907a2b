//! Renewal: a caller presenting a client certificate this CA issued (verified by
//! the TLS layer against the trusted roots) is the identity it names, unless the
//! certificate was revoked.

use std::{collections::HashSet, sync::Arc};

use futures::future::BoxFuture;
use mesh_tls::SpiffeId;
use parking_lot::RwLock;

use super::{AuthError, Authenticator, CallerContext};

/// Serials of revoked certificates, refreshed from the ledger.
#[derive(Debug, Clone, Default)]
pub struct RevokedSerials(Arc<RwLock<HashSet<String>>>);

impl RevokedSerials {
    /// Replaces the set.
    pub fn replace(&self, serials: impl IntoIterator<Item = String>) {
        *self.0.write() = serials.into_iter().collect();
    }

    /// Adds one serial.
    pub fn insert(&self, serial: String) {
        self.0.write().insert(serial);
    }

    /// Whether `serial` is revoked.
    pub fn contains(&self, serial: &str) -> bool {
        self.0.read().contains(serial)
    }
}

/// Authenticates callers by their verified client certificate.
#[derive(Debug, Clone)]
pub struct MtlsAuthenticator {
    trust_domain: String,
    revoked: RevokedSerials,
}

impl MtlsAuthenticator {
    /// Accepts identities of `trust_domain` whose certificate is not in `revoked`.
    pub fn new(trust_domain: impl Into<String>, revoked: RevokedSerials) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            revoked,
        }
    }

    fn check(&self, ctx: &CallerContext) -> Result<Option<SpiffeId>, AuthError> {
        let Some(id) = &ctx.peer_identity else {
            return Ok(None);
        };
        let invalid = |reason: String| AuthError::Invalid {
            authenticator: "mtls",
            reason,
        };
        if id.trust_domain() != self.trust_domain {
            return Err(invalid(format!("{id} is outside the trust domain")));
        }
        match &ctx.peer_serial {
            Some(serial) if self.revoked.contains(serial) => {
                Err(invalid(format!("certificate {serial} of {id} is revoked")))
            }
            Some(_) => Ok(Some(id.clone())),
            None => Err(invalid("client certificate without a serial".into())),
        }
    }
}

impl Authenticator for MtlsAuthenticator {
    fn name(&self) -> &'static str {
        "mtls"
    }

    fn authenticate<'a>(
        &'a self,
        ctx: &'a CallerContext,
    ) -> BoxFuture<'a, Result<Option<SpiffeId>, AuthError>> {
        Box::pin(std::future::ready(self.check(ctx)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ctx(id: &str, serial: &str) -> CallerContext {
        CallerContext {
            bearer: None,
            peer_identity: Some(id.parse().unwrap()),
            peer_serial: Some(serial.into()),
        }
    }

    #[test]
    fn accepts_its_trust_domain_and_refuses_revoked_or_foreign_certificates() {
        let revoked = RevokedSerials::default();
        let a = MtlsAuthenticator::new("cluster.local", revoked.clone());
        let id = "spiffe://cluster.local/ns/default/sa/web";
        assert_eq!(a.check(&ctx(id, "01")).unwrap().unwrap().to_string(), id);
        revoked.insert("01".into());
        assert!(a.check(&ctx(id, "01")).is_err());
        assert!(
            a.check(&ctx("spiffe://evil.example/ns/default/sa/web", "02"))
                .is_err()
        );
        assert!(a.check(&CallerContext::default()).unwrap().is_none());
    }
}
