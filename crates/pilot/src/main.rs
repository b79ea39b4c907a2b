//! The pilot binary.
//!
//! jemalloc is the allocator: pilot's heap is many small, short-lived allocations
//! spread over thousands of streams, where it keeps the resident size well below
//! the system allocator's. Its background thread returns freed pages to the system
//! while pilot is idle (without it, what a connect burst freed stays resident until
//! the next burst of allocations). Without the `jemalloc` feature the system
//! allocator is used, which heap profilers (heaptrack) can follow.

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("jemalloc background thread not started: {e}");
    }
    pilot::args::Args::parse_and_run()
}
