//! The TOML policy file: raw serde shapes and their validation into a [`Policy`].
//!
//! Each section is deserialized on its own so that an error can name the key it is about
//! (`calendars.beijing-daily.hours.mon`, `targets[3].first_response`).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use chrono::{NaiveDate, TimeDelta};
use chrono_tz::Tz;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{
    Category, EscalationRule, EscalationTrigger, MAX_TARGET_DAYS, Plan, Policy, PolicyVersion, Target, TargetAmount,
    TargetRule,
};
use crate::calendar::{Calendar, Closure, OpenSpan, local_instant};
use crate::ids::{CalendarId, CategoryId, PlanId, Team, Tier};
use crate::severity::{Metric, Severity};

/// A policy file that cannot be used: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {source_name}: {}{problem}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct PolicyError {
    pub source_name: String,
    /// The dotted path of the offending key; empty when the problem is the file as a whole.
    pub key: String,
    pub problem: String,
}

impl PolicyError {
    pub(crate) fn new(source: &str, key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { source_name: source.to_owned(), key: key.into(), problem: problem.into() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    version: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    severities: BTreeMap<String, String>,
    #[serde(default)]
    warning_thresholds_percent: Vec<i64>,
    #[serde(default)]
    pauses: BTreeMap<String, Vec<String>>,
    calendars: BTreeMap<String, toml::Value>,
    plans: BTreeMap<String, toml::Value>,
    categories: BTreeMap<String, toml::Value>,
    #[serde(default)]
    targets: Vec<toml::Value>,
    #[serde(default)]
    no_response: BTreeMap<String, toml::Value>,
    #[serde(default)]
    escalations: Vec<toml::Value>,
    #[serde(default)]
    tiers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    time_zone: String,
    hours: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    holidays: Vec<String>,
    #[serde(default)]
    closures: Vec<RawClosure>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClosure {
    from: String,
    to: String,
    #[serde(default)]
    #[allow(dead_code)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLevel {
    name: String,
    max_severity: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargetRule {
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    category: Option<String>,
    severity: String,
    #[serde(default)]
    first_response: Option<RawTarget>,
    #[serde(default)]
    follow_up: Option<RawTarget>,
    #[serde(default)]
    resolution: Option<RawTarget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(default)]
    hours: Option<i64>,
    #[serde(default)]
    minutes: Option<i64>,
    #[serde(default)]
    business_days: Option<i64>,
    calendar: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    on: String,
    metric: String,
    severities: Vec<String>,
    #[serde(default)]
    threshold_percent: Option<i64>,
    tier: String,
    #[serde(default)]
    team: Option<String>,
}

/// Collects errors with their location: every check names the key it is about.
struct Ctx<'a> {
    source: &'a str,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> PolicyError {
        PolicyError::new(self.source, key, problem)
    }

    fn section<T: DeserializeOwned>(&self, key: &str, value: toml::Value) -> Result<T, PolicyError> {
        value.try_into().map_err(|e: toml::de::Error| self.err(key, e.message().to_owned()))
    }

    fn severity(&self, key: &str, text: &str) -> Result<Severity, PolicyError> {
        Severity::from_str(text).map_err(|e| self.err(key, e))
    }

    fn metric(&self, key: &str, text: &str) -> Result<Metric, PolicyError> {
        Metric::from_str(text).map_err(|e| self.err(key, e))
    }
}

pub(super) fn parse(source: &str, text: &str) -> Result<Policy, PolicyError> {
    let ctx = Ctx { source };
    let raw: RawPolicy = toml::from_str(text).map_err(|e| {
        let position = e.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, str::len) + 1;
            format!("line {line}, column {column}: ")
        });
        ctx.err("", format!("{}{}", position.unwrap_or_default(), e.message()))
    })?;

    if raw.name.trim().is_empty() {
        return Err(ctx.err("name", "must not be empty"));
    }
    if raw.version.trim().is_empty() {
        return Err(ctx.err("version", "must not be empty"));
    }

    let mut severity_names = BTreeMap::new();
    for (key, name) in raw.severities {
        let severity = ctx.severity(&format!("severities.{key}"), &key)?;
        severity_names.insert(severity, name);
    }
    if let Some(missing) = Severity::ALL.iter().find(|s| !severity_names.contains_key(s)) {
        return Err(ctx.err("severities", format!("severity {missing} has no name")));
    }

    let mut calendars = BTreeMap::new();
    for (key, value) in raw.calendars {
        let path = format!("calendars.{key}");
        let id = CalendarId::new(key).map_err(|e| ctx.err(&path, e.to_string()))?;
        let calendar = parse_calendar(&ctx, &path, id.clone(), ctx.section(&path, value)?)?;
        calendars.insert(id, calendar);
    }
    if calendars.is_empty() {
        return Err(ctx.err("calendars", "at least one calendar is needed"));
    }

    let mut plans = BTreeMap::new();
    for (key, value) in raw.plans {
        let path = format!("plans.{key}");
        let id = PlanId::new(key).map_err(|e| ctx.err(&path, e.to_string()))?;
        let level: RawLevel = ctx.section(&path, value)?;
        let max_severity = ctx.severity(&format!("{path}.max_severity"), &level.max_severity)?;
        plans.insert(id, Plan { name: level.name, max_severity });
    }
    if plans.is_empty() {
        return Err(ctx.err("plans", "at least one plan is needed"));
    }

    let mut categories = BTreeMap::new();
    for (key, value) in raw.categories {
        let path = format!("categories.{key}");
        let id = CategoryId::new(key).map_err(|e| ctx.err(&path, e.to_string()))?;
        let level: RawLevel = ctx.section(&path, value)?;
        let max_severity = ctx.severity(&format!("{path}.max_severity"), &level.max_severity)?;
        categories.insert(id, Category { name: level.name, max_severity });
    }
    if categories.is_empty() {
        return Err(ctx.err("categories", "at least one category is needed"));
    }

    let target = |path: &str, raw: RawTarget| parse_target(&ctx, path, raw, &calendars);

    let mut targets: Vec<TargetRule> = Vec::new();
    for (index, value) in raw.targets.into_iter().enumerate() {
        let path = format!("targets[{index}]");
        let rule: RawTargetRule = ctx.section(&path, value)?;
        let plan = match rule.plan {
            Some(p) => {
                let id = PlanId::new(p).map_err(|e| ctx.err(format!("{path}.plan"), e.to_string()))?;
                if !plans.contains_key(&id) {
                    return Err(ctx.err(format!("{path}.plan"), format!("unknown plan {id:?}")));
                }
                Some(id)
            }
            None => None,
        };
        let category = match rule.category {
            Some(c) => {
                let id = CategoryId::new(c).map_err(|e| ctx.err(format!("{path}.category"), e.to_string()))?;
                if !categories.contains_key(&id) {
                    return Err(ctx.err(format!("{path}.category"), format!("unknown category {id:?}")));
                }
                Some(id)
            }
            None => None,
        };
        let severity = ctx.severity(&format!("{path}.severity"), &rule.severity)?;
        let parsed = TargetRule {
            plan,
            category,
            severity,
            first_response: rule.first_response.map(|t| target(&format!("{path}.first_response"), t)).transpose()?,
            follow_up: rule.follow_up.map(|t| target(&format!("{path}.follow_up"), t)).transpose()?,
            resolution: rule.resolution.map(|t| target(&format!("{path}.resolution"), t)).transpose()?,
        };
        if parsed.first_response.is_none() && parsed.follow_up.is_none() && parsed.resolution.is_none() {
            return Err(ctx.err(&path, "sets no target (first_response, follow_up or resolution)"));
        }
        for (other_index, other) in targets.iter().enumerate() {
            let same_scope =
                other.plan == parsed.plan && other.category == parsed.category && other.severity == parsed.severity;
            let overlap = [Metric::FirstResponse, Metric::FollowUp, Metric::Resolution]
                .into_iter()
                .find(|m| other.target(*m).is_some() && parsed.target(*m).is_some());
            if let (true, Some(metric)) = (same_scope, overlap) {
                return Err(ctx.err(
                    &path,
                    format!("sets {metric} again for the same plan, category and severity as targets[{other_index}]"),
                ));
            }
        }
        targets.push(parsed);
    }

    let mut no_response = BTreeMap::new();
    for (key, value) in raw.no_response {
        let path = format!("no_response.{key}");
        let severity = ctx.severity(&path, &key)?;
        if severity == Severity::C {
            return Err(ctx.err(&path, "severity C cannot be lowered further, so it has no no-response window"));
        }
        no_response.insert(severity, target(&path, ctx.section(&path, value)?)?);
    }

    let mut warning_thresholds = Vec::new();
    for (index, t) in raw.warning_thresholds_percent.iter().enumerate() {
        let key = format!("warning_thresholds_percent[{index}]");
        let t = u8::try_from(*t)
            .ok()
            .filter(|t| (1..=99).contains(t))
            .ok_or_else(|| ctx.err(&key, "must be a percentage from 1 to 99"))?;
        if warning_thresholds.last().is_some_and(|last| *last >= t) {
            return Err(ctx.err(&key, "thresholds must be listed in increasing order, without repeats"));
        }
        warning_thresholds.push(t);
    }

    let mut paused_while_awaiting_customer = BTreeSet::new();
    for (state, metrics) in raw.pauses {
        if state != "awaiting_customer" {
            return Err(ctx.err(
                format!("pauses.{state}"),
                "unknown ticket state (the state that pauses clocks is awaiting_customer)",
            ));
        }
        for (index, m) in metrics.iter().enumerate() {
            let key = format!("pauses.{state}[{index}]");
            let metric = ctx.metric(&key, m)?;
            if !metric.is_sla() {
                return Err(ctx.err(&key, "only SLA clocks (first_response, follow_up, resolution) can pause"));
            }
            paused_while_awaiting_customer.insert(metric);
        }
    }

    let mut tiers: Vec<Tier> = Vec::with_capacity(raw.tiers.len());
    for (index, name) in raw.tiers.into_iter().enumerate() {
        let key = format!("tiers[{index}]");
        let tier = Tier::new(name).map_err(|e| ctx.err(&key, e.to_string()))?;
        if tiers.contains(&tier) {
            return Err(ctx.err(&key, format!("{tier} is named twice")));
        }
        tiers.push(tier);
    }

    let mut escalations = Vec::new();
    for (index, value) in raw.escalations.into_iter().enumerate() {
        let path = format!("escalations[{index}]");
        let rule: RawEscalation = ctx.section(&path, value)?;
        let metric = ctx.metric(&format!("{path}.metric"), &rule.metric)?;
        if !metric.is_sla() {
            return Err(
                ctx.err(format!("{path}.metric"), "only SLA clocks (first_response, follow_up, resolution) escalate")
            );
        }
        let trigger = match (rule.on.as_str(), rule.threshold_percent) {
            ("breach", None) => EscalationTrigger::Breach,
            ("breach", Some(_)) => {
                return Err(ctx.err(format!("{path}.threshold_percent"), "only a warning has a threshold"));
            }
            ("warning", threshold) => {
                let threshold_percent = match threshold {
                    None => None,
                    Some(t) => {
                        let t = u8::try_from(t).ok().filter(|t| warning_thresholds.contains(t)).ok_or_else(|| {
                            ctx.err(format!("{path}.threshold_percent"), "is not one of warning_thresholds_percent")
                        })?;
                        Some(t)
                    }
                };
                EscalationTrigger::Warning { threshold_percent }
            }
            (other, _) => {
                return Err(
                    ctx.err(format!("{path}.on"), format!("unknown trigger {other:?} (expected breach or warning)"))
                );
            }
        };
        let severities = rule
            .severities
            .iter()
            .enumerate()
            .map(|(i, s)| ctx.severity(&format!("{path}.severities[{i}]"), s))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if severities.is_empty() {
            return Err(ctx.err(format!("{path}.severities"), "must name at least one severity"));
        }
        let tier = Tier::new(rule.tier).map_err(|e| ctx.err(format!("{path}.tier"), e.to_string()))?;
        if !tiers.is_empty() && !tiers.contains(&tier) {
            return Err(ctx.err(format!("{path}.tier"), format!("{tier} is not one of tiers")));
        }
        let team = rule.team.map(Team::new).transpose().map_err(|e| ctx.err(format!("{path}.team"), e.to_string()))?;
        escalations.push(EscalationRule { trigger, metric, severities, tier, team });
    }

    Ok(Policy {
        version: PolicyVersion { name: raw.name, version: raw.version },
        severity_names,
        calendars,
        plans,
        categories,
        targets,
        no_response,
        warning_thresholds,
        paused_while_awaiting_customer,
        escalations,
        tiers,
    })
}

fn parse_target(
    ctx: &Ctx<'_>,
    path: &str,
    raw: RawTarget,
    calendars: &BTreeMap<CalendarId, Calendar>,
) -> Result<Target, PolicyError> {
    let calendar = CalendarId::new(raw.calendar).map_err(|e| ctx.err(format!("{path}.calendar"), e.to_string()))?;
    if !calendars.contains_key(&calendar) {
        return Err(ctx.err(format!("{path}.calendar"), format!("unknown calendar {calendar:?}")));
    }
    let positive = |key: &str, v: i64, max: i64| {
        if v <= 0 || v > max {
            Err(ctx.err(format!("{path}.{key}"), format!("must be from 1 to {max}")))
        } else {
            Ok(v)
        }
    };
    let amount = match (raw.hours, raw.minutes, raw.business_days) {
        (None, None, None) => return Err(ctx.err(path, "needs hours, minutes or business_days")),
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(ctx.err(path, "business_days cannot be combined with hours or minutes"));
        }
        (None, None, Some(days)) => {
            let days = positive("business_days", days, MAX_TARGET_DAYS)?;
            TargetAmount::BusinessDays(
                u32::try_from(days).map_err(|_| ctx.err(format!("{path}.business_days"), "too large"))?,
            )
        }
        (hours, minutes, None) => {
            let h = hours.map(|h| positive("hours", h, MAX_TARGET_DAYS * 24)).transpose()?.unwrap_or(0);
            let m = minutes.map(|m| positive("minutes", m, MAX_TARGET_DAYS * 24 * 60)).transpose()?.unwrap_or(0);
            let total = TimeDelta::hours(h) + TimeDelta::minutes(m);
            if total > TimeDelta::days(MAX_TARGET_DAYS) {
                return Err(ctx.err(path, format!("is longer than {MAX_TARGET_DAYS} days")));
            }
            TargetAmount::OpenTime(total)
        }
    };
    Ok(Target { amount, calendar })
}

fn parse_calendar(ctx: &Ctx<'_>, path: &str, id: CalendarId, raw: RawCalendar) -> Result<Calendar, PolicyError> {
    let tz = Tz::from_str(&raw.time_zone)
        .map_err(|_| ctx.err(format!("{path}.time_zone"), format!("unknown IANA time zone {:?}", raw.time_zone)))?;

    let mut week: [Option<Vec<OpenSpan>>; 7] = Default::default();
    for (day_key, spans) in &raw.hours {
        let key = format!("{path}.hours.{day_key}");
        let days: &[usize] = match day_key.as_str() {
            "mon" => &[0],
            "tue" => &[1],
            "wed" => &[2],
            "thu" => &[3],
            "fri" => &[4],
            "sat" => &[5],
            "sun" => &[6],
            "weekdays" => &[0, 1, 2, 3, 4],
            "weekend" => &[5, 6],
            "every_day" => &[0, 1, 2, 3, 4, 5, 6],
            other => {
                return Err(
                    ctx.err(key, format!("unknown day {other:?} (expected mon..sun, weekdays, weekend or every_day)"))
                );
            }
        };
        let parsed = spans
            .iter()
            .enumerate()
            .map(|(i, s)| parse_span(s).map_err(|p| ctx.err(format!("{key}[{i}]"), p)))
            .collect::<Result<Vec<_>, _>>()?;
        for &d in days {
            if week[d].is_some() {
                return Err(ctx.err(&key, "sets the hours of a day that another key already set"));
            }
            week[d] = Some(parsed.clone());
        }
    }
    let week: [Vec<OpenSpan>; 7] = week.map(Option::unwrap_or_default);

    let mut holidays = BTreeSet::new();
    for (i, h) in raw.holidays.iter().enumerate() {
        let date = NaiveDate::parse_from_str(h, "%Y-%m-%d")
            .map_err(|_| ctx.err(format!("{path}.holidays[{i}]"), format!("{h:?} is not a date (YYYY-MM-DD)")))?;
        holidays.insert(date);
    }

    let mut closures = Vec::new();
    for (i, c) in raw.closures.iter().enumerate() {
        let key = format!("{path}.closures[{i}]");
        let from = parse_local(tz, &c.from).map_err(|p| ctx.err(format!("{key}.from"), p))?;
        let to = parse_local(tz, &c.to).map_err(|p| ctx.err(format!("{key}.to"), p))?;
        closures.push(Closure { from, to });
    }

    Calendar::new(id, tz, week, holidays, closures).map_err(|e| ctx.err(path, e.to_string()))
}

/// `HH:MM`, with `24:00` meaning the end of the day; returns seconds after midnight.
fn parse_time(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day (HH:MM, 00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60)
}

fn parse_span(text: &str) -> Result<OpenSpan, String> {
    let (a, b) = text.split_once('-').ok_or_else(|| format!("{text:?} is not a span (HH:MM-HH:MM)"))?;
    let (start, end) = (parse_time(a.trim())?, parse_time(b.trim())?);
    OpenSpan::new(start, end).map_err(|_| format!("{text:?} is empty or reversed"))
}

/// `YYYY-MM-DD HH:MM` (or with a `T`) in the calendar's zone, read as calendar.rs reads local times.
fn parse_local(tz: Tz, text: &str) -> Result<crate::calendar::Timestamp, String> {
    let bad = || format!("{text:?} is not a local date and time (YYYY-MM-DD HH:MM)");
    let (date, time) = text.split_once([' ', 'T']).ok_or_else(bad)?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| bad())?;
    let seconds = parse_time(time)?;
    local_instant(tz, date, seconds).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_with_24_00_as_end_of_day() {
        assert_eq!(parse_time("09:00"), Ok(9 * 3600));
        assert_eq!(parse_time("24:00"), Ok(86_400));
        assert!(parse_time("24:01").is_err());
        assert!(parse_time("9:00").is_err());
        assert!(parse_time("09:60").is_err());
        assert!(parse_span("18:00-09:00").is_err());
        assert!(parse_span("09:00-09:00").is_err());
    }
}
