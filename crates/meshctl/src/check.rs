//! `meshctl validate` and `meshctl analyze`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, ValueEnum};
use galley::offline::{Report, check_paths};
use mesh_model::{Level, parse::ParseOptions};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// One line per finding.
    #[default]
    Text,
    /// A JSON document.
    Json,
}

/// `meshctl validate` flags.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Files or directories (searched recursively for .yaml, .yml and .json).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Namespace given to resources that name none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Minimum level that fails `meshctl analyze`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Threshold {
    /// Any message.
    Info,
    /// Warnings and errors.
    Warning,
    /// Errors only.
    Error,
}

impl Threshold {
    fn level(self) -> Level {
        match self {
            Threshold::Info => Level::Info,
            Threshold::Warning => Level::Warning,
            Threshold::Error => Level::Error,
        }
    }
}

/// `meshctl analyze` flags.
#[derive(Debug, Clone, Args)]
pub struct AnalyzeArgs {
    /// Files or directories (searched recursively for .yaml, .yml and .json).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Namespace given to resources that name none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Lowest message level that makes the command fail.
    #[arg(long, value_enum, default_value_t = Threshold::Warning)]
    pub failure_threshold: Threshold,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

fn load(paths: &[PathBuf], namespace: &str, analyze: bool) -> Result<Report, ExitCode> {
    let opts = ParseOptions {
        default_namespace: namespace.to_string(),
    };
    check_paths(paths, &opts, analyze).map_err(|e| {
        eprintln!("meshctl: {e}");
        ExitCode::from(2)
    })
}

/// Runs `meshctl validate`.
pub fn validate(args: &ValidateArgs) -> ExitCode {
    let report = match load(&args.paths, &args.namespace, false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "files": report.files,
                "resources": report.resources,
                "skipped": report.skipped,
                "errors": report.errors.iter().map(|e| serde_json::json!({"message": e.to_string(), "detail": e})).collect::<Vec<_>>(),
            })
        ),
        Output::Text => {
            for e in &report.errors {
                println!("Error: {e}");
            }
            let verdict = if report.errors.is_empty() {
                "valid"
            } else {
                "INVALID"
            };
            eprintln!(
                "{verdict}: {} file(s), {} resource(s) accepted, {} error(s), {} document(s) of other API groups skipped",
                report.files,
                report.resources,
                report.errors.len(),
                report.skipped
            );
        }
    }
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `meshctl analyze`.
pub fn analyze(args: &AnalyzeArgs) -> ExitCode {
    let report = match load(&args.paths, &args.namespace, true) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let threshold = args.failure_threshold.level();
    let failing = report
        .messages
        .iter()
        .filter(|m| m.level >= threshold)
        .count();
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "errors": report.errors.iter().map(|e| serde_json::json!({"message": e.to_string(), "detail": e})).collect::<Vec<_>>(),
                "messages": report.messages,
            })
        ),
        Output::Text => {
            for e in &report.errors {
                println!("Error [validation] {e}");
            }
            for m in &report.messages {
                let at = m
                    .source
                    .as_ref()
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default();
                let field = m
                    .field
                    .as_ref()
                    .map(|f| format!(" {f}:"))
                    .unwrap_or_default();
                println!(
                    "{:?} [{}] ({} {}/{}{at}){field} {}",
                    m.level,
                    m.code,
                    m.resource.kind,
                    m.resource.namespace,
                    m.resource.name,
                    m.message
                );
            }
            if report.errors.is_empty() && report.messages.is_empty() {
                eprintln!(
                    "No validation issues found when analyzing {} file(s).",
                    report.files
                );
            } else {
                eprintln!(
                    "{} validation error(s), {} analysis message(s) ({} at or above {:?})",
                    report.errors.len(),
                    report.messages.len(),
                    failing,
                    threshold
                );
            }
        }
    }
    if report.errors.is_empty() && failing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
