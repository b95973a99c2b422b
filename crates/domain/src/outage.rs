//! When a process last found a dependency unreachable, so that work that failed around then
//! can be told apart from work that failed for itself. One clock per dependency, kept in a
//! `static` by the crate that talks to it (the broker in `bus`, the state database in
//! `store`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct OutageClock {
    base: OnceLock<Instant>,
    /// Milliseconds after `base`, plus one (0: never).
    last: AtomicU64,
}

impl OutageClock {
    pub const fn new() -> Self {
        Self {
            base: OnceLock::new(),
            last: AtomicU64::new(0),
        }
    }

    fn base(&self) -> Instant {
        *self.base.get_or_init(Instant::now)
    }

    /// The dependency did not answer, now.
    pub fn noticed(&self) {
        let ms = u64::try_from(self.base().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        self.last.fetch_max(ms, Ordering::SeqCst);
    }

    /// Whether it did not answer at some point at or after `t`.
    pub fn since(&self, t: Instant) -> bool {
        let last = self.last.load(Ordering::SeqCst);
        last != 0 && self.base() + Duration::from_millis(last - 1) >= t.max(self.base())
    }
}

impl Default for OutageClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_counts_for_work_started_before_it_only() {
        let clock = OutageClock::new();
        let before = Instant::now();
        assert!(!clock.since(before), "no outage yet");
        std::thread::sleep(Duration::from_millis(5));
        clock.noticed();
        assert!(clock.since(before));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!clock.since(Instant::now()), "work started after it");
    }
}
