//! The galley binary.

fn main() -> std::process::ExitCode {
    galley::args::Args::parse_and_run()
}
