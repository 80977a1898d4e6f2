//! Per-session rate limiting: a token bucket refilled lazily.
//!
//! No timer refills the buckets: each bucket remembers when it was last
//! looked at and adds what the elapsed time earned the next time a frame
//! arrives. An idle session costs nothing, however many there are.

use std::time::Instant;

/// The allowance every session gets (from `--rate` and `--burst`).
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Frames per second on average; 0 turns limiting off.
    pub per_sec: u32,
    /// Frames that may arrive at once.
    pub burst: u32,
}

/// One session's bucket.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f32,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket: a new session may send a whole burst at once.
    pub fn new(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: rate.burst as f32,
            last: now,
        }
    }

    /// Takes one frame's token if there is one.
    pub fn allow(&mut self, rate: Rate, now: Instant) -> bool {
        if rate.per_sec == 0 {
            return true;
        }
        let earned = now.saturating_duration_since(self.last).as_secs_f32() * rate.per_sec as f32;
        self.last = now;
        self.tokens = (self.tokens + earned).min(rate.burst as f32);
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
    fn burst_then_rate() {
        let rate = Rate {
            per_sec: 10,
            burst: 3,
        };
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate, t0);
        assert!(b.allow(rate, t0));
        assert!(b.allow(rate, t0));
        assert!(b.allow(rate, t0));
        assert!(!b.allow(rate, t0), "burst spent");
        // 10/s: one token every 100 ms.
        assert!(!b.allow(rate, t0 + Duration::from_millis(50)));
        assert!(b.allow(rate, t0 + Duration::from_millis(110)));
        assert!(!b.allow(rate, t0 + Duration::from_millis(110)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.allow(rate, later));
        }
        assert!(!b.allow(rate, later));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let rate = Rate {
            per_sec: 0,
            burst: 1,
        };
        let now = Instant::now();
        let mut b = TokenBucket::new(rate, now);
        assert!((0..10_000).all(|_| b.allow(rate, now)));
    }
}
