//! citadel's command line: `citadel` serves the CA; `citadel token` mints a
//! local token; `citadel revoke` revokes a certificate in the ledger; `citadel
//! agent` keeps a workload's certificate current as files and over SDS.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args as ClapArgs, Parser, Subcommand};
use mesh_kube::leader::{LeaseConfig, default_identity};
use mesh_runtime::LogArgs;

use crate::{
    agent::{AgentConfig, TokenSource},
    authn::{JwksSource, LocalIssuer},
    ca::CaPolicy,
    controllers::{ControllersConfig, DEFAULT_LEASE_NAME, DnsCert, SecretsConfig},
    ledger::{Ledger, RevocationReason},
    server::{CitadelConfig, JwtIssuerConfig, TokenReviewConfig},
};

/// citadel: the mesh's certificate authority (SPIFFE identities over gRPC, SDS, files).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "citadel",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// What to do; serving the CA when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The CA server's flags.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// citadel's subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print a token for a namespace and service account, signed by the local issuer.
    Token(TokenArgs),
    /// Revoke an issued certificate (recorded in the ledger; listed on /crl).
    Revoke(RevokeArgs),
    /// Keep a workload's certificate current: files in a directory and/or SDS.
    Agent(AgentArgs),
}

/// Flags of the CA server.
#[derive(Debug, Clone, ClapArgs)]
pub struct ServeArgs {
    /// CA gRPC (TLS) listen address.
    #[arg(long, env = "CITADEL_GRPC_ADDR", default_value = "0.0.0.0:8060")]
    pub grpc_addr: SocketAddr,
    /// Monitoring HTTP listen address (/metrics, /healthz, /ready, /debug/ca, /crl).
    #[arg(long, env = "CITADEL_MONITORING_ADDR", default_value = "0.0.0.0:15014")]
    pub monitoring_addr: SocketAddr,
    /// State directory: the self-signed CA (`ca/`), the local token key (`tokens/`)
    /// and the SQLite ledger.
    #[arg(
        long,
        env = "CITADEL_DATA_DIR",
        default_value = "/var/lib/dromon/citadel"
    )]
    pub data_dir: PathBuf,
    /// A plugged-in CA: a directory with ca-cert.pem, ca-key.pem, cert-chain.pem and
    /// root-cert.pem (Istio's `cacerts`). Without it citadel keeps a self-signed root.
    #[arg(long, env = "CITADEL_CACERTS")]
    pub cacerts: Option<PathBuf>,
    /// Trust domain of the identities issued.
    #[arg(long, env = "CITADEL_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Certificate lifetime when a request asks for none.
    #[arg(long, env = "CITADEL_DEFAULT_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub default_ttl: Duration,
    /// Longest certificate lifetime a request may ask for.
    #[arg(long, env = "CITADEL_MAX_TTL", default_value = "90days", value_parser = humantime::parse_duration)]
    pub max_ttl: Duration,
    /// Renew a self-signed root when less than this is left of it.
    #[arg(long, env = "CITADEL_ROOT_RENEW_BEFORE", default_value = "730days", value_parser = humantime::parse_duration)]
    pub root_renew_before: Duration,
    /// Ledger: `sqlite://PATH` or `postgres://...` (shared by replicas). Default: SQLite
    /// under the data directory.
    #[arg(long, env = "CITADEL_LEDGER")]
    pub ledger: Option<String>,
    /// Trust tokens minted by `citadel token` / `meshctl token` (key under the data dir).
    #[arg(long, env = "CITADEL_LOCAL_ISSUER", default_value_t = true, action = clap::ArgAction::Set)]
    pub local_issuer: bool,
    /// Another JWT issuer to trust (`iss`); needs --jwks-file or --jwks-url.
    #[arg(long, env = "CITADEL_JWT_ISSUER", requires = "jwks")]
    pub jwt_issuer: Option<String>,
    /// Audience that issuer's tokens must carry.
    #[arg(long, env = "CITADEL_JWT_AUDIENCE", default_value = "dromon-ca")]
    pub jwt_audience: String,
    /// That issuer's keys, a JWKS file.
    #[arg(long, env = "CITADEL_JWKS_FILE", group = "jwks")]
    pub jwks_file: Option<PathBuf>,
    /// That issuer's keys, at an http:// or https:// URL (https verified against the
    /// system roots; SSL_CERT_FILE names others).
    #[arg(long, env = "CITADEL_JWKS_URL", group = "jwks")]
    pub jwks_url: Option<String>,
    /// Authenticate bearer tokens with the Kubernetes TokenReview API: an
    /// authenticated service account gets `spiffe://<td>/ns/<ns>/sa/<sa>`. Needs
    /// `create tokenreviews` (the chart's ClusterRole).
    #[arg(long, env = "CITADEL_KUBE_TOKEN_REVIEW")]
    pub kube_token_review: bool,
    /// Audiences a reviewed token must be bound to, one of them (comma-separated).
    #[arg(
        long,
        env = "CITADEL_TOKEN_AUDIENCE",
        value_delimiter = ',',
        default_value = crate::authn::DEFAULT_TOKEN_AUDIENCE
    )]
    pub token_audience: Vec<String>,
    /// The Kubernetes API server, for --kube-token-review, --kube-secrets and
    /// --patch-webhooks.
    #[command(flatten)]
    pub kube: mesh_kube::KubeArgs,
    /// Keep an `istio.<sa>` Secret (type istio.io/key-and-cert: cert-chain.pem,
    /// key.pem, root-cert.pem) for every ServiceAccount. Runs in the replica holding
    /// the controllers' Lease.
    #[arg(long, env = "CITADEL_KUBE_SECRETS")]
    pub kube_secrets: bool,
    /// Namespaces whose ServiceAccounts get Secrets (comma-separated); every
    /// namespace when unset.
    #[arg(long, env = "CITADEL_SECRET_NAMESPACES", value_delimiter = ',')]
    pub secret_namespaces: Vec<String>,
    /// Lifetime of the certificates written into Secrets (capped by --max-ttl).
    #[arg(long, env = "CITADEL_SECRET_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub secret_ttl: Duration,
    /// Service accounts whose Secret certificates also carry DNS names, so webhooks
    /// running as them can serve the API server with them (with --kube-secrets):
    /// `NAMESPACE/SERVICE_ACCOUNT=NAME[,NAME...]`, entries separated by `;` or the
    /// flag repeated.
    #[arg(
        long,
        env = "CITADEL_DNS_CERTS",
        value_delimiter = ';',
        requires = "kube_secrets"
    )]
    pub dns_certs: Vec<DnsCert>,
    /// Mutating/ValidatingWebhookConfigurations whose webhooks' caBundle citadel
    /// keeps equal to its roots (comma-separated names). Runs in the replica holding
    /// the controllers' Lease.
    #[arg(long, env = "CITADEL_PATCH_WEBHOOKS", value_delimiter = ',')]
    pub patch_webhooks: Vec<String>,
    /// Namespace of the controllers' Lease (`citadel-controllers`).
    #[arg(long, env = "CITADEL_LEASE_NAMESPACE", default_value = "istio-system")]
    pub lease_namespace: String,
    /// DNS names in citadel's serving certificate (comma-separated).
    #[arg(
        long,
        env = "CITADEL_DNS_NAMES",
        value_delimiter = ',',
        default_value = "localhost,citadel,istio-citadel.istio-system.svc"
    )]
    pub dns_names: Vec<String>,
    /// citadel's own namespace.
    #[arg(long, env = "CITADEL_NAMESPACE", default_value = "istio-system")]
    pub namespace: String,
    /// citadel's own service account.
    #[arg(long, env = "CITADEL_SERVICE_ACCOUNT", default_value = "citadel")]
    pub service_account: String,
}

impl ServeArgs {
    /// The configuration these flags describe, or why they cannot work together.
    pub fn config(&self) -> Result<CitadelConfig, String> {
        let jwks = match (&self.jwks_file, &self.jwks_url) {
            (Some(f), _) => Some(JwksSource::File(f.clone())),
            (None, Some(u)) => Some(JwksSource::Url(u.clone())),
            _ => None,
        };
        let jwt_issuers = match (&self.jwt_issuer, jwks) {
            (Some(issuer), Some(jwks)) => vec![JwtIssuerConfig {
                issuer: issuer.clone(),
                audiences: vec![self.jwt_audience.clone()],
                jwks,
            }],
            _ => Vec::new(),
        };
        Ok(CitadelConfig {
            grpc_addr: self.grpc_addr,
            monitoring_addr: self.monitoring_addr,
            data_dir: self.data_dir.clone(),
            cacerts: self.cacerts.clone(),
            policy: CaPolicy {
                trust_domain: self.trust_domain.clone(),
                default_ttl: self.default_ttl,
                max_ttl: self.max_ttl,
                root_renew_before: self.root_renew_before,
            },
            ledger_url: self.ledger.clone(),
            local_issuer: self.local_issuer,
            jwt_issuers,
            token_review: self.kube_token_review.then(|| TokenReviewConfig {
                kube: self.kube.clone(),
                audiences: self.token_audience.clone(),
            }),
            serving_dns_names: self.dns_names.clone(),
            identity: (self.namespace.clone(), self.service_account.clone()),
            controllers: self.controllers()?,
        })
    }

    /// The controllers these flags turn on, if any.
    fn controllers(&self) -> Result<Option<ControllersConfig>, String> {
        let webhooks: Vec<String> = self
            .patch_webhooks
            .iter()
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty())
            .collect();
        if !self.kube_secrets && webhooks.is_empty() {
            return Ok(None);
        }
        let ttl = self.secret_ttl.min(self.max_ttl);
        let secrets = if self.kube_secrets {
            let config = SecretsConfig {
                namespaces: self
                    .secret_namespaces
                    .iter()
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect(),
                ttl,
                ..SecretsConfig::default()
            };
            Some(config.with_dns_certs(&self.dns_certs)?)
        } else {
            None
        };
        Ok(Some(ControllersConfig {
            kube: self.kube.clone(),
            secrets,
            webhooks,
            lease: LeaseConfig::new(
                self.lease_namespace.clone(),
                DEFAULT_LEASE_NAME,
                default_identity(),
            ),
        }))
    }
}

/// `citadel token`.
#[derive(Debug, Clone, ClapArgs)]
pub struct TokenArgs {
    /// citadel's data directory (the key is under `tokens/`).
    #[arg(
        long,
        env = "CITADEL_DATA_DIR",
        default_value = "/var/lib/dromon/citadel"
    )]
    pub data_dir: PathBuf,
    /// Namespace the token names.
    #[arg(long)]
    pub namespace: String,
    /// Service account the token names.
    #[arg(long)]
    pub service_account: String,
    /// Token lifetime.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// `citadel revoke`.
#[derive(Debug, Clone, ClapArgs)]
pub struct RevokeArgs {
    /// citadel's data directory (for the default SQLite ledger).
    #[arg(
        long,
        env = "CITADEL_DATA_DIR",
        default_value = "/var/lib/dromon/citadel"
    )]
    pub data_dir: PathBuf,
    /// Ledger URL, when not the default SQLite one.
    #[arg(long, env = "CITADEL_LEDGER")]
    pub ledger: Option<String>,
    /// Serial number of the certificate, hex.
    #[arg(long)]
    pub serial: String,
    /// Reason: unspecified, key-compromise, ca-compromise, affiliation-changed,
    /// superseded, cessation-of-operation.
    #[arg(long, default_value = "unspecified")]
    pub reason: RevocationReason,
}

/// `citadel agent`.
#[derive(Debug, Clone, ClapArgs)]
pub struct AgentArgs {
    /// citadel's CA port.
    #[arg(
        long,
        env = "CITADEL_AGENT_CA_ADDR",
        default_value = "https://istio-citadel.istio-system.svc:8060"
    )]
    pub ca_addr: String,
    /// Root certificate(s) to trust citadel with before the first certificate (PEM).
    /// Default: root-cert.pem in --output-dir, when there is one.
    #[arg(long, env = "CITADEL_AGENT_CA_ROOT")]
    pub ca_root: Option<PathBuf>,
    /// Trust domain (citadel's serving certificate must belong to it).
    #[arg(
        long,
        env = "CITADEL_AGENT_TRUST_DOMAIN",
        default_value = "cluster.local"
    )]
    pub trust_domain: String,
    /// Bearer token (JWT) for the first certificate, and when mTLS renewal fails;
    /// read again at each use.
    #[arg(long, env = "CITADEL_AGENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Certificate lifetime to ask for.
    #[arg(long, env = "CITADEL_AGENT_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Write cert-chain.pem, key.pem (0600) and root-cert.pem here, renewed in place.
    #[arg(long, env = "CITADEL_AGENT_OUTPUT_DIR")]
    pub output_dir: Option<PathBuf>,
    /// Serve SDS on this Unix socket (Istio's is
    /// ./var/run/secrets/workload-spiffe-uds/socket).
    #[arg(long, env = "CITADEL_AGENT_SDS_SOCKET")]
    pub sds_socket: Option<PathBuf>,
    /// Serve SDS on this TCP address; loopback only (the key travels in clear).
    #[arg(long, env = "CITADEL_AGENT_SDS_ADDR")]
    pub sds_addr: Option<SocketAddr>,
    /// Monitoring HTTP address (/metrics, /healthz, /ready).
    #[arg(
        long,
        env = "CITADEL_AGENT_MONITORING_ADDR",
        default_value = "127.0.0.1:15020"
    )]
    pub monitoring_addr: SocketAddr,
    /// Obtain one certificate, write it to --output-dir and exit.
    #[arg(long, env = "CITADEL_AGENT_ONCE")]
    pub once: bool,
}

impl AgentArgs {
    /// The configuration these flags describe, checked.
    pub fn config(&self) -> Result<AgentConfig, String> {
        if self.once && self.output_dir.is_none() {
            return Err("--once needs --output-dir".into());
        }
        if self.output_dir.is_none() && self.sds_socket.is_none() && self.sds_addr.is_none() {
            return Err(
                "nowhere to deliver certificates: give --output-dir, --sds-socket or --sds-addr"
                    .into(),
            );
        }
        let config = AgentConfig {
            ca_addr: self.ca_addr.clone(),
            ca_root: self.ca_root.clone(),
            trust_domain: self.trust_domain.clone(),
            token: self.token_file.clone().map(TokenSource::File),
            ttl: self.ttl,
            output_dir: self.output_dir.clone(),
            sds_socket: self.sds_socket.clone(),
            sds_addr: self.sds_addr,
            monitoring_addr: (!self.once).then_some(self.monitoring_addr),
        };
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

/// Mints a token with the local issuer under `data_dir`.
pub fn mint_token(
    data_dir: &std::path::Path,
    namespace: &str,
    service_account: &str,
    ttl: Duration,
) -> Result<String, String> {
    mesh_tls::SpiffeId::new("cluster.local", namespace, service_account)
        .map_err(|e| e.to_string())?;
    let issuer =
        LocalIssuer::load_or_create(&data_dir.join("tokens")).map_err(|e| e.to_string())?;
    issuer
        .mint(namespace, service_account, ttl)
        .map_err(|e| e.to_string())
}

impl Args {
    /// Parses the command line and runs.
    pub fn parse_and_run() -> ExitCode {
        let args = Args::parse();
        match args.command {
            None => {
                let config = match args.serve.config() {
                    Ok(config) => config,
                    Err(e) => {
                        eprintln!("citadel: {e}");
                        return ExitCode::from(2);
                    }
                };
                mesh_runtime::run_main(&args.log, "citadel", |shutdown| {
                    crate::server::run(config, shutdown)
                })
            }
            Some(Command::Token(t)) => {
                match mint_token(&t.data_dir, &t.namespace, &t.service_account, t.ttl) {
                    Ok(token) => {
                        println!("{token}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("citadel token: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Some(Command::Agent(a)) => {
                let config = match a.config() {
                    Ok(config) => config,
                    Err(e) => {
                        eprintln!("citadel agent: {e}");
                        return ExitCode::from(2);
                    }
                };
                if a.once {
                    mesh_runtime::run_main(&args.log, "citadel agent", |_| async move {
                        crate::agent::fetch_once(&config).await.map(|_| ())
                    })
                } else {
                    mesh_runtime::run_main(&args.log, "citadel agent", |shutdown| {
                        crate::agent::run(config, shutdown)
                    })
                }
            }
            Some(Command::Revoke(r)) => {
                mesh_runtime::run_main(&args.log, "citadel", |_| async move {
                    let url = r.ledger.clone().unwrap_or_else(|| {
                        format!("sqlite://{}", r.data_dir.join("ledger.db").display())
                    });
                    let ledger = Ledger::open(&url).await.map_err(|e| e.to_string())?;
                    let revocation = ledger
                        .revoke(&r.serial.to_ascii_lowercase(), r.reason)
                        .await
                        .map_err(|e| e.to_string())?;
                    println!(
                        "revoked {} ({}) at {}",
                        revocation.serial, revocation.reason, revocation.revoked_at
                    );
                    Ok::<(), String>(())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> CitadelConfig {
        let args = Args::try_parse_from(std::iter::once("citadel").chain(args.iter().copied()))
            .expect("valid flags");
        args.serve.config().expect("flags that work together")
    }

    #[test]
    fn controllers_are_off_by_default() {
        assert!(serve(&[]).controllers.is_none());
    }

    #[test]
    fn dns_certs_name_webhook_accounts_and_bad_ones_are_refused() {
        let c = serve(&[
            "--kube-secrets",
            "--dns-certs",
            "dromon/injector=injector.dromon.svc,injector.dromon.svc.cluster.local;dromon/galley=galley.dromon.svc",
            "--dns-certs",
            "shop/web=web.shop.svc",
        ])
        .controllers
        .expect("on");
        let names = c.secrets.expect("secrets on").dns_names;
        let key = |ns: &str, sa: &str| (ns.to_string(), sa.to_string());
        assert_eq!(
            names[&key("dromon", "injector")],
            ["injector.dromon.svc", "injector.dromon.svc.cluster.local"]
        );
        assert_eq!(names[&key("dromon", "galley")], ["galley.dromon.svc"]);
        assert_eq!(names[&key("shop", "web")], ["web.shop.svc"]);

        let parse = |args: &[&str]| {
            Args::try_parse_from(std::iter::once("citadel").chain(args.iter().copied()))
                .map_err(|e| e.to_string())
                .and_then(|a| a.serve.config().map(|_| ()))
        };
        let refused = |args: &[&str], why: &str| {
            let error = parse(args).expect_err("refused");
            assert!(error.contains(why), "{error}");
        };
        refused(&["--dns-certs", "a/b=x.svc"], "--kube-secrets");
        refused(
            &["--kube-secrets", "--dns-certs", "a/b"],
            "NAMESPACE/SERVICE_ACCOUNT=",
        );
        refused(
            &["--kube-secrets", "--dns-certs", "ab=x.svc"],
            "NAMESPACE/SERVICE_ACCOUNT=",
        );
        refused(&["--kube-secrets", "--dns-certs", "a/b="], "no DNS name");
        refused(
            &["--kube-secrets", "--dns-certs", "a/b=X_Y.svc"],
            "`X_Y.svc` is not a DNS name",
        );
        refused(
            &["--kube-secrets", "--dns-certs", "a/b=x.svc;a/b=y.svc"],
            "names a/b twice",
        );
        refused(
            &[
                "--kube-secrets",
                "--secret-namespaces",
                "shop",
                "--dns-certs",
                "a/b=x.svc",
            ],
            "--secret-namespaces leaves out",
        );
    }

    #[test]
    fn controller_flags_configure_secrets_webhooks_and_the_lease() {
        let c = serve(&[
            "--kube-secrets",
            "--secret-namespaces",
            "shop,bank",
            "--secret-ttl",
            "12h",
            "--patch-webhooks",
            "dromon-sidecar-injector,dromon-galley",
            "--lease-namespace",
            "dromon",
        ])
        .controllers
        .expect("on");
        let secrets = c.secrets.expect("secrets on");
        assert_eq!(secrets.namespaces, ["shop", "bank"]);
        assert_eq!(secrets.ttl, Duration::from_secs(12 * 3600));
        assert_eq!(c.webhooks, ["dromon-sidecar-injector", "dromon-galley"]);
        assert_eq!(c.lease.lease_key(), "dromon/citadel-controllers");
        assert!(!c.lease.identity.is_empty());

        let only_webhooks = serve(&["--patch-webhooks", "dromon-galley"])
            .controllers
            .expect("on");
        assert!(only_webhooks.secrets.is_none());
        assert_eq!(
            only_webhooks.lease.lease_key(),
            "istio-system/citadel-controllers"
        );
        // The Secrets' lifetime never exceeds the CA's maximum.
        let capped = serve(&["--kube-secrets", "--secret-ttl", "365days"])
            .controllers
            .expect("on");
        assert_eq!(
            capped.secrets.expect("on").ttl,
            Duration::from_secs(90 * 24 * 3600)
        );
    }

    #[test]
    fn token_review_is_off_by_default_and_requires_istio_ca() {
        assert!(serve(&[]).token_review.is_none());
        let review = serve(&["--kube-token-review", "--in-cluster"])
            .token_review
            .expect("on");
        assert_eq!(review.audiences, vec!["istio-ca".to_string()]);
        assert!(review.kube.in_cluster);
    }

    #[test]
    fn token_review_takes_the_shared_kube_flags_and_audiences() {
        let review = serve(&[
            "--kube-token-review",
            "--kubeconfig",
            "/etc/dromon/kubeconfig",
            "--kube-context",
            "prod",
            "--token-audience",
            "istio-ca,dromon-ca",
        ])
        .token_review
        .expect("on");
        assert_eq!(review.audiences, vec!["istio-ca", "dromon-ca"]);
        assert_eq!(
            review.kube.kubeconfig.as_deref(),
            Some(std::ffi::OsStr::new("/etc/dromon/kubeconfig"))
        );
        assert_eq!(review.kube.kube_context.as_deref(), Some("prod"));
    }
}
