use chrono::{DateTime, TimeDelta};
use proptest::prelude::*;
use prost::Message;
use ticket_domain::testing;
use ticket_domain::*;
use uuid::Uuid;

use super::*;

fn arb_ts() -> impl Strategy<Value = Timestamp> {
    (0i64..4_000_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap())
}

fn arb_delta() -> impl Strategy<Value = TimeDelta> {
    (-1_000_000_000i64..1_000_000_000, 0i64..1_000_000_000)
        .prop_map(|(s, n)| TimeDelta::seconds(s) + TimeDelta::nanoseconds(n))
}

fn arb_token() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,20}"
}

fn arb_text() -> impl Strategy<Value = Text> {
    "(?s)[a-zA-Z0-9 äöü中文\n\t.,!?-]{0,40}".prop_map(|s| Text::new("text", s).unwrap())
}

fn arb_ticket_id() -> impl Strategy<Value = TicketId> {
    any::<u128>().prop_map(|n| TicketId::from_uuid(Uuid::from_u128(n)))
}

fn arb_severity() -> impl Strategy<Value = Severity> {
    prop_oneof![Just(Severity::A), Just(Severity::B), Just(Severity::C)]
}

fn arb_metric() -> impl Strategy<Value = Metric> {
    prop_oneof![Just(Metric::FirstResponse), Just(Metric::FollowUp), Just(Metric::Resolution), Just(Metric::NoResponse)]
}

fn arb_policy() -> impl Strategy<Value = PolicyVersion> {
    (arb_token(), arb_token()).prop_map(|(name, version)| PolicyVersion { name, version })
}

fn arb_target() -> impl Strategy<Value = Target> {
    let amount =
        prop_oneof![arb_delta().prop_map(TargetAmount::OpenTime), any::<u32>().prop_map(TargetAmount::BusinessDays)];
    (amount, arb_token()).prop_map(|(amount, c)| Target { amount, calendar: CalendarId::new(c).unwrap() })
}

fn arb_plan() -> impl Strategy<Value = ClockPlan> {
    (
        arb_severity(),
        arb_target(),
        arb_delta(),
        arb_delta(),
        proptest::option::of(arb_ts()),
        proptest::collection::vec((0u8..=100, arb_ts()), 0..3),
        arb_policy(),
    )
        .prop_map(|(severity, target, target_duration, elapsed, due_at, warnings, policy)| ClockPlan {
            severity,
            target,
            target_duration,
            elapsed,
            due_at,
            warnings: warnings
                .into_iter()
                .map(|(threshold_percent, at)| WarningPlan { threshold_percent, at })
                .collect(),
            policy,
        })
}

fn arb_outcome() -> impl Strategy<Value = ClockOutcome> {
    prop_oneof![
        Just(ClockOutcome::Met),
        Just(ClockOutcome::Breached),
        Just(ClockOutcome::Cancelled),
        Just(ClockOutcome::Untargeted)
    ]
}

fn arb_clock_change() -> impl Strategy<Value = ClockChange> {
    let effect = prop_oneof![
        Just(ClockEffect::Started),
        Just(ClockEffect::Paused),
        Just(ClockEffect::Resumed),
        Just(ClockEffect::Retargeted),
        arb_outcome().prop_map(ClockEffect::Stopped),
    ];
    (arb_metric(), 1u32.., effect, proptest::option::of(arb_plan()), proptest::option::of(arb_ts()))
        .prop_map(|(metric, cycle, effect, plan, at)| ClockChange { metric, cycle, effect, plan, at })
}

fn arb_clocks() -> impl Strategy<Value = Vec<ClockChange>> {
    proptest::collection::vec(arb_clock_change(), 0..4)
}

fn arb_cause() -> impl Strategy<Value = EscalationCause> {
    prop_oneof![
        Just(EscalationCause::Manual),
        (arb_metric(), any::<u32>(), 0u8..=100).prop_map(|(metric, cycle, threshold_percent)| {
            EscalationCause::Warning { metric, cycle, threshold_percent }
        }),
        (arb_metric(), any::<u32>()).prop_map(|(metric, cycle)| EscalationCause::Breach { metric, cycle }),
    ]
}

fn arb_event_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        (arb_token(), arb_token(), arb_token(), arb_text(), arb_text(), arb_severity(), arb_policy(), arb_clocks())
            .prop_map(|(customer, plan, category, title, description, severity, policy, clocks)| EventKind::Opened(
                Opened {
                    customer: CustomerId::new(customer).unwrap(),
                    plan: PlanId::new(plan).unwrap(),
                    category: CategoryId::new(category).unwrap(),
                    title,
                    description,
                    severity,
                    policy,
                    clocks,
                }
            )),
        (arb_severity(), arb_severity(), arb_text(), arb_clocks())
            .prop_map(|(from, to, reason, clocks)| EventKind::SeveritySet { from, to, reason, clocks }),
        (arb_text(), arb_clocks()).prop_map(|(message, clocks)| EventKind::AgentResponded { message, clocks }),
        (arb_text(), arb_clocks()).prop_map(|(request, clocks)| EventKind::CustomerInfoRequested { request, clocks }),
        (arb_text(), arb_clocks()).prop_map(|(message, clocks)| EventKind::CustomerResponded { message, clocks }),
        (arb_severity(), arb_severity(), any::<u32>(), arb_ts(), arb_clocks()).prop_map(
            |(from, to, cycle, due_at, clocks)| EventKind::DowngradedForNoResponse { from, to, cycle, due_at, clocks }
        ),
        (arb_token(), proptest::option::of(arb_token()), arb_text(), arb_cause()).prop_map(
            |(tier, team, reason, cause)| EventKind::Escalated {
                tier: Tier::new(tier).unwrap(),
                team: team.map(|t| Team::new(t).unwrap()),
                reason,
                cause,
            }
        ),
        (arb_metric(), any::<u32>(), 0u8..=100, arb_ts(), arb_ts()).prop_map(
            |(metric, cycle, threshold_percent, warn_at, due_at)| EventKind::SlaWarning {
                metric,
                cycle,
                threshold_percent,
                warn_at,
                due_at
            }
        ),
        (arb_metric(), any::<u32>(), arb_severity(), arb_ts())
            .prop_map(|(metric, cycle, severity, due_at)| EventKind::SlaBreached { metric, cycle, severity, due_at }),
        (arb_text(), arb_clocks()).prop_map(|(resolution, clocks)| EventKind::Resolved { resolution, clocks }),
        (arb_text(), arb_clocks()).prop_map(|(reason, clocks)| EventKind::Reopened { reason, clocks }),
        (arb_ticket_id(), prop_oneof![Just(LinkRelation::SplitInto), Just(LinkRelation::SplitFrom)])
            .prop_map(|(other, relation)| EventKind::Linked { other, relation }),
    ]
}

fn arb_actor() -> impl Strategy<Value = Actor> {
    (prop_oneof![Just(ActorKind::Agent), Just(ActorKind::Customer), Just(ActorKind::System)], arb_token())
        .prop_map(|(kind, id)| Actor { kind, id: ActorId::new(id).unwrap() })
}

fn arb_recorded() -> impl Strategy<Value = RecordedEvent> {
    (
        any::<u128>(),
        1u64..,
        1u64..,
        arb_ts(),
        arb_actor(),
        arb_token(),
        proptest::option::of(arb_token()),
        proptest::option::of(arb_token()),
        (arb_ticket_id(), arb_ts(), arb_event_kind()),
        any::<bool>(),
    )
        .prop_map(
            |(
                id,
                version,
                position,
                recorded_at,
                actor,
                command_id,
                correlation,
                causation,
                (ticket_id, occurred_at, kind),
                imported,
            )| RecordedEvent {
                event_id: EventId::from_uuid(Uuid::from_u128(id)),
                version,
                position,
                recorded_at,
                actor,
                command_id: CommandId::new(command_id).unwrap(),
                correlation_id: correlation.map(|c| TraceId::new(c).unwrap()),
                causation_id: causation.map(|c| TraceId::new(c).unwrap()),
                imported,
                event: Event { ticket_id, occurred_at, kind },
            },
        )
}

fn arb_body() -> impl Strategy<Value = CommandBody> {
    prop_oneof![
        (arb_token(), arb_token(), arb_token(), arb_text(), arb_text(), arb_severity()).prop_map(
            |(customer, plan, category, title, description, severity)| {
                CommandBody::Open(OpenTicket {
                    customer: CustomerId::new(customer).unwrap(),
                    plan: PlanId::new(plan).unwrap(),
                    category: CategoryId::new(category).unwrap(),
                    title,
                    description,
                    severity,
                })
            }
        ),
        (arb_severity(), arb_text()).prop_map(|(severity, reason)| CommandBody::SetSeverity { severity, reason }),
        arb_text().prop_map(|message| CommandBody::RecordAgentResponse { message }),
        arb_text().prop_map(|request| CommandBody::RequestCustomerInfo { request }),
        arb_text().prop_map(|message| CommandBody::RecordCustomerReply { message }),
        (arb_token(), proptest::option::of(arb_token()), arb_text()).prop_map(|(tier, team, reason)| {
            CommandBody::Escalate { tier: Tier::new(tier).unwrap(), team: team.map(|t| Team::new(t).unwrap()), reason }
        }),
        arb_text().prop_map(|resolution| CommandBody::Resolve { resolution }),
        arb_text().prop_map(|reason| CommandBody::Reopen { reason }),
        (arb_ticket_id(), arb_token(), arb_severity(), arb_text(), arb_text()).prop_map(
            |(new_ticket, category, severity, title, description)| {
                CommandBody::Split(SplitTicket {
                    new_ticket,
                    category: CategoryId::new(category).unwrap(),
                    severity,
                    title,
                    description,
                })
            }
        ),
        (arb_metric(), any::<u32>(), 0u8..=100, arb_ts()).prop_map(|(metric, cycle, threshold_percent, warn_at)| {
            CommandBody::RecordSlaWarning { metric, cycle, threshold_percent, warn_at }
        }),
        (arb_metric(), any::<u32>(), arb_ts(), any::<bool>()).prop_map(|(metric, cycle, due_at, at_import)| {
            CommandBody::RecordSlaBreach { metric, cycle, due_at, at_import }
        }),
        (any::<u32>(), arb_ts()).prop_map(|(cycle, due_at)| CommandBody::DowngradeForNoResponse { cycle, due_at }),
    ]
}

fn arb_command() -> impl Strategy<Value = Command> {
    (arb_token(), arb_ticket_id(), arb_actor(), arb_ts(), arb_body()).prop_map(
        |(id, ticket_id, actor, issued_at, body)| Command {
            id: CommandId::new(id).unwrap(),
            ticket_id,
            actor,
            issued_at,
            body,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn envelopes_round_trip_through_bytes(event in arb_recorded()) {
        let bytes = encode_envelope(&event);
        prop_assert_eq!(decode_envelope(&bytes).unwrap(), event);
    }

    #[test]
    fn envelopes_round_trip_through_canonical_json(event in arb_recorded()) {
        let json = serde_json::to_string(&pb::EventEnvelope::from(&event)).unwrap();
        let back: pb::EventEnvelope = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(RecordedEvent::try_from(back).unwrap(), event);
    }

    #[test]
    fn commands_round_trip_through_bytes(command in arb_command()) {
        let bytes = encode_command(&command);
        prop_assert_eq!(decode_command(&bytes).unwrap(), command);
    }

    #[test]
    fn arbitrary_bytes_are_an_error_or_a_valid_value_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(event) = decode_envelope(&bytes) {
            // Whatever decodes re-encodes to a message that decodes to the same value.
            prop_assert_eq!(decode_envelope(&encode_envelope(&event)).unwrap(), event);
        }
        if let Ok(command) = decode_command(&bytes) {
            prop_assert_eq!(decode_command(&encode_command(&command)).unwrap(), command);
        }
    }

    #[test]
    fn corrupted_encodings_never_panic(event in arb_recorded(), index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = encode_envelope(&event);
        let at = index.index(bytes.len());
        bytes[at] = byte;
        let _ = decode_envelope(&bytes);
        let truncated = &bytes[..at];
        let _ = decode_envelope(truncated);
    }
}

#[test]
fn events_from_a_real_lifecycle_round_trip() {
    let policy = testing::regional_operator();
    let mut state = TicketState::initial();
    let at = testing::beijing(2026, 11, 21, 3, 0);
    let commands = [
        testing::agent(at, testing::open("advanced", "technical", Severity::A)),
        testing::agent(
            at + TimeDelta::minutes(10),
            CommandBody::RequestCustomerInfo { request: testing::text("logs please") },
        ),
        testing::timer(
            at + TimeDelta::minutes(10) + TimeDelta::hours(24),
            CommandBody::DowngradeForNoResponse {
                cycle: 1,
                due_at: at + TimeDelta::minutes(10) + TimeDelta::hours(24),
            },
        ),
        testing::agent(at + TimeDelta::hours(30), CommandBody::Resolve { resolution: testing::text("fixed") }),
    ];
    let mut position = 0;
    for command in commands {
        let events = decide(&command, &state, &policy).unwrap();
        for event in events {
            evolve(&mut state, &event).unwrap();
            position += 1;
            let recorded = RecordedEvent {
                event_id: EventId::from_uuid(Uuid::from_u128(position)),
                version: state.version(),
                position: u64::try_from(position).unwrap(),
                recorded_at: event.occurred_at,
                actor: command.actor.clone(),
                command_id: command.id.clone(),
                correlation_id: None,
                causation_id: None,
                imported: false,
                event,
            };
            assert_eq!(decode_envelope(&encode_envelope(&recorded)).unwrap(), recorded);
        }
        assert_eq!(decode_command(&encode_command(&command)).unwrap(), command);
    }
    let view = pb::TicketView::from(state.ticket().unwrap());
    assert_eq!(view.severity, pb::Severity::B as i32);
    assert_eq!(view.status, pb::TicketStatus::Resolved as i32);
}

fn valid_envelope() -> pb::EventEnvelope {
    let event = RecordedEvent {
        event_id: EventId::from_uuid(Uuid::from_u128(1)),
        version: 1,
        position: 1,
        recorded_at: testing::utc(2026, 11, 21, 0, 0),
        actor: Actor { kind: ActorKind::Agent, id: ActorId::new("a").unwrap() },
        command_id: CommandId::new("c").unwrap(),
        correlation_id: None,
        causation_id: None,
        imported: false,
        event: Event {
            ticket_id: testing::ticket_id(),
            occurred_at: testing::utc(2026, 11, 21, 0, 0),
            kind: EventKind::SlaBreached {
                metric: Metric::FirstResponse,
                cycle: 1,
                severity: Severity::A,
                due_at: testing::utc(2026, 11, 21, 0, 0),
            },
        },
    };
    pb::EventEnvelope::from(&event)
}

#[test]
fn missing_and_invalid_fields_are_named() {
    let mut e = valid_envelope();
    e.event_id = "not-a-uuid".into();
    assert_eq!(RecordedEvent::try_from(e).unwrap_err().field(), Some("event_id"));

    let mut e = valid_envelope();
    e.event = None;
    assert_eq!(RecordedEvent::try_from(e).unwrap_err(), ProtoError::Missing("event"));

    let mut e = valid_envelope();
    e.schema_version = 99;
    assert_eq!(RecordedEvent::try_from(e.clone()).unwrap_err(), ProtoError::UnsupportedSchema(99));
    assert_eq!(decode_envelope(&e.encode_to_vec()).unwrap_err(), ProtoError::UnsupportedSchema(99));

    let mut e = valid_envelope();
    if let Some(pb::event::Kind::SlaBreached(b)) = e.event.as_mut().and_then(|ev| ev.kind.as_mut()) {
        b.severity = pb::Severity::Unspecified as i32;
    }
    assert_eq!(RecordedEvent::try_from(e).unwrap_err(), ProtoError::Missing("sla_breached.severity"));

    let mut e = valid_envelope();
    e.recorded_at = Some(pbjson_types::Timestamp { seconds: 0, nanos: -1 });
    assert_eq!(RecordedEvent::try_from(e).unwrap_err().field(), Some("recorded_at"));

    let mut e = valid_envelope();
    e.position = 0;
    assert_eq!(RecordedEvent::try_from(e).unwrap_err().field(), Some("position"));
}

#[test]
fn a_stopped_clock_needs_an_outcome_and_only_it_has_one() {
    let stopped = pb::ClockChange {
        metric: pb::Metric::Resolution as i32,
        cycle: 1,
        effect: pb::ClockEffect::Stopped as i32,
        outcome: 0,
        plan: None,
        at: None,
    };
    assert_eq!(ClockChange::try_from(stopped).unwrap_err(), ProtoError::Missing("clock_change.outcome"));
    let started = pb::ClockChange {
        metric: pb::Metric::Resolution as i32,
        cycle: 1,
        effect: pb::ClockEffect::Started as i32,
        outcome: pb::ClockOutcome::Met as i32,
        plan: None,
        at: None,
    };
    assert!(ClockChange::try_from(started).is_err());
}

#[test]
fn a_command_without_metadata_is_refused() {
    let mut c = pb::Command::from(&testing::agent(
        testing::utc(2026, 11, 21, 0, 0),
        testing::open("standard", "technical", Severity::B),
    ));
    c.ticket_id.clear();
    assert_eq!(Command::try_from(c.clone()).unwrap_err(), ProtoError::Missing("ticket_id"));
    c.ticket_id = testing::ticket_id().to_string();
    c.body = None;
    assert_eq!(Command::try_from(c).unwrap_err(), ProtoError::Missing("body"));
    assert!(matches!(decode_command(b"\xff\xff\xff"), Err(ProtoError::Decode(_))));
}

#[test]
fn every_domain_error_has_a_stable_wire_code() {
    use pb::ErrorCode as C;
    let pairs = [
        (ErrorKind::InvalidCommand, C::InvalidCommand, 1),
        (ErrorKind::TicketNotFound, C::TicketNotFound, 2),
        (ErrorKind::TicketAlreadyExists, C::TicketAlreadyExists, 3),
        (ErrorKind::UnknownPlan, C::UnknownPlan, 4),
        (ErrorKind::UnknownCategory, C::UnknownCategory, 5),
        (ErrorKind::SeverityNotInContract, C::SeverityNotInContract, 6),
        (ErrorKind::SeverityNotAllowedForCategory, C::SeverityNotAllowedForCategory, 7),
        (ErrorKind::TicketResolved, C::TicketResolved, 8),
        (ErrorKind::InvalidTransition, C::InvalidTransition, 9),
        (ErrorKind::TimerMoot, C::TimerMoot, 10),
        (ErrorKind::TimerNotDue, C::TimerNotDue, 11),
    ];
    for (kind, code, number) in pairs {
        assert_eq!(error_code(kind), code);
        assert_eq!(code as i32, number, "the wire number of {code:?} changed");
    }
    let err = DomainError::SeverityNotInContract {
        plan: PlanId::new("standard").unwrap(),
        severity: Severity::A,
        max: Severity::B,
    };
    let wire = pb::Error::from(&err);
    assert_eq!(wire.code, C::SeverityNotInContract as i32);
    assert_eq!(wire.details.get("max_severity").map(String::as_str), Some("B"));
    let wire = pb::Error::from(&ProtoError::Missing("ticket_id"));
    assert_eq!(
        (wire.code, wire.details.get("field").map(String::as_str)),
        (C::MalformedRequest as i32, Some("ticket_id"))
    );
}
