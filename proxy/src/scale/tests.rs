use std::time::Duration;

use nexus_binding_store::InstanceId;

use super::*;
use crate::metrics::Metrics;

fn settings(max_instances: usize) -> MetricsSettings {
    MetricsSettings {
        interval: Duration::from_secs(60),
        latency_slo: Duration::from_millis(200),
        slo_intervals: 1,
        min_requests: 2,
        queue_delay_factor: 2.0,
        queue_delay_floor: Duration::from_millis(1),
        baseline_window: Duration::from_secs(600),
        max_instances,
    }
}

/// A request answered, not failed, after `latency`.
fn ok(latency: Duration) -> Sent {
    Sent::Answered {
        latency,
        failed: false,
    }
}

fn id(s: &str) -> InstanceId {
    InstanceId::parse(s).expect("instance id")
}

/// The text exposition's lines for the scale-trigger series.
fn series(metrics: &Metrics) -> Vec<String> {
    let table = nexus_binding_store::BindingHandle::new(nexus_binding_store::BindingTable::new());
    let health = Arc::new(nexus_binding_store::SyncHealth::default());
    String::from_utf8(metrics.render(&table, &health))
        .expect("utf-8")
        .lines()
        .filter(|l| {
            l.starts_with("nexus_edge_instance_")
                && !l.starts_with("nexus_edge_instance_connections_total")
        })
        .map(str::to_owned)
        .collect()
}

fn value(lines: &[String], name: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
}

#[test]
fn each_instance_is_judged_and_published_under_its_id() {
    let metrics = Metrics::new().expect("metrics");
    let signals = InstanceSignals::new(&settings(10), metrics.scale.clone());
    for _ in 0..10 {
        signals.record(&id("slow"), ok(Duration::from_millis(300)));
        signals.record(&id("fast"), ok(Duration::from_millis(20)));
    }
    signals.record(&id("idle"), ok(Duration::from_millis(900)));
    signals.close_interval();
    let lines = series(&metrics);
    let v = |n: &str| value(&lines, n).unwrap_or_else(|| panic!("{n} in {lines:#?}"));
    assert_eq!(
        v("nexus_edge_instance_interval_requests{instance_id=\"slow\"}"),
        "10"
    );
    assert_eq!(
        v("nexus_edge_instance_scale_trigger{instance_id=\"slow\",trigger=\"latency\"}"),
        "1"
    );
    assert_eq!(
        v("nexus_edge_instance_scale_trigger{instance_id=\"fast\",trigger=\"latency\"}"),
        "0"
    );
    let p95: f64 = v("nexus_edge_instance_latency_p95_seconds{instance_id=\"slow\"}")
        .parse()
        .expect("a number");
    assert!((p95 - 0.3).abs() < 0.01, "{p95}");
    // One request is fewer than min_requests: no figures, no trigger.
    assert_eq!(
        v("nexus_edge_instance_latency_p95_seconds{instance_id=\"idle\"}"),
        "NaN"
    );
    assert_eq!(
        v("nexus_edge_instance_scale_trigger{instance_id=\"idle\",trigger=\"latency\"}"),
        "0"
    );
    assert_eq!(v("nexus_edge_instance_signals_tracked"), "3");
}

/// Past `max_instances`, instances share one set of series; what has series keeps them.
#[test]
fn instances_past_the_budget_share_one_set_of_series() {
    let metrics = Metrics::new().expect("metrics");
    let signals = InstanceSignals::new(&settings(2), metrics.scale.clone());
    for name in ["a", "b", "c", "d", "a"] {
        for _ in 0..3 {
            signals.record(&id(name), ok(Duration::from_millis(5)));
        }
    }
    signals.close_interval();
    let lines = series(&metrics);
    let v = |n: &str| value(&lines, n);
    assert_eq!(
        v("nexus_edge_instance_interval_requests{instance_id=\"a\"}").as_deref(),
        Some("6")
    );
    assert_eq!(
        v("nexus_edge_instance_interval_requests{instance_id=\"(over budget)\"}").as_deref(),
        Some("6")
    );
    assert_eq!(
        v("nexus_edge_instance_interval_requests{instance_id=\"c\"}"),
        None
    );
    assert_eq!(
        v("nexus_edge_instance_signals_over_budget_requests_total").as_deref(),
        Some("6")
    );
    assert_eq!(
        v("nexus_edge_instance_signals_budget").as_deref(),
        Some("2")
    );
    // The series of each of the two instances and of the shared set, and 3 for the whole.
    assert_eq!(
        lines.len(),
        SERIES_PER_INSTANCE * 3 + 3,
        "the series are bounded by the budget: {lines:#?}"
    );
}

/// An instance no request reaches for FORGET_AFTER intervals loses its series and its
/// place in the budget, which the next instance takes.
#[test]
fn quiet_instances_are_forgotten_and_make_room() {
    let metrics = Metrics::new().expect("metrics");
    let signals = InstanceSignals::new(&settings(1), metrics.scale.clone());
    signals.record(&id("old"), ok(Duration::from_millis(5)));
    signals.close_interval();
    for _ in 0..FORGET_AFTER {
        assert!(value(
            &series(&metrics),
            "nexus_edge_instance_interval_requests{instance_id=\"old\"}"
        )
        .is_some());
        signals.close_interval();
    }
    let lines = series(&metrics);
    assert!(
        !lines.iter().any(|l| l.contains("instance_id=\"old\"")),
        "{lines:#?}"
    );
    assert_eq!(
        value(&lines, "nexus_edge_instance_signals_tracked").as_deref(),
        Some("0")
    );
    signals.record(&id("new"), ok(Duration::from_millis(5)));
    signals.close_interval();
    assert_eq!(
        value(
            &series(&metrics),
            "nexus_edge_instance_interval_requests{instance_id=\"new\"}"
        )
        .as_deref(),
        Some("1")
    );
}

/// With a budget of 0 every request counts in the shared set: one set of series in all. Its
/// figures say how the instances fare together, but it raises no trigger: it is no one
/// instance to scale.
#[test]
fn a_budget_of_none_keeps_the_shared_set_only() {
    let metrics = Metrics::new().expect("metrics");
    let signals = InstanceSignals::new(&settings(0), metrics.scale.clone());
    signals.record(&id("a"), ok(Duration::from_millis(300)));
    signals.record(&id("b"), ok(Duration::from_millis(300)));
    signals.close_interval();
    let lines = series(&metrics);
    let shared = |name: &str| value(&lines, &format!("{name}{{instance_id=\"(over budget)\"}}"));
    assert_eq!(
        shared("nexus_edge_instance_slo_breach_intervals").as_deref(),
        Some("1")
    );
    assert_eq!(
        value(
            &lines,
            "nexus_edge_instance_scale_trigger{instance_id=\"(over budget)\",trigger=\"latency\"}"
        )
        .as_deref(),
        Some("0")
    );
    assert_eq!(lines.len(), SERIES_PER_INSTANCE + 3, "{lines:#?}");
}

/// A request that found an instance's entry just before the interval's end forgot it is
/// counted there: carried over at the next interval's end, bringing the instance back, not
/// lost with the entry.
#[test]
fn a_request_racing_an_instances_forgetting_is_carried_over() {
    let metrics = Metrics::new().expect("metrics");
    let signals = InstanceSignals::new(&settings(10), metrics.scale.clone());
    signals.record(&id("back"), ok(Duration::from_millis(5)));
    signals.close_interval();
    // The entry a request looked up, about to count in it.
    let held = Arc::clone(signals.tracked.load().get(&id("back")).expect("tracked"));
    for _ in 0..FORGET_AFTER {
        signals.close_interval();
    }
    assert!(
        signals.tracked.load().get(&id("back")).is_none(),
        "forgotten"
    );
    held.count(
        Sent::Answered {
            latency: Duration::from_millis(500),
            failed: true,
        },
        signals.rules.slo,
    );
    signals.close_interval();
    let lines = series(&metrics);
    let back = |name: &str| value(&lines, &format!("{name}{{instance_id=\"back\"}}"));
    assert_eq!(
        back("nexus_edge_instance_requests_total").as_deref(),
        Some("1")
    );
    assert_eq!(
        back("nexus_edge_instance_failed_requests_total").as_deref(),
        Some("1")
    );
    assert_eq!(
        back("nexus_edge_instance_interval_requests").as_deref(),
        Some("1")
    );
    // Counted once: the old entry was emptied.
    signals.close_interval();
    assert_eq!(
        value(
            &series(&metrics),
            "nexus_edge_instance_requests_total{instance_id=\"back\"}"
        )
        .as_deref(),
        Some("1")
    );
}

/// A request to an instance out of reach has no latency, but it is a request: the instance
/// is not quiet, and is not forgotten while requests keep failing to reach it.
#[test]
fn an_instance_out_of_reach_is_not_quiet() {
    let metrics = Metrics::new().expect("metrics");
    let signals = InstanceSignals::new(&settings(10), metrics.scale.clone());
    for _ in 0..FORGET_AFTER + 2 {
        signals.record(&id("down"), Sent::Unanswered);
        signals.close_interval();
    }
    let lines = series(&metrics);
    assert_eq!(
        value(
            &lines,
            "nexus_edge_instance_failed_requests_total{instance_id=\"down\"}"
        )
        .as_deref(),
        Some(&*(FORGET_AFTER + 2).to_string())
    );
    assert_eq!(
        value(
            &lines,
            "nexus_edge_instance_latency_p95_seconds{instance_id=\"down\"}"
        )
        .as_deref(),
        Some("NaN")
    );
}

/// Threads counting for instances that come and fill the budget at the same time: every
/// request is counted once, in its instance's set or the shared one, and the budget holds.
#[test]
fn requests_counted_at_once_from_many_threads_are_each_counted_once() {
    let metrics = Metrics::new().expect("metrics");
    let signals = InstanceSignals::new(&settings(10), metrics.scale.clone());
    std::thread::scope(|s| {
        for t in 0..4 {
            let signals = &signals;
            s.spawn(move || {
                for n in 0..1000 {
                    let sent = match n % 10 {
                        0 => Sent::Unanswered,
                        1 => Sent::TimedOut(Duration::from_secs(30)),
                        2 => Sent::Answered {
                            latency: Duration::from_millis(1),
                            failed: true,
                        },
                        _ => ok(Duration::from_millis(1)),
                    };
                    signals.record(&id(&format!("i-{}", (n + t) % 20)), sent);
                }
            });
        }
    });
    signals.close_interval();
    let lines = series(&metrics);
    let sum = |name: &str| -> u64 {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
            .map(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .expect("a count")
            })
            .sum()
    };
    assert_eq!(
        sum("nexus_edge_instance_requests_total"),
        4000,
        "{lines:#?}"
    );
    // A tenth out of reach, a tenth timed out, a tenth answered with a failure.
    assert_eq!(sum("nexus_edge_instance_failed_requests_total"), 1200);
    // The latencies judged: all but those out of reach.
    assert_eq!(sum("nexus_edge_instance_interval_requests"), 3600);
    assert_eq!(
        value(&lines, "nexus_edge_instance_signals_tracked").as_deref(),
        Some("10")
    );
    let shared: u64 = value(
        &lines,
        "nexus_edge_instance_requests_total{instance_id=\"(over budget)\"}",
    )
    .and_then(|v| v.parse().ok())
    .expect("the shared set");
    assert_eq!(
        value(
            &lines,
            "nexus_edge_instance_signals_over_budget_requests_total"
        ),
        Some(shared.to_string())
    );
}

/// A failure found after its answer (a body cut short) adds to the instance's failures, not
/// to its requests; for an instance with no entry (forgotten while its stream ran) it
/// brings none back, and past the budget it is not a request more over it.
#[test]
fn a_broken_off_answer_is_a_failure_not_a_request() {
    let metrics = Metrics::new().expect("metrics");
    let signals = InstanceSignals::new(&settings(2), metrics.scale.clone());
    signals.record(&id("a"), ok(Duration::from_millis(5)));
    signals.record(&id("a"), Sent::BrokeOff);
    signals.record(&id("gone"), Sent::BrokeOff);
    signals.close_interval();
    let lines = series(&metrics);
    let v = |n: &str| value(&lines, n);
    assert_eq!(
        v("nexus_edge_instance_requests_total{instance_id=\"a\"}").as_deref(),
        Some("1")
    );
    assert_eq!(
        v("nexus_edge_instance_failed_requests_total{instance_id=\"a\"}").as_deref(),
        Some("1")
    );
    assert_eq!(
        v("nexus_edge_instance_requests_total{instance_id=\"gone\"}"),
        None
    );
    assert_eq!(
        v("nexus_edge_instance_signals_tracked").as_deref(),
        Some("1")
    );
    // With the budget (2) full, an instance past it counts in the shared set, once per
    // request however many times its end is counted.
    signals.record(&id("c"), ok(Duration::from_millis(5)));
    signals.record(&id("b"), ok(Duration::from_millis(5)));
    signals.record(&id("b"), Sent::BrokeOff);
    signals.close_interval();
    let lines = series(&metrics);
    let v = |n: &str| value(&lines, n);
    assert_eq!(
        v("nexus_edge_instance_signals_over_budget_requests_total").as_deref(),
        Some("1")
    );
    assert_eq!(
        v("nexus_edge_instance_failed_requests_total{instance_id=\"(over budget)\"}").as_deref(),
        Some("1")
    );
}
