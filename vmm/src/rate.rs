//! A token bucket: at most `burst` events at once and `rate` per second
//! sustained, for what the host emits on a guest's behalf (printed lines,
//! trace events, a monitor's log lines), so no guest can flood the host's
//! log or a trace server.

use std::time::Instant;

/// Events allowed so far, refilled by the time since the last one.
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Bucket {
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Whether one more event may go at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = Bucket::new(1000.0, 50.0);
        let t0 = Instant::now() + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| b.take(t0)).count(), 50);
        assert!(!b.take(t0));
        // 10 ms later: 10 more.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!((0..100).filter(|_| b.take(t1)).count(), 10);
        // Time going backwards refills nothing.
        assert!(!b.take(t0));
    }
}
