//! Compiles `proto/` with protox (no system protoc) and writes the descriptor sets
//! used for gRPC server reflection: Dromon's own, and the part of Envoy's API that
//! Dromon serves (the ADS service and everything it references).

use std::{
    collections::{BTreeSet, HashMap},
    env,
    path::PathBuf,
};

use prost::Message;

const PROTOS: &[&str] = &[
    "dromon/mcp/v1/mcp.proto",
    "istio/v1/auth/ca.proto",
    "istio/mixer/v1/attributes.proto",
    "istio/mixer/v1/mixer.proto",
];

/// Envoy services served by Dromon components, described by reflection.
const ENVOY_SERVICES: &[&str] = &[
    "envoy/service/discovery/v3/ads.proto",
    "envoy/service/secret/v3/sds.proto",
    "envoy/service/auth/v3/external_auth.proto",
    "envoy/service/ratelimit/v3/rls.proto",
    "envoy/service/accesslog/v3/als.proto",
];

/// The Envoy resources and extensions pilot sends, for decoding them into JSON
/// (`/debug/config_dump`). Files absent from Envoy's set are skipped.
const ENVOY_CONFIG: &[&str] = &[
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/config/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
];

/// The files of `all` that `roots` need, transitively, in dependency order.
fn closure(all: &prost_types::FileDescriptorSet, roots: &[&str]) -> prost_types::FileDescriptorSet {
    let by_name: HashMap<&str, &prost_types::FileDescriptorProto> =
        all.file.iter().map(|f| (f.name(), f)).collect();
    let mut seen = BTreeSet::new();
    let mut ordered = Vec::new();
    fn visit<'a>(
        name: &'a str,
        by_name: &HashMap<&str, &'a prost_types::FileDescriptorProto>,
        seen: &mut BTreeSet<&'a str>,
        ordered: &mut Vec<prost_types::FileDescriptorProto>,
    ) {
        let Some(file) = by_name.get(name) else {
            return;
        };
        if !seen.insert(file.name()) {
            return;
        }
        for dep in &file.dependency {
            visit(dep, by_name, seen, ordered);
        }
        ordered.push((*file).clone());
    }
    for root in roots {
        visit(root, &by_name, &mut seen, &mut ordered);
    }
    prost_types::FileDescriptorSet { file: ordered }
}

/// The descriptor set shipped inside the `envoy-types` crate (every Envoy message,
/// extensions included), read from the crate's unpacked source in Cargo's registry:
/// the version comes from the workspace's `Cargo.lock`.
fn envoy_types_descriptors() -> Result<prost_types::FileDescriptorSet, Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let lock = manifest_dir
        .ancestors()
        .map(|d| d.join("Cargo.lock"))
        .find(|p| p.exists())
        .ok_or("no Cargo.lock")?;
    let lock_text = std::fs::read_to_string(&lock)?;
    let version = lock_text
        .split("[[package]]")
        .find(|p| p.contains("name = \"envoy-types\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .ok_or("envoy-types is not in Cargo.lock")?;
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("no CARGO_HOME")?;
    let wanted = format!("envoy-types-{version}");
    for index in std::fs::read_dir(cargo_home.join("registry/src"))? {
        let file = index?.path().join(&wanted).join("src/generated/types.bin");
        if file.exists() {
            println!("cargo:rerun-if-changed={}", file.display());
            let bytes = std::fs::read(file)?;
            return Ok(prost_types::FileDescriptorSet::decode(bytes.as_slice())?);
        }
    }
    Err(format!("{wanted} not found under {}", cargo_home.display()).into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("dromon_descriptor.bin"), fds.encode_to_vec())?;
    let envoy = prost_types::FileDescriptorSet::decode(xds_api::FILE_DESCRIPTOR_SET)?;
    let served = closure(&envoy, ENVOY_SERVICES);
    if served.file.is_empty() {
        return Err("Envoy's descriptor set lacks the ADS service".into());
    }
    std::fs::write(out.join("envoy_descriptor.bin"), served.encode_to_vec())?;
    let config = match envoy_types_descriptors() {
        Ok(full) => closure(&full, ENVOY_CONFIG),
        Err(e) => {
            println!(
                "cargo:warning=Envoy's full descriptor set unavailable ({e}); config dumps will show fewer extensions"
            );
            closure(&envoy, ENVOY_CONFIG)
        }
    };
    std::fs::write(
        out.join("envoy_config_descriptor.bin"),
        config.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Ordered maps encode deterministically, so equal content gives equal bytes.
        .btree_map(".")
        // One Rust type for google.rpc.Status, shared with Envoy's APIs.
        .extern_path(".google.rpc", "::envoy_types::pb::google::rpc")
        .compile_fds(fds)?;
    Ok(())
}
