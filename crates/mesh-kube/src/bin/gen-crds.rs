//! Writes the Istio CRDs generated from mesh-kube's Rust types to
//! `charts/dromon/crds/` (or the directory given as the only argument).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/dromon/crds"),
    };
    for name in mesh_kube::crds::write_all(&dir)? {
        println!("{}", dir.join(name).display());
    }
    Ok(())
}
