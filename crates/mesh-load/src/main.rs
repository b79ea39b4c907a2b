//! The mesh-load binary.
//!
//! jemalloc is the allocator, as in the servers it loads: the load shares their
//! cores, and the system allocator's per-thread arenas cost it system calls
//! (growing and shrinking heaps) on the request path.

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    mesh_load::Cli::parse_and_run()
}
