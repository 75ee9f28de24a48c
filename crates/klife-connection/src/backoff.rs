//! Exponential backoff with jitter, as a plain value: the caller supplies the random
//! draw and decides when to sleep.

use std::time::Duration;

/// Exponential backoff: `initial`, doubling per failure up to `max`, each delay drawn
/// uniformly from ±`jitter` around the exponential value (like the Java client's
/// `reconnect.backoff.ms` / `reconnect.backoff.max.ms`).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    failures: u32,
}

impl Backoff {
    /// Longest delay any backoff gives, whatever it is configured with.
    pub const CEILING: Duration = Duration::from_secs(3600);

    /// A backoff from `initial` to `max` (both capped at [`Backoff::CEILING`]), with
    /// 20% jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(Self::CEILING);
        Backoff { initial, max: max.min(Self::CEILING).max(initial), jitter: 0.2, failures: 0 }
    }

    /// Sets the jitter fraction (0 to 1).
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Records a failure and returns the delay before the next attempt. `random` is a
    /// uniform draw in `[0, 1)`.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let exp = self.failures.min(32);
        self.failures = self.failures.saturating_add(1);
        let base = self.initial.as_secs_f64() * 2f64.powi(exp as i32);
        let base = base.min(self.max.as_secs_f64());
        let factor = 1.0 + self.jitter * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((base * factor).min(self.max.as_secs_f64()))
    }

    /// Records a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_without_jitter() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(1)).with_jitter(0.0);
        let delays: Vec<u128> = (0..7).map(|_| b.next_delay(0.5).as_millis()).collect();
        assert_eq!(delays, vec![50, 100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(0.9).as_millis(), 50);
    }

    #[test]
    fn jitter_stays_within_its_band_and_under_the_cap() {
        let mut lo = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut hi = lo.clone();
        assert_eq!(lo.next_delay(0.0).as_millis(), 80);
        assert_eq!(hi.next_delay(0.999_999).as_millis(), 119);
        let mut capped = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        assert!(capped.next_delay(0.999) <= Duration::from_secs(1));
    }

    #[test]
    fn huge_settings_are_capped() {
        let mut b = Backoff::new(Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            assert!(b.next_delay(0.999) <= Backoff::CEILING);
        }
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_secs(30));
        for _ in 0..1000 {
            b.next_delay(0.3);
        }
        assert!(b.next_delay(0.3) <= Duration::from_secs(30));
        assert_eq!(b.failures(), 1001);
    }
}
