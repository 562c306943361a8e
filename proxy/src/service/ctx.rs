//! The state one request carries from one Pingora phase to the next.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use http::HeaderValue;

use crate::decision::Decision;
use crate::errors::RejectReason;
use crate::metrics::OpenTunnel;
use crate::tunnel::TunnelEnd;

/// Per-request state carried between Pingora phases.
#[derive(Debug)]
pub struct RequestCtx {
    pub(super) start: Instant,
    /// The request's id, as sent upstream and in every response (cloning it is a refcount).
    pub(super) request_id: HeaderValue,
    pub(super) decision: Option<Decision>,
    pub(super) rejected: Option<RejectReason>,
    /// How a forwarded request failed once its answer could no longer be an error response
    /// (the instance's status was out) or the client was gone: the `requests_total` outcome.
    pub(super) failed: Option<&'static str>,
    /// Instance addresses this request failed to connect to (empty unless one did).
    pub(super) tried: Vec<SocketAddr>,
    /// When the instance switched protocols (its `101`): the request's duration ends there,
    /// as the tunnel after it may live for hours and is no measure of the instance's latency.
    pub(super) switched_at: Option<Instant>,
    /// Why the router closed this request's tunnel, when it did (see [`crate::tunnel`]).
    pub(super) tunnel_end: Option<TunnelEnd>,
    /// This request's tunnel in `tunnels_open`, from its `101` until the context goes.
    pub(super) tunnel_open: Option<OpenTunnel>,
    /// Interim (1xx) responses the instance sent so far, up to
    /// [`MAX_INTERIM_RESPONSES`](super::upgrade::MAX_INTERIM_RESPONSES).
    pub(super) interim_responses: u16,
    /// For a request asking for an upgrade: the key-set generation its token was last
    /// verified under (read before the decision), so that a tunnel re-verifies it after the
    /// keys change. 0, which no key set has, for every other request.
    pub(super) tunnel_keys: u64,
    /// Set when a failed connect is to be tried at another address, which the router has
    /// said itself: Pingora's own line for that retry, which follows, is then not written
    /// (see [`suppress_proxy_warn_log`](super::EdgeService)). Atomic because Pingora asks with the
    /// context borrowed shared.
    pub(super) connect_retry_said: AtomicBool,
    /// The instance's final response is complete, headers and body, while the client may
    /// still be sending the request's body (see [`request_body_filter`](super::EdgeService)).
    pub(super) response_complete: bool,
    /// Whether the last attempt to send the request to its instance took an idle pooled
    /// connection (`Some(true)`) or opened one; `None` until an attempt got a connection.
    /// Counted once, when the request ends, in `instance_connections_total`.
    pub(super) instance_connection_reused: Option<bool>,
    /// The length of a chunked request body read whole before forwarding (see
    /// [`body`](super::body)), sent as its `Content-Length`; `None` for every other request.
    pub(super) body_length: Option<usize>,
    /// Whether the request header is long: it reaches the instance behind the router's
    /// fields (see [`crate::route::is_long`]).
    pub(super) long_header: bool,
    /// The `Access-Control-Allow-Origin` this request's responses get under the `[cors]`
    /// policy (see [`crate::cors`]); `None` without a policy, or for an origin it does not
    /// allow.
    pub(super) cors_origin: Option<HeaderValue>,
    /// The router answered this request as a CORS preflight.
    pub(super) preflight_answered: bool,
    /// When the request was first sent towards its instance (its address resolved, before
    /// the connect).
    pub(super) sent_at: Option<Instant>,
    /// When the last of the request's body went on to the instance (for a request without
    /// one, when it was sent): the client's upload is not the instance's latency.
    pub(super) body_sent_at: Option<Instant>,
    /// The status of the instance's final response header (not a `1xx`; a `101` is one),
    /// once it came and was counted for the instance.
    pub(super) answered: Option<http::StatusCode>,
}

impl RequestCtx {
    /// Where the latency counted for the instance's scale-trigger signals starts: once the
    /// request, body and all, was sent on (an answer that came before the whole body: once
    /// the request was sent). Past the router's own work and the client's upload, not past
    /// the connect to the instance.
    pub(super) fn waiting_since(&self) -> Instant {
        match (self.sent_at, self.body_sent_at) {
            (Some(sent), Some(body)) => sent.max(body),
            (sent, body) => sent.or(body).unwrap_or(self.start),
        }
    }

    /// The request id, for log lines (always ASCII: generated, or a client's checked one).
    pub(super) fn id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// The tenant the request was decided for, for log lines (empty before a decision).
    pub(super) fn tenant(&self) -> &str {
        self.decision
            .as_ref()
            .map(|d| d.binding.tenant_id.as_str())
            .unwrap_or_default()
    }
}
