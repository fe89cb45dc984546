use std::collections::BTreeSet;

use chrono::{NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;

fn id(s: &str) -> CalendarId {
    CalendarId::new(s).unwrap()
}

fn hm(h: u32, m: u32) -> u32 {
    h * 3600 + m * 60
}

fn span(a: u32, b: u32) -> OpenSpan {
    OpenSpan::new(a, b).unwrap()
}

/// Every day 09:00-24:00 (support-rules.md section 4, severities B and C).
fn beijing_daily(holidays: &[NaiveDate]) -> Calendar {
    let day = vec![span(hm(9, 0), hm(24, 0))];
    Calendar::new(
        id("beijing-daily"),
        chrono_tz::Asia::Shanghai,
        std::array::from_fn(|_| day.clone()),
        holidays.iter().copied().collect(),
        Vec::new(),
    )
    .unwrap()
}

/// Monday to Friday, 09:00-12:00 and 13:00-18:00, in `tz`.
fn office(tz: Tz) -> Calendar {
    let day = vec![span(hm(9, 0), hm(12, 0)), span(hm(13, 0), hm(18, 0))];
    let mut week: [Vec<OpenSpan>; 7] = Default::default();
    for d in week.iter_mut().take(5) {
        *d = day.clone();
    }
    Calendar::new(id("office"), tz, week, BTreeSet::new(), Vec::new()).unwrap()
}

fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    tz.with_ymd_and_hms(y, mo, d, h, mi, 0).earliest().unwrap().with_timezone(&Utc)
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

const SH: Tz = chrono_tz::Asia::Shanghai;
const NY: Tz = chrono_tz::America::New_York;
const BERLIN: Tz = chrono_tz::Europe::Berlin;

#[test]
fn add_inside_open_hours_is_plain_addition() {
    let cal = beijing_daily(&[]);
    let start = at(SH, 2026, 11, 23, 10, 0);
    assert_eq!(cal.add(start, TimeDelta::hours(2)), at(SH, 2026, 11, 23, 12, 0));
}

#[test]
fn add_from_a_closed_period_starts_at_the_next_opening() {
    let cal = beijing_daily(&[]);
    let start = at(SH, 2026, 11, 23, 3, 0);
    assert_eq!(cal.add(start, TimeDelta::hours(1)), at(SH, 2026, 11, 23, 10, 0));
}

#[test]
fn add_exactly_on_an_opening_boundary() {
    let cal = beijing_daily(&[]);
    let start = at(SH, 2026, 11, 23, 9, 0);
    assert_eq!(cal.add(start, TimeDelta::minutes(1)), at(SH, 2026, 11, 23, 9, 1));
    assert_eq!(cal.elapsed(start, at(SH, 2026, 11, 23, 9, 1)), TimeDelta::minutes(1));
}

#[test]
fn add_that_ends_on_a_close_returns_the_close_not_the_next_opening() {
    let cal = beijing_daily(&[]);
    let start = at(SH, 2026, 11, 23, 23, 0);
    assert_eq!(cal.add(start, TimeDelta::hours(1)), at(SH, 2026, 11, 24, 0, 0));
    assert_eq!(
        cal.add(start, TimeDelta::hours(1) + TimeDelta::seconds(1)),
        at(SH, 2026, 11, 24, 9, 0) + TimeDelta::seconds(1)
    );
}

#[test]
fn add_zero_is_the_start_even_when_closed() {
    let cal = beijing_daily(&[]);
    let start = at(SH, 2026, 11, 23, 3, 0);
    assert_eq!(cal.add(start, TimeDelta::zero()), start);
}

#[test]
fn lunch_breaks_and_weekends_are_skipped() {
    let cal = office(SH);
    // Friday 17:00 + 2h: one hour on Friday, one on Monday from 09:00.
    let friday = at(SH, 2026, 11, 27, 17, 0);
    assert_eq!(cal.add(friday, TimeDelta::hours(2)), at(SH, 2026, 11, 30, 10, 0));
    // 11:30 + 1h: 30 minutes before lunch, 30 after.
    assert_eq!(cal.add(at(SH, 2026, 11, 30, 11, 30), TimeDelta::hours(1)), at(SH, 2026, 11, 30, 13, 30));
    assert_eq!(cal.elapsed(friday, at(SH, 2026, 11, 30, 10, 0)), TimeDelta::hours(2));
}

#[test]
fn holidays_are_closed_local_dates() {
    let cal = beijing_daily(&[date(2026, 11, 24)]);
    let start = at(SH, 2026, 11, 23, 23, 30);
    assert_eq!(cal.add(start, TimeDelta::hours(1)), at(SH, 2026, 11, 25, 9, 30));
}

#[test]
fn closures_cut_open_time() {
    let mut week: [Vec<OpenSpan>; 7] = Default::default();
    for d in &mut week {
        *d = vec![span(hm(9, 0), hm(24, 0))];
    }
    let closure = Closure { from: at(SH, 2026, 11, 23, 12, 0), to: at(SH, 2026, 11, 23, 14, 0) };
    let cal = Calendar::new(id("c"), SH, week, BTreeSet::new(), vec![closure]).unwrap();
    assert_eq!(cal.add(at(SH, 2026, 11, 23, 11, 0), TimeDelta::hours(2)), at(SH, 2026, 11, 23, 15, 0));
    assert_eq!(cal.open_time_on(date(2026, 11, 23)), TimeDelta::hours(13));
}

#[test]
fn a_calendar_with_no_open_time_is_refused() {
    let err = Calendar::new(id("never"), SH, Default::default(), BTreeSet::new(), Vec::new()).unwrap_err();
    assert_eq!(err, CalendarError::NeverOpen);
}

#[test]
fn overlapping_spans_are_refused_and_touching_ones_merged() {
    let mut week: [Vec<OpenSpan>; 7] = Default::default();
    week[0] = vec![span(hm(9, 0), hm(12, 0)), span(hm(11, 0), hm(13, 0))];
    assert!(matches!(
        Calendar::new(id("x"), SH, week, BTreeSet::new(), Vec::new()),
        Err(CalendarError::OverlappingSpans { weekday: chrono::Weekday::Mon })
    ));
    let mut week: [Vec<OpenSpan>; 7] = Default::default();
    week[0] = vec![span(hm(12, 0), hm(18, 0)), span(hm(9, 0), hm(12, 0))];
    let cal = Calendar::new(id("x"), SH, week, BTreeSet::new(), Vec::new()).unwrap();
    assert_eq!(cal.open_intervals(date(2026, 11, 23)).len(), 1);
}

#[test]
fn overlong_and_reversed_closures_are_refused() {
    let week: [Vec<OpenSpan>; 7] = std::array::from_fn(|_| vec![span(0, 86_400)]);
    let long = Closure { from: at(SH, 2026, 1, 1, 0, 0), to: at(SH, 2028, 1, 1, 0, 0) };
    assert!(matches!(
        Calendar::new(id("x"), SH, week.clone(), BTreeSet::new(), vec![long]),
        Err(CalendarError::ClosureTooLong { .. })
    ));
    let reversed = Closure { from: at(SH, 2026, 1, 2, 0, 0), to: at(SH, 2026, 1, 1, 0, 0) };
    assert!(matches!(
        Calendar::new(id("x"), SH, week, BTreeSet::new(), vec![reversed]),
        Err(CalendarError::ReversedClosure { .. })
    ));
}

#[test]
fn twenty_four_seven_days_are_23_and_25_hours_long_across_dst() {
    let cal = Calendar::always_open(id("always"), NY);
    assert_eq!(cal.open_time_on(date(2026, 3, 8)), TimeDelta::hours(23));
    assert_eq!(cal.open_time_on(date(2026, 11, 1)), TimeDelta::hours(25));
    // One physical hour after 01:30 EST on the spring-forward day is 03:30 EDT.
    let start = at(NY, 2026, 3, 8, 1, 30);
    assert_eq!(cal.add(start, TimeDelta::hours(1)), at(NY, 2026, 3, 8, 3, 30));
}

#[test]
fn an_opening_inside_a_dst_gap_opens_at_the_transition() {
    // Open 02:30-05:00 every day; on 2026-03-08 local 02:30 does not exist in New York.
    let week: [Vec<OpenSpan>; 7] = std::array::from_fn(|_| vec![span(hm(2, 30), hm(5, 0))]);
    let cal = Calendar::new(id("gap"), NY, week, BTreeSet::new(), Vec::new()).unwrap();
    let intervals = cal.open_intervals(date(2026, 3, 8));
    assert_eq!(
        intervals,
        vec![(Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).unwrap(), Utc.with_ymd_and_hms(2026, 3, 8, 9, 0, 0).unwrap())]
    );
    assert_eq!(cal.open_time_on(date(2026, 3, 8)), TimeDelta::hours(2));
    assert_eq!(cal.open_time_on(date(2026, 3, 9)), TimeDelta::minutes(150));
}

#[test]
fn an_opening_inside_a_dst_overlap_uses_the_first_occurrence() {
    // Berlin falls back at 03:00 CEST to 02:00 CET on 2026-10-25; 02:30 happens twice.
    let week: [Vec<OpenSpan>; 7] = std::array::from_fn(|_| vec![span(hm(2, 30), hm(4, 0))]);
    let cal = Calendar::new(id("overlap"), BERLIN, week, BTreeSet::new(), Vec::new()).unwrap();
    let intervals = cal.open_intervals(date(2026, 10, 25));
    assert_eq!(
        intervals,
        vec![(
            Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 10, 25, 3, 0, 0).unwrap()
        )]
    );
    assert_eq!(cal.open_time_on(date(2026, 10, 25)), TimeDelta::minutes(150));
}

#[test]
fn business_hours_across_a_dst_change_count_physical_time() {
    let cal = office(BERLIN);
    // Friday 2026-03-27 17:00 CET + 2h: one hour Friday, one on Monday 2026-03-30 (CEST).
    let start = at(BERLIN, 2026, 3, 27, 17, 0);
    let due = cal.add(start, TimeDelta::hours(2));
    assert_eq!(due, at(BERLIN, 2026, 3, 30, 10, 0));
    assert_eq!(cal.elapsed(start, due), TimeDelta::hours(2));
}

// Business days (ADR 0002).

#[test]
fn one_business_day_from_inside_the_day_is_the_same_position_next_business_day() {
    let cal = beijing_daily(&[]);
    let start = at(SH, 2026, 11, 23, 23, 30);
    assert_eq!(cal.add_business_days(start, 1), at(SH, 2026, 11, 24, 23, 30));
    assert_eq!(cal.add_business_days(start, 3), at(SH, 2026, 11, 26, 23, 30));
}

#[test]
fn one_business_day_from_before_opening_is_the_close_of_that_day() {
    let cal = beijing_daily(&[]);
    let start = at(SH, 2026, 11, 23, 8, 0);
    assert_eq!(cal.add_business_days(start, 1), at(SH, 2026, 11, 24, 0, 0));
    assert_eq!(cal.add_business_days(start, 3), at(SH, 2026, 11, 26, 0, 0));
    // Exactly at the opening is the same as before it.
    assert_eq!(cal.add_business_days(at(SH, 2026, 11, 23, 9, 0), 1), at(SH, 2026, 11, 24, 0, 0));
}

#[test]
fn business_days_skip_holidays() {
    let cal = beijing_daily(&[date(2026, 11, 24)]);
    assert_eq!(cal.add_business_days(at(SH, 2026, 11, 23, 23, 30), 1), at(SH, 2026, 11, 25, 23, 30));
    assert_eq!(cal.add_business_days(at(SH, 2026, 11, 24, 8, 0), 1), at(SH, 2026, 11, 26, 0, 0));
}

#[test]
fn business_days_from_a_weekend_start_on_monday() {
    let cal = office(SH);
    // Saturday: the clock starts Monday 09:00; one business day ends Monday 18:00.
    assert_eq!(cal.add_business_days(at(SH, 2026, 11, 28, 10, 0), 1), at(SH, 2026, 11, 30, 18, 0));
    // Friday after close counts as Monday's position zero.
    assert_eq!(cal.add_business_days(at(SH, 2026, 11, 27, 19, 0), 1), at(SH, 2026, 11, 30, 18, 0));
    // During lunch the position is the morning's three hours.
    assert_eq!(cal.add_business_days(at(SH, 2026, 11, 30, 12, 30), 1), at(SH, 2026, 12, 1, 12, 0));
}

#[test]
fn business_days_equal_whole_days_of_business_time_on_uniform_calendars() {
    let cal = beijing_daily(&[]);
    for (h, m) in [(0, 0), (8, 59), (9, 0), (9, 1), (15, 30), (23, 59)] {
        let start = at(SH, 2026, 11, 23, h, m);
        for days in 1..=3 {
            assert_eq!(
                cal.add_business_days(start, days),
                cal.add(start, TimeDelta::hours(15 * i64::from(days))),
                "start {h:02}:{m:02}, {days} days"
            );
        }
    }
}

// Property tests.

const ZONES: [Tz; 5] = [
    chrono_tz::Asia::Shanghai,
    chrono_tz::America::New_York,
    chrono_tz::Europe::Berlin,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::UTC,
];

fn arb_day() -> impl Strategy<Value = Vec<OpenSpan>> {
    // Up to three disjoint spans built from sorted cut points (in minutes).
    proptest::collection::btree_set(0u32..=1440, 0..=6).prop_map(|cuts| {
        let cuts: Vec<u32> = cuts.into_iter().collect();
        cuts.chunks_exact(2).map(|p| OpenSpan::new(p[0] * 60, p[1] * 60).unwrap()).collect()
    })
}

fn arb_calendar() -> impl Strategy<Value = Calendar> {
    (
        0usize..ZONES.len(),
        proptest::array::uniform7(arb_day()),
        proptest::collection::btree_set(0i64..120, 0..10),
        proptest::option::of((0i64..120 * 24, 1i64..72)),
    )
        .prop_filter_map("calendar must have open time", |(zone, week, holiday_offsets, closure)| {
            let base = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
            let holidays = holiday_offsets.into_iter().map(|o| base + TimeDelta::days(o)).collect();
            let closures = closure
                .map(|(from_h, len_h)| {
                    let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::hours(from_h);
                    vec![Closure { from, to: from + TimeDelta::hours(len_h) }]
                })
                .unwrap_or_default();
            Calendar::new(id("prop"), ZONES[zone], week, holidays, closures).ok()
        })
}

fn arb_start() -> impl Strategy<Value = Timestamp> {
    // Whole seconds across 2026, which holds DST changes in every zone above but Shanghai and UTC.
    (0i64..365 * 86_400).prop_map(|s| Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(s))
}

fn arb_duration() -> impl Strategy<Value = TimeDelta> {
    prop_oneof![(0i64..=3600).prop_map(TimeDelta::seconds), (0i64..=30 * 86_400).prop_map(TimeDelta::seconds),]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn elapsed_of_add_is_the_duration(cal in arb_calendar(), start in arb_start(), d in arb_duration()) {
        let due = cal.add(start, d);
        prop_assert!(due >= start);
        prop_assert_eq!(cal.elapsed(start, due), d);
    }

    #[test]
    fn add_is_monotonic_in_the_duration(cal in arb_calendar(), start in arb_start(), a in arb_duration(), b in arb_duration()) {
        let (short, long) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(cal.add(start, short) <= cal.add(start, long));
    }

    #[test]
    fn a_due_instant_is_never_inside_a_closed_period(cal in arb_calendar(), start in arb_start(), d in arb_duration()) {
        prop_assume!(d > TimeDelta::zero());
        let due = cal.add(start, d);
        // The second before the due instant is open time: the due instant ends open time.
        prop_assert_eq!(cal.elapsed(due - TimeDelta::seconds(1), due), TimeDelta::seconds(1));
    }

    #[test]
    fn elapsed_is_additive(cal in arb_calendar(), a in arb_start(), b in arb_start(), c in arb_start()) {
        let mut v = [a, b, c];
        v.sort();
        prop_assert_eq!(cal.elapsed(v[0], v[2]), cal.elapsed(v[0], v[1]) + cal.elapsed(v[1], v[2]));
    }

    #[test]
    fn business_days_are_monotonic_and_end_in_open_time(cal in arb_calendar(), start in arb_start(), days in 1u32..=5) {
        let one = cal.add_business_days(start, days);
        let more = cal.add_business_days(start, days + 1);
        prop_assert!(start < one);
        prop_assert!(one < more);
        prop_assert_eq!(cal.elapsed(one - TimeDelta::seconds(1), one), TimeDelta::seconds(1));
        prop_assert!(cal.elapsed(start, one) > TimeDelta::zero());
    }

    #[test]
    fn local_instants_are_monotone(zone in 0usize..ZONES.len(), day in 0i64..365, a in 0u32..=86_400, b in 0u32..=86_400) {
        let tz = ZONES[zone];
        let d = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + TimeDelta::days(day);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(local_instant(tz, d, lo).unwrap() <= local_instant(tz, d, hi).unwrap());
        let next = d.succ_opt().unwrap();
        prop_assert!(local_instant(tz, d, 86_400).unwrap() <= local_instant(tz, next, lo).unwrap());
    }
}
