//! Reading the client's request: its target, its expectation, its header values.

use crate::auth::TokenPlaces;
use pingora::proxy::Session;
use smallvec::SmallVec;

/// The request-target the decision reads: an origin-form target raw (exactly as sent); the
/// path of an absolute-form target of the HTTP family (`http(s)`, `ws(s)`) from the parsed URI
/// (Pingora has checked its authority against Host byte for byte). Any other form
/// (authority-form, `*`, a bare word, another scheme) is refused: Pingora anchors those URIs
/// to `/`, so read from the URI they would reach the instance as a request for its root that
/// the client never made. `Ok(None)`: an origin-form target that is not UTF-8.
pub(super) fn request_target(
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
pub(super) fn take_expectation(session: &mut Session) -> bool {
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

/// A request's values of one header: almost always one or none, so they stay on the stack.
pub(super) fn header_values<'a>(
    req: &'a pingora::http::RequestHeader,
    name: &http::header::HeaderName,
) -> SmallVec<[&'a [u8]; 2]> {
    header_bytes(&req.headers, name).collect()
}

/// The values of every header that carries a token besides `Authorization` (see
/// [`TokenPlaces::is_token_header`]), as bytes; none looked for when no such header is
/// configured.
pub(super) fn token_header_values<'a>(
    req: &'a pingora::http::RequestHeader,
    places: &TokenPlaces,
) -> SmallVec<[&'a [u8]; 2]> {
    if !places.has_headers() {
        return SmallVec::new();
    }
    req.headers
        .iter()
        .filter(|(name, _)| places.is_token_header(name))
        .map(|(_, v)| v.as_bytes())
        .collect()
}

/// The values of every `name` field, as bytes.
pub(super) fn header_bytes<'a>(
    headers: &'a http::HeaderMap,
    name: &http::HeaderName,
) -> impl DoubleEndedIterator<Item = &'a [u8]> {
    headers.get_all(name).iter().map(|v| v.as_bytes())
}
