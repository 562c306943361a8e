//! The request methods the router refuses itself: only those that echo the request.
//!
//! `TRACE` asks the instance to send the request back as it received it (RFC 9110 §9.3.8):
//! with the identity headers the router adds and the client's cookies, in a response a script
//! can read, which is how cross-site tracing reads `HttpOnly` cookies. IIS answers `TRACK`
//! the same way. Methods are case-sensitive, but some servers read them otherwise, so any
//! spelling is refused, and so is a `POST` that asks to be handled as one through a
//! method-override header (`X-HTTP-Method-Override` and its kin, in `-` or `_` spelling, as
//! Laravel, Symfony, ASP.NET Core and Express's `method-override` read them on a `POST`) or a
//! `_method` query parameter (Laravel and Symfony read it from the query as well as the body;
//! a body is not read here).
//! `CONNECT` never gets this far: Pingora answers it 405. Spelled otherwise (`connect`), it
//! would reach the instance, where a server that reads methods without case would take it for
//! a tunnel request; it is refused too. Every other method, extension methods included, is
//! the instance's to answer.

use http::{HeaderMap, HeaderName, Method};

/// Whether `method` asks for the request to be echoed back.
pub fn is_echo(method: &Method) -> bool {
    let m = method.as_str();
    m.eq_ignore_ascii_case("TRACE") || m.eq_ignore_ascii_case("TRACK")
}

/// The method-override headers frameworks read on a `POST`, in both spellings (CGI-style
/// servers fold `_` and `-` into one variable).
static OVERRIDES: [HeaderName; 6] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x_http_method_override"),
    HeaderName::from_static("x_http_method"),
    HeaderName::from_static("x_method_override"),
];

/// Whether `v` names an echoing method, blanks and case aside.
fn names_echo(v: &[u8]) -> bool {
    let v = v.trim_ascii();
    v.eq_ignore_ascii_case(b"TRACE") || v.eq_ignore_ascii_case(b"TRACK")
}

/// Whether a `POST` asks, through a method-override header or a `_method` query parameter,
/// to be handled as an echoing method. Other methods are not overridden by those frameworks,
/// so only a `POST` pays for the lookups.
pub fn overrides_to_echo(method: &Method, headers: &HeaderMap, query: Option<&str>) -> bool {
    *method == Method::POST
        && (OVERRIDES.iter().any(|name| {
            headers
                .get_all(name)
                .iter()
                .any(|v| names_echo(v.as_bytes()))
        }) || query.is_some_and(|q| {
            crate::auth::credential::query_values(q, b"_method").any(|v| names_echo(&v))
        }))
}

/// Whether `method` is `CONNECT` in any spelling (Pingora answers only the exact one).
pub fn is_connect(method: &Method) -> bool {
    method.as_str().eq_ignore_ascii_case("CONNECT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_echoing_methods_in_any_spelling() {
        for (m, echo) in [
            ("TRACE", true),
            ("trace", true),
            ("TrAcK", true),
            ("TRACES", false),
            ("GET", false),
            ("OPTIONS", false),
            ("PROPFIND", false),
            ("DELETE", false),
        ] {
            let method = Method::from_bytes(m.as_bytes()).expect("a method");
            assert_eq!(is_echo(&method), echo, "{m}");
        }
    }

    #[test]
    fn a_post_overridden_to_an_echoing_method_and_connect_in_any_spelling() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).expect("name"),
                    v.parse().expect("value"),
                );
            }
            h
        };
        for (method, pairs, want) in [
            ("POST", &[("X-HTTP-Method-Override", "TRACE")][..], true),
            ("POST", &[("x-http-method", " track ")][..], true),
            ("POST", &[("X-Method-Override", "Trace")][..], true),
            ("POST", &[("X_HTTP_Method_Override", "TRACE")][..], true),
            (
                "POST",
                &[("X-Method-Override", "PUT"), ("X-Method-Override", "TRACE")][..],
                true,
            ),
            ("POST", &[("X-HTTP-Method-Override", "DELETE")][..], false),
            ("POST", &[("X-HTTP-Method-Override", "TRACES")][..], false),
            ("POST", &[][..], false),
            ("GET", &[("X-HTTP-Method-Override", "TRACE")][..], false),
        ] {
            let m = Method::from_bytes(method.as_bytes()).expect("method");
            assert_eq!(
                overrides_to_echo(&m, &headers(pairs), None),
                want,
                "{method} {pairs:?}"
            );
        }
        // A `_method` query parameter, in any spelling PHP reads as `_method`.
        let post = Method::POST;
        let none = HeaderMap::new();
        for (query, want) in [
            ("_method=TRACE", true),
            ("a=1&_method=track", true),
            ("%5Fmethod=trace", true),
            ("_method=PUT", false),
            ("x_method=TRACE", false),
        ] {
            assert_eq!(
                overrides_to_echo(&post, &none, Some(query)),
                want,
                "{query}"
            );
        }
        assert!(!overrides_to_echo(
            &Method::GET,
            &none,
            Some("_method=TRACE")
        ));
        for (m, connect) in [
            ("CONNECT", true),
            ("connect", true),
            ("Connect", true),
            ("CONNECTS", false),
            ("GET", false),
        ] {
            let method = Method::from_bytes(m.as_bytes()).expect("a method");
            assert_eq!(is_connect(&method), connect, "{m}");
        }
    }
}
