//! Every way the router turns a request away, and what the client sees for each.
//!
//! [`RejectReason`] is a closed enum: it alone decides the status code, the short body, the
//! extra headers (`WWW-Authenticate`, `Retry-After`) and the metric label. Bodies are fixed
//! texts: never a token, a claim value, an upstream address or a stack trace.

use std::time::Duration;

use crate::auth::{CredentialError, TokenError};
use crate::authz::ClaimMismatch;
use crate::framing::FramingError;
use crate::host::HostError;
use crate::path::PathError;

/// Why a request was not forwarded (or failed on the way).
#[derive(Debug, Clone, PartialEq)]
pub enum RejectReason {
    /// A `TRACE` (or `TRACK`) request: the instance would echo it whole, the identity headers
    /// the router adds and the client's cookies included, into a response a script can read
    /// (cross-site tracing). See [`crate::method`].
    TraceRefused,
    /// `CONNECT` spelled otherwise than Pingora refuses it (`connect`): a tunnel request to a
    /// server that reads methods without case. See [`crate::method`].
    ConnectRefused,
    /// The request's body framing is one the router does not forward (a transfer coding
    /// besides `chunked`, or `chunked` twice).
    BadFraming(FramingError),
    /// The request header is longer than `[server] max_request_header_bytes`.
    HeaderTooLarge,
    /// The client stopped sending a request body it announced, for longer than a read
    /// timeout: the instance was waiting for it, so the timeout is the client's, not the
    /// instance's (see `service::late_client_fault`).
    BodyTimeout,
    /// A chunked request body longer than the router reads whole before sending it with a
    /// `Content-Length` (`[upstream] chunked_request_bodies = "length"`, see
    /// `service::body`).
    ChunkedBodyTooLong,
    /// A request header Pingora refuses when it prepares the request for the instance:
    /// `Connection` naming `Host` or an `X-Forwarded-*` field, ten or more names, or a name
    /// that is no token. [`crate::nominations`] finds these before any instance is asked.
    MalformedHeader,
    /// The request's host could not be read (missing, duplicate, malformed, IP literal).
    BadHost(HostError),
    /// The request path is not acceptable (encoded slash, control characters, ...).
    BadPath(PathError),
    /// The target the instance would get (its URL's path prefix, the path, the query) is
    /// longer than a request-target can be sent (64 KiB).
    TargetTooLong,
    /// No tenant is bound to this host.
    UnknownTenant,
    /// The request names another host than the one its TLS connection was set up for (SNI).
    Misdirected,
    /// A protected path was requested without a token.
    MissingToken,
    /// The token could not be read from the request (malformed header, conflicting copies).
    BadCredential(CredentialError),
    /// The token is not valid (signature, expiry, issuer, ...).
    InvalidToken(TokenError),
    /// A body on an extension method the instances are not said to read bodies of
    /// ([`crate::method::refuses_body_of`]).
    ExtensionMethodBody,
    /// The token is valid but belongs to another tenant or org.
    WrongTenant(ClaimMismatch),
    /// The tenant's session cookie, sent from another tenant's page (see [`crate::origin`]).
    CrossTenantOrigin,
    /// A CORS preflight from a page the `[cors]` policy does not allow (see [`crate::cors`]).
    CorsOriginRefused,
    /// The tenant is suspended and the path is not a recovery path.
    Suspended,
    /// The path is one the tenant's deployment mode refuses (`[tenancy]
    /// isolated_refused_paths`): its plan does not include it.
    NotInPlan,
    /// The tenant was canceled.
    Canceled,
    /// The tenant's instance is still being provisioned.
    NotReady {
        /// Sent as `Retry-After`.
        retry_after: Duration,
    },
    /// The tenant is blocked or has an open incident.
    Unavailable,
    /// The instance could not be reached.
    UpstreamUnreachable,
    /// The instance answered with something that is not a valid response (unparsable, a
    /// status above 599, a switch of protocols the client did not ask for, framing the client
    /// would read otherwise, a body badly chunked or cut short).
    UpstreamInvalid,
    /// The instance did not answer in time.
    UpstreamTimeout,
    /// Something inside the router failed.
    Internal,
}

impl RejectReason {
    /// The rejection of a path `normalize_path` refused: one too long is a target too long
    /// (414, as a long query is), every other a malformed path (400).
    pub fn of_path(e: crate::path::PathError) -> Self {
        match e {
            crate::path::PathError::TooLong => RejectReason::TargetTooLong,
            e => RejectReason::BadPath(e),
        }
    }

    /// HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            RejectReason::BadFraming(FramingError::UnsupportedCoding)
            | RejectReason::ExtensionMethodBody
            | RejectReason::TraceRefused
            | RejectReason::ConnectRefused => 501,
            RejectReason::HeaderTooLarge => 431,
            RejectReason::BodyTimeout => 408,
            RejectReason::ChunkedBodyTooLong => 411,
            RejectReason::BadFraming(
                FramingError::ChunkedTwice
                | FramingError::BadChunk(_)
                | FramingError::BareLineFeed
                | FramingError::MiscasedMethod
                | FramingError::HeadOverride
                | FramingError::FramingNominated,
            )
            | RejectReason::MalformedHeader
            | RejectReason::BadHost(_)
            | RejectReason::BadPath(_) => 400,
            RejectReason::UnknownTenant => 404,
            RejectReason::Misdirected => 421,
            RejectReason::TargetTooLong => 414,
            RejectReason::MissingToken
            | RejectReason::BadCredential(_)
            | RejectReason::InvalidToken(_) => 401,
            RejectReason::WrongTenant(_)
            | RejectReason::CrossTenantOrigin
            | RejectReason::CorsOriginRefused
            | RejectReason::Suspended
            | RejectReason::NotInPlan => 403,
            RejectReason::Canceled => 410,
            RejectReason::NotReady { .. } | RejectReason::Unavailable => 503,
            RejectReason::UpstreamUnreachable | RejectReason::UpstreamInvalid => 502,
            RejectReason::UpstreamTimeout => 504,
            RejectReason::Internal => 500,
        }
    }

    /// Whether the request could not be read as sent (malformed, oversized, framed in a way
    /// the router does not forward), so its connection cannot carry another one.
    pub fn closes_connection(&self) -> bool {
        matches!(self.status(), 400 | 408 | 411 | 431 | 501)
    }

    /// Whether the request was decided and forwarded, and failed on the way (the instance
    /// unreachable, too slow or its answer invalid, or the router itself), rather than refused
    /// by the router's rules: its duration belongs with the failed requests, not the quick
    /// refusals.
    pub fn is_forwarding_failure(&self) -> bool {
        matches!(
            self,
            RejectReason::UpstreamUnreachable
                | RejectReason::UpstreamInvalid
                | RejectReason::UpstreamTimeout
                | RejectReason::Internal
        )
    }

    /// Every [`Self::label`], so that each `requests_total` series exists (at 0) from start-up:
    /// a rate or an alert over an outcome that has not happened yet then reads 0, not
    /// nothing. A test holds it to `label`.
    pub const LABELS: [&'static str; 28] = [
        "trace_refused",
        "connect_refused",
        "bad_framing",
        "header_too_large",
        "request_body_timeout",
        "chunked_body_too_long",
        "extension_method_body",
        "malformed_header",
        "bad_host",
        "bad_path",
        "target_too_long",
        "unknown_tenant",
        "misdirected",
        "missing_token",
        "bad_credential",
        "invalid_token",
        "wrong_tenant",
        "cross_tenant_origin",
        "cors_origin_refused",
        "suspended",
        "not_in_plan",
        "canceled",
        "not_ready",
        "unavailable",
        "upstream_unreachable",
        "upstream_invalid",
        "upstream_timeout",
        "internal",
    ];

    /// Closed metric/log label.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::TraceRefused => "trace_refused",
            RejectReason::ConnectRefused => "connect_refused",
            RejectReason::BadFraming(_) => "bad_framing",
            RejectReason::HeaderTooLarge => "header_too_large",
            RejectReason::BodyTimeout => "request_body_timeout",
            RejectReason::ChunkedBodyTooLong => "chunked_body_too_long",
            RejectReason::ExtensionMethodBody => "extension_method_body",
            RejectReason::MalformedHeader => "malformed_header",
            RejectReason::BadHost(_) => "bad_host",
            RejectReason::BadPath(_) => "bad_path",
            RejectReason::TargetTooLong => "target_too_long",
            RejectReason::UnknownTenant => "unknown_tenant",
            RejectReason::Misdirected => "misdirected",
            RejectReason::MissingToken => "missing_token",
            RejectReason::BadCredential(_) => "bad_credential",
            RejectReason::InvalidToken(_) => "invalid_token",
            RejectReason::WrongTenant(_) => "wrong_tenant",
            RejectReason::CrossTenantOrigin => "cross_tenant_origin",
            RejectReason::CorsOriginRefused => "cors_origin_refused",
            RejectReason::Suspended => "suspended",
            RejectReason::NotInPlan => "not_in_plan",
            RejectReason::Canceled => "canceled",
            RejectReason::NotReady { .. } => "not_ready",
            RejectReason::Unavailable => "unavailable",
            RejectReason::UpstreamUnreachable => "upstream_unreachable",
            RejectReason::UpstreamInvalid => "upstream_invalid",
            RejectReason::UpstreamTimeout => "upstream_timeout",
            RejectReason::Internal => "internal",
        }
    }

    /// Finer detail for logs (a closed label of the inner error, never request content).
    pub fn detail(&self) -> &'static str {
        match self {
            RejectReason::BadFraming(e) => e.label(),
            RejectReason::BadHost(e) => e.label(),
            RejectReason::BadPath(e) => e.label(),
            RejectReason::BadCredential(e) => e.label(),
            RejectReason::InvalidToken(e) => e.label(),
            RejectReason::WrongTenant(e) => e.label(),
            _ => self.label(),
        }
    }

    /// More of why, for the log, where the reason's detail has it (a token's malformation):
    /// a fixed text, never request content.
    pub fn why(&self) -> Option<&'static str> {
        match self {
            RejectReason::InvalidToken(e) => e.why(),
            RejectReason::BadFraming(FramingError::BadChunk(why)) => *why,
            _ => None,
        }
    }

    /// Short plain-text body.
    pub fn body(&self) -> &'static str {
        match self {
            RejectReason::TraceRefused => "not implemented: TRACE and TRACK are not served\n",
            RejectReason::ConnectRefused => "not implemented: CONNECT is not served\n",
            RejectReason::BadFraming(FramingError::UnsupportedCoding) => {
                "not implemented: the request body's transfer coding is not supported\n"
            }
            RejectReason::BadFraming(FramingError::ChunkedTwice | FramingError::BadChunk(_)) => {
                "bad request: the request body's framing is malformed\n"
            }
            RejectReason::BadFraming(FramingError::BareLineFeed) => {
                "bad request: a request header line does not end in CRLF\n"
            }
            RejectReason::BadFraming(FramingError::MiscasedMethod) => {
                "bad request: methods are case-sensitive; send a standard method in capitals\n"
            }
            RejectReason::BadFraming(FramingError::HeadOverride) => {
                "bad request: a POST may not be overridden to HEAD; send a HEAD request\n"
            }
            RejectReason::BadFraming(FramingError::FramingNominated) => {
                "bad request: Connection may not name Content-Length or Transfer-Encoding\n"
            }
            RejectReason::HeaderTooLarge => {
                "request header fields too large: the request header is longer than allowed\n"
            }
            RejectReason::BodyTimeout => {
                "request timeout: the request body did not arrive in time\n"
            }
            RejectReason::ChunkedBodyTooLong => {
                "length required: a chunked request body over 64 KiB; send it with a \
                 Content-Length\n"
            }
            RejectReason::ExtensionMethodBody => {
                "not implemented: a request body on this method is not passed on\n"
            }
            RejectReason::MalformedHeader => "bad request: a request header is malformed\n",
            RejectReason::BadHost(HostError::Missing) => {
                "bad request: the request has no Host header\n"
            }
            RejectReason::BadHost(HostError::Duplicate) => {
                "bad request: the request names its Host more than once\n"
            }
            RejectReason::BadHost(HostError::Malformed) => {
                "bad request: the Host header is not a valid host name\n"
            }
            // The first request most people try (`curl http://127.0.0.1:8080/`) lands here.
            RejectReason::BadHost(HostError::IpLiteral) => {
                "bad request: the Host header is an IP address; address a workspace by its name, \
                 <tenant>.<base domain> or its custom domain\n"
            }
            RejectReason::BadHost(HostError::AuthorityMismatch) => {
                "bad request: the request target names another host than the Host header\n"
            }
            RejectReason::BadPath(_) => "bad request: the request path is not acceptable\n",
            RejectReason::TargetTooLong => "URI too long: the request target is longer than allowed\n",
            RejectReason::UnknownTenant => "not found: no tenant is served at this address\n",
            RejectReason::Misdirected => {
                "misdirected request: this connection was opened for another host; open one to \
                 this host (its name in the TLS handshake)\n"
            }
            RejectReason::MissingToken => "unauthorized: sign in first\n",
            RejectReason::BadCredential(_) => {
                "unauthorized: the request's credentials are malformed or disagree (one login \
                 token, as a Bearer header or the session cookie); sign in again\n"
            }
            RejectReason::InvalidToken(_) => {
                "unauthorized: the login token is not valid; sign in again\n"
            }
            RejectReason::WrongTenant(_) => "forbidden: your login does not belong to this workspace\n",
            RejectReason::CrossTenantOrigin => {
                "forbidden: another workspace's page may not use this workspace's session\n"
            }
            RejectReason::CorsOriginRefused => {
                "forbidden: this page's origin may not call this workspace across origins\n"
            }
            RejectReason::Suspended => {
                "forbidden: this workspace is suspended; only billing and admin recovery are available\n"
            }
            RejectReason::NotInPlan => {
                "forbidden: this workspace's plan does not include this; it comes with an upgrade\n"
            }
            RejectReason::Canceled => "gone: this workspace has been canceled\n",
            RejectReason::NotReady { .. } => "not ready yet: this workspace is still being set up; try again shortly\n",
            RejectReason::Unavailable => "unavailable: this workspace is temporarily unavailable\n",
            RejectReason::UpstreamUnreachable => "bad gateway: the workspace could not be reached\n",
            RejectReason::UpstreamInvalid => "bad gateway: the workspace sent an invalid response\n",
            RejectReason::UpstreamTimeout => "gateway timeout: the workspace did not answer in time\n",
            RejectReason::Internal => "internal error\n",
        }
    }

    /// Extra response headers (name, value).
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            RejectReason::MissingToken => {
                vec![("www-authenticate", crate::auth::www_authenticate_missing())]
            }
            RejectReason::BadCredential(e) => vec![("www-authenticate", e.www_authenticate())],
            RejectReason::InvalidToken(e) => vec![("www-authenticate", e.www_authenticate())],
            RejectReason::WrongTenant(_) => {
                vec![(
                    "www-authenticate",
                    crate::auth::www_authenticate_forbidden(),
                )]
            }
            RejectReason::NotReady { retry_after } => {
                vec![("retry-after", retry_after.as_secs().max(1).to_string())]
            }
            RejectReason::Unavailable => vec![("retry-after", "60".to_owned())],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_lists_every_label_once() {
        // One of each variant. `variant_listed` below has no catch-all arm: a new variant
        // stops this test compiling until it is listed there, and so here and in `LABELS`.
        fn variant_listed(r: &RejectReason) {
            match r {
                RejectReason::TraceRefused
                | RejectReason::ConnectRefused
                | RejectReason::BadFraming(_)
                | RejectReason::HeaderTooLarge
                | RejectReason::BodyTimeout
                | RejectReason::ChunkedBodyTooLong
                | RejectReason::ExtensionMethodBody
                | RejectReason::MalformedHeader
                | RejectReason::BadHost(_)
                | RejectReason::BadPath(_)
                | RejectReason::TargetTooLong
                | RejectReason::UnknownTenant
                | RejectReason::Misdirected
                | RejectReason::MissingToken
                | RejectReason::BadCredential(_)
                | RejectReason::InvalidToken(_)
                | RejectReason::WrongTenant(_)
                | RejectReason::CrossTenantOrigin
                | RejectReason::CorsOriginRefused
                | RejectReason::Suspended
                | RejectReason::NotInPlan
                | RejectReason::Canceled
                | RejectReason::NotReady { .. }
                | RejectReason::Unavailable
                | RejectReason::UpstreamUnreachable
                | RejectReason::UpstreamInvalid
                | RejectReason::UpstreamTimeout
                | RejectReason::Internal => {}
            }
        }
        let each = [
            RejectReason::TraceRefused,
            RejectReason::ConnectRefused,
            RejectReason::BadFraming(FramingError::UnsupportedCoding),
            RejectReason::HeaderTooLarge,
            RejectReason::BodyTimeout,
            RejectReason::ChunkedBodyTooLong,
            RejectReason::ExtensionMethodBody,
            RejectReason::MalformedHeader,
            RejectReason::BadHost(HostError::Malformed),
            RejectReason::BadPath(PathError::ControlChar),
            RejectReason::TargetTooLong,
            RejectReason::UnknownTenant,
            RejectReason::Misdirected,
            RejectReason::MissingToken,
            RejectReason::BadCredential(CredentialError::Conflict),
            RejectReason::InvalidToken(TokenError::Expired),
            RejectReason::WrongTenant(ClaimMismatch::TenantMismatch),
            RejectReason::CrossTenantOrigin,
            RejectReason::CorsOriginRefused,
            RejectReason::Suspended,
            RejectReason::NotInPlan,
            RejectReason::Canceled,
            RejectReason::NotReady {
                retry_after: Duration::from_secs(1),
            },
            RejectReason::Unavailable,
            RejectReason::UpstreamUnreachable,
            RejectReason::UpstreamInvalid,
            RejectReason::UpstreamTimeout,
            RejectReason::Internal,
        ];
        each.iter().for_each(variant_listed);
        let labels: Vec<&str> = each.iter().map(RejectReason::label).collect();
        assert_eq!(labels, RejectReason::LABELS);
    }
}
