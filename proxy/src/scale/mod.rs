//! Scale-trigger signals per instance: each forwarded request's latency, and whether the
//! instance failed it, is counted for the instance it went to, and once per `[metrics]
//! interval` every instance is judged against the brief's two triggers the router sees (see
//! [`judge`]) and its figures published.
//!
//! The series are bounded by `[metrics] max_instances`: instances past it share one set,
//! labelled [`OVER_BUDGET`], and one no request has reached for [`FORGET_AFTER`] intervals
//! (moved away by a rebind, retired) is forgotten with its series. So the series count is
//! at most [`SERIES_PER_INSTANCE`] per instance within the budget, as many for the shared
//! set (whose triggers are never raised: it is no one instance), and 3.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use nexus_binding_store::InstanceId;
use nexus_config::MetricsSettings;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::background::JobsStop;
use crate::metrics::{gauge_value, ScaleMetrics};

pub mod judge;
pub mod window;

use judge::{Interval, Judge, Rules, Verdict};
use window::Window;

/// The `instance_id` label of the instances past the budget. No instance id has a space.
pub const OVER_BUDGET: &str = "(over budget)";
/// Intervals in a row without a request after which an instance is forgotten.
pub const FORGET_AFTER: u32 = 10;
/// The series each instance has (see [`crate::metrics::ScaleMetrics`]).
pub const SERIES_PER_INSTANCE: usize = 9;

/// How a request sent to an instance ended, as the instance's signals count it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sent {
    /// The instance's final response header came `latency` after the request was sent;
    /// `failed`: its status was a 5xx (or past 599).
    Answered {
        /// From the request's sending to the response header.
        latency: Duration,
        /// The instance failed the request.
        failed: bool,
    },
    /// The instance did not answer within the timeout: failed, and as slow as it took.
    TimedOut(Duration),
    /// The instance could not be reached, or what it sent was no response: failed, with no
    /// latency to count.
    Unanswered,
    /// The client went away before the instance answered: as slow as it waited at least
    /// (the slowest requests must not drop out of the figures when the instance is slow),
    /// and not failed.
    Abandoned(Duration),
    /// A request already counted [`Sent::Answered`] whose answer then broke off or proved
    /// invalid: failed, counted once more only as a failure.
    BrokeOff,
}

/// One instance: the interval's latencies and counts so far, and its judgement.
#[derive(Debug, Default)]
struct Tracked {
    window: Window,
    /// Requests that ended since the last interval's end.
    sent: AtomicU64,
    /// Of those, the ones the instance failed.
    failed: AtomicU64,
    /// Of those with a latency, the ones slower than the SLO.
    over_slo: AtomicU64,
    /// Intervals in a row without a request (only the interval clock touches it).
    quiet: AtomicU32,
    judge: Mutex<Judge>,
}

impl Tracked {
    fn count(&self, sent: Sent, slo: Duration) {
        let (latency, failed) = match sent {
            Sent::Answered { latency, failed } => (Some(latency), failed),
            Sent::TimedOut(latency) => (Some(latency), true),
            Sent::Unanswered => (None, true),
            Sent::Abandoned(latency) => (Some(latency), false),
            Sent::BrokeOff => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.sent.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(latency) = latency {
            self.window.record(latency);
            if latency > slo {
                self.over_slo.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Adds what `other` counted (and has not been judged) to this entry's interval.
    fn absorb(&self, other: &Tracked) {
        self.window.add(&other.window.take());
        for (mine, theirs) in [
            (&self.sent, &other.sent),
            (&self.failed, &other.failed),
            (&self.over_slo, &other.over_slo),
        ] {
            mine.fetch_add(theirs.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// The instances' signals.
pub struct InstanceSignals {
    rules: Rules,
    budget: usize,
    /// The instances with series of their own; requests read it without waiting. An
    /// instance added copies the map (at most `max_instances` entries, once per instance):
    /// a persistent map would add without the copy, but made every request's lookup a
    /// quarter slower (`bench/benches/scale.rs`).
    tracked: ArcSwap<HashMap<InstanceId, Arc<Tracked>>>,
    /// Held while `tracked` gains or loses an instance.
    changes: Mutex<()>,
    /// The entries forgotten at the last interval's end: a request that found one just
    /// before it went counted there, and is carried over at the next.
    retiring: Mutex<Vec<(InstanceId, Arc<Tracked>)>>,
    over_budget: Arc<Tracked>,
    metrics: ScaleMetrics,
}

impl std::fmt::Debug for InstanceSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceSignals")
            .field("budget", &self.budget)
            .field("tracked", &self.tracked.load().len())
            .finish_non_exhaustive()
    }
}

impl InstanceSignals {
    /// Signals under `settings`, published in `metrics`.
    pub fn new(settings: &MetricsSettings, metrics: ScaleMetrics) -> Self {
        let signals = Self {
            rules: Rules::from(settings),
            budget: settings.max_instances,
            tracked: ArcSwap::default(),
            changes: Mutex::new(()),
            retiring: Mutex::default(),
            over_budget: Arc::default(),
            metrics,
        };
        signals
            .metrics
            .budget
            .set(gauge_value(settings.max_instances));
        // The shared set from the start, so that it is there, at 0, before it is needed.
        signals.end_interval(OVER_BUDGET, &signals.over_budget);
        signals
    }

    /// Counts how a request sent to `instance` ended.
    pub fn record(&self, instance: &InstanceId, sent: Sent) {
        // The common case without an `Arc` clone: its count is one more cache line that
        // every core counting for the instance would write.
        let tracked = self.tracked.load();
        if let Some(t) = tracked.get(instance) {
            t.count(sent, self.rules.slo);
            return;
        }
        if sent == Sent::BrokeOff {
            // Its request was counted with its answer, where that went (no request more here):
            // the shared set, when the budget is full; else an entry forgotten since (a stream
            // that outlived it), which a failure alone must not bring back.
            if let Some(t) = self.found(&tracked, instance, 0) {
                t.count(sent, self.rules.slo);
            }
            return;
        }
        drop(tracked);
        self.entry(instance, 1).count(sent, self.rules.slo);
    }

    /// The instance's entry: found, else made if the budget has room, else the shared one,
    /// for `requests` requests (counted past the budget when they go to the shared one).
    fn entry(&self, instance: &InstanceId, requests: u64) -> Arc<Tracked> {
        // Looked for without the lock first: with the budget full, every request of an
        // instance past it would otherwise take the lock to learn so.
        if let Some(t) = self.found(&self.tracked.load(), instance, requests) {
            return t;
        }
        let _held = lock(&self.changes);
        let now = self.tracked.load();
        if let Some(t) = self.found(&now, instance, requests) {
            return t;
        }
        let t = Arc::<Tracked>::default();
        let mut next = HashMap::clone(&now);
        next.insert(instance.clone(), Arc::clone(&t));
        self.metrics.tracked.set(gauge_value(next.len()));
        self.tracked.store(Arc::new(next));
        t
    }

    /// The instance's entry in `tracked`, or the shared one when the budget is full; `None`:
    /// neither, it may be made.
    fn found(
        &self,
        tracked: &HashMap<InstanceId, Arc<Tracked>>,
        instance: &InstanceId,
        requests: u64,
    ) -> Option<Arc<Tracked>> {
        if let Some(t) = tracked.get(instance) {
            return Some(Arc::clone(t));
        }
        (tracked.len() >= self.budget).then(|| {
            self.metrics.over_budget_requests.inc_by(requests);
            Arc::clone(&self.over_budget)
        })
    }

    /// Ends the interval: judges every instance, publishes the verdicts, and forgets the
    /// instances quiet for [`FORGET_AFTER`] intervals.
    pub fn close_interval(&self) {
        // Requests that found an entry just before it was forgotten (a lookup and an add
        // apart) were counted in it: carried over to the instance's entry now, which they
        // bring back.
        for (id, old) in std::mem::take(&mut *lock(&self.retiring)) {
            let requests = old.sent.load(Ordering::Relaxed);
            if requests > 0 {
                self.entry(&id, requests).absorb(&old);
            }
        }
        let now = self.tracked.load_full();
        let mut forget = Vec::new();
        let mut relearnt = Vec::new();
        for (id, t) in now.iter() {
            let ended = self.end_interval(id.as_str(), t);
            if ended.relearnt {
                relearnt.push(id.as_str());
            }
            if ended.quiet >= FORGET_AFTER {
                forget.push((id.clone(), Arc::clone(t)));
            }
        }
        self.end_interval(OVER_BUDGET, &self.over_budget);
        if !relearnt.is_empty() {
            // One line for them all: a cause on the router's side moves every instance at
            // once.
            relearnt.sort_unstable();
            tracing::info!(
                instances = relearnt.len(),
                first = %relearnt.iter().take(5).copied().collect::<Vec<_>>().join(","),
                "queue delay above its baseline for a whole metrics.baseline_window: taken as \
                 the new baseline of these instances"
            );
        }
        if forget.is_empty() {
            return;
        }
        let _held = lock(&self.changes);
        let mut next = HashMap::clone(&self.tracked.load());
        for (id, _) in &forget {
            next.remove(id);
            self.metrics.forget(id.as_str());
        }
        self.metrics.tracked.set(gauge_value(next.len()));
        self.tracked.store(Arc::new(next));
        *lock(&self.retiring) = forget;
    }

    /// Judges one instance's interval and publishes what it showed.
    fn end_interval(&self, instance: &str, t: &Tracked) -> Ended {
        let sent = t.sent.swap(0, Ordering::Relaxed);
        let failed = t.failed.swap(0, Ordering::Relaxed);
        let over_slo = t.over_slo.swap(0, Ordering::Relaxed);
        let quiet = if sent == 0 && failed == 0 {
            t.quiet.load(Ordering::Relaxed).saturating_add(1)
        } else {
            0
        };
        t.quiet.store(quiet, Ordering::Relaxed);
        let interval = Interval::of(&t.window.take(), over_slo);
        let verdict = lock(&t.judge).judge(interval, &self.rules);
        let m = &self.metrics;
        m.requests.with_label_values(&[instance]).inc_by(sent);
        m.failed_requests
            .with_label_values(&[instance])
            .inc_by(failed);
        self.publish(instance, &verdict);
        Ended {
            quiet,
            relearnt: verdict.relearnt,
        }
    }

    fn publish(&self, instance: &str, v: &Verdict) {
        let m = &self.metrics;
        let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
        m.interval_requests
            .with_label_values(&[instance])
            .set(gauge_value(v.requests));
        m.latency_p95
            .with_label_values(&[instance])
            .set(secs(v.judged.map(|i| i.p95)));
        m.queue_delay
            .with_label_values(&[instance])
            .set(secs(v.judged.map(|i| i.queue_delay)));
        m.queue_delay_baseline
            .with_label_values(&[instance])
            .set(secs(v.baseline));
        m.slo_breaches
            .with_label_values(&[instance])
            .set(i64::from(v.breaches));
        // The shared set mixes instances that come and go: its figures say how the
        // instances past the budget fare together, but no one of them is to be scaled.
        let shared = instance == OVER_BUDGET;
        m.triggers
            .with_label_values(&[instance, "latency"])
            .set(i64::from(v.latency && !shared));
        m.triggers
            .with_label_values(&[instance, "queue_delay"])
            .set(i64::from(v.queue && !shared));
    }
}

/// What an interval's end found of one instance.
struct Ended {
    /// Intervals in a row without a request.
    quiet: u32,
    /// Its queue-delay baseline was learnt again (see [`Verdict::relearnt`]).
    relearnt: bool,
}

/// A lock whose holder panicked is still good: what it guards is counters and a map
/// replaced whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends an interval every `[metrics] interval`.
pub struct IntervalClock {
    state: Arc<crate::state::EdgeState>,
    stop: JobsStop,
}

impl IntervalClock {
    /// The clock of `state`'s signals.
    pub fn new(state: Arc<crate::state::EdgeState>, stop: JobsStop) -> Self {
        Self { state, stop }
    }
}

#[async_trait]
impl BackgroundService for IntervalClock {
    async fn start(&self, shutdown: ShutdownWatch) {
        let mut shutdown = self.stop.signal(shutdown, Duration::ZERO);
        let mut tick = tokio::time::interval(self.state.settings.metrics.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is now: the first interval begins.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // A panic (logged and counted by the panic hook) loses one interval's
                    // figures, not the signals for the life of the process.
                    let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.state.scale.close_interval();
                    }));
                    if closed.is_err() {
                        tracing::error!("instance signals not judged: the interval's end panicked");
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests;
