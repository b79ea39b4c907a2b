//! The local token issuer for workloads off Kubernetes: a P-256 key kept under
//! the data directory signs ES256 tokens naming a namespace and service account
//! (`meshctl token`), and its public half is published as a JWKS file citadel
//! trusts.

use std::path::{Path, PathBuf};

use base64::Engine;
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
        EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
    },
};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::ca::material::{MaterialError, write_file};

/// The `iss` of locally minted tokens.
pub const LOCAL_ISSUER: &str = "dromon-local";
/// The `aud` citadel expects of CA tokens.
pub const CA_AUDIENCE: &str = "dromon-ca";
/// Private key file, under the token directory.
pub const SIGNING_KEY: &str = "token-signing-key.pem";
/// Public keys, under the token directory.
pub const JWKS_FILE: &str = "jwks.json";

/// Signs local tokens.
pub struct LocalIssuer {
    key: EncodingKey,
    kid: String,
    dir: PathBuf,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("kid", &self.kid)
            .field("dir", &self.dir)
            .field("key", &"[redacted]")
            .finish()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: String,
    iat: u64,
    exp: u64,
}

impl LocalIssuer {
    /// Loads the key in `dir`, creating it (mode 0600) and the JWKS file on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, MaterialError> {
        let io = |source| MaterialError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let key_path = dir.join(SIGNING_KEY);
        let pem = if key_path.exists() {
            Zeroizing::new(std::fs::read_to_string(&key_path).map_err(|source| {
                MaterialError::Io {
                    path: key_path.clone(),
                    source,
                }
            })?)
        } else {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .map_err(|e| MaterialError::Generate(e.to_string()))?;
            let pem = Zeroizing::new(key.serialize_pem());
            write_file(dir, SIGNING_KEY, &pem, 0o600)?;
            pem
        };
        let pair = KeyPair::from_pem(&pem).map_err(|e| MaterialError::Invalid {
            file: SIGNING_KEY,
            reason: e.to_string(),
        })?;
        let public = pair.public_key_raw();
        // Uncompressed point: 0x04 || X || Y.
        if public.len() != 65 || public[0] != 4 {
            return Err(MaterialError::Invalid {
                file: SIGNING_KEY,
                reason: "not a P-256 key".into(),
            });
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let kid = hex::encode(&Sha256::digest(public)[..8]);
        let jwks = JwkSet {
            keys: vec![Jwk {
                common: CommonParameters {
                    public_key_use: Some(PublicKeyUse::Signature),
                    key_algorithm: Some(KeyAlgorithm::ES256),
                    key_id: Some(kid.clone()),
                    ..CommonParameters::default()
                },
                algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve: EllipticCurve::P256,
                    x: b64.encode(&public[1..33]),
                    y: b64.encode(&public[33..]),
                }),
            }],
        };
        let json = serde_json::to_string_pretty(&jwks)
            .map_err(|e| MaterialError::Generate(e.to_string()))?;
        let current = std::fs::read_to_string(dir.join(JWKS_FILE)).unwrap_or_default();
        if current != json {
            write_file(dir, JWKS_FILE, &json, 0o644)?;
        }
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| MaterialError::Invalid {
            file: SIGNING_KEY,
            reason: e.to_string(),
        })?;
        Ok(Self {
            key,
            kid,
            dir: dir.to_path_buf(),
        })
    }

    /// The JWKS file citadel should trust for these tokens.
    pub fn jwks_path(&self) -> PathBuf {
        self.dir.join(JWKS_FILE)
    }

    /// A token for `namespace`/`service_account`, valid for `ttl`.
    pub fn mint(
        &self,
        namespace: &str,
        service_account: &str,
        ttl: std::time::Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.mint_at(namespace, service_account, now, ttl)
    }

    /// A token issued at `now` (unix seconds), valid for `ttl`.
    pub(crate) fn mint_at(
        &self,
        namespace: &str,
        service_account: &str,
        now: u64,
        ttl: std::time::Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let claims = Claims {
            iss: LOCAL_ISSUER,
            aud: CA_AUDIENCE,
            sub: format!("system:serviceaccount:{namespace}:{service_account}"),
            iat: now,
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}
