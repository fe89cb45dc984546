//! `ticketctl import FILE`: another helpdesk's history moved in with its original instants.
//!
//! One `ticket.v1.Command` per line in canonical proto3 JSON, sent in file order as an
//! importer's commands: locally to the engine on the data directory (`Stamp::Imported`), or to a
//! running ticketd over NATS with their `issued_at` (ticketd accepts it from importer identities
//! only). Every line needs its command id: a rerun after a kill sends the same ids, which the log
//! answers as duplicates, so an import resumes where it stopped.

use std::io::BufRead;
use std::path::Path;

use serde::Serialize;
use ticket_domain::Command;
use ticket_engine::{DataDir, Engine, EngineConfig};
use ticket_proto::pb;
use ticket_service::{CommandRequest, Stamp};
use tracing::debug;

use crate::Failure;
use crate::output::{emit, print_json, progress, table};

/// Where the commands go.
pub enum Target<'a> {
    Local {
        data_dir: &'a Path,
        policy: Option<&'a Path>,
    },
    Remote {
        url: &'a ticket_nats::connection::NatsUrl,
        credentials: ticket_nats::connection::Credentials,
        tls: ticket_nats::connection::Tls,
    },
}

/// One line's outcome.
enum Outcome {
    Imported,
    Duplicate,
    Refused(pb::Error),
}

/// A refused line, with ticketd's (or the parser's) reason.
#[derive(Debug, Serialize)]
pub struct Refusal {
    pub line: u64,
    pub command_id: String,
    pub code: String,
    pub message: String,
}

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub lines: u64,
    pub imported: u64,
    pub duplicates: u64,
    pub refused: Vec<Refusal>,
}

/// The sender of an import: the engine, or a NATS client.
enum Sender {
    Local(Box<Engine>),
    Remote(ticket_client::Client),
}

impl Sender {
    async fn send(&self, command: Command) -> Result<Outcome, Failure> {
        match self {
            Sender::Local(engine) => {
                let request =
                    CommandRequest { command, correlation_id: None, causation_id: None, stamp: Stamp::Imported };
                Ok(match engine.service().execute(request).await {
                    Ok(result) if result.duplicate => Outcome::Duplicate,
                    Ok(_) => Outcome::Imported,
                    Err(e) => match e.kind() {
                        ticket_service::ServiceErrorKind::Rejected(_)
                        | ticket_service::ServiceErrorKind::Quarantined => {
                            Outcome::Refused(ticket_nats::service_error(&e))
                        }
                        // The log failed: stop here; a rerun resumes.
                        ticket_service::ServiceErrorKind::Conflict
                        | ticket_service::ServiceErrorKind::Storage
                        | ticket_service::ServiceErrorKind::Unavailable => return Err(Failure::Data(e.into())),
                    },
                })
            }
            Sender::Remote(client) => match client.execute(&command, false).await {
                Ok(accepted) if accepted.duplicate => Ok(Outcome::Duplicate),
                Ok(_) => Ok(Outcome::Imported),
                // A refusal is the line's; no answer at all (transport, timeout) stops the import.
                Err(e) => e.to_wire().map(Outcome::Refused).ok_or_else(|| Failure::Data(e.into())),
            },
        }
    }
}

fn malformed(message: String) -> pb::Error {
    pb::Error { code: pb::ErrorCode::MalformedRequest as i32, message, details: Default::default() }
}

/// Parses one line: canonical proto3 JSON of a complete `ticket.v1.Command`.
fn parse(line: &str) -> Result<Command, (String, pb::Error)> {
    let wire: pb::Command =
        serde_json::from_str(line).map_err(|e| (String::new(), malformed(format!("not a ticket.v1.Command: {e}"))))?;
    let id = wire.command_id.clone();
    if id.is_empty() {
        return Err((id, malformed("command_id is required: it makes the import resumable".into())));
    }
    if wire.issued_at.is_none() {
        return Err((id, malformed("issued_at is required: the instant in the other helpdesk".into())));
    }
    Command::try_from(wire).map_err(|e| (id, pb::Error::from(&e)))
}

/// Imports `file` (`-`: standard input) into `target`; prints the summary. A refused line does
/// not stop the import; the exit code says something was refused.
pub fn run(file: &Path, target: Target<'_>, runtime: &tokio::runtime::Runtime, json: bool) -> Result<(), Failure> {
    let stdin = file == Path::new("-");
    let reader: Box<dyn BufRead> = if stdin {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(file)?))
    };
    let total = if stdin { 0 } else { std::io::BufReader::new(std::fs::File::open(file)?).lines().count() as u64 };
    let summary = runtime.block_on(async {
        let sender = match target {
            Target::Local { data_dir, policy } => {
                let policy = std::sync::Arc::new(crate::load_policy(policy)?);
                // The service on the log, without the timer or the read models: nothing fires
                // while the history comes in.
                let config = EngineConfig { projector: None, ..EngineConfig::new(DataDir::new(data_dir), policy) };
                Sender::Local(Box::new(Engine::start(config).await.map_err(|e| Failure::Data(e.into()))?))
            }
            Target::Remote { url, credentials, tls } => {
                let client = ticket_client::Client::connect_with_tls(url, &credentials, &tls, "ticketctl-import")
                    .await
                    .map_err(|e| Failure::Data(e.into()))?;
                Sender::Remote(client)
            }
        };
        let result = import(reader, &sender, total).await;
        if let Sender::Local(engine) = sender {
            engine.stop(std::time::Duration::from_secs(5)).await;
        }
        result
    })?;
    report(&summary, json)?;
    match summary.refused.len() {
        0 => Ok(()),
        n => Err(Failure::Negative(format!("{n} of {} commands refused", summary.lines))),
    }
}

async fn import(reader: Box<dyn BufRead>, sender: &Sender, total: u64) -> Result<Summary, Failure> {
    let bar = progress(total, "importing");
    let mut summary = Summary::default();
    for (number, line) in (1u64..).zip(reader.lines()) {
        let line = line?;
        bar.set_position(number);
        if line.trim().is_empty() {
            continue;
        }
        summary.lines += 1;
        let (command_id, outcome) = match parse(&line) {
            Ok(command) => (command.id.to_string(), sender.send(command).await?),
            Err((command_id, error)) => (command_id, Outcome::Refused(error)),
        };
        let kind = match outcome {
            Outcome::Imported => {
                summary.imported += 1;
                "imported"
            }
            Outcome::Duplicate => {
                summary.duplicates += 1;
                "duplicate"
            }
            Outcome::Refused(error) => {
                let code = error.code().as_str_name().to_owned();
                summary.refused.push(Refusal {
                    line: number,
                    command_id: command_id.clone(),
                    code,
                    message: error.message,
                });
                "refused"
            }
        };
        debug!(line = number, command_id, outcome = kind, "import line done");
    }
    bar.finish_and_clear();
    Ok(summary)
}

fn report(summary: &Summary, json: bool) -> Result<(), Failure> {
    if json {
        return print_json(summary);
    }
    let mut counts = table(&["commands", "imported", "duplicates", "refused"]);
    counts.add_row(vec![
        summary.lines.to_string(),
        summary.imported.to_string(),
        summary.duplicates.to_string(),
        summary.refused.len().to_string(),
    ]);
    emit(&counts)?;
    if !summary.refused.is_empty() {
        let mut refused = table(&["line", "command id", "code", "reason"]);
        for r in &summary.refused {
            refused.add_row(vec![r.line.to_string(), r.command_id.clone(), r.code.clone(), r.message.clone()]);
        }
        emit(&refused)?;
    }
    Ok(())
}
