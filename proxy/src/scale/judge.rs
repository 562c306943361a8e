//! Judging one instance, interval by interval, against the brief's two scale triggers the
//! router can see: **p95 latency above the SLO for N intervals in a row**, and **queue delay
//! above F times its baseline**. Pure: it is given each interval's figures and keeps only
//! what the next judgement needs.
//!
//! Queue delay is estimated from outside the instance: the 10th percentile of its requests'
//! latencies. The quickest tenth carry little work of their own, so what they take is
//! mostly waiting (for a connection, in the instance's accept backlog, for a free worker);
//! when requests queue, even those slow down. The baseline is the average of the intervals
//! that raised no trigger, weighted towards the last `baseline_window`; an interval with the
//! trigger up is left out of it, so that a queue that stays does not become normal.

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
    /// Their 95th percentile latency.
    pub p95: Duration,
    /// Their 10th percentile latency, the queue-delay estimate.
    pub queue_delay: Duration,
}

impl Interval {
    /// The figures of an interval's counts.
    pub fn of(counts: &Counts) -> Self {
        Self {
            requests: counts.total(),
            p95: counts.quantile(SLO_QUANTILE).unwrap_or_default(),
            queue_delay: counts.quantile(QUEUE_QUANTILE).unwrap_or_default(),
        }
    }
}

/// The triggers' settings, in the form the judgement uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    slo: Duration,
    slo_intervals: u32,
    min_requests: u64,
    factor: f64,
    floor: f64,
    /// How much of the baseline one interval replaces: `interval / baseline_window`.
    weight: f64,
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
    quiet: u32,
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
}

impl Judge {
    /// Judges the next interval. One with fewer than `min_requests` says nothing of the
    /// instance: it raises no trigger, breaks a run of breaches, and leaves the baseline.
    pub fn judge(&mut self, interval: Interval, rules: &Rules) -> Verdict {
        self.quiet = if interval.requests == 0 {
            self.quiet.saturating_add(1)
        } else {
            0
        };
        if interval.requests < rules.min_requests {
            self.breaches = 0;
            return Verdict {
                requests: interval.requests,
                judged: None,
                baseline: self.baseline(),
                breaches: 0,
                latency: false,
                queue: false,
            };
        }
        self.breaches = if interval.p95 > rules.slo {
            self.breaches.saturating_add(1)
        } else {
            0
        };
        let delay = interval.queue_delay.as_secs_f64();
        let queue = match self.baseline {
            Some(b) if self.averaged >= WARM_UP_INTERVALS => {
                delay > b * rules.factor && delay - b > rules.floor
            }
            _ => false,
        };
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
        }
    }

    /// Intervals in a row without a single request: an instance no longer sent to.
    pub fn quiet_intervals(&self) -> u32 {
        self.quiet
    }

    fn baseline(&self) -> Option<Duration> {
        self.baseline.map(Duration::from_secs_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::from(&MetricsSettings {
            interval: Duration::from_secs(60),
            latency_slo: Duration::from_millis(200),
            slo_intervals: 3,
            min_requests: 20,
            queue_delay_factor: 2.0,
            queue_delay_floor: Duration::from_millis(1),
            baseline_window: Duration::from_secs(600),
            max_instances: 10,
        })
    }

    fn interval(requests: u64, p95_ms: u64, queue_ms: u64) -> Interval {
        Interval {
            requests,
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
        // Left out of the baseline while up, however long it stays.
        for _ in 0..20 {
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

    /// A fast instance whose queue delay goes from 0.2 ms to 0.6 ms has tripled it, but is no
    /// queue worth a scale-up: the floor (1 ms) holds it back.
    #[test]
    fn sub_millisecond_wobbles_are_no_queue() {
        let mut j = Judge::default();
        let rules = rules();
        let fast = |us| Interval {
            requests: 50,
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
    fn quiet_intervals_are_counted_and_leave_the_baseline() {
        let mut j = Judge::default();
        let rules = rules();
        for _ in 0..4 {
            j.judge(interval(50, 10, 4), &rules);
        }
        let v = j.judge(interval(0, 0, 0), &rules);
        assert_eq!(v.judged, None);
        assert_eq!(v.baseline, Some(Duration::from_millis(4)));
        j.judge(interval(3, 900, 900), &rules);
        assert_eq!(j.quiet_intervals(), 0, "a request is not quiet");
        j.judge(interval(0, 0, 0), &rules);
        j.judge(interval(0, 0, 0), &rules);
        assert_eq!(j.quiet_intervals(), 2);
        assert!(j.judge(interval(50, 10, 9), &rules).queue);
    }
}
