//! `ticket-bench timers`: the timer service with a million pending deadlines, under the real
//! clock.
//!
//! 1. Opens enough severity A tickets (each has three firings: the 50% and 80% warnings and the
//!    breach of its one-hour first response) to hold `--deadlines` pending firings. Each ticket is
//!    opened at an instant chosen so that its first warning falls `--rate` per second from the
//!    measurement's start on: every deadline is in the future when the timer starts.
//! 2. Rebuilds the deadline index from the log (what a start without a checkpoint does) and
//!    measures the time and the heap the index takes per pending firing (a counting allocator).
//! 3. Starts the timer on the wall clock and, for `--seconds`, records the lag of every firing
//!    due in that window: from its due instant to the acknowledgement of its command (durable in
//!    the log).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::TimeDelta;
use serde::Serialize;
use ticket_domain::{
    Actor, ActorId, ActorKind, CategoryId, Command, CommandBody, CommandId, CustomerId, OpenTicket, PlanId, Severity,
    Text, Timestamp,
};
use ticket_log_sled::{SledConfig, SledLog};
use ticket_service::{Clock, CommandRequest, CommandService, ServiceConfig, SystemClock};
use ticket_timer::{DeadlineIndex, Timer, TimerConfig};
use tokio::sync::watch;

use crate::machine::Machine;
use crate::stats::{Latency, histogram};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Pending firings when the timer starts.
    #[arg(long, default_value_t = 1_000_000)]
    pub deadlines: usize,
    /// Firings due per second during the measurement.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long the lag is measured.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Concurrent open commands while loading.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds from the start of loading to the first firing (default: enough to load).
    #[arg(long)]
    pub lead_secs: Option<f64>,
    /// Policy file (severity A technical tickets on the advanced contract must have a
    /// first-response target with warnings).
    /// (Default: the embedded deploy/policies/regional-operator.toml.)
    #[arg(long)]
    pub policy: Option<std::path::PathBuf>,
    /// Where the log is written (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    tickets: usize,
    pending_at_start: usize,
    load_seconds: f64,
    rebuild_seconds: f64,
    rebuild_events: u64,
    rebuild_events_per_sec: f64,
    index_heap_bytes: u64,
    bytes_per_pending_deadline: f64,
    checkpoint_bytes: usize,
    window_seconds: f64,
    due_in_window: u64,
    fired_in_window: u64,
    lag: Latency,
    goal_lag_p99_met: bool,
    goal_memory_met: bool,
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    let policy = Arc::new(ticket_defaults::policy(args.policy.as_deref())?.0);
    let (dir, _keep) = crate::data_dir(args.data_dir.clone())?;
    let log = SledLog::open(SledConfig::new(dir.join("timers-log")))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let service = CommandService::with_clock(
        log.clone(),
        policy.clone(),
        Some(Arc::new(log.snapshots())),
        ServiceConfig::default(),
        clock.clone(),
    );

    // The firings of one ticket, relative to its opening, from the policy.
    anyhow::ensure!(args.seconds > 0.0 && args.seconds < 600.0, "--seconds must be between 0 and 600");
    let probe = open_command(0, clock.now())?;
    let probe_events = ticket_domain::decide(&probe, &ticket_domain::TicketState::initial(), &policy)
        .map_err(|e| anyhow::anyhow!("the policy refuses the benchmark's ticket: {e}"))?;
    let mut probe_index = DeadlineIndex::new();
    for (position, event) in probe_events.into_iter().enumerate() {
        probe_index.apply(&recorded(position as u64 + 1, &probe, event));
    }
    let per_ticket = probe_index.len();
    let first_offset = probe_index.next().map(|f| f.at - probe.issued_at).context("the ticket has no firing")?;
    let second_offset = probe_index.iter().nth(1).map_or(TimeDelta::MAX, |f| f.at - probe.issued_at);
    anyhow::ensure!(
        second_offset - first_offset > TimeDelta::seconds(args.seconds as i64 + 60),
        "a ticket's second firing would fall in the window: shorten --seconds"
    );
    anyhow::ensure!(per_ticket > 0, "severity A tickets have no SLA firings under this policy");
    let tickets = args.deadlines.div_ceil(per_ticket);

    // Ticket i's first firing is due at base + i / rate.
    let lead = args.lead_secs.unwrap_or(5.0 + tickets as f64 / 5000.0);
    let load_start = Instant::now();
    let base = clock.now() + TimeDelta::milliseconds((lead * 1000.0) as i64);
    let spacing_ns = 1e9 / args.rate.max(1.0);
    let opened_at = |i: usize| base - first_offset + TimeDelta::nanoseconds((i as f64 * spacing_ns) as i64);
    let done = Arc::new(AtomicU64::new(0));
    let shown = crate::append::progress("opening", done.clone(), Some(tickets as u64));
    let mut tasks = Vec::new();
    for client in 0..args.clients.max(1) {
        let (service, done) = (service.clone(), done.clone());
        let clients = args.clients.max(1);
        let commands: Vec<Command> =
            (client..tickets).step_by(clients).map(|i| open_command(i, opened_at(i))).collect::<Result<_, _>>()?;
        tasks.push(tokio::spawn(async move {
            for command in commands {
                service.execute(CommandRequest::from(command)).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    drop(done);
    shown.await.ok();
    let load_seconds = load_start.elapsed().as_secs_f64();

    // Rebuild, measured: time and heap.
    crate::alloc::counting(true);
    let before = crate::alloc::allocated();
    let started = Instant::now();
    let mut index = DeadlineIndex::new();
    ticket_timer::catch_up(&log, &mut index, 4096, |_| {})?;
    let rebuild_seconds = started.elapsed().as_secs_f64();
    let index_heap_bytes = crate::alloc::allocated().saturating_sub(before);
    crate::alloc::counting(false);
    let pending_at_start = index.len();
    let checkpoint_bytes = ticket_timer::checkpoint::encode(&index).len();
    let rebuild_events = index.position();
    drop(index);
    let time_left = (base - clock.now()).num_milliseconds();
    anyhow::ensure!(
        time_left > 2000,
        "loading took {load_seconds:.1} s, past the first firing; raise --lead-secs (was {lead:.0})"
    );

    // The timer, on the wall clock; lags of the firings due in the window.
    let window_end = base + TimeDelta::milliseconds((args.seconds * 1000.0) as i64);
    let lags = Arc::new(Mutex::new(histogram()));
    let fired = Arc::new(AtomicU64::new(0));
    let hook = {
        let (lags, fired) = (lags.clone(), fired.clone());
        Arc::new(move |firing: &ticket_timer::Firing, acked: Timestamp| {
            if firing.at >= base && firing.at < window_end {
                let lag = (acked - firing.at).num_microseconds().unwrap_or(i64::MAX).max(1) as u64;
                if let Ok(mut h) = lags.lock() {
                    h.record(lag.min(60_000_000)).ok();
                }
                fired.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let (stop, stopped) = watch::channel(false);
    let config = TimerConfig::new(ActorId::new("ticket-timer")?);
    let timer = Timer::new(service.clone(), None, config).on_fired(hook).spawn(stopped);
    eprintln!(
        "timers: {pending_at_start} pending; first firing in {:.1} s; measuring {:.0} s",
        time_left as f64 / 1000.0,
        args.seconds
    );
    let shown = crate::append::progress("firing", fired.clone(), None);
    let until = (window_end - clock.now()).to_std().unwrap_or_default() + Duration::from_secs(2);
    tokio::time::sleep(until).await;
    stop.send_replace(true);
    timer.join().await?;
    drop(shown);

    // The window holds first firings only (checked above), one per ticket.
    let due_in_window = (0..tickets).filter(|i| opened_at(*i) + first_offset < window_end).count() as u64;
    let lag = lags.lock().map(|h| Latency::of(&h)).map_err(|_| anyhow::anyhow!("lag histogram poisoned"))?;
    let bytes_per_pending_deadline = index_heap_bytes as f64 / pending_at_start.max(1) as f64;
    let report = Report {
        machine: Machine::detect(),
        tickets,
        pending_at_start,
        load_seconds,
        rebuild_seconds,
        rebuild_events,
        rebuild_events_per_sec: rebuild_events as f64 / rebuild_seconds.max(1e-9),
        index_heap_bytes,
        bytes_per_pending_deadline,
        checkpoint_bytes,
        window_seconds: args.seconds,
        due_in_window,
        fired_in_window: fired.load(Ordering::Relaxed),
        goal_lag_p99_met: lag.p99_ms < 50.0,
        goal_memory_met: bytes_per_pending_deadline < 200.0,
        lag,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!("{:<34} {:>14}", "tickets", r.tickets);
    println!("{:<34} {:>14}", "pending firings at start", r.pending_at_start);
    println!("{:<34} {:>14.1}", "load (s)", r.load_seconds);
    println!("{:<34} {:>14.3}", "index rebuild from the log (s)", r.rebuild_seconds);
    println!("{:<34} {:>14.0}", "rebuild events/s", r.rebuild_events_per_sec);
    println!("{:<34} {:>14.1}", "index heap per pending firing (B)", r.bytes_per_pending_deadline);
    println!("{:<34} {:>14}", "checkpoint size (B)", r.checkpoint_bytes);
    println!("{:<34} {:>14}", "due in the window", r.due_in_window);
    println!("{:<34} {:>14}", "fired in the window", r.fired_in_window);
    println!("{:<34} {:>14.3}", "lag p50 (ms)", r.lag.p50_ms);
    println!("{:<34} {:>14.3}", "lag p99 (ms)", r.lag.p99_ms);
    println!("{:<34} {:>14.3}", "lag p999 (ms)", r.lag.p999_ms);
    println!("{:<34} {:>14.3}", "lag max (ms)", r.lag.max_ms);
    println!(
        "goals: lag p99 < 50 ms: {} ({:.3} ms); memory < 200 B per deadline: {} ({:.1} B)",
        if r.goal_lag_p99_met { "met" } else { "NOT met" },
        r.lag.p99_ms,
        if r.goal_memory_met { "met" } else { "NOT met" },
        r.bytes_per_pending_deadline
    );
}

fn open_command(i: usize, at: Timestamp) -> anyhow::Result<Command> {
    let ticket = crate::workload::ticket_id(i);
    Ok(Command {
        id: CommandId::new(format!("bench-open-{i}"))?,
        ticket_id: ticket,
        actor: Actor { kind: ActorKind::Agent, id: ActorId::new("bench")? },
        issued_at: at,
        body: CommandBody::Open(OpenTicket {
            customer: CustomerId::new("bench")?,
            plan: PlanId::new("advanced")?,
            category: CategoryId::new("technical")?,
            title: Text::new("title", "mail cannot be reached")?,
            description: Text::new("description", "timeouts")?,
            severity: Severity::A,
        }),
    })
}

fn recorded(position: u64, command: &Command, event: ticket_domain::Event) -> ticket_domain::RecordedEvent {
    ticket_domain::RecordedEvent::of_command(ticket_log::new_event_id(), command, position, position, event)
}
