//! What a failure while forwarding was: the client's fault, the instance's, or the router's.

use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use crate::errors::RejectReason;
use crate::framing::{is_bad_chunk, FramingError};

use super::upgrade::asks_for_upgrade;

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
pub(super) fn late_client_fault(session: &mut Session, e: &Error) -> Option<RejectReason> {
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

/// An instance's answer the router will not pass on, as the error Pingora's parser gives for
/// one it cannot read: the client gets a 502, counted as `upstream_invalid`.
pub(super) fn invalid_response(why: &'static str) -> Box<Error> {
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
pub(super) fn closed_without_close_notify(e: &Error) -> bool {
    e.etype() == &ErrorType::ReadError
        && e.esource() == &ErrorSource::Upstream
        && system_error(e).is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// `e` and the Pingora errors under it: Pingora wraps an error in another (with the peer),
/// boxed or not.
fn pingora_chain(e: &Error) -> impl Iterator<Item = &Error> {
    std::iter::successors(Some(e), |e| {
        let cause = e.cause.as_deref()?;
        cause
            .downcast_ref::<Box<Error>>()
            .map(|b| &**b)
            .or_else(|| cause.downcast_ref::<Error>())
    })
}

/// The system's error under a Pingora error: innermost, under the Pingora errors wrapping
/// it. A cause of another type (Pingora's connect details around a `connect()` error) is
/// followed by its `source()`.
fn system_error(e: &Error) -> Option<&std::io::Error> {
    let innermost = pingora_chain(e).last()?;
    let mut cause: Option<&(dyn std::error::Error + 'static)> =
        innermost.cause.as_deref().map(|c| c as _);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = c.source();
    }
    None
}

/// Whether the router itself ran out of what a connection needs (file descriptors, socket
/// buffers): no fault of the instance, whatever side the error names.
pub(super) fn out_of_resources(e: &Error) -> bool {
    use nix::errno::Errno;
    system_error(e)
        .and_then(std::io::Error::raw_os_error)
        .is_some_and(|n| {
            matches!(
                Errno::from_raw(n),
                Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
            )
        })
}

/// Whether the instance's connection ended (closed, reset, TLS without `close_notify`) after
/// part of its response header: it answered, with something that is not a response. Pingora
/// gives the bytes it had read only in its error's context ("while reading response
/// headers, bytes already read: N"); a context worded otherwise reads as nothing read, the
/// instance out of reach, as before. The error read is Pingora's own, under the one it
/// wraps around it with the peer.
fn header_cut_short(e: &Error) -> bool {
    pingora_chain(e)
        .find_map(|e| {
            e.context
                .as_ref()?
                .as_str()
                .strip_prefix("while reading response headers, bytes already read: ")?
                .parse::<usize>()
                .ok()
        })
        .is_some_and(|n| n > 0)
}

/// Maps a proxying error to the rejection the client sees (`answered`: the instance's
/// response header has reached the client).
pub(super) fn upstream_failure(e: &Error, answered: bool) -> RejectReason {
    // Out of descriptors, the connect fails as if the instance could not be reached: the
    // alert must point at the router.
    if out_of_resources(e) {
        return RejectReason::Internal;
    }
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
                || ((answered || header_cut_short(e))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `socket()` failing, as Pingora reports it: its internal error around a socket error
    /// around the system's.
    fn socket_failed(os: i32) -> Box<Error> {
        let socket = Error::because(
            ErrorType::SocketError,
            "failed to create socket",
            std::io::Error::from_raw_os_error(os),
        );
        let mut e = Error::because(ErrorType::InternalError, "connect", socket);
        e.esource = ErrorSource::Upstream;
        e
    }

    /// Pingora's own wrapper of a `connect()` error (crate-private there): the system's error
    /// as its `source()`.
    #[derive(Debug)]
    struct Details(std::io::Error);

    impl std::fmt::Display for Details {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} (local address ...)", self.0)
        }
    }

    impl std::error::Error for Details {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// `connect()` failing, as Pingora reports it.
    fn connect_failed(os: i32) -> Box<Error> {
        let mut e = Error::because(
            ErrorType::ConnectError,
            "connect",
            Details(std::io::Error::from_raw_os_error(os)),
        );
        e.esource = ErrorSource::Upstream;
        e
    }

    /// A response header read in part when the instance's connection ended, as Pingora
    /// reports it: its error wrapped in one naming the peer.
    fn header_read_ended(etype: ErrorType, read: usize) -> Box<Error> {
        let mut inner = Error::explain(
            etype,
            format!("while reading response headers, bytes already read: {read}"),
        );
        inner.esource = ErrorSource::Upstream;
        let mut e = Error::because(inner.etype().clone(), "Peer: addr: 127.0.0.1:9101", inner);
        e.esource = ErrorSource::Upstream;
        e
    }

    #[test]
    fn a_header_cut_short_is_an_invalid_answer_and_none_at_all_is_unreachable() {
        for etype in [ErrorType::ConnectionClosed, ErrorType::ReadError] {
            let cut = header_read_ended(etype.clone(), 25);
            assert_eq!(upstream_failure(&cut, false), RejectReason::UpstreamInvalid);
            let none = header_read_ended(etype, 0);
            assert_eq!(
                upstream_failure(&none, false),
                RejectReason::UpstreamUnreachable
            );
        }
        let mut other = Error::explain(ErrorType::ConnectionClosed, "while writing the body");
        other.esource = ErrorSource::Upstream;
        assert_eq!(
            upstream_failure(&other, false),
            RejectReason::UpstreamUnreachable
        );
    }

    #[test]
    fn a_router_out_of_descriptors_is_its_own_failure_not_the_instances() {
        use nix::errno::Errno;
        for os in [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS] {
            for e in [socket_failed(os as i32), connect_failed(os as i32)] {
                assert!(out_of_resources(&e), "{e}");
                assert_eq!(upstream_failure(&e, false), RejectReason::Internal, "{e}");
            }
        }
        let refused = connect_failed(Errno::ECONNREFUSED as i32);
        assert!(!out_of_resources(&refused));
        assert_eq!(
            upstream_failure(&refused, false),
            RejectReason::UpstreamUnreachable
        );
    }
}
