//! The mixer-telemetry binary.
//!
//! jemalloc is the allocator: each request allocates and frees many small
//! values (attribute bags), often on different threads, where the system
//! allocator spends much of its time consolidating.

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    mixer_telemetry::args::Args::parse_and_run()
}
