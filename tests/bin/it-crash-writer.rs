//! Writes commands through the real command service on a sled log until it is killed, printing
//! `ACK <command id> <first position> <last position>` for each command only after its append
//! returned (that is, after its fsync).
//!
//! Usage: it-crash-writer <log dir> <policy file> <cycle>

#![allow(clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;

use ticket_domain::{
    Actor, ActorId, ActorKind, CategoryId, Command, CommandBody, CommandId, CustomerId, OpenTicket, PlanId, Policy,
    Severity, Text, TicketId,
};
use ticket_log::now;
use ticket_log_sled::{SledConfig, SledLog};
use ticket_service::{CommandService, ServiceConfig};

const WRITERS: u64 = 8;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(policy), Some(cycle)) =
        (args.get(1), args.get(2), args.get(3).and_then(|c| c.parse::<u64>().ok()))
    else {
        eprintln!("usage: it-crash-writer <log dir> <policy file> <cycle>");
        return std::process::ExitCode::from(2);
    };
    let policy = match Policy::load(std::path::Path::new(policy)) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(3);
        }
    };
    runtime.block_on(async move {
        // A small hot tier, so that kills also land in the middle of moves into the archive.
        let mut config = SledConfig::new(dir);
        config.hot_events = 64;
        config.seal_chunk = 16;
        let log = match SledLog::open(config) {
            Ok(log) => log,
            Err(e) => {
                eprintln!("{e}");
                return std::process::ExitCode::from(3);
            }
        };
        let service =
            CommandService::new(log.clone(), policy, Some(Arc::new(log.snapshots())), ServiceConfig::default());
        println!("READY {}", ticket_log::EventLog::head(&log));
        let _ = std::io::stdout().flush();
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let service = service.clone();
            tasks.push(tokio::spawn(async move { write_forever(&service, cycle, writer).await }));
        }
        for t in tasks {
            let _ = t.await;
        }
        std::process::ExitCode::SUCCESS
    })
}

async fn write_forever(service: &CommandService<SledLog>, cycle: u64, writer: u64) {
    let actor = Actor { kind: ActorKind::Agent, id: ActorId::new("crash-writer").expect("valid constant") };
    for n in 0u64.. {
        // A new ticket every fourth command, comments on it in between.
        let ticket = TicketId::from_uuid(uuid_for(cycle, writer, n / 4));
        let body = if n % 4 == 0 {
            CommandBody::Open(OpenTicket {
                customer: CustomerId::new(format!("customer-{writer}")).expect("valid constant"),
                plan: PlanId::new("standard").expect("valid constant"),
                category: CategoryId::new("technical").expect("valid constant"),
                title: Text::new("title", "crash test").expect("valid constant"),
                description: Text::empty(),
                severity: Severity::B,
            })
        } else {
            CommandBody::RecordCustomerReply {
                message: Text::new("message", format!("comment {n}")).expect("valid constant"),
            }
        };
        let id = format!("c{cycle}-w{writer}-{n}");
        let command = Command {
            id: CommandId::new(id.clone()).expect("valid constant"),
            ticket_id: ticket,
            actor: actor.clone(),
            issued_at: now(),
            body,
        };
        match service.execute(command.into()).await {
            Ok(result) => {
                let first = result.events.first().map_or(0, |e| e.position);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "ACK {id} {first} {}", result.last_position());
                let _ = out.flush();
            }
            Err(e) => {
                eprintln!("command {id} failed: {e}");
                return;
            }
        }
    }
}

/// A distinct ticket id per (cycle, writer, ticket number).
fn uuid_for(cycle: u64, writer: u64, ticket: u64) -> uuid::Uuid {
    uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000
            | u128::from(cycle) << 80
            | u128::from(writer) << 64
            | u128::from(ticket),
    )
}
