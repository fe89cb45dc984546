//! `ticket-bench projections`: rebuilding every read model from a large log.
//!
//! 1. Writes (or reuses, with `--data-dir`) a sled log of at least `--events` events through the
//!    command service: tickets of both severities going through open, respond, ask, reply,
//!    respond and resolve at spacings that make some of them breach (recorded on decision).
//! 2. Rebuilds every read model from the log in one pass (read, decode, apply), with progress:
//!    events per second. Goal: at least 500,000 per second.
//! 3. The same into the state store (sled, as ticketd keeps them: rows of open tickets in
//!    memory, the rest on disk), with the peak resident memory after it, then a restart: opening
//!    the stored models and catching up (nothing to replay).
//! 4. Apart: reading and decoding the log alone, and applying the events already in memory to
//!    each model, to say where the time goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use chrono::TimeDelta;
use serde::Serialize;
use ticket_domain::{
    Actor, ActorId, ActorKind, CategoryId, Command, CommandBody, CommandId, CustomerId, OpenTicket, PlanId, Policy,
    RecordedEvent, Severity, Text,
};
use ticket_log::{EventLog, StateStore};
use ticket_log_sled::{RedbState, SledConfig, SledLog};
use ticket_projections::{At, Board, Compliance, Projected, Projector, ProjectorConfig, ReadModels, Tickets};
use ticket_service::{CommandRequest, CommandService, ServiceConfig};

use crate::machine::Machine;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Events in the log (at least).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Concurrent clients while writing the log.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// (Default: the embedded deploy/policies/regional-operator.toml.)
    #[arg(long)]
    pub policy: Option<std::path::PathBuf>,
    /// Keep the log here and reuse it on the next run (default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// The rebuild into the state store flushes every this many events.
    #[arg(long, default_value_t = ProjectorConfig::default().catch_up_flush_events)]
    pub flush_events: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    events: u64,
    tickets: usize,
    write_seconds: Option<f64>,
    rebuild_seconds: f64,
    rebuild_events_per_sec: f64,
    stored_rebuild_seconds: f64,
    stored_rebuild_events_per_sec: f64,
    /// Peak resident memory after the stored rebuild (before anything is built in memory), MB.
    stored_rebuild_peak_rss_mb: Option<f64>,
    /// Rows the stored models hold in memory after it (tickets, board, compliance).
    stored_live_rows: [usize; 3],
    state_on_disk_mb: f64,
    /// Opening the stored models again and catching up (nothing to replay), s.
    restart_seconds: f64,
    read_decode_events_per_sec: f64,
    read_raw_events_per_sec: f64,
    decode_events_per_sec: f64,
    apply_events_per_sec: ApplyRates,
    goal_met: bool,
}

#[derive(Debug, Serialize)]
struct ApplyRates {
    tickets: f64,
    board: f64,
    compliance: f64,
    all: f64,
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    let policy = Arc::new(ticket_defaults::policy(args.policy.as_deref())?.0);
    let (dir, _keep) = crate::data_dir(args.data_dir.clone())?;
    let log = SledLog::open(SledConfig::new(dir.join("projections-log")))?;
    let write_seconds = if log.head() < args.events { Some(write(&log, &policy, &args).await?) } else { None };
    let head = log.head();

    // The rebuild into the state store, as ticketd keeps the models, then a restart on it.
    let state_dir = dir.join("projections-state.redb");
    let _ = std::fs::remove_file(&state_dir);
    let (stored_rebuild_seconds, stored_live_rows, state_on_disk_mb, restart_seconds) = {
        let (log, state_dir, flush_events) = (log.clone(), state_dir.clone(), args.flush_events.max(1));
        tokio::task::spawn_blocking(move || -> anyhow::Result<(f64, [usize; 3], f64, f64)> {
            let state = RedbState::open(&state_dir)?;
            let store: Arc<dyn StateStore> = Arc::new(state.clone());
            let config =
                ProjectorConfig { batch: 8192, catch_up_flush_events: flush_events, ..ProjectorConfig::default() };
            let started = Instant::now();
            let projector = Projector::open(log.clone(), Some(store.clone()), config.clone());
            projector.catch_up(|_, _| {})?;
            projector.flush()?;
            let seconds = started.elapsed().as_secs_f64();
            let rows = projector.live_rows();
            drop(projector);
            let started = Instant::now();
            let reopened = Projector::open(log, Some(store), config);
            reopened.catch_up(|_, _| {})?;
            let restart = started.elapsed().as_secs_f64();
            Ok((seconds, rows, state.size_on_disk() as f64 / 1e6, restart))
        })
        .await??
    };
    let stored_rebuild_peak_rss_mb = peak_rss_mb();

    // The rebuild in memory: read, decode, apply to every model.
    let done = Arc::new(AtomicU64::new(0));
    let shown = crate::append::progress("rebuilding", done.clone(), Some(head));
    let started = Instant::now();
    let models = {
        let done = done.clone();
        let log = log.clone();
        tokio::task::spawn_blocking(move || ReadModels::build(&log, At::Now, |p, _| done.store(p, Ordering::Relaxed)))
            .await??
    };
    let rebuild_seconds = started.elapsed().as_secs_f64();
    drop(done);
    shown.await.ok();
    let tickets = models.tickets.model().live();
    drop(models);

    // Reading the stored records alone, then decoding them alone.
    let started = Instant::now();
    let mut raw: Vec<(u64, Vec<u8>)> = Vec::with_capacity(head as usize);
    while (raw.len() as u64) < head {
        let batch = log.read_raw(raw.len() as u64 + 1, 8192)?;
        anyhow::ensure!(!batch.is_empty(), "the log ends before its head");
        raw.extend(batch);
    }
    let raw_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let events: Vec<RecordedEvent> =
        raw.iter().map(|(p, bytes)| ticket_log_sled::decode_event(*p, bytes)).collect::<Result<_, _>>()?;
    let decode_seconds = started.elapsed().as_secs_f64();
    drop(raw);
    let read_seconds = raw_seconds + decode_seconds;

    fn rate<M: ticket_projections::ReadModel>(events: &[RecordedEvent]) -> f64 {
        let started = Instant::now();
        let mut p = Projected::<M>::new();
        for e in events {
            p.apply(e);
        }
        let rate = events.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        drop(p);
        rate
    }
    let all = {
        let started = Instant::now();
        let mut m = ReadModels::new();
        for e in &events {
            m.apply(e);
        }
        events.len() as f64 / started.elapsed().as_secs_f64().max(1e-9)
    };
    let apply = ApplyRates {
        tickets: rate::<Tickets>(&events),
        board: rate::<Board>(&events),
        compliance: rate::<Compliance>(&events),
        all,
    };
    let rebuild_rate = head as f64 / rebuild_seconds.max(1e-9);
    let report = Report {
        machine: Machine::detect(),
        events: head,
        tickets,
        write_seconds,
        rebuild_seconds,
        rebuild_events_per_sec: rebuild_rate,
        stored_rebuild_seconds,
        stored_rebuild_events_per_sec: head as f64 / stored_rebuild_seconds.max(1e-9),
        stored_rebuild_peak_rss_mb,
        stored_live_rows,
        state_on_disk_mb,
        restart_seconds,
        read_decode_events_per_sec: head as f64 / read_seconds.max(1e-9),
        read_raw_events_per_sec: head as f64 / raw_seconds.max(1e-9),
        decode_events_per_sec: head as f64 / decode_seconds.max(1e-9),
        apply_events_per_sec: apply,
        goal_met: rebuild_rate >= 500_000.0,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let r = &report;
        println!("{:<40} {:>14}", "events in the log", r.events);
        println!("{:<40} {:>14}", "tickets", r.tickets);
        if let Some(s) = r.write_seconds {
            println!("{:<40} {:>14.1}", "writing the log (s)", s);
        }
        println!("{:<40} {:>14.2}", "rebuild of every read model (s)", r.rebuild_seconds);
        println!("{:<40} {:>14.0}", "rebuild events/s", r.rebuild_events_per_sec);
        println!("{:<40} {:>14.2}", "rebuild into the state store (s)", r.stored_rebuild_seconds);
        println!("{:<40} {:>14.0}", "  events/s", r.stored_rebuild_events_per_sec);
        if let Some(mb) = r.stored_rebuild_peak_rss_mb {
            println!("{:<40} {:>14.0}", "  peak resident memory (MB)", mb);
        }
        println!("{:<40} {:>14?}", "  rows in memory after it", r.stored_live_rows);
        println!("{:<40} {:>14.1}", "  state store on disk (MB)", r.state_on_disk_mb);
        println!("{:<40} {:>14.3}", "restart on the state store (s)", r.restart_seconds);
        println!("{:<40} {:>14.0}", "read + decode only, events/s", r.read_decode_events_per_sec);
        println!("{:<40} {:>14.0}", "  of which reading records, events/s", r.read_raw_events_per_sec);
        println!("{:<40} {:>14.0}", "  of which decoding, events/s", r.decode_events_per_sec);
        println!("{:<40} {:>14.0}", "apply in memory: tickets, events/s", r.apply_events_per_sec.tickets);
        println!("{:<40} {:>14.0}", "apply in memory: board, events/s", r.apply_events_per_sec.board);
        println!("{:<40} {:>14.0}", "apply in memory: compliance, events/s", r.apply_events_per_sec.compliance);
        println!("{:<40} {:>14.0}", "apply in memory: all three, events/s", r.apply_events_per_sec.all);
        println!(
            "goal: rebuild >= 500,000 events/s: {} ({:.0})",
            if r.goal_met { "met" } else { "NOT met" },
            r.rebuild_events_per_sec
        );
    }
    Ok(())
}

/// The process's peak resident memory (Linux: `VmHWM`), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Writes tickets through the command service until the log holds `args.events` events.
async fn write(log: &SledLog, policy: &Arc<Policy>, args: &Args) -> anyhow::Result<f64> {
    let service = CommandService::new(log.clone(), policy.clone(), None, ServiceConfig::default());
    let started = Instant::now();
    let base = ticket_log::now() - TimeDelta::days(60);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(log.head()));
    let shown = crate::append::progress("writing", done.clone(), Some(args.events));
    let mut tasks = Vec::new();
    for _ in 0..args.clients.max(1) {
        let (service, next, done, log) = (service.clone(), next.clone(), done.clone(), log.clone());
        let target = args.events;
        tasks.push(tokio::spawn(async move {
            while log.head() < target {
                let i = next.fetch_add(1, Ordering::Relaxed);
                for command in lifecycle(i, base)? {
                    // A refusal (a ticket the rules stop early) is part of the workload.
                    let _ = service.execute(CommandRequest::from(command)).await;
                }
                done.store(log.head(), Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("writer task")??;
    }
    drop(done);
    shown.await.ok();
    Ok(started.elapsed().as_secs_f64())
}

/// Ticket `i`'s six commands (open, respond, ask, reply, respond, resolve), issued from `base`
/// at its spacing (`ticket-bench scale` sends them stamped by the service clock instead).
pub(crate) fn lifecycle(i: u64, base: ticket_domain::Timestamp) -> anyhow::Result<Vec<Command>> {
    let ticket = crate::workload::ticket_id(i as usize);
    let opened = base + TimeDelta::seconds(i as i64 % 3_000_000);
    let spacing = TimeDelta::minutes(20 * (i as i64 % 4 + 1));
    let actor = |kind| -> anyhow::Result<Actor> {
        Ok(Actor { kind, id: ActorId::new(if kind == ActorKind::Customer { "customer" } else { "agent" })? })
    };
    let text = |s: &str| Text::new("text", s);
    let bodies = [
        (
            ActorKind::Agent,
            CommandBody::Open(OpenTicket {
                customer: CustomerId::new(format!("customer-{}", i % 5000))?,
                plan: PlanId::new("advanced")?,
                category: CategoryId::new(if i.is_multiple_of(3) { "billing" } else { "technical" })?,
                title: text("mail cannot be reached")?,
                description: text("timeouts")?,
                severity: if i.is_multiple_of(2) { Severity::A } else { Severity::B },
            }),
        ),
        (ActorKind::Agent, CommandBody::RecordAgentResponse { message: text("looking")? }),
        (ActorKind::Agent, CommandBody::RequestCustomerInfo { request: text("logs?")? }),
        (ActorKind::Customer, CommandBody::RecordCustomerReply { message: text("attached")? }),
        (ActorKind::Agent, CommandBody::RecordAgentResponse { message: text("found it")? }),
        (ActorKind::Agent, CommandBody::Resolve { resolution: text("fixed")? }),
    ];
    let mut commands = Vec::new();
    for (step, (kind, body)) in bodies.into_iter().enumerate() {
        commands.push(Command {
            id: CommandId::new(format!("bench-{i}-{step}"))?,
            ticket_id: ticket,
            actor: actor(kind)?,
            issued_at: opened + spacing * step as i32,
            body,
        });
    }
    Ok(commands)
}
