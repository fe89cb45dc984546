//! `ticket-bench nats`: commands over NATS request/reply against the raw request/reply rate of
//! the same server (a trivial responder), in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;
use ticket_domain::Policy;
use ticket_engine::{DataDir, Engine, EngineConfig};

use crate::machine::Machine;
use crate::stats::{Phase, histogram};
use crate::workload::{Rng, Vocabulary, WorkloadArgs, Zipf, ticket_id};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// A NATS server to use (default: one started for the run, on loopback).
    #[arg(long)]
    nats_url: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    clients: usize,
    ticketd: Phase,
    raw_nats: Phase,
    /// ticketd commands/s divided by raw request/reply/s.
    ratio: f64,
    goal_ratio_met: bool,
    goal_p99_met: bool,
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    let Args { workload: args, nats_url } = args;
    let policy = Arc::new(ticket_defaults::policy(args.policy.as_deref())?.0);
    let (dir, _cleanup) = crate::data_dir(args.data_dir.clone())?;
    let _server;
    let url = match &nats_url {
        Some(url) => url.clone(),
        None => {
            let server = ticket_testkit::NatsServer::start()?;
            let url = server.url();
            _server = server;
            url
        }
    };
    let machine = Machine::detect();
    eprintln!(
        "nats: {} clients, {} tickets (zipf {}), {} s per phase, NATS at {url}",
        args.clients, args.tickets, args.zipf, args.seconds
    );

    let raw_nats = raw_phase(&args, &url).await?;
    let ticketd = engine_phase(&args, &url, &dir, policy).await?;
    let ratio =
        if raw_nats.commands_per_sec > 0.0 { ticketd.commands_per_sec / raw_nats.commands_per_sec } else { 0.0 };
    let report = Report {
        benchmark: "nats",
        machine,
        clients: args.clients,
        goal_ratio_met: ratio >= 0.4,
        goal_p99_met: ticketd.latency.p99_ms < 10.0,
        ticketd,
        raw_nats,
        ratio,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let (a, b) = (&report.ticketd, &report.raw_nats);
        println!("{:<22} {:>14} {:>14} {:>8}", "", "ticketd", "raw nats", "ratio");
        println!(
            "{:<22} {:>14.1} {:>14.1} {:>7.1}%",
            "requests/s",
            a.commands_per_sec,
            b.commands_per_sec,
            100.0 * ratio
        );
        for (name, x, y) in [
            ("latency p50 (ms)", a.latency.p50_ms, b.latency.p50_ms),
            ("latency p99 (ms)", a.latency.p99_ms, b.latency.p99_ms),
            ("latency p999 (ms)", a.latency.p999_ms, b.latency.p999_ms),
        ] {
            println!("{name:<22} {x:>14.3} {y:>14.3}");
        }
        println!("{:<22} {:>14}", "refused by the rules", a.rejected);
        println!(
            "goals: ratio >= 40%: {} ({:.1}%); p99 < 10 ms: {} ({:.3} ms)",
            if report.goal_ratio_met { "met" } else { "NOT met" },
            100.0 * ratio,
            if report.goal_p99_met { "met" } else { "NOT met" },
            a.latency.p99_ms
        );
    }
    Ok(())
}

/// A trivial responder that echoes the request, and clients sending command-sized payloads.
async fn raw_phase(args: &WorkloadArgs, url: &str) -> anyhow::Result<Phase> {
    let responder = async_nats::connect(url).await?;
    let mut requests = responder.subscribe("bench.echo").await?;
    let echo_client = responder.clone();
    let echo = tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            if let Some(reply) = message.reply {
                let _ = echo_client.publish(reply, message.payload).await;
            }
        }
    });
    responder.flush().await?;
    let payload: bytes::Bytes = vec![0x5a; 220].into();
    let client = async_nats::connect(url).await?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (client, payload) = (client.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                client.request("bench.echo", payload.clone()).await?;
                h.record(sent.elapsed().as_micros() as u64).ok();
                n += 1;
            }
            anyhow::Ok((h, n))
        }));
    }
    let (mut h, mut n) = (histogram(), 0);
    for t in tasks {
        let (th, tn) = t.await??;
        h.add(&th).context("merge")?;
        n += tn;
    }
    let seconds = start.elapsed().as_secs_f64();
    echo.abort();
    Ok(Phase::new(n, n, 0, seconds, &h))
}

async fn engine_phase(
    args: &WorkloadArgs,
    url: &str,
    dir: &std::path::Path,
    policy: Arc<Policy>,
) -> anyhow::Result<Phase> {
    let engine = Engine::start(EngineConfig::new(DataDir::new(dir.join("ticketd")), policy)).await?;
    let service = engine.service().clone();
    let views = engine.views().cloned().context("the engine runs no projector")?;
    let api_client = async_nats::connect(url).await?;
    let api =
        ticket_nats::start(api_client.clone(), service.clone(), views, ticket_nats::ApiConfig::trusting()).await?;
    api_client.flush().await?;
    let client = ticket_client::Client::new(async_nats::connect(url).await?);
    let zipf = Arc::new(Zipf::new(args.tickets, args.zipf));
    let vocabulary = Arc::new(Vocabulary::new()?);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (client, service, zipf, vocabulary, done) =
            (client.clone(), service.clone(), zipf.clone(), vocabulary.clone(), done.clone());
        let seed = args.seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            let mut h = histogram();
            let (mut ok, mut refused, mut n) = (0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                n += 1;
                let ticket = ticket_id(zipf.sample(&mut rng));
                // The support tool knows the ticket (here: read in process) and picks a command.
                let state = service.state(ticket)?;
                let command =
                    vocabulary.next_command(&mut rng, ticket, &state, format!("nats-{c}-{n}"), ticket_log::now())?;
                let sent = Instant::now();
                // Sent as a support tool sends it: ticketd stamps its clock.
                // The reply is counted, not read: its events are not decoded into the domain's
                // types on the cores the server needs.
                let mut wire = ticket_proto::pb::Command::from(&command);
                wire.issued_at = None;
                match client.send_wire_reply(wire).await {
                    Ok(_) => {
                        h.record(sent.elapsed().as_micros() as u64).ok();
                        ok += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    // The rules' refusals have codes below 100.
                    Err(e) if e.code().is_some_and(|code| (code as i32) < 100) => refused += 1,
                    Err(e) => anyhow::bail!("unexpected reply: {e}"),
                }
            }
            anyhow::Ok((h, ok, refused))
        }));
    }
    let (mut h, mut ok, mut refused) = (histogram(), 0, 0);
    for t in tasks {
        let (th, tok, tr) = t.await??;
        h.add(&th).context("merge")?;
        ok += tok;
        refused += tr;
    }
    let seconds = start.elapsed().as_secs_f64();
    api.stop(Duration::from_secs(5)).await;
    engine.stop(Duration::from_secs(5)).await;
    Ok(Phase::new(ok, ok, refused, seconds, &h))
}
