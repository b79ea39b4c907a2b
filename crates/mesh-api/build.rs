//! Compiles `proto/` with protox (no system protoc) and writes the descriptor sets
//! used for gRPC server reflection: Dromon's own, and the part of Envoy's API that
//! Dromon serves (the ADS service and everything it references).

use std::{
    collections::{BTreeSet, HashMap},
    env,
    path::PathBuf,
};

use prost::Message;

const PROTOS: &[&str] = &["dromon/mcp/v1/mcp.proto"];

/// Envoy services served by Dromon components, described by reflection.
const ENVOY_SERVICES: &[&str] = &["envoy/service/discovery/v3/ads.proto"];

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
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Ordered maps encode deterministically, so equal content gives equal bytes.
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
