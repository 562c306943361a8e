//! The fields a request's `Connection` header names, read before any instance is asked.
//!
//! A field named in `Connection` is about the client's connection only (RFC 9110 §7.6.1), and
//! Pingora removes each one before forwarding. It refuses the request instead when the header
//! names a field it must keep (`Host`, `X-Forwarded-For`, `-Host`, `-Proto`), a pseudo-header,
//! something that is not a token (`"x-a"`), or ten names or more (a bound on the work). It
//! finds that only once it prepares the request for the instance, with a connection to the
//! instance open. The same rules, read here with the rest of the request, answer such a request
//! 400 before any instance connection is opened (and dropped). Should Pingora's rules ever
//! refuse more than these, `service::late_client_fault` still answers 400.
//!
//! These are the rules of Pingora's default request policy for an instance, which the router
//! keeps (it strips nominated fields and refuses malformed nominations); a test holds it to
//! that, since a lenient policy would accept names refused here.
//!
//! The router refuses one more nomination of its own: the fields that frame the body
//! ([`names_framing`]).

use http::header::CONNECTION;
use http::HeaderMap;

/// Names at most, `close` and `keep-alive` included: Pingora refuses the tenth.
pub const MAX_NAMES: usize = 9;

/// The longest field name the `http` crate takes; Pingora refuses a longer nomination.
const MAX_NAME_BYTES: usize = 65_535;

/// Fields a request must keep whatever its `Connection` says: the instance's `Host`, and the
/// forwarding fields the router writes.
const PROTECTED: [&str; 4] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// The fields that frame a request's body.
const FRAMING: [&str; 2] = ["content-length", "transfer-encoding"];

/// The names the request's `Connection` header gives, over all its lines, blanks trimmed,
/// empty list elements left out.
fn names(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(CONNECTION)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|name| !name.is_empty())
}

/// Whether `name` is one of `fields`, in any case.
fn is_one_of(name: &[u8], fields: &[&str]) -> bool {
    fields
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
}

/// Whether Pingora would refuse the request's `Connection` header (over all its lines).
pub fn is_refused(headers: &HeaderMap) -> bool {
    names(headers).enumerate().any(|(i, name)| {
        i >= MAX_NAMES
            || name.len() > MAX_NAME_BYTES
            || !name.iter().all(|&b| is_tchar(b))
            || is_one_of(name, &PROTECTED)
    })
}

/// Whether the request's `Connection` names `Content-Length` or `Transfer-Encoding`. Pingora
/// would take the field off and send the body framed otherwise: a body with a length went
/// on chunked, past `chunked_request_bodies = "length"`, and uWSGI's `--http11-socket`,
/// which reads no chunked bodies, ran the request it held, with identity headers of the
/// client's choosing. No client has a reason to name them.
pub fn names_framing(headers: &HeaderMap) -> bool {
    names(headers).any(|name| is_one_of(name, &FRAMING))
}

/// `tchar` (RFC 9110 §5.6.2): the bytes of a token. A pseudo-header's `:` is not one.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn refused(lines: &[&str]) -> bool {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(CONNECTION, HeaderValue::from_str(l).expect("a value"));
        }
        is_refused(&h)
    }

    #[test]
    fn what_pingora_refuses_is_refused_and_nothing_else() {
        for (lines, refuse) in [
            (&[][..], false),
            (&["keep-alive"][..], false),
            (&["close", "Upgrade"][..], false),
            (&["x-tenant-id, X-User-Id"][..], false),
            (&[" , ,x-a,"][..], false),
            (&["a1, a2, a3, a4, a5, a6, a7, a8, a9"][..], false),
            (&["a1, a2, a3, a4, a5, a6, a7, a8, a9, a10"][..], true),
            (&["a1, a2, a3, a4, a5", "a6, a7, a8, a9", "close"][..], true),
            (&["Host"][..], true),
            (&["keep-alive, X-Forwarded-For"][..], true),
            (&["x-forwarded-host"][..], true),
            (&["X-FORWARDED-PROTO"][..], true),
            (&["\"x-a\""][..], true),
            (&[":authority"][..], true),
            (&["x a"][..], true),
            (&["x;a"][..], true),
            // Look-alikes of protected names are other names: Pingora strips them.
            (&["'X-Forwarded-For'"][..], false),
            (&["X-Forwarded-For.", "!host", "hosts"][..], false),
        ] {
            assert_eq!(refused(lines), refuse, "{lines:?}");
        }
        let long = "x".repeat(MAX_NAME_BYTES);
        assert!(!refused(&[&long]));
        assert!(refused(&[&format!("{long}x")]));
    }

    #[test]
    fn naming_a_framing_field_is_found() {
        let framing = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(CONNECTION, HeaderValue::from_str(l).expect("a value"));
            }
            names_framing(&h)
        };
        for (lines, want) in [
            (&[][..], false),
            (&["keep-alive, close"][..], false),
            (&["content-length"][..], true),
            (&["Keep-Alive,CONTENT-LENGTH"][..], true),
            (&["close", " Transfer-Encoding "][..], true),
            (
                &["content-lengths, x-content-length, transfer-encoding2"][..],
                false,
            ),
        ] {
            assert_eq!(framing(lines), want, "{lines:?}");
            // Pingora itself refuses none of them.
            assert!(!refused(lines), "{lines:?}");
        }
    }

    #[test]
    fn the_rules_are_those_of_the_policy_the_router_keeps() {
        // The router never sets another policy on an instance's peer options.
        let policy = pingora::upstreams::peer::PeerOptions::new().http_upstream_request_policy;
        assert!(policy.strip_connection_nominated);
        assert!(policy.reject_malformed_connection_nominations);
    }
}
