use ticket_domain::testing::{open, text, utc};
use ticket_domain::{CategoryId, Metric, Severity, SplitTicket, Tier};

use super::*;

/// A domain command of each endpoint's kind. The match is exhaustive over the endpoints, and
/// [`CommandEndpoint::of`] over the domain's commands: together, one endpoint per command.
fn sample(endpoint: CommandEndpoint) -> CommandBody {
    let due_at = utc(2026, 11, 21, 1, 0);
    match endpoint {
        CommandEndpoint::Open => open("advanced", "technical", Severity::A),
        CommandEndpoint::SetSeverity => CommandBody::SetSeverity { severity: Severity::B, reason: text("calmer") },
        CommandEndpoint::RecordAgentResponse => CommandBody::RecordAgentResponse { message: text("looking") },
        CommandEndpoint::RequestCustomerInfo => CommandBody::RequestCustomerInfo { request: text("logs") },
        CommandEndpoint::RecordCustomerReply => CommandBody::RecordCustomerReply { message: text("here") },
        CommandEndpoint::Escalate => {
            CommandBody::Escalate { tier: Tier::new("tier-2").unwrap(), team: None, reason: text("hard") }
        }
        CommandEndpoint::Resolve => CommandBody::Resolve { resolution: text("fixed") },
        CommandEndpoint::Reopen => CommandBody::Reopen { reason: text("again") },
        CommandEndpoint::Split => CommandBody::Split(SplitTicket {
            new_ticket: ticket_domain::testing::other_ticket_id(),
            category: CategoryId::new("technical").unwrap(),
            severity: Severity::B,
            title: text("part"),
            description: text("the other part"),
        }),
        CommandEndpoint::RecordSlaWarning => CommandBody::RecordSlaWarning {
            metric: Metric::FirstResponse,
            cycle: 1,
            threshold_percent: 80,
            warn_at: due_at,
        },
        CommandEndpoint::RecordSlaBreach => {
            CommandBody::RecordSlaBreach { metric: Metric::FirstResponse, cycle: 1, due_at, at_import: false }
        }
        CommandEndpoint::DowngradeForNoResponse => CommandBody::DowngradeForNoResponse { cycle: 1, due_at },
    }
}

#[test]
fn each_domain_command_has_its_endpoint_named_as_the_domain_names_it() {
    for &endpoint in CommandEndpoint::ALL {
        let body = sample(endpoint);
        assert_eq!(CommandEndpoint::of(&body), endpoint);
        assert_eq!(body.name(), endpoint.name());
        let wire = pb::Command::from(&ticket_domain::testing::agent(utc(2026, 11, 21, 0, 0), body));
        assert_eq!(wire.body.as_ref().map(CommandEndpoint::of_wire), Some(endpoint));
    }
}

#[test]
fn subjects_are_the_wire_protocol_and_parse_back() {
    let subjects: Vec<String> = Endpoint::all().map(Endpoint::subject).collect();
    assert_eq!(subjects.len(), 12 + 5 + 6);
    assert!(subjects.contains(&"tickets.admin.cluster".to_owned()));
    assert!(subjects.contains(&"tickets.admin.move".to_owned()));
    assert!(subjects.contains(&"tickets.cmd.open".to_owned()));
    assert!(subjects.contains(&"tickets.cmd.downgrade_for_no_response".to_owned()));
    assert!(subjects.contains(&"tickets.query.compliance".to_owned()));
    assert!(subjects.contains(&"tickets.admin.rebuild".to_owned()));
    for endpoint in Endpoint::all() {
        assert_eq!(Endpoint::from_subject(&endpoint.subject()), Some(endpoint));
        assert_eq!(Family::of_subject(&endpoint.subject()), Some(endpoint.family()));
    }
    let unique: std::collections::HashSet<&String> = subjects.iter().collect();
    assert_eq!(unique.len(), subjects.len());
}

#[test]
fn unknown_names_are_no_endpoint_but_keep_their_family() {
    assert_eq!(Endpoint::from_subject("tickets.query.nope"), None);
    assert_eq!(Family::of_subject("tickets.query.nope"), Some(Family::Query));
    assert_eq!(Endpoint::from_subject("tickets.admin.drop_everything"), None);
    assert_eq!(Family::of_subject("tickets.admin.drop_everything"), Some(Family::Admin));
    assert_eq!(Family::of_subject("tickets.cmd.frobnicate"), Some(Family::Command));
    assert_eq!(Family::of_subject("tickets.events.x.opened"), None);
    assert_eq!(Family::of_subject("tickets.cmd"), None);
    assert_eq!(Family::of_subject("ticketsx.cmd.open"), None);
    assert_eq!(Endpoint::from_subject("tickets.cmd.open.more"), None);
}

#[test]
fn queries_and_admin_requests_decode_as_their_endpoint_says() {
    let queries = [
        Query::Ticket(pb::GetTicket { ticket_id: "t".into(), min_position: 7 }),
        Query::Customer(pb::ListCustomerTickets { customer: "acme".into(), min_position: 3, ..Default::default() }),
        Query::Board(pb::GetBoard { min_position: 2, limit: 4, ..Default::default() }),
        Query::Timeline(pb::GetTimeline { ticket_id: "t".into(), min_position: 1 }),
        Query::Compliance(pb::GetCompliance {
            min_position: 9,
            from: None,
            to: None,
            min_partition_positions: [(3, 7)].into(),
        }),
    ];
    for query in queries {
        let decoded = Query::decode(query.endpoint(), &query.encode_to_vec()).unwrap();
        assert_eq!(decoded.min_position(), query.min_position());
        assert_eq!(decoded.min_partition_positions(), query.min_partition_positions());
        assert_eq!(decoded, query);
    }
    for request in [
        AdminRequest::Lag(pb::GetProjectionLag { node: "node-b".into() }),
        AdminRequest::Rebuild(pb::RebuildProjection { name: "board".into(), node: String::new() }),
        AdminRequest::Move(pb::MovePartition { partition: 3, node: "node-b".into() }),
    ] {
        assert_eq!(AdminRequest::decode(request.endpoint(), &request.encode_to_vec()).unwrap(), request);
    }
    assert!(Query::decode(QueryEndpoint::Ticket, &[0xff, 0xff]).is_err());
}
