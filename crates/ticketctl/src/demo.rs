//! `ticketctl demo`: a guided tour of the engine on a simulated clock. It runs the whole engine
//! in this process (a sled log in a temporary directory, the command service, the timer and the
//! projector) and advances the clock instantly: opened tickets of each plan, severity and
//! category (with refused entitlements), the board, a breach with its warnings and escalations, a
//! no-response downgrade, a manual escalation, a resolution, a ticket's audit timeline, the board
//! as it was, SLA compliance, and the audit of the log.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use ticket_domain::{
    Actor, ActorId, ActorKind, CategoryId, Command, CommandBody, CommandId, CustomerId, OpenTicket, PlanId, Policy,
    RecordedEvent, Severity, Team, Text, TicketId, Tier, Timestamp,
};
use ticket_engine::{DataDir, Engine, EngineClock, EngineConfig};
use ticket_log::EventLog;
use ticket_log_sled::SledLog;
use ticket_projections::describe::event as describe;
use ticket_projections::{At, Period, Projector, ReadModels, TicketDetail};
use ticket_proto::pb;
use ticket_service::{Clock, CommandRequest, CommandResult, CommandService, ServiceError, SimulatedClock, Stamp};
use ticket_timer::TimerConfig;

use crate::Failure;
use crate::output::{emit, table};

const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
const SETTLE: Duration = Duration::from_secs(60);

fn beijing(d: u32, h: u32, m: u32) -> Timestamp {
    TZ.with_ymd_and_hms(2026, 11, d, h, m, 0)
        .single()
        .map_or_else(Timestamp::default, |t| t.with_timezone(&chrono::Utc))
}

fn local(t: &Timestamp) -> String {
    t.with_timezone(&TZ).format("%a %m-%d %H:%M").to_string()
}

fn text(s: &str) -> Result<Text, Failure> {
    Text::new("text", s).map_err(|e| Failure::Data(e.into()))
}

fn failure(e: impl std::fmt::Display) -> Failure {
    Failure::Data(anyhow::anyhow!("{e}"))
}

struct Tour {
    clock: Arc<SimulatedClock>,
    engine: Engine,
    service: CommandService<SledLog>,
    projector: Projector<SledLog>,
    policy: Arc<Policy>,
    names: Vec<(TicketId, String)>,
    step: u32,
    issued: u64,
}

impl Tour {
    fn log(&self) -> &SledLog {
        self.service.log()
    }

    fn name(&self, id: TicketId) -> String {
        self.names.iter().find(|(t, _)| *t == id).map_or_else(|| id.to_string(), |(_, n)| n.clone())
    }

    fn heading(&mut self, title: &str) -> Result<(), Failure> {
        self.step += 1;
        let now = self.clock.now();
        emit(&format!("\n== Step {}: {title}   [simulated clock: {} Beijing]", self.step, local(&now)))
    }

    async fn issue(
        &mut self,
        ticket: TicketId,
        actor: (ActorKind, &str),
        body: CommandBody,
    ) -> Result<Result<CommandResult, ServiceError>, Failure> {
        self.issued += 1;
        let command = Command {
            id: CommandId::new(format!("demo-{}", self.issued)).map_err(failure)?,
            ticket_id: ticket,
            actor: Actor { kind: actor.0, id: ActorId::new(actor.1).map_err(failure)? },
            issued_at: self.clock.now(),
            body,
        };
        let request = CommandRequest { command, correlation_id: None, causation_id: None, stamp: Stamp::ServiceClock };
        let result = self.service.execute(request).await;
        if let Ok(r) = &result {
            self.projector.wait_for(r.last_position(), SETTLE).await;
        }
        Ok(result)
    }

    /// Moves the clock to `until` through every firing on the way; returns what was recorded.
    async fn advance(&self, until: Timestamp) -> Result<Vec<RecordedEvent>, Failure> {
        let from = self.log().head();
        self.engine
            .timer()
            .ok_or_else(|| failure("the demo's engine runs no timer"))?
            .step_to(&self.clock, until, || self.log().head(), SETTLE)
            .await
            .ok_or_else(|| failure("the timer did not settle"))?;
        let head = self.log().head();
        self.projector.wait_for(head, SETTLE).await;
        if head <= from {
            return Ok(Vec::new());
        }
        Ok(self.log().read_from(from + 1, (head - from) as usize)?)
    }

    fn events_table(&self, events: &[RecordedEvent]) -> comfy_table::Table {
        let mut t = table(&["when (Beijing)", "ticket", "event", "by", "details"]);
        for e in events {
            t.add_row(vec![
                local(&e.event.occurred_at),
                self.name(e.event.ticket_id),
                e.event.kind.name().to_owned(),
                e.actor.id.to_string(),
                describe(&e.event.kind),
            ]);
        }
        t
    }

    fn board(&self, models: Option<&ReadModels>, now: Timestamp) -> comfy_table::Table {
        let entries = match models {
            Some(m) => m.board.model().entries(20),
            None => self.projector.board.read().model().entries(20),
        };
        crate::views::board_table(&entries, now, &|id| self.name(id), &local)
    }
}

/// Runs the tour with the policy file, or without one the embedded default policy.
pub fn run(policy_file: Option<&Path>, keep: Option<&Path>) -> Result<(), Failure> {
    let policy = Arc::new(crate::load_policy(policy_file)?);
    let temp = tempfile::tempdir()?;
    let dir = keep.unwrap_or(temp.path());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(tour(policy, dir))
}

async fn tour(policy: Arc<Policy>, dir: &Path) -> Result<(), Failure> {
    let data = DataDir::new(dir);
    let log = data.open_log()?;
    if log.head() > 0 {
        return Err(Failure::Usage(format!(
            "{} already holds a log; the demo needs an empty directory",
            dir.display()
        )));
    }
    let clock = Arc::new(SimulatedClock::new(beijing(21, 2, 55)));
    let timer = TimerConfig::new(ActorId::new("ticket-timer").map_err(failure)?);
    let config = EngineConfig {
        clock: EngineClock::Simulated(clock.clone()),
        timer: Some(timer),
        ..EngineConfig::new(data, policy.clone())
    };
    let engine = Engine::start_on(log, config).await.map_err(failure)?;
    let service = engine.service().clone();
    let projector = engine.views().cloned().ok_or_else(|| failure("the demo's engine runs no projector"))?;
    let mut tour = Tour { clock, engine, service, projector, policy, names: Vec::new(), step: 0, issued: 0 };

    emit(&format!(
        "ticketd demo: the whole engine in this process on a simulated clock, with policy {} and a log in {}.\n\
         The clock starts on Saturday 2026-11-21 at 02:55 in Beijing and only moves when the tour moves it.",
        tour.policy.version(),
        dir.display()
    ))?;

    // Step 1: tickets of each plan, severity and category.
    tour.clock.advance_to(beijing(21, 3, 0));
    tour.heading("support tools open tickets; the rules check each contract")?;
    let asks: [(&str, &str, &str, Severity, &str); 7] = [
        ("acme", "advanced", "technical", Severity::A, "mail is down for everyone"),
        ("globex", "standard", "technical", Severity::A, "calendar sync is broken"),
        ("globex", "standard", "technical", Severity::B, "calendar sync is broken"),
        ("initech", "advanced", "billing", Severity::A, "invoice shows the wrong VAT"),
        ("initech", "advanced", "billing", Severity::B, "invoice shows the wrong VAT"),
        ("umbrella", "advanced", "technical", Severity::A, "shared mailbox unreachable"),
        ("hooli", "standard", "subscription", Severity::C, "add twenty seats"),
    ];
    let mut opened = Vec::new();
    let mut t = table(&["customer", "plan", "category", "asked", "result"]);
    for (customer, plan, category, severity, title) in asks {
        let ticket = TicketId::from_uuid(uuid::Uuid::now_v7());
        let body = CommandBody::Open(OpenTicket {
            customer: CustomerId::new(customer).map_err(failure)?,
            plan: PlanId::new(plan).map_err(failure)?,
            category: CategoryId::new(category).map_err(failure)?,
            title: text(title)?,
            description: text("reported by phone")?,
            severity,
        });
        let result = match tour.issue(ticket, (ActorKind::Agent, "agent-li"), body).await? {
            Ok(r) => {
                let name = format!("{customer}-{}", severity.to_string().to_lowercase());
                tour.names.push((ticket, name.clone()));
                opened.push(ticket);
                let due = r
                    .events
                    .iter()
                    .flat_map(|e| e.event.kind.clocks())
                    .find_map(|c| c.plan.as_ref().and_then(|p| p.due_at));
                format!("opened as {name}; first response due {}", due.map(|d| local(&d)).unwrap_or_default())
            }
            Err(ServiceError::Rejected(e)) => {
                let code = pb::ErrorCode::try_from(pb::Error::from(&e).code).map_or("UNKNOWN", |c| c.as_str_name());
                format!("REFUSED {code}: {e}")
            }
            Err(e) => return Err(failure(e)),
        };
        t.add_row(vec![customer.to_owned(), plan.to_owned(), category.to_owned(), severity.to_string(), result]);
    }
    emit(&t)?;
    let [acme, globex, initech, umbrella, _hooli] = opened[..] else {
        return Err(failure("the demo's tickets were not all opened: check the policy file"));
    };

    tour.heading("the SLA board: open tickets by nearest due instant")?;
    let now = tour.clock.now();
    emit(&tour.board(None, now))?;

    tour.heading("agents work: umbrella is answered and asked for logs; nobody answers acme")?;
    tour.advance(beijing(21, 3, 10)).await?;
    tour.issue(
        umbrella,
        (ActorKind::Agent, "agent-li"),
        CommandBody::RecordAgentResponse { message: text("looking into it")? },
    )
    .await?
    .map_err(failure)?;
    tour.advance(beijing(21, 3, 12)).await?;
    tour.issue(
        umbrella,
        (ActorKind::Agent, "agent-li"),
        CommandBody::RequestCustomerInfo { request: text("please send the server logs")? },
    )
    .await?
    .map_err(failure)?;
    let events = tour.log().read_stream(umbrella, 2)?;
    emit(&tour.events_table(&events))?;

    tour.heading("an hour passes: acme's warnings, escalations and breach fire on time")?;
    let fired = tour.advance(beijing(21, 4, 0)).await?;
    emit(&tour.events_table(&fired))?;
    let now = tour.clock.now();
    emit(&tour.board(None, now))?;

    tour.heading("umbrella never sends the logs: after its no-response window it is downgraded")?;
    let fired = tour.advance(beijing(22, 3, 12)).await?;
    let downgrades: Vec<RecordedEvent> =
        fired.into_iter().filter(|e| e.event.ticket_id == umbrella || e.event.kind.name() == "sla_breached").collect();
    emit(&tour.events_table(&downgrades))?;
    let detail = ticket_projections::answer::Views::ticket(&tour.projector, umbrella)?
        .0
        .map(|t| TicketDetail::of(&t, &tour.policy, now));
    if let Some(d) = detail {
        let mut t = table(&["severity changed (UTC)", "from", "to", "why"]);
        for s in d.severity_history {
            t.add_row(vec![s.at, s.from.unwrap_or_default(), s.to, s.cause]);
        }
        emit(&t)?;
    }

    tour.advance(beijing(23, 9, 30)).await?;
    tour.heading("Monday: agents answer, escalate globex by hand and resolve acme")?;
    let before = tour.log().head();
    for (ticket, body) in [
        (acme, CommandBody::RecordAgentResponse { message: text("certificate expired; renewing")? }),
        (globex, CommandBody::RecordAgentResponse { message: text("we reproduced it")? }),
        (
            globex,
            CommandBody::Escalate {
                tier: Tier::new("tier-2").map_err(failure)?,
                team: Some(Team::new("calendar").map_err(failure)?),
                reason: text("needs the calendar team")?,
            },
        ),
        (initech, CommandBody::RecordAgentResponse { message: text("credit note on its way")? }),
        (acme, CommandBody::Resolve { resolution: text("certificate renewed")? }),
    ] {
        tour.issue(ticket, (ActorKind::Agent, "agent-wang"), body).await?.map_err(failure)?;
    }
    let head = tour.log().head();
    let events = tour.log().read_from(before + 1, (head - before) as usize)?;
    emit(&tour.events_table(&events))?;
    let refused =
        tour.issue(acme, (ActorKind::Agent, "agent-wang"), CommandBody::Resolve { resolution: text("again")? }).await?;
    if let Err(e) = refused {
        emit(&format!("resolving acme a second time is refused: {e}"))?;
    }
    let now = tour.clock.now();
    emit(&tour.board(None, now))?;

    tour.heading("acme's audit timeline: every event, who caused it, under which policy")?;
    let position = tour.projector.position();
    let entries = ticket_projections::read_timeline(tour.log(), acme, |e| e.position <= position)?;
    let mut t = table(&["pos", "when (Beijing)", "event", "actor", "command", "policy"]);
    for e in entries {
        t.add_row(vec![e.position.to_string(), local(&e.occurred_at), e.event_type, e.actor, e.command_id, e.policy]);
    }
    emit(&t)?;

    let past = beijing(21, 3, 50);
    tour.heading("time travel: the board as it was on Saturday at 03:50, computed from the log")?;
    let then = ReadModels::build(tour.log(), At::Instant(past), |_, _| {})?;
    emit(&tour.board(Some(&then), past))?;

    tour.heading("SLA compliance so far (business time on each target's calendar)")?;
    let rows = tour.projector.compliance.read().model().report(Period::default(), &tour.policy)?;
    emit(&crate::views::compliance_table(&rows))?;

    tour.heading("the audit: hash chain, gapless positions, and every decision re-run")?;
    let chain = tour.log().verify_chain(|_, _| {})?;
    let report = ticket_service::audit::audit(tour.log(), std::slice::from_ref(&*tour.policy), |_, _, _| {})?;
    emit(&crate::local::audit_table(&chain, &report, tour.log().head()))?;
    let clean = chain.broken.is_none() && report.is_clean();
    emit(&if clean { "audit: OK".to_owned() } else { "audit: FAILED".to_owned() })?;

    tour.engine.stop(SETTLE).await;
    if clean { Ok(()) } else { Err(Failure::Negative("the demo's audit failed".into())) }
}
