//! The operations listener: `/metrics`, `/healthz`, `/readyz`, `/bindings/revision`; and
//! the connection caps it shares with the admin API ([`Caps`], [`Capped`],
//! [`extend_connection`]).
//!
//! It runs on its own address (never the public one), so probes and scrapes cannot be
//! reached through a tenant's host, and it serves through the drain, until Pingora stops its
//! runtimes ([`crate::listening::Prebound::serving_through_the_drain`]): `/readyz` says
//! `draining` and `/metrics` show the drain while it lasts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::apps::ServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::state::EdgeState;

/// Ops connections open at once. Scrapers and probes need a handful; without a cap, idle
/// connections to the ops address could take every file descriptor the process has, and
/// the public listener's accepts would fail with them. (The ops address is meant to be
/// reachable from the cluster only: whoever can fill it can fail the probes.)
pub const MAX_OPS_CONNECTIONS: usize = 256;

/// The longest an ops connection lives, whatever it does: a scrape or a probe takes
/// milliseconds, and a client that trickles its header or sits idle is let go by then.
pub const OPS_CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// The most an ops connection may send. A probe or a scrape sends a few hundred bytes; Pingora
/// reads a request header of up to 1 MiB, and 255 connections each holding one unfinished
/// took 265 MB, which the process kept after they closed. Past it the connection reads
/// as closed, and Pingora lets it go unanswered.
pub const OPS_REQUEST_BYTES: usize = 64 * 1024;

/// A client's stream, read up to [`Caps::read_bytes`] in all.
#[derive(Debug)]
struct ReadBudget {
    inner: Stream,
    left: usize,
}

impl AsyncRead for ReadBudget {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Read through a buffer of our own, no larger than what is left: the caller's cannot
        // be cut short without unsafe code. Ops traffic is a few requests a second.
        let mut chunk = [0u8; 4096];
        let room = buf.remaining().min(this.left).min(chunk.len());
        if room == 0 {
            // Spent: read as the end of the stream (or nothing asked).
            return Poll::Ready(Ok(()));
        }
        let mut limited = ReadBuf::new(&mut chunk[..room]);
        let read = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
        if let Poll::Ready(Ok(())) = read {
            buf.put_slice(limited.filled());
            this.left -= limited.filled().len();
        }
        read
    }
}

impl AsyncWrite for ReadBudget {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

crate::connections::forward_stream_traits!(ReadBudget);

/// What a [`Capped`] listener takes: how many connections at once, for how long each, how
/// much each may send, and what to log when one is turned away.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Connections open at once, at most.
    pub max: usize,
    /// The longest a connection lives, whatever it does, unless its application grants it
    /// more ([`extend_connection`]).
    pub lifetime: Duration,
    /// The most a connection may send; past it the connection reads as closed. Over TLS,
    /// counted in plaintext: the handshake and the records' overhead are bounded by the
    /// lifetime (and rustls's own buffer limits) instead.
    pub read_bytes: usize,
    /// Logged (once a minute at most) when a connection is turned away at the cap.
    pub refused_warning: &'static str,
}

impl Caps {
    /// The ops listener's: [`MAX_OPS_CONNECTIONS`] (or `max`, fewer when the open-file limit
    /// holds no more), [`OPS_CONNECTION_LIFETIME`], [`OPS_REQUEST_BYTES`].
    pub fn ops(max: usize) -> Self {
        Self {
            max,
            lifetime: OPS_CONNECTION_LIFETIME,
            read_bytes: OPS_REQUEST_BYTES,
            refused_warning: "ops connection closed unanswered: the ops listener's connections \
                              are all open (counted by ops_connections_refused_total); probes \
                              and scrapes fail meanwhile",
        }
    }
}

/// What a [`Capped`] connection's task knows of it: when it ends, and what is to live until
/// then.
struct Connection {
    end: std::sync::Mutex<tokio::time::Instant>,
    held: std::sync::Mutex<Vec<Box<dyn Send>>>,
}

tokio::task_local! {
    /// The connection a [`Capped`] application serves on this task.
    static CONNECTION: Arc<Connection>;
}

fn connection_end(c: &Connection) -> tokio::time::Instant {
    *c.end
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps `value` until the connection being served (by a [`Capped`] application, on this
/// task) ends: after its response is written, not just handed to Pingora. The admin API
/// holds a request's busy count so, which the drain waits on. Outside a `Capped` connection
/// it is dropped at once.
pub fn hold_until_connection_end(value: impl Send + 'static) {
    let value: Box<dyn Send> = Box::new(value);
    let _ = CONNECTION.try_with(|c| {
        c.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(value);
    });
}

/// Grants the connection being served (by a [`Capped`] application, on this task) at least
/// `from_now` more: for work the application has taken on, such as an authenticated admin
/// write, which the short lifetime meant for a client that has not yet said who it is must
/// not cut. Outside a `Capped` connection it does nothing.
pub fn extend_connection(from_now: Duration) {
    let _ = CONNECTION.try_with(|c| {
        let wanted = tokio::time::Instant::now() + from_now;
        let mut end = c
            .end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *end < wanted {
            *end = wanted;
        }
    });
}

/// An application behind [`Caps`]: the ops listener's, and the admin API's.
pub struct Capped<A> {
    app: Arc<A>,
    caps: Caps,
    slots: Arc<tokio::sync::Semaphore>,
    refused: pingora_prometheus::prometheus::IntCounter,
    /// When the cap was made: refusals are logged by the seconds since (a monotonic clock:
    /// the wall clock stepping back would silence them).
    made: std::time::Instant,
    /// When a refusal was last logged, in seconds since `made` plus one (0: never): once a
    /// minute at most.
    last_warning: std::sync::atomic::AtomicU64,
    /// The TLS handshake each connection makes first (the admin API's, when it has
    /// certificates), within the connection's lifetime.
    tls: Option<crate::https::TlsEndpoint>,
}

impl<A> Capped<A> {
    /// Wraps `app` behind `caps`; `refused` counts the connections turned away.
    pub fn new(app: A, caps: Caps, refused: pingora_prometheus::prometheus::IntCounter) -> Self {
        Self {
            app: Arc::new(app),
            caps,
            slots: Arc::new(tokio::sync::Semaphore::new(caps.max)),
            refused,
            made: std::time::Instant::now(),
            last_warning: std::sync::atomic::AtomicU64::new(0),
            tls: None,
        }
    }

    /// Each connection served over TLS: its handshake first, within the connection's
    /// [`Caps::lifetime`] (failures counted by `tls`).
    #[must_use]
    pub fn over_tls(mut self, tls: crate::https::TlsEndpoint) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Counts a connection turned away, and says so in the log once a minute at most: a
    /// probe that fails for it has no other trace.
    fn refuse(&self) {
        use std::sync::atomic::Ordering;
        self.refused.inc();
        let now = self.made.elapsed().as_secs() + 1;
        let last = self.last_warning.load(Ordering::Relaxed);
        // The first refusal is said at once; the swap makes it one line however many
        // connections race to say it, and marks when it was said.
        if (last == 0 || now >= last + 60)
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(max = self.caps.max, "{}", self.caps.refused_warning);
        }
    }
}

#[async_trait]
impl<A> ServerApp for Capped<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Full: the connection is closed at once (dropping the stream closes it).
        let Ok(_slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.refuse();
            return None;
        };
        let lifetime = tokio::time::Instant::now() + self.caps.lifetime;
        let serve = async {
            let stream = match &self.tls {
                Some(tls) => match tls.handshake(stream, lifetime).await {
                    Some(tls) => tls,
                    None => return,
                },
                None => stream,
            };
            // The budget counts what the client says: over TLS, the plaintext.
            let stream: Stream = Box::new(ReadBudget {
                inner: stream,
                left: self.caps.read_bytes,
            });
            let mut next = Some(stream);
            while let Some(stream) = next {
                next = self.app.process_new(stream, shutdown).await;
            }
        };
        // The end may be pushed back while the connection is served (`extend_connection`):
        // slept towards, and looked at again when reached.
        // What it holds is dropped once this returns: the stream is closed by then.
        let end = Arc::new(Connection {
            end: std::sync::Mutex::new(lifetime),
            held: std::sync::Mutex::default(),
        });
        let serve = CONNECTION.scope(Arc::clone(&end), serve);
        tokio::pin!(serve);
        loop {
            let until = connection_end(&end);
            tokio::select! {
                // The connection first: a handshake timing out at this very end is counted
                // by it (as failed) before the end drops it.
                biased;
                () = &mut serve => break,
                () = tokio::time::sleep_until(until) => {
                    if connection_end(&end) <= tokio::time::Instant::now() {
                        break;
                    }
                }
            }
        }
        None
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// Serves the operations endpoints.
#[derive(Debug)]
pub struct OpsApp {
    state: Arc<EdgeState>,
}

impl OpsApp {
    /// An ops app over the shared state.
    pub fn new(state: Arc<EdgeState>) -> Self {
        Self { state }
    }
}

fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

#[async_trait]
impl ServeHttp for OpsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // One request a connection, answered `Connection: close`. Kept alive, a connection
        // lost a request pipelined behind the first (Pingora's app reads no further than
        // one), and the connection's 10 s end raced a scraper's next request. A probe or a
        // scrape every few seconds costs a connect each, and an idle connection holds no
        // place (Pingora's app wrapper would keep it 60 s, HTTP/1.0 ones too).
        session.set_keepalive(None);
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            let mut resp = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"method not allowed: GET or HEAD\n".to_vec(),
            );
            resp.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            return resp;
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without a Host is answered 400. (One with two
        // never comes here: Pingora closes its connection unanswered.)
        let req = session.req_header();
        let no_host = req.headers.get(http::header::HOST).is_none();
        if no_host && req.version >= http::Version::HTTP_11 {
            return text(
                StatusCode::BAD_REQUEST,
                "text/plain",
                b"bad request: a Host header is required\n".to_vec(),
            );
        }
        let path = session.req_header().uri.path().to_owned();
        let s = &self.state;
        match path.as_str() {
            "/metrics" => {
                s.metrics
                    .mirror_auth(&s.auth, s.settings.revocation.max_staleness);
                if let Some(remote) = &s.remote_keys {
                    s.metrics.mirror_remote_keys(&s.auth, remote);
                }
                text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    s.metrics.render(&s.bindings, &s.sync_health),
                )
            }
            "/healthz" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                // Ready once a table is being served, until a shutdown begins. A store outage
                // does not make the router unready: it keeps serving the last table
                // (fail-static).
                let table = s.bindings.load();
                let draining = s.is_draining();
                // A fetched key set not in hand yet (neither fetched nor cached): every
                // token would be refused.
                let keys_awaited = !s.auth.has_key_set();
                let body = serde_json::json!({
                    "bindings": table.len(),
                    "revision": table.revision().get(),
                    "store_up": s.sync_health.store_up(),
                    "last_sync_unix_ms": s.sync_health.last_sync_unix_ms(),
                    "keys": s.auth.key_count(),
                    "revocations": s.auth.revocations().load().len(),
                    "draining": draining,
                    "keys_awaited": keys_awaited,
                });
                text(
                    if draining || keys_awaited {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    },
                    "application/json",
                    format!("{body}\n").into_bytes(),
                )
            }
            "/bindings/revision" => {
                let table = s.bindings.load();
                text(
                    StatusCode::OK,
                    "text/plain",
                    format!("{}\n", table.revision().get()).into_bytes(),
                )
            }
            _ => text(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts itself alive.
    struct Alive(Arc<AtomicUsize>);

    impl Alive {
        fn new(count: &Arc<AtomicUsize>) -> Self {
            count.fetch_add(1, Ordering::SeqCst);
            Self(Arc::clone(count))
        }
    }

    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Holds an `Alive` until its connection's end, then says whether it was still alive
    /// when the application returned.
    struct Holding {
        alive: Arc<AtomicUsize>,
        seen_at_return: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl ServerApp for Holding {
        async fn process_new(
            self: &Arc<Self>,
            stream: Stream,
            _shutdown: &ShutdownWatch,
        ) -> Option<Stream> {
            hold_until_connection_end(Alive::new(&self.alive));
            drop(stream);
            self.seen_at_return
                .store(self.alive.load(Ordering::SeqCst), Ordering::SeqCst);
            None
        }
    }

    #[tokio::test]
    async fn what_a_connection_holds_lives_until_its_end_and_no_longer() {
        let alive = Arc::new(AtomicUsize::new(0));
        let seen_at_return = Arc::new(AtomicUsize::new(0));
        let capped = Arc::new(Capped::new(
            Holding {
                alive: Arc::clone(&alive),
                seen_at_return: Arc::clone(&seen_at_return),
            },
            Caps::ops(1),
            pingora_prometheus::prometheus::IntCounter::new("refused", "refused").unwrap(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        assert!(capped.process_new(stream, &shutdown).await.is_none());
        // Alive when the application was done with the connection, gone once it ended.
        assert_eq!(seen_at_return.load(Ordering::SeqCst), 1);
        assert_eq!(alive.load(Ordering::SeqCst), 0);
        // Outside a connection, dropped at once.
        hold_until_connection_end(Alive::new(&alive));
        assert_eq!(alive.load(Ordering::SeqCst), 0);
    }
}
