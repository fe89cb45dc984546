use super::*;

const REGIONAL: &str = include_str!("../../../../deploy/policies/regional-operator.toml");
const PROFESSIONAL: &str = include_str!("../../../../deploy/policies/professional.toml");

fn regional() -> Policy {
    Policy::from_toml("regional-operator.toml", REGIONAL).unwrap()
}

fn plan(s: &str) -> PlanId {
    PlanId::new(s).unwrap()
}

fn cat(s: &str) -> CategoryId {
    CategoryId::new(s).unwrap()
}

/// A minimal valid policy; tests replace one piece of it to make it invalid.
const MINIMAL: &str = r#"
name = "t"
version = "1"
[severities]
A = "a"
B = "b"
C = "c"
[calendars.always]
time_zone = "Etc/UTC"
hours = { every_day = ["00:00-24:00"] }
[plans.p]
name = "p"
max_severity = "A"
[categories.c]
name = "c"
max_severity = "A"
[[targets]]
severity = "A"
first_response = { hours = 1, calendar = "always" }
"#;

fn error_of(text: &str) -> PolicyError {
    Policy::from_toml("bad.toml", text).unwrap_err()
}

#[test]
fn shipped_policies_load() {
    assert_eq!(regional().version().to_string(), "regional-operator@2026-12-01.1");
    let professional = Policy::from_toml("professional.toml", PROFESSIONAL).unwrap();
    assert_eq!(professional.severity_name(Severity::A), "highest");
}

#[test]
fn the_minimal_policy_loads() {
    Policy::from_toml("minimal.toml", MINIMAL).unwrap();
}

#[test]
fn category_specific_targets_override_generic_ones() {
    let p = regional();
    let generic = p.target(&plan("standard"), &cat("technical"), Severity::B, Metric::FirstResponse).unwrap();
    assert_eq!(generic.calendar.as_str(), "beijing-daily");
    let billing = p.target(&plan("standard"), &cat("billing"), Severity::B, Metric::FirstResponse).unwrap();
    assert_eq!(billing.calendar.as_str(), "china-business");
    assert_eq!(billing.amount, TargetAmount::BusinessDays(1));
}

#[test]
fn plan_specific_targets_override_category_ones_per_metric() {
    let p = Policy::from_toml("professional.toml", PROFESSIONAL).unwrap();
    let premier = p.target(&plan("premier-example"), &cat("technical"), Severity::A, Metric::FirstResponse).unwrap();
    assert_eq!(premier.amount, TargetAmount::OpenTime(TimeDelta::minutes(30)));
    let default = p.target(&plan("professional"), &cat("technical"), Severity::A, Metric::FirstResponse).unwrap();
    assert_eq!(default.amount, TargetAmount::OpenTime(TimeDelta::hours(2)));
    assert!(p.target(&plan("professional"), &cat("technical"), Severity::A, Metric::Resolution).is_none());
}

#[test]
fn no_response_windows_are_looked_up_by_severity() {
    let p = regional();
    assert!(p.target(&plan("advanced"), &cat("technical"), Severity::A, Metric::NoResponse).is_some());
    assert!(p.target(&plan("advanced"), &cat("technical"), Severity::C, Metric::NoResponse).is_none());
}

#[test]
fn escalation_rules_match_trigger_metric_and_severity() {
    let p = regional();
    assert_eq!(p.escalation_on_warning(Metric::FirstResponse, Severity::A, 80).unwrap().tier.as_str(), "tier-2");
    assert!(p.escalation_on_warning(Metric::FirstResponse, Severity::A, 50).is_none());
    assert_eq!(p.escalation_on_breach(Metric::FirstResponse, Severity::A).unwrap().tier.as_str(), "tier-3");
    assert!(p.escalation_on_breach(Metric::FirstResponse, Severity::B).is_none());
}

#[test]
fn syntax_errors_name_the_file_and_the_line() {
    let e = error_of("name = \"x\"\nversion = ");
    assert_eq!(e.source_name, "bad.toml");
    assert!(e.problem.contains("line 2"), "{e}");
}

#[test]
fn unknown_keys_are_refused() {
    let e = error_of(&MINIMAL.replace("hours = { every_day", "hours = { evry_day"));
    assert_eq!(e.key, "calendars.always.hours.evry_day");
    let e = error_of(&MINIMAL.replace("max_severity = \"A\"\n[categories", "max_severty = \"A\"\n[categories"));
    assert_eq!(e.key, "plans.p");
    assert!(e.problem.contains("max_severty"), "{e}");
}

#[test]
fn a_calendar_that_is_never_open_is_refused_at_load() {
    let e = error_of(&MINIMAL.replace("hours = { every_day = [\"00:00-24:00\"] }", "hours = {}"));
    assert_eq!(e.key, "calendars.always");
    assert!(e.problem.contains("no open time"), "{e}");
    assert_eq!(e.to_string(), format!("policy bad.toml: calendars.always: {}", e.problem));
}

#[test]
fn impossible_calendars_are_refused() {
    let e = error_of(&MINIMAL.replace("Etc/UTC", "Mars/Olympus_Mons"));
    assert_eq!(e.key, "calendars.always.time_zone");
    let e = error_of(&MINIMAL.replace("00:00-24:00", "18:00-09:00"));
    assert_eq!(e.key, "calendars.always.hours.every_day[0]");
    let e = error_of(&MINIMAL.replace("00:00-24:00\"]", "00:00-24:00\"], mon = [\"09:00-10:00\"]"));
    assert_eq!(e.key, "calendars.always.hours.mon");
    let e = error_of(&MINIMAL.replace("00:00-24:00\"] }", "00:00-24:00\"] }\nholidays = [\"2026-02-30\"]"));
    assert_eq!(e.key, "calendars.always.holidays[0]");
    let e = error_of(&MINIMAL.replace(
        "00:00-24:00\"] }",
        "00:00-24:00\"] }\nclosures = [{ from = \"2026-01-01 00:00\", to = \"2028-01-01 00:00\" }]",
    ));
    assert_eq!(e.key, "calendars.always");
    assert!(e.problem.contains("longer than"), "{e}");
}

#[test]
fn targets_must_reference_known_things_and_be_positive() {
    let e = error_of(&MINIMAL.replace("calendar = \"always\" }", "calendar = \"nope\" }"));
    assert_eq!(e.key, "targets[0].first_response.calendar");
    let e = error_of(&MINIMAL.replace("{ hours = 1,", "{ hours = 0,"));
    assert_eq!(e.key, "targets[0].first_response.hours");
    let e = error_of(&MINIMAL.replace("{ hours = 1,", "{ hours = 1, business_days = 1,"));
    assert_eq!(e.key, "targets[0].first_response");
    let e = error_of(&MINIMAL.replace("severity = \"A\"\nfirst", "severity = \"D\"\nfirst"));
    assert_eq!(e.key, "targets[0].severity");
    let e = error_of(&format!("{MINIMAL}plan = \"gold\"\n"));
    assert_eq!(e.key, "targets[0].plan");
    let e = error_of(&format!(
        "{MINIMAL}[[targets]]\nseverity = \"A\"\nfirst_response = {{ hours = 2, calendar = \"always\" }}\n"
    ));
    assert_eq!(e.key, "targets[1]");
    assert!(e.problem.contains("targets[0]"), "{e}");
}

#[test]
fn thresholds_pauses_and_escalations_are_validated() {
    let e = error_of(&MINIMAL.replace("version = \"1\"", "version = \"1\"\nwarning_thresholds_percent = [80, 50]"));
    assert_eq!(e.key, "warning_thresholds_percent[1]");
    let e = error_of(&MINIMAL.replace("version = \"1\"", "version = \"1\"\nwarning_thresholds_percent = [100]"));
    assert_eq!(e.key, "warning_thresholds_percent[0]");
    let e = error_of(&format!("{MINIMAL}[pauses]\nawaiting_customer = [\"no_response\"]\n"));
    assert_eq!(e.key, "pauses.awaiting_customer[0]");
    let e = error_of(&format!(
        "{MINIMAL}[[escalations]]\non = \"warning\"\nthreshold_percent = 50\nmetric = \"first_response\"\nseverities = [\"A\"]\ntier = \"t2\"\n"
    ));
    assert_eq!(e.key, "escalations[0].threshold_percent");
    let e = error_of(&format!("{MINIMAL}[no_response.C]\nhours = 1\ncalendar = \"always\"\n"));
    assert_eq!(e.key, "no_response.C");
}

#[test]
fn tiers_are_ordered_named_once_and_every_escalation_names_one() {
    let p = regional();
    let rank = |t: &str| p.tier_rank(&Tier::new(t).unwrap());
    assert_eq!(
        (rank("tier-1"), rank("tier-2"), rank("tier-3"), rank("specialists")),
        (Some(0), Some(1), Some(2), None)
    );
    let with_tiers = |tiers: &str| MINIMAL.replace("version = \"1\"", &format!("version = \"1\"\ntiers = {tiers}"));
    let e = error_of(&with_tiers("[\"t1\", \"t2\", \"t1\"]"));
    assert_eq!(e.key, "tiers[2]");
    let escalation =
        "[[escalations]]\non = \"breach\"\nmetric = \"first_response\"\nseverities = [\"A\"]\ntier = \"t3\"\n";
    let e = error_of(&format!("{}{escalation}", with_tiers("[\"t1\", \"t2\"]")));
    assert_eq!(e.key, "escalations[0].tier");
    // Without an order, any tier will do (and none is lower than another).
    assert!(Policy::from_toml("t.toml", &format!("{MINIMAL}{escalation}")).is_ok());
}

#[test]
fn missing_sections_are_named() {
    let e = error_of(&MINIMAL.replace("[severities]\nA = \"a\"\n", "[severities]\n"));
    assert_eq!(e.key, "severities");
    let e = error_of("name = \"x\"");
    assert!(e.problem.contains("missing field"), "{e}");
}

#[test]
fn loading_a_missing_file_names_it() {
    let e = Policy::load(std::path::Path::new("/nonexistent/policy.toml")).unwrap_err();
    assert_eq!(e.source_name, "/nonexistent/policy.toml");
    assert!(e.problem.contains("cannot read"), "{e}");
}
