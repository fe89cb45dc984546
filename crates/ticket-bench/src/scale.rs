//! `ticket-bench scale`: what grows with history, measured at several sizes of one log.
//!
//! One sled log grows step by step (`--sizes`): generated through the command service (tickets
//! opened, answered, asked, replied to and resolved, with a sliding window of `--open-tickets`
//! tickets open at any time, every command stamped by the service clock), then, at each size,
//! the real `ticketd serve` binary runs on it (its own nats-server) and is measured from outside:
//!
//! 1. **restart after kill -9**: ticketd caught up, killed with SIGKILL, started again; the time
//!    until `/readyz` answers 200, until every read model's lag (`tickets.admin.lag`) is 0, and
//!    until the timer logs `deadline index ready` (median of `--restarts`);
//! 2. **resident memory** (`/proc/<pid>/status`): the peak VmRSS sampled while serving a query
//!    load and VmHWM then; and while rebuilding from nothing (the read models' and the timer's
//!    state, as `DataDir` names them, deleted first);
//! 3. **state on disk and checkpoint writes**: the size of the read models' and timer's state
//!    after a graceful stop, and, in process, the time and size of writing every read model's and
//!    the deadline index's checkpoint (the engine's public `Checkpoints::save` and
//!    `CheckpointFile::save`);
//! 4. **query latency of each read model** over NATS (`ticket-client`): ticket detail, a
//!    customer's tickets, the board, a timeline, compliance;
//! 5. **rebuild events/s**: in process, `ReadModels::build` over the log and the timer's index
//!    caught up from nothing (`ticket_timer::catch_up`); and ticketd's own rebuild of item 2.
//!
//! Then a least-squares line through each metric against events says whether it is flat and
//! what it predicts at 10^8 events; `--plot` draws restart time and peak memory as an SVG.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use ticket_domain::Policy;
use ticket_engine::DataDir;
use ticket_log::EventLog;
use ticket_log::StateStore;
use ticket_log_sled::RedbState;
use ticket_log_sled::SledLog;
use ticket_projections::{At, Projector, ProjectorConfig, ReadModels};
use ticket_service::{CommandRequest, CommandService, ServiceConfig, Stamp, SystemClock};
use ticket_timer::{DeadlineIndex, IndexStore};

use crate::machine::Machine;
use crate::stats::{Latency, histogram};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The sizes (events in the log) to measure at, ascending; one log grows through them.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000,10000000")]
    pub sizes: Vec<u64>,
    /// Where the log and ticketd's state live (default: a temporary directory). Removed at the
    /// end unless `--keep`; a kept directory is grown further by the next run.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the data directory at the end.
    #[arg(long)]
    pub keep: bool,
    /// Concurrent clients while generating.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Tickets open at any time while generating (a ticket's second half of its life comes
    /// this many tickets after its first).
    #[arg(long, default_value_t = 20_000)]
    pub open_tickets: u64,
    /// The ticketd binary (default: `ticketd` beside this executable, as `cargo build --release
    /// -p ticketd` leaves it).
    #[arg(long)]
    pub ticketd: Option<PathBuf>,
    /// kill -9 and restart cycles per size (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub restarts: usize,
    /// Requests per read model in the query phase.
    #[arg(long, default_value_t = 300)]
    pub queries: usize,
    /// Write the SVG plot of restart time and peak memory against events here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Measure nothing: draw `--plot` from the extrapolation of a report `--report` wrote.
    #[arg(long, requires = "plot")]
    pub plot_from: Option<PathBuf>,
    /// Also write the JSON report here (whether or not `--json` prints it).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// (Default: the embedded deploy/policies/regional-operator.toml.)
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// ticketd is killed (and the size reported as failed) once its resident memory passes
    /// this, so that a model that outgrows the machine does not take it down; the in-process
    /// rebuild is skipped when ticketd's own rebuild peaked above half the memory available.
    #[arg(long, default_value_t = 12_288)]
    pub max_rss_mib: u64,
    /// How long ticketd may take to become ready and catch up, at any step.
    #[arg(long, default_value_t = 1800)]
    pub timeout_secs: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    open_tickets: u64,
    sizes: Vec<SizeReport>,
    extrapolation: Vec<Extrapolation>,
}

#[derive(Debug, Clone, Serialize)]
struct SizeReport {
    events: u64,
    /// Tickets in the read models (from the in-process rebuild).
    tickets: Option<u64>,
    log_bytes: u64,
    generated: Option<Generated>,
    /// The first start at this size: catching up from the previous size's state.
    first_start: Restart,
    /// Each kill -9 and restart.
    restarts: Vec<Restart>,
    restart_ready_median_s: f64,
    restart_caught_up_median_s: f64,
    restart_timer_median_s: Option<f64>,
    serving: Memory,
    /// ticketd started with the read models' and timer's state deleted.
    rebuild_ticketd: Rebuild,
    /// The read models' and timer's files in the data directory after a graceful stop.
    state_bytes_on_disk: u64,
    checkpoint: Option<CheckpointWrite>,
    queries: Queries,
    rebuild_in_process: Option<InProcess>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Generated {
    events: u64,
    seconds: f64,
    events_per_sec: f64,
    refused: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Restart {
    /// From the spawn to `/readyz` answering 200.
    ready_s: f64,
    /// From the spawn to every read model at the log's head (`tickets.admin.lag`).
    caught_up_s: f64,
    /// From the spawn to the timer's `deadline index ready` line.
    timer_ready_s: Option<f64>,
    /// The timer's own account of loading its index (`elapsed_ms`), and whether it rebuilt it.
    timer_load_ms: Option<u64>,
    timer_rebuilt: Option<bool>,
    /// The events the timer read to get its index ready (from its checkpoint's position, or 0).
    timer_replayed: Option<u64>,
    /// Peak resident memory of this start (VmHWM once caught up).
    hwm_mib: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Memory {
    /// The largest VmRSS sampled (every 20 ms) while the query load ran.
    peak_rss_mib: f64,
    /// VmHWM at the end of the load: the process's peak since its start (catch-up included).
    hwm_mib: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Rebuild {
    ready_s: f64,
    caught_up_s: f64,
    timer_ready_s: Option<f64>,
    /// Whether the timer said it rebuilt its index from the log (it should: its state was
    /// deleted; if not, the state lives somewhere `DataDir` does not name here).
    timer_rebuilt: Option<bool>,
    events_per_sec: f64,
    peak_rss_mib: f64,
    hwm_mib: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct CheckpointWrite {
    /// Every read model built from nothing into a scratch state store, flushing as it goes (in
    /// process), and the store's size then.
    read_models_s: f64,
    read_models_bytes: u64,
    /// The deadline index built from nothing into the same store, flushing as it goes, and what
    /// it added to the store's size.
    timer_s: f64,
    timer_bytes: u64,
    timer_pending: usize,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Queries {
    ticket: Latency,
    customer: Latency,
    board: Latency,
    timeline: Latency,
    compliance: Latency,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct InProcess {
    read_models_s: f64,
    read_models_events_per_sec: f64,
    timer_index_s: f64,
    timer_index_events_per_sec: f64,
}

/// A least-squares line through one metric against events.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Extrapolation {
    metric: String,
    unit: String,
    points: Vec<(f64, f64)>,
    fit: Fit,
    at_1e8: f64,
    /// See [`Fit::is_flat`].
    flat: bool,
}

/// `y = intercept + slope * x`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub(crate) struct Fit {
    pub intercept: f64,
    pub slope: f64,
}

impl Fit {
    /// The least-squares line through `points`; a constant through one point.
    pub(crate) fn of(points: &[(f64, f64)]) -> Option<Self> {
        let n = points.len() as f64;
        if points.is_empty() {
            return None;
        }
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        Some(Self { intercept: my - slope * mx, slope })
    }

    pub(crate) fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }

    /// Flat: over the measured range the line moves by less than 10% of the largest value, or
    /// by less than twice the points' scatter around it (a trend within the noise).
    pub(crate) fn is_flat(&self, points: &[(f64, f64)]) -> bool {
        let (Some(first), Some(last)) = (points.first(), points.last()) else { return true };
        let moved = (self.at(last.0) - self.at(first.0)).abs();
        let top = points.iter().map(|p| p.1.abs()).fold(0.0, f64::max);
        let scatter = (points.iter().map(|p| (p.1 - self.at(p.0)).powi(2)).sum::<f64>() / points.len() as f64).sqrt();
        moved <= (0.1 * top).max(2.0 * scatter)
    }
}

/// What the generator has done to the log, kept beside it so that a kept directory grows on.
#[derive(Debug, Default, Serialize, Deserialize)]
struct GeneratorState {
    next_ticket: u64,
}

const GENERATOR_FILE: &str = "scale-generator.json";

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    if let (Some(from), Some(to)) = (&args.plot_from, &args.plot) {
        #[derive(Deserialize)]
        struct Saved {
            extrapolation: Vec<Extrapolation>,
        }
        let saved: Saved =
            serde_json::from_slice(&std::fs::read(from)?).with_context(|| format!("{}", from.display()))?;
        std::fs::write(to, plot(&saved.extrapolation)).with_context(|| format!("writing {}", to.display()))?;
        return Ok(());
    }
    anyhow::ensure!(!args.sizes.is_empty(), "--sizes: at least one size");
    anyhow::ensure!(args.sizes.windows(2).all(|w| w[0] < w[1]), "--sizes must be ascending");
    let ticketd = match &args.ticketd {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("ticketd"),
    };
    anyhow::ensure!(
        ticketd.is_file(),
        "no ticketd binary at {} (cargo build --release -p ticketd, or --ticketd PATH)",
        ticketd.display()
    );
    let policy = Arc::new(ticket_defaults::policy(args.policy.as_deref())?.0);
    let (dir, temporary) = crate::data_dir(args.data_dir.clone())?;
    let data = DataDir::new(dir.join("ticketd"));
    data.create()?;
    let nats = ticket_testkit::NatsServer::start()?;
    eprintln!(
        "scale: sizes {:?}, data in {}, ticketd {}, nats-server at {} (store {})",
        args.sizes,
        dir.display(),
        ticketd.display(),
        nats.url(),
        nats.store_dir().display()
    );
    let ctx = Ctx { args: &args, ticketd: &ticketd, url: nats.url(), data: &data, policy };
    let mut sizes = Vec::new();
    let mut failure = None;
    for &size in &args.sizes {
        match measure_size(&ctx, &dir, size).await {
            Ok(report) => {
                if !json {
                    print_size(&report);
                }
                sizes.push(report);
            }
            Err(e) => {
                eprintln!("scale: at {size} events: {e:#}");
                failure = Some(e);
                break;
            }
        }
    }
    let extrapolation = extrapolate(&sizes);
    let report = Report {
        benchmark: "scale",
        machine: Machine::detect(),
        open_tickets: args.open_tickets,
        sizes,
        extrapolation,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_extrapolation(&report.extrapolation);
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot(&report.extrapolation)).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("scale: plot written to {}", path.display());
    }
    drop(nats);
    match (temporary, args.keep) {
        (Some(t), true) => eprintln!("scale: kept {}", t.keep().display()),
        (Some(t), false) => drop(t),
        (None, true) => {}
        (None, false) => std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?,
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Ctx<'a> {
    args: &'a Args,
    ticketd: &'a Path,
    url: String,
    data: &'a DataDir,
    policy: Arc<Policy>,
}

impl Ctx<'_> {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.args.timeout_secs)
    }

    fn spawn(&self) -> anyhow::Result<Daemon> {
        Daemon::spawn(self.ticketd, &self.url, self.data, self.args.policy.as_deref(), self.args.max_rss_mib)
    }
}

async fn measure_size(ctx: &Ctx<'_>, dir: &Path, size: u64) -> anyhow::Result<SizeReport> {
    let state_file = dir.join(GENERATOR_FILE);
    let mut state: GeneratorState = match std::fs::read(&state_file) {
        Ok(bytes) => serde_json::from_slice(&bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => GeneratorState::default(),
        Err(e) => return Err(e.into()),
    };
    let generated = generate(ctx, size, &mut state).await?;
    std::fs::write(&state_file, serde_json::to_vec(&state)?)?;
    let head = {
        let data = ctx.data.clone();
        let log = tokio::task::spawn_blocking(move || data.open_log()).await??;
        let head = log.head();
        tokio::task::spawn_blocking(move || drop(log)).await?;
        head
    };
    let log_bytes = dir_size(&ctx.data.log());
    eprintln!("scale: {head} events in the log ({:.2} GB); ticketd catching up", log_bytes as f64 / 1e9);

    // The first start: catch up from what the previous size left, and drain the outbox.
    let mut daemon = ctx.spawn()?;
    let first_start = daemon.wait_caught_up(&ctx.url, head, ctx.timeout()).await?;
    daemon.wait_outbox_drained(ctx.timeout()).await?;
    eprintln!(
        "scale: first start ready in {:.2} s, caught up in {:.2} s; outbox drained",
        first_start.ready_s, first_start.caught_up_s
    );

    // kill -9 and restart.
    let mut restarts = Vec::new();
    for n in 0..ctx.args.restarts {
        daemon.kill9()?;
        daemon = ctx.spawn()?;
        let restart = daemon.wait_caught_up(&ctx.url, head, ctx.timeout()).await?;
        eprintln!(
            "scale: restart {} after kill -9: ready {:.3} s, caught up {:.3} s, timer {} (its index loaded in {} ms, rebuilt from the log: {}, {} events read), VmHWM {:.0} MiB",
            n + 1,
            restart.ready_s,
            restart.caught_up_s,
            restart.timer_ready_s.map_or_else(|| "-".to_owned(), |s| format!("{s:.3} s")),
            restart.timer_load_ms.map_or_else(|| "?".to_owned(), |ms| ms.to_string()),
            restart.timer_rebuilt.map_or_else(|| "?".to_owned(), |r| r.to_string()),
            restart.timer_replayed.map_or_else(|| "?".to_owned(), |r| r.to_string()),
            restart.hwm_mib,
        );
        daemon.wait_outbox_drained(ctx.timeout()).await?;
        restarts.push(restart);
    }

    // Serving: a query load, memory sampled.
    let sampler = Sampler::start(daemon.pid());
    let queries = query_load(&ctx.url, state.next_ticket, ctx.args.queries).await?;
    let peak_rss_mib = sampler.stop();
    let serving = Memory { peak_rss_mib, hwm_mib: daemon.status_mib("VmHWM").unwrap_or(0.0) };
    daemon.terminate(Duration::from_secs(60))?;
    let state_bytes_on_disk = state_size(ctx.data);

    // Rebuilding from nothing in ticketd.
    remove_state(ctx.data)?;
    let mut daemon = ctx.spawn()?;
    let sampler = Sampler::start(daemon.pid());
    let rebuilt = daemon.wait_caught_up(&ctx.url, head, ctx.timeout()).await?;
    let rebuild_peak = sampler.stop();
    let rebuild_ticketd = Rebuild {
        ready_s: rebuilt.ready_s,
        caught_up_s: rebuilt.caught_up_s,
        timer_ready_s: rebuilt.timer_ready_s,
        timer_rebuilt: rebuilt.timer_rebuilt,
        events_per_sec: head as f64 / rebuilt.caught_up_s.max(1e-9),
        peak_rss_mib: rebuild_peak,
        hwm_mib: rebuilt.hwm_mib,
    };
    if rebuilt.timer_rebuilt == Some(false) {
        eprintln!("scale: WARNING: the timer did not rebuild its index after its state was deleted");
    }
    eprintln!(
        "scale: ticketd rebuilt from nothing in {:.2} s, peak RSS {:.0} MiB",
        rebuilt.caught_up_s, rebuilt.hwm_mib
    );
    daemon.wait_outbox_drained(ctx.timeout()).await?;
    daemon.terminate(Duration::from_secs(60))?;

    // In process: rebuild rates and checkpoint writes.
    let available = meminfo_mib("MemAvailable").unwrap_or(0.0);
    let (rebuild_in_process, checkpoint, tickets) = if rebuild_ticketd.hwm_mib * 2.0 < available {
        let (rates, write, tickets) = in_process(ctx.data, dir).await?;
        (Some(rates), Some(write), Some(tickets))
    } else {
        eprintln!(
            "scale: in-process rebuild skipped: ticketd's rebuild peaked at {:.0} MiB, {available:.0} MiB available",
            rebuild_ticketd.hwm_mib
        );
        (None, None, None)
    };

    Ok(SizeReport {
        events: head,
        tickets,
        log_bytes,
        generated,
        first_start,
        restart_ready_median_s: median(restarts.iter().map(|r| r.ready_s)),
        restart_caught_up_median_s: median(restarts.iter().map(|r| r.caught_up_s)),
        restart_timer_median_s: if restarts.iter().all(|r| r.timer_ready_s.is_some()) {
            Some(median(restarts.iter().filter_map(|r| r.timer_ready_s)))
        } else {
            None
        },
        restarts,
        serving,
        rebuild_ticketd,
        state_bytes_on_disk,
        checkpoint,
        queries,
        rebuild_in_process,
    })
}

/// Grows the log to `target` events through the command service: each slot opens a ticket and
/// takes it to awaiting the customer, and takes the ticket `--open-tickets` slots before it
/// from the customer's reply to resolved.
async fn generate(ctx: &Ctx<'_>, target: u64, state: &mut GeneratorState) -> anyhow::Result<Option<Generated>> {
    let data = ctx.data.clone();
    let log = tokio::task::spawn_blocking(move || data.open_log()).await??;
    let from = log.head();
    if from >= target {
        tokio::task::spawn_blocking(move || drop(log)).await?;
        return Ok(None);
    }
    let service = CommandService::with_clock(
        log.clone(),
        ctx.policy.clone(),
        Some(Arc::new(log.snapshots())),
        ServiceConfig::default(),
        Arc::new(SystemClock),
    );
    let window = ctx.args.open_tickets;
    let base = ticket_log::now();
    let next = Arc::new(AtomicU64::new(state.next_ticket));
    let refused = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(from));
    let shown = crate::append::progress("generating", done.clone(), Some(target));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..ctx.args.clients.max(1) {
        let (service, next, done, refused, log) =
            (service.clone(), next.clone(), done.clone(), refused.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            while log.head() < target {
                let slot = next.fetch_add(1, Ordering::Relaxed);
                let mut commands: Vec<_> = crate::projections::lifecycle(slot, base)?.into_iter().take(3).collect();
                if let Some(closing) = slot.checked_sub(window) {
                    commands.extend(crate::projections::lifecycle(closing, base)?.into_iter().skip(3));
                }
                for command in commands {
                    let request = CommandRequest {
                        command,
                        correlation_id: None,
                        causation_id: None,
                        stamp: Stamp::ServiceClock,
                    };
                    if let Err(e) = service.execute(request).await
                        && refused.fetch_add(1, Ordering::Relaxed) < 5
                    {
                        eprintln!("scale: a command refused while generating: {e}");
                    }
                }
                done.store(log.head(), Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("generator task")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(done);
    shown.await.ok();
    state.next_ticket = next.load(Ordering::Relaxed);
    let head = log.head();
    drop(service);
    tokio::task::spawn_blocking(move || drop(log)).await?;
    let events = head - from;
    let generated = Generated {
        events,
        seconds,
        events_per_sec: events as f64 / seconds.max(1e-9),
        refused: refused.load(Ordering::Relaxed),
    };
    eprintln!(
        "scale: generated {events} events in {seconds:.1} s ({:.0} events/s, {} commands refused)",
        generated.events_per_sec, generated.refused
    );
    Ok(Some(generated))
}

/// `ReadModels::build` and the deadline index from nothing, in memory; then both built from
/// nothing into a scratch state store (ADR 0013) as ticketd does, flushing as they go: the time
/// and the size of the durable state.
async fn in_process(data: &DataDir, dir: &Path) -> anyhow::Result<(InProcess, CheckpointWrite, u64)> {
    let data = data.clone();
    let scratch = dir.join("scale-state.redb");
    tokio::task::spawn_blocking(move || {
        let log: SledLog = data.open_log()?;
        let head = log.head();
        let started = Instant::now();
        let models = ReadModels::build(&log, At::Now, |_, _| {})?;
        let read_models_s = started.elapsed().as_secs_f64();
        drop(models);
        let tickets = count_tickets(&log)?;
        let started = Instant::now();
        let mut index = DeadlineIndex::new();
        ticket_timer::catch_up(&log, &mut index, 4096, |_| {})?;
        let timer_index_s = started.elapsed().as_secs_f64();
        let pending = index.len();
        drop(index);

        let _ = std::fs::remove_file(&scratch);
        let state = RedbState::open(&scratch)?;
        let store: Arc<dyn StateStore> = Arc::new(state.clone());
        let projector = Projector::open(log.clone(), Some(store.clone()), ProjectorConfig::default());
        let started = Instant::now();
        projector.catch_up(|_, _| {})?;
        projector.flush()?;
        let read_models_write = started.elapsed().as_secs_f64();
        drop(projector);
        let read_models_bytes = state.size_on_disk();
        let timer_store = IndexStore::open(store)?;
        let mut index = timer_store.load(head)?.index;
        let started = Instant::now();
        let reader = log.clone();
        ticket_timer::catch_up_durably(
            |from, limit| reader.read_from(from, limit),
            &mut index,
            Some(&timer_store),
            4096,
            100_000,
            || false,
            |_| {},
        )?;
        let timer_s = started.elapsed().as_secs_f64();
        // One file holds both: the timer's share is the bytes of its rows (keys and values).
        let timer_bytes = space_bytes(&state, ticket_timer::store::SPACE)?;
        drop((timer_store, state, log));
        std::fs::remove_file(&scratch)?;
        let rates = InProcess {
            read_models_s,
            read_models_events_per_sec: head as f64 / read_models_s.max(1e-9),
            timer_index_s,
            timer_index_events_per_sec: head as f64 / timer_index_s.max(1e-9),
        };
        let write = CheckpointWrite {
            read_models_s: read_models_write,
            read_models_bytes,
            timer_s,
            timer_bytes,
            timer_pending: pending,
        };
        anyhow::Ok((rates, write, tickets))
    })
    .await?
}

/// The bytes of a space's keys and values.
fn space_bytes(store: &dyn StateStore, name: &str) -> anyhow::Result<u64> {
    let space = store.space(name)?;
    let (mut from, mut bytes) = (Vec::new(), 0u64);
    loop {
        let page = space.range(&from, None, 4096)?;
        bytes += page.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum::<u64>();
        match page.last() {
            Some((last, _)) if page.len() == 4096 => {
                from = last.clone();
                from.push(0);
            }
            Some(_) | None => return Ok(bytes),
        }
    }
}

/// Tickets in the log: the streams its openings start.
fn count_tickets(log: &SledLog) -> anyhow::Result<u64> {
    let (mut next, mut tickets) = (1, 0u64);
    loop {
        let events = log.read_from(next, 8192)?;
        let Some(last) = events.last().map(|e| e.position) else { return Ok(tickets) };
        tickets += events.iter().filter(|e| e.version == 1).count() as u64;
        next = last + 1;
    }
}

/// p50/p99 of each read model's query over NATS, one request at a time.
async fn query_load(url: &str, tickets: u64, n: usize) -> anyhow::Result<Queries> {
    let client = ticket_client::Client::new(async_nats::connect(url).await?);
    let mut rng = crate::workload::Rng::new(20261130);
    // Every sixth ticket of the lifecycle (severity A billing) is refused at opening: pick others.
    let mut pick = move || loop {
        let i = rng.next_u64() % tickets.max(1);
        if !i.is_multiple_of(6) || tickets < 6 {
            return crate::workload::ticket_id(i as usize);
        }
    };
    let customer = |i: usize| ticket_domain::CustomerId::new(format!("customer-{}", i % 5000));
    let mut ticket = histogram();
    let mut customers = histogram();
    let mut board = histogram();
    let mut timeline = histogram();
    let mut compliance = histogram();
    for i in 0..n {
        let t = pick();
        let started = Instant::now();
        client.ticket(t, 0).await.context("ticket query")?;
        ticket.saturating_record(started.elapsed().as_micros() as u64);
        let c = customer(i)?;
        let started = Instant::now();
        client.customer_tickets(&c, true, 0, 0).await.context("customer query")?;
        customers.saturating_record(started.elapsed().as_micros() as u64);
        let started = Instant::now();
        client.board(0, 0).await.context("board query")?;
        board.saturating_record(started.elapsed().as_micros() as u64);
        let started = Instant::now();
        client.timeline(pick(), 0).await.context("timeline query")?;
        timeline.saturating_record(started.elapsed().as_micros() as u64);
        let started = Instant::now();
        client.compliance(None, None, 0).await.context("compliance query")?;
        compliance.saturating_record(started.elapsed().as_micros() as u64);
    }
    Ok(Queries {
        ticket: Latency::of(&ticket),
        customer: Latency::of(&customers),
        board: Latency::of(&board),
        timeline: Latency::of(&timeline),
        compliance: Latency::of(&compliance),
    })
}

/// A `ticketd serve` process with its log lines, each with the instant it was read.
struct Daemon {
    child: Child,
    started: Instant,
    ops_port: u16,
    lines: Arc<Mutex<VecDeque<(Instant, String)>>>,
    timer_line: Arc<Mutex<Option<(Instant, String)>>>,
    /// Set by the memory guard when it killed the process.
    over_limit: Arc<AtomicBool>,
    max_rss_mib: u64,
}

impl Daemon {
    fn spawn(bin: &Path, url: &str, data: &DataDir, policy: Option<&Path>, max_rss_mib: u64) -> anyhow::Result<Self> {
        let ops_port = ticket_testkit::free_port()?;
        let mut command = Process::new(bin);
        command
            .arg("--nats-url")
            .arg(url)
            .arg("--data-dir")
            .arg(data.root())
            .args(["--api-unstamped", "trust", "--log-format", "json", "--ops-listen"])
            .arg(format!("127.0.0.1:{ops_port}"));
        if let Some(policy) = policy {
            command.arg("--policy").arg(policy);
        }
        command.arg("serve").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let timer_line = Arc::new(Mutex::new(None));
        let streams: [Option<Box<dyn std::io::Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let (lines, timer_line) = (lines.clone(), timer_line.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let now = Instant::now();
                    if line.contains("deadline index ready") {
                        *timer_line.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some((now, line.clone()));
                    }
                    let mut lines = lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    lines.push_back((now, line));
                    if lines.len() > 200 {
                        lines.pop_front();
                    }
                }
            });
        }
        // The memory guard: SIGKILL past the limit, polled until the process is gone.
        let over_limit = Arc::new(AtomicBool::new(false));
        let (pid, flag) = (child.id(), over_limit.clone());
        std::thread::spawn(move || {
            while let Some(rss) = status_kib(pid, "VmRSS") {
                if rss / 1024 > max_rss_mib {
                    flag.store(true, Ordering::Relaxed);
                    let _ = Process::new("kill").arg("-KILL").arg(pid.to_string()).status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Ok(Self { child, started, ops_port, lines, timer_line, over_limit, max_rss_mib })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn last_lines(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        lines.iter().rev().take(15).rev().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n")
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::ensure!(
                !self.over_limit.load(Ordering::Relaxed),
                "ticketd's resident memory passed --max-rss-mib {} MiB: killed",
                self.max_rss_mib
            );
            anyhow::bail!("ticketd exited ({status}); its last lines:\n{}", self.last_lines());
        }
        Ok(())
    }

    fn status_mib(&self, key: &str) -> Option<f64> {
        status_kib(self.pid(), key).map(|k| k as f64 / 1024.0)
    }

    /// Polls until `/readyz` answers 200 and every read model has applied `head`.
    async fn wait_caught_up(&mut self, url: &str, head: u64, within: Duration) -> anyhow::Result<Restart> {
        let deadline = Instant::now() + within;
        loop {
            self.check_alive()?;
            anyhow::ensure!(Instant::now() < deadline, "ticketd not ready within {within:?}:\n{}", self.last_lines());
            if matches!(ticket_testkit::http_get(self.ops_port, "/readyz"), Ok((200, _))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ready_s = self.started.elapsed().as_secs_f64();
        let client = ticket_client::Client::new(async_nats::connect(url).await?);
        loop {
            self.check_alive()?;
            anyhow::ensure!(
                Instant::now() < deadline,
                "ticketd not caught up within {within:?}:\n{}",
                self.last_lines()
            );
            if let Ok(lags) = client.projection_lag(None).await
                && !lags.projections.is_empty()
                && lags.projections.iter().all(|l| l.behind == 0 && l.position >= head)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let caught_up_s = self.started.elapsed().as_secs_f64();
        // The timer loads its index beside the projector; wait for it too: it logs `deadline
        // index ready`, and its scheduler sets `ticketd_timer_pending_deadlines` once the index
        // is loaded (the gauge, should the line change).
        let mut gauge_seen = None;
        loop {
            self.check_alive()?;
            if self.timer_line.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some() {
                break;
            }
            if let Ok((200, page)) = ticket_testkit::http_get(self.ops_port, "/metrics")
                && metric(&page, "ticketd_timer_pending_deadlines").is_some()
            {
                gauge_seen = Some(Instant::now());
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the timer's index not ready within {within:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let timer = self.timer_line.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let (timer_ready_s, timer_load_ms, timer_rebuilt, timer_replayed) = match timer {
            None => (gauge_seen.map(|at| at.duration_since(self.started).as_secs_f64()), None, None, None),
            Some((at, line)) => {
                let fields = serde_json::from_str::<serde_json::Value>(&line).ok().map(|v| v["fields"].clone());
                let field = |name: &str| fields.as_ref().and_then(|f| f[name].as_u64());
                (
                    Some(at.duration_since(self.started).as_secs_f64()),
                    field("elapsed_ms"),
                    fields.as_ref().and_then(|f| f["rebuilt"].as_bool()),
                    field("position").zip(field("from")).map(|(to, from)| to.saturating_sub(from)),
                )
            }
        };
        Ok(Restart {
            ready_s,
            caught_up_s,
            timer_ready_s,
            timer_load_ms,
            timer_rebuilt,
            timer_replayed,
            hwm_mib: self.status_mib("VmHWM").unwrap_or(0.0),
        })
    }

    /// Polls `/metrics` until the outbox has published everything (`ticketd_outbox_lag_positions 0`).
    async fn wait_outbox_drained(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.check_alive()?;
            if let Ok((200, body)) = ticket_testkit::http_get(self.ops_port, "/metrics")
                && metric(&body, "ticketd_outbox_lag_positions") == Some(0.0)
            {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the outbox did not drain within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM (a graceful stop: checkpoints written), and wait; SIGKILL past `within`.
    fn terminate(mut self, within: Duration) -> anyhow::Result<()> {
        let status = Process::new("kill").arg("-TERM").arg(self.pid().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", self.pid());
        let deadline = Instant::now() + within;
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.child.kill()?;
                self.child.wait()?;
                anyhow::bail!("ticketd did not stop within {within:?} of SIGTERM:\n{}", self.last_lines());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of an unlabelled gauge in a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// A field of `/proc/meminfo` in MiB.
fn meminfo_mib(key: &str) -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Samples a process's VmRSS every 20 ms on a thread of its own; `stop` returns the peak in MiB.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !stopping.load(Ordering::Relaxed) {
                peak = peak.max(status_kib(pid, "VmRSS").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.max(status_kib(pid, "VmRSS").unwrap_or(0))
        });
        Self { stop, handle }
    }

    fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0) as f64 / 1024.0
    }
}

/// Bytes of the files under `path` (a file's own size for a file; 0 if absent).
fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.filter_map(Result::ok).map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

/// The read models' and the timer's state in the data directory, as `DataDir` names it (the
/// state store; the former checkpoint paths while an older ticketd is measured).
fn state_size(data: &DataDir) -> u64 {
    [data.state(), data.state_sled(), data.projections(), data.timer_checkpoint()].iter().map(|p| dir_size(p)).sum()
}

fn remove_state(data: &DataDir) -> anyhow::Result<()> {
    for path in [data.state(), data.state_sled(), data.projections(), data.timer_checkpoint()] {
        let result = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("removing {}", path.display()))),
        }
    }
    Ok(())
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The metrics whose growth with history the issue asks about.
fn extrapolate(sizes: &[SizeReport]) -> Vec<Extrapolation> {
    type Get = fn(&SizeReport) -> Option<f64>;
    let metrics: [(&str, &str, Get); 13] = [
        ("restart after kill -9: ready", "s", |s| Some(s.restart_ready_median_s)),
        ("restart after kill -9: read models caught up", "s", |s| Some(s.restart_caught_up_median_s)),
        ("restart after kill -9: timer index ready", "s", |s| s.restart_timer_median_s),
        ("peak RSS while serving (VmHWM)", "MiB", |s| Some(s.serving.hwm_mib)),
        ("peak RSS while serving (sampled during queries)", "MiB", |s| Some(s.serving.peak_rss_mib)),
        ("peak RSS while rebuilding (VmHWM)", "MiB", |s| Some(s.rebuild_ticketd.hwm_mib)),
        ("ticketd rebuild from nothing", "s", |s| Some(s.rebuild_ticketd.caught_up_s)),
        ("state on disk (read models + timer)", "MB", |s| Some(s.state_bytes_on_disk as f64 / 1e6)),
        ("state store built from nothing: every read model", "s", |s| s.checkpoint.map(|c| c.read_models_s)),
        ("state store built from nothing: timer index", "s", |s| s.checkpoint.map(|c| c.timer_s)),
        ("query p99: customer's tickets", "ms", |s| Some(s.queries.customer.p99_ms)),
        ("query p99: board", "ms", |s| Some(s.queries.board.p99_ms)),
        ("query p99: compliance", "ms", |s| Some(s.queries.compliance.p99_ms)),
    ];
    metrics
        .iter()
        .filter_map(|(name, unit, get)| {
            let points: Vec<(f64, f64)> = sizes.iter().filter_map(|s| Some((s.events as f64, get(s)?))).collect();
            let fit = Fit::of(&points)?;
            Some(Extrapolation {
                metric: (*name).to_owned(),
                unit: (*unit).to_owned(),
                at_1e8: fit.at(1e8),
                flat: fit.is_flat(&points),
                fit,
                points,
            })
        })
        .collect()
}

fn print_size(r: &SizeReport) {
    let mib = |b: u64| b as f64 / 1024.0 / 1024.0;
    println!();
    let tickets = r.tickets.map_or_else(|| "?".to_owned(), |t| t.to_string());
    println!("== {} events, {tickets} tickets, log {:.2} GB ==", r.events, r.log_bytes as f64 / 1e9);
    if let Some(g) = r.generated {
        println!(
            "{:<52} {:>12.0} ({} events in {:.1} s)",
            "generated, events/s", g.events_per_sec, g.events, g.seconds
        );
    }
    println!("{:<52} {:>12.3}", "first start at this size: caught up (s)", r.first_start.caught_up_s);
    let each =
        |f: fn(&Restart) -> f64| r.restarts.iter().map(|x| format!("{:.3}", f(x))).collect::<Vec<_>>().join(" / ");
    println!(
        "{:<52} {:>12.3}   [{}]",
        "restart after kill -9: /readyz 200 (s, median)",
        r.restart_ready_median_s,
        each(|x| x.ready_s)
    );
    println!(
        "{:<52} {:>12.3}   [{}]",
        "restart after kill -9: read models lag 0 (s, median)",
        r.restart_caught_up_median_s,
        each(|x| x.caught_up_s)
    );
    println!(
        "{:<52} {:>12}   [{}]",
        "restart after kill -9: timer index ready (s, median)",
        r.restart_timer_median_s.map_or_else(|| "-".to_owned(), |s| format!("{s:.3}")),
        each(|x| x.timer_ready_s.unwrap_or(f64::NAN))
    );
    println!("{:<52} {:>12.0}", "peak RSS while serving queries (MiB, sampled)", r.serving.peak_rss_mib);
    println!("{:<52} {:>12.0}", "VmHWM of the serving process (MiB)", r.serving.hwm_mib);
    println!("{:<52} {:>12.2}", "ticketd rebuild from nothing: caught up (s)", r.rebuild_ticketd.caught_up_s);
    println!("{:<52} {:>12.0}", "ticketd rebuild from nothing: events/s", r.rebuild_ticketd.events_per_sec);
    println!("{:<52} {:>12.0}", "peak RSS while rebuilding (MiB, VmHWM)", r.rebuild_ticketd.hwm_mib);
    println!("{:<52} {:>12.1}", "read models' + timer's state on disk (MiB)", mib(r.state_bytes_on_disk));
    if let Some(c) = r.checkpoint {
        println!(
            "{:<52} {:>12.3}   ({:.1} MiB)",
            "checkpoint write, every read model (s)",
            c.read_models_s,
            mib(c.read_models_bytes)
        );
        println!(
            "{:<52} {:>12.3}   ({:.1} MiB, {} pending)",
            "checkpoint write, timer index (s)",
            c.timer_s,
            mib(c.timer_bytes),
            c.timer_pending
        );
    }
    for (name, l) in [
        ("ticket", r.queries.ticket),
        ("customer", r.queries.customer),
        ("board", r.queries.board),
        ("timeline", r.queries.timeline),
        ("compliance", r.queries.compliance),
    ] {
        println!(
            "{:<52} {:>12}",
            format!("query {name}: p50 / p99 (ms)"),
            format!("{:.2} / {:.2}", l.p50_ms, l.p99_ms)
        );
    }
    if let Some(p) = r.rebuild_in_process {
        println!("{:<52} {:>12.0}", "in-process rebuild, every read model (events/s)", p.read_models_events_per_sec);
        println!("{:<52} {:>12.0}", "in-process rebuild, timer index (events/s)", p.timer_index_events_per_sec);
    }
}

fn print_extrapolation(rows: &[Extrapolation]) {
    println!();
    println!("== least-squares line against events, and 10^8 ==");
    println!("{:<50} {:>16} {:>14} {:>6}", "metric", "per 10^6 events", "at 10^8", "flat");
    for e in rows {
        println!(
            "{:<50} {:>16.3} {:>14.2} {:>6}",
            format!("{} ({})", e.metric, e.unit),
            e.fit.slope * 1e6,
            e.at_1e8,
            if e.flat { "yes" } else { "no" }
        );
    }
}

/// An SVG of restart time and peak memory against events (log x axis): measured points, and
/// each metric's least-squares line out to 10^8.
fn plot(extrapolation: &[Extrapolation]) -> String {
    let find = |name: &str| extrapolation.iter().find(|e| e.metric == name).cloned();
    let panels = [
        Panel {
            title: "restart after kill -9 (median)",
            unit: "s",
            goal: Some((2.0, "goal 2 s")),
            series: [
                ("ready (/readyz 200)", "#1f77b4", find("restart after kill -9: ready")),
                ("read models caught up", "#d62728", find("restart after kill -9: read models caught up")),
                ("timer index ready", "#2ca02c", find("restart after kill -9: timer index ready")),
            ]
            .into_iter()
            .filter_map(|(n, c, e)| e.map(|e| (n, c, e)))
            .collect(),
        },
        Panel {
            title: "peak resident memory of ticketd",
            unit: "MiB",
            goal: Some((1024.0, "goal 1 GiB")),
            series: [
                ("serving (VmHWM)", "#1f77b4", find("peak RSS while serving (VmHWM)")),
                ("rebuilding (VmHWM)", "#d62728", find("peak RSS while rebuilding (VmHWM)")),
            ]
            .into_iter()
            .filter_map(|(n, c, e)| e.map(|e| (n, c, e)))
            .collect(),
        },
    ];
    svg(&panels)
}

struct Panel {
    title: &'static str,
    unit: &'static str,
    goal: Option<(f64, &'static str)>,
    series: Vec<(&'static str, &'static str, Extrapolation)>,
}

const PANEL_W: f64 = 460.0;
const PANEL_H: f64 = 300.0;
const MARGIN_L: f64 = 64.0;
const MARGIN_T: f64 = 40.0;
const MARGIN_B: f64 = 86.0;

fn svg(panels: &[Panel]) -> String {
    let width = panels.len() as f64 * (PANEL_W + MARGIN_L + 20.0) + 10.0;
    let height = PANEL_H + MARGIN_T + MARGIN_B;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, panel) in panels.iter().enumerate() {
        let left = 10.0 + i as f64 * (PANEL_W + MARGIN_L + 20.0) + MARGIN_L;
        out.push_str(&svg_panel(panel, left));
    }
    out.push_str("</svg>\n");
    out
}

fn svg_panel(panel: &Panel, left: f64) -> String {
    let (x_lo, x_hi) = (4.0_f64, 8.0_f64); // log10 of events
    // Both axes logarithmic: the measured points and a line out to 10^8 fit one picture.
    let values: Vec<f64> = panel
        .series
        .iter()
        .flat_map(|(_, _, e)| e.points.iter().map(|p| p.1).chain(std::iter::once(e.at_1e8)))
        .chain(panel.goal.map(|g| g.0))
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let (y_lo, y_hi) = decades(&values);
    let x = |events: f64| left + (events.max(1.0).log10() - x_lo) / (x_hi - x_lo) * PANEL_W;
    let y = |v: f64| {
        let l = v.max(10f64.powi(y_lo)).log10().min(f64::from(y_hi));
        MARGIN_T + PANEL_H - (l - f64::from(y_lo)) / f64::from(y_hi - y_lo) * PANEL_H
    };
    let mut s = String::new();
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">{} ({})</text>\n",
        left,
        escape(panel.title),
        escape(panel.unit)
    ));
    s.push_str(&format!(
        "<rect x=\"{left:.1}\" y=\"{MARGIN_T:.1}\" width=\"{PANEL_W:.1}\" height=\"{PANEL_H:.1}\" fill=\"none\" stroke=\"#444\"/>\n"
    ));
    for decade in 4..=8 {
        let px = x(10f64.powi(decade));
        s.push_str(&format!(
            "<line x1=\"{px:.1}\" y1=\"{MARGIN_T:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">10<tspan dy=\"-6\" font-size=\"9\">{decade}</tspan></text>\n",
            MARGIN_T + PANEL_H,
            MARGIN_T + PANEL_H + 16.0
        ));
    }
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">events in the log</text>\n",
        left + PANEL_W / 2.0,
        MARGIN_T + PANEL_H + 32.0
    ));
    for k in y_lo..=y_hi {
        let v = 10f64.powi(k);
        let py = y(v);
        s.push_str(&format!(
            "<line x1=\"{left:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#eee\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left + PANEL_W,
            left - 6.0,
            py + 4.0,
            short(v)
        ));
    }
    if let Some((goal, label)) = panel.goal {
        let py = y(goal);
        s.push_str(&format!(
            "<line x1=\"{left:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#888\" stroke-dasharray=\"2,3\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#666\">{}</text>\n",
            left + PANEL_W,
            left + 4.0,
            py - 4.0,
            escape(label)
        ));
    }
    for (n, (name, color, e)) in panel.series.iter().enumerate() {
        // The fitted line, dashed, over the whole axis (a straight line in events is a curve on a
        // log axis).
        let path: Vec<String> = (0..=80)
            .map(|k| {
                let events = 10f64.powf(x_lo + (x_hi - x_lo) * k as f64 / 80.0);
                format!("{:.1},{:.1}", x(events), y(e.fit.at(events)))
            })
            .collect();
        s.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" stroke-dasharray=\"6,4\"/>\n",
            path.join(" ")
        ));
        let measured: Vec<String> = e.points.iter().map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1))).collect();
        s.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
            measured.join(" ")
        ));
        for p in &e.points {
            s.push_str(&format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"/>\n", x(p.0), y(p.1)));
        }
        let ly = MARGIN_T + PANEL_H + 48.0 + n as f64 * 14.0;
        s.push_str(&format!(
            "<line x1=\"{left:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"2\"/>\n\
             <text x=\"{:.1}\" y=\"{ly:.1}\">{} (measured; dashed: least squares, {} at 10^8)</text>\n",
            ly - 4.0,
            left + 18.0,
            ly - 4.0,
            left + 24.0,
            escape(name),
            short(e.at_1e8)
        ));
    }
    s
}

/// The decades (powers of ten) below the smallest and above the largest of `values` (positive).
fn decades(values: &[f64]) -> (i32, i32) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0_f64, f64::max);
    if !lo.is_finite() || hi <= 0.0 {
        return (0, 1);
    }
    let (lo, hi) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (lo, hi.max(lo + 1))
}

fn short(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.0e}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_a_line_and_a_constant() {
        let line = Fit::of(&[(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]).unwrap();
        assert!((line.slope - 2.0).abs() < 1e-12 && (line.intercept - 1.0).abs() < 1e-12);
        assert!((line.at(10.0) - 21.0).abs() < 1e-9);
        let flat = Fit::of(&[(5.0, 4.0)]).unwrap();
        assert_eq!(flat, Fit { intercept: 4.0, slope: 0.0 });
        assert!(Fit::of(&[]).is_none());
    }

    #[test]
    fn flat_means_within_ten_percent_or_within_the_noise() {
        let growing = [(1e5, 0.5), (1e6, 2.9), (3e6, 8.6)];
        assert!(!Fit::of(&growing).unwrap().is_flat(&growing));
        let level = [(1e5, 1.00), (1e6, 1.05), (3e6, 1.02)];
        assert!(Fit::of(&level).unwrap().is_flat(&level));
        // 8, 14 and 11 ms: a slope, but no larger than the scatter.
        let noisy = [(1e5, 8.0), (1e6, 14.0), (3e6, 11.0)];
        assert!(Fit::of(&noisy).unwrap().is_flat(&noisy));
    }

    #[test]
    fn the_svg_has_a_point_per_measurement_and_escapes_text() {
        let e = Extrapolation {
            metric: "m".into(),
            unit: "s".into(),
            points: vec![(1e5, 0.5), (1e6, 1.5)],
            fit: Fit::of(&[(1e5, 0.5), (1e6, 1.5)]).unwrap(),
            at_1e8: 0.0,
            flat: false,
        };
        let panel = Panel { title: "a < b", unit: "s", goal: Some((2.0, "goal")), series: vec![("x & y", "#000", e)] };
        let svg = svg(&[panel]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("a &lt; b") && svg.contains("x &amp; y"));
    }

    #[test]
    fn decades_around_the_values() {
        assert_eq!(decades(&[]), (0, 1));
        assert_eq!(decades(&[0.3, 2.0, 420.0]), (-1, 3));
        assert_eq!(decades(&[5.0]), (0, 1));
    }

    #[test]
    fn a_gauge_is_read_from_a_prometheus_page() {
        let page = "# HELP x\nticketd_outbox_lag_positions_total 3\nticketd_outbox_lag_positions 0\n";
        assert_eq!(metric(page, "ticketd_outbox_lag_positions"), Some(0.0));
        assert_eq!(metric(page, "absent"), None);
    }
}
