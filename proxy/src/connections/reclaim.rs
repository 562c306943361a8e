//! Room at the cap: an idle client connection is closed to let a new one in.
//!
//! At `[server] max_connections`, connections that wait for a request and have none begun (a
//! keep-alive connection between requests, a new one that has sent nothing yet) would turn
//! every new client away until `keepalive_timeout` or `request_header_timeout` freed them.
//! Closing one of those loses no request: a client may find an idle connection closed at any
//! time and opens another (RFC 9112 §9.3.1); nginx does the same when its connections run out.
//!
//! Each waiting connection queues on one [`Notify`] for the whole listener; the acceptor at
//! the cap counts an ask and wakes the one that has waited longest (`notify_one` wakes in
//! queue order), which closes if it can take an ask, and the acceptor takes the place it
//! gives back. A connection whose request begins leaves the queue; one woken just as its
//! request began passes the wake on to the next in line (tokio's `Notified` does so when
//! dropped unconsumed). A wake alone closes nothing: `Notify` keeps one for later when nobody
//! is in line, and a wake passed on may reach a connection that went idle long after the
//! acceptor gave up; without an ask to take, such a connection goes back in line. Asks never
//! outnumber the acceptors still waiting, so none is left over once they are gone.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The new connections waiting for a place, and the closes asked for and not yet made
    /// (never more than those waiting), in one word ([`Demand`]) so that an acceptor that
    /// stops waiting cuts the asks in the same step, not over another's ask just made.
    demand: AtomicU64,
    /// Woken whenever a place is given back while connections wait for one.
    freed: Notify,
}

/// [`Reclaim::demand`], unpacked: acceptors waiting in the high half, asks in the low one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Demand {
    waiting: u64,
    asks: u64,
}

impl Demand {
    fn of(word: u64) -> Self {
        Self {
            waiting: word >> 32,
            asks: word & 0xffff_ffff,
        }
    }

    fn word(self) -> u64 {
        (self.waiting << 32) | self.asks
    }
}

/// A connection's place in the queue, while it has one: made once per connection, then
/// joined and left at each idle wait (a busy keep-alive connection does both for every
/// request, so neither allocates). Dropping it leaves the queue.
pub(super) struct Queued {
    woken: Pin<Box<OwnedNotified>>,
    reclaim: Arc<Reclaim>,
    joined: bool,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued")
            .field("joined", &self.joined)
            .finish_non_exhaustive()
    }
}

impl Queued {
    /// A place for a connection of `reclaim`'s listener, not in the queue yet.
    pub(super) fn new(reclaim: &Arc<Reclaim>) -> Self {
        Self {
            woken: Box::pin(Arc::clone(&reclaim.close_one).notified_owned()),
            reclaim: Arc::clone(reclaim),
            joined: false,
        }
    }

    /// Joins the queue, at its back (nothing when in it already).
    pub(super) fn join(&mut self) {
        if !self.joined {
            // In the queue from now, not from the first poll: the count and the queue agree.
            self.woken.as_mut().enable();
            self.reclaim.queued.inc();
            self.joined = true;
        }
    }

    /// Leaves the queue (nothing when not in it).
    pub(super) fn leave(&mut self) {
        if self.joined {
            self.fresh_wait();
            self.uncount();
        }
    }

    /// No longer counted idle.
    fn uncount(&mut self) {
        self.reclaim.queued.dec();
        self.joined = false;
    }

    /// A wait not in the queue yet, for the next join (the one it replaces leaves the queue,
    /// passing on a wake it had and did not take).
    fn fresh_wait(&mut self) {
        self.woken
            .set(Arc::clone(&self.reclaim.close_one).notified_owned());
    }

    /// In the queue (joining it if need be), ready once this connection is woken and takes an
    /// ask: it must close. Woken with no ask to take (a wake kept or passed on after the asks
    /// were met), it joins again, at the back.
    pub(super) fn poll_asked(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.join();
        loop {
            if self.woken.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.reclaim.take_ask() {
                // Closing now: no longer one an acceptor may ask (it would ask for a second
                // close while this one's place is on its way).
                self.uncount();
                return Poll::Ready(());
            }
            // `Notify` keeps at most one wake: the next poll of a fresh one waits.
            self.fresh_wait();
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if self.joined {
            self.uncount();
        }
    }
}

impl Reclaim {
    /// A queue counted in `idle` (`client_connections_idle`).
    pub(super) fn new(idle: IntGauge) -> Self {
        Self {
            close_one: Arc::default(),
            queued: idle,
            demand: AtomicU64::new(0),
            freed: Notify::new(),
        }
    }

    /// Changes the demand as `change` says, in one step; whether it did.
    fn update(&self, change: impl Fn(Demand) -> Option<Demand>) -> bool {
        self.demand
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                change(Demand::of(w)).map(Demand::word)
            })
            .is_ok()
    }

    fn demand(&self) -> Demand {
        Demand::of(self.demand.load(Ordering::Acquire))
    }

    /// A place was given back: a new connection waiting for one may take it.
    pub(super) fn place_freed(&self) {
        if self.demand().waiting > 0 {
            self.freed.notify_waiters();
        }
    }

    /// Takes one ask, if one is out.
    fn take_ask(&self) -> bool {
        self.update(|d| {
            Some(Demand {
                asks: d.asks.checked_sub(1)?,
                ..d
            })
        })
    }

    /// Asks for one more close, when more connections are queued than asks are out and asks
    /// stay within the acceptors waiting, and wakes the longest-idle connection for it.
    fn ask(&self) -> bool {
        let queued = u64::try_from(self.queued.get()).unwrap_or(0);
        let asked = self.update(|d| {
            (d.asks < queued.min(d.waiting)).then_some(Demand {
                asks: d.asks + 1,
                ..d
            })
        });
        if asked {
            self.close_one.notify_one();
        }
        asked
    }

    /// Asks the longest-idle connection to close, and waits (a short while) until `take`
    /// gets a place. `None` when no connection is idle (none queued beyond those already
    /// asked) or no place came free in time. A place given back that another new connection
    /// took first is asked for again, while connections are idle.
    pub(super) async fn make_room<T>(&self, mut take: impl FnMut() -> Option<T>) -> Option<T> {
        let _waiting = Waiting::enter(self);
        if !self.ask() {
            return None;
        }
        let until = Instant::now() + PLACE_WAIT;
        let mut freed_for_another = false;
        loop {
            // Registered before the try, so a place given back in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(place) = take() {
                return Some(place);
            }
            if freed_for_another {
                self.ask();
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, freed).await.is_err() {
                return take();
            }
            freed_for_another = true;
        }
    }
}

/// One new connection waiting for a place, counted while it waits. When it stops waiting
/// (a place taken, or given up), the asks out are cut to the acceptors still waiting: its own
/// is not left for a connection to take later, when no one needs the place.
struct Waiting<'a>(&'a Reclaim);

impl<'a> Waiting<'a> {
    fn enter(reclaim: &'a Reclaim) -> Self {
        reclaim.update(|d| {
            Some(Demand {
                waiting: d.waiting + 1,
                ..d
            })
        });
        Self(reclaim)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.update(|d| {
            let waiting = d.waiting.saturating_sub(1);
            Some(Demand {
                waiting,
                asks: d.asks.min(waiting),
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A connection's place, in the queue.
    fn joined(reclaim: &Arc<Reclaim>) -> Queued {
        let mut q = Queued::new(reclaim);
        q.join();
        q
    }

    fn poll_once(q: &mut Queued) -> Poll<()> {
        q.poll_asked(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn the_longest_idle_is_asked_first_and_a_place_given_back_is_taken() {
        let reclaim = Arc::new(Reclaim::new(IntGauge::new("idle", "idle").unwrap()));
        let mut first = joined(&reclaim);
        let mut second = joined(&reclaim);
        assert_eq!(reclaim.queued.get(), 2);
        let free = AtomicBool::new(false);
        let asked = async {
            reclaim
                .make_room(|| free.load(Ordering::Relaxed).then_some(()))
                .await
        };
        let give_back = async {
            // The first in the queue is asked; the second is not.
            let asked_first = async {
                while poll_once(&mut first).is_pending() {
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), asked_first)
                .await
                .expect("the first asked");
            assert!(poll_once(&mut second).is_pending());
            free.store(true, Ordering::Relaxed);
            reclaim.place_freed();
        };
        let (got, ()) = tokio::join!(asked, give_back);
        assert_eq!(got, Some(()));
        drop(first);
        assert_eq!(reclaim.queued.get(), 1);
        assert_eq!(reclaim.demand().waiting, 0);
    }

    #[tokio::test]
    async fn with_none_idle_nothing_is_asked_and_no_wake_is_kept() {
        let reclaim = Arc::new(Reclaim::new(IntGauge::new("idle", "idle").unwrap()));
        assert_eq!(reclaim.make_room(|| Some(())).await, None);
        // A connection going idle later is not asked to close by an old wake.
        let mut later = joined(&reclaim);
        assert!(poll_once(&mut later).is_pending());
    }

    #[tokio::test]
    async fn a_wake_to_a_connection_whose_request_began_passes_to_the_next() {
        let reclaim = Arc::new(Reclaim::new(IntGauge::new("idle", "idle").unwrap()));
        let first = joined(&reclaim);
        let mut second = joined(&reclaim);
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

    /// Polls `make_room` (which never gets a place) once: its ask is out, its wake sent.
    fn ask_once<'r>(reclaim: &'r Reclaim) -> Pin<Box<impl Future<Output = Option<()>> + use<'r>>> {
        let mut asked = Box::pin(reclaim.make_room(|| None::<()>));
        let polled = asked
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()));
        assert!(polled.is_pending());
        asked
    }

    #[tokio::test]
    async fn two_acceptors_with_one_idle_connection_ask_it_once() {
        let reclaim = Arc::new(Reclaim::new(IntGauge::new("idle", "idle").unwrap()));
        let mut idle = joined(&reclaim);
        let first = ask_once(&reclaim);
        // No one else to ask: refused at once, and no wake sent.
        assert_eq!(reclaim.make_room(|| None::<()>).await, None);
        assert!(poll_once(&mut idle).is_ready());
        drop((idle, first));
        // Nothing left over for a connection that goes idle later.
        let mut later = joined(&reclaim);
        assert!(poll_once(&mut later).is_pending());
        assert_eq!(reclaim.demand().asks, 0);
    }

    #[tokio::test]
    async fn a_connection_that_takes_an_ask_is_no_longer_counted_idle() {
        // Counted while its close was on its way, it made a second acceptor's ask close a
        // second connection for one place.
        let reclaim = Arc::new(Reclaim::new(IntGauge::new("idle", "idle").unwrap()));
        let mut asked = joined(&reclaim);
        let _other = joined(&reclaim);
        let _acceptor = ask_once(&reclaim);
        assert!(poll_once(&mut asked).is_ready());
        assert_eq!(reclaim.queued.get(), 1);
        drop(asked);
        assert_eq!(reclaim.queued.get(), 1);
        assert_eq!(
            reclaim.demand(),
            Demand {
                waiting: 1,
                asks: 0
            }
        );
    }

    #[tokio::test]
    async fn a_wake_left_when_the_acceptor_gave_up_closes_no_later_connection() {
        // The only idle connection's request began just as it was woken: its wake went to
        // no one, and `Notify` kept it. The acceptor then gave up.
        let reclaim = Arc::new(Reclaim::new(IntGauge::new("idle", "idle").unwrap()));
        let began = joined(&reclaim);
        let gave_up = ask_once(&reclaim);
        drop(began);
        drop(gave_up);
        // A connection that goes idle later takes the kept wake, finds no ask, and waits on.
        let mut later = joined(&reclaim);
        assert!(poll_once(&mut later).is_pending());
        assert!(poll_once(&mut later).is_pending());
        // A new ask still reaches it.
        let _asked = ask_once(&reclaim);
        assert!(poll_once(&mut later).is_ready());
    }
}
