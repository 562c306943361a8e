//! SIGTERM and SIGINT: when the router stops, and how fast.
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
//! - One more signal once the drain has begun ends the process at once (exit code 1): Pingora
//!   waits out `shutdown_grace` with the signals caught, so nothing else could hurry it.
//!   Signals that came before the drain began (say, two while the router was starting) are
//!   not counted toward it.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::mpsc;

use crate::state::EdgeState;

/// Which signal came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Term,
    Int,
}

/// The stop signals, in the order they came.
struct StopSignals {
    queue: mpsc::UnboundedReceiver<Stop>,
}

impl StopSignals {
    /// Catches SIGTERM and SIGINT from now on. Returns once both are caught.
    fn install() -> std::io::Result<Self> {
        let (tx, queue) = mpsc::unbounded_channel();
        let (caught, installed) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("signals".to_owned())
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
                    use tokio::signal::unix::{signal, SignalKind};
                    let (mut term, mut int) = match (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                    ) {
                        (Ok(term), Ok(int)) => (term, int),
                        (Err(e), _) | (_, Err(e)) => {
                            let _ = caught.send(Err(e));
                            return;
                        }
                    };
                    let _ = caught.send(Ok(()));
                    loop {
                        let stop = tokio::select! {
                            _ = term.recv() => Stop::Term,
                            _ = int.recv() => Stop::Int,
                        };
                        if tx.send(stop).is_err() {
                            return;
                        }
                    }
                });
            })?;
        match installed.recv() {
            Ok(Ok(())) => Ok(Self { queue }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("the signal thread ended")),
        }
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

/// Pingora's stop signal watch: turns SIGTERM and SIGINT into its graceful shutdown, after
/// `[server] shutdown_delay` for SIGTERM.
pub struct Signals {
    state: Arc<EdgeState>,
    /// Taken by the one call of `recv`, then by the watch for a signal during the drain.
    caught: Mutex<Option<StopSignals>>,
}

impl Signals {
    /// Catches the stop signals from now on: call it before the listeners are bound.
    pub fn catch(state: Arc<EdgeState>) -> std::io::Result<Self> {
        Ok(Self {
            state,
            caught: Mutex::new(Some(StopSignals::install()?)),
        })
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
        match first {
            Stop::Term => {
                tracing::info!(shutdown_delay = ?delay, "SIGTERM: not ready; the listeners close after shutdown_delay")
            }
            Stop::Int => tracing::info!("SIGINT: draining"),
        }
        self.state.start_draining();
        if first == Stop::Term && !delay.is_zero() {
            // An impatient operator's second signal skips the rest of the wait.
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = signals.next() => tracing::info!("another signal: closing the listeners now"),
            }
            tracing::info!("draining");
        }
        signals.discard_queued();
        exit_on_next_signal(signals);
        ShutdownSignal::GracefulTerminate
    }
}

/// From the drain on, one more SIGTERM or SIGINT ends the process at once (exit code 1). The
/// queue is already catching, so a signal that comes while this starts is not lost.
fn exit_on_next_signal(mut signals: StopSignals) {
    let spawned = std::thread::Builder::new()
        .name("exit on signal".to_owned())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
                return;
            };
            rt.block_on(signals.next());
            tracing::warn!(
                "another signal during the drain: exiting now, cutting requests in flight"
            );
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch for a signal to cut the drain short");
    }
}
