//! Connecting to the Kubernetes API server: the `--kubeconfig`/`--kube-context`/
//! `--in-cluster` flags every component shares, the `kube::Client` they produce, and
//! errors that say which file, context, variable or URL was at fault.

use std::{
    ffi::OsString,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

/// The service account token mounted into every pod that has one.
pub const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The environment variable naming the API server's address inside a pod.
pub const SERVICE_HOST_ENV: &str = "KUBERNETES_SERVICE_HOST";
/// The environment variable naming the API server's port inside a pod.
pub const SERVICE_PORT_ENV: &str = "KUBERNETES_SERVICE_PORT";

/// How a component reaches the Kubernetes API server; flatten it into a component's
/// `Args` with `#[command(flatten)]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct KubeArgs {
    /// Kubeconfig file to read; several may be given `:`-separated, as kubectl takes
    /// them. Unset: `~/.kube/config` if it exists, else the pod's service account.
    #[arg(long = "kubeconfig", env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<OsString>,
    /// Context of the kubeconfig to use; the kubeconfig's current-context when unset.
    #[arg(
        long = "kube-context",
        env = "DROMON_KUBE_CONTEXT",
        value_name = "NAME"
    )]
    pub kube_context: Option<String>,
    /// Use the pod's service account and the API server's in-cluster address, even
    /// when a kubeconfig is present.
    #[arg(long = "in-cluster", env = "DROMON_KUBE_IN_CLUSTER")]
    pub in_cluster: bool,
}

/// Where the client configuration comes from, once the flags and environment are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// These kubeconfig files, merged in order (the first file's values win).
    Kubeconfig(Vec<PathBuf>),
    /// The pod's service account and `KUBERNETES_SERVICE_HOST`/`_PORT`.
    InCluster,
}

/// The parts of the process environment the choice of configuration depends on;
/// tests build one by hand instead of changing the process environment.
#[derive(Debug, Clone, Default)]
pub struct KubeEnv {
    /// `$HOME`, where `.kube/config` is looked for.
    pub home: Option<PathBuf>,
    /// `KUBERNETES_SERVICE_HOST`.
    pub service_host: Option<String>,
    /// `KUBERNETES_SERVICE_PORT`.
    pub service_port: Option<String>,
    /// The service account token file of in-cluster configuration.
    pub token_file: PathBuf,
}

impl KubeEnv {
    /// The environment of this process.
    pub fn from_process() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
            service_host: var(SERVICE_HOST_ENV),
            service_port: var(SERVICE_PORT_ENV),
            token_file: PathBuf::from(IN_CLUSTER_TOKEN),
        }
    }

    /// `~/.kube/config`, when `$HOME` is known.
    pub fn default_kubeconfig(&self) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join(".kube").join("config"))
    }
}

/// Why no usable connection to the Kubernetes API server could be configured or made.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// Nothing says where the API server is.
    #[error(
        "no Kubernetes configuration: no --kubeconfig or KUBECONFIG, no kubeconfig at {}, \
         and not running in a cluster ({SERVICE_HOST_ENV} is unset)",
        default_kubeconfig.as_deref().map_or("~/.kube/config (HOME unset)".into(), |p| p.display().to_string())
    )]
    NoConfiguration {
        /// The default kubeconfig path looked at.
        default_kubeconfig: Option<PathBuf>,
    },
    /// A kubeconfig file named by the flags does not exist.
    #[error("kubeconfig {} does not exist", path.display())]
    KubeconfigMissing {
        /// The file.
        path: PathBuf,
    },
    /// A kubeconfig file could not be read or parsed.
    #[error("kubeconfig {} is unreadable: {detail}", path.display())]
    KubeconfigUnreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong, with its causes.
        detail: String,
        /// kube's error.
        #[source]
        source: Box<KubeconfigError>,
    },
    /// The requested context is not in the kubeconfig.
    #[error(
        "context {context:?} not found in kubeconfig {} (contexts: {})",
        paths_shown(paths),
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )]
    ContextNotFound {
        /// The context asked for.
        context: String,
        /// The contexts the kubeconfig has.
        available: Vec<String>,
        /// The kubeconfig files read.
        paths: Vec<PathBuf>,
    },
    /// No context was asked for and the kubeconfig has no current-context.
    #[error(
        "kubeconfig {} has no current-context; pass --kube-context",
        paths_shown(paths)
    )]
    NoCurrentContext {
        /// The kubeconfig files read.
        paths: Vec<PathBuf>,
    },
    /// The kubeconfig was read but its context, cluster or user is unusable.
    #[error("kubeconfig {}: {detail}", paths_shown(paths))]
    KubeconfigInvalid {
        /// The kubeconfig files read.
        paths: Vec<PathBuf>,
        /// What went wrong, with its causes.
        detail: String,
        /// kube's error.
        #[source]
        source: Box<KubeconfigError>,
    },
    /// In-cluster configuration was chosen but the pod's environment lacks a part.
    #[error("in-cluster configuration incomplete: {missing}")]
    InClusterIncomplete {
        /// The variable or file missing.
        missing: String,
    },
    /// In-cluster configuration could not be loaded.
    #[error("in-cluster configuration: {detail}")]
    InCluster {
        /// What went wrong, with its causes.
        detail: String,
        /// kube's error.
        #[source]
        source: Box<kube::config::InClusterError>,
    },
    /// The client could not be built from the configuration (TLS, proxy, auth).
    #[error("cannot build a Kubernetes client for {url}: {detail}")]
    Client {
        /// The API server's URL.
        url: String,
        /// What went wrong, with its causes.
        detail: String,
        /// kube's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server did not answer.
    #[error("Kubernetes API server {url} unreachable: {detail}")]
    Unreachable {
        /// The API server's URL.
        url: String,
        /// What went wrong, with its causes.
        detail: String,
        /// kube's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server refused the request for lack of permission (HTTP 403).
    #[error("forbidden: cannot {verb} {resource} {}: {message}", scope_shown(namespace.as_deref()))]
    Forbidden {
        /// The verb attempted (`list`, `watch`, `create`, ...).
        verb: String,
        /// The resource (`virtualservices.networking.istio.io`, `pods`, ...).
        resource: String,
        /// The namespace, or `None` at the cluster scope.
        namespace: Option<String>,
        /// The API server's message.
        message: String,
    },
    /// Any other failed request.
    #[error("cannot {verb} {resource} {}: {detail}", scope_shown(namespace.as_deref()))]
    Request {
        /// The verb attempted.
        verb: String,
        /// The resource.
        resource: String,
        /// The namespace, or `None` at the cluster scope.
        namespace: Option<String>,
        /// What went wrong, with its causes.
        detail: String,
        /// kube's error.
        #[source]
        source: Box<kube::Error>,
    },
}

fn paths_shown(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn scope_shown(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "at the cluster scope".to_string(),
    }
}

/// An error and its causes on one line (`outer: inner: innermost`), skipping causes
/// whose text the previous one already carries.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let next = e.to_string();
        if !text.contains(&next) {
            let _ = write!(text, ": {next}");
        }
        cause = e.source();
    }
    text
}

/// Maps a failed request to an error naming what was attempted: a 403 becomes
/// [`KubeError::Forbidden`] (with the server's message, which names the service
/// account), anything else [`KubeError::Request`].
pub fn request_error(
    error: kube::Error,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
) -> KubeError {
    match error {
        kube::Error::Api(status) if status.code == 403 => KubeError::Forbidden {
            verb: verb.to_string(),
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
            message: status.message,
        },
        other => KubeError::Request {
            verb: verb.to_string(),
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
            detail: error_chain(&other),
            source: Box::new(other),
        },
    }
}

impl KubeArgs {
    /// Decides where the configuration comes from: `--in-cluster`; else the
    /// kubeconfig flag or `KUBECONFIG`; else `~/.kube/config` when it exists; else
    /// in-cluster when `KUBERNETES_SERVICE_HOST` is set.
    pub fn source(&self, env: &KubeEnv) -> Result<ConfigSource, KubeError> {
        if self.in_cluster {
            return Ok(ConfigSource::InCluster);
        }
        if let Some(list) = self.kubeconfig.as_ref().filter(|l| !l.is_empty()) {
            let paths: Vec<PathBuf> = std::env::split_paths(list)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            if !paths.is_empty() {
                return Ok(ConfigSource::Kubeconfig(paths));
            }
        }
        let default = env.default_kubeconfig();
        if let Some(path) = default.as_ref().filter(|p| p.is_file()) {
            return Ok(ConfigSource::Kubeconfig(vec![path.clone()]));
        }
        if env.service_host.is_some() {
            return Ok(ConfigSource::InCluster);
        }
        Err(KubeError::NoConfiguration {
            default_kubeconfig: default,
        })
    }

    /// The client configuration, from the source [`KubeArgs::source`] picks.
    pub async fn config(&self, env: &KubeEnv) -> Result<kube::Config, KubeError> {
        match self.source(env)? {
            ConfigSource::Kubeconfig(paths) => {
                kubeconfig_config(&paths, self.kube_context.as_deref()).await
            }
            ConfigSource::InCluster => in_cluster_config(env),
        }
    }

    /// A client for the API server, built without contacting it (see
    /// [`KubeArgs::connect`]). Needs a Tokio runtime.
    pub async fn client(&self) -> Result<kube::Client, KubeError> {
        client_from(self.config(&KubeEnv::from_process()).await?)
    }

    /// A client for the API server, checked by asking the server for its version.
    pub async fn connect(&self) -> Result<kube::Client, KubeError> {
        connect(self.config(&KubeEnv::from_process()).await?).await
    }
}

/// Reads and merges kubeconfig files, checks the context, and makes the configuration.
pub async fn kubeconfig_config(
    paths: &[PathBuf],
    context: Option<&str>,
) -> Result<kube::Config, KubeError> {
    let mut merged: Option<Kubeconfig> = None;
    for path in paths {
        let file = read_kubeconfig(path)?;
        merged = Some(match merged {
            None => file,
            Some(m) => m
                .merge(file)
                .map_err(|source| KubeError::KubeconfigUnreadable {
                    path: path.clone(),
                    detail: error_chain(&source),
                    source: Box::new(source),
                })?,
        });
    }
    let kubeconfig = merged.unwrap_or_default();
    match context {
        Some(wanted) => {
            if !kubeconfig.contexts.iter().any(|c| c.name == wanted) {
                return Err(KubeError::ContextNotFound {
                    context: wanted.to_string(),
                    available: kubeconfig.contexts.iter().map(|c| c.name.clone()).collect(),
                    paths: paths.to_vec(),
                });
            }
        }
        None => match kubeconfig.current_context.as_deref() {
            None | Some("") => {
                return Err(KubeError::NoCurrentContext {
                    paths: paths.to_vec(),
                });
            }
            Some(current) if !kubeconfig.contexts.iter().any(|c| c.name == current) => {
                return Err(KubeError::ContextNotFound {
                    context: current.to_string(),
                    available: kubeconfig.contexts.iter().map(|c| c.name.clone()).collect(),
                    paths: paths.to_vec(),
                });
            }
            Some(_) => {}
        },
    }
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|source| KubeError::KubeconfigInvalid {
            paths: paths.to_vec(),
            detail: error_chain(&source),
            source: Box::new(source),
        })
}

fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, KubeError> {
    if !path.exists() {
        return Err(KubeError::KubeconfigMissing {
            path: path.to_path_buf(),
        });
    }
    Kubeconfig::read_from(path).map_err(|source| KubeError::KubeconfigUnreadable {
        path: path.to_path_buf(),
        detail: error_chain(&source),
        source: Box::new(source),
    })
}

/// The pod's in-cluster configuration, after checking that its parts are present.
pub fn in_cluster_config(env: &KubeEnv) -> Result<kube::Config, KubeError> {
    for (name, value) in [
        (SERVICE_HOST_ENV, &env.service_host),
        (SERVICE_PORT_ENV, &env.service_port),
    ] {
        if value.is_none() {
            return Err(KubeError::InClusterIncomplete {
                missing: format!("environment variable {name} is unset"),
            });
        }
    }
    if !env.token_file.is_file() {
        return Err(KubeError::InClusterIncomplete {
            missing: format!(
                "service account token {} does not exist (is a token mounted?)",
                env.token_file.display()
            ),
        });
    }
    kube::Config::incluster().map_err(|source| KubeError::InCluster {
        detail: error_chain(&source),
        source: Box::new(source),
    })
}

/// A client built from `config`, without contacting the server.
pub fn client_from(config: kube::Config) -> Result<kube::Client, KubeError> {
    let url = config.cluster_url.to_string();
    kube::Client::try_from(config).map_err(|source| KubeError::Client {
        url,
        detail: error_chain(&source),
        source: Box::new(source),
    })
}

/// A client built from `config` and checked by asking the server for its version.
pub async fn connect(config: kube::Config) -> Result<kube::Client, KubeError> {
    let url = config.cluster_url.to_string();
    let client = client_from(config)?;
    match client.apiserver_version().await {
        Ok(_) => Ok(client),
        Err(source @ kube::Error::Api(_)) => Err(request_error(source, "get", "/version", None)),
        Err(source) => Err(KubeError::Unreachable {
            url,
            detail: error_chain(&source),
            source: Box::new(source),
        }),
    }
}

#[cfg(test)]
mod tests;
