//! Judging one instance, interval by interval, against the brief's two scale triggers the
//! router can see: **p95 latency above the SLO for N intervals in a row**, and **queue delay
//! above F times its baseline**. Pure: it is given each interval's figures and keeps only
//! what the next judgement needs.
//!
//! The latency trigger counts the requests slower than the SLO exactly (the 95th percentile
//! is above the SLO when more than 5% are), so the buckets' rounding cannot make a breach.
//!
//! Queue delay is estimated from outside the instance, as the 10th percentile of its
//! requests' latencies: an estimate, not a measure. The quickest tenth take the network, the
//! router's share and the cheapest handler's own work, which the baseline holds, and, when
//! requests queue (in the instance's accept backlog, for a free worker), the wait, which
//! even they cannot skip. The baseline is the average of the intervals that did not raise
//! the queue-delay trigger, weighted towards the last `baseline_window`; an interval with
//! that trigger up is left out of it, so that a queue building up is not taken for the
//! norm. A level that stays up for a whole `baseline_window` is the norm now (a deploy that
//! made every request dearer, a cheap endpoint no longer called): the baseline is learnt
//! again from it.

use std::time::Duration;

use nexus_config::MetricsSettings;

use super::window::Counts;

/// The latency percentile that stands for queue delay (see the module's comment).
pub const QUEUE_QUANTILE: f64 = 0.10;
/// The percentile held against the SLO.
pub const SLO_QUANTILE: f64 = 0.95;
/// Intervals an instance's baseline is averaged over before its queue delay is judged.
pub const WARM_UP_INTERVALS: u32 = 3;

/// What one interval of an instance's requests showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Requests the interval counted.
    pub requests: u64,
    /// Of those, the ones slower than the SLO.
    pub over_slo: u64,
    /// Their 95th percentile latency.
    pub p95: Duration,
    /// Their 10th percentile latency, the queue-delay estimate.
    pub queue_delay: Duration,
}

impl Interval {
    /// The figures of an interval's counts, `over_slo` of them slower than the SLO.
    pub fn of(counts: &Counts, over_slo: u64) -> Self {
        Self {
            requests: counts.total(),
            over_slo,
            p95: counts.quantile(SLO_QUANTILE).unwrap_or_default(),
            queue_delay: counts.quantile(QUEUE_QUANTILE).unwrap_or_default(),
        }
    }
}

/// The triggers' settings, in the form the judgement uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// The latency SLO: requests slower count against it.
    pub slo: Duration,
    slo_intervals: u32,
    min_requests: u64,
    factor: f64,
    floor: f64,
    /// How much of the baseline one interval replaces: `interval / baseline_window`.
    weight: f64,
    /// Intervals in `baseline_window`: the queue-delay trigger up for as many in a row
    /// makes the baseline learnt again.
    window_intervals: u32,
}

impl From<&MetricsSettings> for Rules {
    fn from(s: &MetricsSettings) -> Self {
        Self {
            slo: s.latency_slo,
            slo_intervals: s.slo_intervals,
            min_requests: s.min_requests,
            factor: s.queue_delay_factor,
            floor: s.queue_delay_floor.as_secs_f64(),
            weight: (s.interval.as_secs_f64() / s.baseline_window.as_secs_f64()).min(1.0),
            // At least 2, as the config has it: 1 would relearn at every raised interval.
            window_intervals: u32::try_from(
                s.baseline_window
                    .as_nanos()
                    .div_ceil(s.interval.as_nanos().max(1)),
            )
            .unwrap_or(u32::MAX)
            .max(2),
        }
    }
}

/// One instance's judgement so far.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Judge {
    breaches: u32,
    baseline: Option<f64>,
    /// Intervals averaged into the baseline.
    averaged: u32,
    /// Judged intervals in a row with the queue-delay trigger up.
    raised: u32,
}

/// The judgement of one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Requests the interval counted.
    pub requests: u64,
    /// The interval's figures, when it had enough requests to be judged.
    pub judged: Option<Interval>,
    /// The queue-delay baseline, once there is one.
    pub baseline: Option<Duration>,
    /// Judged intervals in a row with p95 above the SLO, up to this one.
    pub breaches: u32,
    /// The latency trigger: `breaches` reached `slo_intervals`.
    pub latency: bool,
    /// The queue-delay trigger: this interval's queue delay is above its baseline by the
    /// factor and the floor.
    pub queue: bool,
    /// The queue delay stayed above the baseline for a whole `baseline_window`: the
    /// baseline starts again from this interval's, and the trigger drops.
    pub relearnt: bool,
}

impl Judge {
    /// Judges the next interval. One with fewer than `min_requests` says nothing of the
    /// instance: it raises no trigger, breaks a run of breaches, and leaves the baseline.
    pub fn judge(&mut self, interval: Interval, rules: &Rules) -> Verdict {
        if interval.requests < rules.min_requests {
            self.breaches = 0;
            return Verdict {
                requests: interval.requests,
                judged: None,
                baseline: self.baseline(),
                breaches: 0,
                latency: false,
                queue: false,
                relearnt: false,
            };
        }
        // The 95th percentile (by nearest rank) is above the SLO exactly when more than one
        // request in 20 is.
        self.breaches = if interval.over_slo.saturating_mul(20) > interval.requests {
            self.breaches.saturating_add(1)
        } else {
            0
        };
        let delay = interval.queue_delay.as_secs_f64();
        let mut queue = match self.baseline {
            Some(b) if self.averaged >= WARM_UP_INTERVALS => {
                delay > b * rules.factor && delay - b > rules.floor
            }
            _ => false,
        };
        self.raised = if queue {
            self.raised.saturating_add(1)
        } else {
            0
        };
        let relearnt = self.raised >= rules.window_intervals;
        if relearnt {
            (self.baseline, self.averaged, self.raised, queue) = (None, 0, 0, false);
        }
        if !queue {
            self.averaged = self.averaged.saturating_add(1);
            // A plain mean until the window's share is the smaller: the first intervals
            // count alike instead of the first alone.
            let weight = rules.weight.max(1.0 / f64::from(self.averaged));
            self.baseline = Some(match self.baseline {
                None => delay,
                Some(b) => b + weight * (delay - b),
            });
        }
        Verdict {
            requests: interval.requests,
            judged: Some(interval),
            baseline: self.baseline(),
            breaches: self.breaches,
            latency: self.breaches >= rules.slo_intervals,
            queue,
            relearnt,
        }
    }

    fn baseline(&self) -> Option<Duration> {
        self.baseline.map(Duration::from_secs_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        // The defaults (60 s intervals, 200 ms, 3 in a row, 20 requests, 2x and 1 ms), with a
        // baseline window of 10 intervals.
        Rules::from(&MetricsSettings {
            baseline_window: Duration::from_secs(600),
            ..nexus_config::embedded_default().metrics
        })
    }

    /// An interval of `requests`, all of them over the SLO (200 ms) when `p95_ms` is.
    fn interval(requests: u64, p95_ms: u64, queue_ms: u64) -> Interval {
        Interval {
            requests,
            over_slo: if p95_ms > 200 { requests } else { 0 },
            p95: Duration::from_millis(p95_ms),
            queue_delay: Duration::from_millis(queue_ms),
        }
    }

    /// (interval, latency trigger, queue trigger, breaches) in turn.
    fn run(judge: &mut Judge, steps: &[(Interval, bool, bool, u32)]) {
        let rules = rules();
        for (n, &(i, latency, queue, breaches)) in steps.iter().enumerate() {
            let v = judge.judge(i, &rules);
            assert_eq!(
                (v.latency, v.queue, v.breaches),
                (latency, queue, breaches),
                "step {n}: {i:?} gave {v:?}"
            );
        }
    }

    #[test]
    fn the_latency_trigger_needs_its_intervals_in_a_row() {
        let mut j = Judge::default();
        run(
            &mut j,
            &[
                (interval(100, 150, 5), false, false, 0),
                (interval(100, 250, 5), false, false, 1),
                (interval(100, 250, 5), false, false, 2),
                // At the SLO is not above it.
                (interval(100, 200, 5), false, false, 0),
                (interval(100, 300, 5), false, false, 1),
                (interval(100, 300, 5), false, false, 2),
                (interval(100, 300, 5), true, false, 3),
                (interval(100, 900, 5), true, false, 4),
                // Too few requests to judge: no trigger, and the run starts again.
                (interval(19, 900, 5), false, false, 0),
                (interval(100, 900, 5), false, false, 1),
                (interval(100, 100, 5), false, false, 0),
            ],
        );
    }

    #[test]
    fn the_queue_trigger_waits_for_a_baseline_and_leaves_it_out_while_up() {
        let mut j = Judge::default();
        run(
            &mut j,
            &[
                // Warm-up: no judgement however high, the baseline a plain mean.
                (interval(50, 10, 4), false, false, 0),
                (interval(50, 10, 40), false, false, 0),
                (interval(50, 10, 4), false, false, 0),
            ],
        );
        // (4 + 40 + 4) / 3.
        let rules = rules();
        let v = j.judge(interval(50, 10, 16), &rules);
        assert!(!v.queue, "16 ms is within twice 16 ms: {v:?}");
        let before = v.baseline.expect("a baseline");
        assert_eq!(before.as_millis(), 16);
        let v = j.judge(interval(50, 10, 33), &rules);
        assert!(v.queue, "{v:?}");
        // Left out of the baseline while up (here for 5 intervals of the window's 10).
        for _ in 0..4 {
            let v = j.judge(interval(50, 10, 40), &rules);
            assert!(v.queue && v.baseline == Some(before), "{v:?}");
        }
        let v = j.judge(interval(50, 10, 17), &rules);
        assert!(!v.queue, "{v:?}");
        // Averaged back in: still a plain mean over the 5 intervals averaged, 16 + (17 - 16) / 5,
        // until the window's weight (60 s of 600 s: a tenth) is the larger.
        let after = v.baseline.expect("a baseline").as_secs_f64();
        assert!((after - 0.0162).abs() < 1e-9, "{after}");
        for _ in 0..5 {
            j.judge(interval(50, 10, 17), &rules);
        }
        let b = j.judge(interval(50, 10, 27), &rules).baseline;
        let weighted = b.expect("a baseline").as_secs_f64();
        let before_last = 0.017
            - (0.017 - 0.0162)
                * (1.0 - 1.0 / 6.0)
                * (1.0 - 1.0 / 7.0)
                * (1.0 - 1.0 / 8.0)
                * (1.0 - 1.0 / 9.0)
                * (1.0 - 1.0 / 10.0);
        let want = before_last + 0.1 * (0.027 - before_last);
        assert!((weighted - want).abs() < 1e-9, "{weighted} != {want}");
    }

    /// A level that stays up for the whole baseline window (10 intervals here) is the new
    /// norm: the trigger drops, the baseline is learnt again from it, and a rise above the
    /// new level raises the trigger again once 3 intervals have made it.
    #[test]
    fn a_queue_delay_up_for_a_whole_window_becomes_the_baseline() {
        let mut j = Judge::default();
        let rules = rules();
        for _ in 0..3 {
            j.judge(interval(50, 10, 4), &rules);
        }
        for n in 1..10 {
            let v = j.judge(interval(50, 10, 30), &rules);
            assert!(v.queue && !v.relearnt, "interval {n}: {v:?}");
        }
        let v = j.judge(interval(50, 10, 30), &rules);
        assert!(!v.queue && v.relearnt, "{v:?}");
        assert_eq!(v.baseline, Some(Duration::from_millis(30)));
        for _ in 0..2 {
            let v = j.judge(interval(50, 10, 70), &rules);
            assert!(!v.queue, "warming up again: {v:?}");
        }
        // (30 + 70 + 70) / 3 = 56.7 ms; 120 ms is above twice that.
        let v = j.judge(interval(50, 10, 120), &rules);
        assert!(v.queue && !v.relearnt, "{v:?}");
    }

    /// More than one request in 20 over the SLO is a p95 above it, counted exactly: 5 of 100
    /// is not, 6 is; 1 of 20 is not, 2 are; 1 of 19 is.
    #[test]
    fn the_slo_is_breached_by_more_than_one_request_in_20() {
        let rules = rules();
        for (requests, over, breached) in [
            (100, 5, false),
            (100, 6, true),
            (20, 1, false),
            (20, 2, true),
            (20, 0, false),
            (1000, 51, true),
        ] {
            let mut j = Judge::default();
            let i = Interval {
                requests,
                over_slo: over,
                p95: Duration::from_millis(100),
                queue_delay: Duration::from_millis(1),
            };
            let v = j.judge(i, &rules);
            assert_eq!(v.breaches == 1, breached, "{over} of {requests}: {v:?}");
        }
        let mut j = Judge::default();
        let one_in_19 = Interval {
            requests: 19,
            over_slo: 1,
            p95: Duration::from_millis(100),
            queue_delay: Duration::from_millis(1),
        };
        // 19 is under min_requests (20): not judged at all.
        assert_eq!(j.judge(one_in_19, &rules).judged, None);
    }

    /// A fast instance whose queue delay goes from 0.2 ms to 0.6 ms has tripled it, but is no
    /// queue worth a scale-up: the floor (1 ms) holds it back.
    #[test]
    fn sub_millisecond_wobbles_are_no_queue() {
        let mut j = Judge::default();
        let rules = rules();
        let fast = |us| Interval {
            requests: 50,
            over_slo: 0,
            p95: Duration::from_millis(2),
            queue_delay: Duration::from_micros(us),
        };
        for _ in 0..5 {
            j.judge(fast(200), &rules);
        }
        assert!(!j.judge(fast(600), &rules).queue);
        assert!(j.judge(fast(1300), &rules).queue);
    }

    #[test]
    fn intervals_with_too_few_requests_leave_the_baseline() {
        let mut j = Judge::default();
        let rules = rules();
        for _ in 0..4 {
            j.judge(interval(50, 10, 4), &rules);
        }
        let v = j.judge(interval(0, 0, 0), &rules);
        assert_eq!(v.judged, None);
        assert_eq!(v.baseline, Some(Duration::from_millis(4)));
        let v = j.judge(interval(3, 900, 900), &rules);
        assert_eq!((v.judged, v.latency, v.queue), (None, false, false));
        assert_eq!(v.baseline, Some(Duration::from_millis(4)));
        assert!(j.judge(interval(50, 10, 9), &rules).queue);
    }
}
