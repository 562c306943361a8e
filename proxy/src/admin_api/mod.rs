//! The admin API: binding changes over HTTP, for a provisioning pipeline or an operator's
//! tooling, on a listener of its own (`[admin_api] listen`), over HTTPS when it has
//! certificates of its own (`[admin_api] certificates`; see [`crate::https`]).
//!
//! It is the `nexus-edge tenant` commands' other door: the same store, the same checks
//! ([`crate::admin_input`]), the same atomic, audited writes, with the caller's token naming
//! the actor. Every request needs a bearer token from the tokens file ([`tokens`]), looked
//! at for every request. What a request asks for is read by [`route`]; what it gets is said
//! by [`reply`]; the work against the store is in `exec`.
//!
//! Each connection serves one request (answered `Connection: close`) and sends 1 MiB of
//! body at most; [`MAX_ADMIN_CONNECTIONS`] are open at once. A connection has
//! [`ADMIN_REQUEST_DEADLINE`] to show a token the file lists, and only then gets
//! [`ADMIN_WORK_LIFETIME`] for its body or a read, and [`ADMIN_WRITE_LIFETIME`] once its
//! write is under way. A write once begun is not cut by its connection's end, and a drain
//! waits for it; [`MAX_ADMIN_WRITES`] are under way at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use pingora_prometheus::prometheus;

use crate::store::Store;

mod exec;
mod quiet;
pub mod reply;
pub mod route;
pub mod tokens;

#[cfg(test)]
mod tests;

use quiet::Quiet;
use reply::{Code, Reply};
use route::Route;

/// Admin API connections open at once: a pipeline and a few operators need a handful.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// How long a connection has, from its accept (its TLS handshake included, over HTTPS), to
/// send a request header carrying a token the tokens file lists. Clients that say nothing,
/// trickle, or hold no token are let go by then, so that they cannot keep the pipeline's
/// places for long.
pub const ADMIN_REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// What an authenticated request gets, from its authentication, for its body and a read.
pub const ADMIN_WORK_LIFETIME: Duration = Duration::from_secs(90);

/// What a write's connection gets once the write is under way: the write (behind Sentinel,
/// each store connection may wait out a failover, 30 s), and its `wait` (30 s at most,
/// lengthened to the slowest replica's heartbeat interval and a second: 61 s at most), with
/// room to spare. The write runs in a task of its own: its client is answered unless it has
/// gone away.
pub const ADMIN_WRITE_LIFETIME: Duration = Duration::from_secs(180);

/// Writes under way at once, at most: each holds a store connection, and may outlive the
/// client that asked for it (one that timed out, then retried). Past it a write is refused
/// (503) before anything is written.
pub const MAX_ADMIN_WRITES: usize = MAX_ADMIN_CONNECTIONS;

/// Listings of every binding made at once: each holds the whole table, read and written
/// out, until its client has taken it (a million bindings are a few hundred megabytes). A
/// pipeline lists now and then; many at once must not take the router's memory.
pub const MAX_ADMIN_LISTINGS: usize = 1;

/// How long a listing waits for its turn before it is refused (503, `unavailable`).
pub const LISTING_WAIT: Duration = Duration::from_secs(15);

/// The largest request body: a binding record is a few hundred bytes; one with a thousand
/// custom domains is far below this.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The room a request's header takes beside its body, within a connection's read budget.
const HEADER_ROOM: usize = 64 * 1024;

/// What an admin API listener takes ([`crate::ops::Capped`]): `max` connections
/// ([`MAX_ADMIN_CONNECTIONS`], fewer when the open-file limit holds no more).
pub fn caps(max: usize) -> crate::ops::Caps {
    crate::ops::Caps {
        max,
        lifetime: ADMIN_REQUEST_DEADLINE,
        read_bytes: MAX_BODY_BYTES + HEADER_ROOM,
        refused_warning: "admin API connection closed unanswered: its connections are all open \
                          (counted by admin_api_connections_refused_total)",
    }
}

/// The admin API over a binding store.
#[derive(Debug)]
pub struct AdminApi {
    store: Store,
    tokens: tokens::TokensFile,
    /// A record's custom domains are checked against them, as `tenant put` checks them.
    base_domains: Arc<[String]>,
    /// Requests being answered, each counted once (a write's, until it is done, whether or
    /// not its client is still there): the drain waits for them.
    busy: Arc<AtomicUsize>,
    /// Places for writes under way ([`MAX_ADMIN_WRITES`]).
    writes: Arc<tokio::sync::Semaphore>,
    /// Places for listings being made or sent ([`MAX_ADMIN_LISTINGS`]).
    listings: Arc<tokio::sync::Semaphore>,
    /// Refusals are logged at most once every few seconds each: an unauthenticated flood
    /// must not write the log full.
    unauthorized: Quiet,
    unusable: Quiet,
    /// `admin_api_requests_total`, once the router's metrics are given ([`AdminApi::counted`]).
    requests: Option<prometheus::IntCounterVec>,
}

/// Counts one request as being answered, for as long as it lives (shared, as an `Arc`, by
/// the connection answering it and the task making its write).
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(counter))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AdminApi {
    /// The API writing to `store`, accepting the tokens `tokens_file` lists.
    pub fn new(store: Store, tokens_file: PathBuf, base_domains: Vec<String>) -> Self {
        Self {
            store,
            tokens: tokens::TokensFile::new(tokens_file),
            base_domains: base_domains.into(),
            busy: Arc::default(),
            writes: Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_WRITES)),
            listings: Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_LISTINGS)),
            unauthorized: Quiet::default(),
            unusable: Quiet::default(),
            requests: None,
        }
    }

    /// Counts its requests by outcome in `requests` (`admin_api_requests_total`).
    #[must_use]
    pub fn counted(mut self, requests: prometheus::IntCounterVec) -> Self {
        self.requests = Some(requests);
        self
    }

    /// The requests being answered now: 0 once every one is done.
    pub fn busy(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.busy)
    }

    /// Answers the request, `busy` counting it meanwhile: a write takes it into its task too.
    async fn handle(&self, session: &mut ServerSession, busy: Arc<Busy>) -> Reply {
        // Looked at for every request: a token taken out stops working at once.
        let tokens = match self.tokens.current() {
            Ok(t) => t,
            Err(e) => {
                self.unusable.log(|skipped| {
                    tracing::error!(error = %e, not_logged = skipped, "admin API request refused: the tokens file cannot be used");
                });
                return Reply::error(
                    Code::TokensUnusable,
                    "the admin API's tokens file cannot be used; the router's log says why",
                );
            }
        };
        let actor = match authenticate(session.req_header(), &tokens) {
            Some(name) => name.to_owned(),
            None => {
                let peer = session.client_addr().map(ToString::to_string);
                self.unauthorized.log(|skipped| {
                    tracing::info!(
                        peer,
                        not_logged = skipped,
                        "admin API request refused: no token the tokens file lists"
                    );
                });
                return Reply::error(
                    Code::Unauthorized,
                    "a bearer token the admin API's tokens file lists is required",
                );
            }
        };
        // Known now: it may take its time.
        crate::ops::extend_connection(ADMIN_WORK_LIFETIME);
        let req = session.req_header();
        // RFC 9112 §3.2, as the ops listener.
        if req.headers.get(http::header::HOST).is_none() && req.version >= http::Version::HTTP_11 {
            return Reply::error(Code::BadRequest, "a Host header is required");
        }
        let found = match route::route(&req.method, req.uri.path()) {
            Ok(r) => r,
            Err(route::RouteError::NotFound) => {
                return Reply::error(Code::NotFound, "no such resource")
            }
            Err(route::RouteError::MethodNotAllowed(allow)) => {
                return Reply::error(Code::MethodNotAllowed, "method not allowed").allow(allow)
            }
            Err(route::RouteError::BadTenant(e)) => {
                return Reply::error(Code::BadRequest, format!("the path's tenant id: {e}"))
            }
        };
        let ctx = exec::Request {
            store: self.store.clone(),
            base_domains: Arc::clone(&self.base_domains),
            actor,
        };
        let write = match found {
            Route::Read(read) => {
                if let Err(e) = route::read_query(req.uri.query()) {
                    return Reply::error(Code::BadRequest, e);
                }
                if read == route::Read::List {
                    // Its place is kept until the answer is written, not only made.
                    let waited = tokio::time::timeout(
                        LISTING_WAIT,
                        Arc::clone(&self.listings).acquire_owned(),
                    )
                    .await;
                    match waited {
                        Ok(Ok(place)) => crate::ops::hold_until_connection_end(place),
                        _ => {
                            return Reply::error(
                                Code::Unavailable,
                                format!(
                                    "another listing of every binding has been under way for \
                                     {} s (one is made at a time): try again shortly",
                                    LISTING_WAIT.as_secs()
                                ),
                            )
                        }
                    }
                }
                return ctx.read(read).await;
            }
            Route::Write(w) => w,
        };
        let head = match route::write_query(req.uri.query())
            .and_then(|query| exec::WriteHead::read(req, query))
        {
            Ok(h) => h,
            Err(e) => return Reply::error(Code::BadRequest, e),
        };
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(reply) => return *reply,
        };
        let Ok(place) = Arc::clone(&self.writes).try_acquire_owned() else {
            return Reply::error(
                Code::Unavailable,
                format!(
                    "{MAX_ADMIN_WRITES} writes are under way (clients that gave up on theirs \
                     included): nothing was written; try again shortly"
                ),
            );
        };
        // A task of its own: a client that goes away (or a connection that reaches its
        // end) does not cut a write half way through its wait, nor leave it unlogged; the
        // drain waits for it, as it is counted busy until done.
        let task = tokio::spawn(async move {
            let (_busy, _place) = (busy, place);
            ctx.write(write, head, &body).await
        });
        crate::ops::extend_connection(ADMIN_WRITE_LIFETIME);
        match task.await {
            Ok(reply) => reply,
            Err(e) => Reply::error(
                Code::OutcomeUnknown,
                format!(
                    "the write failed within the router ({e}): it may have been made; the \
                     tenant's history says whether it was"
                ),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // One request a connection, as on the ops listener: nothing pipelined is lost unseen.
        session.set_keepalive(None);
        // Counted until the answer is written and, for a write, until the write is done,
        // whichever comes last: the drain must not end between the two.
        let busy = Arc::new(Busy::new(&self.busy));
        crate::ops::hold_until_connection_end(Arc::clone(&busy));
        let reply = self.handle(session, busy).await;
        if let Some(requests) = &self.requests {
            requests.with_label_values(&[reply.outcome()]).inc();
        }
        reply.into_response()
    }
}

/// The name of the token the request carries (`Authorization: Bearer TOKEN`, one such
/// header), if the tokens file lists it.
fn authenticate<'t>(
    req: &pingora::http::RequestHeader,
    tokens: &'t tokens::Tokens,
) -> Option<&'t str> {
    let mut values = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.len() > tokens::MAX_TOKEN_BYTES
    {
        return None;
    }
    tokens.who(token)
}

/// The length a request declares, if it does: every `Content-Length` value, each of which
/// may be a list (`5000000, 5000000`, which Pingora takes when its members agree), read
/// whole. A value that reads as no number is left to Pingora, which refuses it.
fn declared_length(req: &pingora::http::RequestHeader) -> Option<u64> {
    req.headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .max()
}

/// The request's body, [`MAX_BODY_BYTES`] at most. A length declared past it is refused
/// before any of it is read; a client that asked to (`Expect: 100-continue`) is told to send
/// it once the request is known to be acceptable.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Box<Reply>> {
    let too_large = || {
        Box::new(Reply::error(
            Code::PayloadTooLarge,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        ))
    };
    let req = session.req_header();
    if declared_length(req).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let expects = req
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects && session.write_continue_response().await.is_err() {
        return Err(Box::new(Reply::error(
            Code::BadRequest,
            "the connection failed before the body was sent",
        )));
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(Box::new(Reply::error(
                    Code::BadRequest,
                    format!("the request body cannot be read: {}", e.etype().as_str()),
                )))
            }
        }
    }
}
