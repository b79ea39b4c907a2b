//! The citadel binary.

fn main() -> std::process::ExitCode {
    citadel::args::Args::parse_and_run()
}
