//! Flag groups shared by every component (`#[command(flatten)]` them).

use clap::{Args, ValueEnum};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging flags.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long = "log-format", env = "DROMON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,galley=debug`).
    #[arg(
        long = "log-level",
        env = "DROMON_LOG",
        default_value = "info",
        global = true
    )]
    pub log_level: String,
}

impl Default for LogArgs {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
}

/// Async runtime flags.
#[derive(Debug, Clone, Default, Args)]
pub struct RuntimeArgs {
    /// Threads serving requests (default: one per CPU). Fewer leaves cores to
    /// other processes on the same machine. With 1, the main thread runs every
    /// task and a connection writes the answers of requests that arrived
    /// together at once: the least CPU per request.
    #[arg(long = "worker-threads", env = "DROMON_WORKER_THREADS", global = true)]
    pub worker_threads: Option<std::num::NonZeroUsize>,
}
