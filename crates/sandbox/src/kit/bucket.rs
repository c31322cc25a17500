//! A rate limit as the platforms keep one: a bucket of request tokens that fills
//! evenly, so many requests at once run it dry and a pause gives some back. Heroku
//! (4500, topped up at 75 a minute) and DigitalOcean (250 a minute) are both one.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct Bucket {
    capacity: u32,
    per_minute: u32,
    /// Tokens in the bucket, and when they were counted.
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// A full bucket of `capacity` tokens that gains `per_minute` a minute.
    pub fn new(capacity: u32, per_minute: u32) -> Bucket {
        let capacity = capacity.max(1);
        Bucket { capacity, per_minute: per_minute.max(1), state: Mutex::new((capacity as f64, Instant::now())) }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The tokens now, after what the time since the last count gave back.
    fn count(&self) -> f64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        s.0 = (s.0 + (now - s.1).as_secs_f64() * self.per_minute as f64 / 60.0).min(self.capacity as f64);
        s.1 = now;
        s.0
    }

    /// Takes one token and says how many are left; when there is none, how long until
    /// one is back (whole seconds, at least one, as a Retry-After says it).
    pub fn spend(&self) -> Result<u64, u64> {
        self.count();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.0 < 1.0 {
            return Err(self.seconds_for(1.0 - s.0).max(1));
        }
        s.0 -= 1.0;
        Ok(s.0 as u64)
    }

    /// Whole tokens left.
    pub fn left(&self) -> u64 {
        self.count().max(0.0) as u64
    }

    /// The unix time at which the bucket is full again.
    pub fn full_at(&self) -> u64 {
        let missing = self.capacity as f64 - self.count();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        now + self.seconds_for(missing)
    }

    fn seconds_for(&self, tokens: f64) -> u64 {
        (tokens.max(0.0) * 60.0 / self.per_minute as f64).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_runs_dry_and_says_when_a_token_is_back() {
        let bucket = Bucket::new(3, 60);
        assert_eq!(bucket.spend(), Ok(2));
        assert_eq!(bucket.spend(), Ok(1));
        assert_eq!(bucket.spend(), Ok(0));
        assert_eq!(bucket.spend(), Err(1), "one token a second comes back");
        assert_eq!(bucket.left(), 0);
    }

    #[test]
    fn a_slow_refill_names_a_longer_wait_and_a_later_full_bucket() {
        let bucket = Bucket::new(2, 6);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(bucket.full_at() <= now + 1, "full now");
        bucket.spend().unwrap();
        bucket.spend().unwrap();
        let wait = bucket.spend().unwrap_err();
        assert!((9..=10).contains(&wait), "6 a minute: one every 10 s, {wait}");
        assert!(bucket.full_at() >= now + 19, "two tokens missing: 20 s");
    }
}
