//! A chunked request body read whole before its instance is asked, to be sent with a
//! `Content-Length` (`[upstream] chunked_request_bodies = "length"`, the default).
//!
//! Some servers implement no chunked request bodies: uWSGI's `--http11-socket` and Thin
//! answer such a request as one without a body, keep the connection, and read the chunks
//! as the next request on it. Passed on chunked, a body holding `GET /admin` with
//! `X-User-Id: admin` ran on uWSGI as a request the router never checked, sent to a public
//! path without a token. Sent with its length, a body is a body to every server.
//!
//! Pingora keeps up to 64 KiB of each request's body to send it again should the instance's
//! connection fail (its retry buffer), and sends what it kept before reading on; the body is
//! read into it here, whole. A longer one is refused, 411 Length Required: its client may
//! send it again with its length, which is passed on as it streams.

use std::time::Duration;

use nexus_config::{ChunkedRequestBodies, UpstreamSettings};
use pingora::proxy::Session;
use pingora::Error;

use crate::errors::RejectReason;

use super::failures::late_client_fault;
use super::upgrade::asks_for_upgrade;

/// The longest chunked body read whole: Pingora's retry buffer keeps no more.
const MAX_CHUNKED_BODY: usize = 64 * 1024;

/// Why a chunked body could not be read whole.
pub(super) enum Unread {
    /// Refused: too long, malformed, or not sent in time.
    Refused(RejectReason),
    /// The client went away.
    ClientGone(Box<Error>),
}

/// Whether the request's body comes without a length, to be sent on chunked: over HTTP/1.1
/// a `Transfer-Encoding` (already held to `chunked` alone), over HTTP/2 a body without a
/// `Content-Length`; and is a body: after a `101` the bytes are a tunnel's.
fn is_chunked(session: &mut Session) -> bool {
    if asks_for_upgrade(session) {
        return false;
    }
    let headers = &session.req_header().headers;
    let chunked = headers.contains_key(http::header::TRANSFER_ENCODING);
    let unsaid = !headers.contains_key(http::header::CONTENT_LENGTH);
    chunked || (unsaid && !session.is_body_empty())
}

/// For a body without a length, when `upstream` has such bodies sent with one: reads it whole
/// and returns its length, to be sent as its `Content-Length`. `None`: the body goes on as it
/// comes (it has a length, there is none, or `chunked_request_bodies = "chunked"`).
pub(super) async fn read_if_chunked(
    session: &mut Session,
    upstream: &UpstreamSettings,
) -> Result<Option<usize>, Unread> {
    if upstream.chunked_request_bodies != ChunkedRequestBodies::Length || !is_chunked(session) {
        return Ok(None);
    }
    read_whole(session, upstream.read_timeout).await.map(Some)
}

/// Reads the request's body whole into Pingora's retry buffer and returns its length; each
/// read may wait `timeout` for the client, as the instance would have.
async fn read_whole(session: &mut Session, timeout: Duration) -> Result<usize, Unread> {
    session.enable_retry_buffering();
    let before = session.get_read_timeout();
    session.set_read_timeout(Some(timeout));
    let mut length = 0usize;
    let outcome = loop {
        match session.read_request_body().await {
            Ok(Some(piece)) => {
                length += piece.len();
                if length > MAX_CHUNKED_BODY {
                    break Err(Unread::Refused(RejectReason::ChunkedBodyTooLong));
                }
            }
            Ok(None) => break Ok(length),
            Err(e) => {
                // Pingora's parser leaves the side unsaid; every failure here is the client's.
                let e = e.into_down();
                break Err(match late_client_fault(session, &e) {
                    Some(reason) => Unread::Refused(reason),
                    None => Unread::ClientGone(e),
                });
            }
        }
    };
    session.set_read_timeout(before);
    outcome
}
