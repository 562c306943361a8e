//! One instance's latencies over one interval: a histogram of fixed, logarithmic buckets
//! that requests add to with one atomic increment and the interval's end reads and empties.
//!
//! Buckets grow by 5% from 50 µs, so a quantile read from them is within about 2.5% of the
//! true one, from 50 µs up to about two minutes (longer ones share the last bucket).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Number of buckets.
const BUCKETS: usize = 300;
/// The upper bound of the first bucket, which takes everything quicker.
const FIRST_SECS: f64 = 50e-6;
/// Each bucket's bounds are this many times the one before's.
const RATIO: f64 = 1.05;

/// The latencies of one interval so far.
#[derive(Debug)]
pub struct Window {
    counts: [AtomicU64; BUCKETS],
}

impl Default for Window {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Window {
    /// Counts one request's latency.
    pub fn record(&self, latency: Duration) {
        self.counts[bucket(latency.as_secs_f64())].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds counts read from another window.
    pub fn add(&self, counts: &Counts) {
        for (bucket, &n) in self.counts.iter().zip(counts.0.iter()) {
            if n > 0 {
                bucket.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The interval's counts, leaving the window empty for the next. A request counted while
    /// this runs lands in one interval or the other, never in both nor in neither.
    pub fn take(&self) -> Counts {
        Counts(std::array::from_fn(|i| {
            self.counts[i].swap(0, Ordering::Relaxed)
        }))
    }
}

/// Bucket `i > 0` holds `[FIRST_SECS·RATIO^(i-1), FIRST_SECS·RATIO^i)`; bucket 0 the rest below.
fn bucket(secs: f64) -> usize {
    if secs.is_nan() || secs < FIRST_SECS {
        return 0;
    }
    let i = (secs / FIRST_SECS).ln() / RATIO.ln();
    // `as` saturates a float too large for usize; the clamp keeps the last bucket open.
    (i as usize).saturating_add(1).min(BUCKETS - 1)
}

/// What one bucket stands for: the geometric middle of its bounds (bucket 0: its upper
/// bound's half; the last: its lower bound, as it has no upper one).
fn representative(i: usize) -> f64 {
    match i {
        0 => FIRST_SECS / 2.0,
        i if i == BUCKETS - 1 => FIRST_SECS * RATIO.powi(i as i32 - 1),
        i => FIRST_SECS * RATIO.powi(i as i32 - 1) * RATIO.sqrt(),
    }
}

/// An interval's latency counts, read from a [`Window`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts([u64; BUCKETS]);

impl Counts {
    /// Requests counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The latency below which `q` (0 < q ≤ 1) of the requests fell, by nearest rank; `None`
    /// for an interval without requests.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_secs_f64(representative(i)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: f64) -> Duration {
        Duration::from_secs_f64(n / 1000.0)
    }

    /// Within the buckets' resolution (half a step either way) of `want`.
    fn close_to(got: Option<Duration>, want: Duration) {
        let got = got.expect("a quantile").as_secs_f64();
        let want = want.as_secs_f64();
        assert!(
            (got / want - 1.0).abs() <= RATIO.sqrt() - 1.0 + 1e-9,
            "{got} is not within a bucket of {want}"
        );
    }

    #[test]
    fn quantiles_come_back_within_a_buckets_width() {
        let w = Window::default();
        // 1..=100 ms, one each: p95 is 95 ms, p10 10 ms, the median 50 ms.
        for n in 1..=100 {
            w.record(ms(f64::from(n)));
        }
        let c = w.take();
        assert_eq!(c.total(), 100);
        close_to(c.quantile(0.95), ms(95.0));
        close_to(c.quantile(0.10), ms(10.0));
        close_to(c.quantile(0.5), ms(50.0));
        close_to(c.quantile(1.0), ms(100.0));
        // Taken: the next interval starts empty.
        let next = w.take();
        assert_eq!(next.total(), 0);
        assert_eq!(next.quantile(0.95), None);
    }

    #[test]
    fn the_ends_of_the_range_are_kept_not_lost() {
        let w = Window::default();
        w.record(Duration::ZERO);
        w.record(Duration::from_nanos(10));
        w.record(Duration::from_secs(3600));
        w.record(Duration::MAX);
        let c = w.take();
        assert_eq!(c.total(), 4);
        assert!(c.quantile(0.25).unwrap() < Duration::from_micros(50));
        // The last bucket is open: beyond about two minutes every latency reads the same.
        assert!(c.quantile(1.0).unwrap() > Duration::from_secs(100));
        for (secs, i) in [(f64::NAN, 0), (-1.0, 0), (f64::INFINITY, BUCKETS - 1)] {
            assert_eq!(bucket(secs), i, "{secs}");
        }
    }

    /// One latency lands in the bucket whose bounds hold it, and its representative is
    /// within half a step of it, across the whole range.
    #[test]
    fn every_bucket_holds_what_it_stands_for() {
        let mut secs = 60e-6;
        while secs < 100.0 {
            let i = bucket(secs);
            let r = representative(i);
            assert!(
                (r / secs).max(secs / r) <= RATIO + 1e-9,
                "{secs} in bucket {i} stands for {r}"
            );
            secs *= 1.013;
        }
    }
}
