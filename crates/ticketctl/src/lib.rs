//! The operator CLI of ticketd. Local mode works on a data directory (the daemon must not be
//! running on it: the log is opened exclusively).
//!
//! Exit codes: 0 success; 1 the check failed or the thing was not found; 2 bad usage;
//! 3 the data could not be read.

mod describe;
mod local;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "ticketctl", version, about = "Operate ticketd: history, time travel, audits, exports")]
pub struct Cli {
    /// The engine's data directory (local mode).
    #[arg(long, env = "TICKETD_DATA_DIR", global = true, default_value = "data")]
    pub data_dir: PathBuf,
    /// Machine-readable output: JSON (the canonical proto3 JSON of the API's messages).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every event of a ticket, in order.
    History { ticket: String },
    /// A ticket as it is, or as it was at an instant or a global position.
    State {
        ticket: String,
        /// An RFC 3339 instant (2026-11-21T04:00:00+08:00) or a global position (1234).
        #[arg(long)]
        at: Option<String>,
    },
    /// Audits of the log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Writes events to a file or standard output.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// First event: a global position, or an RFC 3339 instant (by occurred-at).
        #[arg(long)]
        from: Option<String>,
        /// Last event, inclusive: a global position, or an RFC 3339 instant.
        #[arg(long)]
        to: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Hash chain intact, positions gapless, per-ticket versions contiguous, commands covering
    /// every event, and every stored decision reproduced by re-running it.
    Verify {
        /// A policy file decisions may have been made with (repeatable). Commands decided under
        /// a policy version not given are reported as not re-run.
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One canonical proto3 JSON `EventEnvelope` per line.
    Jsonl,
    /// Length-delimited protobuf `EventEnvelope`s.
    Protobuf,
}

/// What went wrong, and which exit code says so.
#[derive(Debug)]
pub enum Failure {
    /// A check failed or the thing asked for does not exist (exit 1).
    Negative(String),
    /// The request does not make sense (exit 2).
    Usage(String),
    /// The data could not be read (exit 3).
    Data(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Data(e.into())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Negative(message)) => {
            eprintln!("ticketctl: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("ticketctl: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Data(e)) => {
            eprintln!("ticketctl: {e:#}");
            ExitCode::from(3)
        }
    }
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::History { ticket } => local::history(&cli.data_dir, &ticket, cli.json),
        Command::State { ticket, at } => local::state(&cli.data_dir, &ticket, at.as_deref(), cli.json),
        Command::Audit { command: AuditCommand::Verify { policies } } => {
            local::audit_verify(&cli.data_dir, &policies, cli.json)
        }
        Command::Export { format, from, to, output } => {
            local::export(&cli.data_dir, format, from.as_deref(), to.as_deref(), output.as_deref())
        }
    }
}
