//! The SLA board: open tickets ordered by their nearest due instant (the most overdue first),
//! with at-risk (a warning recorded in the clock's cycle) and breached marked. It follows the
//! clock plans the events state, so it needs no policy.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use ticket_domain::{
    ClockChange, ClockEffect, CustomerId, EventKind, Metric, MetricMap, RecordedEvent, Severity, TicketId, Timestamp,
};
use ticket_log::{StateBatch, StateSpace};

use crate::ReadModel;
use crate::rows::{Row, Rows, StateError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct BoardClock {
    cycle: u32,
    due_at: Option<Timestamp>,
    warned: bool,
    breached: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardTicket {
    customer: CustomerId,
    severity: Severity,
    resolved: bool,
    clocks: MetricMap<BoardClock>,
    /// The ticket's key in the order, while it is on the board.
    key: Option<(Timestamp, Metric)>,
}

impl Row for BoardTicket {
    fn dormant(&self) -> bool {
        self.resolved
    }
}

/// The board's rows (open tickets in memory, resolved ones in the store) and its order, in
/// memory: the open tickets, which are what it shows.
#[derive(Debug)]
pub struct Board {
    tickets: Rows<BoardTicket>,
    order: BTreeSet<(Timestamp, TicketId)>,
}

/// One line of the board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoardEntry {
    pub ticket_id: TicketId,
    pub customer: CustomerId,
    pub severity: Severity,
    pub metric: Metric,
    pub cycle: u32,
    pub due_at: Timestamp,
    /// A warning threshold of this clock's cycle has passed.
    pub at_risk: bool,
    pub breached: bool,
}

impl ReadModel for Board {
    const NAME: &'static str = "board";
    const FORMAT: u32 = 2;

    fn empty(space: Option<Arc<dyn StateSpace>>) -> Self {
        Self { tickets: Rows::new(space), order: BTreeSet::new() }
    }

    fn load(space: Arc<dyn StateSpace>) -> Result<Self, StateError> {
        let tickets = Rows::<BoardTicket>::load(space)?;
        let order = tickets.live().filter_map(|(id, t)| t.key.map(|(due, _)| (due, *id))).collect();
        Ok(Self { tickets, order })
    }

    fn write(&self, batch: &mut StateBatch) -> Result<(), StateError> {
        self.tickets.write(batch)
    }

    fn written(&mut self) {
        self.tickets.written();
    }

    fn dirty(&self) -> usize {
        self.tickets.dirty_len()
    }

    fn live_rows(&self) -> usize {
        self.tickets.live_len()
    }

    fn unreadable(&self) -> Option<&str> {
        self.tickets.unreadable()
    }

    fn apply(&mut self, recorded: &RecordedEvent) {
        let id = recorded.event.ticket_id;
        let kind = &recorded.event.kind;
        let ticket = if let EventKind::Opened(o) = kind {
            self.tickets.get_or_insert_with(id, || BoardTicket {
                customer: o.customer.clone(),
                severity: o.severity,
                resolved: false,
                clocks: MetricMap::new(),
                key: None,
            })
        } else {
            let Some(ticket) = self.tickets.get_mut(id) else { return };
            ticket
        };
        for change in kind.clocks() {
            apply_clock(&mut ticket.clocks, change);
        }
        match kind {
            EventKind::SeveritySet { to, .. } | EventKind::DowngradedForNoResponse { to, .. } => ticket.severity = *to,
            EventKind::Resolved { .. } => ticket.resolved = true,
            EventKind::Reopened { .. } => ticket.resolved = false,
            EventKind::SlaWarning { metric, cycle, .. } => {
                if let Some(c) = ticket.clocks.get_mut(metric).filter(|c| c.cycle == *cycle) {
                    c.warned = true;
                }
            }
            EventKind::SlaBreached { metric, cycle, .. } => {
                if let Some(c) = ticket.clocks.get_mut(metric).filter(|c| c.cycle == *cycle) {
                    c.breached = true;
                }
            }
            EventKind::Opened(_)
            | EventKind::AgentResponded { .. }
            | EventKind::CustomerInfoRequested { .. }
            | EventKind::CustomerResponded { .. }
            | EventKind::Escalated { .. }
            | EventKind::Linked { .. } => {}
        }
        let key = if ticket.resolved {
            None
        } else {
            ticket.clocks.iter().filter_map(|(m, c)| c.due_at.map(|d| (d, *m))).min()
        };
        if key != ticket.key {
            if let Some((due, _)) = ticket.key {
                self.order.remove(&(due, id));
            }
            if let Some((due, _)) = key {
                self.order.insert((due, id));
            }
            ticket.key = key;
        }
    }
}

fn apply_clock(clocks: &mut MetricMap<BoardClock>, change: &ClockChange) {
    if !change.metric.is_sla() {
        return;
    }
    let due_at = change.plan.as_ref().and_then(|p| p.due_at);
    match change.effect {
        ClockEffect::Started => {
            clocks.insert(change.metric, BoardClock { cycle: change.cycle, due_at, warned: false, breached: false });
        }
        ClockEffect::Resumed | ClockEffect::Retargeted | ClockEffect::Paused => {
            let clock = clocks.get_or_insert_with(change.metric, || BoardClock {
                cycle: change.cycle,
                due_at: None,
                warned: false,
                breached: false,
            });
            if clock.cycle != change.cycle {
                *clock = BoardClock { cycle: change.cycle, due_at: None, warned: false, breached: false };
            }
            clock.due_at = if matches!(change.effect, ClockEffect::Paused) { None } else { due_at };
        }
        ClockEffect::Stopped(_) => {
            clocks.remove(&change.metric);
        }
    }
}

impl Board {
    /// Open tickets with a running SLA clock.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The first `limit` lines, soonest (or most overdue) first.
    pub fn entries(&self, limit: usize) -> Vec<BoardEntry> {
        self.order.iter().take(limit).filter_map(|(_, id)| self.entry(*id)).collect()
    }

    /// The ticket's line, while it is on the board.
    pub fn entry(&self, id: TicketId) -> Option<BoardEntry> {
        let t = self.tickets.get_live(id)?;
        let (due_at, metric) = t.key?;
        let clock = t.clocks.get(&metric)?;
        Some(BoardEntry {
            ticket_id: id,
            customer: t.customer.clone(),
            severity: t.severity,
            metric,
            cycle: clock.cycle,
            due_at,
            at_risk: clock.warned,
            breached: clock.breached,
        })
    }
}
