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

use pingora::proxy::Session;
use pingora::Error;

use crate::errors::RejectReason;

use super::failures::late_client_fault;
use super::upgrade::asks_for_upgrade;

/// The longest chunked body read whole: Pingora's retry buffer keeps no more.
pub(super) const MAX_CHUNKED_BODY: usize = 64 * 1024;

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
pub(super) fn is_chunked(session: &mut Session) -> bool {
    if asks_for_upgrade(session) {
        return false;
    }
    let headers = &session.req_header().headers;
    let chunked = headers.contains_key(http::header::TRANSFER_ENCODING);
    let unsaid = !headers.contains_key(http::header::CONTENT_LENGTH);
    chunked || (unsaid && !session.is_body_empty())
}

/// Reads the request's body whole into Pingora's retry buffer and returns its length; each
/// read may wait `timeout` for the client, as the instance would have.
pub(super) async fn read_whole(session: &mut Session, timeout: Duration) -> Result<usize, Unread> {
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
