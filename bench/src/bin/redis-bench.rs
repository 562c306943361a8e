//! Binding sync figures against a real `redis-server`:
//! 1. full load of 1,000,000 bindings: time and resident memory per binding;
//! 2. propagation delay (admin write in Redis → applied in the replica's table), p50/p99,
//!    across two replicas following the same Redis, after each has made a full reconcile
//!    (its time and the peak memory it took are printed too).
//!
//! `cargo run --release -p nexus-bench --bin redis-bench [-- --smoke] [--snapshot]`
//! (`--smoke`: 10,000 bindings, 50 changes; `--snapshot`: each replica keeps a snapshot file,
//! as production replicas do, rewritten in the background every 2 s while changes come, and
//! the changes are spread over 10 s so that the measure spans several such writes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_bench::*;
use nexus_binding_store::redis_store::{RedisOptions, RedisStore};
use nexus_binding_store::{
    Actor, BindingAdmin, BindingHandle, BindingSource, IfUnchanged, InstanceId, Mutation, TenantId,
    TenantStatus, UpstreamUrl,
};

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Peak resident set size of this process since the last [`reset_peak`], bytes.
fn peak() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Starts the peak resident set size again from the current one (Linux 4.0 and later);
/// false if it could not.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let with_snapshot = std::env::args().any(|a| a == "--snapshot");
    let (n, changes) = if smoke {
        (10_000, 50)
    } else {
        (1_000_000, 500)
    };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("redis.sock");
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--unixsocket",
        ])
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let url = format!("redis+unix://{}", sock.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    rt.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut con = loop {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        // Seed the store directly (pipelined), as a provisioning pipeline's bulk import would.
        let seeded = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                let rec = record(i, "http://10.1.2.3:8080");
                pipe.set(format!("nexus:binding:{}", rec.tenant_id), serde_json::to_string(&rec).unwrap())
                    .ignore();
            }
            let _: () = pipe.query_async(&mut con).await.unwrap();
        }
        let _: () = redis::cmd("SET").arg("nexus:revision").arg(n).query_async(&mut con).await.unwrap();
        println!("seeded {n} bindings into Redis in {:.2?}", seeded.elapsed());

        // 1. Full load.
        let replica = |id: &str| {
            let mut o = RedisOptions::new(url.clone());
            o.replica_id = id.to_owned();
            o.heartbeat_interval = Duration::from_millis(200);
            if with_snapshot {
                o.snapshot_path = Some(dir.path().join(format!("{id}.snapshot")));
            }
            Arc::new(RedisStore::new(o).unwrap())
        };
        let r1 = replica("bench-1");
        let before = rss();
        let started = Instant::now();
        let table = r1.initial_load().await.unwrap();
        let load_time = started.elapsed();
        let after = rss();
        println!(
            "full load: {} bindings in {:.2?} ({:.0} bindings/s); resident memory +{:.1} MB = {:.0} bytes/binding",
            table.len(),
            load_time,
            table.len() as f64 / load_time.as_secs_f64(),
            (after.saturating_sub(before)) as f64 / 1e6,
            after.saturating_sub(before) as f64 / table.len() as f64,
        );
        let h1 = BindingHandle::new(table);

        // 2. Propagation across two replicas.
        let r2 = replica("bench-2");
        let h2 = BindingHandle::new(r2.initial_load().await.unwrap());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let f1 = tokio::spawn(Arc::clone(&r1).run(h1.clone(), rx.clone()));
        let f2 = tokio::spawn(Arc::clone(&r2).run(h2.clone(), rx));
        let admin = replica("bench-admin");
        let actor = Actor { name: "bench".into(), reason: None };
        // The keys were seeded without a change feed, so each follower starts with a full
        // reconcile (seconds at a million bindings). Timing starts once both have applied a
        // first change, that is once both follow the feed.
        let warm = TenantId::parse(&tenant(1)).unwrap();
        let resident = rss();
        let peak_reset = reset_peak();
        let started = Instant::now();
        let rev = admin.apply(&warm, Mutation::SetStatus(TenantStatus::Active), None, IfUnchanged::Write, &actor).await.unwrap().revision();
        while ![&h1, &h2].iter().all(|h| h.load().get(warm.as_str()).is_some_and(|b| b.revision >= rev)) {
            assert!(started.elapsed() < Duration::from_secs(300), "the followers did not catch up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "both followers following the change feed after {:.2?} (a full reconcile each); peak resident memory {} +{:.1} MB over the {:.1} MB before",
            started.elapsed(),
            if peak_reset { "meanwhile" } else { "since start (the peak could not be reset)" },
            peak().saturating_sub(resident) as f64 / 1e6,
            resident as f64 / 1e6,
        );
        let mut delays = Vec::with_capacity(changes * 2);
        let mut slowest = (0, Duration::ZERO);
        for c in 0..changes {
            let t = TenantId::parse(&tenant(c * 7 % n)).unwrap();
            let m = Mutation::Rebind {
                instance_id: InstanceId::parse(&format!("moved-{c}")).unwrap(),
                instance_url: UpstreamUrl::parse("instance_url", &format!("http://10.9.{}.{}:8080", c / 250, c % 250)).unwrap(),
                api_url: None,
            };
            if with_snapshot {
                // Paced (this is a benchmark, not a test): 500 changes over 10 s span several
                // of the 2-second snapshot rewrites.
                tokio::time::sleep(Duration::from_secs(10) / changes as u32).await;
            }
            let sent = Instant::now();
            let rev = admin.apply(&t, m, None, IfUnchanged::Write, &actor).await.unwrap().revision();
            let mut pending = vec![&h1, &h2];
            while !pending.is_empty() {
                pending.retain(|h| {
                    if h.load().get(t.as_str()).is_some_and(|b| b.revision >= rev) {
                        let delay = sent.elapsed();
                        delays.push(delay);
                        if delay > slowest.1 {
                            slowest = (c, delay);
                        }
                        false
                    } else {
                        true
                    }
                });
                tokio::task::yield_now().await;
                assert!(sent.elapsed() < Duration::from_secs(10), "change {c} did not propagate");
            }
        }
        let _ = tx.send(true);
        let _ = f1.await;
        let _ = f2.await;
        delays.sort();
        println!(
            "propagation (write in Redis -> applied in the table), {changes} changes x 2 replicas{}: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
            if with_snapshot { ", snapshots on" } else { "" },
            percentile(&delays, 0.5),
            percentile(&delays, 0.99),
            delays.last().copied().unwrap_or_default(),
        );
        println!("  the slowest: change {} of {changes}", slowest.0 + 1);
        if with_snapshot {
            for id in ["bench-1", "bench-2"] {
                let path = dir.path().join(format!("{id}.snapshot"));
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                println!("  {id}'s snapshot: {:.1} MB", size as f64 / 1e6);
            }
        }
    });
    let _ = server.kill();
    let _ = server.wait();
}
