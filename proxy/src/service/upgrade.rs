//! Requests that switch protocols (WebSocket): which may, their bounds, how their tunnel
//! ended.

use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use crate::tunnel::{TunnelClose, TunnelEnd};

use super::request::header_bytes;

/// Bounds a request that asks to switch protocols (a WebSocket) by `[upstream]
/// tunnel_idle_timeout` instead: after a `101` Pingora keeps applying the instance
/// connection's read and write timeouts, and the client session's read timeout (60 s by
/// default), to the tunnel's bytes, so a channel that is quiet for longer than a response may
/// take would be cut. Pingora's bounds are per read and per write, and its tunnel loop waits
/// for each side anew whenever a piece passes either way: the tunnel closes once both sides
/// have been silent that long. The wait for the `101` itself gets the same bound.
pub(super) fn bound_tunnel_io(
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
pub(super) fn drop_unusable_upgrade(session: &mut Session) {
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
pub(super) fn asks_for_upgrade(session: &Session) -> bool {
    let req = session.req_header();
    req.version == http::Version::HTTP_11
        && req
            .headers
            .get(http::header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Whether the client has had a final response (or a `101`): after a `100 Continue` or a
/// `103 Early Hints` a final answer, an error page included, may still be written.
pub(super) fn final_response_written(session: &Session) -> bool {
    session
        .response_written()
        .is_some_and(|r| !r.status.is_informational())
        || switched_protocols(session)
}

/// Whether the client has had a `101`: the connection is a tunnel now.
pub(super) fn switched_protocols(session: &Session) -> bool {
    session
        .response_written()
        .is_some_and(|r| r.status == http::StatusCode::SWITCHING_PROTOCOLS)
}

/// Whether `e` is an upgraded connection (a WebSocket, after its `101`) that one side left
/// silent for longer than `[upstream] tunnel_idle_timeout`: Pingora ends such a tunnel with a
/// read or write timeout, of the instance's side or the client's.
pub(super) fn tunnel_idled_out(session: &Session, e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    ) && switched_protocols(session)
}

/// Most interim (1xx) responses passed on for one request: a `100 Continue`, a few `103
/// Early Hints`, a `102 Processing` every few seconds of a long WebDAV operation fit well
/// within it; past it the instance's answer counts as invalid (a 502).
pub(super) const MAX_INTERIM_RESPONSES: u16 = 100;

/// How a tunnel ended, for `tunnels_closed_total`: `e` is the error that ended it, if one
/// did, and `closed_by_router` why the router closed it, if it did.
pub(super) fn tunnel_close(
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
