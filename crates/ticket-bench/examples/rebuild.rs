//! Every read model rebuilt from a sled log, and nothing else: the part of
//! `ticket-bench projections` to run under a profiler (`perf record --call-graph dwarf`).
//! In memory by default; with a second argument, into a state store at that path (deleted
//! first), as ticketd's catch-up does.
//!
//! ```sh
//! cargo run --release -p ticket-bench --example rebuild -- /tmp/pb/projections-log [/tmp/state.redb]
//! ```

use std::sync::Arc;

use anyhow::Context;
use ticket_log::{EventLog, StateStore};
use ticket_log_sled::{RedbState, SledConfig, SledLog};
use ticket_projections::{Projector, ProjectorConfig};

// The allocator ticketd and the benchmark use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().context("usage: rebuild <log directory> [<state store to create>]")?;
    let log = SledLog::open(SledConfig::new(dir))?;
    let head = log.head();
    let started = std::time::Instant::now();
    let tickets = match args.next() {
        None => {
            ticket_projections::ReadModels::build(&log, ticket_projections::At::Now, |_, _| {})?.tickets.model().live()
        }
        Some(path) => {
            let _ = std::fs::remove_file(&path);
            let store: Arc<dyn StateStore> = Arc::new(RedbState::open(std::path::Path::new(&path))?);
            let config = ProjectorConfig { batch: 8192, ..ProjectorConfig::default() };
            let projector = Projector::open(log.clone(), Some(store), config);
            projector.catch_up(|_, _| {})?;
            projector.flush()?;
            projector.live_rows()[0]
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "rebuilt {head} events in {seconds:.2}s: {:.0} events/s, {tickets} tickets' rows in memory",
        head as f64 / seconds.max(1e-9)
    );
    Ok(())
}
