//! The meshctl binary.

fn main() -> std::process::ExitCode {
    meshctl::Cli::parse_and_run()
}
