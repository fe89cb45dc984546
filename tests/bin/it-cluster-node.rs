//! A cluster node (ADR 0015) that writes commands to every partition it owns until it is killed:
//! opens tickets placed in the partition through the real command service on the partition's
//! log, printing `ACK <partition> <command id>` only after the command was acknowledged
//! (replicated to the log stream and written to the node's sled log), `REFUSED <partition>
//! <command id> <error>` when its log refuses it, `OWNS <n>` when the partitions it owns
//! change, and `REPLACED <why>` when another process claimed its node name (it was paused past
//! its word's time to live).
//!
//! Usage: it-cluster-node <nats url> <node name> <data dir> <policy file>

#![allow(clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use ticket_cluster::{NodeConfig, Owned};
use ticket_domain::{
    Actor, ActorId, ActorKind, CategoryId, Command, CommandBody, CommandId, CustomerId, OpenTicket, Partition,
    Partitions, PlanId, Policy, Severity, Text,
};
use ticket_log::now;
use ticket_log_sled::SledLog;
use ticket_service::{CommandService, ServiceConfig};

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(name), Some(dir), Some(policy)) = (args.get(1), args.get(2), args.get(3), args.get(4)) else {
        eprintln!("usage: it-cluster-node <nats url> <node name> <data dir> <policy file>");
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
        let js = match async_nats::connect(url.as_str()).await {
            Ok(client) => async_nats::jetstream::new(client),
            Err(e) => {
                eprintln!("{e}");
                return std::process::ExitCode::from(3);
            }
        };
        let partitions = Partitions::new(16).expect("16 is a valid count");
        let mut config = NodeConfig::new(name.clone(), dir, partitions);
        config.leases.ttl = Duration::from_secs(2);
        config.renew_every = Duration::from_millis(200);
        let node = match ticket_cluster::node::start(js, config).await {
            Ok(node) => node,
            Err(e) => {
                eprintln!("{e}");
                return std::process::ExitCode::from(3);
            }
        };
        let mut owned = node.owned();
        let mut writing = BTreeSet::new();
        let mut replaced = false;
        loop {
            let now_owned = owned.borrow_and_update().clone();
            say(format!("OWNS {}", now_owned.len()));
            // One writer per partition it owns (a partition taken again gets a new one).
            writing.retain(|p| now_owned.contains_key(p));
            for (partition, held) in now_owned {
                if writing.insert(partition) {
                    let (policy, name) = (policy.clone(), name.clone());
                    tokio::spawn(async move { write(held, policy, partitions, name).await });
                }
            }
            tokio::select! {
                changed = owned.changed() => if changed.is_err() {
                    return std::process::ExitCode::SUCCESS;
                },
                why = node.replaced(), if !replaced => {
                    say(format!("REPLACED {why}"));
                    replaced = true;
                }
            }
        }
    })
}

/// Opens tickets in `owned`'s partition until its log refuses one.
async fn write(owned: Owned, policy: Arc<Policy>, partitions: Partitions, node: String) {
    let Owned { partition, log, .. } = owned;
    let service: CommandService<SledLog> = CommandService::new(log, policy, None, ServiceConfig::default());
    let actor = Actor { kind: ActorKind::Agent, id: ActorId::new("cluster-node").expect("valid constant") };
    for n in 0u64.. {
        let id = format!("{node}-p{partition}-{n}-{}", uuid::Uuid::now_v7().simple());
        let command = Command {
            id: CommandId::new(id.clone()).expect("valid constant"),
            ticket_id: placed(partitions, partition),
            actor: actor.clone(),
            issued_at: now(),
            body: CommandBody::Open(OpenTicket {
                customer: CustomerId::new("customer-1").expect("valid constant"),
                plan: PlanId::new("standard").expect("valid constant"),
                category: CategoryId::new("technical").expect("valid constant"),
                title: Text::new("title", "zombie test").expect("valid constant"),
                description: Text::empty(),
                severity: Severity::B,
            }),
        };
        match service.execute(command.into()).await {
            Ok(_) => say(format!("ACK {partition} {id}")),
            Err(e) => {
                say(format!("REFUSED {partition} {id} {e}"));
                return;
            }
        }
    }
}

fn placed(partitions: Partitions, partition: Partition) -> ticket_domain::TicketId {
    partitions.place(uuid::Uuid::now_v7(), partition).expect("a fresh id can be placed in any partition")
}
