//! `ticket-bench`: benchmarks of the ticketd engine. Each prints a human table, or JSON with
//! `--json`, with the machine it ran on. Results go in `docs/benchmarks.md`.

mod alloc;
mod append;
mod cluster;
mod failover;
mod machine;
mod nats;
mod processes;
mod projections;
mod scale;
mod stats;
mod timers;
mod workload;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ticket-bench", version, about = "Benchmarks of the ticketd engine")]
struct Cli {
    /// Print the results as JSON on standard output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Durable appends through the command service on sled, against raw sled batched inserts of
    /// the same bytes with the same flush policy (group commit, fsync per group).
    Append(append::Args),
    /// Commands over NATS request/reply with K clients, against the raw request/reply rate of
    /// the same server answered by a trivial responder.
    Nats(nats::Args),
    /// The timer service with a million pending deadlines under the real clock: firing lag,
    /// memory per pending deadline, and the time to rebuild the index from the log.
    Timers(timers::Args),
    /// Every read model rebuilt from a log of a million events: events per second, and where
    /// the time goes (reading and decoding the log, applying to each model).
    Projections(projections::Args),
    /// What grows with history: one log grown through several sizes, and at each the real
    /// ticketd's restart after kill -9, resident memory serving and rebuilding, checkpoints,
    /// query latency and rebuild rates; a least-squares extrapolation to 10^8 events.
    Scale(scale::Args),
    /// Acknowledgement after replication (the fenced log stream, R3 on three nats-servers with
    /// fsync on every write) against local acknowledgement, and a partition rebuilt from the
    /// stream by a node with an empty data directory.
    Cluster(cluster::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ticket-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.bench {
            Bench::Append(args) => append::run(args, cli.json).await,
            Bench::Nats(args) => nats::run(args, cli.json).await,
            Bench::Timers(args) => timers::run(args, cli.json).await,
            Bench::Projections(args) => projections::run(args, cli.json).await,
            Bench::Scale(args) => scale::run(args, cli.json).await,
            Bench::Cluster(args) => cluster::run(args, cli.json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ticket-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A directory for benchmark data: the one given, or a temporary one removed at the end.
fn data_dir(given: Option<PathBuf>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match given {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            Ok((dir, None))
        }
        None => {
            let dir = tempfile::Builder::new().prefix("ticket-bench-").tempdir()?;
            Ok((dir.path().to_path_buf(), Some(dir)))
        }
    }
}
