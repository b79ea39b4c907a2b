//! The pilot binary.

fn main() -> std::process::ExitCode {
    pilot::args::Args::parse_and_run()
}
