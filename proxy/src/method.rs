//! The request methods the router refuses itself: only those that echo the request.
//!
//! `TRACE` asks the instance to send the request back as it received it (RFC 9110 §9.3.8):
//! with the identity headers the router adds and the client's cookies, in a response a script
//! can read, which is how cross-site tracing reads `HttpOnly` cookies. IIS answers `TRACK`
//! the same way. Methods are case-sensitive, but some servers read them otherwise, so any
//! spelling is refused, and so is a `POST` whose method-override header (which Rails, Laravel,
//! Symfony, ASP.NET Core and Express's `method-override` honour on a `POST`) names one.
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

/// The method-override headers frameworks read on a `POST`.
static OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// Whether a `POST` asks, through a method-override header, to be handled as an echoing
/// method. Other methods are not overridden by those frameworks, so only a `POST` pays for
/// the lookups.
pub fn overrides_to_echo(method: &Method, headers: &HeaderMap) -> bool {
    *method == Method::POST
        && OVERRIDES.iter().any(|name| {
            headers.get_all(name).iter().any(|v| {
                let v = v.as_bytes().trim_ascii();
                v.eq_ignore_ascii_case(b"TRACE") || v.eq_ignore_ascii_case(b"TRACK")
            })
        })
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
                overrides_to_echo(&m, &headers(pairs)),
                want,
                "{method} {pairs:?}"
            );
        }
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
