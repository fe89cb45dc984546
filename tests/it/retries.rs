//! Retried command ids on hot tickets (issue 10): many concurrent senders, half of the sends
//! reusing an earlier command id (some still in flight), the service and its log dropped and
//! reopened mid-burst. Afterwards every stored decision re-runs to the stored events (`audit`)
//! and every command id has had one result.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use ticket_domain::testing::{beijing, command, open, text};
use ticket_domain::{ActorKind, Command, CommandBody, CommandId, Severity, TicketId, Tier};
use ticket_log::EventLog;
use ticket_log_sled::{SledConfig, SledLog};
use ticket_service::audit::audit;
use ticket_service::{Clock, CommandRequest, CommandService, ServiceConfig, ServiceError, SimulatedClock, Stamp};
use tokio::sync::watch;

use crate::durability::{Rng, seed};
use crate::shipped_policy;

/// The hot tickets every sender writes to.
pub(crate) const HOT: u64 = 3;

pub(crate) fn hot_ticket(n: u64) -> TicketId {
    TicketId::from_uuid(uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_00a0_0000 + u128::from(n)))
}

/// Half the sends repeat an earlier one (mostly a recent one: those are likely still in flight),
/// the others are a fresh random command with id `id`, which joins `sent`.
fn next_command(rng: &mut Rng, sent: &Mutex<Vec<Command>>, id: String, now: ticket_domain::Timestamp) -> Command {
    let mut sent = sent.lock().unwrap();
    if rng.next().is_multiple_of(2) && !sent.is_empty() {
        let i = (rng.next() % sent.len() as u64) as usize;
        let i = if rng.next().is_multiple_of(2) { sent.len() - 1 - (i % sent.len().min(8)) } else { i };
        return sent[i].clone();
    }
    let c = random_command(rng, id, now);
    sent.push(c.clone());
    c
}

/// A random lifecycle command on a random hot ticket, as a support tool or a customer sends it.
pub(crate) fn random_command(rng: &mut Rng, id: String, at: ticket_domain::Timestamp) -> Command {
    let (kind, actor, body) = match rng.next() % 13 {
        0..=2 => (ActorKind::Agent, "agent-li", CommandBody::RecordAgentResponse { message: text("looking") }),
        3..=4 => (ActorKind::Agent, "agent-li", CommandBody::RequestCustomerInfo { request: text("logs please") }),
        5..=7 => (ActorKind::Customer, "acme-admin", CommandBody::RecordCustomerReply { message: text("attached") }),
        8 => {
            let severity = [Severity::A, Severity::B, Severity::C][(rng.next() % 3) as usize];
            (ActorKind::Agent, "agent-li", CommandBody::SetSeverity { severity, reason: text("reassessed") })
        }
        9 => (
            ActorKind::Agent,
            "agent-li",
            CommandBody::Escalate { tier: Tier::new("tier-2").unwrap(), team: None, reason: text("hard") },
        ),
        10 => (ActorKind::Agent, "agent-li", CommandBody::Resolve { resolution: text("fixed") }),
        _ => (ActorKind::Customer, "acme-admin", CommandBody::Reopen { reason: text("still broken") }),
    };
    let mut c = command(kind, actor, at, body);
    c.id = CommandId::new(id).unwrap();
    c.ticket_id = hot_ticket(rng.next() % HOT);
    c
}

pub(crate) fn open_command(n: u64, at: ticket_domain::Timestamp) -> Command {
    let mut c = command(ActorKind::Agent, "agent-li", at, open("advanced", "technical", Severity::A));
    c.id = CommandId::new(format!("open-{n}")).unwrap();
    c.ticket_id = hot_ticket(n);
    c
}

/// What one send of a command id got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Events (position, event id) and whether the reply said duplicate.
    Events { duplicate: bool, events: Vec<(u64, String)> },
    /// Refused by the rules: the error's kind.
    Rejected(String),
    /// Any other error (conflict, storage, unavailable): the command may be retried.
    Failed(String),
    /// No answer: the sender or the service was killed while it waited.
    Lost,
}

#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) sent: Instant,
    pub(crate) answered: Instant,
    pub(crate) answer: Answer,
}

pub(crate) type Replies = Arc<Mutex<HashMap<String, Vec<Reply>>>>;

/// Every id has one result: each reply with events names exactly the stored events of the id;
/// once an id has been answered with events, every later send gets them too; and a refusal is
/// never given to a send made while the id was being (or had been) appended, that is after a
/// send that got events (unless a failure of the id in between let a retry go on its own).
///
/// `margin` is how much later a send must have been taken than another to count as later: the
/// instant a send is taken comes a little before it claims the id (over NATS, before a network
/// hop). Ids with a failed or lost send are not held to the last rule: a failure lets a waiting
/// retry go on its own.
pub(crate) fn assert_one_result_per_id<L: EventLog>(
    log: &L,
    replies: &HashMap<String, Vec<Reply>>,
    margin: Duration,
) -> (u64, u64) {
    let (mut appended, mut duplicates) = (0, 0);
    for (id, replies) in replies {
        let record = log.command(&CommandId::new(id.clone()).unwrap()).unwrap();
        let stored: Option<Vec<(u64, String)>> = record.map(|r| {
            let count = usize::try_from(r.last_position - r.first_position + 1).unwrap();
            log.read_from(r.first_position, count)
                .unwrap()
                .iter()
                .map(|e| (e.position, e.event_id.to_string()))
                .collect()
        });
        let with_events: Vec<&Reply> = replies.iter().filter(|r| matches!(r.answer, Answer::Events { .. })).collect();
        for r in &with_events {
            let Answer::Events { duplicate, events } = &r.answer else { unreachable!() };
            assert_eq!(
                Some(events),
                stored.as_ref(),
                "command {id}: a reply names events that are not its stored ones"
            );
            if *duplicate {
                duplicates += 1;
            } else {
                appended += 1;
            }
        }
        let originals = with_events.iter().filter(|r| matches!(r.answer, Answer::Events { duplicate: false, .. }));
        assert!(originals.count() <= 1, "command {id} was answered as appended twice: {replies:?}");
        let failed = replies.iter().any(|r| matches!(r.answer, Answer::Failed(_) | Answer::Lost));
        for r in replies {
            if !matches!(r.answer, Answer::Rejected(_)) {
                continue;
            }
            if let Some(done) = with_events.iter().find(|e| e.answered < r.sent) {
                panic!("command {id}: refused ({:?}) after it was answered with events ({:?}): {replies:?}", r, done);
            }
            if !failed && let Some(earlier) = with_events.iter().find(|e| e.sent + margin < r.sent) {
                panic!(
                    "command {id}: refused ({:?}) while an earlier send of it was appended ({:?}): {replies:?}",
                    r, earlier
                );
            }
        }
    }
    (appended, duplicates)
}

fn service(log: &SledLog, clock: &Arc<SimulatedClock>) -> CommandService<SledLog> {
    CommandService::with_clock(
        log.clone(),
        Arc::new(shipped_policy("regional-operator.toml")),
        Some(Arc::new(log.snapshots())),
        ServiceConfig { snapshot_every: 8, ..ServiceConfig::default() },
        clock.clone(),
    )
}

fn open_log(path: &Path) -> SledLog {
    SledLog::open(SledConfig::new(path)).unwrap()
}

const SENDERS: u64 = 8;
const SENDS: u64 = 100;
const KILLS: u64 = 3;

fn answer_of(result: Result<ticket_service::CommandResult, ServiceError>) -> Answer {
    match result {
        Ok(r) => Answer::Events {
            duplicate: r.duplicate,
            events: r.events.iter().map(|e| (e.position, e.event_id.to_string())).collect(),
        },
        Err(ServiceError::Rejected(e)) => Answer::Rejected(format!("{:?}", e.kind())),
        Err(e) => Answer::Failed(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_ids_on_hot_tickets_never_corrupt_a_ticket_and_have_one_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let seed = seed();
    eprintln!("retry stress seed {seed} (set CRASH_SEED to repeat)");
    let clock = Arc::new(SimulatedClock::new(beijing(2026, 11, 23, 9, 0)));
    let first = service(&open_log(&path), &clock);
    for n in 0..HOT {
        first.execute(open_command(n, clock.now()).into()).await.unwrap();
    }
    let (slot, _) = watch::channel(Some(first));
    let slot = Arc::new(slot);
    let sent: Arc<Mutex<Vec<Command>>> = Arc::default();
    let replies: Replies = Arc::default();
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (slot, sent, replies, clock, progress) =
            (slot.clone(), sent.clone(), replies.clone(), clock.clone(), progress.clone());
        senders.push(tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_mul(sender + 7) | 1);
            let mut current = slot.subscribe();
            for n in 0..SENDS {
                let service = current.wait_for(Option::is_some).await.unwrap().clone().unwrap();
                let command = next_command(&mut rng, &sent, format!("s{sender}-{n}"), clock.now());
                clock.advance(TimeDelta::seconds((rng.next() % 900) as i64));
                let id = command.id.to_string();
                let request =
                    CommandRequest { command, correlation_id: None, causation_id: None, stamp: Stamp::ServiceClock };
                // Sent: when execute is first polled, which is when it claims the id.
                let sent_at = std::sync::OnceLock::new();
                let execute = service.execute(request);
                let mut execute = std::pin::pin!(execute);
                let answer = tokio::select! {
                    result = std::future::poll_fn(|cx| {
                        sent_at.get_or_init(Instant::now);
                        execute.as_mut().poll(cx)
                    }) => answer_of(result),
                    _ = current.changed() => Answer::Lost,
                };
                let Some(&sent_at) = sent_at.get() else { continue };
                let reply = Reply { sent: sent_at, answered: Instant::now(), answer };
                replies.lock().unwrap().entry(id).or_default().push(reply);
                progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }

    // The kills: at random moments of the burst, every sender's wait is abandoned, the service
    // and the log are dropped and the log is reopened from the same directory.
    let mut rng = Rng(seed);
    let total = SENDERS * SENDS;
    let mut moments: Vec<u64> = (0..KILLS).map(|_| rng.next() % total).collect();
    moments.sort_unstable();
    for moment in moments {
        let deadline = Instant::now() + Duration::from_secs(60);
        while progress.load(std::sync::atomic::Ordering::Relaxed) < moment {
            assert!(
                Instant::now() < deadline,
                "the burst stalled at {}",
                progress.load(std::sync::atomic::Ordering::Relaxed)
            );
            if senders.iter().all(|s| s.is_finished()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(slot.send_replace(None));
        let path = path.clone();
        let log = tokio::task::spawn_blocking(move || open_log(&path)).await.unwrap();
        slot.send_replace(Some(service(&log, &clock)));
    }
    for s in senders {
        tokio::time::timeout(Duration::from_secs(60), s).await.expect("a sender did not finish").unwrap();
    }
    drop(slot.send_replace(None));

    let log = tokio::task::spawn_blocking(move || open_log(&path)).await.unwrap();
    let report = audit(&log, &[shipped_policy("regional-operator.toml")], |_, _, _| {}).unwrap();
    assert!(report.is_clean(), "audit: {:#?}", report.problems);
    assert_eq!(report.replayed, report.commands);
    let replies = replies.lock().unwrap().clone();
    // A send is taken when execute is first polled; a thread can be preempted before the claim.
    let (appended, duplicates) = assert_one_result_per_id(&log, &replies, Duration::from_millis(2));
    eprintln!(
        "{} ids, {appended} appended, {duplicates} duplicate answers, {} events on {HOT} tickets",
        replies.len(),
        log.head()
    );
    assert!(appended > 50, "only {appended} commands were appended");
    assert!(duplicates > 50, "only {duplicates} duplicate answers: the retries did not meet");
}

/// What the typed client got for one send.
fn answer_of_client(result: Result<ticket_client::Accepted, ticket_client::ClientError>) -> Answer {
    use ticket_client::ClientErrorKind;
    use ticket_proto::pb::ErrorCode;
    let error = match result {
        Ok(accepted) => {
            return Answer::Events {
                duplicate: accepted.duplicate,
                events: accepted.events.iter().map(|e| (e.position, e.event_id.to_string())).collect(),
            };
        }
        Err(error) => error,
    };
    match error.kind() {
        ClientErrorKind::Refused(
            ErrorCode::VersionConflict | ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::Timeout,
        ) => Answer::Failed(error.to_string()),
        ClientErrorKind::Refused(
            ErrorCode::MalformedRequest
            | ErrorCode::PayloadTooLarge
            | ErrorCode::UnknownEndpoint
            | ErrorCode::PermissionDenied
            | ErrorCode::Unspecified,
        ) => panic!("the test sent a bad request: {error}"),
        ClientErrorKind::Refused(ErrorCode::TicketQuarantined) => panic!("a ticket's history does not fit: {error}"),
        ClientErrorKind::Refused(
            code @ (ErrorCode::InvalidCommand
            | ErrorCode::TicketNotFound
            | ErrorCode::TicketAlreadyExists
            | ErrorCode::UnknownPlan
            | ErrorCode::UnknownCategory
            | ErrorCode::SeverityNotInContract
            | ErrorCode::SeverityNotAllowedForCategory
            | ErrorCode::TicketResolved
            | ErrorCode::InvalidTransition
            | ErrorCode::TimerMoot
            | ErrorCode::TimerNotDue),
        ) => Answer::Rejected(code.as_str_name().to_owned()),
        // Killed, restarting, or no responder yet: the client retries later.
        ClientErrorKind::Timeout | ClientErrorKind::Unavailable | ClientErrorKind::Transport => Answer::Lost,
        ClientErrorKind::Undecodable | ClientErrorKind::Connect => panic!("{error}"),
    }
}

/// A client that sends each command once (the test's senders retry on their own) and waits
/// up to 5 s for its answer.
async fn connect(url: &str) -> ticket_client::Client {
    let config = ticket_client::ClientConfig { timeout: Duration::from_secs(5), retries: 0, ..Default::default() };
    ticket_client::Client::with_config(async_nats::connect(url).await.unwrap(), config)
}

/// The same workload as requests to a real `ticketd serve` over a real nats-server, with ticketd
/// killed by SIGKILL and restarted mid-burst; then `ticketctl audit verify` on its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_ids_over_nats_survive_a_kill_of_ticketd_and_have_one_result() {
    let server = ticket_testkit::NatsServer::start().unwrap();
    let url = server.url();
    let data = tempfile::tempdir().unwrap();
    let seed = seed();
    eprintln!("nats retry stress seed {seed} (set CRASH_SEED to repeat)");
    let mut daemon = crate::daemon::serve_on(&url, data.path());
    let client = connect(&url).await;
    let now = ticket_log::now();
    for n in 0..HOT {
        // Sent as a client sends it: ticketd stamps its clock.
        let answer = answer_of_client(client.execute(&open_command(n, now), true).await);
        assert!(matches!(answer, Answer::Events { duplicate: false, .. }));
    }

    let sent: Arc<Mutex<Vec<Command>>> = Arc::default();
    let replies: Replies = Arc::default();
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    const NATS_SENDS: u64 = 60;
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (sent, replies, progress) = (sent.clone(), replies.clone(), progress.clone());
        let client = connect(&url).await;
        senders.push(tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_mul(sender + 11) | 1);
            for n in 0..NATS_SENDS {
                let command = next_command(&mut rng, &sent, format!("n{sender}-{n}"), ticket_log::now());
                let sent_at = Instant::now();
                let answer = answer_of_client(client.execute(&command, true).await);
                if answer == Answer::Lost {
                    // Not a fixed wait for something: a client's back-off while ticketd restarts.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let reply = Reply { sent: sent_at, answered: Instant::now(), answer };
                replies.lock().unwrap().entry(command.id.to_string()).or_default().push(reply);
                progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }

    // kill -9 of ticketd at a random moment of the burst, then a restart on the same data.
    let moment = SENDERS * NATS_SENDS / 4 + Rng(seed).next() % (SENDERS * NATS_SENDS / 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.load(std::sync::atomic::Ordering::Relaxed) < moment && !senders.iter().all(|s| s.is_finished()) {
        assert!(Instant::now() < deadline, "the burst stalled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    daemon.kill();
    let dir = data.path().to_owned();
    daemon = tokio::task::spawn_blocking(move || crate::daemon::serve_on(&url, &dir)).await.unwrap();
    for s in senders {
        tokio::time::timeout(Duration::from_secs(60), s).await.expect("a sender did not finish").unwrap();
    }
    let (status, lines) = daemon.terminate();
    assert!(status.success(), "ticketd exited with {status}:\n{}", lines.join("\n"));

    let policy = crate::policy_path("regional-operator.toml");
    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_it-ticketctl"))
        .current_dir(data.path())
        .env_remove("TICKETD_POLICY")
        .arg("--data-dir")
        .arg(data.path())
        .args(["audit", "verify", "--json", "--policy", policy.to_str().unwrap()])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&audit.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&audit.stderr)));
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["replayed"], report["commands"], "{report}");

    let log = open_log(&data.path().join("log"));
    let replies = replies.lock().unwrap().clone();
    // Over NATS, sends of one id travel on different connections: one taken earlier may
    // arrive later.
    let (appended, duplicates) = assert_one_result_per_id(&log, &replies, Duration::from_millis(250));
    let lost = replies.values().flatten().filter(|r| r.answer == Answer::Lost).count();
    eprintln!(
        "{} ids, {appended} appended, {duplicates} duplicate answers, {lost} sends lost to the kill, {} events",
        replies.len(),
        log.head()
    );
    assert!(lost > 0, "the kill came after the burst");
    assert!(appended > 30, "only {appended} commands were appended");
    assert!(duplicates > 30, "only {duplicates} duplicate answers");
}
