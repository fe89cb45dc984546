//! The contract of [`EventLog`], as tests every engine runs: `contract::run_all(|| make_log())`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ticket_domain::testing::{agent, utc};
use ticket_domain::{CommandBody, CommandId, Event, EventKind, Text, TicketId};

use crate::{AppendOutcome, AppendRequest, AppendToken, EventLog, LogError, StreamAppend};

/// A ticket id for test number `n`.
pub fn ticket(n: u128) -> TicketId {
    TicketId::from_uuid(uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n))
}

/// An event of `ticket` (the log does not interpret events).
pub fn event(ticket: TicketId, note: &str) -> Event {
    Event {
        ticket_id: ticket,
        occurred_at: utc(2026, 11, 21, 10, 0),
        kind: EventKind::AgentResponded { message: Text::new("message", note).unwrap(), clocks: Vec::new() },
    }
}

/// An append of `events` notes to one stream under command id `command_id`.
pub fn append(command_id: &str, ticket: TicketId, expected_version: u64, notes: &[&str]) -> AppendRequest {
    let mut command = agent(utc(2026, 11, 21, 10, 0), CommandBody::RecordAgentResponse { message: Text::empty() });
    command.id = CommandId::new(command_id).unwrap();
    command.ticket_id = ticket;
    AppendRequest {
        token: AppendToken::next(),
        command,
        policy: None,
        rules: ticket_domain::Rules::CURRENT,
        correlation_id: None,
        causation_id: None,
        imported: false,
        streams: vec![StreamAppend {
            ticket_id: ticket,
            expected_version,
            after: None,
            events: notes.iter().map(|n| event(ticket, n)).collect(),
        }],
    }
}

/// Runs every contract test against fresh logs from `make`.
pub async fn run_all<L: EventLog, F: Fn() -> L>(make: F) {
    positions_are_gapless_and_versions_contiguous(make()).await;
    a_stale_expected_version_conflicts_and_writes_nothing(make()).await;
    a_repeated_command_id_returns_the_original_events(make()).await;
    a_multi_stream_append_is_all_or_nothing(make()).await;
    the_outbox_holds_what_is_not_yet_published(make()).await;
    commands_are_stored_with_their_positions(make()).await;
    a_subscription_catches_up_then_follows(make()).await;
    empty_appends_are_refused(make()).await;
    an_append_decided_after_another_needs_that_one_to_be_the_last(make()).await;
    an_append_after_a_failed_one_is_refused_in_the_same_group(make()).await;
}

/// `append` decided after the append `after` (pipelining).
pub fn append_after(
    command_id: &str,
    ticket: TicketId,
    expected_version: u64,
    after: &AppendRequest,
    notes: &[&str],
) -> AppendRequest {
    let mut request = append(command_id, ticket, expected_version, notes);
    request.streams[0].after = Some(after.token);
    request
}

pub async fn an_append_decided_after_another_needs_that_one_to_be_the_last<L: EventLog>(log: L) {
    let (a, b) = (ticket(1), ticket(2));
    let first = append("c1", a, 0, &["a1"]);
    log.append(first.clone()).await.unwrap();
    let second = append_after("c2", a, 1, &first, &["a2"]);
    assert!(!log.append(second.clone()).await.unwrap().is_duplicate());
    // The version is right, but the decision was made after `first`, which is no longer last.
    let stale = append_after("c3", a, 2, &first, &["a3"]);
    assert_eq!(log.append(stale).await.unwrap_err(), LogError::BasisConflict { ticket_id: a });
    // An append this log never made (another process, a reopened log) is no basis either.
    let unknown = append("elsewhere", b, 0, &["b1"]);
    let refused = append_after("c4", a, 2, &unknown, &["a3"]);
    assert_eq!(log.append(refused).await.unwrap_err(), LogError::BasisConflict { ticket_id: a });
    // A split's new stream has the split as its last append.
    let mut split = append_after("c5", a, 2, &second, &["linked"]);
    split.streams.push(StreamAppend {
        ticket_id: b,
        expected_version: 0,
        after: None,
        events: vec![event(b, "opened")],
    });
    log.append(split.clone()).await.unwrap();
    log.append(append_after("c6", b, 1, &split, &["b2"])).await.unwrap();
    // A state read from the durable log needs only the version.
    log.append(append("c7", a, 3, &["a4"])).await.unwrap();
    assert_eq!((log.head(), log.stream_version(a).unwrap(), log.stream_version(b).unwrap()), (6, 4, 2));
}

/// The sequence of issue 10: W is queued on version 1; a retry of a stored command is decided
/// after W and answered `Duplicate`; X, decided after the retry, has the version W produced and
/// must still be refused, all in one group when the engine groups appends.
pub async fn an_append_after_a_failed_one_is_refused_in_the_same_group<L: EventLog>(log: L) {
    let a = ticket(1);
    log.append(append("c", a, 0, &["a1"])).await.unwrap();
    let w = append("w", a, 1, &["w"]);
    let retry = append("c", a, 1, &["bogus"]);
    let x = append_after("x", a, 2, &retry, &["x"]);
    let after_w = append_after("y", a, 2, &w, &["y"]);
    let (w, retry, x, after_w) = (log.append(w), log.append(retry), log.append(x), log.append(after_w));
    let (w, retry, x, after_w) = (w.await.unwrap(), retry.await.unwrap(), x.await, after_w.await.unwrap());
    assert!(matches!(w, AppendOutcome::Appended(_)));
    assert!(retry.is_duplicate());
    assert_eq!(x.unwrap_err(), LogError::BasisConflict { ticket_id: a });
    assert!(matches!(after_w, AppendOutcome::Appended(_)));
    assert_eq!(log.stream_version(a).unwrap(), 3);
}

pub async fn positions_are_gapless_and_versions_contiguous<L: EventLog>(log: L) {
    let (a, b) = (ticket(1), ticket(2));
    let first = log.append(append("c1", a, 0, &["a1", "a2"])).await.unwrap();
    let second = log.append(append("c2", b, 0, &["b1"])).await.unwrap();
    let third = log.append(append("c3", a, 2, &["a3"])).await.unwrap();
    assert!(!first.is_duplicate());
    let positions: Vec<u64> =
        [first, second, third].iter().flat_map(|o| o.events().iter().map(|e| e.position)).collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    assert_eq!(log.head(), 4);
    assert_eq!(log.stream_version(a).unwrap(), 3);
    let stream: Vec<(u64, u64)> = log.read_stream(a, 1).unwrap().iter().map(|e| (e.version, e.position)).collect();
    assert_eq!(stream, [(1, 1), (2, 2), (3, 4)]);
    assert_eq!(log.read_stream(a, 3).unwrap().len(), 1);
    assert!(log.read_stream(ticket(99), 1).unwrap().is_empty());
    let all: Vec<u64> = log.read_from(2, 10).unwrap().iter().map(|e| e.position).collect();
    assert_eq!(all, [2, 3, 4]);
    assert_eq!(log.read_from(1, 2).unwrap().len(), 2);
    assert!(log.read_from(5, 10).unwrap().is_empty());
}

pub async fn a_stale_expected_version_conflicts_and_writes_nothing<L: EventLog>(log: L) {
    let a = ticket(1);
    log.append(append("c1", a, 0, &["a1"])).await.unwrap();
    let err = log.append(append("c2", a, 0, &["again"])).await.unwrap_err();
    assert_eq!(err, LogError::VersionConflict { ticket_id: a, expected: 0, actual: 1 });
    assert_eq!(log.head(), 1);
    assert!(log.command(&CommandId::new("c2").unwrap()).unwrap().is_none());
    // The same command id can succeed later with the right version.
    log.append(append("c2", a, 1, &["a2"])).await.unwrap();
    assert_eq!(log.stream_version(a).unwrap(), 2);
}

pub async fn a_repeated_command_id_returns_the_original_events<L: EventLog>(log: L) {
    let a = ticket(1);
    let original = log.append(append("c1", a, 0, &["a1", "a2"])).await.unwrap();
    // Even with a different body and a stale version: the id decides.
    let again = log.append(append("c1", a, 0, &["other"])).await.unwrap();
    assert!(again.is_duplicate());
    assert_eq!(again.events(), original.events());
    assert_eq!(log.head(), 2);
}

pub async fn a_multi_stream_append_is_all_or_nothing<L: EventLog>(log: L) {
    let (parent, child, taken) = (ticket(1), ticket(2), ticket(3));
    log.append(append("c1", parent, 0, &["p1"])).await.unwrap();
    log.append(append("c2", taken, 0, &["t1"])).await.unwrap();
    let mut split = append("c3", parent, 1, &["linked"]);
    split.streams.push(StreamAppend {
        ticket_id: taken,
        expected_version: 0,
        after: None,
        events: vec![event(taken, "opened")],
    });
    assert!(matches!(log.append(split).await, Err(LogError::VersionConflict { .. })));
    assert_eq!((log.head(), log.stream_version(parent).unwrap()), (2, 1));

    let mut split = append("c4", parent, 1, &["linked"]);
    split.streams.push(StreamAppend {
        ticket_id: child,
        expected_version: 0,
        after: None,
        events: vec![event(child, "opened"), event(child, "linked")],
    });
    let events = log.append(split).await.unwrap().into_events();
    let placed: Vec<(TicketId, u64, u64)> = events.iter().map(|e| (e.event.ticket_id, e.version, e.position)).collect();
    assert_eq!(placed, [(parent, 2, 3), (child, 1, 4), (child, 2, 5)]);
}

pub async fn the_outbox_holds_what_is_not_yet_published<L: EventLog>(log: L) {
    log.append(append("c1", ticket(1), 0, &["a", "b", "c"])).await.unwrap();
    assert_eq!(log.outbox_pending(10).unwrap(), [1, 2, 3]);
    assert_eq!(log.outbox_pending(2).unwrap(), [1, 2]);
    log.mark_published(2).unwrap();
    assert_eq!((log.published().unwrap(), log.outbox_pending(10).unwrap()), (2, vec![3]));
    log.mark_published(1).unwrap();
    assert_eq!(log.published().unwrap(), 2, "the watermark never moves back");
    log.mark_published(99).unwrap();
    assert_eq!(log.published().unwrap(), 3, "nor past the head");
    assert!(log.outbox_pending(10).unwrap().is_empty());
    log.append(append("c2", ticket(1), 3, &["d"])).await.unwrap();
    assert_eq!(log.outbox_pending(10).unwrap(), [4]);
    // The stream lost what was published after 1: moved back on purpose, never forward so.
    log.rewind_published(1).unwrap();
    assert_eq!((log.published().unwrap(), log.outbox_pending(10).unwrap()), (1, vec![2, 3, 4]));
    log.rewind_published(3).unwrap();
    assert_eq!(log.published().unwrap(), 1, "a rewind never moves the watermark forward");
    log.rewind_published(0).unwrap();
    assert_eq!(log.outbox_pending(2).unwrap(), [1, 2]);
    // The stream's sequence at the last event published: recorded as it is, back or forward.
    assert_eq!(log.published_sequence().unwrap(), 0);
    log.set_published_sequence(41).unwrap();
    log.set_published_sequence(7).unwrap();
    assert_eq!(log.published_sequence().unwrap(), 7);
}

pub async fn commands_are_stored_with_their_positions<L: EventLog>(log: L) {
    let request = append("c1", ticket(1), 0, &["a", "b"]);
    log.append(request.clone()).await.unwrap();
    log.append(append("c2", ticket(2), 0, &["c"])).await.unwrap();
    let stored = log.command(&CommandId::new("c1").unwrap()).unwrap().unwrap();
    assert_eq!(stored.command, request.command);
    assert_eq!((stored.first_position, stored.last_position), (1, 2));
    let ids: Vec<String> = log.commands_from(1, 10).unwrap().iter().map(|c| c.command.id.to_string()).collect();
    assert_eq!(ids, ["c1", "c2"]);
    assert_eq!(log.commands_from(2, 10).unwrap().len(), 1);
}

pub async fn a_subscription_catches_up_then_follows<L: EventLog>(log: L) {
    log.append(append("c1", ticket(1), 0, &["a", "b"])).await.unwrap();
    let mut sub = log.subscribe(2);
    let first: Vec<u64> = sub.next_batch().await.unwrap().iter().map(|e| e.position).collect();
    assert_eq!(first, [2]);
    let writer = log.clone();
    let task = tokio::spawn(async move { writer.append(append("c2", ticket(1), 2, &["c"])).await.unwrap() });
    let next = tokio::time::timeout(Duration::from_secs(10), sub.next_batch()).await.expect("no live event").unwrap();
    assert_eq!(next.iter().map(|e| e.position).collect::<Vec<_>>(), [3]);
    task.await.unwrap();
    assert_eq!(sub.position(), 4);
}

pub async fn empty_appends_are_refused<L: EventLog>(log: L) {
    let mut request = append("c1", ticket(1), 0, &[]);
    assert!(matches!(log.append(request.clone()).await, Err(LogError::InvalidAppend(_))));
    request.streams.clear();
    assert!(matches!(log.append(request).await, Err(LogError::InvalidAppend(_))));
    let mut wrong = append("c2", ticket(1), 0, &["a"]);
    wrong.streams[0].events[0].ticket_id = ticket(2);
    assert!(matches!(log.append(wrong).await, Err(LogError::InvalidAppend(_))));
    assert_eq!(log.head(), 0);
}
