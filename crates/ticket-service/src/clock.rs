//! The source of the current instant for the command service and the timer: the wall clock, or
//! a simulated clock that tests and the demo advance instantly.

use std::future::Future;
use std::pin::Pin;

use chrono::TimeDelta;
use ticket_domain::Timestamp;
use tokio::sync::watch;

/// A future that completes once a clock reads at or after an instant.
pub type Wait<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The current instant, and waiting for a later one.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Completes once [`Clock::now`] reads `at` or later.
    fn wait_until(&self, at: Timestamp) -> Wait<'_>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// The wall clock can be set back or forward while a wait is pending: a long wait wakes up at
/// least this often to read it again.
const SYSTEM_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from(std::time::SystemTime::now())
    }

    fn wait_until(&self, at: Timestamp) -> Wait<'_> {
        Box::pin(async move {
            loop {
                let left = at - self.now();
                let Ok(left) = left.to_std() else { return };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(SYSTEM_RECHECK)).await;
            }
        })
    }
}

/// A clock that only moves when told to; waits complete as soon as it is advanced past them.
#[derive(Debug)]
pub struct SimulatedClock {
    now: watch::Sender<Timestamp>,
}

impl SimulatedClock {
    pub fn new(start: Timestamp) -> Self {
        Self { now: watch::Sender::new(start) }
    }

    /// Moves the clock to `to`; a clock never runs backwards, so an earlier instant is ignored.
    pub fn advance_to(&self, to: Timestamp) {
        self.now.send_if_modified(|now| {
            let later = to > *now;
            if later {
                *now = to;
            }
            later
        });
    }

    pub fn advance(&self, by: TimeDelta) {
        self.advance_to(self.now() + by.max(TimeDelta::zero()));
    }
}

impl Clock for SimulatedClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn wait_until(&self, at: Timestamp) -> Wait<'_> {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`, which outlives this future.
            let _ = now.wait_for(|now| *now >= at).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn t(minute: u32) -> Timestamp {
        ticket_domain::testing::utc(2026, 11, 21, 3, minute)
    }

    #[tokio::test]
    async fn a_simulated_wait_completes_when_the_clock_is_advanced_past_it() {
        let clock = Arc::new(SimulatedClock::new(t(0)));
        let waiting = tokio::spawn({
            let clock = clock.clone();
            async move { clock.wait_until(t(30)).await }
        });
        clock.advance_to(t(29));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "woke before its instant");
        clock.advance(TimeDelta::minutes(5));
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await.unwrap().unwrap();
        assert_eq!(clock.now(), t(34));
        clock.advance_to(t(1));
        assert_eq!(clock.now(), t(34), "a clock never runs backwards");
        clock.wait_until(t(2)).await;
    }

    #[tokio::test]
    async fn the_system_clock_waits_for_an_instant_and_not_for_a_past_one() {
        let clock = SystemClock;
        clock.wait_until(t(0)).await;
        let at = clock.now() + TimeDelta::milliseconds(20);
        clock.wait_until(at).await;
        assert!(clock.now() >= at);
    }
}
