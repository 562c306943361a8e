//! The Pingora `ProxyHttp` glue. It only orchestrates: every decision is made by
//! [`crate::decision::decide`], every header rule lives in [`crate::route`], every
//! rejection's shape in [`crate::errors`].
//!
//! Beside it: `ctx` (what a request carries between phases), `request` (reading the client's
//! request), `upgrade` (WebSocket requests and their tunnels) and `failures` (what a failure
//! while forwarding was).

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

use crate::auth::{extract_token, TokenError};
use crate::connections::HeaderTooLarge;
use crate::decision::{address, decide, decide_addressed, Decision, RequestFacts};
use crate::errors::RejectReason;
use crate::framing::{check_transfer_coding, ends_with_connection, FramingError};
use crate::log_budget::{LogBudgets, RequestLine};
use crate::logging::LoggedError;
use crate::method::Overridden;
use crate::policy::BillingNotice;
use crate::response::{
    canonicalise_content_length, drop_shared_cookies, echo_fault, framing_fault, remove_hop_by_hop,
    switch_fault,
};
use crate::route::{
    forwarded_host, rewrite_upstream_request, sane_request_id, Forwarding, RequestIds,
};
use crate::state::EdgeState;
use crate::tunnel::{still_routed, token_still_accepted};

mod body;
mod ctx;
mod failures;
mod request;
mod upgrade;

pub use ctx::RequestCtx;
use failures::{
    closed_without_close_notify, invalid_response, late_client_fault, out_of_resources,
    upstream_failure,
};
use request::{header_bytes, header_values, request_target, take_expectation, token_header_values};
use upgrade::{
    asks_for_upgrade, bound_tunnel_io, drop_unusable_upgrade, final_response_written, tunnel_close,
    tunnel_idled_out, MAX_INTERIM_RESPONSES,
};

/// Whether a decision is observed in `decision_duration` (a request decided again, after
/// a key set fetch it waited for, is observed once: at its first decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timed {
    Yes,
    No,
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
        if let Some(cors) = &self.state.cors {
            // The pages the policy allows may read the refusal (a 401 that sends them to
            // sign in again).
            cors.set_response_headers(&mut resp, ctx.cors_origin.as_ref())?;
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

    /// Counts `sent` for the instance the request was decided for (see [`crate::scale`]).
    fn count_for_instance(&self, ctx: &RequestCtx, sent: crate::scale::Sent) {
        if let Some(decision) = &ctx.decision {
            self.state.scale.record(&decision.binding.instance_id, sent);
        }
    }

    /// Answers an allowed CORS preflight with `answer` (see [`crate::cors`]): no instance asked.
    async fn answer_preflight(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut answer: Box<ResponseHeader>,
    ) -> Result<()> {
        answer.insert_header("x-request-id", ctx.request_id.clone())?;
        ctx.preflight_answered = true;
        // A preflight has no body; one sent anyway is not read, and would read as the next
        // request.
        if !session.is_body_empty() {
            session.set_keepalive(None);
        }
        session
            .write_response_header(answer, true)
            .await
            .map_err(Error::into_down)
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
                        &token_header_values(req, auth.token_places()),
                        &header_values(req, &http::header::SEC_WEBSOCKET_PROTOCOL),
                        auth.token_places(),
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

    /// Gathers the request's facts and decides it, and under a `[cors]` policy which pages may
    /// read the answer (`ctx.cors_origin`), or answers a preflight. The decision's duration is
    /// measured from `ctx.start`, when the request was read (one clock read fewer per request
    /// than timing `decide` alone, and the gathering is part of deciding).
    fn decide_request(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        timed: Timed,
    ) -> Result<Routed, RejectReason> {
        let req = session.req_header();
        if crate::method::is_echo(&req.method) {
            return Err(RejectReason::TraceRefused);
        }
        match crate::method::refused_override_of(&req.method, &req.headers, req.uri.query()) {
            None => {}
            Some(Overridden::Echo) => return Err(RejectReason::TraceRefused),
            Some(Overridden::Connect) => return Err(RejectReason::ConnectRefused),
            Some(Overridden::Head) => {
                return Err(RejectReason::BadFraming(FramingError::HeadOverride));
            }
        }
        if crate::method::is_connect(&req.method) {
            return Err(RejectReason::ConnectRefused);
        }
        if crate::framing::is_miscased_method(&req.method) {
            return Err(RejectReason::BadFraming(FramingError::MiscasedMethod));
        }
        // Before the tenant: a body the instance would read otherwise than the router is
        // refused whoever it is addressed to.
        check_transfer_coding(&req.headers).map_err(RejectReason::BadFraming)?;
        if crate::method::refuses_body_of(
            &req.method,
            &self.state.settings.upstream.extension_methods_with_bodies,
        ) && crate::framing::has_body(&req.headers)
        {
            return Err(RejectReason::ExtensionMethodBody);
        }
        if crate::nominations::names_framing(&req.headers) {
            return Err(RejectReason::BadFraming(FramingError::FramingNominated));
        }
        if crate::nominations::is_refused(&req.headers) {
            return Err(RejectReason::MalformedHeader);
        }
        let host_headers = header_values(req, &http::header::HOST);
        let authorization = header_values(req, &http::header::AUTHORIZATION);
        let cookies = header_values(req, &http::header::COOKIE);
        let token_headers = token_header_values(req, self.state.auth.token_places());
        let subprotocols = header_values(req, &http::header::SEC_WEBSOCKET_PROTOCOL);
        let origins = header_values(req, &http::header::ORIGIN);
        let fetch_sites = header_values(req, &SEC_FETCH_SITE);
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
                    token_headers: &token_headers,
                    subprotocols: &subprotocols,
                    origins: &origins,
                    fetch_sites: &fetch_sites,
                    now_unix: now_unix(),
                    server_name: crate::https::server_name(session),
                };
                let table = self.state.bindings.load();
                let tenancy = &self.state.settings.tenancy;
                let auth = &self.state.auth;
                let observe = || {
                    if timed == Timed::Yes {
                        let m = &self.state.metrics;
                        m.decision_duration
                            .observe(ctx.start.elapsed().as_secs_f64());
                    }
                };
                let Some(cors) = &self.state.cors else {
                    let d = decide(&facts, tenancy, &table, auth);
                    observe();
                    return d.map(Routed::Forward);
                };
                // Under a CORS policy the tenant decides which pages may read the answer,
                // whatever the answer is.
                let addressed = address(&facts, tenancy, &table);
                let tenant = addressed
                    .as_ref()
                    .ok()
                    .map(|a| a.binding().tenant_id.as_str());
                let client_https = || self.client_scheme(session, &req.headers) == "https";
                let allowed = cors.allowed_origin(&origins, tenant, client_https, tenancy, &table);
                if crate::cors::is_preflight(req) {
                    // Answered whatever the tenant's status and the path: the request the
                    // preflight asks about is decided when it comes, its refusal readable.
                    addressed?;
                    observe();
                    let allowed = allowed.ok_or(RejectReason::CorsOriginRefused)?;
                    // Building it fails only for a header value that is no value, which none
                    // of these is.
                    return (cors.preflight_answer(&allowed))
                        .map(|answer| Routed::Preflight(Box::new(answer)))
                        .map_err(|_| RejectReason::Internal);
                }
                ctx.cors_origin = allowed;
                let d = addressed.and_then(|a| decide_addressed(&facts, a, tenancy, &table, auth));
                observe();
                d.map(Routed::Forward)
            }
        }
    }

    /// For a token naming an unknown `kid`, decided with the key set of generation `seen`
    /// (taken only for a fetched key set): whether a newer one is in use, from the provider.
    async fn keys_refreshed(&self, seen: Option<u64>) -> bool {
        match (&self.state.remote_keys, seen) {
            (Some(remote), Some(seen)) => {
                remote
                    .refreshed_for_unknown_kid(&self.state.auth, seen)
                    .await
            }
            _ => false,
        }
    }

    /// The scheme the client reached the router by, `https` or `http` (see
    /// [`crate::route::forwarded_proto`]); `client` is the client's header.
    fn client_scheme(&self, session: &Session, client: &http::HeaderMap) -> &'static str {
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        let trusted = &self.state.settings.server.trusted_proxies;
        crate::route::forwarded_proto(
            tls,
            peer_ip(session).is_some_and(|p| crate::route::is_trusted_proxy(p, trusted)),
            || header_bytes(client, &crate::route::X_FORWARDED_PROTO),
        )
    }
}

/// The client's address (the peer of its connection), when it is an IP one.
fn peer_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// What deciding a request came to, when it was not refused.
enum Routed {
    /// Forward it.
    Forward(Decision),
    /// A CORS preflight the router answers itself with this (see [`crate::cors`]).
    Preflight(Box<ResponseHeader>),
}

/// Where a browser says a request comes from (Fetch Metadata), for [`crate::origin`].
static SEC_FETCH_SITE: http::HeaderName = http::HeaderName::from_static("sec-fetch-site");

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
            instance_connection_reused: None,
            body_length: None,
            long_header: false,
            cors_origin: None,
            preflight_answered: false,
            sent_at: None,
            body_sent_at: None,
            answered: None,
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
        crate::connections::bound_client_writes(
            session,
            self.state.settings.server.client_write_timeout,
        );
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
        let raw = (session.as_downstream().as_http1()).map(|h1| h1.get_headers_raw_bytes());
        // Its length as it came; over HTTP/2, where no raw header is kept, its fields'.
        let fields = &session.req_header().headers;
        let length = raw.as_ref().map_or_else(
            || fields.iter().map(|(n, v)| n.as_str().len() + v.len()).sum(),
            Bytes::len,
        );
        ctx.long_header = crate::route::is_long(fields.len(), length);
        let header_size = crate::connections::header_read(session, raw.as_deref());
        let line_ends = raw
            .as_deref()
            .map_or(Ok(()), crate::framing::check_line_ends);
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
        // The key set the decision below is made with (or an older one), for a fetched one
        // (a key file's is never asked for again: no load on its routers' requests).
        let keys_seen = (self.state.remote_keys.as_ref()).map(|_| self.state.auth.key_generation());
        let outcome = match (header_size, line_ends, chunks) {
            (Err(HeaderTooLarge), _, _) => Err(RejectReason::HeaderTooLarge),
            (Ok(()), Err(e), _) => Err(RejectReason::BadFraming(e)),
            (Ok(()), Ok(()), Err(crate::connections::BadChunkLine(why))) => {
                Err(RejectReason::BadFraming(FramingError::BadChunk(Some(why))))
            }
            (Ok(()), Ok(()), Ok(())) => self.decide_request(session, ctx, Timed::Yes),
        };
        // A token signed by a key the set does not hold yet: the provider may have rotated
        // it in since the last fetch. Asked for (as often as `jwks_min_refresh_interval`
        // lets), and decided again if a new key set came (or came meanwhile).
        let outcome = match outcome {
            Err(RejectReason::InvalidToken(TokenError::UnknownKey))
                if self.keys_refreshed(keys_seen).await =>
            {
                // Not timed again: `decision_duration` is the decision's cost, once per
                // request, not the fetch waited for.
                self.decide_request(session, ctx, Timed::No)
            }
            outcome => outcome,
        };
        let reason = match outcome {
            Ok(Routed::Preflight(answer)) => {
                self.answer_preflight(session, ctx, answer).await?;
                return Ok(true);
            }
            Ok(Routed::Forward(decision)) => {
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
                match body::read_if_chunked(session, &self.state.settings.upstream).await {
                    Ok(length) => {
                        ctx.body_length = length;
                        return Ok(false);
                    }
                    Err(body::Unread::ClientGone(e)) => return Err(e),
                    Err(body::Unread::Refused(reason)) => reason,
                }
            }
            Err(reason) => reason,
        };
        log_rejection(&self.state.log_budgets, ctx, &reason);
        self.reject(session, ctx, reason, false).await?;
        Ok(true)
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
        let now = Instant::now();
        ctx.sent_at.get_or_insert(now);
        if session.is_body_empty() {
            ctx.body_sent_at.get_or_insert(now);
        }
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
        // A router out of descriptors or buffers fails every address alike: no address is
        // to blame, nor to pass over for the next 10 s.
        let address_failed = matches!(
            e.etype(),
            ErrorType::ConnectRefused
                | ErrorType::ConnectTimedout
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError
                | ErrorType::TLSHandshakeFailure
                | ErrorType::TLSHandshakeTimedout
        ) && !out_of_resources(&e);
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

    /// Notes whether this attempt found an idle connection of its pool or opened one; the
    /// request is counted once it ends, by its last attempt (see [`crate::metrics`]).
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.instance_connection_reused = Some(reused);
        Ok(())
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
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
            return e;
        }
        // Nothing of the instance's answer has reached the client: no response, or only the
        // `100 Continue` the router wrote itself (see `take_expectation`), which Pingora
        // counts as a response written.
        let unanswered = session
            .response_written()
            .is_none_or(|r| r.status == http::StatusCode::CONTINUE && ctx.interim_responses == 0);
        if client_reused && unanswered && closed_without_close_notify(&e) {
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
        let client = &upstream_request.headers;
        let forwarded_for = crate::route::forwarded_for(
            peer_ip(session),
            || header_bytes(client, &crate::route::X_FORWARDED_FOR),
            &self.state.settings.server.trusted_proxies,
        );
        let host = forwarded_host(client.get(http::header::HOST));
        let proto = self.client_scheme(session, client);
        let fwd = Forwarding {
            forwarded_for,
            proto,
            host,
            request_id: &ctx.request_id,
            token_places: self.state.auth.token_places(),
            long: ctx.long_header,
        };
        rewrite_upstream_request(upstream_request, decision, fwd)?;
        if let Some(length) = ctx.body_length {
            // Read whole (see `body`): sent with its length, not chunked.
            upstream_request.remove_header(&http::header::TRANSFER_ENCODING);
            upstream_request.insert_header(http::header::CONTENT_LENGTH, length.to_string())?;
        }
        // Pingora has taken the client's `Connection` off (a WebSocket handshake's is its
        // own, and such a request carries no body).
        if !session.is_body_empty()
            && crate::framing::closes_after(
                &upstream_request.method,
                &self.state.settings.upstream.extension_methods_kept_alive,
            )
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
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if end_of_stream {
            ctx.body_sent_at.get_or_insert_with(Instant::now);
        }
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
        let status = upstream_response.status;
        if (!status.is_informational() || status == http::StatusCode::SWITCHING_PROTOCOLS)
            && ctx.answered.is_none()
        {
            ctx.answered = Some(status);
            self.count_for_instance(
                ctx,
                crate::scale::Sent::Answered {
                    latency: ctx.waiting_since().elapsed(),
                    failed: fails(status),
                },
            );
        }
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
        if let Some(why) = echo_fault(upstream_response) {
            return Err(invalid_response(why));
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
            self.state.auth.token_places(),
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
        if let Some(cors) = self
            .state
            .cors
            .as_ref()
            .filter(|_| !upstream_response.status.is_informational())
        {
            cors.set_response_headers(upstream_response, ctx.cors_origin.as_ref())?;
        }
        let tenancy = &self.state.settings.tenancy;
        if tenancy.frame_ancestors == nexus_config::FrameAncestors::Tenant
            && !upstream_response.status.is_informational()
            && !crate::frames::instance_denies(&upstream_response.headers)
        {
            if let Some(decision) = &ctx.decision {
                let policy = crate::frames::policy(&decision.binding, tenancy);
                upstream_response.append_header("Content-Security-Policy", policy)?;
            }
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
        if ctx.switched_at.is_some() && matches!(e.esource(), ErrorSource::Upstream) {
            // The instance answered 101 and served the tunnel, then ended it abruptly: a
            // reset, or TLS closed without close_notify, as many servers close after a
            // WebSocket's own close. Counted as the tunnel's `instance_error` end; the request
            // was served. As an upstream failure it read as an instance out of reach.
            tracing::debug!(request_id = %ctx.id(), error = %LoggedError(e),
                "tunnel ended by the instance with an error");
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
            _ => upstream_failure(e, final_response_written(session)),
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
        match ctx.instance_connection_reused {
            Some(true) => m.instance_connections_reused.inc(),
            Some(false) => m.instance_connections_new.inc(),
            None => {}
        }
        if let Some(sent) = ended(ctx, e) {
            self.count_for_instance(ctx, sent);
        }
        match (&ctx.rejected, ctx.failed) {
            (None, None) if ctx.preflight_answered => {
                m.preflights.inc();
                m.preflight_duration.observe(elapsed);
            }
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

/// Whether an instance's status fails its request, for the 5xx SLO.
fn fails(status: http::StatusCode) -> bool {
    status.is_server_error() || status.as_u16() > 599
}

/// How the request ended, as its instance's signals see it, where its response header did
/// not already say (see [`crate::scale::Sent`]): an answer that then broke off or proved
/// invalid is a failure; without an answer, a timeout is as slow as it took (the slowest
/// answer there is, not no answer), an instance out of reach (a connect that timed out
/// too) a failure with no latency, and a client gone first, once its whole request was
/// sent, as slow as it waited. A request refused before it was sent, a failure of the
/// router's own, and a client gone during its own upload count nothing: none is the
/// instance's doing.
fn ended(ctx: &RequestCtx, e: Option<&Error>) -> Option<crate::scale::Sent> {
    use crate::scale::Sent;
    const OF_INSTANCE: [RejectReason; 3] = [
        RejectReason::UpstreamUnreachable,
        RejectReason::UpstreamInvalid,
        RejectReason::UpstreamTimeout,
    ];
    let of_instance = |r: &RejectReason| OF_INSTANCE.contains(r);
    let broke_off = ctx.rejected.as_ref().is_some_and(of_instance)
        || ctx
            .failed
            .is_some_and(|label| OF_INSTANCE.iter().any(|r| r.label() == label));
    let connect_timed_out = e.is_some_and(|e| e.etype() == &ErrorType::ConnectTimedout);
    match (ctx.answered, &ctx.rejected) {
        // Counted failed already, with its header.
        (Some(status), _) if fails(status) => None,
        (Some(_), _) if broke_off => Some(Sent::BrokeOff),
        (Some(_), _) => None,
        (None, Some(RejectReason::UpstreamTimeout)) if !connect_timed_out => {
            Some(Sent::TimedOut(ctx.waiting_since().elapsed()))
        }
        (None, Some(r)) if of_instance(r) => Some(Sent::Unanswered),
        (None, None)
            if ctx.failed == Some(CLIENT_CLOSED)
                && ctx.sent_at.is_some()
                && ctx.body_sent_at.is_some() =>
        {
            Some(Sent::Abandoned(ctx.waiting_since().elapsed()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use pingora::modules::http::compression::ResponseCompression;

    use super::*;

    /// How each way a request ends is counted for its instance (see [`ended`]): once, and
    /// only as what the instance did.
    #[test]
    fn each_end_of_a_request_is_counted_for_its_instance_as_its_own() {
        use crate::scale::Sent;
        let settings = nexus_config::embedded_default();
        let store = crate::store::Store::open(&settings.store).expect("embedded store");
        let state = crate::server::prepare(settings, &store.source()).expect("state");
        let service = EdgeService::new(state);
        let ok = Some(http::StatusCode::OK);
        let bad_gateway = Some(http::StatusCode::BAD_GATEWAY);
        let read = Error::explain(ErrorType::ReadTimedout, "read");
        let connect = Error::explain(ErrorType::ConnectTimedout, "connect");
        let (timeout, unreachable, invalid, internal, refused) = (
            Some(RejectReason::UpstreamTimeout),
            Some(RejectReason::UpstreamUnreachable),
            Some(RejectReason::UpstreamInvalid),
            Some(RejectReason::Internal),
            Some(RejectReason::Unavailable),
        );
        // (what, answered, rejected, failed, error, body sent, counted as)
        let cases = [
            ("ended well", ok, None, None, None, true, "nothing more"),
            (
                "a 5xx cut short",
                bad_gateway,
                None,
                Some("upstream_invalid"),
                None,
                true,
                "nothing more",
            ),
            (
                "body cut short",
                ok,
                None,
                Some("upstream_invalid"),
                None,
                true,
                "broke off",
            ),
            (
                "invalid after its header",
                ok,
                invalid.clone(),
                None,
                None,
                true,
                "broke off",
            ),
            (
                "client gone after the header",
                ok,
                None,
                Some(CLIENT_CLOSED),
                None,
                true,
                "nothing more",
            ),
            (
                "timed out",
                None,
                timeout.clone(),
                None,
                Some(&read),
                true,
                "timed out",
            ),
            (
                "connect timed out",
                None,
                timeout,
                None,
                Some(&connect),
                true,
                "unanswered",
            ),
            (
                "out of reach",
                None,
                unreachable,
                None,
                None,
                true,
                "unanswered",
            ),
            ("no response", None, invalid, None, None, true, "unanswered"),
            (
                "the router's own failure",
                None,
                internal,
                None,
                None,
                true,
                "nothing",
            ),
            (
                "refused before sending",
                None,
                refused,
                None,
                None,
                false,
                "nothing",
            ),
            (
                "client gone once its request was sent",
                None,
                None,
                Some(CLIENT_CLOSED),
                None,
                true,
                "abandoned",
            ),
            (
                "client gone during its upload",
                None,
                None,
                Some(CLIENT_CLOSED),
                None,
                false,
                "nothing",
            ),
        ];
        for (what, answered, rejected, failed, e, body_sent, want) in cases {
            let mut ctx = service.new_ctx();
            ctx.sent_at = Some(Instant::now());
            ctx.body_sent_at = body_sent.then(Instant::now);
            ctx.answered = answered;
            ctx.rejected = rejected;
            ctx.failed = failed;
            let got = match ended(&ctx, e.map(|e| &**e)) {
                None if answered.is_some() => "nothing more",
                None => "nothing",
                Some(Sent::BrokeOff) => "broke off",
                Some(Sent::TimedOut(_)) => "timed out",
                Some(Sent::Unanswered) => "unanswered",
                Some(Sent::Abandoned(_)) => "abandoned",
                Some(Sent::Answered { .. }) => "answered again",
            };
            assert_eq!(got, want, "{what}");
        }
    }

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
