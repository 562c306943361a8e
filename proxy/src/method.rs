//! The request methods the router refuses itself: only those that echo the request.
//!
//! `TRACE` asks the instance to send the request back as it received it (RFC 9110 §9.3.8):
//! with the identity headers the router adds and the client's cookies, in a response a script
//! can read, which is how cross-site tracing reads `HttpOnly` cookies. IIS answers `TRACK`
//! the same way. Methods are case-sensitive, but some servers read them otherwise, so any
//! spelling is refused. `CONNECT` never gets this far: Pingora answers it 405. Every other
//! method, extension methods included, is the instance's to answer.

use http::Method;

/// Whether `method` asks for the request to be echoed back.
pub fn is_echo(method: &Method) -> bool {
    let m = method.as_str();
    m.eq_ignore_ascii_case("TRACE") || m.eq_ignore_ascii_case("TRACK")
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
}
