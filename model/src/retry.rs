//! How long to keep retrying, and how long to pause between tries.
//!
//! Budgets are in time, not attempts: a throttled Kinesis shard or DynamoDB partition
//! recovers in seconds, so a retry loop must be able to wait that long, and a function
//! must still answer before its own timeout.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// The shortest time a try is given, even when the budget is nearly spent.
pub const MIN_ATTEMPT_TIME: Duration = Duration::from_secs(1);

/// Exponential backoff with "equal jitter" (each pause is uniform between half its ceiling
/// and the ceiling), within a total time budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first pause; it doubles with every retry.
    pub base: Duration,
    /// Largest pause.
    pub max: Duration,
    /// No retry starts once this much time has passed since the first try.
    pub budget: Duration,
}

impl Default for Backoff {
    /// Sized for Kinesis and DynamoDB throughput errors: pauses grow to 2 s, retries go on
    /// for up to 10 s.
    fn default() -> Self {
        Self { base: Duration::from_millis(50), max: Duration::from_secs(2), budget: Duration::from_secs(10) }
    }
}

impl Backoff {
    pub fn with_budget(self, budget: Duration) -> Self {
        Self { budget, ..self }
    }

    /// Upper bound of the pause before retry `retry` (1 = first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn pause(&self, retry: u32) -> Duration {
        let millis = self.ceiling(retry).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis.max(1)))
    }

    /// Starts counting the budget now.
    pub fn start(&self) -> Retries {
        Retries { backoff: *self, started: Instant::now(), retry: 0 }
    }
}

/// One retry loop under a [`Backoff`].
#[derive(Debug, Clone)]
pub struct Retries {
    backoff: Backoff,
    started: Instant,
    retry: u32,
}

impl Retries {
    /// Retries made so far.
    pub fn count(&self) -> u32 {
        self.retry
    }

    /// Time left in the budget.
    pub fn remaining(&self) -> Duration {
        self.backoff.budget.saturating_sub(self.started.elapsed())
    }

    /// Pauses before the next try and returns true, or returns false at once when the
    /// pause would end past the budget.
    pub async fn wait(&mut self) -> bool {
        let pause = self.backoff.pause(self.retry + 1);
        let remaining = self.remaining();
        if remaining.is_zero() || pause > remaining {
            return false;
        }
        self.retry += 1;
        tokio::time::sleep(pause).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff { base: Duration::from_millis(50), max: Duration::from_millis(300), budget: Duration::ZERO };
        assert_eq!(b.ceiling(1), Duration::from_millis(50));
        assert_eq!(b.ceiling(3), Duration::from_millis(200));
        assert_eq!(b.ceiling(9), Duration::from_millis(300));
        assert_eq!(b.ceiling(99), Duration::from_millis(300));
        for _ in 0..100 {
            let pause = b.pause(2);
            assert!(pause >= Duration::from_millis(50) && pause <= Duration::from_millis(100), "{pause:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_budget_is_spent() {
        let mut retries = Backoff::default().start();
        while retries.wait().await {}
        let spent = Backoff::default().budget - retries.remaining();
        assert!(spent <= Backoff::default().budget);
        // Pauses of 25-50, 50-100, ... 1-2 s fit about eight retries into 10 s.
        assert!((6..=12).contains(&retries.count()), "{}", retries.count());
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_budget_allows_no_retry() {
        let mut retries = Backoff::default().with_budget(Duration::ZERO).start();
        assert!(!retries.wait().await);
        assert_eq!(retries.count(), 0);
    }
}
