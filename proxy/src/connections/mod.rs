//! Client connections: a cap on how many are open, a deadline for each request header, and
//! the keep-alive bound between requests.
//!
//! Pingora bounds neither a whole request header nor the number of connections. A client that
//! sends one header byte every few seconds ("slowloris") holds a connection, a task and its
//! buffers for as long as it likes, and enough such clients use up the file descriptors every
//! other client needs.
//!
//! [`Guarded`] wraps the proxy application: it admits at most `[server] max_connections` at
//! once (the next is closed unanswered, as nginx does when its connections run out, unless a
//! connection waiting for a request with none begun is closed to make room: [`reclaim`]) and hands
//! the proxy each admitted connection inside a [`HeaderDeadline`] stream, which ends a request
//! header that is not complete within `[server] request_header_timeout`, or within
//! `[server] max_request_header_bytes`. The same stream closes a keep-alive connection left
//! idle for `[server] keepalive_timeout` (Pingora's own bound would arm a timer for every wait
//! between requests: see [`bound_idle_client`]).
//!
//! Where a header ends only the HTTP parser knows, so the proxy tells the stream: [`header_read`]
//! from its first hook after Pingora parsed a header, [`request_done`] from its last one. For
//! a chunked body it also says [`chunked_body_begins`]: the stream then scans the body's
//! framing lines as they arrive ([`chunks`]), which Pingora's parser takes too leniently.

mod chunks;
mod deadline;
mod forward;
mod reclaim;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::log_budget::LogBudgets;
use crate::metrics::ConnectionMetrics;

pub use chunks::BadChunkLine;
pub use deadline::{
    bound_client_writes, bound_idle_client, chunk_refused, chunked_body_begins, header_read,
    request_done, HeaderDeadline, HeaderTooLarge,
};
pub(crate) use forward::forward_stream_traits;

/// The bounds [`Guarded`] enforces (from `[server]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Client connections open at once.
    pub max_connections: usize,
    /// Time for a whole request header, from its first byte (from the accept on a new
    /// connection).
    pub request_header_timeout: Duration,
    /// Longest request header, request line and fields together.
    pub max_request_header_bytes: usize,
    /// Time a keep-alive connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// Time a write to the client may make no progress (the client takes no bytes).
    pub client_write_timeout: Duration,
    /// The longest a shutdown's drain lasts: the wait for headers in progress takes at most
    /// half of it, so a request it lets in has the other half to be answered.
    pub shutdown_grace: Duration,
}

impl Limits {
    /// The limits `[server]` configures.
    pub fn from_settings(server: &nexus_config::ServerSettings) -> Self {
        Self {
            max_connections: server.max_connections,
            request_header_timeout: server.request_header_timeout,
            max_request_header_bytes: server.max_request_header_bytes,
            keepalive_timeout: server.keepalive_timeout,
            client_write_timeout: server.client_write_timeout,
            shutdown_grace: server.shutdown_grace,
        }
    }
}

/// Descriptors an admin API connection may hold: its own, its store connection, and that
/// of a write it began, which may outlive it (as many writes as connections at most).
const ADMIN_DESCRIPTORS: u64 = 3;

/// Descriptors kept beside the connections: listeners, the binding store's connections,
/// files being read, the log.
const RESERVED_DESCRIPTORS: u64 = 64;

/// The connections a router holds open at most, each a descriptor (two for a client: its own
/// and its instance connection's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connections {
    /// Client connections (`[server] max_connections`).
    pub clients: usize,
    /// Idle instance connections kept for reuse (`[upstream] idle_connections`).
    pub idle: usize,
    /// Ops listener connections ([`crate::ops::MAX_OPS_CONNECTIONS`], 0 without one).
    pub ops: usize,
    /// Admin API connections ([`crate::admin_api::MAX_ADMIN_CONNECTIONS`], 0 without one),
    /// [`ADMIN_DESCRIPTORS`] each.
    pub admin: usize,
}

impl Connections {
    /// What a router holding these may need: a descriptor for each client and one for the
    /// instance connection serving it, the idle instance connections, the ops connections,
    /// the admin API's, and the reserve.
    fn descriptors(&self) -> u64 {
        let wanted = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        wanted(self.clients)
            .saturating_mul(2)
            .saturating_add(wanted(self.idle))
            .saturating_add(wanted(self.ops))
            .saturating_add(wanted(self.admin).saturating_mul(ADMIN_DESCRIPTORS))
            .saturating_add(RESERVED_DESCRIPTORS)
    }

    /// The connections of `self` that fit in `limit` descriptors. Past the limit, a
    /// connection is not refused or made room for: its accept fails, and it waits in the
    /// kernel's queue, while the connections already in keep every descriptor, the key and
    /// bindings files' reads included. So each is cut down to what fits, the reserve kept:
    /// an eighth of what is left at most for the ops listener (at least 8, so probes still
    /// get in), a third of what is left after that for idle instance connections, the rest
    /// two descriptors a client (its own, and its instance connection's); the admin API's
    /// take a sixteenth at most (at least one connection) before the ops listener's. Ops connections
    /// were once left out of the count: 27 idle ones took the last descriptors of a router
    /// whose clients were at their cap.
    ///
    /// Pingora's pool takes its size per worker thread (one pool for the router, of that
    /// size times the threads): the idle connections are cut to a multiple of `threads`,
    /// none when fewer than one a thread fit. (The threads share one event loop, so they
    /// need no reserve of their own: a router holds the same 37 descriptors at rest with 1
    /// thread or 8.)
    pub fn fit(self, threads: usize, limit: u64) -> Self {
        if limit >= self.descriptors() {
            return self;
        }
        let wanted = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let narrow = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let threads = wanted(threads.max(1));
        let budget = limit.saturating_sub(RESERVED_DESCRIPTORS);
        let admin = wanted(self.admin).min((budget / 16 / ADMIN_DESCRIPTORS).max(1));
        let budget = budget.saturating_sub(admin * ADMIN_DESCRIPTORS);
        let ops = wanted(self.ops).min((budget / 8).max(8));
        let budget = budget.saturating_sub(ops);
        let idle = wanted(self.idle).min(budget / 3);
        let idle = idle - idle % threads;
        let clients = (budget.saturating_sub(idle) / 2).clamp(1, wanted(self.clients));
        Self {
            clients: narrow(clients),
            idle: narrow(idle),
            ops: narrow(ops),
            admin: narrow(admin),
        }
    }
}

/// The open-file limit at start, against what `max_connections` may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the process was started with.
    pub before: u64,
    /// The soft limit now.
    pub now: u64,
    /// What the connections wanted may need (see [`Connections::fit`]).
    pub needed: u64,
}

/// Raises the process's soft open-file limit as far as `wanted` connections need and the hard
/// limit allows. Shells and service managers commonly start processes at 1,024, which a
/// proxy runs out of long before any other resource; the hard limit is the operator's word.
pub fn raise_open_file_limit(wanted: Connections) -> nix::Result<OpenFiles> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let needed = wanted.descriptors();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = soft.max(needed.min(hard));
    if target > soft {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    }
    Ok(OpenFiles {
        before: soft,
        now: target,
        needed,
    })
}

/// What every connection of one listener shares.
#[derive(Debug)]
struct Shared {
    limits: Limits,
    open: AtomicUsize,
    /// The idle connections that may be closed to make room at the cap.
    reclaim: Arc<reclaim::Reclaim>,
    metrics: ConnectionMetrics,
    /// The allowances of the lines about headers refused before the proxy saw a request.
    log_budgets: Arc<LogBudgets>,
    /// Unix second of the last "connections full" warning: one per [`FULL_WARNING_EVERY`],
    /// however many connections a flood brings.
    last_full_warning: AtomicU64,
    /// The listener has stopped accepting and the application has let go of its idle
    /// keep-alive connections: from now on the open count only falls.
    closed: AtomicBool,
    /// The shutdown's wait for headers in progress is over: one still in progress is
    /// answered 503 as the application lets go of it (see [`Guarded::cleanup`]).
    cutting: AtomicBool,
    /// TLS handshakes under way (their client has sent its hello): a shutdown waits for them
    /// as for headers in progress, since a request follows.
    handshaking: AtomicUsize,
}

const FULL_WARNING_EVERY: u64 = 10;

/// One in a count, for as long as this lives (however the future holding it ends).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A place among the open connections, given back when the connection ends (however it ends).
struct Slot<'a>(&'a Shared);

impl Shared {
    fn take_slot(&self) -> Option<Slot<'_>> {
        // Compare-and-swap, not add-then-undo: a refused attempt's brief increment would
        // refuse a connection arriving just as another closed.
        let max = self.limits.max_connections;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        self.metrics.open.inc();
        Some(Slot(self))
    }

    fn refuse(&self) {
        self.metrics.refused.inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_full_warning.load(Ordering::Relaxed);
        if now >= last + FULL_WARNING_EVERY
            && self
                .last_full_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                max_connections = self.limits.max_connections,
                "client connection closed unanswered: max_connections are open \
                 (counted by client_connections_refused_total)"
            );
        }
    }

    /// Waits, until `deadline`, for a new connection's first byte (not taken: it is peeked),
    /// false when none came or the connection was asked to make room. Until then it has begun
    /// nothing, so it may be closed to make room at the cap like a new plain connection that
    /// has sent nothing ([`reclaim`]): an HTTPS client that opens connections and never sends
    /// its hello would otherwise hold places no newcomer could have.
    /// A shutdown's drain lets it go too, as it lets go of plain connections with no
    /// request begun.
    async fn first_byte(
        &self,
        stream: &mut Stream,
        deadline: tokio::time::Instant,
        shutdown: &ShutdownWatch,
    ) -> bool {
        let mut shutdown = shutdown.clone();
        let mut queued = reclaim::Queued::new(&self.reclaim);
        let asked = std::future::poll_fn(|cx| queued.poll_asked(cx));
        let mut byte = [0u8; 1];
        let shut = tokio::select! {
            peeked = stream.try_peek(&mut byte) => return peeked.is_ok(),
            () = asked => {
                self.metrics.reclaimed.inc();
                return false;
            }
            () = tokio::time::sleep_until(deadline) => return false,
            _ = shutdown.wait_for(|down| *down) => true,
        };
        // Accepted as the listener closed: its hello may be on its way (see
        // `ARRIVAL_GRACE`).
        let grace = (tokio::time::Instant::now() + ARRIVAL_GRACE).min(deadline);
        shut && tokio::time::timeout_at(grace, stream.try_peek(&mut byte))
            .await
            .is_ok_and(|peeked| peeked.is_ok())
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.open.dec();
        self.0.reclaim.place_freed();
    }
}

/// A [`ServerApp`] (the proxy) behind the connection cap and the header deadline, and for
/// the HTTPS listener's connections the TLS handshake.
pub struct Guarded<A> {
    app: Arc<A>,
    shared: Arc<Shared>,
    tls: Option<crate::https::TlsEndpoint>,
}

impl<A> Guarded<A> {
    /// Wraps `app`; `metrics` count what the limits turn away, and a header they refuse is
    /// logged within `log_budgets`.
    pub fn new(
        app: A,
        limits: Limits,
        metrics: ConnectionMetrics,
        log_budgets: Arc<LogBudgets>,
    ) -> Self {
        metrics
            .limit
            .set(crate::metrics::gauge_value(limits.max_connections));
        Self {
            app: Arc::new(app),
            shared: Arc::new(Shared {
                limits,
                open: AtomicUsize::new(0),
                reclaim: Arc::new(reclaim::Reclaim::new(metrics.idle.clone())),
                metrics,
                log_budgets,
                last_full_warning: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                cutting: AtomicBool::new(false),
                handshaking: AtomicUsize::new(0),
            }),
            tls: None,
        }
    }

    /// Serves the connections `tls`'s listener accepts over TLS: each takes its place among
    /// the open connections first, then has `request_header_timeout` for its handshake.
    #[must_use]
    pub fn with_tls(mut self, tls: crate::https::TlsEndpoint) -> Self {
        self.tls = Some(tls);
        self
    }

    /// A view of the connections for the shutdown: see [`Drain`].
    pub fn drain(&self) -> Drain {
        Drain {
            shared: Arc::clone(&self.shared),
            busy: Vec::new(),
        }
    }
}

/// How long, once the listener has closed, a connection accepted just before is given to
/// begin its request (or its TLS hello) before the drain lets go of connections that sent
/// nothing. A client sends as soon as it has connected, so its first bytes come within a
/// round trip; without this wait, one accepted in the listener's last moments (an upgrade's
/// old router closing its copy while the new one accepts, a SIGTERM without
/// `shutdown_delay`) was closed under it.
const ARRIVAL_GRACE: Duration = Duration::from_millis(250);

/// Whether a shutdown's drain is over: the listener closed and every connection it admitted
/// is gone (a connection idle between requests is let go at the close; one with a request in
/// flight ends once that response is out, since a draining router closes every connection
/// after its response), and no other work it was told to wait for is left ([`Drain::and`]).
/// Pingora itself waits out the whole grace period whatever is left.
#[derive(Clone)]
pub struct Drain {
    shared: Arc<Shared>,
    /// Other work under way, each a count that reads 0 once it is done.
    busy: Vec<Arc<std::sync::atomic::AtomicUsize>>,
}

impl Drain {
    /// The drain, also waiting for `busy` to read 0 (the admin API's requests).
    #[must_use]
    pub fn and(mut self, busy: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        self.busy.push(busy);
        self
    }

    /// The other work still under way ([`Drain::and`]): the admin API's requests.
    pub fn busy_work(&self) -> usize {
        self.busy.iter().map(|b| b.load(Ordering::Acquire)).sum()
    }

    /// True once the listener has closed and no connection is open, nor other work busy.
    pub fn is_over(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
            && self.shared.open.load(Ordering::Acquire) == 0
            && self.busy.iter().all(|b| b.load(Ordering::Acquire) == 0)
    }
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .field("open", &self.shared.open.load(Ordering::Relaxed))
            .finish()
    }
}

#[async_trait]
impl<A> ServerApp for Guarded<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let slot = match self.shared.take_slot() {
            Some(slot) => Some(slot),
            None => {
                let shared = &self.shared;
                shared.reclaim.make_room(|| shared.take_slot()).await
            }
        };
        let Some(_slot) = slot else {
            self.shared.refuse();
            // Dropping the stream closes the connection.
            return None;
        };
        let stream = match &self.tls {
            Some(tls) if tls.accepted(&stream) => {
                let deadline =
                    tokio::time::Instant::now() + self.shared.limits.request_header_timeout;
                let mut stream = stream;
                if !self
                    .shared
                    .first_byte(&mut stream, deadline, shutdown)
                    .await
                {
                    tls.failed.inc();
                    return None;
                }
                let _counted = Counted::new(&self.shared.handshaking);
                tls.handshake(stream, deadline).await?
            }
            _ => stream,
        };
        // The HTTP application keeps a connection for all its requests and returns nothing;
        // a stream it did hand back is served here again, so the slot is held throughout.
        let mut next = Some(HeaderDeadline::wrap(stream, &self.shared));
        while let Some(stream) = next {
            next = self.app.process_new(stream, shutdown).await;
        }
        None
    }

    /// Pingora calls this once the listener has stopped accepting.
    ///
    /// The proxy drops every connection waiting for a request here, one whose header has
    /// begun to arrive as well as an idle one. So the headers in progress (an idle connection
    /// may begin one meanwhile) are first given until their deadline to end, and at most half
    /// of `shutdown_grace`: Pingora's grace runs from now, and a request let in must have time
    /// to be answered. One still in progress then is answered 503 (the instance never saw it,
    /// so the client may send it again elsewhere), not cut off mid-request.
    async fn cleanup(&self) {
        let limits = &self.shared.limits;
        let gauge = &self.shared.metrics.headers_in_progress;
        let wait = limits.request_header_timeout.min(limits.shutdown_grace / 2);
        let now = std::time::Instant::now();
        let until = now + wait;
        // Connections accepted just before the listener closed have their first request (or
        // hello) on its way: given ARRIVAL_GRACE to begin it, they are served, not cut.
        let arrivals = now + ARRIVAL_GRACE.min(wait);
        let handshaking = &self.shared.handshaking;
        while (gauge.get() > 0
            || handshaking.load(Ordering::Acquire) > 0
            || std::time::Instant::now() < arrivals)
            && std::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shared.cutting.store(true, Ordering::Release);
        // Wakes every connection waiting for a request: one in a header answers 503 then.
        self.app.cleanup().await;
        self.shared.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two connections at most, short bounds, `client_write_timeout` as given.
    fn limits(client_write_timeout: Duration) -> Limits {
        Limits {
            max_connections: 2,
            request_header_timeout: Duration::from_secs(1),
            max_request_header_bytes: 65536,
            keepalive_timeout: Duration::from_secs(60),
            client_write_timeout,
            shutdown_grace: Duration::from_secs(10),
        }
    }

    /// [`Guarded`] around nothing, with `limits`.
    fn guarded(limits: Limits, metrics: ConnectionMetrics) -> Guarded<()> {
        let skipped =
            pingora_prometheus::prometheus::IntCounter::new("skipped", "skipped").unwrap();
        Guarded::new((), limits, metrics, Arc::new(LogBudgets::new(100, skipped)))
    }

    #[test]
    fn slots_are_capped_and_given_back() {
        let metrics = crate::metrics::Metrics::new().unwrap().connections;
        let guarded = guarded(limits(Duration::from_secs(30)), metrics.clone());
        let shared = &guarded.shared;
        let a = shared.take_slot().unwrap();
        let b = shared.take_slot().unwrap();
        assert!(shared.take_slot().is_none());
        assert_eq!(metrics.open.get(), 2);
        assert_eq!(metrics.limit.get(), 2);
        drop(a);
        assert_eq!(metrics.open.get(), 1);
        let _c = shared.take_slot().unwrap();
        drop(b);
        assert_eq!(shared.open.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_write_the_client_takes_nothing_of_fails_after_the_bound() {
        use tokio::io::AsyncWriteExt;
        let metrics = crate::metrics::Metrics::new().unwrap().connections;
        let guarded = guarded(limits(Duration::from_millis(200)), metrics);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // The client: connected, and never reads.
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: pingora::protocols::Stream =
            Box::new(pingora::protocols::l4::stream::Stream::from(server));
        let mut stream = HeaderDeadline::wrap(stream, &guarded.shared);
        let chunk = vec![0u8; 64 * 1024];
        let outcome = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Err(e) = stream.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await
        .expect("a write fails once the buffers are full and the bound has passed");
        assert_eq!(outcome.kind(), std::io::ErrorKind::TimedOut, "{outcome}");
        assert!(
            outcome.to_string().contains("client_write_timeout"),
            "{outcome}"
        );
    }

    /// `(clients, idle, ops)` as [`Connections`].
    fn conns(clients: usize, idle: usize, ops: usize) -> Connections {
        Connections {
            clients,
            idle,
            ops,
            admin: 0,
        }
    }

    #[test]
    fn what_does_not_fit_in_the_open_file_limit_is_cut_down() {
        // Fits: as wanted.
        assert_eq!(conns(1_000, 500, 0).fit(1, 2_564), conns(1_000, 500, 0));
        assert_eq!(
            conns(1_000, 500, 256).fit(4, 100_000),
            conns(1_000, 500, 256)
        );
        // 128 descriptors: 64 kept in reserve, a third of the rest for idle instance
        // connections, two a client.
        assert_eq!(conns(10_000, 4_096, 0).fit(1, 128), conns(21, 21, 0));
        assert_eq!(conns(10_000, 0, 0).fit(1, 128), conns(32, 0, 0));
        // Never less than one client, never more than wanted.
        assert_eq!(conns(10_000, 4_096, 0).fit(1, 10), conns(1, 0, 0));
        assert_eq!(conns(5, 4_096, 0).fit(1, 200), conns(5, 45, 0));
    }

    /// The pool's size is set per thread: the idle connections cut are what it will really
    /// hold, and the clients are counted after them.
    #[test]
    fn the_idle_connections_cut_are_a_multiple_of_the_threads() {
        // A third of 64 is 21: 20 for 4 threads, 5 each.
        assert_eq!(conns(10_000, 4_096, 0).fit(4, 128), conns(22, 20, 0));
        // Fewer than one a thread would fit: none are kept, and never more than the limit.
        assert_eq!(conns(10_000, 4_096, 0).fit(16, 100), conns(18, 0, 0));
        assert_eq!(conns(10_000, 4_096, 0).fit(64, 100), conns(18, 0, 0));
        assert_eq!(
            conns(10_000, 4_096, 256).fit(1_024, 1_024),
            conns(420, 0, 120)
        );
        // None wanted, none kept.
        assert_eq!(conns(10_000, 0, 0).fit(8, 128), conns(32, 0, 0));
    }

    /// The ops listener's connections are counted, and cut to an eighth of what the reserve
    /// leaves (8 at least): uncounted, idle ones took the descriptors the clients' cap
    /// counted on.
    #[test]
    fn the_ops_connections_are_counted_and_cut_with_the_rest() {
        assert_eq!(conns(10_000, 4_096, 256).fit(2, 128), conns(19, 18, 8));
        // 256: everything adds up to the limit.
        assert_eq!(conns(10_000, 4_096, 256).fit(2, 256), conns(56, 56, 24));
        // The defaults under a hard limit of 20,000: only the clients are cut.
        assert_eq!(
            conns(10_000, 4_096, 256).fit(2, 20_000),
            conns(7_792, 4_096, 256)
        );
        assert_eq!(conns(1_000, 500, 256).descriptors(), 2_820);
    }

    /// The admin API's connections are counted too (three descriptors each), cut to a
    /// sixteenth of what the reserve leaves (one connection at least) before the ops
    /// listener's share is taken.
    #[test]
    fn the_admin_api_connections_are_counted_and_cut_first() {
        let with_admin = |clients, idle, ops, admin| Connections {
            admin,
            ..conns(clients, idle, ops)
        };
        let wanted = with_admin(10_000, 4_096, 256, 64);
        assert_eq!(wanted.descriptors(), 20_000 + 4_096 + 256 + 3 * 64 + 64);
        assert_eq!(wanted.fit(2, 20_000), with_admin(7_696, 4_096, 256, 64));
        // 128: everything fits (one descriptor left over: a client takes two).
        let tight = wanted.fit(2, 128);
        assert_eq!(tight, with_admin(18, 16, 8, 1));
        assert_eq!(tight.descriptors(), 127);
        assert_eq!(with_admin(10, 0, 0, 64).fit(1, 64), with_admin(1, 0, 0, 1));
    }

    #[test]
    fn the_open_file_limit_is_raised_as_far_as_needed_and_allowed() {
        use nix::sys::resource::{getrlimit, Resource};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let files = raise_open_file_limit(conns(1_000, 500, 0)).unwrap();
        assert_eq!(files.needed, 2_564);
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, files.now);
        assert!(
            soft >= files.before.max(hard.min(files.needed)),
            "{files:?}"
        );
        // Never lowered.
        let again = raise_open_file_limit(conns(1, 0, 0)).unwrap();
        assert_eq!(again.now, soft);
    }
}
