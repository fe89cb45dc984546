//! 10,000 tickets with random lifecycles across a daylight-saving change, through the engine on
//! a simulated clock, against a reference model written here from the policy's tables
//! (`deploy/policies/professional.toml`): its own clocks, its own business calendar walk (on
//! chrono-tz), nothing from the engine's code.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{Datelike, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc, Weekday};
use futures::future::join_all;
use ticket_domain::testing::{open, text};
use ticket_domain::{CommandBody, EventKind, Metric, Severity, TicketId, Timestamp};

use super::{Engine, new_ticket};
use crate::shipped_policy;

const TICKETS: usize = 10_000;

/// splitmix64: a small deterministic generator, seeded per run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Premier,
    Professional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Respond,
    Ask,
    Reply,
    Resolve,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cal {
    /// 24x7: business time is wall time.
    Always,
    /// Monday to Friday 08:00-18:00 Europe/Berlin, with the policy's holidays.
    PremierOffice,
}

/// The policy tables, transcribed: (business time, calendar).
fn target(plan: Plan, metric: Metric, severity: Severity) -> Option<(TimeDelta, Cal)> {
    let h = TimeDelta::hours;
    let day = h(10);
    use Severity::{A, B, C};
    match (plan, metric, severity) {
        (Plan::Premier, Metric::FirstResponse, A) => Some((TimeDelta::minutes(30), Cal::Always)),
        (Plan::Premier, Metric::FirstResponse, B) => Some((h(2), Cal::Always)),
        (Plan::Premier, Metric::FirstResponse, C) => Some((h(4), Cal::Always)),
        (Plan::Premier, Metric::FollowUp, A) => Some((h(2), Cal::Always)),
        (Plan::Premier, Metric::FollowUp, B) => Some((h(8), Cal::Always)),
        (Plan::Premier, Metric::Resolution, A) => Some((day * 2, Cal::PremierOffice)),
        (Plan::Premier, Metric::Resolution, B) => Some((day * 5, Cal::PremierOffice)),
        (Plan::Premier, Metric::Resolution, C) => Some((day * 10, Cal::PremierOffice)),
        (Plan::Professional, Metric::FirstResponse, A) => Some((h(2), Cal::Always)),
        (Plan::Professional, Metric::FirstResponse, B) => Some((h(4), Cal::Always)),
        (Plan::Professional, Metric::FirstResponse, C) => Some((h(8), Cal::Always)),
        (_, Metric::NoResponse, A) => Some((h(48), Cal::Always)),
        (_, Metric::NoResponse, B) => Some((h(72), Cal::Always)),
        _ => None,
    }
}

fn lower(severity: Severity) -> Severity {
    match severity {
        Severity::A => Severity::B,
        Severity::B | Severity::C => Severity::C,
    }
}

/// The business intervals of one local date, in UTC.
fn office_hours(date: NaiveDate) -> Option<(Timestamp, Timestamp)> {
    const HOLIDAYS: [(i32, u32, u32); 5] =
        [(2026, 12, 24), (2026, 12, 25), (2026, 12, 26), (2026, 12, 31), (2027, 1, 1)];
    if matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
        || HOLIDAYS.iter().any(|(y, m, d)| NaiveDate::from_ymd_opt(*y, *m, *d) == Some(date))
    {
        return None;
    }
    let local = |h| {
        chrono_tz::Europe::Berlin
            .from_local_datetime(&date.and_time(NaiveTime::from_hms_opt(h, 0, 0).unwrap()))
            .single()
            .unwrap()
            .with_timezone(&Utc)
    };
    Some((local(8), local(18)))
}

fn berlin_date(t: Timestamp) -> NaiveDate {
    t.with_timezone(&chrono_tz::Europe::Berlin).date_naive()
}

/// Business time between two instants.
fn business(cal: Cal, from: Timestamp, to: Timestamp) -> TimeDelta {
    match cal {
        Cal::Always => to - from,
        Cal::PremierOffice => {
            let mut total = TimeDelta::zero();
            let mut date = berlin_date(from);
            while date <= berlin_date(to) {
                if let Some((open, close)) = office_hours(date) {
                    let (a, b) = (open.max(from), close.min(to));
                    if a < b {
                        total += b - a;
                    }
                }
                date = date.succ_opt().unwrap();
            }
            total
        }
    }
}

/// The instant at which `amount` of business time has passed since `from`.
fn after(cal: Cal, from: Timestamp, amount: TimeDelta) -> Timestamp {
    match cal {
        Cal::Always => from + amount,
        Cal::PremierOffice => {
            let mut left = amount;
            let mut date = berlin_date(from);
            loop {
                if let Some((open, close)) = office_hours(date) {
                    let start = open.max(from);
                    if start < close {
                        if left <= close - start {
                            return start + left;
                        }
                        left -= close - start;
                    }
                }
                date = date.succ_opt().unwrap();
            }
        }
    }
}

#[derive(Debug, Clone)]
struct RefClock {
    cycle: u32,
    target: Option<(TimeDelta, Cal)>,
    elapsed: TimeDelta,
    running_since: Option<Timestamp>,
    breached: bool,
}

impl RefClock {
    fn due(&self) -> Option<Timestamp> {
        let (amount, cal) = self.target?;
        let since = self.running_since?;
        (!self.breached).then(|| after(cal, since, (amount - self.elapsed).max(TimeDelta::zero())))
    }

    fn pause(&mut self, at: Timestamp) {
        if let (Some(since), Some((_, cal))) = (self.running_since.take(), self.target) {
            self.elapsed += business(cal, since, at);
        }
    }
}

/// What the reference expects of one ticket.
#[derive(Debug, Default)]
struct Expected {
    breaches: BTreeSet<(Metric, u32, Timestamp)>,
    downgrades: BTreeSet<(Severity, Severity, Timestamp)>,
}

struct RefTicket {
    plan: Plan,
    severity: Severity,
    awaiting: bool,
    clocks: BTreeMap<Metric, RefClock>,
    /// The no-response window: cycle and end.
    window: Option<(u32, Option<Timestamp>)>,
    expected: Expected,
}

impl RefTicket {
    fn open(plan: Plan, severity: Severity, at: Timestamp) -> Self {
        let mut t = Self {
            plan,
            severity,
            awaiting: false,
            clocks: BTreeMap::new(),
            window: None,
            expected: Expected::default(),
        };
        t.start(Metric::FirstResponse, at);
        t.start(Metric::Resolution, at);
        t
    }

    fn start(&mut self, metric: Metric, at: Timestamp) {
        let cycle = self.clocks.get(&metric).map_or(1, |c| c.cycle + 1);
        let target = target(self.plan, metric, self.severity);
        self.clocks.insert(
            metric,
            RefClock { cycle, target, elapsed: TimeDelta::zero(), running_since: Some(at), breached: false },
        );
    }

    fn stop(&mut self, metric: Metric, at: Timestamp) {
        if let Some(clock) = self.clocks.get_mut(&metric) {
            clock.pause(at);
            clock.target = None;
        }
    }

    fn start_window(&mut self, at: Timestamp) {
        let cycle = self.window.map_or(1, |w| w.0 + 1);
        let end = target(self.plan, Metric::NoResponse, self.severity).map(|(amount, _)| at + amount);
        self.window = Some((cycle, end));
    }

    /// The earliest deadline not yet handled, if it is at or before `until`.
    fn next_deadline(&self, until: Timestamp) -> Option<(Timestamp, Option<Metric>)> {
        let mut next: Option<(Timestamp, Option<Metric>)> = None;
        for (metric, clock) in &self.clocks {
            if let Some(due) = clock.due().filter(|d| *d <= until)
                && next.is_none_or(|n| due < n.0)
            {
                next = Some((due, Some(*metric)));
            }
        }
        if let Some((_, Some(end))) = self.window.filter(|w| w.1.is_some_and(|e| e <= until))
            && next.is_none_or(|n| end < n.0)
        {
            next = Some((end, None));
        }
        next
    }

    /// Handles every deadline at or before `until`, in order.
    fn run_until(&mut self, until: Timestamp) {
        while let Some((at, which)) = self.next_deadline(until) {
            match which {
                Some(metric) => {
                    let clock = self.clocks.get_mut(&metric).unwrap();
                    clock.breached = true;
                    self.expected.breaches.insert((metric, clock.cycle, at));
                }
                None => {
                    let from = self.severity;
                    let to = lower(from);
                    self.expected.downgrades.insert((from, to, at));
                    self.severity = to;
                    for metric in [Metric::FirstResponse, Metric::FollowUp, Metric::Resolution] {
                        if let Some(clock) = self.clocks.get_mut(&metric).filter(|c| c.target.is_some()) {
                            clock.target = target(self.plan, metric, to);
                        }
                    }
                    self.start_window(at);
                }
            }
        }
    }

    fn step(&mut self, step: Step, at: Timestamp) {
        self.run_until(at);
        match step {
            Step::Respond | Step::Ask => {
                self.stop(Metric::FirstResponse, at);
                self.stop(Metric::FollowUp, at);
                self.start(Metric::FollowUp, at);
                let awaiting = self.awaiting || step == Step::Ask;
                if awaiting {
                    for metric in [Metric::FollowUp, Metric::Resolution] {
                        if let Some(clock) = self.clocks.get_mut(&metric) {
                            clock.pause(at);
                        }
                    }
                }
                if step == Step::Ask {
                    self.awaiting = true;
                    self.start_window(at);
                }
            }
            Step::Reply => {
                self.awaiting = false;
                self.window = self.window.map(|(cycle, _)| (cycle, None));
                for metric in [Metric::FollowUp, Metric::Resolution] {
                    if let Some(clock) = self.clocks.get_mut(&metric).filter(|c| c.target.is_some())
                        && clock.running_since.is_none()
                    {
                        clock.running_since = Some(at);
                    }
                }
            }
            Step::Resolve => {
                for metric in [Metric::FirstResponse, Metric::FollowUp, Metric::Resolution] {
                    self.stop(metric, at);
                }
                self.window = self.window.map(|(cycle, _)| (cycle, None));
            }
        }
    }
}

fn body(step: Step) -> CommandBody {
    match step {
        Step::Respond => CommandBody::RecordAgentResponse { message: text("an update") },
        Step::Ask => CommandBody::RequestCustomerInfo { request: text("which device?") },
        Step::Reply => CommandBody::RecordCustomerReply { message: text("the tablet") },
        Step::Resolve => CommandBody::Resolve { resolution: text("fixed") },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_lifecycles_across_a_dst_change_match_a_reference_computation() {
    let seed = std::env::var("TIMER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7157_2026_u64);
    let mut rng = Rng(seed);
    // Berlin leaves summer time on Sunday 25 October 2026 at 03:00.
    let start = Utc.with_ymd_and_hms(2026, 10, 19, 0, 0, 0).unwrap();
    let grid = TimeDelta::minutes(5);

    // The script: every ticket's commands at grid instants.
    let mut script: BTreeMap<Timestamp, Vec<(TicketId, CommandBody)>> = BTreeMap::new();
    let mut references: HashMap<TicketId, RefTicket> = HashMap::new();
    let mut last = start;
    for _ in 0..TICKETS {
        let ticket = new_ticket();
        let plan = if rng.below(10) < 7 { Plan::Premier } else { Plan::Professional };
        let severity = [Severity::A, Severity::B, Severity::C][rng.below(3) as usize];
        let mut at = start + grid * (rng.below(10 * 288) as i32);
        let plan_id = if plan == Plan::Premier { "premier-example" } else { "professional" };
        script.entry(at).or_default().push((ticket, open(plan_id, "technical", severity)));
        let mut reference = RefTicket::open(plan, severity, at);
        let mut awaiting = false;
        for _ in 0..1 + rng.below(6) {
            let gap = if rng.below(10) < 6 { 1 + rng.below(36) } else { 36 + rng.below(720) };
            at += grid * (gap as i32);
            let step = match rng.below(20) {
                0..7 => Step::Respond,
                7..11 if !awaiting => Step::Ask,
                7..11 => Step::Respond,
                11..17 if awaiting => Step::Reply,
                11..17 => Step::Ask,
                _ => Step::Resolve,
            };
            awaiting = match step {
                Step::Ask => true,
                Step::Reply => false,
                Step::Respond | Step::Resolve => awaiting,
            };
            reference.step(step, at);
            script.entry(at).or_default().push((ticket, body(step)));
            if step == Step::Resolve {
                break;
            }
        }
        last = last.max(at);
        references.insert(ticket, reference);
    }
    let end = last + TimeDelta::days(8);
    for reference in references.values_mut() {
        reference.run_until(end);
    }

    // The engine, stepping its clock through every firing instant (as a real clock passes them).
    let engine = Engine::start(shipped_policy("professional.toml"), start);
    for (at, commands) in &script {
        engine.step_to(*at).await;
        let results = join_all(commands.iter().map(|(ticket, body)| engine.execute(*ticket, body.clone()))).await;
        for (result, (ticket, body)) in results.iter().zip(commands) {
            assert!(result.is_ok(), "{ticket} {}: {result:?}", body.name());
        }
    }
    engine.step_to(end).await;

    // Compare, ticket by ticket.
    let mut breaches = 0;
    let mut downgrades = 0;
    for (ticket, reference) in &references {
        let mut actual = Expected::default();
        for e in engine.events(*ticket) {
            match e.event.kind {
                EventKind::SlaBreached { metric, cycle, due_at, .. } => {
                    assert_eq!(e.event.occurred_at, due_at, "fired at its instant");
                    actual.breaches.insert((metric, cycle, due_at));
                }
                EventKind::DowngradedForNoResponse { from, to, due_at, .. } => {
                    actual.downgrades.insert((from, to, due_at));
                }
                EventKind::Opened(_)
                | EventKind::SeveritySet { .. }
                | EventKind::AgentResponded { .. }
                | EventKind::CustomerInfoRequested { .. }
                | EventKind::CustomerResponded { .. }
                | EventKind::Escalated { .. }
                | EventKind::SlaWarning { .. }
                | EventKind::Resolved { .. }
                | EventKind::Reopened { .. }
                | EventKind::Linked { .. } => {}
            }
        }
        assert_eq!(actual.breaches, reference.expected.breaches, "breaches of {ticket} (seed {seed})");
        assert_eq!(actual.downgrades, reference.expected.downgrades, "downgrades of {ticket} (seed {seed})");
        breaches += actual.breaches.len();
        downgrades += actual.downgrades.len();
    }
    // The run exercised what it claims to.
    assert!(breaches > TICKETS / 2, "{breaches} breaches");
    assert!(downgrades > 100, "{downgrades} downgrades");
    let across_dst = references
        .values()
        .flat_map(|r| r.expected.breaches.iter())
        .filter(|b| b.0 == Metric::Resolution && b.2 > Utc.with_ymd_and_hms(2026, 10, 25, 1, 0, 0).unwrap())
        .count();
    assert!(across_dst > 100, "{across_dst} resolution breaches after the DST change");
    eprintln!(
        "seed {seed}: {TICKETS} tickets, {} commands, {breaches} breaches, {downgrades} downgrades, \
         {across_dst} resolution breaches after the DST change",
        script.values().map(Vec::len).sum::<usize>()
    );
}
