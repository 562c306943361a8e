//! What the client receives of the instance's response header.
//!
//! Pingora writes its own `Connection` header on a final HTTP/1.x response (keep-alive or
//! close, for the client's connection) but passes the rest of the instance's header through, hop-by-hop
//! fields included. Those describe the instance's connection to the router, not the router's
//! to the client (RFC 9110 §7.6.1): `Keep-Alive: timeout=5` would have the client drop a
//! connection the router keeps for a minute, and a field the instance named in `Connection`
//! (an internal debugging header, say) is one it meant for the next hop only.

use http::header::{HeaderName, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use pingora::http::ResponseHeader;
use smallvec::SmallVec;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the instance's hop-by-hop fields: `Keep-Alive`, `Proxy-Connection`, its
/// `Connection` and every field that names (an `Upgrade` on a response other than a 101, with
/// it: sent on without `Connection: upgrade` it would break RFC 9110 §7.8). A
/// `101 Switching Protocols` keeps its `Connection: upgrade` and `Upgrade`, the switch itself,
/// and loses the rest alike: its `Connection` then names `upgrade` alone.
///
/// The body's framing (`Content-Length`, `Transfer-Encoding`) stays whatever `Connection`
/// names: Pingora frames the client's body by it, and an instance must not be able to change
/// how the router delimits what it sends.
pub fn remove_hop_by_hop(resp: &mut ResponseHeader) {
    let switch = resp.status == http::StatusCode::SWITCHING_PROTOCOLS;
    // The usual response has none of them: one pass over its few names, no hashing (four
    // lookups cost about 600 instructions a request, 0.5% of the router's whole).
    let any = resp.headers.keys().any(|k| {
        k == CONNECTION || {
            let n = k.as_str();
            n == KEEP_ALIVE.as_str() || n == PROXY_CONNECTION.as_str()
        }
    });
    if !any {
        return;
    }
    let named: SmallVec<[HeaderName; 2]> = resp
        .headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .filter(|name| ![CONTENT_LENGTH, TRANSFER_ENCODING].contains(name))
        .filter(|name| !(switch && *name == UPGRADE))
        .collect();
    for name in named.iter().chain([&KEEP_ALIVE, &PROXY_CONNECTION]) {
        if resp.headers.contains_key(name) {
            resp.remove_header(name);
        }
    }
    if switch {
        // The switch goes on to the client: its `Connection` names only the upgrade.
        if resp.headers.contains_key(CONNECTION) {
            let _ = resp.insert_header(CONNECTION, "upgrade");
        }
    } else if resp.headers.contains_key(CONNECTION) {
        // Pingora writes its own; the instance's is about another connection.
        resp.remove_header(&CONNECTION);
    }
}

/// Gives the client the instance's `Content-Length` as one plain number when the instance
/// wrote it as identical values (a list, repeated lines) or with leading zeros. Pingora reads
/// the body by the one number but passes the field on as received; RFC 9110 §8.6 has a
/// recipient replace it with that number, and clients that refuse a repeated
/// `Content-Length` even when the values agree (Node's parser) would refuse the response.
pub fn canonicalise_content_length(resp: &mut ResponseHeader) -> pingora::Result<()> {
    match crate::framing::canonical_content_length(&resp.headers) {
        Some(length) => resp.insert_header(CONTENT_LENGTH, length),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, fields: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (name, value) in fields {
            r.append_header(name.to_string(), *value).unwrap();
        }
        r
    }

    fn names(r: &ResponseHeader) -> Vec<String> {
        let mut n: Vec<String> = r.headers.keys().map(|k| k.to_string()).collect();
        n.sort();
        n
    }

    /// Status, the instance's fields, the field names left.
    type Case = (
        u16,
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );

    #[test]
    fn hop_by_hop_fields_table() {
        let cases: &[Case] = &[
            // Nothing to remove.
            (
                200,
                &[("content-length", "3"), ("x-app", "1")],
                &["content-length", "x-app"],
            ),
            // The fixed hop-by-hop fields.
            (
                200,
                &[
                    ("Keep-Alive", "timeout=5"),
                    ("Proxy-Connection", "keep-alive"),
                    ("x-app", "1"),
                ],
                &["x-app"],
            ),
            // Fields named by Connection, in any case, on one line or several.
            (
                200,
                &[
                    ("Connection", "X-Secret, keep-alive"),
                    ("connection", " x-other ,close"),
                    ("x-secret", "s"),
                    ("X-Other", "o"),
                    ("x-app", "1"),
                    ("Keep-Alive", "timeout=5"),
                ],
                &["x-app"],
            ),
            // Framing stays whatever Connection names; a name that is no field name is passed
            // over.
            (
                200,
                &[
                    ("Connection", "content-length, transfer-encoding, bad name"),
                    ("content-length", "3"),
                ],
                &["content-length"],
            ),
            // An upgrade offered on another status goes with the Connection that names it.
            (
                426,
                &[("Connection", "upgrade"), ("Upgrade", "websocket")],
                &[],
            ),
            // A 101 is the switch itself; what else its Connection names is still dropped.
            (
                101,
                &[("Connection", "upgrade"), ("Upgrade", "websocket")],
                &["connection", "upgrade"],
            ),
            (
                101,
                &[
                    ("Connection", "Upgrade, X-Internal"),
                    ("Upgrade", "websocket"),
                    ("x-internal", "secret"),
                    ("Keep-Alive", "timeout=5"),
                    ("sec-websocket-accept", "x"),
                ],
                &["connection", "sec-websocket-accept", "upgrade"],
            ),
        ];
        for (status, fields, left) in cases {
            let mut r = response(*status, fields);
            remove_hop_by_hop(&mut r);
            assert_eq!(names(&r), *left, "{status} {fields:?}");
            if *status == 101 {
                let connection = r.headers.get(CONNECTION).map(|v| v.as_bytes());
                assert_eq!(connection, Some(&b"upgrade"[..]), "{fields:?}");
            }
        }
    }
}
