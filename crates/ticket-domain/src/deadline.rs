//! The deadline index: every pending SLA firing, a pure projection of the events' clock plans.
//!
//! For every running clock it holds the instants the events stated (warnings, the due instant,
//! the end of a no-response window) and forgets them as events stop, pause, retarget or record
//! them. Each firing has a deterministic identity (ticket, metric, clock cycle, kind), used as the
//! command id of the command it issues, so a firing is recorded once however often it is issued.
//! The timer (`ticket-timer`) runs it against the log and checkpoints it; what-if replays it.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::{
    Actor, ActorId, ActorKind, ClockEffect, ClockPlan, Command, CommandBody, CommandId, EventKind, IdError, Metric,
    RecordedEvent, TicketId, Timestamp,
};

/// What a firing records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FiringKind {
    /// A warning threshold (percent of the target) is reached.
    Warning(u8),
    /// An SLA clock is due.
    Breach,
    /// The customer's no-response window ended: lower the severity.
    NoResponse,
    /// An SLA clock was already due (at `due_at`) when the ticket's history was imported: the
    /// breach is recorded as detected at the import's append instant (the firing's `at`), once
    /// the import has gone quiet. Warnings and no-response windows past at import are not fired
    /// at all.
    BreachAtImport { due_at: Timestamp },
}

/// One instant the timer acts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Firing {
    pub at: Timestamp,
    pub ticket: TicketId,
    pub metric: Metric,
    pub cycle: u32,
    pub kind: FiringKind,
}

impl Firing {
    /// The deterministic command id: the same firing always has the same id.
    pub fn command_id(&self) -> Result<CommandId, IdError> {
        let kind = match self.kind {
            FiringKind::Warning(p) => format!("warning-{p}"),
            // The same breach as the one fired live: recorded once, whichever comes first.
            FiringKind::Breach | FiringKind::BreachAtImport { .. } => "breach".to_owned(),
            FiringKind::NoResponse => "no-response".to_owned(),
        };
        CommandId::new(format!("timer:{}:{}:{}:{kind}", self.ticket, self.metric, self.cycle))
    }

    /// The command that records this firing, issued at `now` (at or after `self.at`; later when
    /// the timer was down). A breach at import is issued at the import's instant, `self.at`.
    pub fn command(&self, now: Timestamp, actor: &ActorId) -> Result<Command, IdError> {
        let issued_at = match self.kind {
            FiringKind::BreachAtImport { .. } => self.at,
            FiringKind::Warning(_) | FiringKind::Breach | FiringKind::NoResponse => now.max(self.at),
        };
        let body = match self.kind {
            FiringKind::Warning(threshold_percent) => CommandBody::RecordSlaWarning {
                metric: self.metric,
                cycle: self.cycle,
                threshold_percent,
                warn_at: self.at,
            },
            FiringKind::Breach => CommandBody::RecordSlaBreach {
                metric: self.metric,
                cycle: self.cycle,
                due_at: self.at,
                at_import: false,
            },
            FiringKind::NoResponse => CommandBody::DowngradeForNoResponse { cycle: self.cycle, due_at: self.at },
            FiringKind::BreachAtImport { due_at } => {
                CommandBody::RecordSlaBreach { metric: self.metric, cycle: self.cycle, due_at, at_import: true }
            }
        };
        Ok(Command {
            id: self.command_id()?,
            ticket_id: self.ticket,
            actor: Actor { kind: ActorKind::System, id: actor.clone() },
            issued_at,
            body,
        })
    }
}

/// The current cycle of one clock, as far as the timer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClockEntry {
    cycle: u32,
    breached: bool,
    pending: Vec<Firing>,
}

/// The key of one clock in a [`DeadlineIndex`].
pub type ClockKey = (TicketId, Metric);

/// Every pending firing, ordered by instant; a projection of the log, position-guarded.
///
/// With [`DeadlineIndex::track_changes`] it also records which clocks changed (by an applied
/// event, a settle, a breach past at import) since the last [`DeadlineIndex::take_changes`], so
/// that a durable copy can be kept up to date by writing only those (the timer's state store).
#[derive(Debug, Default, Clone)]
pub struct DeadlineIndex {
    clocks: HashMap<ClockKey, ClockEntry, Hasher>,
    queue: BTreeSet<Firing>,
    position: u64,
    /// The clocks changed since the last `take_changes`; `None`: changes are not tracked.
    changed: Option<HashSet<ClockKey, Hasher>>,
}

/// Every event applied looks its clocks up: foldhash (seeded per process, so ids a client
/// chooses cannot be aimed at one bucket) rather than std's slower SipHash.
type Hasher = foldhash::fast::RandomState;

/// What changed in a [`DeadlineIndex`] since the last [`DeadlineIndex::take_changes`]: each
/// changed clock with its current entry (`None`: the index no longer tracks it), and the
/// position the index reflects. Writing these over a copy of the index as it was at the last
/// `take_changes` gives a copy of the index as it is now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub position: u64,
    pub clocks: Vec<(ClockKey, Option<ClockEntryOwned>)>,
}

impl Changes {
    /// The clocks that changed.
    pub fn keys(&self) -> impl Iterator<Item = ClockKey> + '_ {
        self.clocks.iter().map(|(key, _)| *key)
    }
}

impl DeadlineIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last position applied.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Pending firings.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The earliest pending firing.
    pub fn next(&self) -> Option<&Firing> {
        self.queue.first()
    }

    /// Pending firings due at or before `now`, earliest first.
    pub fn due(&self, now: Timestamp) -> impl Iterator<Item = &Firing> {
        self.queue.iter().take_while(move |f| f.at <= now)
    }

    /// Starts recording which clocks change (see [`DeadlineIndex::take_changes`]); what
    /// changed before is not recorded.
    pub fn track_changes(&mut self) {
        if self.changed.is_none() {
            self.changed = Some(HashSet::default());
        }
    }

    /// True when changes are recorded.
    pub fn tracks_changes(&self) -> bool {
        self.changed.is_some()
    }

    /// Clocks changed since the last [`DeadlineIndex::take_changes`] (0 when not tracking).
    pub fn changed(&self) -> usize {
        self.changed.as_ref().map_or(0, HashSet::len)
    }

    /// Each clock changed since the last call, with its current entry (`None`: removed), and
    /// the position; the record starts empty again. Empty when changes are not tracked.
    pub fn take_changes(&mut self) -> Changes {
        let keys = self.changed.as_mut().map(std::mem::take).unwrap_or_default();
        let clocks = keys
            .into_iter()
            .map(|key| {
                let entry = self.clocks.get(&key).map(|e| ClockEntryOwned {
                    ticket: key.0,
                    metric: key.1,
                    cycle: e.cycle,
                    breached: e.breached,
                    pending: e.pending.clone(),
                });
                (key, entry)
            })
            .collect();
        Changes { position: self.position, clocks }
    }

    /// Records `keys` as changed again (changes taken but not written, to be written with the
    /// next ones). Nothing when changes are not tracked.
    pub fn mark_changed(&mut self, keys: impl IntoIterator<Item = ClockKey>) {
        if let Some(changed) = self.changed.as_mut() {
            changed.extend(keys);
        }
    }

    fn touch(&mut self, key: ClockKey) {
        if let Some(changed) = self.changed.as_mut() {
            changed.insert(key);
        }
    }

    /// Applies one stored event. An event at or below the applied position is ignored, so
    /// replaying a batch twice is harmless.
    pub fn apply(&mut self, recorded: &RecordedEvent) {
        if recorded.position <= self.position {
            return;
        }
        self.position = recorded.position;
        let ticket = recorded.event.ticket_id;
        for change in recorded.event.kind.clocks() {
            let key = (ticket, change.metric);
            self.touch(key);
            match change.effect {
                ClockEffect::Started => {
                    self.replace(key, change.cycle, false, change.plan.as_ref());
                }
                ClockEffect::Resumed | ClockEffect::Retargeted => {
                    let breached = self.clocks.get(&key).is_some_and(|c| c.cycle == change.cycle && c.breached);
                    self.replace(key, change.cycle, breached, change.plan.as_ref());
                }
                ClockEffect::Paused => {
                    let breached = self.clocks.get(&key).is_some_and(|c| c.cycle == change.cycle && c.breached);
                    self.replace(key, change.cycle, breached, None);
                }
                ClockEffect::Stopped(_) => self.remove(key),
            }
        }
        match &recorded.event.kind {
            EventKind::SlaWarning { metric, cycle, threshold_percent, .. } => {
                self.touch((ticket, *metric));
                self.forget((ticket, *metric), *cycle, |k| k == FiringKind::Warning(*threshold_percent));
            }
            EventKind::SlaBreached { metric, cycle, .. } => {
                self.touch((ticket, *metric));
                if let Some(entry) = self.clocks.get_mut(&(ticket, *metric)).filter(|c| c.cycle == *cycle) {
                    entry.breached = true;
                }
                // A breach supersedes the warnings of its cycle.
                self.forget((ticket, *metric), *cycle, |_| true);
            }
            EventKind::Opened(_)
            | EventKind::SeveritySet { .. }
            | EventKind::AgentResponded { .. }
            | EventKind::CustomerInfoRequested { .. }
            | EventKind::CustomerResponded { .. }
            | EventKind::DowngradedForNoResponse { .. }
            | EventKind::Escalated { .. }
            | EventKind::Resolved { .. }
            | EventKind::Reopened { .. }
            | EventKind::Linked { .. } => {}
        }
        if recorded.imported {
            self.past_at_import(ticket, recorded.recorded_at);
        }
    }

    /// An imported event of `ticket` was appended at `imported_at`: what its clocks had due by
    /// then was past at import. Warnings and no-response windows are not fired; breaches are
    /// recorded as detected at `imported_at`.
    fn past_at_import(&mut self, ticket: TicketId, imported_at: Timestamp) {
        for metric in Metric::ALL {
            if self.clocks.contains_key(&(ticket, metric)) {
                self.touch((ticket, metric));
            }
            let Some(entry) = self.clocks.get_mut(&(ticket, metric)) else { continue };
            let queue = &mut self.queue;
            let mut pending = Vec::with_capacity(entry.pending.len());
            for f in entry.pending.drain(..) {
                let past = f.at <= imported_at;
                let kind = match f.kind {
                    FiringKind::Breach if past => Some(FiringKind::BreachAtImport { due_at: f.at }),
                    FiringKind::BreachAtImport { due_at } => Some(FiringKind::BreachAtImport { due_at }),
                    FiringKind::Warning(_) | FiringKind::NoResponse if past => None,
                    FiringKind::Breach | FiringKind::Warning(_) | FiringKind::NoResponse => Some(f.kind),
                };
                let at = match kind {
                    Some(FiringKind::BreachAtImport { .. }) => f.at.max(imported_at),
                    Some(FiringKind::Breach | FiringKind::Warning(_) | FiringKind::NoResponse) | None => f.at,
                };
                let moved = Firing { at, kind: kind.unwrap_or(f.kind), ..f };
                if kind.is_none() || moved != f {
                    queue.remove(&f);
                }
                if kind.is_some() {
                    queue.insert(moved);
                    pending.push(moved);
                }
            }
            entry.pending = pending;
            if entry.pending.is_empty() && !entry.breached {
                self.clocks.remove(&(ticket, metric));
            }
        }
    }

    /// Forgets one firing: it was recorded, or refused as moot. The events that recorded it,
    /// applied later, find nothing left to forget.
    pub fn settle(&mut self, firing: &Firing) {
        if !self.queue.remove(firing) {
            return;
        }
        let key = (firing.ticket, firing.metric);
        self.touch(key);
        if let Some(entry) = self.clocks.get_mut(&key) {
            entry.pending.retain(|f| f != firing);
            if entry.pending.is_empty() && !entry.breached {
                self.clocks.remove(&key);
            }
        }
    }

    /// Every pending firing, earliest first.
    pub fn iter(&self) -> impl Iterator<Item = &Firing> {
        self.queue.iter()
    }

    /// Clocks the index tracks (with pending firings, or breached in their current cycle).
    pub fn clocks(&self) -> usize {
        self.clocks.len()
    }

    fn replace(&mut self, key: (TicketId, Metric), cycle: u32, breached: bool, plan: Option<&ClockPlan>) {
        self.remove(key);
        let (ticket, metric) = key;
        let mut pending = Vec::new();
        if let Some(plan) = plan {
            if metric.is_sla() {
                pending.extend(plan.warnings.iter().map(|w| Firing {
                    at: w.at,
                    ticket,
                    metric,
                    cycle,
                    kind: FiringKind::Warning(w.threshold_percent),
                }));
            }
            if let Some(due) = plan.due_at.filter(|_| !breached) {
                let kind = if metric.is_sla() { FiringKind::Breach } else { FiringKind::NoResponse };
                pending.push(Firing { at: due, ticket, metric, cycle, kind });
            }
        }
        if breached {
            pending.retain(|f| !matches!(f.kind, FiringKind::Warning(_)));
        }
        if pending.is_empty() && !breached {
            // Nothing to fire and nothing to remember: the next change of the clock says it all.
            return;
        }
        self.queue.extend(pending.iter().copied());
        pending.shrink_to_fit();
        self.clocks.insert(key, ClockEntry { cycle, breached, pending });
    }

    fn remove(&mut self, key: (TicketId, Metric)) {
        if let Some(entry) = self.clocks.remove(&key) {
            for f in &entry.pending {
                self.queue.remove(f);
            }
        }
    }

    fn forget(&mut self, key: (TicketId, Metric), cycle: u32, which: impl Fn(FiringKind) -> bool) {
        let Some(entry) = self.clocks.get_mut(&key).filter(|c| c.cycle == cycle) else { return };
        let queue = &mut self.queue;
        entry.pending.retain(|f| {
            let drop = which(f.kind);
            if drop {
                queue.remove(f);
            }
            !drop
        });
        if entry.pending.is_empty() && !entry.breached {
            self.clocks.remove(&key);
        }
    }

    /// Each clock the index tracks: its key, cycle, whether it breached in that cycle, and its
    /// pending firings (for the timer's checkpoint image).
    pub fn clock_entries(&self) -> impl Iterator<Item = ClockEntryRef<'_>> {
        self.clocks.iter().map(|(&(ticket, metric), e)| ClockEntryRef {
            ticket,
            metric,
            cycle: e.cycle,
            breached: e.breached,
            pending: &e.pending,
        })
    }

    /// An index from clock entries as [`DeadlineIndex::clock_entries`] lists them (the timer's
    /// checkpoint image), reflecting the log up to `position`.
    pub fn from_clock_entries(position: u64, entries: impl IntoIterator<Item = ClockEntryOwned>) -> Self {
        let mut index = Self { position, ..Self::default() };
        // (not tracking changes: the entries are what a durable copy already holds)
        for ClockEntryOwned { ticket, metric, cycle, breached, pending } in entries {
            index.queue.extend(pending.iter().copied());
            index.clocks.insert((ticket, metric), ClockEntry { cycle, breached, pending });
        }
        index
    }
}

/// One clock of a [`DeadlineIndex`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockEntryRef<'a> {
    pub ticket: TicketId,
    pub metric: Metric,
    pub cycle: u32,
    pub breached: bool,
    pub pending: &'a [Firing],
}

impl ClockEntryRef<'_> {
    /// The same entry, owned.
    pub fn to_entry(&self) -> ClockEntryOwned {
        ClockEntryOwned {
            ticket: self.ticket,
            metric: self.metric,
            cycle: self.cycle,
            breached: self.breached,
            pending: self.pending.to_vec(),
        }
    }
}

/// One clock of a [`DeadlineIndex`], to build one from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockEntryOwned {
    pub ticket: TicketId,
    pub metric: Metric,
    pub cycle: u32,
    pub breached: bool,
    pub pending: Vec<Firing>,
}

#[cfg(test)]
mod tests;
