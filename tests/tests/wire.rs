//! HTTP/1.1 framing on the wire between the real router and an instance that answers raw,
//! scripted bytes: what the client gets of an instance's response whose framing is unusual.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nexus_e2e::edge::{binding, bindings_file, Edge, EdgeOptions, BASE};
use nexus_e2e::http::{get_with_token, read_next_response, read_response, send_raw, Response};
use nexus_e2e::keys::TestKeys;
use nexus_e2e::raw_instance::{Answer, RawInstance};

/// The router in front of one raw instance, serving tenant `acme`.
struct World {
    keys: TestKeys,
    instance: RawInstance,
    edge: Edge,
}

/// The instance answers each request by its path with `answer(path)`.
fn world(answer: fn(&str) -> Answer) -> World {
    world_with(answer, |_| {})
}

/// [`world`], with the router's options changed by `edit` first.
fn world_with(answer: fn(&str) -> Answer, edit: impl FnOnce(&mut EdgeOptions)) -> World {
    let keys = TestKeys::new();
    let instance =
        RawInstance::start(move |head| answer(head.split_whitespace().nth(1).unwrap_or_default()));
    let bindings = bindings_file(vec![binding(
        "acme",
        &instance.url(),
        "active",
        Some("org-acme"),
    )]);
    let mut opts = EdgeOptions::new(keys.jwks(), bindings);
    edit(&mut opts);
    let edge = Edge::start(&opts);
    World {
        keys,
        instance,
        edge,
    }
}

impl World {
    /// A keep-alive connection to the router.
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.edge.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// An authenticated keep-alive `GET path`.
    fn request(&self, path: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: acme.{BASE}\r\nAuthorization: Bearer {}\r\n\r\n",
            self.keys.token("acme", Some("org-acme"))
        )
    }

    /// An authenticated WebSocket upgrade request for `path` over HTTP/1.`minor`.
    fn upgrade(&self, path: &str, minor: u8) -> String {
        format!(
            "GET {path} HTTP/1.{minor}\r\nHost: acme.{BASE}\r\nAuthorization: Bearer {}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            self.keys.token("acme", Some("org-acme"))
        )
    }

    /// Sends `GET path` on `s` and reads its response.
    fn get(&self, s: &mut TcpStream, path: &str) -> Response {
        s.write_all(self.request(path).as_bytes()).unwrap();
        read_response(s).unwrap()
    }
}

/// The values of `name` in `r`, in order.
fn values<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[test]
fn an_instances_repeated_or_padded_content_length_reaches_the_client_as_one_number() {
    let w = world(|path| match path {
        "/lines" => {
            Answer::keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok")
        }
        "/list" => Answer::keep("HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok"),
        "/zeros" => Answer::keep("HTTP/1.1 200 OK\r\ncontent-length: 002\r\n\r\nok"),
        "/chunked" => Answer::keep(
            "HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\ntransfer-encoding: chunked\r\n\r\n\
             2\r\nok\r\n0\r\n\r\n",
        ),
        _ => Answer::keep(OK),
    });
    let mut s = w.connect();
    for path in ["/lines", "/list", "/zeros"] {
        let r = w.get(&mut s, path);
        assert_eq!(r.status, 200, "{path}");
        // RFC 9110 §8.6: the one value, once (a client such as Node's refuses a repeated
        // Content-Length even when the values agree).
        assert_eq!(values(&r, "content-length"), ["2"], "{path}");
        assert_eq!(r.body, b"ok", "{path}");
    }
    // Beside a chunked coding, which frames the body, there is no length to pass on.
    let r = w.get(&mut s, "/chunked");
    assert_eq!(values(&r, "content-length"), Vec::<&str>::new());
    assert_eq!(r.body, b"ok");
    // The same connection carried every answer, whole.
    assert_eq!(w.get(&mut s, "/").status, 200);
    assert_eq!(w.instance.received().len(), 1);
}

/// Everything the router sends on `s` until it closes the connection.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let read = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all).into_owned();
    assert!(read.is_ok(), "connection left open after: {text:?}");
    text
}

#[test]
fn a_body_that_ends_with_the_instances_connection_ends_with_the_clients() {
    // RFC 9112 §6.3: a response whose transfer coding is not chunked last has no length, not
    // even a Content-Length beside it; its body ends when the connection closes.
    let w = world(|path| match path {
        "/gzip" => {
            Answer::close("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\ncoded-until-close")
        }
        "/chunked-gzip" => Answer::close(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
        "/identity" => Answer::close(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\ncontent-length: 2\r\n\r\nok",
        ),
        "/not-modified" => {
            Answer::keep("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: gzip\r\n\r\n")
        }
        _ => Answer::keep(OK),
    });
    for (path, body) in [
        ("/gzip", "coded-until-close"),
        ("/chunked-gzip", "3\r\nabc\r\n0\r\n\r\n"),
        ("/identity", "ok"),
    ] {
        let mut s = w.connect();
        s.write_all(w.request(path).as_bytes()).unwrap();
        // Kept open, the client could tell the body's end from nothing: it would wait for
        // the close, or take the next response for more of this body.
        let text = read_to_close(&mut s);
        let (head, got) = text.split_once("\r\n\r\n").expect("a response");
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert!(
            head.to_ascii_lowercase().contains("\r\nconnection: close"),
            "{path}: {head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("content-length"),
            "{path}: {head}"
        );
        assert_eq!(got, body, "{path}");
    }
    // An ordinary response keeps the connection.
    let mut s = w.connect();
    assert_eq!(w.get(&mut s, "/").status, 200);
    assert_eq!(w.get(&mut s, "/").status, 200);
    // So does a 304 whatever its header says: it has no body (RFC 9110 §15.4.5).
    let r = w.get(&mut s, "/not-modified");
    assert_eq!(r.status, 304);
    assert!(
        !values(&r, "connection").contains(&"close"),
        "{:?}",
        r.headers
    );
    assert_eq!(w.get(&mut s, "/").status, 200);
}

#[test]
fn a_101_the_client_did_not_ask_for_is_a_502() {
    // RFC 9110 §7.8: a server switches only to a protocol the client's `Upgrade` named.
    let w = world(|path| match path {
        "/switch" => Answer::keep(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged",
        ),
        _ => Answer::keep(OK),
    });
    let mut s = w.connect();
    s.write_all(w.request("/switch").as_bytes()).unwrap();
    let text = read_to_close(&mut s);
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
    assert!(!text.contains("forged"), "{text}");
    // So is one to an HTTP/1.0 client, which cannot switch at all, whatever it asked.
    let mut s = w.connect();
    s.write_all(w.upgrade("/switch", 0).as_bytes()).unwrap();
    let text = read_to_close(&mut s);
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
}

#[test]
fn an_echo_of_the_request_never_reaches_the_client() {
    // What a servlet container's `doTrace` answers to a `POST` that a framework overrode to
    // `TRACE` from its body (Spring's `HiddenHttpMethodFilter`), which the router streams
    // unread: the request as the instance got it, cookies and identity headers included.
    let w = world(|path| match path {
        "/traced" => Answer::keep(
            "HTTP/1.1 200 OK\r\ncontent-type: message/http\r\ncontent-length: 52\r\n\r\n\
             TRACE /traced HTTP/1.1\r\ncookie: nexus_session=secret",
        ),
        "/traced-too" => Answer::keep(
            "HTTP/1.1 200 OK\r\nContent-Type: Message/HTTP; msgtype=request\r\n\
             content-length: 6\r\n\r\nsecret",
        ),
        _ => Answer::keep(OK),
    });
    for path in ["/traced", "/traced-too"] {
        let mut s = w.connect();
        let r = w.get(&mut s, path);
        assert_eq!(r.status, 502, "{path}");
        assert!(!r.text().contains("secret"), "{path}: {}", r.text());
    }
    let mut s = w.connect();
    assert_eq!(w.get(&mut s, "/").status, 200);
    assert!(w.edge.log().contains("message/http"), "{}", w.edge.log());
}

/// A router in front of one instance for `acme` and `globex` that answers every request 200
/// and records each request head it reads.
struct Recorded {
    keys: TestKeys,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
    edge: Edge,
    _instance: RawInstance,
}

type Reply = Box<dyn Fn(&str) -> Answer + Send + Sync>;

impl Recorded {
    /// With the instance `start` makes (`RawInstance::start`, or one without chunked bodies).
    fn start(start: fn(Reply) -> RawInstance) -> Recorded {
        let keys = TestKeys::new();
        let heads = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = Arc::clone(&heads);
        let instance = start(Box::new(move |head| {
            seen.lock().unwrap().push(head.to_owned());
            Answer::keep(OK)
        }));
        let bindings = bindings_file(vec![
            binding("acme", &instance.url(), "active", Some("org-acme")),
            binding("globex", &instance.url(), "active", Some("org-globex")),
        ]);
        let edge = Edge::start(&EdgeOptions::new(keys.jwks(), bindings));
        Recorded {
            keys,
            heads,
            edge,
            _instance: instance,
        }
    }
}

#[test]
fn a_chunked_body_holding_a_request_is_a_body_to_a_server_without_chunked_bodies() {
    // uWSGI's `--http11-socket` answers a chunked request as one without a body and reads its
    // chunks as the next request: passed on chunked, this body ran as a request for another
    // tenant's admin page with the identity headers it carries, sent to a public path without
    // a token. Sent with its length, it is the body it is.
    let Recorded {
        heads,
        edge,
        _instance,
        ..
    } = Recorded::start(RawInstance::start_without_chunked);
    let smuggled = format!(
        "GET /admin/users HTTP/1.1\r\nHost: globex.{BASE}\r\nX-Tenant-Id: globex\r\n\
         X-User-Id: admin\r\nContent-Length: 0\r\n\r\n"
    );
    let mut s = TcpStream::connect(edge.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!(
            "POST /login HTTP/1.1\r\nHost: acme.{BASE}\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{smuggled}\r\n0\r\n\r\n",
            smuggled.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // A second request on the connection reuses the instance's connection, if it is whole.
    s.write_all(format!("GET /login HTTP/1.1\r\nHost: acme.{BASE}\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200);
    let heads = heads.lock().unwrap().clone();
    assert_eq!(
        heads.len(),
        2,
        "the instance ran a request the router never checked: {heads:#?}"
    );
    assert!(heads[0].starts_with("POST /login "), "{heads:#?}");
    let first = heads[0].to_ascii_lowercase();
    assert!(
        first.contains(&format!("content-length: {}", smuggled.len())),
        "{heads:#?}"
    );
    assert!(!first.contains("transfer-encoding"), "{heads:#?}");
    assert!(heads[1].starts_with("GET /login "), "{heads:#?}");
}

#[test]
fn connection_may_not_name_the_fields_that_frame_the_body() {
    // Pingora takes a nominated field off the request: naming `Content-Length` sent its
    // body on chunked whatever `chunked_request_bodies` says, and uWSGI's `--http11-socket`
    // ran the request the body held. Naming `Transfer-Encoding` would leave a chunked body
    // with no framing at all where it is passed on chunked.
    let Recorded {
        heads,
        edge,
        _instance,
        ..
    } = Recorded::start(RawInstance::start_without_chunked);
    let smuggled =
        format!("GET /admin/users HTTP/1.1\r\nHost: acme.{BASE}\r\nX-User-Id: admin\r\n\r\n");
    let chunked = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    for (connection, framing, body) in [
        (
            "content-length",
            format!("Content-Length: {}", smuggled.len()),
            &smuggled,
        ),
        (
            "Keep-Alive, CONTENT-LENGTH",
            format!("Content-Length: {}", smuggled.len()),
            &smuggled,
        ),
        (
            "transfer-encoding",
            "Transfer-Encoding: chunked".to_owned(),
            &chunked,
        ),
    ] {
        let r = send_raw(
            edge.addr,
            format!(
                "POST /login HTTP/1.1\r\nHost: acme.{BASE}\r\n{framing}\r\n\
                 Connection: {connection}\r\n\r\n{body}"
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 400, "{connection}: {}", r.text());
        assert!(r.text().contains("Connection"), "{}", r.text());
    }
    // Its other names are still the client's to give.
    let r = send_raw(
        edge.addr,
        format!(
            "POST /login HTTP/1.1\r\nHost: acme.{BASE}\r\nContent-Length: 3\r\n\
             Connection: keep-alive, x-trace\r\nX-Trace: 1\r\n\r\nabc"
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:#?}");
    assert!(
        heads[0].to_ascii_lowercase().contains("content-length: 3"),
        "{heads:#?}"
    );
}

#[test]
fn a_long_request_header_reaches_the_instance_behind_the_routers_fields() {
    // OpenResty's `ngx.req.get_headers()` returns a request's first 100 fields: behind a
    // client's 100, the router's identity fields were not among them. Netty cuts a header
    // at 8 KiB. Past 48 fields or 4 KiB, the router's go first.
    let Recorded {
        keys,
        heads,
        edge,
        _instance,
    } = Recorded::start(RawInstance::start);
    let token = keys.token("acme", Some("org-acme"));
    let many: String = (0..100).map(|i| format!("X-Pad-{i}: {i}\r\n")).collect();
    let big = format!("Cookie: a={}\r\n", "b".repeat(5000));
    for (label, padding) in [("many", &many), ("big", &big)] {
        let r = send_raw(
            edge.addr,
            format!(
                "GET /x HTTP/1.1\r\nHost: acme.{BASE}\r\n{padding}\
                 Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{label}: {}", r.text());
        let head = heads
            .lock()
            .unwrap()
            .pop()
            .expect("a request")
            .to_ascii_lowercase();
        let at = |name: &str| head.find(&format!("\r\n{name}:")).expect(name);
        let first_client = at(if label == "many" { "x-pad-0" } else { "cookie" });
        for ours in [
            "host",
            "x-tenant-id",
            "x-tenant-status",
            "x-org-id",
            "x-user-id",
        ] {
            assert!(at(ours) < first_client, "{label}, {ours}: {head}");
        }
        assert_eq!(head.matches("\r\nhost:").count(), 1, "{head}");
    }
    // A short one keeps its order.
    let r = get_with_token(edge.addr, &format!("acme.{BASE}"), "/x", &token);
    assert_eq!(r.status, 200, "{}", r.text());
    let head = heads
        .lock()
        .unwrap()
        .pop()
        .expect("a request")
        .to_ascii_lowercase();
    assert!(
        head.find("authorization:").unwrap() < head.find("x-tenant-id:").unwrap(),
        "{head}"
    );
}

#[test]
fn a_request_bodys_trailer_fields_never_reach_the_instance() {
    // Unicorn copies a chunked body's trailer fields into the request's variables once it has
    // read the body (`HTTP_AUTHORIZATION`, `HTTP_X_USER_ID`): passed on, they would replace
    // the credential the router checked and the identity it asserted. Read whole (the
    // default) or passed on chunked.
    for (mode, body_end) in [("length", "\r\n\r\nabc"), ("chunked", "abc\r\n0\r\n\r\n")] {
        let w = world_with(
            |_| Answer::keep(OK),
            |opts| opts.upstream_extra = format!("chunked_request_bodies = \"{mode}\""),
        );
        let token = w.keys.token("acme", Some("org-acme"));
        let mut s = w.connect();
        s.write_all(
            format!(
                "POST /upload HTTP/1.1\r\nHost: acme.{BASE}\r\nAuthorization: Bearer {token}\r\n\
                 Transfer-Encoding: chunked\r\nTrailer: Authorization, X-User-Id\r\n\r\n\
                 3\r\nabc\r\n0\r\nAuthorization: Bearer forged\r\nX-User-Id: evil\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
        let received = String::from_utf8_lossy(&w.instance.received().concat()).into_owned();
        assert!(received.ends_with(body_end), "{mode}: {received}");
        for gone in ["forged", "evil", "trailer:"] {
            assert!(
                !received.to_ascii_lowercase().contains(gone),
                "{mode}, {gone}: {received}"
            );
        }
    }
}

#[test]
fn a_101_must_name_the_websocket_the_client_asked_for() {
    // RFC 9110 §7.8: a 101 names the protocol it switches to, one the client's `Upgrade`
    // named (the router forwards only `websocket`).
    let w = world(|path| match path {
        "/h2c" => Answer::keep(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
        ),
        "/nameless" => Answer::keep("HTTP/1.1 101 Switching Protocols\r\n\r\n"),
        _ => Answer::keep(OK),
    });
    for path in ["/h2c", "/nameless"] {
        let mut s = w.connect();
        s.write_all(w.upgrade(path, 1).as_bytes()).unwrap();
        let text = read_to_close(&mut s);
        assert!(text.starts_with("HTTP/1.1 502"), "{path}: {text}");
    }
}

#[test]
fn a_tunnel_the_instance_resets_is_a_request_served_not_an_instance_out_of_reach() {
    // The instance answered 101 and served the tunnel; its abrupt end (a reset, or TLS closed
    // without close_notify, as many servers do after a WebSocket close) was counted
    // `upstream_unreachable` and logged as an upstream failure: false alerts of an instance
    // down. It is the tunnel's `instance_error` end.
    let w = world(|_| {
        Answer::reset(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        )
    });
    let mut s = w.connect();
    s.write_all(w.upgrade("/ws", 1).as_bytes()).unwrap();
    let text = read_to_close(&mut s);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    w.edge.wait_for("the tunnel's end counted", || {
        w.edge
            .ops_get("/metrics")
            .text()
            .contains("nexus_edge_tunnels_closed_total{end=\"instance_error\"} 1")
    });
    let metrics = w.edge.ops_get("/metrics").text();
    assert!(
        metrics.contains("nexus_edge_requests_total{outcome=\"upstream_unreachable\"} 0"),
        "{metrics}"
    );
    w.edge.wait_for("the request counted served", || {
        w.edge
            .ops_get("/metrics")
            .text()
            .contains("nexus_edge_requests_total{outcome=\"forwarded\"} 1")
    });
    assert!(
        !w.edge.log().contains("upstream failed"),
        "{}",
        w.edge.log()
    );
}

#[test]
fn an_instances_version_and_fields_about_its_connection_are_not_passed_on() {
    let w = world(|path| match path {
        // An HTTP/1.0 instance: its version is about its own connection to the router.
        "/http10" => Answer::close("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        "/fields" => Answer::keep(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nte: trailers\r\nupgrade: h2c\r\n\
             x-nexus-billing-notice: past_due\r\n\
             set-cookie: nexus_session=forged; Domain=nexus.test; Path=/\r\n\
             set-cookie: nexus_session=signed-in; Path=/; HttpOnly\r\n\
             set-cookie: theme=dark; Domain=nexus.test\r\n\
             set-cookie: csrf=planted; Domain=.EDGE.test; Path=/\r\n\
             set-cookie: theme=dark nexus_session=forged; Domain=acme.edge.test\r\n\
             set-cookie: pref=1; Domain=acme.edge.test\r\n\r\nok",
        ),
        _ => Answer::keep(OK),
    });
    let mut s = w.connect();
    s.write_all(w.request("/http10").as_bytes()).unwrap();
    // Passed on, `HTTP/1.0` would have the client send its next requests as HTTP/1.0.
    let head = read_interim(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = [0u8; 2];
    s.read_exact(&mut body).unwrap();
    assert_eq!(&body, b"ok");
    // The client's connection is kept.
    let r = w.get(&mut s, "/fields");
    assert_eq!(r.status, 200);
    // `TE` and an `Upgrade` outside a 101 are hop-by-hop (RFC 9110 §7.6.1, §7.8); the billing
    // notice is the router's to give, and this tenant is active.
    for name in ["te", "upgrade", "x-nexus-billing-notice"] {
        assert_eq!(
            values(&r, name),
            Vec::<&str>::new(),
            "{name}: {:?}",
            r.headers
        );
    }
    // The session cookie with a Domain (even hidden behind a blank in another cookie, as
    // lenient parsers read it) would reach other tenants' users beside their own, and the
    // router refuses two credentials that disagree; set host-only it is how the instance
    // signs its own users in. A cookie for the base domain reaches every tenant's host: one
    // tenant could plant another's CSRF token or session. Cookies for the tenant's own host,
    // or a domain no tenant is under, are the instance's.
    assert_eq!(
        values(&r, "set-cookie"),
        [
            "nexus_session=signed-in; Path=/; HttpOnly",
            "theme=dark; Domain=nexus.test",
            "pref=1; Domain=acme.edge.test"
        ]
    );
    w.edge.wait_for("the dropped cookies logged", || {
        w.edge.log().contains("dropped=3")
            && w.edge.log().contains(
                "the instance set a cookie for a base domain, or the session cookie with a Domain",
            )
    });
    assert_eq!(w.get(&mut s, "/").status, 200);
}

/// Each path, asked on a connection of its own, gets the router's 502; then a good request
/// is served, as before.
fn each_a_502_then_a_200(w: &World, paths: &[&str]) {
    for path in paths {
        let mut s = w.connect();
        let r = w.get(&mut s, path);
        assert_eq!(r.status, 502, "{path}: {}", r.text());
    }
    let mut s = w.connect();
    assert_eq!(w.get(&mut s, "/").status, 200);
}

#[test]
fn framing_the_client_would_read_otherwise_is_a_502() {
    let w = world(|path| match path {
        // RFC 9112 §6.1: HTTP/1.0 has no transfer codings.
        "/http10-chunked" => Answer::close(
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        // The client would remove the coding twice from a body chunked once.
        "/chunked-twice" => Answer::keep(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        // Chunked last for the client, not for Pingora (which reads the body to the close
        // and passed it on under this header): the client stopped at the last chunk and
        // took what followed for something else.
        "/chunked-comma" => Answer::close(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked,\r\n\r\n2\r\nok\r\n0\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nSMUGGLED",
        ),
        "/chunked-param" => Answer::close(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked;x=1\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        _ => Answer::keep(OK),
    });
    each_a_502_then_a_200(
        &w,
        &[
            "/http10-chunked",
            "/chunked-twice",
            "/chunked-comma",
            "/chunked-param",
        ],
    );
    nexus_e2e::wait::until(Duration::from_secs(10), "each counted", || {
        let text = w.edge.ops_get("/metrics").text();
        text.contains("nexus_edge_requests_total{outcome=\"upstream_invalid\"} 4")
            .then_some(())
    });
}

#[test]
fn a_body_badly_chunked_or_cut_short_counts_as_an_invalid_answer() {
    let w = world(|path| match path {
        "/bad-chunk" => {
            Answer::keep("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n")
        }
        "/cut-short" => Answer::close("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok"),
        _ => Answer::keep(OK),
    });
    for path in ["/bad-chunk", "/cut-short"] {
        let mut s = w.connect();
        s.write_all(w.request(path).as_bytes()).unwrap();
        // The header was sent: the client's connection is cut after what came of the body.
        let text = read_to_close(&mut s);
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
    }
    // The instance answered: not an instance out of reach.
    nexus_e2e::wait::until(Duration::from_secs(10), "both counted", || {
        let text = w.edge.ops_get("/metrics").text();
        (text.contains("nexus_edge_requests_total{outcome=\"upstream_invalid\"} 2")
            && text.contains("nexus_edge_requests_total{outcome=\"upstream_unreachable\"} 0"))
        .then_some(())
    });
}

#[test]
fn a_response_header_cut_short_counts_as_an_invalid_answer() {
    // Part of a header, then the connection closed or reset: the instance answered, with
    // something that is not a response. Counted as `upstream_unreachable` ("could not be
    // reached"), it would page someone about an instance that is up.
    let w = world(|path| match path {
        "/closed" => Answer::close("HTTP/1.1 200 OK\r\ncontent-"),
        "/reset" => Answer::reset("HTTP/1.1 2"),
        "/silent" => Answer::close(""),
        _ => Answer::keep(OK),
    });
    each_a_502_then_a_200(&w, &["/closed", "/reset", "/silent"]);
    // A connection closed before any byte of an answer is still one that went nowhere.
    nexus_e2e::wait::until(Duration::from_secs(10), "each counted", || {
        let text = w.edge.ops_get("/metrics").text();
        (text.contains("nexus_edge_requests_total{outcome=\"upstream_invalid\"} 2")
            && text.contains("nexus_edge_requests_total{outcome=\"upstream_unreachable\"} 1"))
        .then_some(())
    });
}

#[test]
fn a_status_outside_100_to_599_is_a_502() {
    // RFC 9110 §15: no valid status is above 599; the client gets the router's 502, not a
    // response it cannot interpret.
    let w = world(|path| match path {
        "/600" => Answer::keep("HTTP/1.1 600 Odd\r\ncontent-length: 7\r\n\r\nstrange"),
        "/999" => Answer::keep("HTTP/1.1 999 Odd\r\ncontent-length: 7\r\n\r\nstrange"),
        _ => Answer::keep(OK),
    });
    for path in ["/600", "/999"] {
        let mut s = w.connect();
        let r = w.get(&mut s, path);
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert!(!r.text().contains("strange"), "{path}: {}", r.text());
    }
    let mut s = w.connect();
    assert_eq!(w.get(&mut s, "/").status, 200);
    // Counted as the instance's invalid answer, not as an instance out of reach.
    nexus_e2e::wait::until(Duration::from_secs(10), "both counted", || {
        let text = w.edge.ops_get("/metrics").text();
        text.contains("nexus_edge_requests_total{outcome=\"upstream_invalid\"} 2")
            .then_some(())
    });
}

#[test]
fn an_instances_stray_bytes_never_reach_another_tenants_request() {
    // Two tenants on one shared instance that sends a body on HEAD, late: after the router
    // has taken the response as complete and pooled the connection. Those bytes (here, a
    // whole response) are read as the answer to whatever request that connection carries
    // next; it must never be another tenant's.
    let keys = TestKeys::new();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&accepted);
    let instance = nexus_e2e::loopback::LoopbackServer::start(move |s| {
        counter.fetch_add(1, Ordering::SeqCst);
        instance_with_late_head_bodies(s)
    });
    let url = format!("http://{}", instance.addr);
    let bindings = bindings_file(vec![
        binding("acme", &url, "active", Some("org-acme")),
        binding("globex", &url, "active", None),
    ]);
    let edge = Edge::start(&EdgeOptions::new(keys.jwks(), bindings));
    let send = |tenant: &str, org: Option<&str>, method: &str| {
        let mut s = TcpStream::connect(edge.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(
            format!(
                "{method} /doc HTTP/1.1\r\nHost: {tenant}.{BASE}\r\nAuthorization: Bearer {}\r\n\
                 Connection: close\r\n\r\n",
                keys.token(tenant, org)
            )
            .as_bytes(),
        )
        .unwrap();
        read_to_close(&mut s)
    };
    let head = send("acme", Some("org-acme"), "HEAD");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let other = send("globex", None, "GET");
    assert!(!other.contains("acme"), "globex got acme's bytes: {other}");
    assert!(other.ends_with("\r\n\r\nglobex"), "{other}");
    // A tenant's own requests still share the instance connection it pooled: one each.
    let again = send("globex", None, "GET");
    assert!(again.ends_with("\r\n\r\nglobex"), "{again}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // Nor a caller's who proved nothing, on the tenant's public path: a member's answer sent
    // late goes to a member's request, never to anyone's. (globex's connection is clean: its
    // requests so far were GETs.)
    let head = send("globex", None, "HEAD");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut s = TcpStream::connect(edge.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!("GET /login HTTP/1.1\r\nHost: globex.{BASE}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let anonymous = read_to_close(&mut s);
    assert!(anonymous.starts_with("HTTP/1.1 200"), "{anonymous}");
    assert!(
        !anonymous.contains("acme-secret"),
        "an anonymous caller got a member's bytes: {anonymous}"
    );
    // Its own connection, apart from the members'.
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

/// An instance that answers each request with the tenant it was for, and a HEAD with a
/// length and no body, whose body (a whole response of tenant acme's) it sends late: just
/// before its answer to the next request on that connection.
async fn instance_with_late_head_bodies(mut s: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut pending, mut piece, mut stray) = (Vec::new(), [0u8; 8192], None);
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..end + 4);
            if let Some(bytes) = stray.take() {
                let _ = s.write_all(bytes).await;
            }
            let tenant = head
                .lines()
                .find_map(|l| l.strip_prefix("x-tenant-id: "))
                .unwrap_or("none")
                .to_owned();
            let answer = if head.starts_with("HEAD") {
                stray = Some(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nacme-secret");
                "HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n".to_owned()
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{tenant}",
                    tenant.len()
                )
            };
            if s.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
        match s.read(&mut piece).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&piece[..n]),
        }
    }
}

#[test]
fn a_body_on_a_get_closes_the_instance_connection_it_was_sent_on() {
    // An instance that answers a GET without reading its body (a static handler) and keeps
    // the connection reads the body as its next request: one the router never checked. Pooled
    // again, that connection would carry the tenant's next request, and its answer would be
    // the smuggled request's. The router asks the instance to close after such a request, and
    // after a body on any method but POST, PUT and PATCH: a server that does not know the
    // method (`PROPFIND`, `SEARCH`) answers it without reading the body.
    let keys = TestKeys::new();
    let heads: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&heads);
    let instance = nexus_e2e::loopback::LoopbackServer::start(move |s| {
        instance_that_ignores_get_bodies(s, Arc::clone(&seen))
    });
    let url = format!("http://{}", instance.addr);
    let bindings = bindings_file(vec![binding("acme", &url, "active", Some("org-acme"))]);
    let mut opts = EdgeOptions::new(keys.jwks(), bindings);
    // Extension methods' bodies pass only when listed (see `request_path`).
    opts.upstream_extra = "extension_methods_with_bodies = [\"PROPFIND\", \"SEARCH\"]".to_owned();
    let edge = Edge::start(&opts);
    let token = keys.token("acme", Some("org-acme"));
    let send = |request: String| {
        let mut s = TcpStream::connect(edge.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        read_to_close(&mut s)
    };
    let smuggled =
        format!("GET /smuggled HTTP/1.1\r\nHost: acme.{BASE}\r\nX-User-Id: admin\r\n\r\n");
    for method in ["GET", "PROPFIND", "SEARCH"] {
        heads.lock().unwrap().clear();
        let first = send(format!(
            "{method} /first HTTP/1.1\r\nHost: acme.{BASE}\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{smuggled}",
            smuggled.len()
        ));
        assert!(first.ends_with("\r\n\r\n/first"), "{method}: {first}");
        let next = send(format!(
            "GET /next HTTP/1.1\r\nHost: acme.{BASE}\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        ));
        assert!(
            next.ends_with("\r\n\r\n/next"),
            "{method}: the next request got: {next}"
        );
        let heads = heads.lock().unwrap().clone();
        assert!(
            heads[0].starts_with(&format!("{method} /first"))
                && heads[0]
                    .to_ascii_lowercase()
                    .contains("\r\nconnection: close"),
            "{heads:?}"
        );
        assert!(
            !heads.iter().any(|h| h.starts_with("GET /smuggled")),
            "{heads:?}"
        );
    }
}

#[test]
fn listed_webdav_methods_keep_their_instance_connection() {
    // A WebDAV client sends a body with every PROPFIND: with the method listed in
    // `extension_methods_kept_alive` (its servers read those bodies), the instance connection
    // is pooled again; a method listed only in `extension_methods_with_bodies` still closes it.
    let keys = TestKeys::new();
    let instance = nexus_e2e::backend::Backend::start("dav");
    let bindings = bindings_file(vec![binding(
        "acme",
        &instance.url(),
        "active",
        Some("org-acme"),
    )]);
    let mut opts = EdgeOptions::new(keys.jwks(), bindings);
    opts.upstream_extra = "extension_methods_with_bodies = [\"PROPFIND\", \"SEARCH\"]\n\
                           extension_methods_kept_alive = [\"PROPFIND\"]"
        .to_owned();
    let edge = Edge::start(&opts);
    let token = keys.token("acme", Some("org-acme"));
    let body = "<?xml version=\"1.0\"?><propfind xmlns=\"DAV:\"><allprop/></propfind>";
    let send = |method: &str| {
        let r = send_raw(
            edge.addr,
            format!(
                "{method} /dav/ HTTP/1.1\r\nHost: acme.{BASE}\r\nAuthorization: Bearer {token}\r\n\
                 Depth: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        let echo = r.json();
        assert_eq!(echo["body"], body, "{echo}");
        nexus_e2e::backend::echoed_header(&echo, "connection")
    };
    for _ in 0..3 {
        assert_eq!(send("PROPFIND"), Vec::<String>::new());
    }
    assert_eq!(instance.connections(), 1, "one pooled connection");
    assert_eq!(send("SEARCH"), ["close"]);
    let connections = instance.connections();
    assert_eq!(send("PROPFIND"), Vec::<String>::new());
    assert_eq!(instance.connections(), connections + 1);
}

/// An instance that reads request heads only, whatever their `Content-Length` (so a GET's
/// body is read as the next request), and answers each with its path. A `/smuggled` request's
/// answer is held until the next request arrives on the connection, and written just before
/// that one's; `Connection: close` is honoured.
async fn instance_that_ignores_get_bodies(
    mut s: tokio::net::TcpStream,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answer = |path: &str| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
            path.len()
        )
    };
    let (mut pending, mut piece, mut held) = (Vec::new(), [0u8; 8192], None::<String>);
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..end + 4);
            heads.lock().unwrap().push(head.clone());
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            if path == "/smuggled" {
                held = Some(answer(&path));
                continue;
            }
            let out = held.take().unwrap_or_default() + &answer(&path);
            if s.write_all(out.as_bytes()).await.is_err()
                || head.to_ascii_lowercase().contains("\r\nconnection: close")
            {
                return;
            }
        }
        match s.read(&mut piece).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&piece[..n]),
        }
    }
}

#[test]
fn an_interim_response_reaches_the_client_without_framing_fields() {
    // RFC 9110 §8.6, RFC 9112 §6.1: a 1xx has no body, and carries no Content-Length nor
    // Transfer-Encoding; a parser that took either for a body would eat the final response.
    let w = world(|path| match path {
        "/interim" => Answer::keep(
            "HTTP/1.1 102 Processing\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n\
             HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\ncontent-length: 9\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ),
        _ => Answer::keep(OK),
    });
    let mut s = w.connect();
    s.write_all(w.request("/interim").as_bytes()).unwrap();
    let mut interim = Vec::new();
    for _ in 0..2 {
        let r = read_interim(&mut s);
        assert!(r.starts_with("HTTP/1.1 10"), "{r}");
        interim.push(r);
    }
    for r in &interim {
        let lower = r.to_ascii_lowercase();
        assert!(!lower.contains("content-length"), "{r}");
        assert!(!lower.contains("transfer-encoding"), "{r}");
    }
    assert!(interim[1].contains("link: </a.css>"), "{}", interim[1]);
    let last = read_response(&mut s).unwrap();
    assert_eq!((last.status, last.body.as_slice()), (200, &b"ok"[..]));
}

#[test]
fn interim_responses_past_the_bound_are_a_502() {
    // Each 1xx is a read from the instance, so read_timeout never fired: an instance sending
    // 102s for ever held the request and its client for ever, streaming them on.
    let w = world(|path| {
        let interim = match path {
            "/hundred" => 100,
            "/flood" => 101,
            _ => return Answer::keep(OK),
        };
        Answer::close(&format!(
            "{}HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            "HTTP/1.1 102 Processing\r\n\r\n".repeat(interim)
        ))
    });
    for (path, status) in [("/hundred", 200), ("/flood", 502)] {
        let mut s = w.connect();
        s.write_all(w.request(path).as_bytes()).unwrap();
        for _ in 0..100 {
            let r = read_interim(&mut s);
            assert!(r.starts_with("HTTP/1.1 102"), "{path}: {r}");
        }
        assert_eq!(read_response(&mut s).unwrap().status, status, "{path}");
    }
    // An HTTP/1.0 client is sent no 1xx: it waited in silence, for ever.
    let mut s = w.connect();
    let request = w.request("/flood").replacen("HTTP/1.1", "HTTP/1.0", 1);
    s.write_all(request.as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 502);
    nexus_e2e::wait::until(Duration::from_secs(10), "the flood counted", || {
        let text = w.edge.ops_get("/metrics").text();
        text.contains("nexus_edge_requests_total{outcome=\"upstream_invalid\"} 2")
            .then_some(())
    });
}

/// Reads one response head (up to its blank line), byte by byte so nothing after it is taken.
fn read_interim(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed in a head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn pipelined_requests_are_each_answered_in_order() {
    // RFC 9112 §9.3.2: a client may send its next request before the response to the last.
    let w = world(|path| match path {
        "/one" => Answer::keep("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none"),
        "/two" => Answer::keep("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo"),
        _ => Answer::keep(OK),
    });
    let mut s = w.connect();
    let both = format!("{}{}", w.request("/one"), w.request("/two"));
    s.write_all(both.as_bytes()).unwrap();
    let first = read_next_response(&mut s).unwrap();
    assert_eq!((first.status, first.text().as_str()), (200, "one"));
    let second = read_next_response(&mut s).unwrap();
    assert_eq!((second.status, second.text().as_str()), (200, "two"));
}

/// An instance that sends bytes past each response's end made Pingora write a warning per
/// request, outside the router's log allowance: any client could fill the log at its own rate.
/// Pingora's lines about single requests now get the allowance too, per module.
#[test]
fn pingoras_warning_per_request_is_held_to_the_log_allowance() {
    let w = world_with(
        |_| Answer::keep("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"),
        |o| o.extra = "request_lines_per_second = 3".to_owned(),
    );
    let edge = &w.edge;
    let request = w.request("/");
    let started = std::time::Instant::now();
    const SENT: usize = 60;
    for _ in 0..SENT {
        let mut s = w.connect();
        s.write_all(request.as_bytes()).unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"ok");
    }
    let allowed = 3 * (started.elapsed().as_secs() as usize + 2);
    // Pingora writes its line as it reads the response; the metric is read after polling
    // for the last of them to be counted one way or the other.
    let said = |log: &str| log.matches("Peer sent more data than expected").count();
    edge.wait_for("every warning written or counted", || {
        said(&edge.log()) + edge.metric("nexus_edge_log_lines_not_logged_total") as usize >= SENT
    });
    let written = said(&edge.log());
    assert!(
        written >= 1 && written <= allowed,
        "{written} > {allowed}: {}",
        edge.log()
    );
    assert!(edge.metric("nexus_edge_log_lines_not_logged_total") as usize >= SENT - allowed);
}

/// One of Pingora's `trace` lines unwraps an instance's response header as UTF-8, and a `log`
/// macro builds its message before any filter drops it: with `trace` on for the router, a
/// Latin-1 header (a `Content-Disposition` file name, say) panicked the request's task and the
/// client got nothing. The `log` bridge stops at `debug`.
#[test]
fn a_trace_filter_does_not_let_a_latin1_header_panic_the_request() {
    let w = world_with(
        |_| Answer {
            bytes:
                b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=\"caf\xe9.txt\"\r\n\
                     Content-Length: 2\r\n\r\nok"
                    .to_vec(),
            then_close: false,
            then_reset: false,
        },
        |o| o.env = vec![("RUST_LOG".to_owned(), "info,nexus_edge=trace".to_owned())],
    );
    let r = w.get(&mut w.connect(), "/");
    assert_eq!(r.status, 200, "{}", w.edge.log());
    assert_eq!(r.body, b"ok");
    assert!(!w.edge.log().contains("panic"), "{}", w.edge.log());
}
