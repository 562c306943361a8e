//! The request methods the router refuses itself: only those that echo the request (and
//! bodies on extension methods the instances are not said to read, [`refuses_body_of`]).
//!
//! `TRACE` asks the instance to send the request back as it received it (RFC 9110 §9.3.8):
//! with the identity headers the router adds and the client's cookies, in a response a script
//! can read, which is how cross-site tracing reads `HttpOnly` cookies. IIS answers `TRACK`
//! the same way. Methods are case-sensitive, but some servers read them otherwise, so any
//! spelling is refused, and so is a `POST` that asks to be handled as one through a
//! method-override header (`X-HTTP-Method-Override` and its kin, in `-` or `_` spelling, as
//! Laravel, Symfony, ASP.NET Core and Express's `method-override` read them on a `POST`) or a
//! `_method` query parameter (Laravel and Symfony read it from the query as well as the body;
//! a body is not read here) or `x-tunneled-method` one (Plack's `MethodOverride`, in every
//! Catalyst app's default middleware).
//! `CONNECT` never gets this far: Pingora answers it 405. Spelled otherwise (`connect`), it
//! would reach the instance, where a server that reads methods without case would take it for
//! a tunnel request; it is refused too. Every other method, extension methods included, is
//! the instance's to answer.
//!
//! An override can also name `CONNECT` or `HEAD`, which a `POST` must not become either:
//! echo (Go) takes any method its `MethodOverride` reads, with no list, so an override to
//! `CONNECT` runs the app's tunnel routes, and one to `HEAD` changes the method Go's server
//! frames the answer by: it answers without a body and keeps the connection, while Pingora,
//! reading the answer to a `POST`, waits for one (the hazard of a `head` method, see
//! [`crate::framing::is_miscased_method`]).

use http::{HeaderMap, Method};

/// Whether `method` asks for the request to be echoed back.
pub fn is_echo(method: &Method) -> bool {
    let m = method.as_str();
    m.eq_ignore_ascii_case("TRACE") || m.eq_ignore_ascii_case("TRACK")
}

/// The method-override headers frameworks read on a `POST`, compared in every spelling an
/// upstream reads as them (see [`crate::field_name::folds_to`]): CGI-style servers fold
/// `_` and `-` into one variable, whatever mix a name has (`X-Http-Method_Override` is
/// `HTTP_X_HTTP_METHOD_OVERRIDE` to Puma and WEBrick, and so `HEAD` to Rack's
/// `MethodOverride`).
const OVERRIDES: [&[u8]; 3] = [
    b"x-http-method-override",
    b"x-http-method",
    b"x-method-override",
];

/// A method a `POST` asks to be handled as that the router does not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overridden {
    /// `TRACE` or `TRACK` ([`is_echo`]).
    Echo,
    /// `CONNECT`: a tunnel request to the app.
    Connect,
    /// `HEAD`: an answer without a body where Pingora expects one.
    Head,
}

/// What an override value names, blanks and case aside (a server matching methods without
/// case reads it so; Jersey's override filter takes Java's `trim()` to it, which drops every
/// control byte), if it is one the router refuses.
fn refused_override(v: &[u8]) -> Option<Overridden> {
    let v = crate::auth::credential::trim_blanks(v);
    if v.eq_ignore_ascii_case(b"TRACE") || v.eq_ignore_ascii_case(b"TRACK") {
        Some(Overridden::Echo)
    } else if v.eq_ignore_ascii_case(b"CONNECT") {
        Some(Overridden::Connect)
    } else if v.eq_ignore_ascii_case(b"HEAD") {
        Some(Overridden::Head)
    } else {
        None
    }
}

/// The query parameters frameworks read a method override from (names read as
/// `crate::auth::credential::query_values` reads them).
const OVERRIDE_PARAMETERS: [&[u8]; 2] = [b"_method", b"x-tunneled-method"];

/// What a `POST` asks, through a method-override header or query parameter, to be handled
/// as, when the router refuses that (the first such value found). Other methods are not
/// overridden by those frameworks, so only a `POST` pays for the lookups.
pub fn refused_override_of(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<Overridden> {
    if *method != Method::POST {
        return None;
    }
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str().as_bytes();
            OVERRIDES
                .iter()
                .any(|o| crate::field_name::folds_to(name, o))
        })
        .find_map(|(_, v)| refused_override(v.as_bytes()))
        .or_else(|| {
            query.and_then(|q| {
                OVERRIDE_PARAMETERS.iter().find_map(|name| {
                    crate::auth::credential::query_values(q, name)
                        .iter()
                        .find_map(|v| refused_override(v))
                })
            })
        })
}

/// Whether a body on `method` is refused: an extension method (not one RFC 9110 defines, nor
/// `PATCH`) that `listed` (`[upstream] extension_methods_with_bodies`) does not name. A
/// server that does not know a method answers it 400 before reading its header, so it never
/// sees the router's `Connection: close`, and reads the body as the connection's next
/// request, one the router never checked: Nim's `asynchttpserver`, cpp-httplib 0.11 and
/// Pistache ran a `GET /admin/...` with a client's `X-User-Id` hidden in a `PROPFIND`'s body.
pub fn refuses_body_of(method: &Method, listed: &[String]) -> bool {
    let standard = matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::OPTIONS
            | Method::PATCH
    );
    !standard && !listed.iter().any(|m| m == method.as_str())
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
    fn only_listed_extension_methods_keep_their_bodies() {
        let listed = vec!["PROPFIND".to_owned(), "REPORT".to_owned()];
        for (m, refused) in [
            ("GET", false),
            ("POST", false),
            ("PATCH", false),
            ("DELETE", false),
            ("OPTIONS", false),
            ("PROPFIND", false),
            ("REPORT", false),
            ("propfind", true),
            ("SEARCH", true),
            ("QUERY", true),
            ("FOO", true),
        ] {
            let method = Method::from_bytes(m.as_bytes()).expect("a method");
            assert_eq!(refuses_body_of(&method, &listed), refused, "{m}");
        }
    }

    #[test]
    fn a_post_overridden_to_a_refused_method_and_connect_in_any_spelling() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(
                    http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                    v.parse().expect("value"),
                );
            }
            h
        };
        use Overridden::{Connect, Echo, Head};
        for (method, pairs, want) in [
            (
                "POST",
                &[("X-HTTP-Method-Override", "TRACE")][..],
                Some(Echo),
            ),
            ("POST", &[("x-http-method", " track ")][..], Some(Echo)),
            ("POST", &[("X-Method-Override", "Trace")][..], Some(Echo)),
            (
                "POST",
                &[("X_HTTP_Method_Override", "TRACE")][..],
                Some(Echo),
            ),
            (
                "POST",
                &[("X-Method-Override", "PUT"), ("X-Method-Override", "TRACE")][..],
                Some(Echo),
            ),
            (
                "POST",
                &[("X-HTTP-Method-Override", "CONNECT")][..],
                Some(Connect),
            ),
            ("POST", &[("X-HTTP-Method", "connect ")][..], Some(Connect)),
            (
                "POST",
                &[("X-HTTP-Method-Override", "HEAD")][..],
                Some(Head),
            ),
            ("POST", &[("x_method_override", "Head")][..], Some(Head)),
            // Mixed spellings, which Puma and WEBrick fold into one variable, and a trailing
            // `_`, which Grape drops.
            (
                "POST",
                &[("X-Http-Method_Override", "HEAD")][..],
                Some(Head),
            ),
            (
                "POST",
                &[("X_Http-Method-Override", "TRACE")][..],
                Some(Echo),
            ),
            ("POST", &[("X-HTTP_Method", "CONNECT")][..], Some(Connect)),
            ("POST", &[("X.Method_Override_", "track")][..], Some(Echo)),
            ("POST", &[("X-HTTP-Method-Overrides", "TRACE")][..], None),
            ("POST", &[("X-HTTP-Method-Override", "DELETE")][..], None),
            ("POST", &[("X-HTTP-Method-Override", "GET")][..], None),
            ("POST", &[("X-HTTP-Method-Override", "TRACES")][..], None),
            ("POST", &[("X-HTTP-Method-Override", "HEADER")][..], None),
            ("POST", &[][..], None),
            ("GET", &[("X-HTTP-Method-Override", "TRACE")][..], None),
            ("PUT", &[("X-HTTP-Method-Override", "HEAD")][..], None),
        ] {
            let m = Method::from_bytes(method.as_bytes()).expect("method");
            assert_eq!(
                refused_override_of(&m, &headers(pairs), None),
                want,
                "{method} {pairs:?}"
            );
        }
        // A `_method` query parameter, in any spelling PHP reads as `_method`.
        let post = Method::POST;
        let none = HeaderMap::new();
        for (query, want) in [
            ("_method=TRACE", Some(Echo)),
            ("a=1&_method=track", Some(Echo)),
            ("%5Fmethod=trace", Some(Echo)),
            ("_method=CONNECT", Some(Connect)),
            // Plack's `MethodOverride` (every Catalyst app's) reads `x-tunneled-method`.
            ("x-tunneled-method=TRACE", Some(Echo)),
            ("a=1;x%2dtunneled%2Dmethod=TRAC%45", Some(Echo)),
            ("x-tunneled-method=head", Some(Head)),
            ("x-tunneled-method=PUT", None),
            // Java's `trim()` (Jersey's override filter) drops every control byte.
            ("_method=TRACE%00", Some(Echo)),
            ("_method=%01head%1F", Some(Head)),
            ("_method=%0BCONNECT", Some(Connect)),
            ("_method=%48EAD", Some(Head)),
            // Decoded whole before it is split (`java.net.URI::getQuery()`).
            ("a=%26_method%3DTRACE", Some(Echo)),
            ("_method=PUT", None),
            ("x_method=TRACE", None),
        ] {
            assert_eq!(
                refused_override_of(&post, &none, Some(query)),
                want,
                "{query}"
            );
        }
        assert_eq!(
            refused_override_of(&Method::GET, &none, Some("_method=TRACE")),
            None
        );
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
