//! How many lines a second the stores write about single refused records.
//!
//! A load names each record it refuses, so that an admin finds it. A bulk edit gone wrong
//! (a `sed` over the file, a script writing Redis by hand) refuses hundreds of thousands at
//! once: a line each was 90 MB of log per reload, and again at every reconcile. The first
//! [`PER_SECOND`] a second are written; the rest are counted, and the load ends with one line
//! saying how many were left out ([`summarize`]). `binding_records_rejected_total` counts every
//! one, and `nexus-edge check` names each record of a bindings file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines about refused records written per second, across the process's stores.
pub(crate) const PER_SECOND: u64 = 20;

/// The allowance of one kind of line: the current second (high 32 bits) with the lines
/// written in it (low 32), and the lines left out since the last summary.
#[derive(Debug, Default)]
struct Allowance {
    window: AtomicU64,
    skipped: AtomicU64,
}

impl Allowance {
    fn admit_at(&self, second: u64) -> bool {
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (at, used) = (current >> 32, current & u64::from(u32::MAX));
            let next = if at != second {
                (second << 32) | 1
            } else if used < PER_SECOND {
                current + 1
            } else {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}

/// The process's allowance for lines about refused records.
static RECORDS: Allowance = Allowance {
    window: AtomicU64::new(0),
    skipped: AtomicU64::new(0),
};

fn now_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        & u64::from(u32::MAX)
}

/// Whether a line about one refused record may be written now; a line left out is counted.
pub(crate) fn admit() -> bool {
    RECORDS.admit_at(now_second())
}

/// Ends a load: says how many lines about its refused records were left out, if any.
pub(crate) fn summarize(origin: &str) {
    let skipped = RECORDS.skipped.swap(0, Ordering::Relaxed);
    if skipped > 0 {
        tracing::warn!(store = origin, not_logged = skipped,
            "more binding records were refused than are logged one by one (binding_records_rejected_total counts each; `nexus-edge check` names each record of a bindings file)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_admits_its_allowance_and_counts_the_rest() {
        let lines = Allowance::default();
        let admitted = (0..50).filter(|_| lines.admit_at(7)).count() as u64;
        assert_eq!(admitted, PER_SECOND);
        assert_eq!(lines.skipped.load(Ordering::Relaxed), 50 - PER_SECOND);
        assert!(lines.admit_at(8));
    }
}
