//! A component's TLS identity: its certificate chain, private key and the roots it
//! trusts, read from the three PEM files citadel's agent writes (Istio's names).

use std::{fmt, path::Path, sync::Arc, time::SystemTime};

use rustls::{
    RootCertStore,
    client::verify_server_cert_signed_by_trust_anchor,
    server::{ParsedCertificate, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};

use crate::{SpiffeId, TlsError, cert};

/// The leaf certificate first, then intermediates.
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
/// The private key (PKCS#8, SEC1 or PKCS#1).
pub const KEY_FILE: &str = "key.pem";
/// One or more trusted roots (several during a root rotation).
pub const ROOT_CERT_FILE: &str = "root-cert.pem";

/// A certificate chain, its private key and the trusted roots, checked to belong
/// together: the key is the leaf's, and the chain verifies against the roots.
///
/// Its `Debug` never prints the key.
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Vec<CertificateDer<'static>>,
    spiffe_id: Option<SpiffeId>,
    not_after: Option<SystemTime>,
}

impl TlsIdentity {
    /// An identity from DER values, checked: a non-empty chain and root list, every
    /// root usable as a trust anchor, a key the TLS stack can use that matches the
    /// leaf, and a chain that verifies against the roots now.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, TlsError> {
        let Some(leaf) = chain.first() else {
            return Err(TlsError::Pem {
                file: CERT_CHAIN_FILE,
                reason: "no certificate".into(),
            });
        };
        if roots.is_empty() {
            return Err(TlsError::Pem {
                file: ROOT_CERT_FILE,
                reason: "no certificate".into(),
            });
        }
        for (index, c) in chain.iter().enumerate() {
            ParsedCertificate::try_from(c).map_err(|e| TlsError::Certificate {
                file: CERT_CHAIN_FILE,
                index,
                reason: e.to_string(),
            })?;
        }
        let store = root_store(&roots)?;
        check_key(&chain, &key)?;
        check_chain(leaf, &chain[1..], store)?;
        let spiffe_id = cert::spiffe_id_of(leaf).ok();
        let not_after = cert::not_after(leaf);
        Ok(Self {
            chain,
            key,
            roots,
            spiffe_id,
            not_after,
        })
    }

    /// An identity from the contents of the three PEM files.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8], roots_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = certs_from_pem(CERT_CHAIN_FILE, chain_pem)?;
        let key = key_from_pem(KEY_FILE, key_pem)?;
        let roots = certs_from_pem(ROOT_CERT_FILE, roots_pem)?;
        Self::new(chain, key, roots)
    }

    /// An identity read from `dir`'s `cert-chain.pem`, `key.pem` and `root-cert.pem`.
    pub fn from_dir(dir: &Path) -> Result<Self, TlsError> {
        read_dir_files(dir)?.identity()
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // `new` refuses an empty chain.
        &self.chain[0]
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The trusted roots.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The leaf's SPIFFE identity, when it names exactly one valid one.
    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        self.spiffe_id.as_ref()
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.not_after
    }

    /// The roots as a rustls trust store.
    pub fn root_store(&self) -> Result<RootCertStore, TlsError> {
        root_store(&self.roots)
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field(
                "spiffe_id",
                &self.spiffe_id.as_ref().map(ToString::to_string),
            )
            .field(
                "chain",
                &format_args!("{} certificate(s)", self.chain.len()),
            )
            .field("key", &format_args!("<redacted>"))
            .field(
                "roots",
                &format_args!("{} certificate(s)", self.roots.len()),
            )
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// The raw contents of a certificate directory's three files.
#[derive(PartialEq, Eq)]
pub(crate) struct PemFiles {
    chain: Vec<u8>,
    key: Vec<u8>,
    roots: Vec<u8>,
}

impl PemFiles {
    /// The identity these contents describe.
    pub(crate) fn identity(&self) -> Result<TlsIdentity, TlsError> {
        TlsIdentity::from_pem(&self.chain, &self.key, &self.roots)
    }
}

/// Reads the three files of a certificate directory, naming the file that fails.
pub(crate) fn read_dir_files(dir: &Path) -> Result<PemFiles, TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| TlsError::Read { path, source })
    };
    Ok(PemFiles {
        chain: read(CERT_CHAIN_FILE)?,
        key: read(KEY_FILE)?,
        roots: read(ROOT_CERT_FILE)?,
    })
}

/// Every `CERTIFICATE` block of a PEM input (at least one).
pub fn certs_from_pem(
    file: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            file,
            reason: pem_reason(&e),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            file,
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The first private key block of a PEM input (PKCS#8, SEC1 or PKCS#1).
pub fn key_from_pem(file: &'static str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        file,
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block".into()
            }
            other => pem_reason(&other),
        },
    })
}

/// A PEM failure in fixed words: the library's own messages may quote input lines.
fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a PEM block has no END line (file cut short?)",
        Error::IllegalSectionStart { .. } => "malformed BEGIN line",
        Error::Base64Decode(_) => "a PEM block is not valid base64",
        Error::NoItemsFound => "no PEM block of the expected kind",
        Error::SectionTooLarge => "a PEM block is too large",
        _ => "unreadable PEM",
    }
    .to_string()
}

fn root_store(roots: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for (index, root) in roots.iter().enumerate() {
        store.add(root.clone()).map_err(|e| TlsError::Certificate {
            file: ROOT_CERT_FILE,
            index,
            reason: format!("not usable as a trust anchor: {e}"),
        })?;
    }
    Ok(store)
}

fn check_key(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), TlsError> {
    let provider = cert::provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::Key {
            file: KEY_FILE,
            reason: e.to_string(),
        })?;
    match CertifiedKey::new(chain.to_vec(), signing_key).keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            key_file: KEY_FILE,
            cert_file: CERT_CHAIN_FILE,
        }),
        Err(e) => Err(TlsError::Certificate {
            file: CERT_CHAIN_FILE,
            index: 0,
            reason: e.to_string(),
        }),
    }
}

/// The chain must verify against the roots for server or client use (a
/// component's certificate is usually good for both).
fn check_chain(
    leaf: &CertificateDer<'static>,
    intermediates: &[CertificateDer<'static>],
    store: RootCertStore,
) -> Result<(), TlsError> {
    let provider = cert::provider();
    let now = UnixTime::now();
    let parsed = ParsedCertificate::try_from(leaf).map_err(|e| TlsError::Certificate {
        file: CERT_CHAIN_FILE,
        index: 0,
        reason: e.to_string(),
    })?;
    let as_server = verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &store,
        intermediates,
        now,
        provider.signature_verification_algorithms.all,
    );
    let Err(server_error) = as_server else {
        return Ok(());
    };
    let as_client = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .verify_client_cert(leaf, intermediates, now);
    match as_client {
        Ok(_) => Ok(()),
        Err(_) => Err(TlsError::Untrusted {
            cert_file: CERT_CHAIN_FILE,
            roots_file: ROOT_CERT_FILE,
            reason: server_error.to_string(),
        }),
    }
}
