//! How a request's body is delimited: one reading, the router's, which the instance gets too.
//!
//! Pingora reads a request body by its `Content-Length` or by a final `chunked` coding, and
//! sends the instance the body framed afresh. Two kinds of framing it accepts would leave the
//! instance reading the body otherwise than the router did:
//! - a transfer coding besides `chunked` (`gzip, chunked`). Pingora removes
//!   `Transfer-Encoding` as a hop-by-hop header and sends the body chunked, so the instance
//!   would take gzip-coded bytes for the content. The router implements no other coding, and
//!   refuses such a request with 501 (RFC 9112 §6.1). `chunked` twice (`chunked, chunked`)
//!   claims a body chunked twice over and is refused with 400 (RFC 9112 §7);
//! - a `Content-Length` of identical values, as a list (`3, 3`) or on repeated lines, or with
//!   leading zeros. Pingora frames the body by the one value (RFC 9110 §8.6) but forwards the
//!   header as received; [`canonical_content_length`] gives the instance that one value (and
//!   the client, for an instance's response written so).
//!
//! A chunked body that does not parse is found only while it is forwarded; the client gets
//! 400 ([`is_bad_chunk`]) unless the instance's answer has begun.

/// Whether a proxying error is Pingora's for a client's chunked body that does not parse: a
/// chunk, or the trailer section after the last one. Pingora does not export the error types,
/// so they are matched by name; a test of the real binary sends such bodies.
pub fn is_bad_chunk(e: &pingora::Error) -> bool {
    matches!(
        e.etype(),
        pingora::ErrorType::Custom("InvalidChunk" | "InvalidTrailerEnd")
    )
}

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method};

/// Whether the instance connection that carries a request of `method` with a body is closed
/// once the answer is read, instead of pooled for the tenant's next request.
///
/// Every method but `POST`, `PUT` and `PATCH`, whose bodies servers read. `GET`, `HEAD`,
/// `DELETE` and `OPTIONS` define no meaning for a body (RFC 9110 §9.3), and many servers
/// answer them without reading it (a static file handler, a framework's `GET` route); a
/// server that does not know an extension method (`PROPFIND`, `SEARCH`, `QUERY`) answers it
/// 400, 405 or 501 without reading it. Kept open, such a server reads the body as its next
/// request, one the router never checked (identity headers written by the client), and its
/// answer goes to the tenant's next request on that connection. Bodies on these methods are
/// rare but for WebDAV's, so closing costs a connection now and then. (An instance that
/// answers a `POST` early without reading the body and keeps its connection breaks RFC 9112
/// §9.3 the same way; the router cannot tell that from the answer, and the README asks
/// instances not to.) `kept_alive` (`[upstream] extension_methods_kept_alive`) names the
/// extension methods the operator says every instance's server reads bodies of, as a WebDAV
/// server reads its own: a WebDAV client sends a body with every `PROPFIND`, and a new
/// connection (and TLS handshake) for each would be the common case there.
pub fn closes_after(method: &Method, kept_alive: &[String]) -> bool {
    !matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        && !kept_alive.iter().any(|m| m == method.as_str())
}

/// Whether a request with these headers has a body: a `Transfer-Encoding`, or a
/// `Content-Length` other than zero (over HTTP/1.1, the only ways to send one).
pub fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers.get_all(CONTENT_LENGTH).iter().any(|v| {
            v.as_bytes()
                .split(|&c| c == b',')
                .any(|n| !n.trim_ascii().iter().all(|&c| c == b'0'))
        })
}

/// Whether `method` is a method RFC 9110 defines (or `PATCH`) spelt in another case: `get`,
/// `Head`. Methods are case-sensitive, so the router and Pingora read `head` as an unknown
/// method (one whose answer has a body, sent on a connection kept for the tenant), while
/// servers that read methods without case (Tornado, Werkzeug) answer it as `HEAD`,
/// with no body: the router would read the tenant's next answer as this one's. No client
/// sends these; refused.
pub fn is_miscased_method(method: &Method) -> bool {
    const STANDARD: [&str; 9] = nexus_config::STANDARD_METHODS;
    let m = method.as_str();
    m.len() <= 7 && !STANDARD.contains(&m) && STANDARD.iter().any(|s| s.eq_ignore_ascii_case(m))
}

/// Why a request's framing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// `Transfer-Encoding` names a coding other than `chunked`.
    #[error("transfer coding other than chunked")]
    UnsupportedCoding,
    /// `Transfer-Encoding` names `chunked` more than once.
    #[error("chunked applied more than once")]
    ChunkedTwice,
    /// The chunked body does not parse (a bad chunk size, a missing line end): found while
    /// forwarding it, so the instance has had its start (unless it came with the header).
    /// With the client stream's fixed reason when it was the one to refuse it.
    #[error("malformed chunk")]
    BadChunk(Option<&'static str>),
    /// A line of the request header ends in a bare LF ([`check_line_ends`]).
    #[error("header line ending in a bare LF")]
    BareLineFeed,
    /// A standard method spelt in another case ([`is_miscased_method`]).
    #[error("a standard method in another case")]
    MiscasedMethod,
    /// A `POST` asking to be handled as `HEAD` ([`crate::method::refused_override_of`]).
    #[error("a POST overridden to HEAD")]
    HeadOverride,
    /// `Connection` names `Content-Length` or `Transfer-Encoding`
    /// ([`crate::nominations::names_framing`]).
    #[error("Connection names a field that frames the body")]
    FramingNominated,
}

impl FramingError {
    /// Closed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FramingError::UnsupportedCoding => "unsupported_transfer_coding",
            FramingError::ChunkedTwice => "chunked_twice",
            FramingError::BadChunk(_) => "bad_chunk",
            FramingError::BareLineFeed => "bare_line_feed",
            FramingError::MiscasedMethod => "miscased_method",
            FramingError::HeadOverride => "head_override",
            FramingError::FramingNominated => "framing_nominated",
        }
    }
}

/// Accepts a request whose `Transfer-Encoding`, over all its lines, is `chunked` once and
/// nothing else (empty list elements aside, RFC 9110 §5.6.1), or which has none.
///
/// Pingora has already refused a list that does not end in `chunked`, and a
/// `Transfer-Encoding` on an HTTP/1.0 request.
pub fn check_transfer_coding(headers: &HeaderMap) -> Result<(), FramingError> {
    let mut chunked = 0usize;
    for line in headers.get_all(TRANSFER_ENCODING) {
        for element in line.as_bytes().split(|&b| b == b',') {
            let element = element.trim_ascii();
            if element.is_empty() {
                continue;
            }
            // A coding's name ends at its first parameter; `chunked` takes none (Pingora
            // refuses `chunked;x=1` last), any other name is refused whatever follows it.
            if !coding_name(element).eq_ignore_ascii_case(b"chunked") {
                return Err(FramingError::UnsupportedCoding);
            }
            chunked += 1;
        }
    }
    if chunked > 1 {
        return Err(FramingError::ChunkedTwice);
    }
    Ok(())
}

/// Accepts a request header (as received) whose every line ends in CRLF, empty lines before
/// its request line aside (the parser skips them).
///
/// RFC 9112 §2.2 lets a recipient take a bare LF for a line end, and Pingora's parser does. A
/// proxy in front that ends lines at CRLF only reads `X-A: a<LF>Content-Length: 200` as one
/// field and the request as bodiless, while the router would read a 200-byte body: the next
/// request that proxy sends on the connection, another client's perhaps, for another tenant,
/// token included, would reach this tenant's instance as that body. A chunked body's lines
/// are held to the same rule as they arrive (`connections::chunks`).
pub fn check_line_ends(head: &[u8]) -> Result<(), FramingError> {
    let start = head
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(head.len());
    let head = &head[start..];
    if memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r') {
        return Err(FramingError::BareLineFeed);
    }
    Ok(())
}

/// How many times `Transfer-Encoding`, over all its lines, names `chunked` (parameters and
/// case aside).
pub fn chunked_count(headers: &HeaderMap) -> usize {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .filter(|element| coding_name(element).eq_ignore_ascii_case(b"chunked"))
        .count()
}

/// A transfer coding's name: a list element up to its first parameter, trimmed.
fn coding_name(element: &[u8]) -> &[u8] {
    element
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

/// Whether a response's body ends only when the instance closes its connection because its
/// `Transfer-Encoding` does not end in `chunked` (`gzip`, `chunked, gzip`, `identity`):
/// RFC 9112 §6.3 gives such a body no length, a `Content-Length` beside it included. Read as
/// Pingora reads it (the last element of the last line), since Pingora then reads the
/// instance's body to the close and writes it on unframed.
pub fn ends_with_connection(headers: &HeaderMap) -> bool {
    let Some(last) = headers.get_all(TRANSFER_ENCODING).iter().next_back() else {
        return false;
    };
    let coding = last
        .as_bytes()
        .rsplit(|&b| b == b',')
        .next()
        .unwrap_or_default();
    !coding.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// Whether the last transfer coding `Transfer-Encoding` names, read as RFC 9110 §5.6.1 lists
/// are (over all its lines, empty elements skipped, a coding's name without its parameters),
/// is `chunked`: how a client reads it. Pingora reads only the last element of the last line,
/// literally, so `chunked,`, `chunked;x=1` or a last line that is empty end in `chunked` for
/// a client and not for Pingora (see [`ends_with_connection`]).
pub fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(coding_name)
        .rfind(|name| !name.is_empty())
        .is_some_and(|name| name.eq_ignore_ascii_case(b"chunked"))
}

/// The `Content-Length` the next hop gets in place of the one received (the instance in place
/// of the client's, the client in place of the instance's), when that is not already one
/// plain number: `None` for none, for a single canonical value (the usual case: nothing is
/// copied), and for values Pingora would have refused (they do not reach here).
pub fn canonical_content_length(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_none() && is_canonical_number(first.as_bytes()) {
        return None;
    }
    let mut length: Option<u64> = None;
    for line in headers.get_all(CONTENT_LENGTH) {
        for element in line.as_bytes().split(|&b| b == b',') {
            let n = parse_number(element.trim_ascii())?;
            match length {
                None => length = Some(n),
                Some(seen) if seen != n => return None,
                Some(_) => {}
            }
        }
    }
    length.map(HeaderValue::from)
}

/// Digits only, without a leading zero unless it is the only one.
fn is_canonical_number(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(u8::is_ascii_digit) && (b.len() == 1 || b[0] != b'0')
}

/// A decimal number of digits only (no sign, no blanks), as `Content-Length` is written.
fn parse_number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_a_coding_or_a_length_above_zero() {
        for (fields, body) in [
            (&[][..], false),
            (&[("content-length", "0")][..], false),
            (&[("content-length", "000")][..], false),
            (&[("content-length", "0, 0")][..], false),
            (&[("content-length", "1")][..], true),
            (&[("content-length", "10")][..], true),
            (&[("transfer-encoding", "chunked")][..], true),
        ] {
            let mut h = HeaderMap::new();
            for (n, v) in fields {
                h.append(*n, HeaderValue::from_static(v));
            }
            assert_eq!(has_body(&h), body, "{fields:?}");
        }
    }

    fn headers(name: http::header::HeaderName, lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(name.clone(), HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn standard_methods_in_another_case_are_told_apart() {
        for m in [
            "get", "Get", "hEAD", "post", "Put", "delete", "options", "patch",
        ] {
            let m = Method::from_bytes(m.as_bytes()).expect("a token");
            assert!(is_miscased_method(&m), "{m}");
        }
        for m in [
            "GET", "HEAD", "PATCH", "OPTIONS", "PROPFIND", "propfind", "GETS", "M-SEARCH",
        ] {
            let m = Method::from_bytes(m.as_bytes()).expect("a token");
            assert!(!is_miscased_method(&m), "{m}");
        }
    }
    #[test]
    fn line_ends_table() {
        let bare = Err(FramingError::BareLineFeed);
        let cases: &[(&[u8], Result<(), FramingError>)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(())),
            // Empty lines before the request line are skipped, as the parser skips them.
            (b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(())),
            (b"", Ok(())),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", bare),
            (
                b"GET / HTTP/1.1\r\nHost: a\nContent-Length: 5\r\n\r\n",
                bare,
            ),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\n", bare),
            (b"GET / HTTP/1.1\r\nHost: a\n\n", bare),
            (b"GET / HTTP/1.1\r\nX: \r\r\n\r\n", Ok(())),
        ];
        for (head, want) in cases {
            assert_eq!(
                check_line_ends(head),
                *want,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn transfer_codings_table() {
        use FramingError::*;
        let cases: &[(&[&str], Result<(), FramingError>)] = &[
            (&[], Ok(())),
            (&["chunked"], Ok(())),
            (&["Chunked"], Ok(())),
            (&[" chunked "], Ok(())),
            (&[", chunked"], Ok(())),
            (&["", "chunked"], Ok(())),
            (&["gzip, chunked"], Err(UnsupportedCoding)),
            (&["gzip", "chunked"], Err(UnsupportedCoding)),
            (&["deflate;q=1, chunked"], Err(UnsupportedCoding)),
            (&["identity, chunked"], Err(UnsupportedCoding)),
            (&["x-chunked, chunked"], Err(UnsupportedCoding)),
            (&["chunked, chunked"], Err(ChunkedTwice)),
            (&["chunked", "chunked"], Err(ChunkedTwice)),
            (&["CHUNKED", "chunked"], Err(ChunkedTwice)),
        ];
        for (lines, want) in cases {
            assert_eq!(
                check_transfer_coding(&headers(TRANSFER_ENCODING, lines)),
                *want,
                "{lines:?}"
            );
        }
    }

    #[test]
    fn response_bodies_that_end_with_the_connection() {
        for (lines, ends) in [
            (&[][..], false),
            (&["chunked"][..], false),
            (&[" Chunked "][..], false),
            (&["gzip, chunked"][..], false),
            (&["gzip", "chunked"][..], false),
            (&["gzip"][..], true),
            (&["identity"][..], true),
            (&["chunked, gzip"][..], true),
            (&["chunked", "gzip"][..], true),
            (&["chunked,"][..], true),
            (&["chunked;x=1"][..], true),
        ] {
            assert_eq!(
                ends_with_connection(&headers(TRANSFER_ENCODING, lines)),
                ends,
                "{lines:?}"
            );
        }
    }

    #[test]
    fn content_length_table() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (&["3"], None),
            (&["0"], None),
            (&["18446744073709551615"], None),
            (&["3, 3"], Some("3")),
            (&["3,3"], Some("3")),
            (&["3", "3"], Some("3")),
            (&["3", "3, 3"], Some("3")),
            (&["003"], Some("3")),
            (&["00"], Some("0")),
            (&[" 3"], Some("3")),
            // Pingora refuses these before the router sees them; nothing is made of them.
            (&["3, 4"], None),
            (&["3", "4"], None),
            (&["+3"], None),
            (&["3,"], None),
            (&["18446744073709551616"], None),
        ];
        for (lines, want) in cases {
            let got = canonical_content_length(&headers(CONTENT_LENGTH, lines));
            assert_eq!(
                got.as_ref().map(|v| v.to_str().unwrap()),
                *want,
                "{lines:?}"
            );
        }
    }
}
