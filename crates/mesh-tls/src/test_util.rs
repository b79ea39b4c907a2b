//! A test CA (feature `test-util`): roots, intermediates and leaves shaped like the
//! ones citadel issues (the only SAN a `spiffe://` URI, server and client auth),
//! and certificate directories written the way citadel's agent writes them.
//!
//! Test support only: failures panic with a message.

#![allow(clippy::expect_used)]

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, string::Ia5String,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::{
    SpiffeId, TlsIdentity,
    material::{CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE},
};

/// The trust domain of test identities.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
pub fn spiffe(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TRUST_DOMAIN, ns, sa).expect("valid test SPIFFE ID")
}

/// A certificate authority for tests: a self-signed root, or an intermediate.
pub struct TestCa {
    cert: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
    /// This CA's certificate and its parents' below the root (empty for a root).
    chain_pem: Vec<String>,
}

/// A leaf certificate and its key, PEM.
#[derive(Clone)]
pub struct TestLeaf {
    /// The leaf, then the intermediates.
    pub chain_pem: String,
    /// The PKCS#8 key.
    pub key_pem: String,
}

/// Validity and extra names of a test leaf.
#[derive(Debug, Clone)]
pub struct LeafOptions {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// DNS SANs besides the SPIFFE URI.
    pub dns_names: Vec<String>,
}

impl Default for LeafOptions {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(1),
            dns_names: Vec::new(),
        }
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, TRUST_DOMAIN);
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(365);
    params
}

impl TestCa {
    /// A new self-signed root named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("generate CA key");
        let params = ca_params(name);
        let cert = params.self_signed(&key).expect("self-sign CA");
        Self {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            chain_pem: Vec::new(),
        }
    }

    /// An intermediate CA named `name`, signed by this CA.
    pub fn intermediate(&self, name: &str) -> Self {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = ca_params(name);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).expect("sign CA");
        let mut chain_pem = vec![cert.pem()];
        chain_pem.extend(self.chain_pem.iter().cloned());
        Self {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            chain_pem,
        }
    }

    /// This CA's certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes this CA as an Istio-style `cacerts` directory, trusting `roots`:
    /// `ca-cert.pem` and `ca-key.pem` (this CA signs), `cert-chain.pem` (this CA,
    /// then its parents below the root) and `root-cert.pem`.
    pub fn write_cacerts(&self, dir: &Path, roots: &[&TestCa]) {
        write_atomic(dir, "ca-key.pem", self.key_pem.as_bytes());
        write_atomic(dir, "ca-cert.pem", self.cert_pem.as_bytes());
        let chain: String = if self.chain_pem.is_empty() {
            self.cert_pem.clone()
        } else {
            self.chain_pem.concat()
        };
        write_atomic(dir, "cert-chain.pem", chain.as_bytes());
        write_atomic(dir, ROOT_CERT_FILE, roots_pem(roots).as_bytes());
    }

    /// This CA's certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    /// A leaf for `id` valid from an hour ago for a day.
    pub fn issue(&self, id: &SpiffeId) -> TestLeaf {
        self.issue_with(id, LeafOptions::default())
    }

    /// A leaf for `id` with `options`.
    pub fn issue_with(&self, id: &SpiffeId, options: LeafOptions) -> TestLeaf {
        let key = KeyPair::generate().expect("generate leaf key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let mut sans = vec![SanType::URI(
            Ia5String::try_from(id.uri()).expect("SPIFFE ID is IA5"),
        )];
        for dns in &options.dns_names {
            sans.push(SanType::DnsName(
                Ia5String::try_from(dns.as_str()).expect("DNS name is IA5"),
            ));
        }
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = options.not_before;
        params.not_after = options.not_after;
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let mut chain_pem = cert.pem();
        for c in &self.chain_pem {
            chain_pem.push_str(c);
        }
        TestLeaf {
            chain_pem,
            key_pem: key.serialize_pem(),
        }
    }
}

/// The PEM of several roots, concatenated as `root-cert.pem` holds them.
pub fn roots_pem(roots: &[&TestCa]) -> String {
    roots.iter().map(|ca| ca.cert_pem()).collect()
}

impl TestLeaf {
    /// This leaf as an identity trusting `roots`.
    pub fn identity(&self, roots: &[&TestCa]) -> TlsIdentity {
        TlsIdentity::from_pem(
            self.chain_pem.as_bytes(),
            self.key_pem.as_bytes(),
            roots_pem(roots).as_bytes(),
        )
        .expect("valid test identity")
    }

    /// Writes this leaf and `roots` into `dir` as `cert-chain.pem`, `key.pem` and
    /// `root-cert.pem`, each by a temporary file and a rename (as an agent does).
    pub fn write_dir(&self, dir: &Path, roots: &[&TestCa]) {
        write_atomic(dir, ROOT_CERT_FILE, roots_pem(roots).as_bytes());
        write_atomic(dir, CERT_CHAIN_FILE, self.chain_pem.as_bytes());
        write_atomic(dir, KEY_FILE, self.key_pem.as_bytes());
    }
}

/// Writes `name` in `dir` through a temporary file and a rename.
pub fn write_atomic(dir: &Path, name: &str, contents: &[u8]) {
    std::fs::create_dir_all(dir).expect("create certificate directory");
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).expect("write temporary file");
    std::fs::rename(&tmp, dir.join(name)).expect("rename into place");
}
