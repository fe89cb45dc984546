//! Business calendars and business-time arithmetic, exact to the nanosecond of the inputs.
//!
//! A calendar is a time zone, opening spans per weekday (local wall-clock times, `24:00` = end of
//! day), holidays (local dates that are closed all day) and one-off closures (instant ranges).
//! Open time is a set of half-open instant intervals `[open, close)`.
//!
//! Wall-clock times are mapped to instants by one rule everywhere: a local time `t` on date `d`
//! means *the first instant at which the local clock reads `t` or later*. In a DST gap (02:30 on a
//! spring-forward day) that is the instant of the transition; in an overlap (01:30 on a fall-back
//! day) it is the earlier of the two. The rule is monotone, so opening spans never overlap across
//! days, and a day's open time is the physical time between its boundaries (a 00:00-24:00 day is
//! 23 or 25 hours long across a transition).

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::ids::CalendarId;

/// An instant on the UTC time line. The current instant comes into the domain inside commands.
pub type Timestamp = DateTime<Utc>;

const SECONDS_PER_DAY: u32 = 86_400;

/// The longest one-off closure accepted: longer ones are a mistake in the policy file (a closure
/// meant for a day typed with the wrong year), and refusing them keeps every search short.
pub const MAX_CLOSURE_DAYS: i64 = 366;

/// An opening span of one weekday, in seconds after local midnight: `start < end <= 86400`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSpan {
    start: u32,
    end: u32,
}

impl OpenSpan {
    pub fn new(start: u32, end: u32) -> Result<Self, CalendarError> {
        if start >= end || end > SECONDS_PER_DAY {
            return Err(CalendarError::BadSpan { start, end });
        }
        Ok(Self { start, end })
    }

    pub const fn start(&self) -> u32 {
        self.start
    }

    pub const fn end(&self) -> u32 {
        self.end
    }
}

/// A one-off closure: closed from `from` (inclusive) to `to` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closure {
    pub from: Timestamp,
    pub to: Timestamp,
}

/// Why a calendar definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("opening span {start}s-{end}s is empty, reversed or past 24:00")]
    BadSpan { start: u32, end: u32 },
    #[error("opening spans of {weekday} overlap")]
    OverlappingSpans { weekday: chrono::Weekday },
    #[error("the calendar has no open time in any weekday, so no due instant could ever be found")]
    NeverOpen,
    #[error("closure from {from} to {to} is empty or reversed")]
    ReversedClosure { from: Timestamp, to: Timestamp },
    #[error("closure from {from} to {to} is longer than {MAX_CLOSURE_DAYS} days")]
    ClosureTooLong { from: Timestamp, to: Timestamp },
}

/// A validated business calendar. Construct with [`Calendar::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    id: CalendarId,
    tz: Tz,
    /// Index 0 is Monday.
    weekly: [Vec<OpenSpan>; 7],
    holidays: BTreeSet<NaiveDate>,
    /// Sorted by start and merged, so they do not overlap.
    closures: Vec<Closure>,
}

impl Calendar {
    /// Validates and builds a calendar. Spans of a weekday may touch (they are merged) but not
    /// overlap; the week must have some open time.
    pub fn new(
        id: CalendarId,
        tz: Tz,
        weekly: [Vec<OpenSpan>; 7],
        holidays: BTreeSet<NaiveDate>,
        closures: Vec<Closure>,
    ) -> Result<Self, CalendarError> {
        let mut merged_week: [Vec<OpenSpan>; 7] = Default::default();
        for (index, spans) in weekly.into_iter().enumerate() {
            let mut spans = spans;
            spans.sort_by_key(|s| s.start);
            let mut merged: Vec<OpenSpan> = Vec::with_capacity(spans.len());
            for span in spans {
                match merged.last_mut() {
                    Some(last) if span.start < last.end => {
                        return Err(CalendarError::OverlappingSpans { weekday: weekday_from_index(index) });
                    }
                    Some(last) if span.start == last.end => last.end = span.end,
                    Some(_) | None => merged.push(span),
                }
            }
            merged_week[index] = merged;
        }
        if merged_week.iter().all(Vec::is_empty) {
            return Err(CalendarError::NeverOpen);
        }
        let mut closures = closures;
        for c in &closures {
            if c.to <= c.from {
                return Err(CalendarError::ReversedClosure { from: c.from, to: c.to });
            }
            if c.to - c.from > TimeDelta::days(MAX_CLOSURE_DAYS) {
                return Err(CalendarError::ClosureTooLong { from: c.from, to: c.to });
            }
        }
        closures.sort_by_key(|c| c.from);
        let mut merged_closures: Vec<Closure> = Vec::with_capacity(closures.len());
        for c in closures {
            match merged_closures.last_mut() {
                Some(last) if c.from <= last.to => last.to = last.to.max(c.to),
                Some(_) | None => merged_closures.push(c),
            }
        }
        Ok(Self { id, tz, weekly: merged_week, holidays, closures: merged_closures })
    }

    /// A calendar open all the time (24x7) in `tz`.
    pub fn always_open(id: CalendarId, tz: Tz) -> Self {
        let day = vec![OpenSpan { start: 0, end: SECONDS_PER_DAY }];
        Self { id, tz, weekly: std::array::from_fn(|_| day.clone()), holidays: BTreeSet::new(), closures: Vec::new() }
    }

    pub fn id(&self) -> &CalendarId {
        &self.id
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    pub fn holidays(&self) -> &BTreeSet<NaiveDate> {
        &self.holidays
    }

    /// The local date of an instant in this calendar's zone.
    pub fn local_date(&self, at: Timestamp) -> NaiveDate {
        at.with_timezone(&self.tz).date_naive()
    }

    /// The open intervals of one local date, in order, holidays and closures removed.
    pub fn open_intervals(&self, date: NaiveDate) -> Vec<(Timestamp, Timestamp)> {
        if self.holidays.contains(&date) {
            return Vec::new();
        }
        let spans = &self.weekly[date.weekday().num_days_from_monday() as usize];
        let mut out = Vec::with_capacity(spans.len());
        for span in spans {
            let (Some(open), Some(close)) =
                (local_instant(self.tz, date, span.start), local_instant(self.tz, date, span.end))
            else {
                continue;
            };
            if open < close {
                self.push_without_closures(open, close, &mut out);
            }
        }
        out
    }

    fn push_without_closures(&self, open: Timestamp, close: Timestamp, out: &mut Vec<(Timestamp, Timestamp)>) {
        let mut cursor = open;
        // Closures are sorted and disjoint; skip those ending before this interval.
        let first = self.closures.partition_point(|c| c.to <= open);
        for c in &self.closures[first..] {
            if c.from >= close {
                break;
            }
            if c.from > cursor {
                out.push((cursor, c.from));
            }
            cursor = cursor.max(c.to);
            if cursor >= close {
                return;
            }
        }
        if cursor < close {
            out.push((cursor, close));
        }
    }

    /// Total open time of one local date.
    pub fn open_time_on(&self, date: NaiveDate) -> TimeDelta {
        self.open_intervals(date).iter().fold(TimeDelta::zero(), |acc, (a, b)| acc + (*b - *a))
    }

    /// True when the date has some open time (a business day).
    pub fn is_business_day(&self, date: NaiveDate) -> bool {
        !self.open_intervals(date).is_empty()
    }

    /// Is the calendar open at this instant?
    pub fn is_open(&self, at: Timestamp) -> bool {
        let date = self.local_date(at);
        [date.pred_opt(), Some(date)]
            .into_iter()
            .flatten()
            .any(|d| self.open_intervals(d).iter().any(|(a, b)| *a <= at && at < *b))
    }

    /// The earliest instant `t >= start` such that `elapsed(start, t) == duration`.
    ///
    /// A zero or negative duration returns `start` (even inside a closed period). For a positive
    /// duration the result is never inside a closed period: it is the end of some open time.
    pub fn add(&self, start: Timestamp, duration: TimeDelta) -> Timestamp {
        if duration <= TimeDelta::zero() {
            return start;
        }
        let mut remaining = duration;
        // Begin one day early: in zones whose clocks fall back across midnight an instant can read
        // an earlier local date than one whose intervals it lies in.
        let mut date = self.local_date(start).pred_opt().unwrap_or(NaiveDate::MIN);
        loop {
            for (open, close) in self.open_intervals(date) {
                if close <= start {
                    continue;
                }
                let from = open.max(start);
                let available = close - from;
                if remaining <= available {
                    return from + remaining;
                }
                remaining -= available;
            }
            // The week has open time and closures are bounded, so this loop ends; running off the
            // calendar's end saturates rather than panics.
            match date.succ_opt() {
                Some(next) => date = next,
                None => return DateTime::<Utc>::MAX_UTC,
            }
        }
    }

    /// The open time between two instants; zero when `end <= start`.
    pub fn elapsed(&self, start: Timestamp, end: Timestamp) -> TimeDelta {
        if end <= start {
            return TimeDelta::zero();
        }
        let last = self.local_date(end).succ_opt().unwrap_or(NaiveDate::MAX);
        let mut date = self.local_date(start).pred_opt().unwrap_or(NaiveDate::MIN);
        let mut total = TimeDelta::zero();
        loop {
            for (open, close) in self.open_intervals(date) {
                let from = open.max(start);
                let to = close.min(end);
                if from < to {
                    total += to - from;
                }
            }
            if date >= last {
                return total;
            }
            match date.succ_opt() {
                Some(next) => date = next,
                None => return total,
            }
        }
    }

    /// The due instant of a target of `days` business days started at `start` (ADR 0002).
    ///
    /// - Started during a business day, at position `p` (open time of that day before `start`):
    ///   due at the first instant of the `days`-th following business day whose position reaches
    ///   `p`, or that day's close when it is shorter.
    /// - Started before a business day's first opening, on a closed day, or at or after the day's
    ///   last close: the clock starts at the next opening, and the target is the close of the
    ///   `days`-th business day counting that one as the first.
    ///
    /// On a calendar whose business days all have the same length `L`, this equals
    /// `add(start, days * L)`.
    pub fn add_business_days(&self, start: Timestamp, days: u32) -> Timestamp {
        if days == 0 {
            return start;
        }
        let start_date = self.local_date(start);
        let intervals = self.open_intervals(start_date);
        let before = intervals
            .iter()
            .map(|(a, b)| (*b).min(start) - *a)
            .filter(|d| *d > TimeDelta::zero())
            .fold(TimeDelta::zero(), |acc, d| acc + d);
        let day_total = intervals.iter().fold(TimeDelta::zero(), |acc, (a, b)| acc + (*b - *a));
        let starts_inside_day = before > TimeDelta::zero() && before < day_total;
        if starts_inside_day {
            let target = self.nth_business_day_after(start_date, days);
            return self.position_in_day(target, before);
        }
        // Position zero of the first business day that still has open time after `start`.
        let first = if before == TimeDelta::zero() && day_total > TimeDelta::zero() {
            start_date
        } else {
            self.nth_business_day_after(start_date, 1)
        };
        let last = if days > 1 { self.nth_business_day_after(first, days - 1) } else { first };
        self.open_intervals(last).last().map_or(start, |(_, close)| *close)
    }

    /// The `n`-th business day after `date` (`n >= 1`; `date` itself does not count).
    fn nth_business_day_after(&self, date: NaiveDate, n: u32) -> NaiveDate {
        let mut date = date;
        let mut found = 0;
        while found < n {
            date = match date.succ_opt() {
                Some(next) => next,
                None => return date,
            };
            if self.is_business_day(date) {
                found += 1;
            }
        }
        date
    }

    /// The first instant of `date` whose position (open time since the day's first opening)
    /// reaches `position`, or the day's last close when the day is shorter.
    fn position_in_day(&self, date: NaiveDate, position: TimeDelta) -> Timestamp {
        let mut remaining = position;
        let mut last_close = None;
        for (open, close) in self.open_intervals(date) {
            if remaining <= close - open {
                return open + remaining;
            }
            remaining -= close - open;
            last_close = Some(close);
        }
        last_close.unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

fn weekday_from_index(index: usize) -> chrono::Weekday {
    const DAYS: [chrono::Weekday; 7] = [
        chrono::Weekday::Mon,
        chrono::Weekday::Tue,
        chrono::Weekday::Wed,
        chrono::Weekday::Thu,
        chrono::Weekday::Fri,
        chrono::Weekday::Sat,
        chrono::Weekday::Sun,
    ];
    DAYS[index % 7]
}

/// The first instant at which the local clock of `tz` reads `seconds` after midnight of `date`
/// or later (`seconds == 86400` is midnight of the next date). `None` only past chrono's range.
pub fn local_instant(tz: Tz, date: NaiveDate, seconds: u32) -> Option<Timestamp> {
    let (date, seconds) =
        if seconds >= SECONDS_PER_DAY { (date.succ_opt()?, seconds - SECONDS_PER_DAY) } else { (date, seconds) };
    let local = date.and_hms_opt(seconds / 3600, seconds / 60 % 60, seconds % 60)?;
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        LocalResult::None => gap_end(tz, local),
    }
}

/// For a local time inside a DST gap, the instant of the transition that skipped it.
fn gap_end(tz: Tz, local: NaiveDateTime) -> Option<Timestamp> {
    let naive_utc = local.and_utc();
    let offset_before = tz.offset_from_utc_datetime(&(naive_utc - TimeDelta::days(1)).naive_utc()).fix();
    let offset_after = tz.offset_from_utc_datetime(&(naive_utc + TimeDelta::days(1)).naive_utc()).fix();
    let gap = i64::from(offset_after.local_minus_utc() - offset_before.local_minus_utc());
    // Reading `local` with the offset before the gap gives an instant at or after the transition,
    // and at most `gap` seconds after it.
    let upper = naive_utc - TimeDelta::seconds(i64::from(offset_before.local_minus_utc()));
    if gap <= 0 {
        return Some(upper);
    }
    let reaches = |t: Timestamp| t.with_timezone(&tz).naive_local() >= local;
    let (mut lo, mut hi) = (upper - TimeDelta::seconds(gap), upper);
    if !reaches(hi) {
        return Some(hi);
    }
    // Invariant: `reaches(hi)`; shrink to the first whole second that reaches `local`.
    while hi - lo > TimeDelta::seconds(1) {
        let mid = lo + TimeDelta::seconds((hi - lo).num_seconds() / 2);
        if reaches(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if reaches(lo) { Some(lo) } else { Some(hi) }
}

#[cfg(test)]
mod tests;
