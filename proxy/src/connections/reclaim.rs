//! Room at the cap: an idle client connection is closed to let a new one in.
//!
//! At `[server] max_connections`, connections that wait for a request and have none begun (a
//! keep-alive connection between requests, a new one that has sent nothing yet) would turn
//! every new client away until `keepalive_timeout` or `request_header_timeout` freed them.
//! Closing one of those loses no request: a client may find an idle connection closed at any
//! time and opens another (RFC 9112 §9.3.1); nginx does the same when its connections run out.
//!
//! Each waiting connection queues on one [`Notify`] for the whole listener; the acceptor at
//! the cap wakes the one that has waited longest (`notify_one` wakes in queue order), which
//! closes, and the acceptor takes the place it gives back. A connection whose request begins
//! leaves the queue; one woken just as its request began passes the wake on to the next in
//! line (tokio's `Notified` does so when dropped unconsumed).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pingora_prometheus::prometheus::IntGauge;
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// How long a new connection at the cap waits for the place an idle one gives back. The
/// idle connection's task closes it as soon as it runs: a few hundred microseconds, longer
/// on a machine under load.
const PLACE_WAIT: Duration = Duration::from_millis(200);

/// The listener's queue of idle connections and the wait for the places they give back.
#[derive(Debug)]
pub(super) struct Reclaim {
    /// Idle connections queue here; a wake asks the longest waiting to close.
    close_one: Arc<Notify>,
    /// Connections in the queue, `client_connections_idle` (a wake is sent only when one is
    /// there: with none, `Notify` would keep it for the next connection to go idle).
    queued: IntGauge,
    /// Woken whenever a place is given back while [`Self::waiting`] is non-zero.
    freed: Notify,
    /// New connections waiting for a place.
    waiting: AtomicUsize,
}

/// An idle connection's place in the queue; leaving it (dropping this) is leaving the queue.
pub(super) struct Queued {
    woken: Pin<Box<OwnedNotified>>,
    reclaim: Arc<Reclaim>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued").finish_non_exhaustive()
    }
}

impl Queued {
    /// Joins the queue.
    pub(super) fn join(reclaim: &Arc<Reclaim>) -> Self {
        let mut woken = Box::pin(Arc::clone(&reclaim.close_one).notified_owned());
        // In the queue from now, not from the first poll: the count and the queue agree.
        woken.as_mut().enable();
        reclaim.queued.inc();
        Self {
            woken,
            reclaim: Arc::clone(reclaim),
        }
    }

    /// Ready once this connection is asked to close.
    pub(super) fn poll_asked(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.woken.as_mut().poll(cx)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.reclaim.queued.dec();
    }
}

impl Reclaim {
    /// A queue counted in `idle` (`client_connections_idle`).
    pub(super) fn new(idle: IntGauge) -> Self {
        Self {
            close_one: Arc::default(),
            queued: idle,
            freed: Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// A place was given back: a new connection waiting for one may take it.
    pub(super) fn place_freed(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }

    /// Asks the longest-idle connection to close, and waits (a short while) until `take`
    /// gets a place. `None` when no connection is idle or no place came free in time.
    pub(super) async fn make_room<T>(&self, mut take: impl FnMut() -> Option<T>) -> Option<T> {
        if self.queued.get() <= 0 {
            return None;
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        self.close_one.notify_one();
        let until = Instant::now() + PLACE_WAIT;
        loop {
            // Registered before the try, so a place given back in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(place) = take() {
                return Some(place);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, freed).await.is_err() {
                return take();
            }
        }
    }
}

/// One new connection waiting for a place, counted while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn poll_once(q: &mut Queued) -> Poll<()> {
        q.poll_asked(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn the_longest_idle_is_asked_first_and_a_place_given_back_is_taken() {
        let reclaim = Arc::new(Reclaim::new(IntGauge::new("idle", "idle").unwrap()));
        let mut first = Queued::join(&reclaim);
        let mut second = Queued::join(&reclaim);
        assert_eq!(reclaim.queued.get(), 2);
        let free = AtomicBool::new(false);
        let asked = async {
            reclaim
                .make_room(|| free.load(Ordering::Relaxed).then_some(()))
                .await
        };
        let give_back = async {
            // The first in the queue is asked; the second is not.
            loop {
                if poll_once(&mut first).is_ready() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert!(poll_once(&mut second).is_pending());
            free.store(true, Ordering::Relaxed);
            reclaim.place_freed();
        };
        let (got, ()) = tokio::join!(asked, give_back);
        assert_eq!(got, Some(()));
        drop(first);
        assert_eq!(reclaim.queued.get(), 1);
        assert_eq!(reclaim.waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn with_none_idle_nothing_is_asked_and_no_wake_is_kept() {
        let reclaim = Arc::new(Reclaim::new(IntGauge::new("idle", "idle").unwrap()));
        assert_eq!(reclaim.make_room(|| Some(())).await, None);
        // A connection going idle later is not asked to close by an old wake.
        let mut later = Queued::join(&reclaim);
        assert!(poll_once(&mut later).is_pending());
    }

    #[tokio::test]
    async fn a_wake_to_a_connection_whose_request_began_passes_to_the_next() {
        let reclaim = Arc::new(Reclaim::new(IntGauge::new("idle", "idle").unwrap()));
        let first = Queued::join(&reclaim);
        let mut second = Queued::join(&reclaim);
        let asked = reclaim.make_room(|| None::<()>);
        tokio::pin!(asked);
        // The wake is sent at the first poll; the place never comes (asked gives up).
        assert!(asked
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
            .is_pending());
        drop(first);
        assert!(poll_once(&mut second).is_ready());
    }
}
