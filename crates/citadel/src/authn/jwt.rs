//! Bootstrap: a caller without a certificate proves its namespace and service
//! account with a JWT signed by a configured issuer (Kubernetes service-account
//! style: `sub` is `system:serviceaccount:<namespace>:<service-account>`).
//!
//! Keys come from a JWKS document, a file or an `http(s)://` URL, refreshed in the
//! background. Verified tokens are remembered until they expire, so a workload
//! renewing many times costs one signature check per token.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use mesh_tls::SpiffeId;
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{AuthError, Authenticator, CallerContext};

/// Longest token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Verified tokens remembered at most (the cache is cleared when full).
const CACHE_LIMIT: usize = 100_000;

/// Where the issuer's keys are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS JSON file, re-read when it changes.
    File(PathBuf),
    /// A JWKS document at an `http://` or `https://` URL (verified against the
    /// system roots), fetched periodically.
    Url(String),
}

/// What a token must satisfy.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Where the verification keys are.
    pub jwks: JwksSource,
    /// Trust domain of the identities it vouches for.
    pub trust_domain: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    any: Vec<(DecodingKey, Algorithm)>,
}

/// Authenticates callers by a bearer JWT.
pub struct JwtAuthenticator {
    config: JwtConfig,
    keys: RwLock<Arc<Keys>>,
    verified: Mutex<HashMap<[u8; 32], (SpiffeId, u64)>>,
    loaded_from: Mutex<Option<SystemTime>>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why the issuer's keys cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Reading the file or fetching the URL failed.
    #[error("cannot read the JWKS from {from}: {reason}")]
    Fetch {
        /// Where from.
        from: String,
        /// Why.
        reason: String,
    },
    /// The document is not a usable JWKS.
    #[error("invalid JWKS from {from}: {reason}")]
    Invalid {
        /// Where from.
        from: String,
        /// Why.
        reason: String,
    },
}

impl JwtAuthenticator {
    /// Loads the keys once; fails when they cannot be loaded.
    pub async fn new(config: JwtConfig) -> Result<Arc<Self>, JwksError> {
        let a = Arc::new(Self {
            config,
            keys: RwLock::new(Arc::new(Keys {
                by_kid: HashMap::new(),
                any: Vec::new(),
            })),
            verified: Mutex::new(HashMap::new()),
            loaded_from: Mutex::new(None),
        });
        a.refresh().await?;
        Ok(a)
    }

    /// Re-reads the keys (a file only when it changed).
    pub async fn refresh(&self) -> Result<bool, JwksError> {
        let (from, body) = match &self.config.jwks {
            JwksSource::File(path) => {
                let from = path.display().to_string();
                let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                if modified.is_some() && *self.loaded_from.lock() == modified {
                    return Ok(false);
                }
                let body = tokio::fs::read(path).await.map_err(|e| JwksError::Fetch {
                    from: from.clone(),
                    reason: e.to_string(),
                })?;
                *self.loaded_from.lock() = modified;
                (from, body)
            }
            JwksSource::Url(url) => (url.clone(), fetch(url).await?),
        };
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| JwksError::Invalid {
            from: from.clone(),
            reason: e.to_string(),
        })?;
        let mut keys = Keys {
            by_kid: HashMap::new(),
            any: Vec::new(),
        };
        for jwk in &set.keys {
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    jsonwebtoken::jwk::EllipticCurve::P256 => Algorithm::ES256,
                    jsonwebtoken::jwk::EllipticCurve::P384 => Algorithm::ES384,
                    _ => continue,
                },
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), (key, alg));
                }
                None => keys.any.push((key, alg)),
            }
        }
        if keys.by_kid.is_empty() && keys.any.is_empty() {
            return Err(JwksError::Invalid {
                from,
                reason: "no usable ES256/ES384/RS256 key".into(),
            });
        }
        *self.keys.write() = Arc::new(keys);
        self.verified.lock().clear();
        Ok(true)
    }

    /// Refreshes the keys every `every` until `shutdown`.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = me.refresh().await {
                            tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys");
                        }
                    }
                }
            }
        });
    }

    fn verify(&self, token: &str) -> Result<SpiffeId, AuthError> {
        let invalid = |reason: String| AuthError::Invalid {
            authenticator: "jwt",
            reason,
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("token too large".into()));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((id, exp)) = self.verified.lock().get(&digest)
            && *exp > now
        {
            return Ok(id.clone());
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| invalid(format!("header: {e}")))?;
        let keys = self.keys.read().clone();
        let candidates: Vec<&(DecodingKey, Algorithm)> = match &header.kid {
            Some(kid) => keys
                .by_kid
                .get(kid)
                .into_iter()
                .chain(keys.any.iter())
                .collect(),
            None => keys.by_kid.values().chain(keys.any.iter()).collect(),
        };
        let mut last = String::from("no key for this token");
        for (key, alg) in candidates {
            if *alg != header.alg {
                continue;
            }
            let mut v = Validation::new(*alg);
            v.set_issuer(&[&self.config.issuer]);
            v.set_audience(&self.config.audiences);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            v.leeway = 30;
            match jsonwebtoken::decode::<Claims>(token, key, &v) {
                Ok(data) => {
                    let id = self.identity(&data.claims.sub).map_err(invalid)?;
                    let mut cache = self.verified.lock();
                    if cache.len() >= CACHE_LIMIT {
                        cache.clear();
                    }
                    cache.insert(digest, (id.clone(), data.claims.exp));
                    return Ok(id);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(invalid(last))
    }

    fn identity(&self, sub: &str) -> Result<SpiffeId, String> {
        let rest = sub
            .strip_prefix("system:serviceaccount:")
            .ok_or_else(|| format!("subject {sub:?} is not system:serviceaccount:<ns>:<sa>"))?;
        let (ns, sa) = rest
            .split_once(':')
            .ok_or_else(|| format!("subject {sub:?} is not system:serviceaccount:<ns>:<sa>"))?;
        SpiffeId::new(&self.config.trust_domain, ns, sa).map_err(|e| e.to_string())
    }
}

impl Authenticator for JwtAuthenticator {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn authenticate<'a>(
        &'a self,
        ctx: &'a CallerContext,
    ) -> BoxFuture<'a, Result<Option<SpiffeId>, AuthError>> {
        let result = match &ctx.bearer {
            None => Ok(None),
            Some(token) => self.verify(token.expose()).map(Some),
        };
        Box::pin(std::future::ready(result))
    }
}

/// Fetches an `http://` or `https://` URL (bounded in time and size).
async fn fetch(url: &str) -> Result<Vec<u8>, JwksError> {
    let err = |reason: String| JwksError::Fetch {
        from: url.to_string(),
        reason,
    };
    let (status, body) = mesh_runtime::http_client::get_url(url, Duration::from_secs(10))
        .await
        .map_err(err)?;
    if !(200..300).contains(&status) {
        return Err(err(format!("HTTP {status}")));
    }
    Ok(body.to_vec())
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
