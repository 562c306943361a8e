//! The scale-trigger signals' cost: what counting one request adds to it (a lookup of its
//! instance among those tracked and one atomic add), alone and with every core counting at
//! once, and what ending an interval costs with the budget full (judging every instance and
//! publishing its series, on the background job).
//!
//! `cargo bench -p nexus-bench --bench scale`. With NEXUS_BENCH_SMOKE=1 the budget is small.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use nexus_binding_store::InstanceId;
use nexus_config::MetricsSettings;
use nexus_edge::metrics::Metrics;
use nexus_edge::scale::{InstanceSignals, Sent};

/// A request answered, not failed, after `latency`.
fn ok(latency: Duration) -> Sent {
    Sent::Answered {
        latency,
        failed: false,
    }
}

fn instances() -> usize {
    if std::env::var_os("NEXUS_BENCH_SMOKE").is_some() {
        100
    } else {
        1000
    }
}

/// Signals with `n` instances tracked (the budget full), and their ids.
fn tracked(n: usize) -> (InstanceSignals, Vec<InstanceId>) {
    let settings = MetricsSettings {
        max_instances: n,
        ..nexus_config::embedded_default().metrics
    };
    let signals = InstanceSignals::new(&settings, Metrics::new().unwrap().scale);
    let ids: Vec<InstanceId> = (0..n)
        .map(|i| InstanceId::parse(&format!("inst-eu-{i:04}")).unwrap())
        .collect();
    for id in &ids {
        signals.record(id, ok(Duration::from_millis(3)));
    }
    (signals, ids)
}

fn record(c: &mut Criterion) {
    let n = instances();
    let (signals, ids) = tracked(n);
    let mut g = c.benchmark_group("scale");
    let mut i = 0;
    g.bench_function(format!("record, {n} instances tracked"), |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            signals.record(
                black_box(&ids[i]),
                black_box(ok(Duration::from_micros(1800))),
            );
        })
    });
    // Every core counting for the same instance: the one counter they share is the worst
    // case for the atomic add.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let signals = Arc::new(signals);
    let one = ids[0].clone();
    g.bench_function(format!("record, {threads} threads on one instance"), |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    let (signals, one) = (Arc::clone(&signals), one.clone());
                    s.spawn(move || {
                        for _ in 0..iters {
                            signals.record(black_box(&one), ok(Duration::from_micros(1800)));
                        }
                    });
                }
            });
            // Per request counted, across the threads.
            start.elapsed() / u32::try_from(threads).unwrap()
        })
    });
    // Every instance with a request in each interval (an instance quiet for 10 would be
    // forgotten, and the budget no longer full); the counting is set-up, not timed.
    g.bench_function(format!("interval end, {n} instances"), |b| {
        b.iter_batched(
            || {
                for id in &ids {
                    signals.record(id, ok(Duration::from_millis(3)));
                }
            },
            |()| signals.close_interval(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
