//! Binding-table benchmarks: the cost of applying one change at 1,000 and at 1,000,000
//! tenants (structural sharing keeps it flat), and lock-free lookups while a writer applies a
//! steady stream of changes.
//!
//! `cargo bench -p nexus-bench --bench table`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use nexus_bench::*;
use nexus_binding_store::{Binding, BindingHandle, Change, Revision};

fn sizes() -> Vec<usize> {
    if std::env::var_os("NEXUS_BENCH_SMOKE").is_some() {
        vec![1_000]
    } else {
        vec![1_000, 1_000_000]
    }
}

fn rebind(b: &Binding, rev: u64) -> Arc<Binding> {
    let mut next = b.clone();
    next.instance_url =
        nexus_binding_store::UpstreamUrl::parse("instance_url", "http://10.9.9.9:8080")
            .expect("url");
    next.revision = Revision(rev);
    Arc::new(next)
}

fn apply_one_change(c: &mut Criterion) {
    for n in sizes() {
        let handle = BindingHandle::new(table(n, "http://10.0.0.1:8080"));
        let template = handle
            .load()
            .get(&tenant(n / 2))
            .expect("tenant")
            .as_ref()
            .clone();
        let mut rev = n as u64 + 10;
        c.bench_function(&format!("apply_one_change/{n}_tenants"), |b| {
            b.iter_batched(
                || {
                    rev += 1;
                    Change::Upsert(rebind(&template, rev))
                },
                |change| black_box(handle.apply(change).expect("applied")),
                BatchSize::SmallInput,
            )
        });
    }
}

fn lookup_under_changes(c: &mut Criterion) {
    let n = *sizes().last().expect("size");
    let handle = BindingHandle::new(table(n, "http://10.0.0.1:8080"));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let handle = handle.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let template = handle
                .load()
                .get(&tenant(7))
                .expect("tenant")
                .as_ref()
                .clone();
            let mut rev = n as u64 + 10;
            let mut applied = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rev += 1;
                handle
                    .apply(Change::Upsert(rebind(&template, rev)))
                    .expect("applied");
                applied += 1;
            }
            applied
        })
    };
    let keys: Vec<String> = (0..1024).map(|i| tenant(i * 7919 % n)).collect();
    let mut i = 0;
    c.bench_function(&format!("lookup_while_writer_applies/{n}_tenants"), |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let t = handle.load();
            black_box(t.get(&keys[i]).map(|b| b.revision))
        })
    });
    stop.store(true, Ordering::Relaxed);
    let applied = writer.join().expect("writer");
    println!("  (the writer applied {applied} changes during the lookup benchmark)");
}

criterion_group!(benches, apply_one_change, lookup_under_changes);
criterion_main!(benches);
