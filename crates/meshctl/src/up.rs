//! `meshctl up`: the whole control plane on one host, in one process.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::Args;
use galley::{GalleyConfig, SourceConfig, source::dir::Debounce};

use crate::{ports, sample};

/// The namespace of the control plane's own identities.
const CONTROL_PLANE_NAMESPACE: &str = "istio-system";
/// Lifetime of the tokens that get each component its first certificate; renewals
/// authenticate with the certificate itself.
const BOOTSTRAP_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// `meshctl up` flags.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Directory of configuration YAML to serve (default: the bookinfo sample,
    /// copied to `<data>/config` on first start).
    #[arg(long, env = "DROMON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for state (certificate ledger, quotas, logs) and the sample config.
    #[arg(long, env = "DROMON_DATA", default_value = ".dromon")]
    pub data: PathBuf,
    /// Address every component listens on.
    #[arg(long, env = "DROMON_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Namespace given to resources that name none.
    #[arg(long, default_value = "default")]
    pub default_namespace: String,
}

/// Runs `meshctl up` until `shutdown` fires.
pub async fn up(args: UpArgs, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data).map_err(|e| {
        anyhow::anyhow!("cannot create data directory {}: {e}", args.data.display())
    })?;
    let taken = ports::taken(args.bind);
    if !taken.is_empty() {
        let list: Vec<String> = taken
            .iter()
            .map(|(port, what)| format!("{port} ({what})"))
            .collect();
        anyhow::bail!(
            "ports already in use on {}: {}; stop what holds them (another `meshctl up`?) or choose another address with --bind",
            args.bind,
            list.join(", ")
        );
    }
    let config_dir = match &args.config {
        Some(dir) => dir.clone(),
        None => sample::materialize(&args.data).map_err(|e| {
            anyhow::anyhow!(
                "cannot write the sample configuration under {}: {e}",
                args.data.display()
            )
        })?,
    };
    let at = |port: u16| SocketAddr::new(args.bind, port);
    // Where the components reach each other (a wildcard bind is reached on loopback).
    let reach = |addr: SocketAddr| {
        if addr.ip().is_unspecified() {
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), addr.port())
        } else {
            addr
        }
    };

    // citadel first: every other component gets its certificate from it.
    let citadel_data = args.data.join("citadel");
    std::fs::create_dir_all(&citadel_data)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", citadel_data.display()))?;
    let policy = citadel::ca::CaPolicy::default();
    let trust_domain = policy.trust_domain.clone();
    let citadel = citadel::server::start(
        citadel::server::CitadelConfig {
            grpc_addr: at(ports::CITADEL_GRPC),
            monitoring_addr: at(ports::CITADEL_MONITORING),
            data_dir: citadel_data.clone(),
            cacerts: None,
            policy,
            ledger_url: None,
            local_issuer: true,
            jwt_issuers: Vec::new(),
            token_review: None,
            serving_dns_names: vec!["localhost".into()],
            identity: (CONTROL_PLANE_NAMESPACE.into(), "citadel".into()),
            controllers: None,
        },
        shutdown.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("citadel: {e}"))?;

    // An agent per component writes and renews its certificate under <data>/certs.
    let mut agents = Vec::new();
    let mut cert_dirs = Vec::new();
    for component in ["galley", "pilot", "mixer-policy", "mixer-telemetry"] {
        let token = citadel::args::mint_token(
            &citadel_data,
            CONTROL_PLANE_NAMESPACE,
            component,
            BOOTSTRAP_TOKEN_TTL,
        )
        .map_err(|e| anyhow::anyhow!("token for {component}: {e}"))?;
        let dir = args.data.join("certs").join(component);
        let mut config = citadel::agent::AgentConfig::new(
            format!("https://{}", reach(citadel.grpc_addr)),
            trust_domain.clone(),
        );
        config.ca_root = Some(citadel_data.join("ca").join("root-cert.pem"));
        config.token = Some(citadel::agent::TokenSource::from_string(token));
        config.output_dir = Some(dir.clone());
        let agent = citadel::agent::start(config, shutdown.clone())
            .await
            .map_err(|e| anyhow::anyhow!("{component}'s certificate agent: {e}"))?;
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            ready = tokio::time::timeout(Duration::from_secs(30), agent.ready()) => {
                if ready.is_err() {
                    anyhow::bail!("{component} got no certificate from citadel within 30s; see the logs");
                }
            }
        }
        agents.push((component, agent));
        cert_dirs.push(dir);
    }
    let galley_identity: mesh_tls::SpiffeId =
        mesh_tls::SpiffeId::new(&trust_domain, CONTROL_PLANE_NAMESPACE, "galley")
            .map_err(|e| anyhow::anyhow!("galley's identity: {e}"))?;
    let control_plane: mesh_tls::IdentityPattern =
        format!("spiffe://{trust_domain}/ns/{CONTROL_PLANE_NAMESPACE}/sa/*")
            .parse()
            .map_err(|e| anyhow::anyhow!("control-plane identities: {e}"))?;

    // The webhooks' certificate (galley's validating webhook, the injector's):
    // self-signed for this host.
    let injector_dir = args.data.join("sidecar-injector");
    let injector_tls = injector_dir.join("tls");
    let ca_bundle = crate::inject::ensure_webhook_cert(&injector_tls, args.bind)
        .map_err(|e| anyhow::anyhow!("webhook certificate: {e}"))?;

    let galley = galley::start(
        GalleyConfig {
            source: SourceConfig::Directory {
                path: config_dir.clone(),
                debounce: Debounce::default(),
            },
            mcp_addr: at(ports::GALLEY_MCP),
            monitoring_addr: at(ports::GALLEY_MONITORING),
            default_namespace: args.default_namespace.clone(),
            tls: Some(galley::GalleyTls {
                dir: cert_dirs[0].clone(),
                mcp_mtls_addr: at(ports::GALLEY_MCP_MTLS),
                allowed: vec![control_plane],
            }),
            webhook: Some(galley::GalleyWebhook {
                addr: at(ports::GALLEY_WEBHOOK),
                tls_dir: injector_tls.clone(),
            }),
        },
        shutdown.clone(),
    )
    .await?;
    let galley_mtls = galley
        .mcp_mtls_addr
        .ok_or_else(|| anyhow::anyhow!("galley did not open its mTLS port"))?;

    // pilot follows galley over mTLS.
    let pilot = pilot::server::start(
        pilot::server::PilotConfig {
            from: pilot::server::ConfigFrom::Galley(format!("https://{}", reach(galley_mtls))),
            xds_addr: at(ports::PILOT_XDS),
            monitoring_addr: at(ports::PILOT_MONITORING),
            debounce: Duration::from_millis(100),
            debounce_max: Duration::from_secs(10),
            tls: Some(pilot::server::PilotTls {
                dir: cert_dirs[1].clone(),
                xds_mtls_addr: at(ports::PILOT_XDS_MTLS),
                galley_identity: Some(galley_identity.clone()),
            }),
            kube: None,
            trust_domain: trust_domain.clone(),
        },
        shutdown.clone(),
    )
    .await?;

    let policy = mixer_policy::server::start(
        mixer_policy::server::MixerPolicyConfig {
            galley: format!("https://{}", reach(galley_mtls)),
            grpc_addr: at(ports::MIXER_POLICY_GRPC),
            monitoring_addr: at(ports::MIXER_POLICY_MONITORING),
            failure_policy: mixer_policy::server::FailurePolicy::Closed,
            tls: Some(mixer_policy::server::MixerTls {
                dir: cert_dirs[2].clone(),
                mtls_addr: at(ports::MIXER_POLICY_MTLS),
                galley_identity: Some(galley_identity.clone()),
            }),
            quota_database: Some(format!(
                "sqlite://{}",
                args.data.join("mixer-policy").join("quota.db").display()
            )),
        },
        shutdown.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("mixer-policy: {e}"))?;

    let telemetry = mixer_telemetry::server::start(
        mixer_telemetry::server::MixerTelemetryConfig {
            galley: format!("https://{}", reach(galley_mtls)),
            grpc_addr: at(ports::MIXER_TELEMETRY_GRPC),
            prometheus_addr: at(ports::MIXER_TELEMETRY_PROMETHEUS),
            monitoring_addr: at(ports::MIXER_TELEMETRY_MONITORING),
            queue_records: 100_000,
            queue_wait: std::time::Duration::from_millis(100),
            workers: 2,
            standard_metrics: true,
            tls: Some(mixer_telemetry::server::TelemetryTls {
                dir: cert_dirs[3].clone(),
                mtls_addr: at(ports::MIXER_TELEMETRY_MTLS),
                galley_identity: Some(galley_identity),
            }),
            log_database: Some(format!(
                "sqlite://{}",
                args.data.join("mixer-telemetry").join("logs.db").display()
            )),
        },
        shutdown.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("mixer-telemetry: {e}"))?;

    // The injector's webhook: a self-signed certificate for this host, and a
    // configuration pointing proxies at this plane (written once, then the
    // user's to edit; the injector reloads it).
    let injector_config = injector_dir.join("config.yaml");
    if !injector_config.exists() {
        std::fs::write(
            &injector_config,
            format!(
                "# sidecar-injector configuration (reloaded when saved).\npolicy: enabled\nvalues:\n  pilotAddress: {pilot}\n  citadelAddress: {citadel}\n",
                pilot = reach(pilot.xds_mtls_addr.unwrap_or(pilot.xds_addr)),
                citadel = reach(citadel.grpc_addr),
            ),
        )?;
    }
    let injector = sidecar_injector::server::start(
        sidecar_injector::InjectorServerConfig {
            webhook_addr: at(ports::SIDECAR_INJECTOR_WEBHOOK),
            tls_dir: injector_tls,
            config: Some(injector_config.clone()),
            monitoring_addr: at(ports::SIDECAR_INJECTOR_MONITORING),
            reload_interval: Duration::from_secs(2),
        },
        shutdown.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("sidecar-injector: {e}"))?;

    for (name, readiness) in [
        ("galley", &galley.readiness),
        ("pilot", &pilot.readiness),
        ("mixer-policy", &policy.readiness),
        ("mixer-telemetry", &telemetry.readiness),
        ("sidecar-injector", &injector.readiness),
    ] {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ready = tokio::time::timeout(Duration::from_secs(30), readiness.wait()) => {
                if ready.is_err() {
                    eprintln!("warning: {name} is not ready after 30s; see the logs");
                }
            }
        }
    }
    let mut endpoints: Vec<(&str, String, &str)> = vec![
        (
            "citadel",
            citadel.grpc_addr.to_string(),
            "CA: CreateCertificate (TLS; JWT from `meshctl token`, or a client certificate)",
        ),
        (
            "citadel",
            format!("http://{}", citadel.monitoring_addr),
            "/metrics /ready /debug/ca /crl /crl.pem",
        ),
        (
            "galley",
            galley.mcp_addr.to_string(),
            "MCP over xDS (gRPC, ADS: SotW and delta)",
        ),
        (
            "galley",
            format!("http://{}", galley.monitoring_addr),
            "/metrics /ready /debug/configz /debug/syncz /debug/analyze /debug/errors",
        ),
        (
            "galley",
            galley_mtls.to_string(),
            "MCP over mTLS (control-plane identities only)",
        ),
        (
            "galley",
            format!(
                "https://{}/validate",
                galley.webhook_addr.unwrap_or(at(ports::GALLEY_WEBHOOK))
            ),
            "validating webhook (AdmissionReview v1, v1beta1)",
        ),
        (
            "pilot",
            pilot.xds_addr.to_string(),
            "Envoy xDS v3 (ADS: SotW and delta), proxyless gRPC",
        ),
        (
            "pilot",
            format!("http://{}", pilot.monitoring_addr),
            "/metrics /ready /debug/syncz /debug/configz /debug/registryz /debug/config_dump",
        ),
    ];
    endpoints.push((
        "mixer-policy",
        policy.grpc_addr.to_string(),
        "Mixer Check API and Envoy ext_authz",
    ));
    endpoints.push((
        "mixer-policy",
        format!("http://{}", policy.monitoring_addr),
        "/metrics /ready /debug/policyz",
    ));
    endpoints.push((
        "mixer-telemetry",
        telemetry.grpc_addr.to_string(),
        "Mixer Report API and Envoy access logs",
    ));
    endpoints.push((
        "mixer-telemetry",
        format!("http://{}/metrics", telemetry.prometheus_addr),
        "mesh metrics for Prometheus (istio_requests_total, ...)",
    ));
    endpoints.push((
        "mixer-telemetry",
        format!("http://{}", telemetry.monitoring_addr),
        "/metrics /ready /debug/telemetryz /graph (service graph)",
    ));
    if let Some(addr) = telemetry.mtls_addr {
        endpoints.push((
            "mixer-telemetry",
            addr.to_string(),
            "Mixer Report API and Envoy access logs over mTLS",
        ));
    }
    if let Some(addr) = policy.mtls_addr {
        endpoints.push((
            "mixer-policy",
            addr.to_string(),
            "Mixer Check API and ext_authz over mTLS",
        ));
    }
    endpoints.push((
        "sidecar-injector",
        format!("https://{}/inject", injector.webhook_addr),
        "mutating webhook (AdmissionReview v1, v1beta1)",
    ));
    endpoints.push((
        "sidecar-injector",
        format!("http://{}", injector.monitoring_addr),
        "/metrics /ready /debug/injectorz",
    ));
    if let Some(addr) = pilot.xds_mtls_addr {
        endpoints.push((
            "pilot",
            addr.to_string(),
            "Envoy xDS v3 over mTLS (each proxy its certificate's namespace)",
        ));
    }
    println!("Dromon control plane is up.");
    println!("  config: {}", config_dir.display());
    println!("  data:   {}", args.data.display());
    println!(
        "  certs:  {} (renewed in place)",
        args.data.join("certs").display()
    );
    println!(
        "  injector: {} (config), {} (CA bundle)",
        injector_config.display(),
        ca_bundle.display()
    );
    println!();
    for (component, endpoint, what) in [("component", "endpoint".to_string(), "what")]
        .into_iter()
        .chain(endpoints)
    {
        println!("  {component:<18} {endpoint:<26} {what}");
    }
    println!();
    println!(
        "Edit files under {} and galley publishes them. Ctrl-C stops.",
        config_dir.display()
    );

    // Any component stopping (on error, or on shutdown) stops the others.
    let stop_all = |result| {
        shutdown.cancel();
        result
    };
    let agents =
        futures::future::join_all(agents.into_iter().map(|(component, agent)| async move {
            stop_all(
                agent
                    .wait()
                    .await
                    .map_err(|e| format!("{component}'s agent: {e}")),
            )
        }));
    let (c, g, p, m, t, i, a) = tokio::join!(
        async { stop_all(citadel.wait().await.map_err(|e| e.to_string())) },
        async { stop_all(galley.wait().await.map_err(|e| e.to_string())) },
        async { stop_all(pilot.wait().await.map_err(|e| e.to_string())) },
        async { stop_all(policy.wait().await.map_err(|e| e.to_string())) },
        async { stop_all(telemetry.wait().await.map_err(|e| e.to_string())) },
        async { stop_all(injector.wait().await.map_err(|e| e.to_string())) },
        agents,
    );
    c.map_err(|e| anyhow::anyhow!("citadel: {e}"))?;
    g.map_err(|e| anyhow::anyhow!("galley: {e}"))?;
    p.map_err(|e| anyhow::anyhow!("pilot: {e}"))?;
    m.map_err(|e| anyhow::anyhow!("mixer-policy: {e}"))?;
    t.map_err(|e| anyhow::anyhow!("mixer-telemetry: {e}"))?;
    i.map_err(|e| anyhow::anyhow!("sidecar-injector: {e}"))?;
    for r in a {
        r.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}
