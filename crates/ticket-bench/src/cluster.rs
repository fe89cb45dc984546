//! `ticket-bench cluster` (issue 14, ADR 0015): what acknowledgement after replication costs,
//! and how fast a node with an empty data directory rebuilds a partition from the log stream.
//! In one run, on this machine:
//!
//! 1. **Local acknowledgement**: the command service on a sled log, as a single node runs it
//!    (`ticket-bench append`'s workload, the same clients and tickets).
//! 2. **Replicated acknowledgement**: the same on a partition's sled log whose group commits go
//!    through the fence into the log stream first (R3 on three nats-servers on loopback, each
//!    with `sync_interval: always`), acknowledged once both hold them.
//! 3. **Rebuild from the stream**: a fresh sled log caught up from what phase 2 published, as a
//!    new owner with an empty data directory does.
//!
//! 4. **Failover**: real `ticketd serve --cluster-node` processes killed with SIGKILL, `--kills`
//!    times (`failover.rs`).
//! 5. **End to end**: the same clients over NATS against one real ticketd, then against three
//!    real ticketd cluster nodes (`processes.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use ticket_cluster::{LogStream, LogStreamConfig, StreamReplicator, catch_up};
use ticket_domain::Partitions;
use ticket_log_sled::{SledConfig, SledLog};

use crate::machine::Machine;
use crate::stats::Phase;
use crate::workload::WorkloadArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Failover rounds (a node killed with SIGKILL in each); 0 skips the phase.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// The ticketd binary the failover and end-to-end phases run (default: `ticketd` beside
    /// this executable, as `cargo build --release -p ticketd` leaves it).
    #[arg(long)]
    ticketd: Option<std::path::PathBuf>,
    /// Skips phase 5 (real ticketd processes end to end).
    #[arg(long)]
    skip_end_to_end: bool,
    /// Phase 5's cluster runs: three nodes of a cluster of each of these partition counts.
    #[arg(long, value_delimiter = ',', default_value = "16,3")]
    e2e_partitions: Vec<u16>,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    clients: usize,
    tickets: usize,
    nats_servers: usize,
    replicas: usize,
    local: Phase,
    replicated: Phase,
    /// Replicated commands/s divided by local commands/s.
    ratio: f64,
    goal_ratio_met: bool,
    /// Groups published to the stream by phase 2 (each one fenced publish, one round trip).
    groups_published: u64,
    rebuild_events: u64,
    rebuild_seconds: f64,
    rebuild_events_per_sec: f64,
    failover: Option<crate::failover::Failover>,
    end_to_end: Option<crate::processes::EndToEnd>,
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    let Args { workload: args, kills, ticketd, skip_end_to_end, e2e_partitions } = args;
    let ticketd = match ticketd {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("ticketd"),
    };
    anyhow::ensure!(
        (kills == 0 && skip_end_to_end) || ticketd.is_file(),
        "no ticketd binary at {} (cargo build --release -p ticketd, or --ticketd PATH, or --kills 0 --skip-end-to-end)",
        ticketd.display()
    );
    let policy = Arc::new(ticket_defaults::policy(args.policy.as_deref())?.0);
    let (dir, _cleanup) = crate::data_dir(args.data_dir.clone())?;
    let machine = Machine::detect();
    eprintln!(
        "cluster: {} clients, {} tickets, {} s per phase, on {} cores ({}), data in {}",
        args.clients,
        args.tickets,
        args.seconds,
        machine.cores,
        machine.cpu,
        dir.display()
    );

    // 1. Local acknowledgement.
    let local = {
        let log = SledLog::open(SledConfig::new(dir.join("local")))?;
        crate::append::engine_phase(&args, &log, policy.clone()).await?
    };

    // 2. Replicated acknowledgement: three servers fsyncing every write, an R3 log stream.
    let config_file = dir.join("sync-always.conf");
    std::fs::write(&config_file, "jetstream { sync_interval: always }\n")?;
    let servers = ticket_testkit::Cluster::start_with(3, Some(config_file.clone()))?;
    servers.wait_routed(Duration::from_secs(30))?;
    let client = async_nats::connect(servers.nodes[0].url()).await?;
    let js = async_nats::jetstream::new(client);
    let config = LogStreamConfig { replicas: 3, ..LogStreamConfig::default() };
    let stream = LogStream::ensure_within(js, config, Duration::from_secs(60)).await?;
    let partition = Partitions::SINGLE.all().next().ok_or_else(|| anyhow::anyhow!("no partition"))?;
    let fenced = stream.take(partition, "bench-owner").await?;
    let taken = fenced.last();
    let replicator = Arc::new(StreamReplicator::new(fenced, tokio::runtime::Handle::current()));
    let replicated = {
        let mut config = SledConfig::new(dir.join("replicated"));
        config.replicator = Some(replicator.clone());
        let log = SledLog::open(config)?;
        crate::append::engine_phase(&args, &log, policy).await?
    };
    let last = replicator.last();
    let groups_published = count_groups(&stream, partition, taken, last).await?;

    // 3. A new owner's rebuild of the partition from the stream.
    let rebuilt = SledLog::open(SledConfig::new(dir.join("rebuilt")))?;
    let started = Instant::now();
    let head = catch_up(&rebuilt, &stream, partition, last).await?;
    let rebuild_seconds = started.elapsed().as_secs_f64();
    drop(servers);

    // 4. Failover of real ticketd processes.
    let failover = if kills > 0 {
        let failover_dir = dir.join("failover");
        std::fs::create_dir_all(&failover_dir)?;
        Some(crate::failover::run(&ticketd, &failover_dir, config_file.clone(), kills).await?)
    } else {
        None
    };

    // 5. Real ticketd processes end to end: one, then three cluster nodes.
    let end_to_end = if skip_end_to_end {
        None
    } else {
        let e2e_dir = dir.join("end-to-end");
        std::fs::create_dir_all(&e2e_dir)?;
        Some(crate::processes::run(&ticketd, &e2e_dir, config_file, args.clients, args.seconds, &e2e_partitions).await?)
    };

    let ratio = if local.commands_per_sec > 0.0 { replicated.commands_per_sec / local.commands_per_sec } else { 0.0 };
    let report = Report {
        benchmark: "cluster",
        machine,
        clients: args.clients,
        tickets: args.tickets,
        nats_servers: 3,
        replicas: 3,
        goal_ratio_met: ratio >= 0.25,
        local,
        replicated,
        ratio,
        groups_published,
        rebuild_events: head,
        rebuild_seconds,
        rebuild_events_per_sec: head as f64 / rebuild_seconds.max(1e-9),
        failover,
        end_to_end,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

async fn count_groups(
    stream: &LogStream,
    partition: ticket_domain::Partition,
    after: u64,
    last: u64,
) -> anyhow::Result<u64> {
    let mut groups = 0u64;
    stream
        .read(partition, after + 1, last, |_, _| {
            groups += 1;
            Ok(())
        })
        .await?;
    Ok(groups)
}

fn print_table(r: &Report) {
    print_phases(r);
    if let Some(e) = &r.end_to_end {
        println!();
        print!("{:<28} {:>14}", "end to end, over NATS", "one ticketd");
        for n in &e.clusters {
            print!(" {:>18}", format!("3 nodes, {} part.", n.partitions));
        }
        println!();
        print!("{:<28} {:>14.1}", "commands/s", e.single.commands_per_sec);
        for n in &e.clusters {
            print!(" {:>18}", format!("{:.1} ({:.1}%)", n.phase.commands_per_sec, 100.0 * n.ratio));
        }
        println!();
        type Latency = fn(&crate::stats::Phase) -> f64;
        let rows: [(&str, Latency); 2] =
            [("latency p50 (ms)", |p| p.latency.p50_ms), ("latency p99 (ms)", |p| p.latency.p99_ms)];
        for (name, of) in rows {
            print!("{name:<28} {:>14.3}", of(&e.single));
            for n in &e.clusters {
                print!(" {:>18.3}", of(&n.phase));
            }
            println!();
        }
        print!("{:<28} {:>14}", "UNAVAILABLE answers", "");
        for n in &e.clusters {
            print!(" {:>18}", n.unavailable);
        }
        println!();
        // What the processes' own metrics say of the phase (means over it).
        type Inside = fn(&crate::processes::Inside) -> Option<f64>;
        let inside: [(&str, Inside); 5] = [
            ("group commits", |i| Some(i.group_commits as f64)),
            ("commands per group commit", |i| i.appends_per_group),
            ("fenced publish (ms)", |i| i.fenced_publish_ms),
            ("log fsync (ms)", |i| i.fsync_ms),
            ("in the service (ms)", |i| i.command_in_service_ms),
        ];
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        for (name, of) in inside {
            print!("{name:<28} {:>14}", cell(of(&e.single_inside)));
            for n in &e.clusters {
                print!(" {:>18}", cell(of(&n.inside)));
            }
            println!();
        }
        for n in &e.clusters {
            println!(
                "goal: 3 nodes of {} partitions >= 25% of one ticketd: {} ({:.1}%)",
                n.partitions,
                if n.ratio >= 0.25 { "met" } else { "NOT met" },
                100.0 * n.ratio
            );
        }
    }
}

fn print_phases(r: &Report) {
    let (a, b) = (&r.local, &r.replicated);
    println!("{:<28} {:>14} {:>14} {:>8}", "", "local ack", "replicated", "ratio");
    let row = |name: &str, x: f64, y: f64| {
        println!("{name:<28} {x:>14.1} {y:>14.1} {:>7.1}%", if x > 0.0 { 100.0 * y / x } else { 0.0 })
    };
    row("commands/s", a.commands_per_sec, b.commands_per_sec);
    row("events/s", a.events_per_sec, b.events_per_sec);
    let ms = |name: &str, x: f64, y: f64| println!("{name:<28} {x:>14.3} {y:>14.3}");
    ms("latency p50 (ms)", a.latency.p50_ms, b.latency.p50_ms);
    ms("latency p99 (ms)", a.latency.p99_ms, b.latency.p99_ms);
    ms("latency max (ms)", a.latency.max_ms, b.latency.max_ms);
    println!("{:<28} {:>14} {:>14}", "commands", a.commands, b.commands);
    println!("{:<28} {:>14} {:>14}", "groups published (fenced)", "", r.groups_published);
    println!(
        "{:<28} {:>14.0} ({} events in {:.2} s)",
        "rebuild from the stream, events/s", r.rebuild_events_per_sec, r.rebuild_events, r.rebuild_seconds
    );
    println!(
        "goal: replicated >= 25% of local: {} ({:.1}%)",
        if r.goal_ratio_met { "met" } else { "NOT met" },
        100.0 * r.ratio
    );
    if let Some(f) = &r.failover {
        println!(
            "failover ({} kills of one of {} ticketd, {} partitions, leases of {} s): median {} ms, max {} ms \
             (per partition: median {} ms)",
            f.kills, f.nodes, f.partitions, f.lease_ttl_secs, f.median_ms, f.max_ms, f.partition_median_ms
        );
        println!(
            "acknowledged during the kills: {}, lost or answered differently when sent again: {}",
            f.acknowledged, f.lost_or_changed
        );
        println!("goal: failover median under 10 s: {}", if f.goal_median_met { "met" } else { "NOT met" });
    }
}
