//! The mixer-policy binary.

fn main() -> std::process::ExitCode {
    mixer_policy::args::Args::parse_and_run()
}
