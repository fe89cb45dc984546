//! A ticket's whole life the way the command service will run it: commands arrive as protobuf
//! bytes, the Decider decides against the state folded from stored envelopes, and the events are
//! stored as protobuf envelopes and read back.

use chrono::{TimeDelta, TimeZone, Utc};
use prost::Message;
use ticket_domain::{
    Actor, ActorId, ActorKind, ClockStatus, Command, CommandBody, CommandId, CustomerId, EventId, Metric, OpenTicket,
    PlanId, RecordedEvent, Severity, Status, Text, TicketId, TicketState, decide, evolve,
};
use ticket_proto::{decode_command, decode_envelope, encode_command, encode_envelope, pb};
use uuid::Uuid;

use crate::shipped_policy;

struct Store {
    records: Vec<Vec<u8>>,
}

impl Store {
    fn state(&self, ticket: TicketId) -> TicketState {
        self.records.iter().map(|bytes| decode_envelope(bytes).unwrap()).filter(|r| r.event.ticket_id == ticket).fold(
            TicketState::initial(),
            |mut state, r| {
                evolve(&mut state, &r.event).unwrap();
                state
            },
        )
    }

    /// Decodes a command from the wire, decides it, stores the events; the reply as bytes.
    fn handle(&mut self, request: &[u8], policy: &ticket_domain::Policy) -> Vec<u8> {
        let command = match decode_command(request) {
            Ok(c) => c,
            Err(e) => {
                return pb::CommandReply { result: Some(pb::command_reply::Result::Error(pb::Error::from(&e))) }
                    .encode_to_vec();
            }
        };
        let state = self.state(command.ticket_id);
        match decide(&command, &state, policy) {
            Err(e) => {
                pb::CommandReply { result: Some(pb::command_reply::Result::Error(pb::Error::from(&e))) }.encode_to_vec()
            }
            Ok(events) => {
                let mut envelopes = Vec::new();
                for (version, event) in (state.version() + 1..).zip(events) {
                    let id = EventId::from_uuid(Uuid::from_u128(self.records.len() as u128 + 1));
                    let position = self.records.len() as u64 + 1;
                    let recorded = RecordedEvent::of_command(id, &command, version, position, event);
                    self.records.push(encode_envelope(&recorded));
                    envelopes.push(pb::EventEnvelope::from(&recorded));
                }
                let accepted = pb::CommandAccepted {
                    ticket_id: command.ticket_id.to_string(),
                    events: envelopes,
                    duplicate: false,
                    partition: None,
                };
                pb::CommandReply { result: Some(pb::command_reply::Result::Accepted(accepted)) }.encode_to_vec()
            }
        }
    }
}

fn reply(bytes: &[u8]) -> pb::command_reply::Result {
    pb::CommandReply::decode(bytes).unwrap().result.unwrap()
}

#[test]
fn a_critical_ticket_from_opening_to_resolution_over_protobuf() {
    let policy = shipped_policy("regional-operator.toml");
    let ticket = TicketId::from_uuid(Uuid::from_u128(42));
    let opened_at = chrono_tz::Asia::Shanghai.with_ymd_and_hms(2026, 11, 21, 3, 0, 0).unwrap().with_timezone(&Utc);
    let agent = Actor { kind: ActorKind::Agent, id: ActorId::new("agent-li").unwrap() };
    let system = Actor { kind: ActorKind::System, id: ActorId::new("ticket-timer").unwrap() };
    let cmd = |n: u32, actor: &Actor, at, body| {
        encode_command(&Command {
            id: CommandId::new(format!("cmd-{n}")).unwrap(),
            ticket_id: ticket,
            actor: actor.clone(),
            issued_at: at,
            body,
        })
    };
    let mut store = Store { records: Vec::new() };

    // Refused: severity A without the contract. Nothing is stored.
    let refused = store.handle(
        &cmd(
            1,
            &agent,
            opened_at,
            CommandBody::Open(OpenTicket {
                customer: CustomerId::new("acme").unwrap(),
                plan: PlanId::new("standard").unwrap(),
                category: ticket_domain::CategoryId::new("technical").unwrap(),
                title: Text::new("title", "mail down").unwrap(),
                description: Text::empty(),
                severity: Severity::A,
            }),
        ),
        &policy,
    );
    let pb::command_reply::Result::Error(e) = reply(&refused) else { panic!("expected a refusal") };
    assert_eq!(e.code, pb::ErrorCode::SeverityNotInContract as i32);
    assert!(store.records.is_empty());

    // Malformed bytes: a typed error, nothing stored.
    let pb::command_reply::Result::Error(e) = reply(&store.handle(b"\x0a\xff", &policy)) else {
        panic!("expected an error")
    };
    assert_eq!(e.code, pb::ErrorCode::MalformedRequest as i32);
    assert!(store.records.is_empty());

    // Opened with the advanced contract: first response due 04:00.
    let opened = store.handle(
        &cmd(
            2,
            &agent,
            opened_at,
            CommandBody::Open(OpenTicket {
                customer: CustomerId::new("acme").unwrap(),
                plan: PlanId::new("advanced").unwrap(),
                category: ticket_domain::CategoryId::new("technical").unwrap(),
                title: Text::new("title", "mail down").unwrap(),
                description: Text::empty(),
                severity: Severity::A,
            }),
        ),
        &policy,
    );
    let pb::command_reply::Result::Accepted(accepted) = reply(&opened) else { panic!("expected acceptance") };
    assert_eq!(accepted.events.len(), 1);
    assert_eq!(accepted.events[0].position, 1);

    // The timer records the breach at 04:00 (its warnings, not fired here, are settled first at
    // their own instants: 50% at 03:30, 80% at 03:48 with the escalation to tier 2); the policy
    // escalates to the duty manager.
    let due = opened_at + TimeDelta::hours(1);
    let breach = store.handle(
        &cmd(
            3,
            &system,
            due,
            CommandBody::RecordSlaBreach { metric: Metric::FirstResponse, cycle: 1, due_at: due, at_import: false },
        ),
        &policy,
    );
    let pb::command_reply::Result::Accepted(accepted) = reply(&breach) else { panic!("expected acceptance") };
    let positions: Vec<u64> = accepted.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, [2, 3, 4, 5, 6]);

    // Respond, resolve; a second resolve is refused.
    let later = due + TimeDelta::minutes(5);
    store.handle(
        &cmd(4, &agent, later, CommandBody::RecordAgentResponse { message: Text::new("m", "on it").unwrap() }),
        &policy,
    );
    store.handle(
        &cmd(
            5,
            &agent,
            later + TimeDelta::hours(1),
            CommandBody::Resolve { resolution: Text::new("r", "fixed").unwrap() },
        ),
        &policy,
    );
    let again = store.handle(
        &cmd(6, &agent, later + TimeDelta::hours(2), CommandBody::Resolve { resolution: Text::empty() }),
        &policy,
    );
    let pb::command_reply::Result::Error(e) = reply(&again) else { panic!("expected a refusal") };
    assert_eq!(e.code, pb::ErrorCode::InvalidTransition as i32);

    // The stored log folds back into the ticket's state.
    let state = store.state(ticket);
    let t = state.ticket().unwrap();
    assert_eq!(t.status, Status::Resolved);
    assert_eq!(t.team.as_ref().map(|x| x.as_str()), Some("duty-manager"));
    assert_eq!(
        t.clock(Metric::FirstResponse).unwrap().status,
        ClockStatus::Stopped(ticket_domain::ClockOutcome::Breached)
    );
    assert_eq!(t.version, 8);
    let versions: Vec<u64> = store.records.iter().map(|b| decode_envelope(b).unwrap().version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8]);
}
