//! The pilot binary.
//!
//! jemalloc is the allocator: pilot's heap is many small, short-lived allocations
//! spread over thousands of streams, where it keeps the resident size well below
//! the system allocator's.

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    pilot::args::Args::parse_and_run()
}
