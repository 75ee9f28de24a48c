//! Virtual time for the crate's tests: an origin and an offset the tests move forward.

use std::time::{Duration, Instant};

/// Virtual time: an origin and an offset that tests move forward.
pub(crate) struct Clock {
    origin: Instant,
    elapsed: Duration,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock { origin: Instant::now(), elapsed: Duration::ZERO }
    }

    pub(crate) fn now(&self) -> Instant {
        self.origin + self.elapsed
    }

    pub(crate) fn advance(&mut self, d: Duration) -> Instant {
        self.elapsed += d;
        self.now()
    }

    /// How far `t` is from the origin.
    pub(crate) fn at(&self, t: Instant) -> Duration {
        t - self.origin
    }
}
