//! A log line's allowance: one every few seconds, the rest counted and said with the next.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often one kind of refusal is logged at most.
const EVERY: Duration = Duration::from_secs(10);

/// One kind of line's allowance.
#[derive(Debug)]
pub(super) struct Quiet {
    made: Instant,
    /// When a line was last written, in seconds since `made` plus one (0: never).
    last: AtomicU64,
    /// Lines skipped since.
    skipped: AtomicU64,
}

impl Default for Quiet {
    fn default() -> Self {
        Self {
            made: Instant::now(),
            last: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }
}

impl Quiet {
    /// Writes the line (`write`, given how many were skipped before it) if its allowance
    /// holds one; counts it as skipped otherwise.
    pub(super) fn log(&self, write: impl FnOnce(u64)) {
        let now = self.made.elapsed().as_secs() + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now >= last + EVERY.as_secs();
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            write(self.skipped.swap(0, Ordering::Relaxed));
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
