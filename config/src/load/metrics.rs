//! `[metrics]`: the per-instance scale-trigger signals (see `MetricsSettings`).

use std::time::Duration;

use toml::de::DeTable;

use crate::reader::{Problems, Section};
use crate::settings::*;

pub(super) fn parse(
    root: &DeTable<'_>,
    d: &MetricsSettings,
    p: &mut Problems<'_>,
) -> Option<MetricsSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "metrics", p);
    let interval = s
        .duration(
            "interval",
            Duration::from_secs(1),
            Duration::from_secs(3600),
            p,
        )
        .unwrap_or(d.interval);
    let latency_slo = s
        .duration(
            "latency_slo",
            Duration::from_millis(1),
            Duration::from_secs(600),
            p,
        )
        .unwrap_or(d.latency_slo);
    let slo_intervals = s
        .integer("slo_intervals", 1, 1000, p)
        .map_or(d.slo_intervals, |n| n as u32);
    let min_requests = s
        .integer("min_requests", 1, 1_000_000_000, p)
        .map_or(d.min_requests, |n| n as u64);
    let queue_delay_factor = s
        .number("queue_delay_factor", 1.1, 1000.0, p)
        .unwrap_or(d.queue_delay_factor);
    let queue_delay_floor = s
        .duration(
            "queue_delay_floor",
            Duration::ZERO,
            Duration::from_secs(60),
            p,
        )
        .unwrap_or(d.queue_delay_floor);
    let window_at = s.raw("baseline_window").map(|v| v.span().start);
    let baseline_window = s
        .duration(
            "baseline_window",
            Duration::from_secs(2),
            Duration::from_secs(7 * 24 * 3600),
            p,
        )
        .unwrap_or(d.baseline_window);
    let max_instances = s
        .integer("max_instances", 0, 10_000, p)
        .map_or(d.max_instances, |n| n as usize);
    s.finish(p);
    // The baseline is an average over intervals: a window shorter than two of them would
    // be the last interval alone, which a queue building up then never exceeds.
    if p.list.len() == before && baseline_window < interval * 2 {
        p.push(
            "metrics.baseline_window",
            window_at,
            "must span at least two intervals (metrics.interval)",
        );
    }
    (p.list.len() == before).then_some(MetricsSettings {
        interval,
        latency_slo,
        slo_intervals,
        min_requests,
        queue_delay_factor,
        queue_delay_floor,
        baseline_window,
        max_instances,
    })
}
