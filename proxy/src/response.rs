//! What the client receives of the instance's response header.
//!
//! Pingora writes its own `Connection` header on a final HTTP/1.x response (keep-alive or
//! close, for the client's connection) but passes the rest of the instance's header through, hop-by-hop
//! fields included. Those describe the instance's connection to the router, not the router's
//! to the client (RFC 9110 §7.6.1): `Keep-Alive: timeout=5` would have the client drop a
//! connection the router keeps for a minute, and a field the instance named in `Connection`
//! (an internal debugging header, say) is one it meant for the next hop only.

use crate::auth::TokenPlaces;
use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, SET_COOKIE, TE,
    TRANSFER_ENCODING, UPGRADE,
};
use pingora::http::ResponseHeader;
use smallvec::SmallVec;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the instance's hop-by-hop fields: `Keep-Alive`, `Proxy-Connection`, `TE`, its
/// `Connection` and every field that names, and an `Upgrade` on a response other than a 101
/// whether or not `Connection` names it (it offers a switch of the instance's connection to
/// the router; sent on without `Connection: upgrade` it would also break RFC 9110 §7.8). A
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
        k == CONNECTION || k == TE || (k == UPGRADE && !switch) || {
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
    let upgrade = (!switch).then_some(&UPGRADE);
    for name in named
        .iter()
        .chain([&KEEP_ALIVE, &PROXY_CONNECTION, &TE])
        .chain(upgrade)
    {
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

/// Why an instance's response is refused for its framing (a 502), beyond what Pingora's parser
/// refuses: a body the client would read otherwise than the router did, or one the router can
/// only read by guessing. Asked after a 1xx's or a 204's framing fields are gone.
/// `resp.version` is the instance's (Pingora relabels only an HTTP/1.0 response without a
/// length, to which it adds its own chunked coding). A `Content-Length` beside a
/// `Transfer-Encoding` cannot be seen here: Pingora's parser removes it (RFC 9112 §6.3).
pub fn framing_fault(resp: &ResponseHeader) -> Option<&'static str> {
    if !resp.headers.contains_key(TRANSFER_ENCODING) {
        return None;
    }
    if resp.version < http::Version::HTTP_11 {
        // RFC 9112 §6.1: HTTP/1.0 has no transfer codings; such framing is faulty.
        return Some("a Transfer-Encoding on an HTTP/1.0 response");
    }
    if crate::framing::chunked_count(&resp.headers) > 1 {
        // Pingora removes one chunked coding and passes the header on: the client would
        // remove two.
        return Some("chunked applied more than once");
    }
    if crate::framing::last_coding_is_chunked(&resp.headers)
        && crate::framing::ends_with_connection(&resp.headers)
    {
        // `chunked,`, `chunked;x=1`, a last line that is empty: Pingora reads the body to the
        // instance's close and passes it on as it came, under this header, which the client
        // reads as chunked. The client would stop at the instance's last chunk and take
        // whatever the instance sent after it for something else.
        return Some("a Transfer-Encoding the client would read as chunked and the router not");
    }
    None
}

/// Why a `101 Switching Protocols` to a WebSocket request is refused (a 502): RFC 9110 §7.8
/// has it name the protocol switched to in `Upgrade`, and only one the client named; the
/// router forwards only `Upgrade: websocket` (see `asks_for_upgrade` in `service`).
pub fn switch_fault(resp: &ResponseHeader) -> Option<&'static str> {
    if resp.version != http::Version::HTTP_11 {
        // HTTP/1.0 has no upgrade: Pingora's instance side would not switch, its client side
        // would, and the tunnel would break at its first byte.
        return Some("a 101 in another version than HTTP/1.1");
    }
    let mut protocols = resp
        .headers
        .get_all(UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty());
    match (protocols.next(), protocols.next()) {
        (None, _) => Some("a 101 that names no protocol"),
        (Some(p), None) if p.eq_ignore_ascii_case(b"websocket") => None,
        _ => Some("a 101 to a protocol the client did not ask for"),
    }
}

/// Why a response that echoes the request back (`Content-Type: message/http`, RFC 9112
/// §10.1, which is what `TRACE` handlers answer: the servlet API's `doTrace`, IIS, Apache's
/// `TraceEnable`) is refused (a 502). The router refuses `TRACE` itself, and a `POST`
/// overridden to one in a header or the query, but a framework may read the override from
/// the body the router streams unread (Spring's `HiddenHttpMethodFilter` before 5.1, echo's
/// `MethodFromForm`): Jetty's `doTrace` then echoes the client's cookies and `Authorization`,
/// and any container the identity headers, into a response a script can read.
pub fn echo_fault(resp: &ResponseHeader) -> Option<&'static str> {
    let echoes = resp.headers.get_all(CONTENT_TYPE).iter().any(|v| {
        let media_type = v
            .as_bytes()
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        media_type
            .trim_ascii()
            .eq_ignore_ascii_case(b"message/http")
    });
    echoes.then_some("an echo of the request (message/http): TRACE is not served")
}

/// Removes every `Set-Cookie` that would reach other tenants' hosts or spoil their
/// credential, and returns how many it removed:
/// - one with a `Domain` that is a base domain or a parent of one (`Domain=<base domain>`):
///   the browser sends it to every tenant's host under it, so one tenant's instance could
///   fix a session, plant a CSRF token or fill the header (431) of any other tenant's app.
///   So is one whose `Domain` a browser may read otherwise than written (non-ASCII, `%`);
/// - one that carries a token cookie (`session_cookie` or one of `token_cookies`, in any
///   spelling the router reads as it: its name, a pair hidden behind a comma or blank, or a
///   nameless cookie whose value the browser sends as `name=value`) with any `Domain`: sent
///   beside another tenant's own token cookie, the two credentials disagree and the router
///   refuses the request, so one instance could lock every cookie-using tenant's users out.
///   A token cookie is a credential the router reads: an instance sets it host-only (no
///   `Domain`).
pub fn drop_shared_cookies(
    resp: &mut ResponseHeader,
    places: &TokenPlaces,
    base_domains: &[String],
) -> usize {
    let shared = |v: &HeaderValue| is_shared_cookie(v.as_bytes(), places, base_domains);
    if !resp.headers.get_all(SET_COOKIE).iter().any(shared) {
        return 0;
    }
    let all: Vec<HeaderValue> = resp.headers.get_all(SET_COOKIE).iter().cloned().collect();
    resp.remove_header(&SET_COOKIE);
    let mut dropped = 0;
    for v in all {
        if shared(&v) {
            dropped += 1;
        } else {
            // Appending a value taken from this map cannot fail.
            let _ = resp.append_header(SET_COOKIE, v);
        }
    }
    dropped
}

/// Whether a `Set-Cookie` value is one [`drop_shared_cookies`] removes. Its attributes follow
/// the cookie pair, after the first `;` (RFC 6265 §5.2); attribute names are compared without
/// case, and a `Domain` value without its leading dot and case.
fn is_shared_cookie(value: &[u8], places: &TokenPlaces, base_domains: &[String]) -> bool {
    let mut parts = value.split(|&b| b == b';');
    let pair = parts.next().unwrap_or_default();
    let domains = parts
        .filter_map(|attribute| {
            let (key, domain) = attribute.split_at(attribute.iter().position(|&b| b == b'=')?);
            key.trim_ascii()
                .eq_ignore_ascii_case(b"domain")
                .then(|| domain[1..].trim_ascii())
        })
        // A leading dot is ignored (RFC 6265 §5.2.3), and a trailing one names the same host.
        .map(|d| d.strip_prefix(b".").unwrap_or(d))
        .map(|d| d.strip_suffix(b".").unwrap_or(d))
        // An empty `Domain` is ignored by browsers: the cookie stays host-only.
        .filter(|d| !d.is_empty());
    // Read as they come, without collecting them: this runs for every `Set-Cookie` passed.
    let mut has_domain = false;
    for d in domains {
        if !read_as_written(d) || covers_a_base(d, base_domains) {
            return true;
        }
        has_domain = true;
    }
    // A nameless cookie (`=v`) is sent as its value alone: `=sess=x` arrives as `sess=x`.
    let sent = match pair.trim_ascii_start().strip_prefix(b"=") {
        Some(value) => value,
        None => pair,
    };
    has_domain && crate::auth::credential::has_token_cookie(sent, places)
}

/// Whether a browser reads a `Domain` value as the bytes written: a plain ASCII host name
/// (letters, digits, `-`, `_`, `.`). Any other byte it may map first, and the map is the
/// browser's: IDNA turns full-width letters and the ideographic full stop into ASCII
/// (`ｎｅｘｕｓ.test`, `nexus。test` are `nexus.test`), some read `%`-escapes. Such a value
/// cannot be compared with the base domains, so its cookie is dropped.
fn read_as_written(domain: &[u8]) -> bool {
    domain
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether a cookie for `domain` reaches every host under one of `base_domains`: it is one
/// of them, or a parent of one.
fn covers_a_base(domain: &[u8], base_domains: &[String]) -> bool {
    base_domains.iter().any(|base| {
        let base = base.as_bytes();
        base.len() >= domain.len()
            && base[base.len() - domain.len()..].eq_ignore_ascii_case(domain)
            && (base.len() == domain.len() || base[base.len() - domain.len() - 1] == b'.')
    })
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
            // An upgrade offered on another status goes with the Connection that names it,
            // or alone; so does a `TE`, a request's field.
            (
                426,
                &[("Connection", "upgrade"), ("Upgrade", "websocket")],
                &[],
            ),
            (
                200,
                &[("Upgrade", "h2c"), ("TE", "trailers"), ("x-app", "1")],
                &["x-app"],
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
            // A 101's own Upgrade stays without a Connection naming it (whether it is a valid
            // switch is `switch_fault`'s to say); its TE does not.
            (
                101,
                &[("Upgrade", "websocket"), ("te", "trailers")],
                &["upgrade"],
            ),
        ];
        for (status, fields, left) in cases {
            let mut r = response(*status, fields);
            remove_hop_by_hop(&mut r);
            assert_eq!(names(&r), *left, "{status} {fields:?}");
            if *status == 101 && r.headers.contains_key(CONNECTION) {
                let connection = r.headers.get(CONNECTION).map(|v| v.as_bytes());
                assert_eq!(connection, Some(&b"upgrade"[..]), "{fields:?}");
            }
        }
    }

    #[test]
    fn an_echo_of_the_request_in_any_spelling_is_refused() {
        for (fields, refused) in [
            (&[("content-type", "message/http")][..], true),
            (
                &[("content-type", "Message/HTTP; msgtype=request")][..],
                true,
            ),
            (&[("content-type", " message/http ;x")][..], true),
            (
                &[
                    ("content-type", "text/plain"),
                    ("content-type", "message/http"),
                ][..],
                true,
            ),
            (&[("content-type", "message/https")][..], false),
            (
                &[("content-type", "text/html; charset=message/http")][..],
                false,
            ),
            (&[("content-type", "application/http")][..], false),
            (&[][..], false),
        ] {
            assert_eq!(
                echo_fault(&response(200, fields)).is_some(),
                refused,
                "{fields:?}"
            );
        }
    }

    #[test]
    fn framing_faults_table() {
        let http10 = |fields: &[(&str, &str)]| {
            let mut r = response(200, fields);
            r.set_version(http::Version::HTTP_10);
            r
        };
        let cases: &[(ResponseHeader, Option<&str>)] = &[
            (response(200, &[("content-length", "3")]), None),
            (response(200, &[("transfer-encoding", "chunked")]), None),
            (
                response(200, &[("transfer-encoding", "gzip, Chunked")]),
                None,
            ),
            // No length: read to the close, whatever Content-Length says.
            (
                response(
                    200,
                    &[("transfer-encoding", "gzip"), ("content-length", "3")],
                ),
                None,
            ),
            (
                response(200, &[("transfer-encoding", "chunked, chunked")]),
                Some("chunked applied more than once"),
            ),
            (
                response(
                    200,
                    &[
                        ("transfer-encoding", "chunked"),
                        ("transfer-encoding", "CHUNKED"),
                    ],
                ),
                Some("chunked applied more than once"),
            ),
            (http10(&[("content-length", "3")]), None),
            // Chunked last for a client, not for Pingora: read otherwise.
            (
                response(200, &[("transfer-encoding", "chunked,")]),
                Some("a Transfer-Encoding the client would read as chunked and the router not"),
            ),
            (
                response(200, &[("transfer-encoding", "gzip, chunked;x=1")]),
                Some("a Transfer-Encoding the client would read as chunked and the router not"),
            ),
            (
                response(
                    200,
                    &[("transfer-encoding", "chunked"), ("transfer-encoding", "")],
                ),
                Some("a Transfer-Encoding the client would read as chunked and the router not"),
            ),
            // Chunked last for both, empty elements before it aside.
            (response(200, &[("transfer-encoding", ", chunked")]), None),
            (
                response(
                    200,
                    &[
                        ("transfer-encoding", "gzip,"),
                        ("transfer-encoding", "chunked"),
                    ],
                ),
                None,
            ),
            (
                http10(&[("transfer-encoding", "chunked")]),
                Some("a Transfer-Encoding on an HTTP/1.0 response"),
            ),
        ];
        for (r, fault) in cases {
            assert_eq!(framing_fault(r), *fault, "{:?}", r.headers);
        }
    }

    #[test]
    fn switch_faults_table() {
        /// The 101's fields, and the fault found.
        type SwitchCase = (
            &'static [(&'static str, &'static str)],
            Option<&'static str>,
        );
        let cases: &[SwitchCase] = &[
            (&[("upgrade", "websocket")], None),
            (&[("upgrade", " WebSocket ")], None),
            (&[], Some("a 101 that names no protocol")),
            (&[("upgrade", " , ")], Some("a 101 that names no protocol")),
            (
                &[("upgrade", "h2c")],
                Some("a 101 to a protocol the client did not ask for"),
            ),
            (
                &[("upgrade", "websocket, h2c")],
                Some("a 101 to a protocol the client did not ask for"),
            ),
            (
                &[("upgrade", "websocket"), ("upgrade", "websocket")],
                Some("a 101 to a protocol the client did not ask for"),
            ),
        ];
        for (fields, fault) in cases {
            assert_eq!(switch_fault(&response(101, fields)), *fault, "{fields:?}");
        }
        let mut http10 = response(101, &[("upgrade", "websocket")]);
        http10.set_version(http::Version::HTTP_10);
        assert_eq!(
            switch_fault(&http10),
            Some("a 101 in another version than HTTP/1.1")
        );
    }

    #[test]
    fn cookies_for_other_tenants_hosts_and_the_session_cookie_with_a_domain_are_dropped() {
        let bases = ["nexus.test".to_owned(), "b.nexus.test".to_owned()];
        let places = TokenPlaces::new(&nexus_config::AuthSettings {
            session_cookie: Some("sess".to_owned()),
            token_cookies: vec!["jwt".to_owned()],
            ..nexus_config::embedded_default().auth
        });
        // (the instance's Set-Cookie values, those the client gets)
        let cases: &[(&[&str], &[&str])] = &[
            // Host-only: how an instance signs its users in.
            (
                &["sess=tok; Path=/; HttpOnly"],
                &["sess=tok; Path=/; HttpOnly"],
            ),
            (&["sess=tok; Domain=shop.example; Path=/"], &[]),
            (&["sess=tok;domain=.shop.example"], &[]),
            (&["sess=tok; Secure; DOMAIN = shop.example"], &[]),
            // Spellings the router reads as the session cookie.
            (&[" SESS =tok; Domain=shop.example"], &[]),
            (&["se%73s=tok; Domain=shop.example"], &[]),
            // Hidden behind a blank or a comma, or nameless (sent as `sess=x`).
            (&["theme=dark sess=x; Domain=shop.example"], &[]),
            (&["x=a,sess=x; Domain=shop.example"], &[]),
            (&["$Version=1, sess=x; Domain=shop.example"], &[]),
            (&["=sess=x; Domain=shop.example"], &[]),
            // Another token cookie, as the session cookie.
            (&["JWT=x; Domain=shop.example"], &[]),
            (&["jwt=x; Path=/"], &["jwt=x; Path=/"]),
            (&["theme=dark sess=x"], &["theme=dark sess=x"]),
            // An empty Domain leaves the cookie host-only.
            (&["sess=tok; Domain="], &["sess=tok; Domain="]),
            // Other cookies: their own host, or a domain that is no base, are the instance's.
            (
                &["theme=dark; Domain=acme.nexus.test"],
                &["theme=dark; Domain=acme.nexus.test"],
            ),
            (
                &["theme=dark; Domain=customer.example"],
                &["theme=dark; Domain=customer.example"],
            ),
            (
                &["sessx=1; Domain=xnexus.test", "a=1; Domain=exus.test"],
                &["sessx=1; Domain=xnexus.test", "a=1; Domain=exus.test"],
            ),
            // A base domain, or a parent of one: every tenant's host gets it.
            (&["theme=dark; Domain=nexus.test"], &[]),
            (&["csrf=1; Path=/; Domain=.NEXUS.test"], &[]),
            (&["csrf=1; Domain=b.nexus.test"], &[]),
            (&["csrf=1; Domain=nexus.test."], &[]),
            (&["big=1; Domain=test"], &[]),
            // A value that mentions a domain is not an attribute.
            (&["sess=Domain=x"], &["sess=Domain=x"]),
            (
                &[
                    "a=1",
                    "sess=tok; Domain=shop.example",
                    "b=2; Domain=x.example",
                ],
                &["a=1", "b=2; Domain=x.example"],
            ),
        ];
        // A Domain a browser may read otherwise than written: IDNA maps full-width letters
        // and the ideographic full stop to ASCII (`nexus.test`), some read %-escapes.
        for domain in [
            "ｎｅｘｕｓ.test",
            "nexus。test",
            "nexus%2Etest",
            "acme.nexus.test:80",
        ] {
            let mut r = ResponseHeader::build(200, None).unwrap();
            let value = format!("theme=dark; Domain={domain}");
            r.append_header(
                SET_COOKIE,
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            )
            .unwrap();
            assert_eq!(drop_shared_cookies(&mut r, &places, &bases), 1, "{domain}");
            assert!(r.headers.get(SET_COOKIE).is_none(), "{domain}");
        }
        for (given, kept) in cases {
            let fields: Vec<(&str, &str)> = given.iter().map(|v| ("set-cookie", *v)).collect();
            let mut r = response(200, &fields);
            let dropped = drop_shared_cookies(&mut r, &places, &bases);
            let got: Vec<&str> = r
                .headers
                .get_all(SET_COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(got, *kept, "{given:?}");
            assert_eq!(dropped, given.len() - kept.len(), "{given:?}");
        }
    }
}
