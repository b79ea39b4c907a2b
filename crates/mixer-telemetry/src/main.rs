//! The mixer-telemetry binary.

fn main() -> std::process::ExitCode {
    mixer_telemetry::args::Args::parse_and_run()
}
