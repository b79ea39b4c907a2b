//! Checks a certificate signing request before anything is signed.
//!
//! Only two things are taken from a CSR: its public key and the proof that the
//! caller holds the private key (the CSR's signature). Everything a CSR may ask
//! for besides is either the caller's own identity or a reason to refuse it.

use mesh_tls::SpiffeId;
use rustls_pki_types::{CertificateSigningRequestDer, pem::PemObject};
use x509_parser::{
    certification_request::X509CertificationRequest,
    extensions::{GeneralName, ParsedExtension},
    oid_registry,
    prelude::FromDer,
    public_key::PublicKey,
};

/// The largest CSR accepted, PEM or DER (an RSA-8192 CSR is under 3 KiB).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (bounds the cost of verifying).
pub const MAX_RSA_BITS: usize = 8192;

/// A CSR that passed every check: its public key, ready to be certified.
#[derive(Debug, Clone)]
pub struct ValidCsr {
    /// DER SubjectPublicKeyInfo of the requester's key.
    pub public_key_spki: Vec<u8>,
    /// What kind of key it is.
    pub key: KeyKind,
}

/// The kinds of keys citadel certifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA with this many modulus bits.
    Rsa(usize),
}

/// Why a CSR is refused. Each maps to one refusal reason label and gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Not PEM or DER, or not a PKCS#10 request.
    #[error("the CSR cannot be parsed: {0}")]
    Malformed(String),
    /// Bigger than [`MAX_CSR_BYTES`].
    #[error("the CSR is larger than {MAX_CSR_BYTES} bytes")]
    TooLarge,
    /// The signature does not verify with the CSR's own key.
    #[error("the CSR's signature does not verify")]
    BadSignature,
    /// Signed with an algorithm citadel does not accept (e.g. SHA-1).
    #[error("the CSR is signed with an unsupported algorithm")]
    UnsupportedSignature,
    /// The key is too small (RSA below 2048 bits) or of an unsupported kind.
    #[error("weak or unsupported key: {0}")]
    WeakKey(String),
    /// The CSR asks for a subject alternative name other than the caller's identity.
    #[error("the CSR asks for {0}, but a certificate may only name the caller's identity")]
    ForbiddenSan(String),
}

impl CsrError {
    /// A short label for metrics (`citadel_csr_refused_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::TooLarge => "malformed_csr",
            Self::BadSignature | Self::UnsupportedSignature => "bad_signature",
            Self::WeakKey(_) => "weak_key",
            Self::ForbiddenSan(_) => "forbidden_san",
        }
    }
}

/// Validates CSRs for a caller's identity.
#[derive(Debug, Clone, Default)]
pub struct CsrValidator;

impl CsrValidator {
    /// Parses a PEM CSR (one `CERTIFICATE REQUEST` block) and checks it for `caller`.
    pub fn validate_pem(&self, pem: &str, caller: &SpiffeId) -> Result<ValidCsr, CsrError> {
        if pem.len() > MAX_CSR_BYTES {
            return Err(CsrError::TooLarge);
        }
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CsrError::Malformed(format!("not a PEM certificate request ({e})")))?;
        self.validate_der(der.as_ref(), caller)
    }

    /// Checks a DER CSR for `caller`: the structure, the signature, the key, and
    /// that any SAN it asks for is the caller's own identity.
    pub fn validate_der(&self, der: &[u8], caller: &SpiffeId) -> Result<ValidCsr, CsrError> {
        if der.len() > MAX_CSR_BYTES {
            return Err(CsrError::TooLarge);
        }
        let (rest, csr) = X509CertificationRequest::from_der(der)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed(
                "trailing bytes after the request".into(),
            ));
        }
        let info = &csr.certification_request_info;
        let spki = &info.subject_pki;
        let key = key_kind(spki)?;
        let sig = &csr.signature_algorithm.algorithm;
        if *sig == oid_registry::OID_PKCS1_SHA1WITHRSA
            || *sig == oid_registry::OID_SHA1_WITH_RSA
            || *sig == oid_registry::OID_PKCS1_MD5WITHRSAENC
        {
            return Err(CsrError::UnsupportedSignature);
        }
        csr.verify_signature().map_err(|e| match e {
            x509_parser::error::X509Error::SignatureUnsupportedAlgorithm => {
                CsrError::UnsupportedSignature
            }
            _ => CsrError::BadSignature,
        })?;
        if let Some(extensions) = csr.requested_extensions() {
            for ext in extensions {
                if let ParsedExtension::SubjectAlternativeName(san) = ext {
                    for name in &san.general_names {
                        check_san(name, caller)?;
                    }
                }
            }
        }
        Ok(ValidCsr {
            public_key_spki: spki.raw.to_vec(),
            key,
        })
    }
}

fn key_kind(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<KeyKind, CsrError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == oid_registry::OID_SIG_ED25519 {
        return Ok(KeyKind::Ed25519);
    }
    let parsed = spki
        .parsed()
        .map_err(|e| CsrError::Malformed(format!("public key: {e}")))?;
    match parsed {
        PublicKey::RSA(rsa) => {
            let bits = rsa_bits(rsa.modulus);
            if bits < MIN_RSA_BITS {
                Err(CsrError::WeakKey(format!(
                    "RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"
                )))
            } else if bits > MAX_RSA_BITS {
                Err(CsrError::WeakKey(format!(
                    "RSA key of {bits} bits; at most {MAX_RSA_BITS} are accepted"
                )))
            } else {
                Ok(KeyKind::Rsa(bits))
            }
        }
        PublicKey::EC(_) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == oid_registry::OID_EC_P256 => Ok(KeyKind::EcdsaP256),
                Some(c) if c == oid_registry::OID_NIST_EC_P384 => Ok(KeyKind::EcdsaP384),
                _ => Err(CsrError::WeakKey(
                    "elliptic curve other than P-256 or P-384".into(),
                )),
            }
        }
        _ => Err(CsrError::WeakKey(
            "only ECDSA P-256/P-384, Ed25519 and RSA keys are certified".into(),
        )),
    }
}

/// Bits in an RSA modulus given as DER integer bytes.
fn rsa_bits(modulus: &[u8]) -> usize {
    let trimmed: &[u8] = match modulus.iter().position(|b| *b != 0) {
        Some(i) => &modulus[i..],
        None => return 0,
    };
    trimmed.len() * 8 - trimmed[0].leading_zeros() as usize
}

fn check_san(name: &GeneralName<'_>, caller: &SpiffeId) -> Result<(), CsrError> {
    match name {
        GeneralName::URI(uri) if *uri == caller.uri() => Ok(()),
        GeneralName::URI(uri) => Err(CsrError::ForbiddenSan(format!("URI {uri}"))),
        GeneralName::DNSName(d) => Err(CsrError::ForbiddenSan(format!("DNS name {d}"))),
        GeneralName::RFC822Name(e) => Err(CsrError::ForbiddenSan(format!("email {e}"))),
        GeneralName::IPAddress(_) => Err(CsrError::ForbiddenSan("an IP address".into())),
        _ => Err(CsrError::ForbiddenSan("a name of another kind".into())),
    }
}

#[cfg(test)]
#[path = "csr_tests.rs"]
mod tests;
