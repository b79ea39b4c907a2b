//! The webhook's serving certificate: read from a directory and reloaded when its
//! files change.
//!
//! The directory holds either `tls.crt` and `tls.key` (a `kubernetes.io/tls`
//! Secret mounted as a volume) or `cert-chain.pem` and `key.pem` (as citadel's
//! agent writes them). A rotation that leaves the files half-written is not
//! taken: the previous certificate keeps serving until a complete pair loads.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use parking_lot::RwLock;
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio_util::sync::CancellationToken;

/// The Kubernetes Secret layout.
pub const TLS_CRT: &str = "tls.crt";
/// The Kubernetes Secret layout's key.
pub const TLS_KEY: &str = "tls.key";
/// citadel's agent layout.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// citadel's agent layout's key.
pub const KEY_PEM: &str = "key.pem";

/// How often the files are checked for a rotation.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Why the certificate files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFilesError {
    /// Neither layout is present.
    #[error(
        "{dir}: no certificate found (expected {TLS_CRT} and {TLS_KEY}, or {CERT_CHAIN} and {KEY_PEM})"
    )]
    Missing {
        /// The directory.
        dir: PathBuf,
    },
    /// A file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error(transparent)]
    Pem(#[from] mesh_tls::TlsError),
    /// The key does not fit a supported signature scheme or the certificate.
    #[error("{path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The certificate and key files of a directory.
#[derive(Debug, Clone)]
pub struct CertFiles {
    dir: PathBuf,
}

impl CertFiles {
    /// The files of `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The layout present: the certificate and key file names.
    fn layout(&self) -> Result<Layout, TlsFilesError> {
        [(TLS_CRT, TLS_KEY), (CERT_CHAIN, KEY_PEM)]
            .into_iter()
            .find(|(cert, _)| self.dir.join(cert).exists())
            .ok_or_else(|| TlsFilesError::Missing {
                dir: self.dir.clone(),
            })
    }

    /// Reads the certificate chain and key as they are now.
    fn read(&self) -> Result<Pems, TlsFilesError> {
        let layout = self.layout()?;
        let read = |name: &str| {
            let path = self.dir.join(name);
            std::fs::read(&path).map_err(|source| TlsFilesError::Read { path, source })
        };
        Ok(Pems {
            cert: read(layout.0)?,
            key: read(layout.1)?,
            layout,
        })
    }
}

/// Certificate and key file names.
type Layout = (&'static str, &'static str);

/// The files' contents.
struct Pems {
    layout: Layout,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Pems {
    fn fingerprint(&self) -> Vec<u8> {
        [self.cert.as_slice(), self.key.as_slice()].concat()
    }
}

fn certified_key(pems: &Pems, dir: &Path) -> Result<CertifiedKey, TlsFilesError> {
    let chain = mesh_tls::material::certs_from_pem(pems.layout.0, &pems.cert)?;
    let key = mesh_tls::material::key_from_pem(pems.layout.1, &pems.key)?;
    let key_error = |reason: String| TlsFilesError::Key {
        path: dir.join(pems.layout.1),
        reason,
    };
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| key_error(format!("unsupported key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| key_error(format!("the key does not match the certificate: {e}")))?;
    Ok(certified)
}

/// The certificate being served, swapped when the files change.
#[derive(Clone)]
pub struct ServingCert {
    files: CertFiles,
    current: Arc<RwLock<(Vec<u8>, Arc<CertifiedKey>)>>,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("dir", &self.files.dir)
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    /// Loads the certificate of `files`; fails when there is none usable yet.
    pub fn load(files: CertFiles) -> Result<Self, TlsFilesError> {
        let pems = files.read()?;
        let key = certified_key(&pems, files.dir())?;
        let fingerprint = pems.fingerprint();
        Ok(Self {
            files,
            current: Arc::new(RwLock::new((fingerprint, Arc::new(key)))),
        })
    }

    /// Re-reads the files; returns whether a new certificate is now served. A
    /// rotation in progress (unreadable or mismatched files) keeps the old one.
    pub fn reload(&self) -> Result<bool, TlsFilesError> {
        let pems = self.files.read()?;
        let fingerprint = pems.fingerprint();
        if self.current.read().0 == fingerprint {
            return Ok(false);
        }
        let key = certified_key(&pems, self.files.dir())?;
        *self.current.write() = (fingerprint, Arc::new(key));
        Ok(true)
    }

    /// Reloads every `interval` until `shutdown`.
    pub async fn watch(self, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.reload() {
                Ok(true) => {
                    tracing::info!(dir = %self.files.dir().display(), "serving certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "serving certificate not reloaded; the previous one stays")
                }
            }
        }
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().1.clone()
    }

    /// A rustls server configuration serving the current certificate, offering
    /// HTTP/2 and HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, names: (&str, &str), host: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![host.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.join(names.0), cert.pem()).expect("write cert");
        std::fs::write(dir.join(names.1), key.serialize_pem()).expect("write key");
        cert.der().to_vec()
    }

    #[test]
    fn loads_either_layout_and_reloads_on_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = ServingCert::load(CertFiles::new(dir.path())).expect_err("empty dir");
        assert!(matches!(err, TlsFilesError::Missing { .. }), "{err}");

        let first = write_cert(dir.path(), (CERT_CHAIN, KEY_PEM), "a.example");
        let serving = ServingCert::load(CertFiles::new(dir.path())).expect("loads");
        assert_eq!(serving.current().cert[0].as_ref(), first.as_slice());
        assert!(!serving.reload().expect("same files"));

        // The Secret layout wins when both are present.
        let second = write_cert(dir.path(), (TLS_CRT, TLS_KEY), "b.example");
        assert!(serving.reload().expect("rotated"));
        assert_eq!(serving.current().cert[0].as_ref(), second.as_slice());

        // A half-done rotation (new certificate, old key) keeps the current one.
        let key = rcgen::KeyPair::generate().expect("key");
        std::fs::write(dir.path().join(TLS_KEY), key.serialize_pem()).expect("write");
        let err = serving.reload().expect_err("mismatch");
        assert!(err.to_string().contains("does not match"), "{err}");
        assert_eq!(serving.current().cert[0].as_ref(), second.as_slice());

        std::fs::write(dir.path().join(TLS_CRT), "garbage").expect("write");
        assert!(serving.reload().is_err());
        assert_eq!(serving.current().cert[0].as_ref(), second.as_slice());
    }
}
