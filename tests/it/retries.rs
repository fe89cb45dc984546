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

const CLAIM_MARGIN: Duration = Duration::from_millis(2);

pub(crate) type Replies = Arc<Mutex<HashMap<String, Vec<Reply>>>>;

/// Every id has one result: each reply with events names exactly the stored events of the id;
/// once an id has been answered with events, every later send gets them too; and a refusal is
/// never given to a send made while the id was being (or had been) appended, that is after a
/// send that got events (unless a failure of the id in between let a retry go on its own).
pub(crate) fn assert_one_result_per_id<L: EventLog>(log: &L, replies: &HashMap<String, Vec<Reply>>) -> (u64, u64) {
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
        let failed = replies.iter().any(|r| matches!(r.answer, Answer::Failed(_)));
        for r in replies {
            if !matches!(r.answer, Answer::Rejected(_)) {
                continue;
            }
            if let Some(done) = with_events.iter().find(|e| e.answered < r.sent) {
                panic!("command {id}: refused ({:?}) after it was answered with events ({:?}): {replies:?}", r, done);
            }
            // The margin: the instant a send is taken just before it claims the id, and a thread
            // can be preempted in between.
            if !failed && let Some(earlier) = with_events.iter().find(|e| e.sent + CLAIM_MARGIN < r.sent) {
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
                let command = {
                    let mut sent = sent.lock().unwrap();
                    if rng.next().is_multiple_of(2) && !sent.is_empty() {
                        let i = (rng.next() % sent.len() as u64) as usize;
                        // Mostly recent ids: those are the ones likely still in flight.
                        let i = if rng.next().is_multiple_of(2) { sent.len() - 1 - (i % sent.len().min(8)) } else { i };
                        sent[i].clone()
                    } else {
                        let c = random_command(&mut rng, format!("s{sender}-{n}"), clock.now());
                        sent.push(c.clone());
                        c
                    }
                };
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
    let (appended, duplicates) = assert_one_result_per_id(&log, &replies);
    eprintln!(
        "{} ids, {appended} appended, {duplicates} duplicate answers, {} events on {HOT} tickets",
        replies.len(),
        log.head()
    );
    assert!(appended > 50, "only {appended} commands were appended");
    assert!(duplicates > 50, "only {duplicates} duplicate answers: the retries did not meet");
}
