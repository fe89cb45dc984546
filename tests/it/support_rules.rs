//! Every number of `shared/domain/support-rules.md`'s tables, reproduced from the shipped policy
//! files (the rules are data, so this is where a typo in a policy file is caught).

use chrono::{Datelike, NaiveDate, TimeDelta, Timelike, Weekday};
use ticket_domain::{
    CalendarId, CategoryId, DomainError, ErrorKind, Metric, PlanId, Policy, Severity, Target, TargetAmount,
    check_entitlement,
};

use crate::shipped_policy;

fn plan(s: &str) -> PlanId {
    PlanId::new(s).unwrap()
}

fn category(s: &str) -> CategoryId {
    CategoryId::new(s).unwrap()
}

fn first_response(policy: &Policy, p: &str, c: &str, s: Severity) -> Target {
    policy
        .target(&plan(p), &category(c), s, Metric::FirstResponse)
        .cloned()
        .unwrap_or_else(|| panic!("no target for {p} {c} {s}"))
}

/// The local opening hours of a calendar over one week (Monday 2026-11-23 onwards), as
/// (weekday, open, close) in the calendar's zone; holidays of that week would show as gaps.
fn week_hours(policy: &Policy, calendar: &str) -> Vec<(Weekday, String, String)> {
    let cal = policy.calendar(&CalendarId::new(calendar).unwrap()).unwrap();
    let monday = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let tz = cal.time_zone();
    let mut out = Vec::new();
    for offset in 0..7 {
        let date = monday + TimeDelta::days(offset);
        for (open, close) in cal.open_intervals(date) {
            let fmt = |t: chrono::DateTime<chrono::Utc>, end: bool| {
                let local = t.with_timezone(&tz);
                if end && local.date_naive() > date {
                    "24:00".to_owned()
                } else {
                    format!("{:02}:{:02}", local.hour(), local.minute())
                }
            };
            out.push((date.weekday(), fmt(open, false), fmt(close, true)));
        }
    }
    out
}

fn every_day(open: &str, close: &str) -> Vec<(Weekday, String, String)> {
    [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun]
        .into_iter()
        .map(|d| (d, open.to_owned(), close.to_owned()))
        .collect()
}

fn weekdays(open: &str, close: &str) -> Vec<(Weekday, String, String)> {
    every_day(open, close).into_iter().take(5).collect()
}

// Section 2: severity levels and who may use them.

#[test]
fn regional_operator_severity_names() {
    let p = shipped_policy("regional-operator.toml");
    let names: Vec<&str> = Severity::ALL.iter().map(|s| p.severity_name(*s)).collect();
    assert_eq!(names, ["critical", "high", "non-critical"]);
}

#[test]
fn professional_has_three_levels() {
    let p = shipped_policy("professional.toml");
    let names: Vec<&str> = Severity::ALL.iter().map(|s| p.severity_name(*s)).collect();
    assert_eq!(names, ["highest", "moderate", "other"]);
}

#[test]
fn severity_a_only_with_the_advanced_online_service_contract() {
    let p = shipped_policy("regional-operator.toml");
    assert_eq!(check_entitlement(&p, &plan("advanced"), &category("technical"), Severity::A), Ok(()));
    let refused = check_entitlement(&p, &plan("standard"), &category("technical"), Severity::A).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::SeverityNotInContract);
    for s in [Severity::B, Severity::C] {
        assert_eq!(check_entitlement(&p, &plan("standard"), &category("technical"), s), Ok(()));
    }
}

#[test]
fn severity_a_only_for_technical_support_and_billing_at_most_b() {
    let p = shipped_policy("regional-operator.toml");
    for c in ["billing", "subscription"] {
        let refused = check_entitlement(&p, &plan("advanced"), &category(c), Severity::A).unwrap_err();
        assert!(
            matches!(&refused, DomainError::SeverityNotAllowedForCategory { max: Severity::B, .. }),
            "{c}: {refused}"
        );
        assert_eq!(check_entitlement(&p, &plan("advanced"), &category(c), Severity::B), Ok(()));
    }
}

// Section 3: initial-response targets.

#[test]
fn regional_operator_first_response_targets() {
    let p = shipped_policy("regional-operator.toml");
    let a = first_response(&p, "advanced", "technical", Severity::A);
    assert_eq!(a.amount, TargetAmount::OpenTime(TimeDelta::hours(1)));
    assert_eq!(week_hours(&p, a.calendar.as_str()), every_day("00:00", "24:00"), "A runs 24x7");
    let b = first_response(&p, "standard", "technical", Severity::B);
    assert_eq!(b.amount, TargetAmount::BusinessDays(1));
    let c = first_response(&p, "standard", "technical", Severity::C);
    assert_eq!(c.amount, TargetAmount::BusinessDays(3));
    for t in [&b, &c] {
        assert_eq!(week_hours(&p, t.calendar.as_str()), every_day("09:00", "24:00"), "B and C: every day 09:00-24:00");
    }
}

#[test]
fn regional_operator_severity_a_follow_up_continues_until_resolved() {
    let p = shipped_policy("regional-operator.toml");
    assert!(p.target(&plan("advanced"), &category("technical"), Severity::A, Metric::FollowUp).is_some());
}

#[test]
fn professional_first_response_targets_run_around_the_clock() {
    let p = shipped_policy("professional.toml");
    for (s, hours) in [(Severity::A, 2), (Severity::B, 4), (Severity::C, 8)] {
        let t = first_response(&p, "professional", "technical", s);
        assert_eq!(t.amount, TargetAmount::OpenTime(TimeDelta::hours(hours)), "severity {s}");
        assert_eq!(week_hours(&p, t.calendar.as_str()), every_day("00:00", "24:00"));
    }
}

#[test]
fn premier_targets_come_from_the_contract_for_every_severity() {
    let p = shipped_policy("professional.toml");
    for s in Severity::ALL {
        let default = first_response(&p, "professional", "technical", s);
        let premier = first_response(&p, "premier-example", "technical", s);
        assert_ne!(premier, default, "severity {s}: the contract overrides the default");
        let rule = p
            .target_rules()
            .iter()
            .find(|r| r.plan.as_ref() == Some(&plan("premier-example")) && r.severity == s)
            .unwrap();
        assert_eq!(rule.first_response.as_ref(), Some(&premier));
    }
}

// Section 4: business hours.

#[test]
fn regional_operator_business_hours() {
    let p = shipped_policy("regional-operator.toml");
    for c in ["billing", "subscription", "pre-sales"] {
        for s in [Severity::B, Severity::C] {
            let t = first_response(&p, "standard", c, s);
            let cal = p.calendar(&t.calendar).unwrap();
            assert_eq!(cal.time_zone(), chrono_tz::Asia::Shanghai, "{c}: Beijing time");
            assert_eq!(
                week_hours(&p, t.calendar.as_str()),
                weekdays("09:00", "18:00"),
                "{c}: Monday to Friday, business hours"
            );
        }
    }
    let b = first_response(&p, "standard", "technical", Severity::B);
    assert_eq!(p.calendar(&b.calendar).unwrap().time_zone(), chrono_tz::Asia::Shanghai);
}

#[test]
fn business_calendars_have_holidays() {
    let p = shipped_policy("regional-operator.toml");
    let cal = p.calendar(&CalendarId::new("china-business").unwrap()).unwrap();
    assert!(cal.holidays().contains(&NaiveDate::from_ymd_opt(2026, 10, 1).unwrap()));
    assert!(!cal.is_business_day(NaiveDate::from_ymd_opt(2026, 10, 1).unwrap()));
}

// Section 5: lowering severity when the customer does not respond.

#[test]
fn no_response_windows_lower_a_to_b_and_b_to_c_and_c_stays_c() {
    for file in ["regional-operator.toml", "professional.toml"] {
        let p = shipped_policy(file);
        for s in [Severity::A, Severity::B] {
            assert!(
                p.target(&plan(p.plans().next().unwrap().0.as_str()), &category("technical"), s, Metric::NoResponse)
                    .is_some(),
                "{file} {s}"
            );
        }
        assert!(
            p.target(
                &plan(p.plans().next().unwrap().0.as_str()),
                &category("technical"),
                Severity::C,
                Metric::NoResponse
            )
            .is_none()
        );
    }
    assert_eq!(
        (Severity::A.lowered(), Severity::B.lowered(), Severity::C.lowered()),
        (Severity::B, Severity::C, Severity::C)
    );
}

// Section 6: escalation as a policy reaction.

#[test]
fn breaching_a_critical_first_response_escalates() {
    let p = shipped_policy("regional-operator.toml");
    assert!(p.escalation_on_breach(Metric::FirstResponse, Severity::A).is_some());
    let p = shipped_policy("professional.toml");
    assert!(p.escalation_on_breach(Metric::FirstResponse, Severity::A).is_some());
}

#[test]
fn a_policy_file_with_an_impossible_calendar_is_refused_with_file_and_key() {
    let text = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/policies/regional-operator.toml"),
    )
    .unwrap();
    let broken = text.replace("hours = { weekdays = [\"09:00-18:00\"] }", "hours = { weekdays = [] }");
    let err = Policy::from_toml("broken.toml", &broken).unwrap_err();
    assert_eq!(err.source_name, "broken.toml");
    assert_eq!(err.key, "calendars.china-business");
    assert!(err.to_string().starts_with("policy broken.toml: calendars.china-business: "), "{err}");
}
