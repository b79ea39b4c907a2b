//! The sidecar-injector binary.

fn main() -> std::process::ExitCode {
    sidecar_injector::args::Args::parse_and_run()
}
