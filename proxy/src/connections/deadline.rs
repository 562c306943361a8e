//! The request-header deadline and size bound, kept by the client's stream itself.
//!
//! A connection is in one of five phases. A new one starts in `FRESH`: the client owes a
//! request and has sent nothing yet; its first bytes make it `HEADER`. The proxy moves it to
//! `SERVING` once Pingora has parsed the header ([`header_read`]) and to `IDLE` when the request
//! is finished ([`request_done`]); the first bytes read while idle, other than a stray empty
//! line or two, begin the next header. `FRESH` and `HEADER` have the header's deadline, `IDLE`
//! the keep-alive bound; once either passes the stream is `EXPIRED`: every later read fails.
//!
//! The bytes read since the last request ended are counted, line ends while idle included
//! (Pingora keeps them in its header buffer). Until a header ends they are all header, so a
//! parser that asks for more once `[server] max_request_header_bytes` have come is refused (431,
//! and the stream is `EXPIRED`). Once parsed, every header is measured exactly by
//! [`header_read`]: the count may also hold body bytes read with the header's end, and it
//! misses the part of a pipelined header that came with the request before.
//!
//! A pipelined request (RFC 9112 §9.3.2) can begin in a read of the request before it: Pingora
//! keeps those bytes and parses them as the next request without reading them again. When a
//! request ends the stream works out how many it keeps ([`request_done`]: the bytes read since
//! the request before ended, with those kept then, less the header Pingora parsed and the body
//! it read). Idle with such bytes kept, the next header has begun: Pingora's first read for
//! more of it makes the stream `HEADER` (its bytes counted, its deadline starting at that
//! read's wait), and an answer Pingora writes to it by itself is counted as for any other
//! header. Kept bytes that may be stray line ends are not a header. After a chunked body (its
//! framing is Pingora's), or a body not read to its end, the count is not known: the stream
//! stays `IDLE` as before.
//!
//! Line ends while idle are ignored, as a server ignores an empty line before a request line
//! (RFC 9112 §2.2; some clients send one after a body), up to [`STRAY_LINE_ENDS`] bytes. More
//! than that begin a header, timed and bounded as any other: a client trickling line ends
//! must not hold its connection past the deadline.
//!
//! The deadline starts at the header's first wait for more bytes, which for a header arriving
//! in one piece on a reused connection never comes: the common case reads no clock and arms
//! no timer. (A new connection waits for its first request, so its timer starts at the
//! accept.) Request bodies and upgraded (WebSocket) connections are bounded by Pingora's
//! per-read timeouts (for a WebSocket, `[upstream] tunnel_idle_timeout`: see
//! `service::bound_tunnel_io`).
//!
//! Idle, the stream waits at most `[server] keepalive_timeout` for the next request, counted
//! from its first wait, and then closes quietly. Pingora could bound that wait itself, but it
//! arms a fresh timer for it on every request (a keep-alive client always makes the router
//! wait: it sends its next request once it has the response). Here one timer serves every idle
//! spell of the connection: armed for an earlier spell, it fires before the current one's
//! deadline and is armed again then. A busy connection arms it about once per
//! `keepalive_timeout` instead of once per request, for one clock read per request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pingora::protocols::{Stream, ALPN, IO};
use pingora::proxy::Session;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::chunks::{BadChunkLine, ChunkScan};
use super::reclaim::Queued;
use super::Shared;
use crate::log_budget::{HeaderRefusal, RequestLine};

/// The keep-alive timer: Pingora's, which its timer thread fires (in 10 ms steps, never
/// early), so the connections' idle timers add no work to the runtime's own timer wheel on
/// every park.
type IdleTimer = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// The least a keep-alive timer is armed for. Pingora's timer checks whether it has fired
/// before it starts listening for the firing, so one due within the current 10 ms step could
/// fire in between and never wake the connection (whose idle bound would then be gone). Armed
/// two steps ahead, it would take the thread stalling 20 ms between those two instructions,
/// which Pingora's own timers risk as well. The bound is at least 1 s: this only delays a
/// re-arm that comes within 20 ms of its deadline.
const MIN_IDLE_ARM: Duration = Duration::from_millis(20);

/// The largest copy of a header read kept allocated between requests (see `head_read`).
const HEAD_READ_KEPT: usize = 16 * 1024;

/// A new connection, no byte read yet.
const FRESH: u8 = 0;
const HEADER: u8 = 1;
const SERVING: u8 = 2;
const IDLE: u8 = 3;
/// The deadline passed: every later read fails.
const EXPIRED: u8 = 4;

/// Line-end bytes read while idle that are taken for stray ones: two empty lines.
const STRAY_LINE_ENDS: usize = 4;

/// What a client that sent part of a header gets when its time is up. One that sent nothing
/// gets no answer: browsers open connections ahead of need, and some show a 408 that arrives
/// on one as the response to their next request.
const TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 59\r\n\r\n\
request timeout: the request header did not arrive in time\n";

/// What a client gets whose header goes on past `[server] max_request_header_bytes`. The body
/// is [`crate::errors::RejectReason::HeaderTooLarge`]'s, which answers a header that ended
/// past the bound.
const TOO_LARGE_RESPONSE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
connection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 75\r\n\r\n\
request header fields too large: the request header is longer than allowed\n";

/// What a client gets whose header was still arriving when a shutdown's wait for headers in
/// progress ended. The instance never saw the request, so it may be sent again elsewhere.
const SHUTTING_DOWN_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 74\r\n\r\n\
service unavailable: shutting down before the request header was complete\n";

/// A request header longer than `[server] max_request_header_bytes`, found once it was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderTooLarge;

/// A client stream that fails its reads once a request header has taken longer than
/// `[server] request_header_timeout`, or grown past `[server] max_request_header_bytes`.
pub struct HeaderDeadline {
    inner: Stream,
    /// Written by the proxy's hooks through a shared reference (see [`header_read`]), read by
    /// `poll_read`; both run on the connection's one task, so `Relaxed` suffices.
    phase: AtomicU8,
    /// The current header's timer, made at its first wait (none for a header that needs no
    /// second read).
    timer: Option<Pin<Box<Sleep>>>,
    /// A header begun here waits for the rest: counted in `client_headers_in_progress`, which
    /// a shutdown waits on, until it ends one way or another. Cleared through a shared
    /// reference, as `phase` is.
    waiting: AtomicBool,
    /// Bytes read since the last request ended (with any body bytes that came in the read
    /// that ended the header). Reset by [`request_done`] through a shared reference, as
    /// `phase` is.
    header_bytes: AtomicUsize,
    /// Bytes read since the last request ended, in every phase (for [`request_done`]).
    delivered: AtomicUsize,
    /// Bytes of the next request Pingora kept when the last request ended (a pipelined
    /// request's beginning), as far as [`request_done`] could tell; 0 when none or not known.
    kept: AtomicUsize,
    /// Line-end bytes at the very end of what was read (up to [`STRAY_LINE_ENDS`] + 1): kept
    /// bytes no more than these may be stray line ends rather than a header.
    trailing_line_ends: usize,
    /// When the current idle spell began (its first wait); `None` outside one.
    idle_since: Option<Instant>,
    /// The keep-alive timer with the deadline it was armed for, made at the connection's
    /// first idle wait and kept for later ones (see the module docs).
    idle_timer: Option<(Instant, IdleTimer)>,
    /// Its place in the queue of connections that may be closed to make room at the cap
    /// ([`super::reclaim`]), joined while it waits for a request with none begun (made at
    /// the first such wait).
    queued: Option<Queued>,
    /// Whether the bytes Pingora kept of a next request are known (`kept`), so that an idle
    /// wait may be one with no request begun. Not after a request whose end Pingora's reads
    /// cannot be told from ([`request_done`]: a body not read to its end, or a chunked body),
    /// nor after later ones, until one ends the bytes read with an empty line: Pingora may be
    /// draining that body, or reading the rest of a pipelined header it kept, so closing the
    /// connection would lose a request or a response. Set through a shared reference, as
    /// `phase` is.
    kept_known: AtomicBool,
    /// Armed when a write to the client waits, dropped when a write makes progress: once a
    /// client has taken no bytes for `[server] client_write_timeout`, the waiting write fails
    /// (a header, a body, the last chunk alike), and Pingora drops the connection. (The
    /// kernel wakes a waiting write often enough for a slow but steady reader to show
    /// progress: [`crate::listening::CLIENT_NOTSENT_LOWAT`].)
    write_timer: Option<Pin<Box<Sleep>>>,
    /// A copy of the last read made while a header was awaited: the bytes of a chunked body
    /// that came in the read that ended its header are scanned from it (Pingora keeps them
    /// and never reads them again).
    head_read: Vec<u8>,
    /// The last bytes of the read before `head_read`, when that read was kept too (a header
    /// was awaited): the part of a header's end that came before the last read, when the end
    /// is split across reads.
    head_read_before: ReadTail,
    /// Whether the last read was kept in `head_read`.
    last_read_kept: bool,
    /// The scan of the chunked body being read ([`super::chunks`]). Set through a shared
    /// reference by [`chunked_body_begins`], on the connection's one task, as `phase` is.
    chunks: Mutex<Option<ChunkScan>>,
    /// Why the scan refused the body: [`chunk_refused`] tells the proxy why its read failed.
    chunk_refused: Mutex<Option<&'static str>>,
    shared: Arc<Shared>,
}

/// The last [`ReadTail::MAX`] bytes read (fewer when fewer were).
#[derive(Debug, Default, Clone, Copy)]
struct ReadTail {
    bytes: [u8; ReadTail::MAX],
    len: usize,
}

impl ReadTail {
    /// Enough to find a header's end (`\r\n\r\n`) split across two reads.
    const MAX: usize = 3;

    /// The last bytes of what this tail ended, followed by `read`: over reads of a byte or two,
    /// the tail of the stream, not of the last read alone.
    fn then(self, read: &[u8]) -> Self {
        let mut joined = [0; 2 * Self::MAX];
        let kept = Self::MAX.saturating_sub(read.len()).min(self.len);
        joined[..kept].copy_from_slice(&self.get()[self.len - kept..]);
        let took = read.len().min(Self::MAX);
        joined[kept..kept + took].copy_from_slice(&read[read.len() - took..]);
        let len = kept + took;
        let mut bytes = [0; Self::MAX];
        bytes[Self::MAX - len..].copy_from_slice(&joined[..len]);
        Self { bytes, len }
    }

    fn get(&self) -> &[u8] {
        &self.bytes[Self::MAX - self.len..]
    }
}

/// Whether the bytes read right before a body end as the parsed header `raw` does: every
/// header byte the last read carried (`read`), and, when that is fewer than the header's last
/// 4, the bytes read before it (`before`) for the rest. A header's end sent in pieces (its
/// final line end alone, say) is placed as surely as one that came whole; a miscount (a
/// request line Pingora rewrote longer) is found over the whole read.
fn ends_as_parsed(before: &[u8], read: &[u8], raw: &[u8]) -> bool {
    let here = read.len().min(raw.len());
    let need = raw.len().min(4).saturating_sub(here);
    read[read.len() - here..] == raw[raw.len() - here..]
        && before.len() >= need
        && before[before.len() - need..] == raw[raw.len() - here - need..raw.len() - here]
}

impl HeaderDeadline {
    /// Wraps a client stream. HTTP/2 (negotiated by ALPN) carries many requests at once on a
    /// connection, so there is no one header to time: it is returned as it is.
    pub(super) fn wrap(inner: Stream, shared: &Arc<Shared>) -> Stream {
        if inner.selected_alpn_proto() == Some(ALPN::H2) {
            return inner;
        }
        Box::new(Self {
            inner,
            phase: AtomicU8::new(FRESH),
            timer: None,
            waiting: AtomicBool::new(false),
            header_bytes: AtomicUsize::new(0),
            delivered: AtomicUsize::new(0),
            kept: AtomicUsize::new(0),
            trailing_line_ends: 0,
            idle_since: None,
            idle_timer: None,
            queued: None,
            kept_known: AtomicBool::new(true),
            write_timer: None,
            head_read: Vec::new(),
            head_read_before: ReadTail::default(),
            last_read_kept: false,
            chunks: Mutex::new(None),
            chunk_refused: Mutex::new(None),
            shared: Arc::clone(shared),
        })
    }

    fn timeout(&self) -> Duration {
        self.shared.limits.request_header_timeout
    }

    /// A write before the proxy was handed a header is Pingora answering by itself: a 400
    /// for a header its parser refuses, a 405 for `CONNECT`. Counted in `requests_total` (not
    /// timed: the router never saw the request); the connection closes next.
    fn note_pingora_answer(&mut self, buf: &[u8]) {
        // Idle with bytes read since the request ended (a few line ends, which Pingora's
        // parser may refuse): the router writes nothing then, and the last of the previous
        // response (written after the request was done) went out before any was read.
        let before_header = match *self.phase.get_mut() {
            FRESH | HEADER => true,
            // Or a pipelined request Pingora kept whole and answered without a read.
            IDLE => *self.header_bytes.get_mut() > 0 || *self.kept.get_mut() > 0,
            _ => false,
        };
        if !before_header || buf.is_empty() {
            return;
        }
        *self.phase.get_mut() = EXPIRED;
        self.header_over();
        let m = &self.shared.metrics;
        let refusal = match buf.get(9..12) {
            Some(b"405") => {
                m.connect_refused.inc();
                HeaderRefusal::Connect
            }
            _ => {
                m.unparsable.inc();
                HeaderRefusal::Unparsable
            }
        };
        self.log_refused(refusal);
    }

    /// One line about a header refused before the proxy saw a request, within its kind's
    /// allowance ([`crate::log_budget`]): Pingora's own line about it is not passed on (one
    /// per request any client can send), so without this only the metrics would show it.
    /// The client's address, not its bytes: they may hold a credential.
    fn log_refused(&self, refusal: HeaderRefusal) {
        self.shared
            .log_budgets
            .write(RequestLine::Header(refusal), |not_logged| {
                let digest = self.inner.get_socket_digest();
                let client = digest.as_ref().and_then(|d| d.peer_addr());
                tracing::info!(
                    client = client.map(tracing::field::display),
                    status = refusal.status(),
                    reason = refusal.label(),
                    header_bytes = self.header_bytes.load(Ordering::Relaxed),
                    not_logged,
                    "request header refused"
                );
            });
    }

    /// The header this stream waited in is over (read, refused, timed out, or the connection
    /// gone): no longer in progress.
    fn header_over(&self) {
        if self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::Relaxed) {
            self.shared.metrics.headers_in_progress.dec();
        }
    }

    fn expired_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "request header not complete within request_header_timeout ({:?})",
                self.timeout()
            ),
        )
    }

    /// `bytes` arrived: while idle they begin a new header, unless they are a few line ends
    /// (see the module docs). (A new connection's header was timed from the accept: its
    /// timer is kept.)
    fn bytes_arrived(&mut self, bytes: &[u8]) {
        let delivered = self.delivered.get_mut();
        *delivered = delivered.saturating_add(bytes.len());
        let ends = bytes
            .iter()
            .rev()
            .take(STRAY_LINE_ENDS + 1)
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        self.trailing_line_ends = if ends == bytes.len() {
            (self.trailing_line_ends + ends).min(STRAY_LINE_ENDS + 1)
        } else {
            ends
        };
        let phase = self.phase.get_mut();
        if !matches!(*phase, FRESH | HEADER | IDLE) {
            return;
        }
        let counted = self.header_bytes.get_mut();
        *counted = counted.saturating_add(bytes.len());
        match *phase {
            // Empty lines before a request line are no header yet (RFC 9112 §2.2): a new
            // connection that sent only those is closed unanswered as one that sent nothing,
            // and holds up no shutdown.
            FRESH | IDLE
                if *counted <= STRAY_LINE_ENDS
                    && bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) => {}
            FRESH => *phase = HEADER,
            IDLE => {
                *phase = HEADER;
                self.timer = None;
                self.idle_since = None;
            }
            _ => {}
        }
    }

    /// Idle, Pingora reads although it kept bytes of the next request: they are not a whole
    /// header, which has begun. Its bytes so far count against the bound, and its deadline
    /// starts at this read's wait. Kept bytes that may all be stray line ends stay idle (and
    /// counted as such).
    fn pipelined_header_goes_on(&mut self) {
        let kept = *self.kept.get_mut();
        // Only before the first byte read since the request ended (`kept` itself stays, for
        // the next request's count).
        if kept == 0 || *self.phase.get_mut() != IDLE || *self.delivered.get_mut() > 0 {
            return;
        }
        *self.header_bytes.get_mut() = kept;
        if kept <= STRAY_LINE_ENDS && kept <= self.trailing_line_ends {
            return;
        }
        *self.phase.get_mut() = HEADER;
        self.timer = None;
        self.idle_since = None;
        self.leave_queue();
    }

    /// The parser wants more of a header that already has more bytes than allowed: answer 431
    /// and end the stream.
    fn refuse_too_large(&mut self, cx: &mut Context<'_>) -> io::Error {
        self.phase.store(EXPIRED, Ordering::Relaxed);
        self.header_over();
        self.shared.metrics.headers_too_large.inc();
        self.log_refused(HeaderRefusal::TooLarge);
        // Best effort, as for the 408.
        let _ = Pin::new(&mut self.inner).poll_write(cx, TOO_LARGE_RESPONSE);
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "request header longer than max_request_header_bytes ({})",
                self.shared.limits.max_request_header_bytes
            ),
        )
    }

    /// A shutdown's wait for headers in progress is over and this one is not complete: answer
    /// 503 and end the stream (Pingora is letting go of the connection).
    fn refuse_shutting_down(&mut self, cx: &mut Context<'_>) -> io::Error {
        self.phase.store(EXPIRED, Ordering::Relaxed);
        self.header_over();
        self.shared.metrics.shutting_down.inc();
        self.log_refused(HeaderRefusal::ShuttingDown);
        // Best effort, as for the 408.
        let _ = Pin::new(&mut self.inner).poll_write(cx, SHUTTING_DOWN_RESPONSE);
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "shutting down before the request header was complete",
        )
    }

    /// The client has nothing more to read now. In a header or idle, wait for its bound too.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.phase.load(Ordering::Relaxed) {
            HEADER if self.shared.cutting.load(Ordering::Acquire) => {
                Poll::Ready(Err(self.refuse_shutting_down(cx)))
            }
            FRESH | IDLE
                if *self.kept_known.get_mut() && self.poll_asked_to_close(cx).is_ready() =>
            {
                self.phase.store(EXPIRED, Ordering::Relaxed);
                self.shared.metrics.reclaimed.inc();
                // No answer: nothing was asked (Pingora closes quietly).
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "idle connection closed to make room at max_connections",
                )))
            }
            phase @ (FRESH | HEADER) => self.poll_header_deadline(cx, phase),
            IDLE => self.poll_idle_bound(cx),
            _ => Poll::Pending,
        }
    }

    /// Waiting for a request with none begun: in the queue of connections that may be closed
    /// to make room, and ready once asked to.
    fn poll_asked_to_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let shared = &self.shared;
        self.queued
            .get_or_insert_with(|| Queued::new(&shared.reclaim))
            .poll_asked(cx)
    }

    /// A request has begun: no longer one that may be closed to make room.
    fn leave_queue(&mut self) {
        if let Some(q) = &mut self.queued {
            q.leave();
        }
    }

    /// Idle: the connection closes once `[server] keepalive_timeout` has passed since the
    /// spell's first wait. No answer: nothing was asked.
    fn poll_idle_bound(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let timeout = self.shared.limits.keepalive_timeout;
        let deadline = *self.idle_since.get_or_insert_with(Instant::now) + timeout;
        loop {
            let (armed_for, timer) = self.idle_timer.get_or_insert_with(|| {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(MIN_IDLE_ARM);
                (
                    deadline,
                    Box::pin(pingora::prelude::fast_timeout::fast_sleep(left)),
                )
            });
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if *armed_for >= deadline {
                break;
            }
            // Armed for an earlier spell: arm it for this one, unless that is over too.
            self.idle_timer = None;
            if Instant::now() >= deadline {
                break;
            }
        }
        self.phase.store(EXPIRED, Ordering::Relaxed);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connection idle for keepalive_timeout ({timeout:?})"),
        )))
    }

    /// In a header: it fails once `[server] request_header_timeout` has passed since its
    /// first wait (since the accept on a new connection).
    fn poll_header_deadline(&mut self, cx: &mut Context<'_>, phase: u8) -> Poll<io::Result<()>> {
        if phase == HEADER && !*self.waiting.get_mut() {
            *self.waiting.get_mut() = true;
            self.shared.metrics.headers_in_progress.inc();
        }
        let timeout = self.timeout();
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.phase.store(EXPIRED, Ordering::Relaxed);
        self.header_over();
        if phase == HEADER {
            self.shared.metrics.header_timeouts.inc();
            self.log_refused(HeaderRefusal::Timeout);
            // Best effort: the connection closes next whatever this write does.
            let _ = Pin::new(&mut self.inner).poll_write(cx, TIMEOUT_RESPONSE);
        } else {
            self.shared.metrics.unused.inc();
        }
        // Pingora closes the connection on a read error, quietly when no byte of the header
        // had arrived.
        Poll::Ready(Err(self.expired_error()))
    }
}

/// Bounds how long the client's connection may stay idle for its next request, when the
/// client keeps it open (HTTP/1.1 without `Connection: close`, or HTTP/1.0 asking for
/// keep-alive: Pingora decided when it read the request). A client's own `Keep-Alive: timeout`
/// does not set it. On a stream of this module the stream keeps the bound, so Pingora is told
/// to wait without one of its own; elsewhere Pingora keeps it (in whole seconds, at least one).
pub fn bound_idle_client(session: &mut Session, keepalive_timeout: Duration) {
    if session.get_keepalive().is_none() {
        return;
    }
    let seconds = if deadline_of(session).is_some() {
        // Pingora's "no timeout".
        0
    } else {
        keepalive_timeout.as_secs().max(1)
    };
    session.set_keepalive(Some(seconds));
}

/// Bounds `session`'s writes to its client by `[server] client_write_timeout`. The client
/// stream keeps that bound itself, from one write's progress to the next; Pingora's bound is
/// set only where there is no such stream (HTTP/2). It bounds each body write whole (up to
/// four 64 KB pieces), so it would cut off a client reading slowly but steadily.
pub fn bound_client_writes(session: &mut Session, timeout: Duration) {
    if deadline_of(session).is_none() {
        session.set_write_timeout(Some(timeout));
    }
}

/// Tells the stream under `session` that its request header has been read: no deadline until
/// the request is done. A header longer than `[server] max_request_header_bytes` is refused:
/// the caller answers it.
pub fn header_read(session: &Session, raw: Option<&[u8]>) -> Result<(), HeaderTooLarge> {
    let Some(d) = deadline_of(session) else {
        return Ok(());
    };
    set_phase(d, SERVING);
    let max = d.shared.limits.max_request_header_bytes;
    // Measured from the parsed header, from its request line, every time: the count can hold
    // body bytes read with the header's end, and it misses whatever of a pipelined header
    // came in a read of the request before (RFC 9112 §9.3.2), which Pingora parses without
    // reading again.
    if raw.is_some_and(|raw| {
        let line_ends = raw
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        raw.len() - line_ends > max
    }) {
        d.shared.metrics.headers_too_large.inc();
        return Err(HeaderTooLarge);
    }
    Ok(())
}

/// Tells the stream under `session` that its request's body is chunked: its framing lines are
/// scanned from here on ([`super::chunks`]), those that came with the header's end at once.
/// `Err` when those already refuse it (nothing was forwarded yet). A body whose start the
/// stream cannot place for sure is left to Pingora's parser, as before: a request that came
/// in a read of the request before it (pipelined), whole or in part, and one whose request
/// line Pingora rewrote (a target with a blank, which it percent-escapes).
pub fn chunked_body_begins(session: &Session) -> Result<(), BadChunkLine> {
    let Some(d) = deadline_of(session) else {
        return Ok(());
    };
    *d.chunk_refused
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = None;
    let mut slot = d.chunks.lock().unwrap_or_else(PoisonError::into_inner);
    *slot = None;
    let Some(h1) = session.as_downstream().as_http1() else {
        return Ok(());
    };
    let delivered = d.delivered.load(Ordering::Relaxed);
    let raw = h1.get_headers_raw_bytes();
    let read = &d.head_read;
    // Everything read for this request, less its header: the body bytes that came with it,
    // the tail of the read that ended the header. The counts can miss bytes Pingora kept
    // (after a chunked body the stream cannot tell how many), and Pingora rewrites a request
    // line it percent-escapes: the body is taken to start there only when the header's end,
    // as Pingora parsed it, is what the stream read right before. Otherwise the body is left
    // to Pingora's parser, as before, rather than a valid one refused for a miscount.
    let start = (d.kept.load(Ordering::Relaxed) + delivered)
        .checked_sub(raw.len())
        .filter(|p| delivered > 0 && *p <= read.len())
        .map(|prefix| read.len() - prefix)
        .filter(|&start| ends_as_parsed(d.head_read_before.get(), &read[..start], &raw));
    let Some(start) = start else {
        return Ok(());
    };
    let mut scan = ChunkScan::default();
    if let Err(e) = scan.scan(&read[start..]) {
        *d.chunk_refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e.0);
        return Err(e);
    }
    if !scan.done() {
        *slot = Some(scan);
    }
    Ok(())
}

/// Why the stream under `session` refused the chunked body being read, if it did (so that
/// the failed read is told as the client's malformed body, not as the client gone).
pub fn chunk_refused(session: &Session) -> Option<&'static str> {
    deadline_of(session).and_then(|d| {
        *d.chunk_refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    })
}

/// Tells the stream under `session` that its request is done: the next bytes begin a header.
/// Works out how many bytes of the next request Pingora kept (see the module docs).
pub fn request_done(session: &mut Session) {
    let Some(delivered) = deadline_of(session).map(|d| d.delivered.load(Ordering::Relaxed)) else {
        return;
    };
    let body_done = session.as_downstream_mut().is_body_done();
    let consumed = consumed_by(session, body_done);
    let Some(d) = deadline_of(session) else {
        return;
    };
    // Known only when it was known after the request before too: counted from an unknown
    // one, the bytes of this request that came in that one's reads are missed.
    let known = d.kept_known.load(Ordering::Relaxed) && consumed.is_some();
    let kept = match consumed {
        Some(consumed) if known => d
            .kept
            .load(Ordering::Relaxed)
            .saturating_add(delivered)
            .saturating_sub(consumed),
        _ => 0,
    };
    d.kept.store(kept, Ordering::Relaxed);
    // A request read to its end whose last bytes read are an empty line's end (a bodyless
    // request's header, or a chunked body's last line) left nothing of a next request behind
    // it: Pingora keeps nothing then, and the count is known again.
    let ends_clean = body_done && d.trailing_line_ends >= 4;
    d.kept_known.store(known || ends_clean, Ordering::Relaxed);
    *d.chunks.lock().unwrap_or_else(PoisonError::into_inner) = None;
    d.delivered.store(0, Ordering::Relaxed);
    d.header_bytes.store(0, Ordering::Relaxed);
    set_phase(d, IDLE);
}

/// The bytes Pingora took for the request just done: its header as received (with any line
/// ends before it) and its body. `None` when that is not known: a chunked body (its framing
/// is Pingora's) or a body not read to its end (`body_done` false: Pingora drains it later,
/// or closes).
fn consumed_by(session: &mut Session, body_done: bool) -> Option<usize> {
    let chunked = session
        .req_header()
        .headers
        .contains_key(http::header::TRANSFER_ENCODING);
    if chunked || !body_done {
        return None;
    }
    let downstream = session.as_downstream_mut();
    let body = downstream.body_bytes_read();
    let header = downstream.as_http1()?.get_headers_raw_bytes().len();
    Some(header + body)
}

/// The session's client stream, when it is one (HTTP/2 streams are not wrapped).
fn deadline_of(session: &Session) -> Option<&HeaderDeadline> {
    let io: &dyn IO = &**session.as_downstream().stream()?;
    io.as_any().downcast_ref::<HeaderDeadline>()
}

fn set_phase(d: &HeaderDeadline, phase: u8) {
    d.header_over();
    // An expired stream stays expired.
    let _ = d
        .phase
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
            (p != EXPIRED).then_some(phase)
        });
}

impl Drop for HeaderDeadline {
    fn drop(&mut self) {
        self.header_over();
    }
}

impl std::fmt::Debug for HeaderDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDeadline")
            .field("inner", &self.inner)
            .field("phase", &self.phase.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.pipelined_header_goes_on();
        match this.phase.load(Ordering::Relaxed) {
            EXPIRED => return Poll::Ready(Err(this.expired_error())),
            HEADER
                if *this.header_bytes.get_mut() > this.shared.limits.max_request_header_bytes =>
            {
                return Poll::Ready(Err(this.refuse_too_large(cx)));
            }
            _ => {}
        }
        let phase = this.phase.load(Ordering::Relaxed);
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(bytes) = buf.filled().get(before..).filter(|b| !b.is_empty()) {
                    match phase {
                        FRESH | HEADER | IDLE => {
                            // Bytes came: no longer a connection that may be closed to make
                            // room (stray line ends keep it idle: it joins again at the back).
                            // Only an idle wait joins, so no other phase leaves.
                            this.leave_queue();
                            this.keep_head_read(bytes);
                        }
                        SERVING => {
                            this.last_read_kept = false;
                            if let Err(e) = this.scan_body(bytes) {
                                return Poll::Ready(Err(e));
                            }
                        }
                        _ => this.last_read_kept = false,
                    }
                    this.bytes_arrived(bytes);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx),
        }
    }
}

impl HeaderDeadline {
    /// Keeps a copy of a read made while a header was awaited (see `head_read`). A large one
    /// (a long header) is not kept allocated for the connection's life.
    fn keep_head_read(&mut self, bytes: &[u8]) {
        self.head_read_before = if self.last_read_kept {
            self.head_read_before.then(&self.head_read)
        } else {
            ReadTail::default()
        };
        self.last_read_kept = true;
        if self.head_read.capacity() > HEAD_READ_KEPT {
            self.head_read = Vec::new();
        }
        self.head_read.clear();
        self.head_read.extend_from_slice(bytes);
    }

    /// Scans bytes of a chunked body being read; an error fails the read.
    fn scan_body(&mut self, bytes: &[u8]) -> io::Result<()> {
        let slot = self
            .chunks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(scan) = slot else {
            return Ok(());
        };
        match scan.scan(bytes) {
            Ok(()) => {
                if scan.done() {
                    *slot = None;
                }
                Ok(())
            }
            Err(BadChunkLine(why)) => {
                *slot = None;
                *self
                    .chunk_refused
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner) = Some(why);
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("chunked request body refused: {why}"),
                ))
            }
        }
    }

    /// A write's outcome under the write bound: progress disarms it; a wait arms it (once per
    /// stall) and fails the write when it fires.
    fn bound_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.write_timer = None;
            return r;
        }
        let bound = self.shared.limits.client_write_timeout;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(bound)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client took no response bytes for {} (client_write_timeout)",
                humantime::format_duration(bound)
            ),
        )))
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.note_pingora_answer(buf);
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.bound_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.note_pingora_answer(first);
        }
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.bound_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.bound_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// Everything Pingora asks of a client stream besides reading goes to the wrapped one.
super::forward::forward_stream_traits!(HeaderDeadline);

#[cfg(test)]
mod tests {
    use super::{ends_as_parsed, ReadTail, TIMEOUT_RESPONSE, TOO_LARGE_RESPONSE};
    use crate::errors::RejectReason;

    #[test]
    fn a_header_end_split_across_reads_is_placed() {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\n\r\n";
        // (the tail of the read before, what of the header the last read carried, placed)
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"", b"POST / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (b"a\r\n", b"\r\n", true),
            (b"\r\n\r", b"\n", true),
            (b" a\r", b"\n\r\n", true),
            // Not what the parser read there (a miscount): left to Pingora's parser.
            (b"", b"\n", false),
            (b"xyz", b"\n", false),
            (b"a\r\n", b"\r\r", false),
            (b"", b"abcd", false),
            // Its last 4 bytes as parsed, those before them not: a miscount.
            (b"", b"Host: b\r\n\r\n", false),
            (b"a\r\r", b"\r\n", false),
        ];
        for (before, read, placed) in cases {
            assert_eq!(
                ends_as_parsed(before, read, raw),
                *placed,
                "{:?} {:?}",
                String::from_utf8_lossy(before),
                String::from_utf8_lossy(read)
            );
        }
        assert_eq!(ReadTail::default().then(b"abcdef").get(), b"def");
        assert_eq!(ReadTail::default().then(b"ab").get(), b"ab");
        assert_eq!(ReadTail::default().get(), b"");
        // Over reads of a byte or two: the stream's tail.
        assert_eq!(
            ReadTail::default().then(b"xa\r").then(b"\n").get(),
            b"a\r\n"
        );
        assert_eq!(ReadTail::default().then(b"a").then(b"\r").get(), b"a\r");
        assert_eq!(ReadTail::default().then(b"abc").then(b"defg").get(), b"efg");
    }

    /// Head and body of a canned response, its `content-length` checked against the body.
    fn parts(response: &'static [u8]) -> (&'static str, &'static str) {
        let text = std::str::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        (head, body)
    }

    #[test]
    fn the_408_says_its_own_length() {
        let (head, _) = parts(TIMEOUT_RESPONSE);
        assert!(head.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
    }

    #[test]
    fn the_431_says_its_own_length_and_what_the_proxy_says() {
        let (head, body) = parts(TOO_LARGE_RESPONSE);
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert_eq!(body, RejectReason::HeaderTooLarge.body());
        assert_eq!(RejectReason::HeaderTooLarge.status(), 431);
    }
}
