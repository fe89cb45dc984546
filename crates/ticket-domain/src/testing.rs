//! A given/when/then harness for the Decider, for this crate's tests and (with the `testing`
//! feature) for the tests of crates built on it.
//!
//! `given(policy).history([commands])` builds a ticket's past by deciding each command (so the
//! past is one the Decider could really have produced); `.when(command)` decides one more and
//! returns an [`Outcome`] to assert on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod golden;

pub use golden::{
    check_golden, golden_commands, golden_files, golden_history, golden_policy, golden_split_ticket, golden_states,
};

use chrono::{TimeZone, Utc};
use uuid::Uuid;

use crate::calendar::Timestamp;
use crate::command::{Actor, ActorKind, Command, CommandBody, OpenTicket};
use crate::decide::decide;
use crate::envelope::RecordedEvent;
use crate::error::{DomainError, ErrorKind};
use crate::event::{ClockChange, Event, EventKind};
use crate::ids::{ActorId, CategoryId, CommandId, CustomerId, EventId, PlanId, Text, TicketId};
use crate::policy::Policy;
use crate::severity::{Metric, Severity};
use crate::state::{Ticket, TicketState, evolve, evolve_recorded};

/// The regional-operator policy shipped in `deploy/policies`.
pub fn regional_operator() -> Policy {
    Policy::from_toml("regional-operator.toml", include_str!("../../../deploy/policies/regional-operator.toml"))
        .unwrap()
}

/// The professional policy shipped in `deploy/policies`.
pub fn professional() -> Policy {
    Policy::from_toml("professional.toml", include_str!("../../../deploy/policies/professional.toml")).unwrap()
}

/// An instant given as Beijing local time.
pub fn beijing(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    chrono_tz::Asia::Shanghai.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap().with_timezone(&Utc)
}

/// An instant given as UTC.
pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap()
}

/// The ticket most scenarios are about.
pub fn ticket_id() -> TicketId {
    TicketId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
}

pub fn other_ticket_id() -> TicketId {
    TicketId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002))
}

pub fn text(s: &str) -> Text {
    Text::new("text", s).unwrap()
}

/// A command issued by an agent on the scenario's ticket.
pub fn agent(at: Timestamp, body: CommandBody) -> Command {
    command(ActorKind::Agent, "agent-li", at, body)
}

/// A command issued by the engine's timer on the scenario's ticket.
pub fn timer(at: Timestamp, body: CommandBody) -> Command {
    command(ActorKind::System, "ticket-timer", at, body)
}

pub fn command(kind: ActorKind, actor: &str, at: Timestamp, body: CommandBody) -> Command {
    Command {
        id: CommandId::new(format!("{}-{}", body.name(), at.timestamp())).unwrap(),
        ticket_id: ticket_id(),
        actor: Actor { kind, id: ActorId::new(actor).unwrap() },
        issued_at: at,
        body,
    }
}

/// An `open` body for customer `acme`.
pub fn open(plan: &str, category: &str, severity: Severity) -> CommandBody {
    CommandBody::Open(OpenTicket {
        customer: CustomerId::new("acme").unwrap(),
        plan: PlanId::new(plan).unwrap(),
        category: CategoryId::new(category).unwrap(),
        title: text("mail cannot be reached"),
        description: text("all users see a timeout since 02:40"),
        severity,
    })
}

pub fn given(policy: Policy) -> Given {
    Given { policy, state: TicketState::initial(), history: Vec::new() }
}

#[derive(Debug, Clone)]
pub struct Given {
    policy: Policy,
    state: TicketState,
    history: Vec<Event>,
}

impl Given {
    /// Decides each command in turn; every one must succeed.
    pub fn history(mut self, commands: impl IntoIterator<Item = Command>) -> Self {
        for c in commands {
            let events = decide(&c, &self.state, &self.policy)
                .unwrap_or_else(|e| panic!("given command {} was refused: {e}", c.body.name()));
            for e in events.iter().filter(|e| e.ticket_id == c.ticket_id) {
                evolve(&mut self.state, e).unwrap_or_else(|m| panic!("given event does not fit: {m}"));
            }
            self.history.extend(events);
        }
        self
    }

    /// Decides each command in turn as an importer's, the events appended at `imported_at` and
    /// marked imported, as the command service stores another helpdesk's history.
    pub fn imported(mut self, imported_at: Timestamp, commands: impl IntoIterator<Item = Command>) -> Self {
        for c in commands {
            let events = decide(&c, &self.state, &self.policy)
                .unwrap_or_else(|e| panic!("imported command {} was refused: {e}", c.body.name()));
            for e in events.iter().filter(|e| e.ticket_id == c.ticket_id) {
                let version = self.state.version() + 1;
                let mut recorded =
                    RecordedEvent::of_command(EventId::from_uuid(Uuid::nil()), &c, version, version, e.clone());
                recorded.recorded_at = imported_at;
                recorded.imported = true;
                evolve_recorded(&mut self.state, &recorded)
                    .unwrap_or_else(|m| panic!("imported event does not fit: {m}"));
            }
            self.history.extend(events);
        }
        self
    }

    /// Appends events as they are, for scenarios that start from a stored log.
    pub fn events(mut self, events: impl IntoIterator<Item = Event>) -> Self {
        for e in events {
            evolve(&mut self.state, &e).unwrap_or_else(|m| panic!("given event does not fit: {m}"));
            self.history.push(e);
        }
        self
    }

    pub fn state(&self) -> &TicketState {
        &self.state
    }

    pub fn when(self, command: Command) -> Outcome {
        let result = decide(&command, &self.state, &self.policy);
        let mut after = self.state.clone();
        if let Ok(events) = &result {
            for e in events.iter().filter(|e| e.ticket_id == command.ticket_id) {
                evolve(&mut after, e).unwrap_or_else(|m| panic!("decided event does not fit: {m}"));
            }
        }
        Outcome { result, after, before: self.state }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub result: Result<Vec<Event>, DomainError>,
    pub before: TicketState,
    pub after: TicketState,
}

impl Outcome {
    /// The decision's events, which must exist.
    pub fn events(&self) -> &[Event] {
        match &self.result {
            Ok(events) => events,
            Err(e) => panic!("expected events, the command was refused: {e}"),
        }
    }

    /// Asserts the exact events.
    pub fn then(&self, expected: &[Event]) -> &Self {
        assert_eq!(self.events(), expected);
        self
    }

    /// Asserts the event names, in order.
    pub fn then_names(&self, expected: &[&str]) -> &Self {
        let names: Vec<&str> = self.events().iter().map(|e| e.kind.name()).collect();
        assert_eq!(names, expected);
        self
    }

    /// Asserts a refusal of this kind, and that nothing changed.
    pub fn then_err(&self, kind: ErrorKind) -> &DomainError {
        match &self.result {
            Ok(events) => {
                panic!("expected {kind:?}, got events {:?}", events.iter().map(|e| e.kind.name()).collect::<Vec<_>>())
            }
            Err(e) => {
                assert_eq!(e.kind(), kind, "unexpected error: {e}");
                assert_eq!(self.before, self.after);
                e
            }
        }
    }

    /// The ticket after the decision's events.
    pub fn ticket(&self) -> &Ticket {
        self.after.ticket().expect("the ticket is opened")
    }

    /// The first event with this name.
    pub fn event(&self, name: &str) -> &EventKind {
        &self.events().iter().find(|e| e.kind.name() == name).unwrap_or_else(|| panic!("no {name} event")).kind
    }

    /// The clock changes of `metric` across the decision's events, in order.
    pub fn clock_changes(&self, metric: Metric) -> Vec<&ClockChange> {
        self.events().iter().flat_map(|e| e.kind.clocks()).filter(|c| c.metric == metric).collect()
    }

    /// The due instant the decision promises for `metric` (its last change with a due instant).
    pub fn due(&self, metric: Metric) -> Option<Timestamp> {
        self.clock_changes(metric).iter().rev().find_map(|c| c.plan.as_ref().and_then(|p| p.due_at))
    }
}
