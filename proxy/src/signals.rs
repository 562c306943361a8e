//! SIGTERM, SIGINT and SIGQUIT (as SIGTERM), and a successor's handover: when the router
//! stops, and how fast. (SIGHUP, SIGUSR1 and SIGUSR2 are caught and ignored from the start:
//! [`ignore_reload_signals`].)
//!
//! Both are caught by a thread of their own, and queued, from before the listeners are bound
//! (while the router only loads its keys and bindings, their default action ends it, as it
//! should). Pingora asks for a stop signal only once its services run, and the listeners
//! accept, and the ops listener may answer `/readyz`, before that: a signal that came in
//! between used to meet the default action and end the process at once, with nothing logged
//! and no drain. Queued, it is handled as soon as Pingora asks. (Repeats of one signal that
//! arrive at the same moment count once: the system, and tokio, keep one pending flag each.)
//!
//! - SIGTERM: `/readyz` turns 503 and every response closes its connection for
//!   `[server] shutdown_delay` while a load balancer notices, then the listeners close and the
//!   drain runs for `shutdown_grace`. SIGINT, or a second SIGTERM, skips the delay.
//! - A handover ([`crate::handover`]): the successor serves on the listeners, so this router
//!   drains as on SIGTERM (for `shutdown_delay` every response closes its connection, so busy
//!   keep-alive clients reconnect, to the successor), but its ops listener closes at once
//!   (the successor answers `/readyz` there now). The first signal after it is only noted (a
//!   supervisor stopping every process of the service must not cut what this one still
//!   serves). Once a stop has begun, the listeners are no longer offered, and a handover
//!   under way is waited for before the process exits.
//! - A successor that leaves the listeners to its predecessor (never confirmed, or told to
//!   stop first) drains as on SIGTERM, its ops listener closed at once, and exits 1.
//! - The drain ends as soon as no client connection is left (exit code 0), not at the end of
//!   `shutdown_grace`: Pingora sleeps through the whole grace period whatever is in flight,
//!   so an idle router would take the full grace to stop, and a rolling deploy that long per
//!   replica.
//! - One more signal once the drain has begun ends the process at once (exit code 1).
//!   Signals that came before the drain began (say, two while the router was starting) are
//!   not counted toward it.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::{mpsc, watch};

use crate::background::JobsStop;
use crate::connections::Drain;
use crate::handover::Offered;
use crate::state::EdgeState;

/// Which signal came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Term,
    Int,
    /// The successor with this process id serves on the listeners.
    HandedOver(u32),
    /// This router took the listeners over, but its predecessor never let go: it stops, and
    /// the predecessor serves on.
    Abandoned,
}

/// The stop signals, in the order they came.
struct StopSignals {
    queue: mpsc::UnboundedReceiver<Stop>,
}

impl StopSignals {
    /// Catches SIGTERM, SIGINT and SIGQUIT from now on, setting `signalled` as each comes
    /// (before Pingora asks for the queue). Returns once they are caught, with the queue's
    /// sender, for a handover.
    fn install(
        signalled: Arc<std::sync::atomic::AtomicBool>,
    ) -> std::io::Result<(Self, mpsc::UnboundedSender<Stop>)> {
        use tokio::signal::unix::SignalKind;
        let (tx, queue) = mpsc::unbounded_channel();
        let handover = tx.clone();
        let kinds = [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::quit(),
        ];
        on_signal_thread(
            "signals",
            kinds,
            move |[mut term, mut int, mut quit]| async move {
                loop {
                    let stop = tokio::select! {
                        _ = term.recv() => Stop::Term,
                        _ = int.recv() => Stop::Int,
                        // nginx's graceful stop, and Pingora's graceful upgrade (the router's
                        // is `serve --upgrade`, asked by the new process): its default action
                        // dumps core. Drained as SIGTERM is.
                        _ = quit.recv() => {
                            tracing::info!("SIGQUIT: taken as SIGTERM");
                            Stop::Term
                        }
                    };
                    signalled.store(true, std::sync::atomic::Ordering::SeqCst);
                    if tx.send(stop).is_err() {
                        return;
                    }
                }
            },
        )?;
        Ok((Self { queue }, handover))
    }

    /// Forgets the signals queued so far.
    fn discard_queued(&mut self) {
        while self.queue.try_recv().is_ok() {}
    }

    /// The next signal. Should the signal thread end, none comes any more.
    async fn next(&mut self) -> Stop {
        match self.queue.recv().await {
            Some(stop) => stop,
            None => std::future::pending().await,
        }
    }
}

/// Catches SIGHUP, SIGUSR1 and SIGUSR2 for the rest of the process, and says each does
/// nothing. Called first thing: their default action ends the process at once, cutting what
/// is in flight, with nothing logged, and a start-up can take a while (a large bindings file,
/// a wait for Redis), during which a log rotation's or a config tool's SIGHUP ended it. An
/// operator sending one expects a reload or a log reopen, neither of which applies here.
pub fn ignore_reload_signals() -> std::io::Result<()> {
    use tokio::signal::unix::SignalKind;
    let kinds = [
        SignalKind::hangup(),
        SignalKind::user_defined1(),
        SignalKind::user_defined2(),
    ];
    on_signal_thread(
        "ignored-signals",
        kinds,
        |[mut hup, mut usr1, mut usr2]| async move {
            loop {
                let name = tokio::select! {
                    _ = hup.recv() => "SIGHUP",
                    _ = usr1.recv() => "SIGUSR1",
                    _ = usr2.recv() => "SIGUSR2",
                };
                tracing::warn!(
                    "{name} ignored: bindings and keys reload by themselves when their store or \
                 file changes, logs go to stderr (nothing to reopen); a config change needs a \
                 restart (SIGTERM drains)"
                );
            }
        },
    )
}

/// Runs `watch` on a thread of its own (a current-thread runtime) with the signals of
/// `kinds` caught; returns once they are, or with what kept one from being caught.
fn on_signal_thread<const N: usize, F>(
    name: &str,
    kinds: [tokio::signal::unix::SignalKind; N],
    watch: impl FnOnce([tokio::signal::unix::Signal; N]) -> F + Send + 'static,
) -> std::io::Result<()>
where
    F: std::future::Future<Output = ()>,
{
    let (caught, installed) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = caught.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let signals: std::io::Result<Vec<_>> =
                    kinds.into_iter().map(tokio::signal::unix::signal).collect();
                let signals = signals.and_then(|all| {
                    <[_; N]>::try_from(all)
                        .map_err(|_| std::io::Error::other("a signal was not caught"))
                });
                match signals {
                    Ok(signals) => {
                        let _ = caught.send(Ok(()));
                        watch(signals).await;
                    }
                    Err(e) => {
                        let _ = caught.send(Err(e));
                    }
                }
            });
        })?;
    match installed.recv() {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::other("the signal thread ended")),
    }
}

/// Pingora's stop signal watch: turns SIGTERM and SIGINT into its graceful shutdown, after
/// `[server] shutdown_delay` for SIGTERM.
pub struct Signals {
    state: Arc<EdgeState>,
    /// Taken by the one call of `recv`, then by the watch for a signal during the drain.
    caught: Mutex<Option<StopSignals>>,
    /// The public listener's connections, whose end ends the drain (set once it is built),
    /// and the background jobs to stop then.
    drain: OnceLock<(Drain, JobsStop)>,
    /// Where a handover's completion is queued, as a stop.
    handover: mpsc::UnboundedSender<Stop>,
    /// Turns true once this router lets go of the listeners: a successor serves on them, or
    /// (for a successor) they are left to the predecessor.
    handed_over: Arc<watch::Sender<bool>>,
    /// The listeners offered to a successor, withdrawn once a stop begins.
    offered: OnceLock<Offered>,
    /// Set once a handover this router took part in as the successor was abandoned: the
    /// process then ends with a failure exit code.
    abandoned: Arc<std::sync::atomic::AtomicBool>,
    /// Set as soon as a stop signal comes, before the queue is read.
    signalled: Arc<std::sync::atomic::AtomicBool>,
}

impl Signals {
    /// Catches the stop signals from now on: call it before the listeners are bound.
    pub fn catch(state: Arc<EdgeState>) -> std::io::Result<Self> {
        let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (signals, handover) = StopSignals::install(Arc::clone(&signalled))?;
        Ok(Self {
            state,
            caught: Mutex::new(Some(signals)),
            drain: OnceLock::new(),
            handover,
            handed_over: Arc::new(watch::channel(false).0),
            offered: OnceLock::new(),
            abandoned: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            signalled,
        })
    }

    /// Whether a stop signal has come (true from the moment it does, before the router
    /// begins to stop), or the router has left a handover's sockets to its predecessor
    /// (its deadline passed): either way it must not confirm the handover any more.
    pub fn stop_signalled(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let (signalled, abandoned) = (Arc::clone(&self.signalled), Arc::clone(&self.abandoned));
        move || {
            signalled.load(std::sync::atomic::Ordering::SeqCst)
                || abandoned.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// What a successor calls when it leaves the listeners to its predecessor (which never
    /// let go, or this one was told to stop first): it drains, its ops listener closed at once
    /// (the predecessor answers there), then exits 1.
    pub fn abandon_notice(&self) -> impl FnOnce() + Send + 'static {
        let (queue, abandoned, let_go) = (
            self.handover.clone(),
            Arc::clone(&self.abandoned),
            Arc::clone(&self.handed_over),
        );
        move || {
            abandoned.store(true, std::sync::atomic::Ordering::SeqCst);
            let_go.send_replace(true);
            let _ = queue.send(Stop::Abandoned);
        }
    }

    /// Whether the router stops because its handover was abandoned (see
    /// [`Signals::abandon_notice`]).
    pub fn abandoned(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.abandoned)
    }

    /// What the handover calls once the successor serves: the router lets go of the
    /// listeners (its ops listener closes at once) and drains as on SIGTERM.
    pub fn handover_notice(&self) -> impl FnOnce(u32) + Send + 'static {
        let (queue, handed_over) = (self.handover.clone(), Arc::clone(&self.handed_over));
        move |successor| {
            handed_over.send_replace(true);
            let _ = queue.send(Stop::HandedOver(successor));
        }
    }

    /// Turns true once this router lets go of the listeners (see `handed_over`).
    pub fn watch_handover(&self) -> watch::Receiver<bool> {
        self.handed_over.subscribe()
    }

    /// Withdraws `offered` as soon as a stop begins.
    pub fn withdraw_on_stop(&self, offered: Offered) {
        let _ = self.offered.set(offered);
    }

    /// Ends the drain as soon as `drain` says it is over, `jobs` finished first. Without it,
    /// the drain lasts the whole `shutdown_grace`.
    pub fn end_drain_with(&self, drain: Drain, jobs: JobsStop) {
        let _ = self.drain.set((drain, jobs));
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    // Pingora awaits this once, to the end. Dropped half-way, it would take the queue with it
    // and leave the signals caught and unheard.
    async fn recv(&self) -> ShutdownSignal {
        // Nothing panics while the lock is held, so poisoning cannot hide the signals.
        let taken = self
            .caught
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut signals) = taken else {
            // Pingora asks once; asked again, there is nothing left to wait for.
            return std::future::pending().await;
        };
        let delay = self.state.settings.server.shutdown_delay;
        let first = signals.next().await;
        if let Some(offered) = self.offered.get() {
            offered.withdraw();
        }
        match first {
            Stop::Term => {
                tracing::info!(shutdown_delay = ?delay, "SIGTERM: not ready; the listeners close after shutdown_delay")
            }
            Stop::Int => tracing::info!("SIGINT: draining"),
            Stop::HandedOver(successor) => tracing::info!(
                successor_pid = successor,
                shutdown_delay = ?delay,
                "handed over: the successor serves on the listeners; this router stops accepting after shutdown_delay, then drains"
            ),
            Stop::Abandoned => tracing::warn!(
                shutdown_delay = ?delay,
                "the predecessor serves on: this router stops accepting after shutdown_delay, drains, and exits 1"
            ),
        }
        self.state.start_draining();
        // A signal after a handover is the operator's first: it is only noted (in the delay,
        // it ends the delay), and one more ends the process at once.
        let mut spare = u8::from(matches!(first, Stop::HandedOver(_)));
        // After a handover too (either way): busy keep-alive connections are told to
        // reconnect, to the router that stays, before the idle ones are closed.
        let delayed = first != Stop::Int && !delay.is_zero();
        if delayed {
            // An impatient operator's second signal skips the rest of the wait.
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                stop = signals.next() => match stop {
                    Stop::HandedOver(_) => tracing::info!("handed over: closing the listeners now"),
                    Stop::Abandoned => tracing::info!("left to the predecessor: closing the listeners now"),
                    Stop::Term | Stop::Int => {
                        spare = spare.saturating_sub(1);
                        tracing::info!("another signal: closing the listeners now");
                    }
                },
            }
        }
        // Before "draining" is said: a signal from then on counts.
        signals.discard_queued();
        if delayed {
            tracing::info!("draining");
        }
        let (drain, jobs) = self.drain.get().cloned().unzip();
        let ending = Ending {
            spare_signals: spare,
            abandoned: Arc::clone(&self.abandoned),
            offered: self.offered.get().cloned(),
        };
        finish_drain(signals, drain, jobs, Arc::clone(&self.state), ending);
        ShutdownSignal::GracefulTerminate
    }
}

/// How long the background jobs' last steps may take once the drain is over: a snapshot's
/// write (seconds at a million bindings) and a Redis command (2 s at most). Waited only as
/// long as they take.
const JOBS_FINISH_WAIT: Duration = Duration::from_secs(10);

/// How long before the end of `shutdown_grace` what it leaves open is logged.
const GRACE_END_NOTICE: Duration = Duration::from_millis(100);

/// How often the drain's end is looked for, and how long it must hold: a connection accepted
/// just before the listener closed is counted once its task first runs, a moment later.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// How a drain ends.
#[derive(Debug)]
struct Ending {
    /// Signals that are only logged before one ends the process at once.
    spare_signals: u8,
    /// Set when the router stops because it left a handover's sockets to its predecessor:
    /// the exit code is then 1.
    abandoned: Arc<std::sync::atomic::AtomicBool>,
    /// The listeners offered to a successor: a handover under way is waited for (bounded)
    /// before the process exits, or the successor would find no one to confirm it.
    offered: Option<Offered>,
}

/// Longest the end of a drain waits for a handover under way to complete.
const HANDOVER_FINISH_WAIT: Duration = Duration::from_secs(30);

/// From the drain on: the process exits as soon as `drain` is over (exit code 0, or 1 when
/// the handover was abandoned), or at once on one more SIGTERM or SIGINT past
/// `ending.spare_signals` (exit code 1); failing both, Pingora ends it after
/// `shutdown_grace`. The queue is already catching, so a signal that comes while this starts
/// is not lost.
fn finish_drain(
    mut signals: StopSignals,
    drain: Option<Drain>,
    jobs: Option<JobsStop>,
    state: Arc<EdgeState>,
    ending: Ending,
) {
    // Whole seconds, as Pingora takes it: the config refuses any other.
    let grace = state.settings.server.shutdown_grace;
    let spawned = std::thread::Builder::new()
        .name("drain".to_owned())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            else {
                return;
            };
            let watched = drain.clone();
            let drained = async {
                let Some(drain) = drain else {
                    return std::future::pending().await;
                };
                // Over at two polls in a row.
                let mut held = 0;
                while held < 2 {
                    tokio::time::sleep(DRAIN_POLL).await;
                    held = if drain.is_over() { held + 1 } else { 0 };
                }
            };
            // Said just before Pingora cuts what is left, which it does without a word (the
            // exit code is 0 either way). Beside the watch below, which it does not hold up.
            rt.spawn(async move {
                tokio::time::sleep(grace.saturating_sub(GRACE_END_NOTICE)).await;
                let open = state.metrics.connections.open.get();
                let tunnels = state.metrics.tunnels.open.get();
                if open > 0 || tunnels > 0 {
                    tracing::warn!(
                        client_connections = open,
                        tunnels,
                        shutdown_grace = ?grace,
                        "shutdown_grace is ending with client connections still open: their \
                         requests and tunnels are cut"
                    );
                }
                // A write is atomic in the store: cut, it is done or not, and its caller
                // is not told which (`tenant history` says).
                let admin = watched.as_ref().map_or(0, Drain::busy_work);
                if admin > 0 {
                    tracing::warn!(
                        admin_api_requests = admin,
                        shutdown_grace = ?grace,
                        "shutdown_grace is ending with admin API requests under way: their \
                         callers get no answer (a write's outcome is in `tenant history`)"
                    );
                }
            });
            // A handover that was under way when the stop began completes: not a signal.
            let mut spare = ending.spare_signals;
            let signal = async {
                loop {
                    match signals.next().await {
                        Stop::HandedOver(_) | Stop::Abandoned => {}
                        Stop::Term | Stop::Int if spare > 0 => {
                            spare -= 1;
                            tracing::info!(
                                "a signal after the handover: already draining (one more ends \
                                 the process at once)"
                            );
                        }
                        Stop::Term | Stop::Int => return,
                    }
                }
            };
            rt.block_on(async {
                tokio::select! {
                    () = signal => {
                        tracing::warn!(
                            "another signal during the drain: exiting now, cutting requests in flight"
                        );
                        std::process::exit(1);
                    }
                    () = drained => {
                        // The background jobs' last steps (a Redis replica's goodbye
                        // heartbeat and snapshot) before the process ends.
                        if let Some(jobs) = jobs {
                            jobs.finish(JOBS_FINISH_WAIT);
                        }
                        if let Some(offered) = &ending.offered {
                            offered.wait_handover_done(HANDOVER_FINISH_WAIT);
                        }
                        let abandoned = ending.abandoned.load(std::sync::atomic::Ordering::SeqCst);
                        tracing::info!("drained: no client connection is left; nexus-edge stopped");
                        std::process::exit(i32::from(abandoned));
                    }
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the drain; it lasts the whole shutdown_grace");
    }
}
