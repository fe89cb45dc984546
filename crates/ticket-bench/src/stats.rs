//! Latency histograms and their summaries.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds, up to one minute, three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
}

#[cold]
fn unreachable_histogram() -> Histogram<u64> {
    // `Histogram::new(3)` only fails for more than 5 significant digits.
    #[allow(clippy::panic)]
    {
        panic!("histogram with 3 significant digits")
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub commands: u64,
    pub events: u64,
    pub rejected: u64,
    pub seconds: f64,
    pub commands_per_sec: f64,
    pub events_per_sec: f64,
    pub latency: Latency,
}

impl Phase {
    pub fn new(commands: u64, events: u64, rejected: u64, seconds: f64, h: &Histogram<u64>) -> Self {
        let per_sec = |n: u64| if seconds > 0.0 { n as f64 / seconds } else { 0.0 };
        Self {
            commands,
            events,
            rejected,
            seconds,
            commands_per_sec: per_sec(commands),
            events_per_sec: per_sec(events),
            latency: Latency::of(h),
        }
    }
}
