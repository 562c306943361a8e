//! The scale-trigger signals per instance, as the real binary publishes them: an instance
//! answering slower than the SLO raises its latency trigger after `slo_intervals`
//! intervals; one whose quickest answers slow down to more than twice its usual raises
//! the queue-delay trigger, and drops it when they come back; instances past the budget
//! share one set of series.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nexus_e2e::backend::Backend;
use nexus_e2e::edge::{binding, bindings_file, Edge, EdgeOptions};
use nexus_e2e::http::get_with_token;
use nexus_e2e::keys::TestKeys;
use nexus_e2e::probe::host;
use nexus_e2e::raw_instance::{Answer, RawInstance};
use nexus_e2e::wait;

/// The value of the series `name` (with its labels) in the router's metrics; `None` when
/// it has no such series.
fn gauge(edge: &Edge, name: &str) -> Option<f64> {
    let text = edge.ops_get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn trigger(edge: &Edge, instance: &str, which: &str) -> Option<f64> {
    gauge(
        edge,
        &format!(
            "nexus_edge_instance_scale_trigger{{instance_id=\"{instance}\",trigger=\"{which}\"}}"
        ),
    )
}

/// Sends requests for `tenant` one after another until dropped, each to `/slow/<ms>` with
/// the delay `delay` holds. The instance's own wait paces the requests (no loop spinning a
/// core beside the router), so a quick instance answers in a few milliseconds, not at once.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(edge: &Edge, keys: &TestKeys, tenant: &str, delay: Arc<AtomicU64>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, name, token, stopped) = (
            edge.addr,
            host(tenant),
            keys.token(tenant, None),
            Arc::clone(&stop),
        );
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let path = format!("/slow/{}", delay.load(Ordering::Relaxed));
                let r = get_with_token(addr, &name, &path, &token);
                assert_eq!(r.status, 200, "{}", r.text());
            }
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let finished = t.join();
            if !std::thread::panicking() {
                finished.expect("the load's requests were answered");
            }
        }
    }
}

#[test]
fn slow_and_queueing_instances_raise_their_triggers_and_only_theirs() {
    let keys = TestKeys::new();
    let (slow, steady, extra) = (
        Backend::start("slow"),
        Backend::start("steady"),
        Backend::start("extra"),
    );
    let mut opts = EdgeOptions::new(
        keys.jwks(),
        bindings_file(vec![
            binding("slow", &slow.url(), "active", None),
            binding("steady", &steady.url(), "active", None),
            binding("extra", &extra.url(), "active", None),
        ]),
    );
    opts.extra = "[metrics]\ninterval = \"1s\"\nlatency_slo = \"150ms\"\nslo_intervals = 2\n\
                  min_requests = 1\nqueue_delay_floor = \"15ms\"\nbaseline_window = \"60s\"\n\
                  max_instances = 2\n"
        .to_owned();
    let edge = Edge::start(&opts);
    let long = Duration::from_secs(30);

    // Two instances take the budget: one answers in 300 ms, over the 150 ms SLO; the other
    // in 3 ms, for now. (The SLO and the queue-delay floor leave room for a busy machine.)
    const QUICK_MS: u64 = 3;
    let steady_delay = Arc::new(AtomicU64::new(QUICK_MS));
    let _slow_load = Load::start(&edge, &keys, "slow", Arc::new(AtomicU64::new(300)));
    let _steady_load = Load::start(&edge, &keys, "steady", Arc::clone(&steady_delay));
    // Read in the same scrape as the trigger: an interval without a slow request's end (each
    // takes 300 ms) has no p95.
    let p95 = wait::until(long, "the slow instance's latency trigger", || {
        let text = edge.ops_get("/metrics").text();
        let value = |name: &str| -> Option<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        };
        let raised = value(
            "nexus_edge_instance_scale_trigger{instance_id=\"inst-slow\",trigger=\"latency\"}",
        ) == Some(1.0);
        raised
            .then(|| value("nexus_edge_instance_latency_p95_seconds{instance_id=\"inst-slow\"}"))
            .flatten()
            .filter(|p| !p.is_nan())
    });
    // 300 ms and a little, within the 2.5% the buckets round by.
    assert!((0.29..1.0).contains(&p95), "p95 {p95}");
    // Breaches take two intervals; by the third the steady instance has its baseline.
    wait::until(long, "three intervals over the SLO", || {
        (gauge(
            &edge,
            "nexus_edge_instance_slo_breach_intervals{instance_id=\"inst-slow\"}",
        )? >= 3.0)
            .then_some(())
    });
    assert_eq!(trigger(&edge, "inst-steady", "latency"), Some(0.0));
    assert_eq!(trigger(&edge, "inst-steady", "queue_delay"), Some(0.0));
    let baseline = gauge(
        &edge,
        "nexus_edge_instance_queue_delay_baseline_seconds{instance_id=\"inst-steady\"}",
    )
    .expect("a baseline");
    assert!(baseline < 0.015, "baseline {baseline}");

    // Its quickest answers now take 40 ms: under the SLO, but many times its usual.
    steady_delay.store(40, Ordering::Relaxed);
    wait::until(long, "the steady instance's queue-delay trigger", || {
        (trigger(&edge, "inst-steady", "queue_delay") == Some(1.0)).then_some(())
    });
    assert_eq!(trigger(&edge, "inst-steady", "latency"), Some(0.0));
    // The slow instance answers as slowly as ever: no queue building there.
    assert_eq!(trigger(&edge, "inst-slow", "queue_delay"), Some(0.0));
    // Its baseline did not take the queue in.
    let held = gauge(
        &edge,
        "nexus_edge_instance_queue_delay_baseline_seconds{instance_id=\"inst-steady\"}",
    )
    .expect("a baseline");
    assert!(held < 0.015, "baseline {held}");
    // Quick again: the trigger drops (well before the 60 intervals of the baseline window
    // would take the slow level as the norm).
    steady_delay.store(QUICK_MS, Ordering::Relaxed);
    wait::until(long, "the queue-delay trigger dropped", || {
        (trigger(&edge, "inst-steady", "queue_delay") == Some(0.0)).then_some(())
    });

    // A third instance finds the budget full: counted in the shared set, no series of its own.
    let r = get_with_token(edge.addr, &host("extra"), "/", &keys.token("extra", None));
    assert_eq!(r.status, 200, "{}", r.text());
    // Counted once its exchange has ended, which may be just after the client has its answer.
    wait::until(long, "the request counted past the budget", || {
        (gauge(
            &edge,
            "nexus_edge_instance_signals_over_budget_requests_total",
        )? == 1.0)
            .then_some(())
    });
    wait::until(long, "the shared set counted it", || {
        (gauge(
            &edge,
            "nexus_edge_instance_requests_total{instance_id=\"(over budget)\"}",
        )? == 1.0)
            .then_some(())
    });
    let text = edge.ops_get("/metrics").text();
    assert!(!text.contains("inst-extra"), "{text}");
    assert_eq!(
        gauge(&edge, "nexus_edge_instance_signals_tracked"),
        Some(2.0)
    );
}

/// A request that times out at the instance counts as slow as its timeout, and failed, as
/// does one the instance answers 5xx, one that cannot reach it (without a latency) and one
/// whose answer is cut short (once); one the router refuses itself never reached an
/// instance and counts for none.
#[test]
fn timeouts_count_as_slow_5xx_as_failed_and_refusals_for_no_instance() {
    let keys = TestKeys::new();
    let (hanging, other, ws) = (
        Backend::start("hanging"),
        Backend::start("other"),
        Backend::start("ws"),
    );
    let gone = format!("http://{}", nexus_e2e::edge::dead_addr());
    let failing = RawInstance::start(|_| {
        Answer::keep("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
    });
    let cut = RawInstance::start(|_| {
        Answer::close("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
    });
    let mut opts = EdgeOptions::new(
        keys.jwks(),
        bindings_file(vec![
            binding("hanging", &hanging.url(), "active", None),
            binding("other", &other.url(), "active", None),
            binding("failing", &failing.url(), "active", None),
            binding("gone", &gone, "active", None),
            binding("cut", &cut.url(), "active", None),
            binding("ws", &ws.url(), "active", None),
        ]),
    );
    opts.read_timeout = "300ms";
    opts.extra = "[metrics]\ninterval = \"1s\"\nlatency_slo = \"200ms\"\nslo_intervals = 1\n\
                  min_requests = 1\n"
        .to_owned();
    let edge = Edge::start(&opts);
    let token = keys.token("hanging", None);
    wait::until(
        Duration::from_secs(30),
        "the latency trigger from timeouts",
        || {
            let r = get_with_token(edge.addr, &host("hanging"), "/slow/5000", &token);
            assert_eq!(r.status, 504, "{}", r.text());
            (trigger(&edge, "inst-hanging", "latency") == Some(1.0)).then_some(())
        },
    );
    for (tenant, status) in [("failing", 503), ("gone", 502)] {
        let token = keys.token(tenant, None);
        for _ in 0..3 {
            let r = get_with_token(edge.addr, &host(tenant), "/", &token);
            assert_eq!(r.status, status, "{tenant}: {}", r.text());
        }
    }
    // A 200 whose body ends short of its length: the client's read fails, whichever way.
    let cut_token = keys.token("cut", None);
    let _ = nexus_e2e::http::send_raw(
        edge.addr,
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {cut_token}\r\n\
             Connection: close\r\n\r\n",
            host("cut")
        )
        .as_bytes(),
    );
    // A WebSocket: its `101` is the instance's answer, counted as it comes (the tunnel after
    // it is no latency of the instance's).
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(edge.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "GET /ws HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            host("ws"),
            keys.token("ws", None)
        )
        .expect("write");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).expect("read"), 1, "closed mid-head");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{:?}",
            String::from_utf8_lossy(&head)
        );
    }
    // Counted as each exchange ends, published at the interval's end.
    let count = |name: &str, instance: &str| {
        gauge(&edge, &format!("{name}{{instance_id=\"{instance}\"}}")).unwrap_or_default()
    };
    wait::until(Duration::from_secs(10), "the failures counted", || {
        [
            ("inst-failing", 3.0, 3.0),
            ("inst-gone", 3.0, 3.0),
            ("inst-cut", 1.0, 1.0),
            ("inst-ws", 1.0, 0.0),
        ]
        .iter()
        .all(|&(instance, sent, failed)| {
            count("nexus_edge_instance_requests_total", instance) == sent
                && count("nexus_edge_instance_failed_requests_total", instance) == failed
        })
        .then_some(())
    });
    let sent = count("nexus_edge_instance_requests_total", "inst-hanging");
    assert!(sent >= 1.0, "{sent}");
    assert_eq!(
        count("nexus_edge_instance_failed_requests_total", "inst-hanging"),
        sent
    );
    // Out of reach, no latency: nothing to judge.
    assert!(count("nexus_edge_instance_latency_p95_seconds", "inst-gone").is_nan());
    // No token, another tenant's: refused before any instance was asked.
    for t in ["", &token] {
        let r = get_with_token(edge.addr, &host("other"), "/", t);
        assert!([401, 403].contains(&r.status), "{}", r.status);
    }
    // An interval ended with no request to the hanging instance: one begun after its last
    // request, before which the refusals, sent after it and counted as they were answered,
    // had their turn.
    wait::until(
        Duration::from_secs(10),
        "an interval without requests",
        || {
            (gauge(
                &edge,
                "nexus_edge_instance_interval_requests{instance_id=\"inst-hanging\"}",
            )? == 0.0)
                .then_some(())
        },
    );
    let text = edge.ops_get("/metrics").text();
    assert!(!text.contains("inst-other"), "{text}");
    assert_eq!(
        gauge(&edge, "nexus_edge_instance_signals_tracked"),
        Some(5.0)
    );
    assert_eq!(other.hits(), 0);
}
