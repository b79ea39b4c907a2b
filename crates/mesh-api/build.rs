//! Compiles `proto/` with protox (no system protoc) and writes the descriptor set used
//! for gRPC server reflection.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &["dromon/mcp/v1/mcp.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("dromon_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Ordered maps encode deterministically, so equal content gives equal bytes.
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
