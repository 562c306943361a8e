//! Background tasks run inside the Pingora server: binding sync and key reload.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nexus_binding_store::{BindingHandle, BindingSource};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

use crate::state::EdgeState;

/// When the background jobs stop: not when the drain begins (Pingora tells its services
/// then), but as the process ends. Tunnels and requests still in flight are checked against
/// the bindings and keys served at each piece; a job stopped at the drain's start left them
/// on a table and a key set that no longer changed, so a tenant unbound or a key revoked
/// during the drain kept its tunnels until `shutdown_grace` ran out.
///
/// The drain's end ([`crate::signals`]) calls [`JobsStop::finish`] just before the process
/// exits; should `shutdown_grace` run out first, a job with last steps (a Redis replica's
/// goodbye heartbeat and snapshot: [`BindingSource::last_steps`]) is told that long before
/// it does, while its runtime still runs them. The others follow to the end: told 2 s early
/// whatever their store, a router with a short grace stopped following at the drain's start.
#[derive(Clone, Debug)]
pub struct JobsStop {
    inner: Arc<JobsStopInner>,
}

#[derive(Debug)]
struct JobsStopInner {
    exit: watch::Sender<bool>,
    /// Jobs with last steps (the binding sync's goodbye heartbeat and snapshot, a revocation
    /// snapshot) made and not yet ended: [`JobsStop::finish`] waits for none to be left.
    running: Mutex<u32>,
    finished: Condvar,
    grace: Duration,
}

/// Held by a job with last steps from when it is made until it ends: the drain's end waits
/// for it ([`JobsStop::finish`]) until it is dropped. Taken when the job is made, not when
/// it starts: a drain that ends before the job has started still waits for it.
#[derive(Debug)]
pub(crate) struct LastSteps {
    inner: Arc<JobsStopInner>,
}

impl Drop for LastSteps {
    fn drop(&mut self) {
        let mut running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *running = running.saturating_sub(1);
        self.inner.finished.notify_all();
    }
}

/// A job's [`LastSteps`], let go of once its `start` ends.
#[derive(Debug)]
pub(crate) struct HeldLastSteps(Mutex<Option<LastSteps>>);

impl HeldLastSteps {
    pub(crate) fn new(held: Option<LastSteps>) -> Self {
        Self(Mutex::new(held))
    }

    /// Whether the job has last steps not yet done.
    pub(crate) fn held(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// The job's last steps are done.
    pub(crate) fn release(&self) {
        drop(
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }
}

impl JobsStop {
    /// Jobs of a router whose drain lasts `grace` at most.
    pub fn new(grace: Duration) -> Self {
        Self {
            inner: Arc::new(JobsStopInner {
                exit: watch::channel(false).0,
                running: Mutex::new(0),
                finished: Condvar::new(),
                grace,
            }),
        }
    }

    /// Tells the jobs the process is about to exit and waits, `wait` at most, for their last
    /// steps. Blocking: called from the drain's own thread.
    pub fn finish(&self, wait: Duration) {
        self.inner.exit.send_replace(true);
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = self
            .inner
            .finished
            .wait_timeout_while(running, wait, |running| *running > 0);
    }

    /// Counts a job with last steps as running until the returned guard is dropped (see
    /// [`LastSteps`]).
    pub(crate) fn last_steps(&self) -> LastSteps {
        *self
            .inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        LastSteps {
            inner: Arc::clone(&self.inner),
        }
    }

    /// A watch that turns true when the job is to stop: at [`JobsStop::finish`], or
    /// `margin` before `shutdown_grace` runs out once Pingora's `shutdown` came: the time
    /// the job's last steps need (none for a job that has none: it follows to the end).
    pub(crate) fn signal(
        &self,
        mut shutdown: ShutdownWatch,
        margin: Duration,
    ) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let mut exit = self.inner.exit.subscribe();
        let last_moment = self.inner.grace.saturating_sub(margin);
        tokio::spawn(async move {
            let grace_ending = async {
                let _ = shutdown.wait_for(|s| *s).await;
                tokio::time::sleep(last_moment).await;
            };
            tokio::select! {
                _ = exit.wait_for(|e| *e) => {}
                () = grace_ending => {}
            }
            let _ = tx.send(true);
        });
        rx
    }
}

/// Runs the job `run` makes until it ends, making it again after a panic (logged and counted
/// by the panic hook, and said here as `what`): a bug one input meets must not end a sync for
/// the life of the process. Ends at a panic once `stop` is true.
pub(crate) async fn restarting_after_panic<F, R>(
    what: &'static str,
    mut stop: watch::Receiver<bool>,
    mut run: F,
) where
    F: FnMut() -> R,
    R: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::spawn(run()).await {
            Err(e) if e.is_panic() => {
                tracing::error!("{what} stopped by a panic; starting it again");
            }
            _ => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(RESTART_AFTER_PANIC) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Runs the binding source's follow loop until the process ends ([`JobsStop`]).
pub struct BindingSync {
    source: Arc<dyn BindingSource>,
    handle: BindingHandle,
    stop: JobsStop,
    last_steps: HeldLastSteps,
}

impl BindingSync {
    /// A sync task for `source` feeding `handle`, stopped by `stop`.
    pub fn new(source: Arc<dyn BindingSource>, handle: BindingHandle, stop: JobsStop) -> Self {
        Self {
            source,
            handle,
            last_steps: HeldLastSteps::new(Some(stop.last_steps())),
            stop,
        }
    }
}

/// How long a job stopped by a panic waits before it starts again: long enough that a
/// panic met at every start does not spin a core, short enough that the table is not left
/// stale for long.
const RESTART_AFTER_PANIC: Duration = Duration::from_secs(1);

#[async_trait]
impl BackgroundService for BindingSync {
    /// Follows the source until shutdown. A panic inside it (a bug met by one record, say)
    /// would otherwise end the sync for good, leaving the replica on a table that never
    /// changes again: the sync starts over (a source's `run` begins by catching up from
    /// wherever it is).
    async fn start(&self, shutdown: ShutdownWatch) {
        // Told to stop early only for its last steps: bindings go on being followed through
        // the drain (a rebind closes tunnels), to its end for a store with no last steps.
        let stop = self.stop.signal(shutdown, self.source.last_steps());
        restarting_after_panic("binding sync", stop.clone(), || {
            Arc::clone(&self.source).run(self.handle.clone(), stop.clone())
        })
        .await;
        self.last_steps.release();
    }
}

/// Re-reads the JWKS file periodically; a bad file keeps the current keys, is logged once
/// and shows in `key_set_refused` (mirrored at each scrape) until it changes.
pub struct KeyReload {
    state: Arc<EdgeState>,
    every: Duration,
    stop: JobsStop,
}

impl KeyReload {
    /// Checks the key file every `every` until the process ends ([`JobsStop`]).
    pub fn new(state: Arc<EdgeState>, every: Duration, stop: JobsStop) -> Self {
        Self { state, every, stop }
    }
}

#[async_trait]
impl BackgroundService for KeyReload {
    async fn start(&self, shutdown: ShutdownWatch) {
        // No last steps: keys are followed to the end of the drain (a revoked key closes
        // tunnels).
        let mut shutdown = self.stop.signal(shutdown, Duration::ZERO);
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let was_refusing = self.state.auth.refusing();
                    // A panic while reading a key file (logged and counted by the panic hook)
                    // must not end key rotation for the life of the process.
                    let reload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.state.auth.reload_keys()
                    }));
                    let refused = self.state.auth.refusing();
                    match reload {
                        Ok(Ok(true)) => tracing::info!(keys = self.state.auth.key_count(), "verification keys reloaded"),
                        // Back to the keys in use (put back, or readable again): said, as its
                        // refusal was, or the error line is the last word in the log.
                        Ok(Ok(false)) if was_refusing && !refused => tracing::info!(
                            keys = self.state.auth.key_count(),
                            "verification key file usable again: it holds the keys in use"
                        ),
                        Ok(Ok(false)) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "verification keys not reloaded; keeping the current keys"),
                        Err(_) => tracing::error!("verification keys not reloaded: the reload panicked; keeping the current keys"),
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// Follows a key set the identity provider publishes (`[auth] jwks_url`): see
/// [`crate::auth::remote`].
pub struct KeyRefresh {
    remote: Arc<crate::auth::remote::RemoteKeys>,
    state: Arc<EdgeState>,
    stop: JobsStop,
}

impl KeyRefresh {
    /// Follows `remote` into `state`'s authenticator until the process ends ([`JobsStop`]).
    pub fn new(
        remote: Arc<crate::auth::remote::RemoteKeys>,
        state: Arc<EdgeState>,
        stop: JobsStop,
    ) -> Self {
        Self {
            remote,
            state,
            stop,
        }
    }
}

#[async_trait]
impl BackgroundService for KeyRefresh {
    async fn start(&self, shutdown: ShutdownWatch) {
        // No last steps, as for a key file: keys are followed to the end of the drain.
        let stop = self.stop.signal(shutdown, Duration::ZERO);
        let (remote, state) = (Arc::clone(&self.remote), Arc::clone(&self.state));
        restarting_after_panic("verification key refresh", stop.clone(), move || {
            let (remote, state, stop) = (Arc::clone(&remote), Arc::clone(&state), stop.clone());
            async move { remote.follow(&state.auth, stop).await }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_binding_store::{BindingTable, StoreError, SyncHealth};
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::sync::watch;

    /// A source whose first follow meets a bug: the only way to make a sync panic on cue.
    struct PanicsOnce {
        runs: AtomicU32,
        health: Arc<SyncHealth>,
    }

    #[async_trait]
    impl BindingSource for PanicsOnce {
        fn kind(&self) -> &'static str {
            "panics-once"
        }
        async fn initial_load(&self) -> Result<BindingTable, StoreError> {
            Ok(BindingTable::new())
        }
        async fn run(self: Arc<Self>, _handle: BindingHandle, mut shutdown: watch::Receiver<bool>) {
            assert!(
                self.runs.fetch_add(1, Ordering::SeqCst) > 0,
                "a bug met by one record"
            );
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    return;
                }
            }
        }
        fn health(&self) -> Arc<SyncHealth> {
            Arc::clone(&self.health)
        }
    }

    /// The jobs run through the drain (Pingora's shutdown), and stop at its end, or their
    /// last steps' time before `shutdown_grace` runs out.
    #[tokio::test(start_paused = true)]
    async fn jobs_stop_as_the_drain_ends_not_as_it_begins() {
        for margin in [Duration::from_secs(2), Duration::ZERO] {
            let grace = Duration::from_secs(60);
            let jobs = JobsStop::new(grace);
            let (pingora, shutdown) = watch::channel(false);
            let mut stop = jobs.signal(shutdown, margin);
            pingora.send(true).expect("listened to");
            let last_moment = grace - margin;
            // (The clock is paused: it moves only as the tasks wait, all at once.)
            let before = tokio::time::Instant::now();
            assert!(
                tokio::time::timeout(last_moment - Duration::from_secs(1), stop.wait_for(|s| *s))
                    .await
                    .is_err(),
                "stopped as the drain began"
            );
            stop.wait_for(|s| *s)
                .await
                .expect("stopped before the grace ran out");
            assert_eq!(before.elapsed(), last_moment, "margin {margin:?}");
        }

        // Ended by the drain: told at once, and the drain waits for the sync to finish.
        let jobs = JobsStop::new(Duration::from_secs(60));
        let (_pingora, shutdown) = watch::channel(false);
        let mut stop = jobs.signal(shutdown, Duration::from_secs(2));
        let sync = jobs.last_steps();
        let finishing = {
            let jobs = jobs.clone();
            std::thread::spawn(move || jobs.finish(Duration::from_secs(3600)))
        };
        stop.wait_for(|s| *s).await.expect("told");
        assert!(!finishing.is_finished(), "did not wait for the sync");
        drop(sync);
        finishing
            .join()
            .expect("finish returns once the sync is done");
    }

    #[tokio::test]
    async fn a_binding_sync_stopped_by_a_panic_starts_again_and_still_stops_on_shutdown() {
        let source = Arc::new(PanicsOnce {
            runs: AtomicU32::new(0),
            health: Arc::new(SyncHealth::default()),
        });
        let jobs = JobsStop::new(Duration::ZERO);
        let sync = BindingSync::new(
            Arc::clone(&source) as Arc<dyn BindingSource>,
            BindingHandle::new(BindingTable::new()),
            jobs.clone(),
        );
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(async move { sync.start(shutdown).await });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while source.runs.load(Ordering::SeqCst) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline && !task.is_finished(),
                "the sync was not started again after its panic"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send(true).expect("sync is listening");
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the sync stops on shutdown")
            .expect("no panic escapes");
    }
}
