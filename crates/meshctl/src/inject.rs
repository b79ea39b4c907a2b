//! `meshctl kube-inject`: the injector's work done offline on YAML files, and the
//! webhook certificate `meshctl up` serves the injector with.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use sidecar_injector::{
    kube_inject::{DocumentResult, inject_documents},
    server::load_injector,
};

/// Flags of `meshctl kube-inject`.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeInjectArgs {
    /// The YAML to inject (`-` for standard input).
    #[arg(short = 'f', long = "filename")]
    pub filename: PathBuf,
    /// Where to write the result (default: standard output).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// The injector configuration (policy, values, template), as the webhook
    /// reads it (default: the built-in configuration).
    #[arg(long = "injector-config")]
    pub injector_config: Option<PathBuf>,
    /// Namespace of documents that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// Runs `meshctl kube-inject`.
pub fn kube_inject(args: &KubeInjectArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshctl kube-inject: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &KubeInjectArgs) -> anyhow::Result<()> {
    let injector = load_injector(args.injector_config.as_deref())?;
    let input = if args.filename.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(&args.filename)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.filename.display()))?
    };
    let (output, reports) = inject_documents(&injector, &input, &args.namespace)?;
    for report in &reports {
        for warning in &report.warnings {
            eprintln!("warning: {}: {warning}", report.object);
        }
        if let DocumentResult::Skipped(reason) = report.result {
            eprintln!("{}: not injected: {reason}", report.object);
        }
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, output).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => std::io::stdout().write_all(output.as_bytes())?,
    }
    Ok(())
}

/// How long `meshctl up`'s webhook certificate lasts.
const WEBHOOK_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// It is made anew when less than this is left.
const WEBHOOK_CERT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Makes sure `dir` holds a webhook certificate (`tls.crt`, `tls.key`; `tls.crt`
/// is also the CA bundle, being self-signed) for `localhost` and the bind
/// address, valid for more than 30 days.
pub fn ensure_webhook_cert(dir: &Path, bind: std::net::IpAddr) -> anyhow::Result<PathBuf> {
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    if let Ok(pem) = std::fs::read(&cert_path)
        && key_path.exists()
        && let Ok(certs) = mesh_tls::material::certs_from_pem("tls.crt", &pem)
        && let Some(not_after) = certs.first().and_then(mesh_tls::cert::not_after)
        && not_after
            .duration_since(std::time::SystemTime::now())
            .is_ok_and(|left| left > WEBHOOK_CERT_RENEW_BEFORE)
    {
        return Ok(cert_path);
    }
    std::fs::create_dir_all(dir)?;
    let key = rcgen::KeyPair::generate()?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !bind.is_unspecified() && !names.contains(&bind.to_string()) {
        names.push(bind.to_string());
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sidecar-injector.local");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + WEBHOOK_CERT_VALIDITY;
    let cert = params.self_signed(&key)?;
    // The key first, readable by its owner only; then the certificate.
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, cert.pem())?;
    Ok(cert_path)
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_cert_is_made_once_and_kept_while_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bind = std::net::IpAddr::from([127, 0, 0, 1]);
        let path = ensure_webhook_cert(dir.path(), bind).expect("made");
        let first = std::fs::read(&path).expect("read");
        ensure_webhook_cert(dir.path(), bind).expect("kept");
        assert_eq!(std::fs::read(&path).expect("read"), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("tls.key"))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        mesh_admission::ServingCert::load(mesh_admission::CertFiles::new(dir.path()))
            .expect("serves");
    }
}
