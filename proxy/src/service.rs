//! The Pingora `ProxyHttp` glue. It only orchestrates: every decision is made by
//! [`crate::decision::decide`], every header rule lives in [`crate::route`], every
//! rejection's shape in [`crate::errors`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::Peer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use smallvec::SmallVec;

use crate::auth::extract_token;
use crate::connections::HeaderTooLarge;
use crate::decision::{decide, Decision, RequestFacts};
use crate::errors::RejectReason;
use crate::framing::{check_transfer_coding, ends_with_connection, is_bad_chunk, FramingError};
use crate::log_budget::{LogBudgets, RequestLine};
use crate::logging::LoggedError;
use crate::metrics::OpenTunnel;
use crate::policy::BillingNotice;
use crate::response::{
    canonicalise_content_length, drop_shared_cookies, framing_fault, remove_hop_by_hop,
    switch_fault,
};
use crate::route::{
    forwarded_host, rewrite_upstream_request, sane_request_id, Forwarding, RequestIds,
};
use crate::state::EdgeState;
use crate::tunnel::{still_routed, token_still_accepted, TunnelClose, TunnelEnd};

/// Per-request state carried between Pingora phases.
#[derive(Debug)]
pub struct RequestCtx {
    start: Instant,
    /// The request's id, as sent upstream and in every response (cloning it is a refcount).
    request_id: HeaderValue,
    decision: Option<Decision>,
    rejected: Option<RejectReason>,
    /// How a forwarded request failed once its answer could no longer be an error response
    /// (the instance's status was out) or the client was gone: the `requests_total` outcome.
    failed: Option<&'static str>,
    /// Instance addresses this request failed to connect to (empty unless one did).
    tried: Vec<SocketAddr>,
    /// When the instance switched protocols (its `101`): the request's duration ends there,
    /// as the tunnel after it may live for hours and is no measure of the instance's latency.
    switched_at: Option<Instant>,
    /// Why the router closed this request's tunnel, when it did (see [`crate::tunnel`]).
    tunnel_end: Option<TunnelEnd>,
    /// This request's tunnel in `tunnels_open`, from its `101` until the context goes.
    tunnel_open: Option<OpenTunnel>,
    /// Interim (1xx) responses the instance sent so far, up to [`MAX_INTERIM_RESPONSES`].
    interim_responses: u16,
    /// For a request asking for an upgrade: the key-set generation its token was last
    /// verified under (read before the decision), so that a tunnel re-verifies it after the
    /// keys change. 0, which no key set has, for every other request.
    tunnel_keys: u64,
    /// Set when a failed connect is to be tried at another address, which the router has
    /// said itself: Pingora's own line for that retry, which follows, is then not written
    /// (see [`EdgeService::suppress_proxy_warn_log`]). Atomic because Pingora asks with the
    /// context borrowed shared.
    connect_retry_said: AtomicBool,
    /// The instance's final response is complete, headers and body, while the client may
    /// still be sending the request's body (see [`EdgeService::request_body_filter`]).
    response_complete: bool,
}

impl RequestCtx {
    /// The request id, for log lines (always ASCII: generated, or a client's checked one).
    fn id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// The tenant the request was decided for, for log lines (empty before a decision).
    fn tenant(&self) -> &str {
        self.decision
            .as_ref()
            .map(|d| d.binding.tenant_id.as_str())
            .unwrap_or_default()
    }
}

/// The Nexus Edge HTTP service.
#[derive(Debug, Clone)]
pub struct EdgeService {
    state: Arc<EdgeState>,
    ids: Arc<RequestIds>,
}

impl EdgeService {
    /// A service over shared state.
    pub fn new(state: Arc<EdgeState>) -> Self {
        Self {
            state,
            ids: Arc::new(RequestIds::new()),
        }
    }

    /// Sends a rejection with its fixed body and headers. `close` forces the connection shut
    /// (an upstream failure, after which Pingora does not reuse it).
    async fn reject(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        reason: RejectReason,
        close: bool,
    ) -> Result<()> {
        let body = reason.body();
        let mut resp = ResponseHeader::build(reason.status(), Some(4))?;
        resp.insert_header("content-type", "text/plain; charset=utf-8")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
        for (name, value) in reason.extra_headers() {
            resp.insert_header(name, value)?;
        }
        let unreadable = reason.closes_connection();
        ctx.rejected = Some(reason);
        // A refused request without a body leaves the connection clean, so it stays open for
        // the client's next request (typically the same call with a fresh token). A request
        // that could not be read as sent, or one with a body nobody will read, closes it:
        // draining an unauthenticated upload is work for nobody.
        if close || unreadable || !session.is_body_empty() {
            session.set_keepalive(None);
        }
        // A write that fails is the client's connection failing (it went away), not the
        // router: so marked, it is not logged as a router fault.
        session
            .write_response_header(Box::new(resp), false)
            .await
            .map_err(Error::into_down)?;
        session
            .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
            .await
            .map_err(Error::into_down)?;
        Ok(())
    }

    /// Fails a tunnel's piece (either way) once the tenant's binding would no longer route the
    /// tunnel where it was opened, or its token would no longer be accepted: a rebind, a
    /// suspension, a removal, the token's expiry or its key's removal closes a WebSocket at its
    /// next message instead of leaving it open (see [`crate::tunnel`]). Anything but a tunnel
    /// passes unchecked.
    fn check_tunnel(&self, session: &Session, ctx: &mut RequestCtx) -> Result<()> {
        // `switched_at` is set by `response_filter` for the `101` it passes on.
        let Some(decision) = ctx.decision.as_ref().filter(|_| ctx.switched_at.is_some()) else {
            return Ok(());
        };
        let table = self.state.bindings.load();
        let mut checked = still_routed(decision, &table, &self.state.settings.tenancy);
        if let (Ok(()), Some(identity)) = (checked, &decision.identity) {
            let auth = &self.state.auth;
            checked =
                token_still_accepted(identity, auth, &mut ctx.tunnel_keys, now_unix(), || {
                    let req = session.req_header();
                    extract_token(
                        &header_values(req, &http::header::AUTHORIZATION),
                        &header_values(req, &http::header::COOKIE),
                        auth.session_cookie(),
                    )
                    .ok()
                    .flatten()
                });
        }
        checked.map_err(|end| {
            ctx.tunnel_end = Some(end);
            Error::explain(
                ErrorType::Custom("tunnel no longer routed"),
                end.to_string(),
            )
        })
    }

    /// Shutting down: the response closes its connection, so the client's next request goes
    /// to a replica that stays.
    fn close_if_draining(&self, session: &mut Session) {
        if self.state.is_draining() {
            session.set_keepalive(None);
        }
    }

    /// Gathers the request's facts and decides it. `start` is when the request was read; the
    /// decision's duration is measured from it (one clock read fewer per request than timing
    /// `decide` alone, and the gathering is part of deciding).
    fn decide_request(&self, session: &Session, start: Instant) -> Result<Decision, RejectReason> {
        let req = session.req_header();
        if crate::method::is_echo(&req.method)
            || crate::method::overrides_to_echo(&req.method, &req.headers, req.uri.query())
        {
            return Err(RejectReason::TraceRefused);
        }
        if crate::method::is_connect(&req.method) {
            return Err(RejectReason::ConnectRefused);
        }
        // Before the tenant: a body the instance would read otherwise than the router is
        // refused whoever it is addressed to.
        check_transfer_coding(&req.headers).map_err(RejectReason::BadFraming)?;
        if crate::nominations::is_refused(&req.headers) {
            return Err(RejectReason::MalformedHeader);
        }
        let host_headers = header_values(req, &http::header::HOST);
        let authorization = header_values(req, &http::header::AUTHORIZATION);
        let cookies = header_values(req, &http::header::COOKIE);
        let target = match request_target(req) {
            Ok(target) => target,
            Err(e) => return Err(RejectReason::of_path(e)),
        };
        match target {
            None => Err(RejectReason::BadPath(crate::path::PathError::ControlChar)),
            Some(path) => {
                let facts = RequestFacts {
                    host_headers: &host_headers,
                    uri_authority: req.uri.authority().map(|a| a.as_str()),
                    is_http2: session.is_http2(),
                    target: path,
                    authorization: &authorization,
                    cookies: &cookies,
                    now_unix: now_unix(),
                };
                let table = self.state.bindings.load();
                let d = decide(
                    &facts,
                    &self.state.settings.tenancy,
                    &table,
                    &self.state.auth,
                );
                self.state
                    .metrics
                    .decision_duration
                    .observe(start.elapsed().as_secs_f64());
                d
            }
        }
    }
}

/// The request-target the decision reads: an origin-form target raw (exactly as sent); the
/// path of an absolute-form target of the HTTP family (`http(s)`, `ws(s)`) from the parsed URI
/// (Pingora has checked its authority against Host byte for byte). Any other form
/// (authority-form, `*`, a bare word, another scheme) is refused: Pingora anchors those URIs
/// to `/`, so read from the URI they would reach the instance as a request for its root that
/// the client never made. `Ok(None)`: an origin-form target that is not UTF-8.
fn request_target(
    req: &pingora::http::RequestHeader,
) -> std::result::Result<Option<&str>, crate::path::PathError> {
    use pingora::protocols::http::authority::{
        is_http_family_scheme, raw_target_authority, RawTargetAuthority,
    };
    let raw = req.raw_path();
    if raw.first() == Some(&b'/') {
        return Ok(std::str::from_utf8(raw).ok());
    }
    match raw_target_authority(raw) {
        RawTargetAuthority::Absolute { scheme, .. } if is_http_family_scheme(scheme) => {
            Ok(req.uri.path_and_query().map(|p| p.as_str()))
        }
        _ => Err(crate::path::PathError::NotOriginForm),
    }
}

/// Takes the request's `Expect` off; true when it asked for `100-continue` and a body is to
/// come, so that the router answers `100 Continue` itself (called once it has accepted the
/// request). Passed on, the expectation would let the instance give its final answer before
/// the body; Pingora forwards the body anyway (sent with the header, or after the answer) and
/// pools the connection, so an instance that then read those bytes as its next request would
/// run a request the router never checked, identity headers written by the client, and answer
/// it to whoever's request came next on that connection. Without it the instance reads the
/// body as the body. Other expectations are ignored (RFC 9110 §10.1.1 allows it), and so is
/// an HTTP/1.0 client's: it gets no 1xx (RFC 9110 §15.2).
fn take_expectation(session: &mut Session) -> bool {
    let req = session.req_header();
    if !req.headers.contains_key(http::header::EXPECT) {
        return false;
    }
    let wants_continue = req.version >= http::Version::HTTP_11
        && header_bytes(&req.headers, &http::header::EXPECT)
            .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
    session
        .req_header_mut()
        .remove_header(&http::header::EXPECT);
    wants_continue && !session.is_body_empty()
}

/// A fault in the client's request that Pingora finds only while forwarding it: a chunk of
/// the body that does not parse, a request header it refuses once it prepares the request
/// for the instance (see [`RejectReason::MalformedHeader`]), or a body the client stopped
/// sending. Any other failure of the client's side is the client going away.
///
/// A read that timed out while the client still owes body bytes is the client's, whichever
/// side's timer fired: Pingora restarts the instance's read timer whenever a piece of the body
/// is passed on (an instance that stops taking the body shows as a write timeout instead), so
/// the instance's timer fires first when the client has sent nothing for `read_timeout`, and
/// the instance was waiting for the rest of the request. Told as an instance timeout, any
/// client (on a public path, without a token) could make a tenant's instance look failing.
/// A WebSocket request is left out: its wait for the `101` is the instance's.
fn late_client_fault(session: &mut Session, e: &Error) -> Option<RejectReason> {
    // The client stream refused a line of the chunked body (see `crate::connections`): its
    // read failed, and it is not the client going away.
    if let Some(why) = crate::connections::chunk_refused(session) {
        return Some(RejectReason::BadFraming(FramingError::BadChunk(Some(why))));
    }
    if matches!(e.etype(), ErrorType::ReadTimedout)
        && !asks_for_upgrade(session)
        && !session.is_body_done()
    {
        return Some(RejectReason::BodyTimeout);
    }
    if !matches!(e.esource(), ErrorSource::Downstream) {
        return None;
    }
    if is_bad_chunk(e) {
        Some(RejectReason::BadFraming(FramingError::BadChunk(None)))
    } else if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
        Some(RejectReason::MalformedHeader)
    } else {
        None
    }
}

/// The error that stops a request's body once the instance has answered the request whole
/// (see [`EdgeService::request_body_filter`]).
const EARLY_ANSWER: &str = "instance answered before the request body";

/// How long the rest of such a body is read and dropped before the client's connection
/// closes (nginx's `lingering_timeout` is 5 s too).
const EARLY_ANSWER_LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// The `requests_total` outcome of a forwarded request whose client went away (or broke the
/// connection) before the response was complete.
const CLIENT_CLOSED: &str = "client_closed";

/// One line per request the router refuses itself, within its reason's allowance (see
/// [`crate::log_budget`]): id, status and closed labels only.
fn log_rejection(budgets: &LogBudgets, ctx: &RequestCtx, reason: &RejectReason) {
    budgets.write(RequestLine::Reason(reason.label()), |not_logged| {
        tracing::info!(
            request_id = %ctx.id(),
            status = reason.status(),
            reason = reason.label(),
            detail = reason.detail(),
            why = reason.why(),
            not_logged,
            "request rejected"
        );
    });
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Bounds an instance connection's connect, reads and writes as configured. Public for the
/// load harness's bare proxy.
pub fn bound_instance_io(
    options: &mut pingora::upstreams::peer::PeerOptions,
    up: &nexus_config::UpstreamSettings,
) {
    options.connection_timeout = Some(up.connect_timeout);
    options.total_connection_timeout = Some(up.connect_timeout);
    options.read_timeout = Some(up.read_timeout);
    options.write_timeout = Some(up.write_timeout);
    options.idle_timeout = Some(up.idle_connection_timeout);
}

/// Bounds a request that asks to switch protocols (a WebSocket) by `[upstream]
/// tunnel_idle_timeout` instead: after a `101` Pingora keeps applying the instance
/// connection's read and write timeouts, and the client session's read timeout (60 s by
/// default), to the tunnel's bytes, so a channel that is quiet for longer than a response may
/// take would be cut. Pingora's bounds are per read and per write, and its tunnel loop waits
/// for each side anew whenever a piece passes either way: the tunnel closes once both sides
/// have been silent that long. The wait for the `101` itself gets the same bound.
fn bound_tunnel_io(
    session: &mut Session,
    options: &mut pingora::upstreams::peer::PeerOptions,
    up: &nexus_config::UpstreamSettings,
) {
    options.read_timeout = Some(up.tunnel_idle_timeout);
    options.write_timeout = Some(up.tunnel_idle_timeout);
    session.set_read_timeout(Some(up.tunnel_idle_timeout));
}

/// Takes off an `Upgrade` that cannot start a tunnel, so that the request goes on as an
/// ordinary one:
/// - one the request's `Connection` does not name. RFC 9110 §7.8: a sender of `Upgrade`
///   names it in `Connection`, so that intermediaries do not pass it on; one that is not
///   named is no request of this client's to switch protocols. Pingora would make the switch
///   anyway (sending its own `Connection: Upgrade`), and a front proxy that passed a stray
///   `Upgrade` on would then have its connection turned into a tunnel to one tenant's
///   instance, with the requests it sends next on it (other clients' perhaps) carried there
///   unchecked;
/// - one on another method than `GET`, or with a body: a WebSocket handshake is a `GET`
///   without one (RFC 6455 §4.1). Pingora would switch a `HEAD` and give the tunnel a body
///   writer of length 0 (a `101` and a dead connection), and it would wait for an upgrade
///   request's body under the tunnel's idle bound (an hour) instead of `read_timeout`.
fn drop_unusable_upgrade(session: &mut Session) {
    let req = session.req_header();
    let named = header_bytes(&req.headers, &http::header::CONNECTION).any(|v| {
        v.split(|&b| b == b',')
            .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    let has_body = req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || header_bytes(&req.headers, &http::header::CONTENT_LENGTH)
            .any(|v| v.iter().any(|&b| b != b'0'));
    if !named || req.method != http::Method::GET || has_body {
        session
            .req_header_mut()
            .remove_header(&http::header::UPGRADE);
    }
}

/// Whether the instance is asked to switch protocols: exactly when Pingora forwards the
/// upgrade (its default `WebSocketOnly` policy): an HTTP/1.1 request whose `Upgrade` is
/// `websocket`, in any case. Pingora sends `Connection: Upgrade` itself, and strips any
/// other upgrade; an `Upgrade` that could start no tunnel is already gone
/// ([`drop_unusable_upgrade`]).
fn asks_for_upgrade(session: &Session) -> bool {
    let req = session.req_header();
    req.version == http::Version::HTTP_11
        && req
            .headers
            .get(http::header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// A request's values of one header: almost always one or none, so they stay on the stack.
fn header_values<'a>(
    req: &'a pingora::http::RequestHeader,
    name: &http::header::HeaderName,
) -> SmallVec<[&'a [u8]; 2]> {
    header_bytes(&req.headers, name).collect()
}

/// The values of every `name` field, as bytes.
fn header_bytes<'a>(
    headers: &'a http::HeaderMap,
    name: &http::HeaderName,
) -> impl DoubleEndedIterator<Item = &'a [u8]> {
    headers.get_all(name).iter().map(|v| v.as_bytes())
}

/// Whether the client has had a final response (or a `101`): after a `100 Continue` or a
/// `103 Early Hints` a final answer, an error page included, may still be written.
fn final_response_written(session: &Session) -> bool {
    session
        .response_written()
        .is_some_and(|r| !r.status.is_informational())
        || switched_protocols(session)
}

/// Whether the client has had a `101`: the connection is a tunnel now.
fn switched_protocols(session: &Session) -> bool {
    session
        .response_written()
        .is_some_and(|r| r.status == http::StatusCode::SWITCHING_PROTOCOLS)
}

/// Whether `e` is an upgraded connection (a WebSocket, after its `101`) that one side left
/// silent for longer than `[upstream] tunnel_idle_timeout`: Pingora ends such a tunnel with a
/// read or write timeout, of the instance's side or the client's.
fn tunnel_idled_out(session: &Session, e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    ) && switched_protocols(session)
}

/// Most interim (1xx) responses passed on for one request: a `100 Continue`, a few `103
/// Early Hints`, a `102 Processing` every few seconds of a long WebDAV operation fit well
/// within it; past it the instance's answer counts as invalid (a 502).
const MAX_INTERIM_RESPONSES: u16 = 100;

/// How a tunnel ended, for `tunnels_closed_total`: `e` is the error that ended it, if one
/// did, and `closed_by_router` why the router closed it, if it did.
fn tunnel_close(
    session: &Session,
    e: Option<&Error>,
    closed_by_router: Option<TunnelEnd>,
) -> TunnelClose {
    match (closed_by_router, e) {
        (Some(end), _) => TunnelClose::Router(end),
        (None, None) => TunnelClose::Ended,
        (None, Some(e)) if tunnel_idled_out(session, e) => TunnelClose::IdleTimeout,
        (None, Some(e)) if matches!(e.esource(), ErrorSource::Downstream) => {
            TunnelClose::ClientError
        }
        (None, Some(_)) => TunnelClose::InstanceError,
    }
}

/// An instance's answer the router will not pass on, as the error Pingora's parser gives for
/// one it cannot read: the client gets a 502, counted as `upstream_invalid`.
fn invalid_response(why: &'static str) -> Box<Error> {
    Error::create(
        ErrorType::InvalidHTTPHeader,
        ErrorSource::Upstream,
        Some(why.into()),
        None,
    )
}

/// Whether a proxying error is a TLS connection that ended without its `close_notify` (the
/// peer closed, or crashed, as a plain connection closes). rustls reports it as an unexpected
/// end of file, which Pingora, unlike a plain connection's end, never marks for a retry.
fn closed_without_close_notify(e: &Error) -> bool {
    if e.etype() != &ErrorType::ReadError || e.esource() != &ErrorSource::Upstream {
        return false;
    }
    // Pingora wraps its read error in another (with the peer); the system's is innermost.
    let mut cause = e.cause.as_deref();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::UnexpectedEof;
        }
        cause = match c.downcast_ref::<Box<Error>>() {
            Some(inner) => inner.cause.as_deref(),
            None => c
                .downcast_ref::<Error>()
                .and_then(|inner| inner.cause.as_deref()),
        };
    }
    false
}

/// Maps a proxying error to the rejection the client sees (`answered`: the instance's
/// response header has reached the client).
fn upstream_failure(e: &Error, answered: bool) -> RejectReason {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            RejectReason::UpstreamTimeout
        }
        // Pingora's parser, and this router's checks of a response, refuse what is not one.
        ErrorType::InvalidHTTPHeader if e.esource() == &ErrorSource::Upstream => {
            RejectReason::UpstreamInvalid
        }
        // A response body whose chunks do not parse, or that ends before its length or last
        // chunk (closed, reset, or a TLS connection ended without its close_notify): the
        // instance answered, with something that is not a whole response.
        _ if e.esource() == &ErrorSource::Upstream
            && (is_bad_chunk(e)
                || (answered
                    && matches!(
                        e.etype(),
                        ErrorType::ConnectionClosed | ErrorType::ReadError
                    ))) =>
        {
            RejectReason::UpstreamInvalid
        }
        _ => match e.esource() {
            ErrorSource::Upstream => RejectReason::UpstreamUnreachable,
            ErrorSource::Internal | ErrorSource::Unset | ErrorSource::Downstream => {
                RejectReason::Internal
            }
        },
    }
}

#[async_trait]
impl ProxyHttp for EdgeService {
    type CTX = RequestCtx;

    /// No downstream modules. Pingora's default installs its response compression module,
    /// disabled, and still builds, runs and drops it for every request (about 800 instructions
    /// and two allocations). The router never compresses: an instance's response body passes
    /// as the instance encoded it.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            request_id: HeaderValue::from_static(""),
            decision: None,
            rejected: None,
            failed: None,
            tried: Vec::new(),
            switched_at: None,
            tunnel_open: None,
            interim_responses: 0,
            tunnel_end: None,
            tunnel_keys: 0,
            connect_retry_said: AtomicBool::new(false),
            response_complete: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // Pingora keeps an HTTP/1.1 connection idle for as long as the client likes; bound it.
        // (A client's `Connection: close` still wins.)
        crate::connections::bound_idle_client(
            session,
            self.state.settings.server.keepalive_timeout,
        );
        // Pingora waits on a client that stops reading for as long as it likes (its writes
        // have no timeout by default), holding the instance connection that feeds it too.
        session.set_write_timeout(Some(self.state.settings.server.client_write_timeout));
        // RFC 9112 §9.3.2: a client may send its next request before this one's response.
        // Pingora's default drops it and closes the connection after this response; enabled,
        // the bytes already read become the next request on this connection, decided anew.
        session.set_pipelining_enabled(true);
        // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client, which would take it for the answer
        // (an instance may send one unasked; its expectation is answered by
        // `take_expectation`).
        if session.req_header().version < http::Version::HTTP_11 {
            session.set_ignore_info_resp(true);
        }
        self.close_if_draining(session);
        let header_size = crate::connections::header_read(session);
        let req = session.req_header();
        ctx.request_id = sane_request_id(req.headers.get_all(&crate::route::X_REQUEST_ID).iter())
            .cloned()
            .unwrap_or_else(|| self.ids.next_id());

        if session
            .req_header()
            .headers
            .contains_key(http::header::UPGRADE)
        {
            drop_unusable_upgrade(session);
            if asks_for_upgrade(session) {
                ctx.tunnel_keys = self.state.auth.key_generation();
            }
        }
        // A chunked body's framing lines are scanned as they arrive (see
        // `crate::connections`); those that came with the header already. (Not a request
        // for a tunnel: after a `101` its bytes are no body.)
        let chunks = if session
            .req_header()
            .headers
            .contains_key(http::header::TRANSFER_ENCODING)
            && !asks_for_upgrade(session)
        {
            crate::connections::chunked_body_begins(session)
        } else {
            Ok(())
        };
        let outcome = match (header_size, chunks) {
            (Err(HeaderTooLarge), _) => Err(RejectReason::HeaderTooLarge),
            (Ok(()), Err(crate::connections::BadChunkLine(why))) => {
                Err(RejectReason::BadFraming(FramingError::BadChunk(Some(why))))
            }
            (Ok(()), Ok(())) => self.decide_request(session, ctx.start),
        };
        match outcome {
            Ok(decision) => {
                ctx.decision = Some(decision);
                if take_expectation(session) {
                    // Pingora closes the connection after a response begun before the
                    // request's body was read, as the rest of the body would read as the next
                    // request. A `100 Continue` asks for that body, which forwarding reads
                    // whole, so it alone is let through; an early final answer still closes.
                    session.set_close_on_response_before_downstream_finish(false);
                    let sent = session.write_continue_response().await;
                    session.set_close_on_response_before_downstream_finish(true);
                    // A write that fails is the client going away (see `reject`).
                    sent.map_err(Error::into_down)?;
                }
                Ok(false)
            }
            Err(reason) => {
                log_rejection(&self.state.log_budgets, ctx, &reason);
                self.reject(session, ctx, reason, false).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let decision = ctx
            .decision
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no routing decision"))?;
        let url = decision.upstream_url();
        let addr = self
            .state
            .resolver
            .resolve(url, &ctx.tried)
            .await
            .map_err(|e| {
                // The instance is unreachable (502), not the router broken (500).
                Error::create(
                    ErrorType::ConnectNoRoute,
                    ErrorSource::Upstream,
                    Some("resolving the instance".into()),
                    Some(Box::new(e)),
                )
            })?;
        // The name is part of the connection pool's key, so instances with different names
        // never share a connection even at one address; for TLS it is also the SNI and the
        // name the certificate must carry (Pingora skips verification without one).
        let mut peer = HttpPeer::new(addr, url.is_tls(), url.host().to_owned());
        // Connections are pooled per tenant, and its anonymous callers' apart: see
        // `crate::pooling`.
        let caller = match decision.identity {
            Some(_) => crate::pooling::Caller::Member,
            None => crate::pooling::Caller::Anonymous,
        };
        peer.group_key =
            crate::pooling::tenant_group_key(decision.binding.tenant_id.as_str(), caller);
        let up = &self.state.settings.upstream;
        bound_instance_io(&mut peer.options, up);
        if asks_for_upgrade(session) {
            bound_tunnel_io(session, &mut peer.options, up);
        }
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        Ok(Box::new(peer))
    }

    /// A connect that failed (refused, unreachable, timed out, TLS handshake) never reached
    /// the instance, so any request may go again: to another address of the instance's name,
    /// when it has one this request has not tried (Pingora then asks [`Self::upstream_peer`]
    /// anew). Failures of the router's own (its sockets) are not retried. A certificate the
    /// name does not match is, though every address would show it: Pingora reports it as a
    /// handshake failure like any other, with the reason only in its message text.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let address_failed = matches!(
            e.etype(),
            ErrorType::ConnectRefused
                | ErrorType::ConnectTimedout
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError
                | ErrorType::TLSHandshakeFailure
                | ErrorType::TLSHandshakeTimedout
        );
        let (true, Some(decision), Some(addr)) = (
            address_failed,
            ctx.decision.as_ref(),
            peer.address().as_inet(),
        ) else {
            return e;
        };
        let again = self.state.resolver.connect_failed(
            decision.upstream_url(),
            *addr,
            &mut ctx.tried,
            Instant::now(),
        );
        if again {
            ctx.connect_retry_said.store(true, Ordering::Relaxed);
            let budgets = &self.state.log_budgets;
            budgets.write(RequestLine::ConnectRetry, |not_logged| {
                tracing::info!(
                    request_id = %ctx.id(),
                    address = %addr,
                    error = %e,
                    not_logged,
                    "instance address failed to connect; trying another"
                );
            });
            self.state.metrics.upstream_connect_retries.inc();
            e.set_retry(true);
        }
        e
    }

    /// Pingora's rule (an idempotent request whose body is still whole goes again after a
    /// pooled connection failed before any answer), with one more case: a pooled `https`
    /// connection that ends without TLS `close_notify` before the response header, as an
    /// instance that closes idle connections (or crashes) ends it. Pingora retries that only
    /// on a plain connection, so a request racing an instance's idle close failed with 502 on
    /// `https` where it went again on `http`.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
            return e;
        }
        if client_reused && session.response_written().is_none() && closed_without_close_notify(&e)
        {
            e.retry = pingora::RetryType::ReusedOnly;
        }
        e.retry.decide_reuse(client_reused);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let decision = ctx
            .decision
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no routing decision"))?;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let client = &upstream_request.headers;
        let trusted = &self.state.settings.server.trusted_proxies;
        let forwarded_for = crate::route::forwarded_for(
            peer,
            || header_bytes(client, &crate::route::X_FORWARDED_FOR),
            trusted,
        );
        let host = forwarded_host(client.get(http::header::HOST));
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        let proto = crate::route::forwarded_proto(
            tls,
            peer.is_some_and(|p| crate::route::is_trusted_proxy(p, trusted)),
            || header_bytes(client, &crate::route::X_FORWARDED_PROTO),
        );
        let fwd = Forwarding {
            forwarded_for,
            proto,
            host,
            request_id: &ctx.request_id,
            session_cookie: self.state.auth.session_cookie(),
        };
        rewrite_upstream_request(upstream_request, decision, fwd)?;
        // Pingora has taken the client's `Connection` off (a WebSocket handshake's is its
        // own, and such a request carries no body).
        if !session.is_body_empty()
            && crate::framing::closes_after(&upstream_request.method)
            && !upstream_request.headers.contains_key(http::header::UPGRADE)
        {
            upstream_request.insert_header(http::header::CONNECTION, "close")?;
        }
        Ok(())
    }

    /// Sends no more of the request's body once the instance has answered it whole: an
    /// instance that answers without reading the body (a 401, a 413, a handler that ignores
    /// it) and keeps its connection reads what comes next as its next request, and those are
    /// bytes the client wrote, identity headers included, which the router never checked. The
    /// client has its whole answer; the exchange ends there (see [`EARLY_ANSWER`]). An
    /// instance that streams its answer while it reads the body is not cut: its answer is
    /// not complete yet.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.response_complete {
            return Err(Error::explain(
                ErrorType::Custom(EARLY_ANSWER),
                "the instance answered before the request's body was sent: the rest is not",
            ));
        }
        self.check_tunnel(session, ctx)
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if end_of_stream && ctx.switched_at.is_none() {
            ctx.response_complete = true;
        }
        self.check_tunnel(session, ctx).map(|()| None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if upstream_response.status.as_u16() > 599 {
            // RFC 9110 §15: every valid status is within 100–599. Pingora's parser takes any
            // three digits; passed on, a client could not tell what the response means.
            return Err(invalid_response("a status outside 100-599"));
        }
        if upstream_response.status.is_informational()
            && upstream_response.status != http::StatusCode::SWITCHING_PROTOCOLS
        {
            // Each interim response is a read from the instance, so none of them lets
            // read_timeout fire: without a bound an instance sending `102`s for ever held the
            // request, and its client connection, for ever (streaming them to the client).
            ctx.interim_responses = ctx.interim_responses.saturating_add(1);
            if ctx.interim_responses > MAX_INTERIM_RESPONSES {
                return Err(invalid_response(
                    "more interim (1xx) responses than the router passes on",
                ));
            }
        }
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS
            && !asks_for_upgrade(session)
        {
            // RFC 9110 §7.8: a switch the client did not ask for (or, on HTTP/1.0, cannot
            // make). Passed on, the client would get the 101 and then the instance's bytes
            // as whatever it takes them for.
            return Err(invalid_response(
                "a 101 to a request that asked for no upgrade",
            ));
        }
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(why) = switch_fault(upstream_response) {
                return Err(invalid_response(why));
            }
        }
        remove_hop_by_hop(upstream_response);
        if upstream_response.status == http::StatusCode::NO_CONTENT
            || upstream_response.status.is_informational()
        {
            // RFC 9110 §8.6, RFC 9112 §6.1: a 1xx or a 204 carries no Content-Length nor
            // Transfer-Encoding. Pingora sends no body after it anyway; either header would
            // only tell the client to wait for bytes that never come (after a 1xx, it would
            // take the final response for them).
            upstream_response.remove_header(&http::header::CONTENT_LENGTH);
            upstream_response.remove_header(&http::header::TRANSFER_ENCODING);
        }
        if let Some(why) = framing_fault(upstream_response) {
            return Err(invalid_response(why));
        }
        // RFC 9110 §6.2: the router answers in its own version, not the instance's (an
        // HTTP/1.0 instance's `HTTP/1.0 200` would have the client send its next requests
        // as HTTP/1.0 and lose keep-alive). An HTTP/1.0 client is answered by its rules
        // below, whatever the status line says.
        upstream_response.set_version(http::Version::HTTP_11);
        canonicalise_content_length(upstream_response)?;
        let dropped = drop_shared_cookies(
            upstream_response,
            self.state.auth.session_cookie(),
            &self.state.settings.tenancy.base_domains,
        );
        if dropped > 0 {
            self.state
                .log_budgets
                .write(RequestLine::SharedCookie, |not_logged| {
                    tracing::warn!(
                        request_id = %ctx.id(),
                        tenant = %ctx.tenant(),
                        dropped,
                        not_logged,
                        "the instance set a cookie for a base domain, or the session cookie with a Domain (it would reach other tenants' hosts): not passed on"
                    );
                });
        }
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            ctx.switched_at = Some(Instant::now());
            ctx.tunnel_open = Some(self.state.metrics.tunnels.opened());
        }
        let bodiless = session.req_header().method == http::Method::HEAD
            || upstream_response.status.is_informational()
            || upstream_response.status == http::StatusCode::NO_CONTENT
            || upstream_response.status == http::StatusCode::NOT_MODIFIED;
        // A final answer without a body is complete with its header: no body filter follows.
        let empty = upstream_response
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        if !upstream_response.status.is_informational()
            && upstream_response.status != http::StatusCode::SWITCHING_PROTOCOLS
            && (bodiless || empty)
        {
            ctx.response_complete = true;
        }
        if !bodiless && ends_with_connection(&upstream_response.headers) {
            // The body has no length (RFC 9112 §6.3): Pingora reads it to the instance's
            // close and writes it on unframed, so only the client's close can end it too.
            // Kept alive, the client could wait for that close, or take the next response
            // for more of this body. (A response to HEAD, a 1xx, 204 or 304 has no body
            // whatever its header says: its connection stays.)
            session.set_keepalive(None);
        }
        if session.req_header().version < http::Version::HTTP_11
            && upstream_response
                .headers
                .contains_key(http::header::TRANSFER_ENCODING)
        {
            // RFC 9112 §6.1: no chunked coding to an HTTP/1.0 client (Pingora turns a body
            // without a length into chunks for every client). The body ends with the
            // connection instead.
            upstream_response.remove_header(&http::header::TRANSFER_ENCODING);
            session.set_keepalive(None);
        }
        // Again here: the signal may have come while the instance answered.
        self.close_if_draining(session);
        upstream_response.insert_header("x-request-id", ctx.request_id.clone())?;
        // The notice is the router's to give: the instance's own copy would tell an active
        // tenant's app it is past due.
        let notice = &self.state.settings.tenancy.past_due_header;
        if let Some(BillingNotice::PastDue) = ctx.decision.as_ref().and_then(|d| d.notice) {
            upstream_response.insert_header(notice.clone(), "past_due")?;
        } else if upstream_response.headers.contains_key(notice.as_str()) {
            upstream_response.remove_header(notice.as_str());
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let early = matches!(e.etype(), ErrorType::Custom(EARLY_ANSWER));
        if early
            || (ctx.response_complete
                && ctx.switched_at.is_none()
                && matches!(e.esource(), ErrorSource::Downstream))
        {
            // Not a failure: the instance answered in full, and the client has that answer
            // (one that stops sending and goes away then has it too). Its connection closes
            // (its body was not read to the end), as does the instance's (it was not sent
            // the whole request).
            tracing::debug!(request_id = %ctx.id(), "instance answered before the request body was sent");
            if early {
                // What the client still sends is read and dropped for a while first: closed
                // with unread bytes, the connection is reset, and a reset can take the answer
                // with it before the client reads it (RFC 9112 §9.6).
                let _ =
                    tokio::time::timeout(EARLY_ANSWER_LINGER, session.drain_request_body()).await;
            }
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if let Some(end) = ctx.tunnel_end {
            // Closed by the router: the tenant is no longer routed where the tunnel goes, or
            // its token is no longer accepted. A rebind closes every tunnel of the tenant at
            // once: within the allowance.
            self.state
                .log_budgets
                .write(RequestLine::TunnelClosed, |not_logged| {
                    tracing::info!(
                        request_id = %ctx.id(),
                        tenant = %ctx.tenant(),
                        reason = %end,
                        not_logged,
                        "tunnel closed: it would no longer be routed as opened"
                    );
                });
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if tunnel_idled_out(session, e) {
            // The tunnel ended as configured (`tunnel_idle_timeout`), not by a failure.
            tracing::debug!(request_id = %ctx.id(), "tunnel closed after tunnel_idle_timeout");
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if let Some(reason) =
            late_client_fault(session, e).filter(|_| !final_response_written(session))
        {
            // The client's request is at fault, and the client is there to be told so.
            log_rejection(&self.state.log_budgets, ctx, &reason);
            let code = reason.status();
            if let Err(err) = self.reject(session, ctx, reason, true).await {
                tracing::debug!(error = %err, "could not send the error response");
            }
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        let reason = match e.esource() {
            ErrorSource::Downstream => {
                // The client went away or sent garbage: nothing useful to answer.
                tracing::debug!(
                    request_id = %ctx.id(),
                    error = %LoggedError(e),
                    "client connection failed"
                );
                ctx.failed = Some(CLIENT_CLOSED);
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
            _ => upstream_failure(
                e,
                final_response_written(session) && ctx.switched_at.is_none(),
            ),
        };
        let budgets = &self.state.log_budgets;
        budgets.write(RequestLine::Reason(reason.label()), |not_logged| {
            let tenant = ctx.tenant();
            if reason == RejectReason::Internal {
                // A fault of the router itself: an error, unlike an instance's failure.
                tracing::error!(
                    request_id = %ctx.id(),
                    tenant = %tenant,
                    error = %LoggedError(e),
                    not_logged,
                    "request failed inside the router"
                );
            } else {
                tracing::warn!(
                    request_id = %ctx.id(),
                    tenant = %tenant,
                    reason = reason.label(),
                    error = %LoggedError(e),
                    not_logged,
                    "upstream failed"
                );
            }
        });
        let code = reason.status();
        if final_response_written(session) {
            // The instance's status and headers are out: an error page now would become the
            // end of its body (a complete-looking 200, even cacheable). The connection is
            // dropped instead, without a final chunk, so the client sees the cut.
            ctx.failed = Some(reason.label());
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if let Err(err) = self.reject(session, ctx, reason, true).await {
            tracing::debug!(error = %err, "could not send the error response");
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Pingora's WARN line for each attempt it sends again: one per request and attempt, so
    /// it would let anyone who can make an instance fail (a public path needs no token) write
    /// the log at the rate of their requests. A connect tried at another address has been
    /// said by [`Self::fail_to_connect`]; any other retry (a pooled instance connection that
    /// broke) is said here, both within their reasons' allowance ([`crate::log_budget`]).
    fn suppress_proxy_warn_log(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        // Only retries are the router's to say; anything else (a cache's, which the router
        // has none of) stays Pingora's.
        if !matches!(context, ProxyWarnLogContext::UpstreamRetry) {
            return false;
        }
        if ctx.connect_retry_said.swap(false, Ordering::Relaxed) {
            return true;
        }
        let budgets = &self.state.log_budgets;
        budgets.write(RequestLine::UpstreamRetry, |not_logged| {
            tracing::warn!(
                request_id = %ctx.id(),
                method = %session.req_header().method,
                error = %LoggedError(error),
                not_logged,
                "instance connection failed; the request is sent again"
            );
        });
        true
    }

    /// Every failure Pingora would log at its end has been logged by [`Self::fail_to_proxy`],
    /// which Pingora calls first, without the raw instance bytes Pingora's line can carry.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _e: &Error) -> bool {
        true
    }

    /// What Pingora's own log lines say of the request, should one be written (its retry and
    /// failure lines are the router's own now): its method and id. Pingora's default has the whole
    /// target, and a path can hold a secret as well as a query can (a magic-link token, a
    /// reset code, a signed URL), which logs must never carry; the router logs no paths.
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        format!("{}, request_id: {}", session.req_header().method, ctx.id())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        crate::connections::request_done(session);
        // A tunnel's request ended with its `101`.
        let end = ctx.switched_at.unwrap_or_else(Instant::now);
        let elapsed = end.saturating_duration_since(ctx.start).as_secs_f64();
        let m = &self.state.metrics;
        if ctx.tunnel_open.take().is_some() {
            m.tunnels.closed(tunnel_close(session, e, ctx.tunnel_end));
        }
        match (&ctx.rejected, ctx.failed) {
            // A 502, 504 or 500: forwarded and failed, answered by the router.
            (Some(r), _) if r.is_forwarding_failure() => {
                m.requests.with_label_values(&[r.label()]).inc();
                m.failed_duration.observe(elapsed);
            }
            (Some(r), _) => {
                m.requests.with_label_values(&[r.label()]).inc();
                m.rejected_duration.observe(elapsed);
            }
            (None, Some(label)) => {
                m.requests.with_label_values(&[label]).inc();
                m.failed_duration.observe(elapsed);
            }
            (None, None) => {
                m.forwarded.inc();
                m.forwarded_duration.observe(elapsed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use pingora::modules::http::compression::ResponseCompression;

    use super::*;

    #[test]
    fn no_downstream_module_is_built_per_request() {
        let settings = nexus_config::embedded_default();
        let store = crate::store::Store::open(&settings.store).expect("embedded store");
        let state = crate::server::prepare(settings, &store.source()).expect("state");
        let mut modules = HttpModules::new();
        EdgeService::new(state).init_downstream_modules(&mut modules);
        let ctx = modules.build_ctx();
        assert!(ctx.get::<ResponseCompression>().is_none());
    }
}
