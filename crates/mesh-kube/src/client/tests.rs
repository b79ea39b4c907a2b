use std::path::PathBuf;

use clap::Parser;
use kube::core::Status;

use super::*;

const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: SERVER
contexts:
- name: dev
  context: {cluster: fake, user: dev, namespace: mesh}
- name: ops
  context: {cluster: fake, user: dev, namespace: istio-system}
users:
- name: dev
  user: {token: not-a-real-token}
current-context: dev
"#;

fn mk_kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("config");
    std::fs::write(&path, KUBECONFIG.replace("SERVER", server)).expect("write kubeconfig");
    path
}

fn mk_args(kubeconfig: &Path, context: Option<&str>) -> KubeArgs {
    KubeArgs {
        kubeconfig: Some(kubeconfig.as_os_str().to_owned()),
        kube_context: context.map(str::to_string),
        in_cluster: false,
    }
}

fn mk_env(home: Option<&Path>, host: Option<&str>, port: Option<&str>) -> KubeEnv {
    KubeEnv {
        home: home.map(Path::to_path_buf),
        service_host: host.map(str::to_string),
        service_port: port.map(str::to_string),
        token_file: PathBuf::from("/nonexistent/dromon/token"),
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    kube: KubeArgs,
}

#[test]
fn flags_parse() {
    <Cli as clap::CommandFactory>::command().debug_assert();
    let cli = Cli::try_parse_from([
        "x",
        "--kubeconfig",
        "/a/config:/b/config",
        "--kube-context",
        "ops",
        "--in-cluster",
    ])
    .expect("flags parse");
    assert_eq!(cli.kube.kube_context.as_deref(), Some("ops"));
    assert!(cli.kube.in_cluster);
    let cli = Cli::try_parse_from(["x", "--kubeconfig", "/a/config:/b/config"]).expect("parse");
    assert_eq!(
        cli.kube.source(&mk_env(None, None, None)).expect("source"),
        ConfigSource::Kubeconfig(vec!["/a/config".into(), "/b/config".into()])
    );
}

#[tokio::test]
async fn kubeconfig_from_a_file_builds_a_client() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = mk_kubeconfig(dir.path(), "https://kube.invalid:6443");
    let env = mk_env(None, None, None);
    let config = mk_args(&path, None).config(&env).await.expect("config");
    assert_eq!(config.cluster_url.to_string(), "https://kube.invalid:6443/");
    assert_eq!(config.default_namespace, "mesh");
    client_from(config).expect("client builds without a server");

    let config = mk_args(&path, Some("ops")).config(&env).await.expect("ops");
    assert_eq!(config.default_namespace, "istio-system");
}

#[tokio::test]
async fn a_missing_kubeconfig_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("no-such-config");
    let err = mk_args(&path, None)
        .config(&mk_env(None, None, None))
        .await
        .expect_err("missing file");
    assert!(
        matches!(err, KubeError::KubeconfigMissing { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn an_unparsable_kubeconfig_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config");
    std::fs::write(&path, "clusters: [this is: not, a kubeconfig").expect("write");
    let err = mk_args(&path, None)
        .config(&mk_env(None, None, None))
        .await
        .expect_err("bad YAML");
    assert!(
        matches!(err, KubeError::KubeconfigUnreadable { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn an_unknown_context_is_named_with_the_known_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = mk_kubeconfig(dir.path(), "https://kube.invalid:6443");
    let err = mk_args(&path, Some("prod"))
        .config(&mk_env(None, None, None))
        .await
        .expect_err("no such context");
    let text = err.to_string();
    assert!(matches!(err, KubeError::ContextNotFound { .. }), "{err:?}");
    assert!(text.contains("\"prod\""), "{text}");
    assert!(text.contains("dev, ops"), "{text}");
}

#[test]
fn the_source_follows_flags_then_home_then_the_pod() {
    let home = tempfile::tempdir().expect("temp dir");
    let none = KubeArgs::default();
    // Nothing at all: the error names the default kubeconfig path.
    let err = none
        .source(&mk_env(Some(home.path()), None, None))
        .expect_err("no configuration");
    let text = err.to_string();
    assert!(text.contains(".kube/config"), "{text}");
    assert!(text.contains(SERVICE_HOST_ENV), "{text}");
    // In a pod.
    assert_eq!(
        none.source(&mk_env(Some(home.path()), Some("10.0.0.1"), Some("443")))
            .expect("in cluster"),
        ConfigSource::InCluster
    );
    // ~/.kube/config wins over the pod's environment.
    std::fs::create_dir_all(home.path().join(".kube")).expect("mkdir");
    let default = mk_kubeconfig(&home.path().join(".kube"), "https://kube.invalid");
    assert_eq!(
        none.source(&mk_env(Some(home.path()), Some("10.0.0.1"), Some("443")))
            .expect("default kubeconfig"),
        ConfigSource::Kubeconfig(vec![default])
    );
    // The flag wins over ~/.kube/config, and --in-cluster over everything.
    let flagged = mk_args(Path::new("/etc/dromon/kubeconfig"), None);
    assert_eq!(
        flagged
            .source(&mk_env(Some(home.path()), None, None))
            .expect("flag"),
        ConfigSource::Kubeconfig(vec!["/etc/dromon/kubeconfig".into()])
    );
    let forced = KubeArgs {
        in_cluster: true,
        ..flagged
    };
    assert_eq!(
        forced
            .source(&mk_env(Some(home.path()), None, None))
            .expect("forced"),
        ConfigSource::InCluster
    );
}

#[test]
fn an_incomplete_pod_environment_is_named() {
    let err = in_cluster_config(&mk_env(None, Some("10.0.0.1"), None)).expect_err("no port");
    assert!(err.to_string().contains(SERVICE_PORT_ENV), "{err}");
    let err = in_cluster_config(&mk_env(None, None, Some("443"))).expect_err("no host");
    assert!(err.to_string().contains(SERVICE_HOST_ENV), "{err}");
    let err = in_cluster_config(&mk_env(None, Some("10.0.0.1"), Some("443"))).expect_err("token");
    assert!(
        err.to_string().contains("/nonexistent/dromon/token"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("http://127.0.0.1:{}", closed_port());
    let path = mk_kubeconfig(dir.path(), &url);
    let config = mk_args(&path, None)
        .config(&mk_env(None, None, None))
        .await
        .expect("config");
    let Err(err) = connect(config).await else {
        panic!("{url}: nothing listens there, yet the client connected");
    };
    assert!(matches!(err, KubeError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
}

fn mk_status(code: u16, message: &str) -> kube::Error {
    kube::Error::Api(
        Status {
            code,
            message: message.to_string(),
            reason: "Forbidden".to_string(),
            ..Status::default()
        }
        .boxed(),
    )
}

#[test]
fn a_403_names_the_verb_resource_and_namespace() {
    let server = "virtualservices.networking.istio.io is forbidden: User \
                  \"system:serviceaccount:istio-system:galley\" cannot list resource \
                  \"virtualservices\" in API group \"networking.istio.io\" in the namespace \"bookinfo\"";
    let err = request_error(
        mk_status(403, server),
        "list",
        "virtualservices.networking.istio.io",
        Some("bookinfo"),
    );
    assert!(matches!(err, KubeError::Forbidden { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "forbidden: cannot list virtualservices.networking.istio.io in namespace bookinfo: {server}"
        )
    );
    let err = request_error(mk_status(403, "no"), "watch", "pods", None);
    assert_eq!(
        err.to_string(),
        "forbidden: cannot watch pods at the cluster scope: no"
    );
    // Other API errors are not called forbidden.
    let err = request_error(mk_status(404, "not found"), "get", "pods", Some("a"));
    assert!(matches!(err, KubeError::Request { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot get pods in namespace a: ")
    );
}
