//! Every read model rebuilt in memory from a sled log, and nothing else: the part of
//! `ticket-bench projections` to run under a profiler (`perf record --call-graph dwarf`).
//!
//! ```sh
//! cargo run --release -p ticket-bench --example rebuild -- /tmp/pb/projections-log
//! ```

use anyhow::Context;
use ticket_log::EventLog;
use ticket_log_sled::{SledConfig, SledLog};

// The allocator ticketd and the benchmark use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).context("usage: rebuild <log directory>")?;
    let log = SledLog::open(SledConfig::new(dir))?;
    let head = log.head();
    let started = std::time::Instant::now();
    let models = ticket_projections::ReadModels::build(&log, ticket_projections::At::Now, |_, _| {})?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "rebuilt {head} events in {seconds:.2}s: {:.0} events/s, {} tickets",
        head as f64 / seconds.max(1e-9),
        models.tickets.model().live()
    );
    Ok(())
}
