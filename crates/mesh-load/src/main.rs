//! The mesh-load binary.

fn main() -> std::process::ExitCode {
    mesh_load::Cli::parse_and_run()
}
