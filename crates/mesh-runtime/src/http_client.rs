//! A minimal HTTP/1.1 GET for the few places a component or `meshctl` reads a
//! document over HTTP (debug endpoints, a JWKS URL). `https://` URLs are verified
//! against the system's roots (honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`) or
//! roots the caller gives.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest body read.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// GETs `http://<authority><path>` within `timeout`, returning the status code and
/// body. Errors are text naming what failed.
pub async fn get(authority: &str, path: &str, timeout: Duration) -> Result<(u16, Bytes), String> {
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        send_get(stream, authority, path).await
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// GETs an `http://` or `https://` URL; `https` is verified against the
/// system's trusted roots.
pub async fn get_url(url: &str, timeout: Duration) -> Result<(u16, Bytes), String> {
    get_url_with_roots(url, timeout, None).await
}

/// As [`get_url`], verifying `https` servers against `roots` when given.
pub async fn get_url_with_roots(
    url: &str,
    timeout: Duration,
    roots: Option<Arc<RootCertStore>>,
) -> Result<(u16, Bytes), String> {
    let target = Target::parse(url)?;
    if !target.tls {
        return get(&target.connect, &target.path, timeout).await;
    }
    let roots = match roots {
        Some(roots) => roots,
        None => system_roots()?,
    };
    let fetch = async {
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| format!("{url}: invalid host name: {e}"))?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(&target.connect)
            .await
            .map_err(|e| format!("connect {}: {e}", target.connect))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", target.host))?;
        send_get(tls, &target.authority, &target.path).await
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The system's trusted roots, read once.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "none found".into());
                return Err(format!(
                    "no trusted root certificates on this system: {why}"
                ));
            }
            Ok(Arc::new(store))
        })
        .clone()
}

async fn send_get<S>(stream: S, authority: &str, path: &str) -> Result<(u16, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// Where a URL points.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// As written in the URL (the `Host` header).
    authority: String,
    /// The host without port or brackets (the TLS server name).
    host: String,
    /// `host:port` to dial, the scheme's port when none is written.
    connect: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!(
                "{url}: only http:// and https:// URLs are supported"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url}: a URL needs a host (and no user info)"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{url}: unclosed [ in host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{url}: invalid port {p:?}"))?,
            None if tls => 443,
            None => 80,
        };
        let connect = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Self {
            tls,
            authority: authority.to_string(),
            host: host.to_string(),
            connect,
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls_name_scheme_host_port_and_path() {
        let t = Target::parse("https://issuer.example.com/keys").unwrap();
        assert!(t.tls);
        assert_eq!(t.connect, "issuer.example.com:443");
        assert_eq!(t.host, "issuer.example.com");
        assert_eq!(t.path, "/keys");
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert!(!t.tls);
        assert_eq!(
            (t.connect.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/")
        );
        let t = Target::parse("https://[::1]:8443/jwks").unwrap();
        assert_eq!((t.host.as_str(), t.connect.as_str()), ("::1", "[::1]:8443"));
        for bad in [
            "ftp://x/",
            "https:///x",
            "https://u@host/",
            "http://host:99999/",
            "https://[::1/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    /// An HTTPS server on loopback with a certificate for `localhost` from its own
    /// root, answering every request with `body`.
    async fn https_server(body: &'static str) -> (u16, RootCertStore) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        (port, roots)
    }

    #[tokio::test]
    async fn https_is_verified_against_the_given_roots() {
        let (port, roots) = https_server(r#"{"keys":[]}"#).await;
        let url = format!("https://localhost:{port}/jwks");
        let (status, body) =
            get_url_with_roots(&url, Duration::from_secs(5), Some(Arc::new(roots)))
                .await
                .unwrap();
        assert_eq!(status, 200);
        assert_eq!(&body[..], br#"{"keys":[]}"#);
        // A server whose root is not trusted is refused.
        let other = https_server("{}").await.1;
        let e = get_url_with_roots(&url, Duration::from_secs(5), Some(Arc::new(other)))
            .await
            .unwrap_err();
        assert!(e.contains("TLS with localhost"), "{e}");
        // The name must match the certificate.
        let (port, roots) = https_server("{}").await;
        let e = get_url_with_roots(
            &format!("https://127.0.0.1:{port}/"),
            Duration::from_secs(5),
            Some(Arc::new(roots)),
        )
        .await
        .unwrap_err();
        assert!(e.contains("TLS with 127.0.0.1"), "{e}");
    }
}
