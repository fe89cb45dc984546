//! SLA policies: calendars, plans, categories, targets, no-response windows, warnings, pauses and
//! escalation rules. A [`Policy`] is validated when it is built, so every lookup on it succeeds.
//!
//! The file format is TOML (see `deploy/policies/*.toml`); [`Policy::from_toml`] parses and
//! validates it and reports the first problem with the file's name and the offending key.

mod file;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::TimeDelta;

use crate::calendar::{Calendar, Timestamp};
use crate::ids::{CalendarId, CategoryId, PlanId, Team, Tier};
use crate::severity::{Metric, Severity};

pub use file::PolicyError;

/// The longest target accepted (clock time or business days): a longer one is a typo, and the
/// bound keeps every due-instant search short.
pub const MAX_TARGET_DAYS: i64 = 366;

/// Identifies the policy an SLA decision was made with; stored in events with every due instant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub struct PolicyVersion {
    pub name: String,
    pub version: String,
}

impl fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// How much time a target allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub enum TargetAmount {
    /// Open time on the target's calendar (on a 24x7 calendar, plain clock time).
    OpenTime(#[cfg_attr(feature = "serde-state", serde(with = "crate::serde_delta"))] TimeDelta),
    /// Business days on the target's calendar, as ADR 0002 defines them.
    BusinessDays(u32),
}

impl fmt::Display for TargetAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAmount::OpenTime(d) if d.num_seconds() % 3600 == 0 => write!(f, "{}h", d.num_hours()),
            TargetAmount::OpenTime(d) if d.num_seconds() % 60 == 0 => write!(f, "{}min", d.num_minutes()),
            TargetAmount::OpenTime(d) => write!(f, "{}s", d.num_seconds()),
            TargetAmount::BusinessDays(1) => write!(f, "1 business day"),
            TargetAmount::BusinessDays(n) => write!(f, "{n} business days"),
        }
    }
}

/// A target: an amount of time counted on a named calendar.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub struct Target {
    pub amount: TargetAmount,
    pub calendar: CalendarId,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.amount, self.calendar)
    }
}

/// A plan or contract and the highest severity it entitles to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub max_severity: Severity,
}

/// A ticket category and the highest severity allowed in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub name: String,
    pub max_severity: Severity,
}

/// Targets for one severity, optionally limited to a plan and/or a category. The most specific
/// matching rule that sets a metric wins: plan and category, then plan, then category, then none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRule {
    pub plan: Option<PlanId>,
    pub category: Option<CategoryId>,
    pub severity: Severity,
    pub first_response: Option<Target>,
    pub follow_up: Option<Target>,
    pub resolution: Option<Target>,
}

impl TargetRule {
    fn specificity(&self) -> u8 {
        u8::from(self.plan.is_some()) * 2 + u8::from(self.category.is_some())
    }

    fn matches(&self, plan: &PlanId, category: &CategoryId, severity: Severity) -> bool {
        self.severity == severity
            && self.plan.as_ref().is_none_or(|p| p == plan)
            && self.category.as_ref().is_none_or(|c| c == category)
    }

    fn target(&self, metric: Metric) -> Option<&Target> {
        match metric {
            Metric::FirstResponse => self.first_response.as_ref(),
            Metric::FollowUp => self.follow_up.as_ref(),
            Metric::Resolution => self.resolution.as_ref(),
            Metric::NoResponse => None,
        }
    }
}

/// What makes an automatic escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EscalationTrigger {
    /// A warning threshold crossed; `None` matches every threshold.
    Warning {
        threshold_percent: Option<u8>,
    },
    Breach,
}

/// Escalate automatically when `trigger` happens on `metric` at one of `severities`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationRule {
    pub trigger: EscalationTrigger,
    pub metric: Metric,
    pub severities: BTreeSet<Severity>,
    pub tier: Tier,
    pub team: Option<Team>,
}

impl EscalationRule {
    fn matches_warning(&self, metric: Metric, severity: Severity, threshold: u8) -> bool {
        self.metric == metric
            && self.severities.contains(&severity)
            && matches!(self.trigger, EscalationTrigger::Warning { threshold_percent } if threshold_percent.is_none_or(|t| t == threshold))
    }

    fn matches_breach(&self, metric: Metric, severity: Severity) -> bool {
        self.metric == metric && self.severities.contains(&severity) && self.trigger == EscalationTrigger::Breach
    }
}

/// A validated SLA policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    version: PolicyVersion,
    severity_names: BTreeMap<Severity, String>,
    calendars: BTreeMap<CalendarId, Calendar>,
    plans: BTreeMap<PlanId, Plan>,
    categories: BTreeMap<CategoryId, Category>,
    targets: Vec<TargetRule>,
    no_response: BTreeMap<Severity, Target>,
    warning_thresholds: Vec<u8>,
    paused_while_awaiting_customer: BTreeSet<Metric>,
    escalations: Vec<EscalationRule>,
    /// The support tiers, lowest first (`tiers` in the file; may be empty).
    tiers: Vec<Tier>,
}

impl Policy {
    /// Parses and validates a TOML policy. `source` names the file in error messages.
    pub fn from_toml(source: &str, text: &str) -> Result<Self, PolicyError> {
        file::parse(source, text)
    }

    /// Reads, parses and validates a policy file: the one place of this crate that touches the
    /// file system, kept here so that every binary reports a bad file the same way.
    pub fn load(path: &std::path::Path) -> Result<Self, PolicyError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::new(&source, "", format!("cannot read the file: {e}")))?;
        Self::from_toml(&source, &text)
    }

    pub fn version(&self) -> &PolicyVersion {
        &self.version
    }

    /// The policy's name for a severity level ("critical", "highest").
    pub fn severity_name(&self, severity: Severity) -> &str {
        self.severity_names.get(&severity).map_or(severity.as_str(), String::as_str)
    }

    pub fn calendar(&self, id: &CalendarId) -> Option<&Calendar> {
        self.calendars.get(id)
    }

    pub fn calendars(&self) -> impl Iterator<Item = &Calendar> {
        self.calendars.values()
    }

    pub fn plan(&self, id: &PlanId) -> Option<&Plan> {
        self.plans.get(id)
    }

    pub fn plans(&self) -> impl Iterator<Item = (&PlanId, &Plan)> {
        self.plans.iter()
    }

    pub fn category(&self, id: &CategoryId) -> Option<&Category> {
        self.categories.get(id)
    }

    pub fn categories(&self) -> impl Iterator<Item = (&CategoryId, &Category)> {
        self.categories.iter()
    }

    pub fn target_rules(&self) -> &[TargetRule] {
        &self.targets
    }

    /// The target of `metric` for a ticket of this plan, category and severity, if the policy sets
    /// one. For [`Metric::NoResponse`] it is the no-response window of the severity.
    pub fn target(&self, plan: &PlanId, category: &CategoryId, severity: Severity, metric: Metric) -> Option<&Target> {
        if metric == Metric::NoResponse {
            return self.no_response.get(&severity);
        }
        self.targets
            .iter()
            .filter(|r| r.matches(plan, category, severity))
            .filter_map(|r| r.target(metric).map(|t| (r.specificity(), t)))
            .max_by_key(|(specificity, _)| *specificity)
            .map(|(_, t)| t)
    }

    /// The business time a target allows for a clock started at `started_at`: plain open time, or
    /// for business days the open time up to the due instant ADR 0002 defines.
    pub fn target_duration(&self, target: &Target, started_at: Timestamp) -> Option<TimeDelta> {
        let calendar = self.calendar(&target.calendar)?;
        Some(match target.amount {
            TargetAmount::OpenTime(d) => d,
            TargetAmount::BusinessDays(n) => calendar.elapsed(started_at, calendar.add_business_days(started_at, n)),
        })
    }

    /// Warning thresholds, in percent of a target, ascending.
    pub fn warning_thresholds(&self) -> &[u8] {
        &self.warning_thresholds
    }

    /// Does this clock pause while the ticket awaits the customer?
    pub fn pauses_while_awaiting_customer(&self, metric: Metric) -> bool {
        self.paused_while_awaiting_customer.contains(&metric)
    }

    /// The escalation a crossed warning threshold triggers, if any (the first matching rule).
    pub fn escalation_on_warning(&self, metric: Metric, severity: Severity, threshold: u8) -> Option<&EscalationRule> {
        self.escalations.iter().find(|r| r.matches_warning(metric, severity, threshold))
    }

    /// The escalation a breach triggers, if any (the first matching rule).
    pub fn escalation_on_breach(&self, metric: Metric, severity: Severity) -> Option<&EscalationRule> {
        self.escalations.iter().find(|r| r.matches_breach(metric, severity))
    }

    pub fn escalations(&self) -> &[EscalationRule] {
        &self.escalations
    }

    /// A tier's rank in the policy's order of tiers (0: the lowest); `None` for a tier the
    /// policy does not order.
    pub fn tier_rank(&self, tier: &Tier) -> Option<usize> {
        self.tiers.iter().position(|t| t == tier)
    }
}

#[cfg(test)]
mod tests;
