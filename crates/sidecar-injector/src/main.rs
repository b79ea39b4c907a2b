//! The sidecar-injector binary.
//!
//! jemalloc is the allocator: each review builds and drops many small JSON
//! values, on whichever worker thread runs it, where the system allocator spends
//! much of its time consolidating.

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    sidecar_injector::args::Args::parse_and_run()
}
