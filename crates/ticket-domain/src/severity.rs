//! Severity levels and SLA metrics.

use std::fmt;
use std::str::FromStr;

/// A severity level, most urgent first. Both reference policies have three levels; their names
/// ("critical", "highest", ...) are policy data, the levels and their order are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub enum Severity {
    A,
    B,
    C,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::A, Severity::B, Severity::C];

    /// The next lower level: A to B, B to C, and C stays C (support-rules.md section 5).
    pub const fn lowered(self) -> Severity {
        match self {
            Severity::A => Severity::B,
            Severity::B | Severity::C => Severity::C,
        }
    }

    /// True when `self` is at most as urgent as `max` (C is within a B limit, A is not).
    pub fn within(self, max: Severity) -> bool {
        self >= max
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::A => "A",
            Severity::B => "B",
            Severity::C => "C",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "A" | "a" => Ok(Severity::A),
            "B" | "b" => Ok(Severity::B),
            "C" | "c" => Ok(Severity::C),
            other => Err(format!("unknown severity {other:?} (expected A, B or C)")),
        }
    }
}

/// A clock the engine keeps for a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde-state", derive(serde::Serialize, serde::Deserialize))]
pub enum Metric {
    /// From opening to the first agent response.
    FirstResponse,
    /// From an agent response to the next one (the update cadence), until resolved.
    FollowUp,
    /// From opening (or reopening) to resolution.
    Resolution,
    /// While awaiting the customer: the window after which severity is lowered.
    NoResponse,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::FirstResponse, Metric::FollowUp, Metric::Resolution, Metric::NoResponse];

    /// The metrics that are promises to the customer and can be breached. The no-response window
    /// is a promise of the customer's, whose expiry lowers the severity instead.
    pub const fn is_sla(self) -> bool {
        match self {
            Metric::FirstResponse | Metric::FollowUp | Metric::Resolution => true,
            Metric::NoResponse => false,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Metric::FirstResponse => "first_response",
            Metric::FollowUp => "follow_up",
            Metric::Resolution => "resolution",
            Metric::NoResponse => "no_response",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
            format!("unknown metric {s:?} (expected first_response, follow_up, resolution or no_response)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_goes_a_b_c_and_c_stays_c() {
        assert_eq!(Severity::A.lowered(), Severity::B);
        assert_eq!(Severity::B.lowered(), Severity::C);
        assert_eq!(Severity::C.lowered(), Severity::C);
    }

    #[test]
    fn within_compares_urgency() {
        assert!(Severity::B.within(Severity::B));
        assert!(Severity::C.within(Severity::B));
        assert!(!Severity::A.within(Severity::B));
    }

    #[test]
    fn names_round_trip() {
        for s in Severity::ALL {
            assert_eq!(s.as_str().parse::<Severity>().unwrap(), s);
        }
        for m in Metric::ALL {
            assert_eq!(m.as_str().parse::<Metric>().unwrap(), m);
        }
    }
}
