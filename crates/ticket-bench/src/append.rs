//! `ticket-bench append`: durable appends through the command service on sled, and in the same
//! run the same record bytes inserted into a bare sled tree with the same group-commit and flush
//! policy, as the ceiling.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use ticket_domain::Policy;
use ticket_log::EventLog;
use ticket_log_sled::{SledConfig, SledLog};
use ticket_service::{CommandRequest, CommandService, ServiceConfig, ServiceError, Stamp, SystemClock};
use tokio::sync::oneshot;

use crate::machine::Machine;
use crate::stats::{Phase, histogram};
use crate::workload::{Rng, Vocabulary, WorkloadArgs, Zipf, ticket_id};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    workload: WorkloadArgs,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    clients: usize,
    tickets: usize,
    zipf: f64,
    ticketd: Phase,
    raw_sled: Phase,
    /// ticketd events/s divided by raw sled events/s.
    ratio: f64,
    goal_ratio_met: bool,
    goal_p99_met: bool,
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    let args = args.workload;
    let policy = Arc::new(ticket_defaults::policy(args.policy.as_deref())?.0);
    let (dir, _cleanup) = crate::data_dir(args.data_dir.clone())?;
    let machine = Machine::detect();
    eprintln!(
        "append: {} clients, {} tickets (zipf {}), {} s, on {} cores ({}), data in {}",
        args.clients,
        args.tickets,
        args.zipf,
        args.seconds,
        machine.cores,
        machine.cpu,
        dir.display()
    );

    let log = SledLog::open(SledConfig::new(dir.join("ticketd")))?;
    let ticketd = engine_phase(&args, &log, policy).await?;
    let raw_sled = raw_phase(&args, &log, &dir.join("raw")).await?;
    drop(log);

    let ratio = if raw_sled.events_per_sec > 0.0 { ticketd.events_per_sec / raw_sled.events_per_sec } else { 0.0 };
    let report = Report {
        benchmark: "append",
        machine,
        clients: args.clients,
        tickets: args.tickets,
        zipf: args.zipf,
        goal_ratio_met: ratio >= 0.5,
        goal_p99_met: ticketd.latency.p99_ms < 10.0,
        ticketd,
        raw_sled,
        ratio,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    let (a, b) = (&r.ticketd, &r.raw_sled);
    println!("{:<22} {:>14} {:>14} {:>8}", "", "ticketd", "raw sled", "ratio");
    let row = |name: &str, x: f64, y: f64| {
        println!("{name:<22} {x:>14.1} {y:>14.1} {:>7.1}%", if y > 0.0 { 100.0 * x / y } else { 0.0 })
    };
    row("commands/s", a.commands_per_sec, b.commands_per_sec);
    row("events/s", a.events_per_sec, b.events_per_sec);
    let ms = |name: &str, x: f64, y: f64| println!("{name:<22} {x:>14.3} {y:>14.3}");
    ms("latency p50 (ms)", a.latency.p50_ms, b.latency.p50_ms);
    ms("latency p99 (ms)", a.latency.p99_ms, b.latency.p99_ms);
    ms("latency p999 (ms)", a.latency.p999_ms, b.latency.p999_ms);
    ms("latency max (ms)", a.latency.max_ms, b.latency.max_ms);
    println!("{:<22} {:>14} {:>14}", "commands", a.commands, b.commands);
    println!("{:<22} {:>14} {:>14}", "events", a.events, b.events);
    println!("{:<22} {:>14}", "refused by the rules", a.rejected);
    println!(
        "goals: ratio >= 50%: {} ({:.1}%); p99 < 10 ms: {} ({:.3} ms)",
        if r.goal_ratio_met { "met" } else { "NOT met" },
        100.0 * r.ratio,
        if r.goal_p99_met { "met" } else { "NOT met" },
        a.latency.p99_ms
    );
}

/// Shows progress on standard error while a phase runs.
pub(crate) fn progress(label: &'static str, done: Arc<AtomicU64>, total: Option<u64>) -> tokio::task::JoinHandle<()> {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} {spinner} {pos} done ({per_sec}) {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(label);
    tokio::spawn(async move {
        loop {
            bar.set_position(done.load(Ordering::Relaxed));
            if Arc::strong_count(&done) == 1 {
                bar.finish_and_clear();
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

pub(crate) async fn engine_phase(args: &WorkloadArgs, log: &SledLog, policy: Arc<Policy>) -> anyhow::Result<Phase> {
    let service = CommandService::with_clock(
        log.clone(),
        policy,
        Some(Arc::new(log.snapshots())),
        ServiceConfig::default(),
        Arc::new(SystemClock),
    );
    let zipf = Arc::new(Zipf::new(args.tickets, args.zipf));
    let vocabulary = Arc::new(Vocabulary::new()?);
    let done = Arc::new(AtomicU64::new(0));
    let shown = progress("ticketd", done.clone(), None);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let (service, zipf, vocabulary, done) = (service.clone(), zipf.clone(), vocabulary.clone(), done.clone());
        let seed = args.seed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            let mut h = histogram();
            let (mut commands, mut events, mut rejected) = (0u64, 0u64, 0u64);
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let ticket = ticket_id(zipf.sample(&mut rng));
                let state = service.state(ticket)?;
                let command = vocabulary.next_command(
                    &mut rng,
                    ticket,
                    &state,
                    format!("bench-{client}-{n}"),
                    ticket_log::now(),
                )?;
                let request =
                    CommandRequest { command, correlation_id: None, causation_id: None, stamp: Stamp::ServiceClock };
                let sent = Instant::now();
                match service.execute(request).await {
                    Ok(result) => {
                        h.record(sent.elapsed().as_micros() as u64).ok();
                        commands += 1;
                        events += result.events.len() as u64;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    // Two clients on one hot ticket: the second may find it resolved already.
                    Err(ServiceError::Rejected(_)) => rejected += 1,
                    Err(e) => return Err(anyhow::Error::from(e)),
                }
            }
            anyhow::Ok((h, commands, events, rejected))
        }));
    }
    let (mut h, mut commands, mut events, mut rejected) = (histogram(), 0, 0, 0);
    for task in tasks {
        let (client_h, c, e, r) = task.await??;
        h.add(&client_h).context("merge histograms")?;
        commands += c;
        events += e;
        rejected += r;
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(done);
    shown.await.ok();
    Ok(Phase::new(commands, events, rejected, seconds, &h))
}

type RawJob = (Vec<(Vec<u8>, Vec<u8>)>, oneshot::Sender<Result<(), String>>);

/// The same record bytes as the engine phase wrote, one request per command, into a bare sled
/// tree by a single writer with the same group commit: every queued request joins one batch,
/// then one flush (fsync), then the acknowledgements.
async fn raw_phase(args: &WorkloadArgs, log: &SledLog, path: &std::path::Path) -> anyhow::Result<Phase> {
    let mut ops: Vec<Vec<(Vec<u8>, Vec<u8>)>> = Vec::new();
    let mut from = 1;
    loop {
        let commands = log.commands_from(from, 4096)?;
        let Some(last) = commands.last() else { break };
        from = last.first_position + 1;
        for c in &commands {
            let count = usize::try_from(c.last_position - c.first_position + 1)?;
            let records = log.read_raw(c.first_position, count)?;
            ops.push(
                records
                    .into_iter()
                    .map(|(p, bytes)| {
                        (ticket_log_sled::keys::positional(ticket_log_sled::keys::EVENT, p).to_vec(), bytes)
                    })
                    .collect(),
            );
        }
    }
    let total_events: u64 = ops.iter().map(|o| o.len() as u64).sum();
    let ops = Arc::new(ops);

    let config = SledConfig::new(path);
    let db = sled::Config::new()
        .path(&config.path)
        .cache_capacity(config.cache_capacity_bytes)
        .flush_every_ms(None)
        .open()?;
    let tree = db.open_tree("raw")?;
    let (tx, rx) = std::sync::mpsc::channel::<RawJob>();
    let writer = std::thread::spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < config.max_group {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let mut batch = sled::Batch::default();
            for (records, _) in &group {
                for (k, v) in records {
                    batch.insert(k.as_slice(), v.as_slice());
                }
            }
            let result = tree.apply_batch(batch).and_then(|()| db.flush().map(|_| ())).map_err(|e| e.to_string());
            for (_, reply) in group {
                let _ = reply.send(result.clone());
            }
        }
    });

    let done = Arc::new(AtomicU64::new(0));
    let shown = progress("raw sled", done.clone(), Some(ops.len() as u64));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (ops, next, tx, done) = (ops.clone(), next.clone(), tx.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(records) = ops.get(i) else { break };
                let (reply, answer) = oneshot::channel();
                let sent = Instant::now();
                tx.send((records.clone(), reply)).map_err(|_| anyhow::anyhow!("raw writer stopped"))?;
                answer.await?.map_err(anyhow::Error::msg)?;
                h.record(sent.elapsed().as_micros() as u64).ok();
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(h)
        }));
    }
    drop(tx);
    let mut h: Histogram<u64> = histogram();
    for task in tasks {
        h.add(&task.await??).context("merge histograms")?;
    }
    let seconds = start.elapsed().as_secs_f64();
    writer.join().map_err(|_| anyhow::anyhow!("raw writer panicked"))?;
    drop(done);
    shown.await.ok();
    Ok(Phase::new(ops.len() as u64, total_events, 0, seconds, &h))
}
