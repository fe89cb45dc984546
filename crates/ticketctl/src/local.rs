//! Local mode: commands that read a data directory.

use std::io::Write;
use std::path::Path;

use chrono::DateTime;
use prost::Message;
use ticket_domain::{Policy, TicketId, Timestamp};
use ticket_engine::DataDir;
use ticket_log::EventLog;
use ticket_log_sled::SledLog;
use ticket_proto::pb;
use ticket_service::audit::{AuditPhase, audit_on};
use ticket_service::replay::history as read_history;

use crate::output::{emit, print_json, progress, table};
use crate::{ExportFormat, Failure};
use ticket_projections::describe::{event as describe, instant};

pub(crate) fn open(data_dir: &Path) -> Result<SledLog, Failure> {
    let data = DataDir::new(data_dir);
    if !data.has_log() {
        return Err(Failure::Usage(format!("no ticketd log in {} (use --data-dir)", data_dir.display())));
    }
    Ok(data.open_log()?)
}

pub(crate) fn ticket_id(text: &str) -> Result<TicketId, Failure> {
    TicketId::parse(text).map_err(|e| Failure::Usage(e.to_string()))
}

/// A global position (digits) or an RFC 3339 instant.
pub(crate) enum Moment {
    Position(u64),
    Instant(Timestamp),
}

pub(crate) fn moment(text: &str) -> Result<Moment, Failure> {
    if let Ok(p) = text.parse::<u64>() {
        return Ok(Moment::Position(p));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| Moment::Instant(t.to_utc()))
        .map_err(|_| Failure::Usage(format!("{text:?} is neither a position nor an RFC 3339 instant")))
}

pub fn history(data_dir: &Path, ticket: &str, json: bool) -> Result<(), Failure> {
    let id = ticket_id(ticket)?;
    let log = open(data_dir)?;
    let events = read_history(&log, id)?;
    if events.is_empty() {
        return Err(Failure::Negative(format!("ticket {id} not found")));
    }
    if json {
        let envelopes: Vec<pb::EventEnvelope> = events.iter().map(pb::EventEnvelope::from).collect();
        return print_json(&envelopes);
    }
    let mut t = table(&["pos", "ver", "occurred (UTC)", "event", "actor", "command", "details"]);
    for e in &events {
        t.add_row(vec![
            e.position.to_string(),
            e.version.to_string(),
            instant(&e.event.occurred_at),
            e.event.kind.name().to_owned(),
            e.actor.id.to_string(),
            e.command_id.to_string(),
            if e.imported {
                format!("[imported {}] {}", instant(&e.recorded_at), describe(&e.event.kind))
            } else {
                describe(&e.event.kind)
            },
        ]);
    }
    emit(&t)?;
    Ok(())
}

/// `audit verify` on a data directory: its log, or on a cluster node's directory
/// (`partitions/<p>/log`, ADR 0015) each partition's log in turn. Fails if any does not verify.
pub fn audit_verify(data_dir: &Path, policies: &[Policy], json: bool) -> Result<(), Failure> {
    let partitions = cluster_partitions(data_dir);
    if DataDir::new(data_dir).has_log() || partitions.is_empty() {
        let log = open(data_dir)?;
        let (ok, first, report) = audit_log(&log, policies, json)?;
        if json {
            print_json(&report)?;
        }
        return verdict(ok, first, None);
    }
    let mut audits = PartitionAudits::default();
    for (partition, dir) in &partitions {
        if !json {
            emit(&format!("partition {partition} ({})", dir.display()))?;
        }
        let log = open(dir)?;
        let (ok, first, report) = audit_log(&log, policies, json)?;
        audits.add(*partition, ok, first, report);
    }
    audits.finish(json)
}

/// The audits of a cluster's partitions: a report each, and the first problem found.
#[derive(Default)]
struct PartitionAudits {
    reports: Vec<serde_json::Value>,
    /// The first partition that did not verify, and its first problem's position.
    failed: Option<(u64, u64)>,
}

impl PartitionAudits {
    /// Counts in partition `partition`'s audit (`report` is given its number).
    fn add(&mut self, partition: u64, ok: bool, first: u64, mut report: serde_json::Value) {
        if !ok && self.failed.is_none() {
            self.failed = Some((partition, first));
        }
        if let Some(fields) = report.as_object_mut() {
            fields.insert("partition".into(), serde_json::json!(partition));
        }
        self.reports.push(report);
    }

    /// Prints the reports with `json`; fails if any partition did not verify.
    fn finish(self, json: bool) -> Result<(), Failure> {
        if json {
            print_json(&serde_json::json!({ "ok": self.failed.is_none(), "partitions": self.reports }))?;
        }
        match self.failed {
            None => Ok(()),
            Some((partition, first)) => verdict(false, first, Some(partition)),
        }
    }
}

/// `audit verify` of a whole cluster (`--nats-url`, ADR 0015): every partition's log read from
/// the cluster's log stream (the source of truth) into a log of its own in a temporary
/// directory (each group checked to continue the hash chain), then verified as one log is.
/// Fails if any does not verify.
/// (A command-line tool's single-threaded runtime: the verification blocks it, as nothing else
/// runs there.)
pub async fn audit_cluster(
    client: &async_nats::Client,
    partitions: u64,
    policies: &[Policy],
    json: bool,
) -> Result<(), Failure> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = ticket_cluster::LogStream::open(js, ticket_cluster::LogStreamConfig::default())
        .await
        .map_err(|e| Failure::Data(anyhow::anyhow!("the cluster's log stream: {e}")))?;
    let partitions = ticket_domain::Partitions::new(partitions).map_err(|e| Failure::Data(e.into()))?;
    // The count the nodes serve (from the cluster's status) must be the one the stream
    // records: an audit of fewer partitions than the stream has would miss some.
    if let Some(recorded) = stream.recorded_partitions().await.map_err(|e| Failure::Data(e.into()))?
        && recorded != partitions.count()
    {
        return Err(Failure::Data(anyhow::anyhow!(
            "the cluster's nodes serve {} partitions, and its log stream records {recorded}: a node configured otherwise than the cluster answered the status (check [cluster] partitions on every node)",
            partitions.count()
        )));
    }
    let scratch = tempfile::tempdir()?;
    let mut audits = PartitionAudits::default();
    for partition in partitions.all() {
        let index = u64::from(partition.index());
        let upto = stream.last(partition).await.map_err(|e| Failure::Data(e.into()))?;
        if !json {
            emit(&format!("partition {partition} (the log stream up to sequence {upto})"))?;
        }
        let log = SledLog::open(ticket_log_sled::SledConfig::new(scratch.path().join(partition.to_string())))?;
        if let Err(e) = rebuild(&log, &stream, partition, upto).await {
            // The stream's groups do not make one chained log: the partition does not verify.
            if !json {
                emit(&format!("  the stream's groups do not chain: {e}"))?;
            }
            audits.add(index, false, log.head() + 1, serde_json::json!({ "ok": false, "stream": e.to_string() }));
            continue;
        }
        let (ok, first, mut report) = audit_log(&log, policies, json)?;
        if let Some(fields) = report.as_object_mut() {
            fields.insert("streamSequence".into(), serde_json::json!(upto));
        }
        audits.add(index, ok, first, report);
    }
    audits.finish(json)
}

/// Writes the partition's groups in the stream up to sequence `upto` into the empty `log`,
/// each of which must start right after the one before (a group that repeats or skips
/// positions means two owners appended: the fence failed) and continue the hash chain.
async fn rebuild(
    log: &SledLog,
    stream: &ticket_cluster::LogStream,
    partition: ticket_domain::Partition,
    upto: u64,
) -> anyhow::Result<()> {
    use ticket_proto::pb::partition_entry::Kind;
    let mut entries = stream.entries(partition, 1, upto).await?;
    while let Some((sequence, entry)) = entries.next().await? {
        let Some(Kind::Group(group)) = entry.kind else { continue };
        let next = log.head() + 1;
        anyhow::ensure!(
            group.first_position == next,
            "the group at stream sequence {sequence} starts at position {}, not {next}",
            group.first_position
        );
        let group = ticket_log::ReplicaGroup {
            first_position: group.first_position,
            records: group.records,
            commands: group.commands,
        };
        log.apply_replicated(group)
            .await
            .map_err(|e| anyhow::anyhow!("the group at stream sequence {sequence} does not continue the log: {e}"))?;
    }
    Ok(())
}

/// A cluster node's partition directories that hold a log, by partition number.
fn cluster_partitions(data_dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("partitions")) else { return Vec::new() };
    let mut found: Vec<(u64, std::path::PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let partition = e.file_name().to_str()?.parse::<u64>().ok()?;
            DataDir::new(e.path()).has_log().then(|| (partition, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn verdict(ok: bool, first: u64, partition: Option<u64>) -> Result<(), Failure> {
    if ok {
        return Ok(());
    }
    Err(Failure::Negative(match partition {
        Some(partition) => format!("audit failed; partition {partition}, first problem at position {first}"),
        None => format!("audit failed; first problem at position {first}"),
    }))
}

/// Verifies one log (its chain, then its events and commands re-run); prints its tables unless
/// `json`. Returns whether it verified, its first problem's position, and its JSON report.
fn audit_log(log: &SledLog, policies: &[Policy], json: bool) -> Result<(bool, u64, serde_json::Value), Failure> {
    let head = log.head();

    let bar = progress(head, "chain");
    let chain = log.verify_chain(|done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    let events_bar = progress(head, "events");
    let commands_bar = progress(head, "commands");
    // A test clock's instants are not the appends' wall clock: they are not compared.
    let clock = log.clock_kind()?.unwrap_or(ticket_log::ClockKind::Wall);
    let report = audit_on(log, policies, clock, |phase, done, _| match phase {
        AuditPhase::Events => events_bar.set_position(done),
        AuditPhase::Commands => commands_bar.set_position(done),
    })?;
    events_bar.finish_and_clear();
    commands_bar.finish_and_clear();

    let ok = chain.broken.is_none() && report.is_clean();
    let problems: Vec<serde_json::Value> = report
        .problems
        .iter()
        .map(|p| {
            serde_json::json!({
                "position": p.position,
                "ticket_id": p.ticket_id.map(|t| t.to_string()),
                "problem": p.problem,
            })
        })
        .collect();
    let json_report = serde_json::json!({
        "ok": ok,
        "head": head,
        "chain": {
            "events": chain.events,
            "broken_at": chain.broken.as_ref().map(|(p, _)| p),
            "problem": chain.broken.as_ref().map(|(_, why)| why),
        },
        "events": report.events,
        "tickets": report.tickets,
        "commands": report.commands,
        "replayed": report.replayed,
        "not_replayed": report.skipped,
        "quarantined_tickets": report.quarantined,
        "problems": problems,
    });
    if !json {
        emit(&audit_table(&chain, &report, head))?;
        if !report.problems.is_empty() {
            let mut p = table(&["position", "ticket", "problem"]);
            for problem in &report.problems {
                p.add_row(vec![
                    problem.position.to_string(),
                    problem.ticket_id.map(|t| t.to_string()).unwrap_or_default(),
                    problem.problem.clone(),
                ]);
            }
            emit(&p)?;
        }
    }
    let first =
        chain.broken.map(|(p, _)| p).into_iter().chain(report.problems.first().map(|p| p.position)).min().unwrap_or(0);
    Ok((ok, first, json_report))
}

pub fn export(
    data_dir: &Path,
    format: ExportFormat,
    from: Option<&str>,
    to: Option<&str>,
    output: Option<&Path>,
) -> Result<(), Failure> {
    let log = open(data_dir)?;
    let head = log.head();
    let (from, to) = (from.map(moment).transpose()?, to.map(moment).transpose()?);
    let first = match from {
        Some(Moment::Position(p)) => p.max(1),
        Some(Moment::Instant(_)) | None => 1,
    };
    let last = match to {
        Some(Moment::Position(p)) => p.min(head),
        Some(Moment::Instant(_)) | None => head,
    };
    let after = |t: &Timestamp| match &from {
        Some(Moment::Instant(i)) => t >= i,
        Some(Moment::Position(_)) | None => true,
    };
    let before = |t: &Timestamp| match &to {
        Some(Moment::Instant(i)) => t <= i,
        Some(Moment::Position(_)) | None => true,
    };

    let mut out: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let bar = progress(last.saturating_sub(first) + 1, "export");
    let mut next = first;
    let mut written = 0u64;
    while next <= last {
        let batch = log.read_from(next, usize::try_from((last - next + 1).min(4096)).unwrap_or(4096))?;
        let Some(end) = batch.last().map(|e| e.position) else { break };
        for e in batch.iter().filter(|e| after(&e.event.occurred_at) && before(&e.event.occurred_at)) {
            let envelope = pb::EventEnvelope::from(e);
            match format {
                ExportFormat::Jsonl => {
                    serde_json::to_writer(&mut out, &envelope)?;
                    out.write_all(b"\n")?;
                }
                ExportFormat::Protobuf => out.write_all(&envelope.encode_length_delimited_to_vec())?,
            }
            written += 1;
        }
        bar.set_position(end + 1 - first);
        next = end + 1;
    }
    out.flush()?;
    bar.finish_and_clear();
    eprintln!("exported {written} events (positions {first}..={last})");
    Ok(())
}

/// The audit's results as a table: the hash chain, then what `audit` checked.
pub(crate) fn audit_table(
    chain: &ticket_log_sled::ChainReport,
    report: &ticket_service::audit::AuditReport,
    head: u64,
) -> comfy_table::Table {
    let mut t = table(&["check", "result"]);
    t.add_row(vec![
        "hash chain".to_owned(),
        match &chain.broken {
            None => format!("intact ({} records)", chain.events),
            Some((p, why)) => format!("BROKEN at position {p}: {why}"),
        },
    ]);
    t.add_row(vec!["events".to_owned(), format!("{} (positions gapless: {})", report.events, report.events == head)]);
    t.add_row(vec!["tickets".to_owned(), report.tickets.to_string()]);
    t.add_row(vec!["commands".to_owned(), report.commands.to_string()]);
    t.add_row(vec!["decisions re-run and matched".to_owned(), report.replayed.to_string()]);
    for (policy, n) in &report.skipped {
        t.add_row(vec!["not re-run (no --policy for it)".to_owned(), format!("{n} under {policy}")]);
    }
    if report.quarantined > 0 {
        t.add_row(vec!["tickets quarantined (history does not fit)".to_owned(), report.quarantined.to_string()]);
    }
    t.add_row(vec!["problems".to_owned(), report.problems.len().to_string()]);
    t
}
