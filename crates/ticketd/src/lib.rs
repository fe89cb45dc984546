//! The ticketd daemon.
//!
//! - `ticketd serve`: production. Connects to NATS (`--nats-url`, optional credentials file),
//!   opens the log in the data directory, serves the command API and publishes the outbox.
//! - `ticketd dev`: the all-in-one for a newcomer. Starts a local `nats-server` with JetStream in
//!   the data directory (installing it with `deploy/scripts/install-nats-server` if missing),
//!   then serves on it. The nats-server config (`deploy/nats/dev.conf`), the install script and
//!   the default policy are embedded in the binary, so it runs from any directory.
//!
//! Settings come from, in order of precedence: flags, `TICKETD_*` environment variables, the
//! TOML config file (`--config`), defaults. SIGTERM or SIGINT shuts down gracefully: stop taking
//! requests, finish the commands in flight, drain the outbox to NATS, within a deadline.

mod cluster;
mod config;
mod dev;
mod instance;
mod ops;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use config::{Config, LogFormat};

#[derive(Debug, Parser)]
#[command(name = "ticketd", version, about = "The ticketd engine: SLA-exact ticket lifecycles on NATS")]
struct Cli {
    #[command(flatten)]
    settings: config::Flags,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Serve on an existing NATS deployment.
    Serve,
    /// Start a local nats-server with JetStream in the data directory, and serve on it.
    Dev {
        /// The local nats-server's client port.
        #[arg(long, default_value_t = 4222)]
        port: u16,
        /// A nats-server config file (default: the embedded deploy/nats/dev.conf, JetStream with
        /// `sync_interval: always`, written into the data directory).
        #[arg(long)]
        nats_config: Option<std::path::PathBuf>,
        /// The local nats-server's monitoring port (`/varz`, `/jsz`), if any.
        #[arg(long)]
        nats_monitor_port: Option<u16>,
        /// Run on a simulated clock that only moves when an operator advances it
        /// (`ticketctl clock advance`), firing every warning, breach and escalation due on the
        /// way: for testing SLA automations. Never in production: the data directory records
        /// the clock kind, and a directory used with one kind refuses the other.
        #[arg(long)]
        test_clock: bool,
        /// The test clock's first instant (RFC 3339, e.g. 2026-11-27T09:00:00Z; default: now).
        /// A data directory the test clock has already moved resumes no earlier than its last
        /// event.
        #[arg(long, requires = "test_clock")]
        test_clock_start: Option<ticket_domain::Timestamp>,
        /// Run a cluster on this machine instead, for trying failover by hand: this many
        /// nats-servers in one JetStream cluster (client ports from --port on) and as many
        /// `ticketd serve --cluster-node` processes, under the data directory (ADR 0015).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=9), conflicts_with = "test_clock")]
        nodes: u16,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::resolve(&cli.settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ticketd: {e:#}");
            return ExitCode::from(2);
        }
    };
    config::init_logging(config.log.format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ticketd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.mode {
            Mode::Serve => serve::serve(config, ticket_engine::EngineClock::Wall, None).await,
            Mode::Dev { port, nats_config, nats_monitor_port, test_clock, test_clock_start, nodes } => {
                let nats = dev::DevNats { port, config: nats_config, monitor_port: nats_monitor_port };
                if nodes > 1 {
                    return dev::dev_nodes(config, nats, usize::from(nodes)).await;
                }
                let clock = if test_clock {
                    let start = test_clock_start.unwrap_or_else(|| std::time::SystemTime::now().into());
                    ticket_engine::EngineClock::Simulated(std::sync::Arc::new(ticket_engine::SimulatedClock::new(
                        start,
                    )))
                } else {
                    ticket_engine::EngineClock::Wall
                };
                dev::dev(config, nats, clock).await
            }
        }
    });
    // A blocking task still running (a storage read on a stuck disk) does not hold the exit.
    runtime.shutdown_timeout(serve::SHUTDOWN_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ticketd stopped on an error");
            ExitCode::FAILURE
        }
    }
}
