//! Client connections end to end: the whole-header deadline (`request_header_timeout`), the
//! header size bound (`max_request_header_bytes`) and the connection cap (`max_connections`),
//! on the real binary with a real instance.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nexus_e2e::backend::Backend;
use nexus_e2e::edge::{binding, bindings_file, Edge, EdgeOptions, BASE};
use nexus_e2e::http::{read_next_response, read_response};
use nexus_e2e::keys::TestKeys;

/// One tenant, `acme`, on one instance; `/login` is a public path, so no token is needed.
struct World {
    _keys: TestKeys,
    backend: Backend,
    edge: Edge,
}

fn world(server_extra: &str) -> World {
    world_with(|opts| opts.server_extra = server_extra.to_owned())
}

fn world_with(configure: impl FnOnce(&mut EdgeOptions)) -> World {
    let keys = TestKeys::new();
    let backend = Backend::start("instance-a");
    let records = vec![binding("acme", &backend.url(), "active", None)];
    let mut opts = EdgeOptions::new(keys.jwks(), bindings_file(records));
    configure(&mut opts);
    let edge = Edge::start(&opts);
    World {
        _keys: keys,
        backend,
        edge,
    }
}

fn connect(edge: &Edge) -> TcpStream {
    let s = TcpStream::connect(edge.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn login_request() -> String {
    format!("GET /login HTTP/1.1\r\nHost: acme.{BASE}\r\n\r\n")
}

/// The log lines about headers refused before a request, for `reason` (polled: the line
/// may follow the close a test saw), once there are `count`.
fn refused_lines(edge: &Edge, reason: &str, count: usize) -> Vec<String> {
    let wanted = format!("reason=\"{reason}\"");
    nexus_e2e::wait::until(
        Duration::from_secs(10),
        "the refused headers' lines",
        || {
            let lines: Vec<String> = edge
                .log()
                .lines()
                .filter(|l| l.contains("request header refused") && l.contains(&wanted))
                .map(str::to_owned)
                .collect();
            (lines.len() >= count).then_some(lines)
        },
    )
}

/// Whether the router has closed `s`: reads what is left (with `wait` as the read timeout)
/// and returns it, or `None` while the connection stays open.
fn closed_with(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return if got.is_empty() { None } else { Some(got) };
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Some(got),
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn a_header_sent_a_byte_at_a_time_is_cut_at_the_deadline() {
    // Each byte comes well inside Pingora's per-read timeout (60 s), so only a deadline on
    // the whole header ends this.
    let w = world("request_header_timeout = \"500ms\"");
    let mut s = connect(&w.edge);
    s.write_all(format!("GET /login HTTP/1.1\r\nHost: acme.{BASE}\r\nX-Slow: ").as_bytes())
        .unwrap();
    let start = Instant::now();
    let answer = loop {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the router still reads a header begun {:?} ago",
            start.elapsed()
        );
        // The read timeout paces the bytes: one every 50 ms while the connection is open.
        if let Some(answer) = closed_with(&mut s, Duration::from_millis(50)) {
            break answer;
        }
        if s.write_all(b"a").is_err() {
            break closed_with(&mut s, Duration::from_secs(5)).unwrap_or_default();
        }
    };
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
    assert!(text.contains("did not arrive in time"), "{text:?}");
    assert_eq!(w.backend.hits(), 0);
    assert_eq!(w.edge.metric("nexus_edge_request_header_timeouts_total"), 1);
    // No longer a header in progress.
    assert_eq!(w.edge.metric("nexus_edge_client_headers_in_progress"), 0);
    // Counted, and logged within the allowance with the client's address, not Pingora's
    // error line (which would be one per slow client, at any rate). (Pingora writes its line
    // before it closes the connection, and the close is seen above.)
    let log = w.edge.log();
    assert!(!log.contains("Fail to proxy"), "{log}");
    let client = s.local_addr().unwrap().to_string();
    let lines = refused_lines(&w.edge, "header_timeout", 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("status=408"), "{lines:?}");
    assert!(lines[0].contains(&format!("client={client}")), "{lines:?}");
    assert!(!lines[0].contains("X-Slow"), "{lines:?}");
}

#[test]
fn a_connection_that_sends_nothing_is_closed_without_an_answer() {
    // Before any byte, Pingora's own bound is 60 s; the header deadline closes it sooner, and
    // with nothing to say (a browser's spare connection must not read a 408 as its answer).
    let w = world("request_header_timeout = \"300ms\"");
    let mut s = connect(&w.edge);
    let answer = closed_with(&mut s, Duration::from_secs(20)).expect("closed");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    // Nor does one that sent only an empty line, which comes before a request line at most
    // (RFC 9112 §2.2): no header began.
    let mut s = connect(&w.edge);
    s.write_all(b"\r\n").unwrap();
    let answer = closed_with(&mut s, Duration::from_secs(20)).expect("closed");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    nexus_e2e::wait::until(Duration::from_secs(10), "the closes to be counted", || {
        (w.edge.metric("nexus_edge_client_connections_unused_total") == 2).then_some(())
    });
    assert_eq!(w.edge.metric("nexus_edge_request_header_timeouts_total"), 0);
}

#[test]
fn slow_bodies_idle_keepalive_and_later_headers_are_not_cut() {
    // A deadline long against the client's pacing below (pauses of 50 ms), short against the
    // slow body and the idle spell (at least 1.5 s each, however the test is scheduled).
    let w = world("request_header_timeout = \"1s\"");
    let mut s = connect(&w.edge);
    // A body that takes longer than the header deadline: only the header is timed.
    let body = b"0123456789";
    s.write_all(
        format!(
            "POST /login HTTP/1.1\r\nHost: acme.{BASE}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    for b in body {
        assert_eq!(closed_with(&mut s, Duration::from_millis(150)), None);
        s.write_all(&[*b]).unwrap();
    }
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], "0123456789");

    // Idle between requests longer than the header deadline: the keep-alive timeout (60 s)
    // bounds that, not the header deadline. A stray line end (some clients send one after a
    // body) is ignored, not taken for the start of a header (RFC 9112 §2.2).
    s.write_all(b"\r\n").unwrap();
    assert_eq!(closed_with(&mut s, Duration::from_millis(1500)), None);

    // The next header has its own deadline, counted from its own first byte: sent in three
    // pieces it is read whole.
    let next = login_request();
    let (a, rest) = next.as_bytes().split_at(10);
    let (b, c) = rest.split_at(10);
    for piece in [a, b] {
        s.write_all(piece).unwrap();
        assert_eq!(closed_with(&mut s, Duration::from_millis(50)), None);
    }
    s.write_all(c).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200);
    // Idle again after a request without a body: nothing of a next request was kept, so
    // the keep-alive bound applies, not the header deadline (and no 408 comes unasked).
    assert_eq!(closed_with(&mut s, Duration::from_millis(1500)), None);
    assert_eq!(w.edge.metric("nexus_edge_request_header_timeouts_total"), 0);
    assert_eq!(
        w.edge.metric("nexus_edge_client_connections_unused_total"),
        0
    );
}

/// A `/login` request whose header (request line and fields) is exactly `size` bytes.
fn login_request_of(size: usize) -> Vec<u8> {
    padded_header(
        format!("GET /login HTTP/1.1\r\nHost: acme.{BASE}\r\n"),
        size,
    )
}

/// The header of a `/login` upload of `length` bytes, exactly `size` bytes long.
fn post_login_of(size: usize, length: usize) -> Vec<u8> {
    padded_header(
        format!("POST /login HTTP/1.1\r\nHost: acme.{BASE}\r\nContent-Length: {length}\r\n"),
        size,
    )
}

/// `head` (request line and fields) and an `X-Pad` field that makes the header `size` bytes.
fn padded_header(head: String, size: usize) -> Vec<u8> {
    let mut req = head.into_bytes();
    req.extend_from_slice(b"X-Pad: ");
    let pad = size - req.len() - "\r\n\r\n".len();
    req.resize(req.len() + pad, b'p');
    req.extend_from_slice(b"\r\n\r\n");
    req
}

#[test]
fn a_pipelined_header_is_bounded_like_any_other() {
    // Sent with the request before it, part of the second header arrives in the first
    // request's read (Pingora reads 4 KiB at first) and is kept for the second request
    // without being counted again: only measuring the parsed header finds it too long.
    // With this bound about 4,000 bytes come in that read and the 5,000 read after it are
    // within the bound.
    let w = world("max_request_header_bytes = 9000");
    let mut s = connect(&w.edge);
    let mut both = login_request().into_bytes();
    both.extend_from_slice(&login_request_of(9001));
    s.write_all(&both).unwrap();
    let r = read_next_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = closed_with(&mut s, Duration::from_secs(20)).expect("closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text:?}");
    assert_eq!(w.backend.hits(), 1);
}

#[test]
fn a_header_longer_than_max_request_header_bytes_gets_431() {
    // Not a power of two: Pingora's header buffer grows 4 KiB, 8 KiB, 16 KiB, so with this
    // bound a read can end a header within it and bring body bytes past it.
    let w = world("max_request_header_bytes = 9000");
    let mut s = connect(&w.edge);
    // At the bound: served, and the connection stays open.
    s.write_all(&login_request_of(9000)).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // One byte more, whole: refused once parsed, and closed.
    s.write_all(&login_request_of(9001)).unwrap();
    let answer = closed_with(&mut s, Duration::from_secs(20)).expect("closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text:?}");
    assert!(text.contains("longer than allowed"), "{text:?}");

    // A header that goes on: refused as soon as it passes the bound, before it ends (Pingora
    // alone would buffer up to 1 MiB of it). One byte past, so that the router has read all
    // that was sent when it closes (unread bytes would turn its close into a reset).
    let mut s = connect(&w.edge);
    let mut unended = login_request_of(9000);
    unended.truncate(unended.len() - 4);
    unended.resize(9001, b'p');
    s.write_all(&unended).unwrap();
    let answer = closed_with(&mut s, Duration::from_secs(20)).expect("closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text:?}");

    // Empty lines between requests are kept by Pingora as the start of the next header: a
    // flood of them is bounded the same way.
    let mut s = connect(&w.edge);
    s.write_all(login_request().as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200);
    s.write_all(&b"\r\n".repeat(4501)).unwrap();
    let answer = closed_with(&mut s, Duration::from_secs(20)).expect("closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text:?}");

    // Only the header is bounded: a body is the instance's business, also when it comes in
    // the same read as the end of a header within the bound.
    let body = vec![b'b'; 100_000];
    for header in [
        format!(
            "POST /login HTTP/1.1\r\nHost: acme.{BASE}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        post_login_of(8990, body.len()),
    ] {
        let mut s = connect(&w.edge);
        let mut request = header;
        request.extend_from_slice(&body);
        s.write_all(&request).unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["body"].as_str().map(str::len), Some(100_000));
    }

    assert_eq!(w.backend.hits(), 4);
    assert_eq!(
        w.edge.metric("nexus_edge_request_headers_too_large_total"),
        3
    );
    let log = w.edge.log();
    assert!(!log.contains("Fail to proxy"), "{log}");
    // The two refused before they ended are logged as refused headers; the one refused once
    // parsed as a refused request.
    let lines = refused_lines(&w.edge, "header_too_large", 2);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("status=431") && l.contains("header_bytes=900"))
            .count(),
        2,
        "{lines:?}"
    );
}

#[test]
fn connections_over_max_connections_are_closed_unanswered_until_one_ends() {
    let w = world("max_connections = 2\nrequest_header_timeout = \"30s\"");
    // Two connections, each with a request header begun: both admitted, and neither idle.
    let begun = format!("GET /login HTTP/1.1\r\nHost: acme.{BASE}\r\n");
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(&w.edge);
            s.write_all(begun.as_bytes()).unwrap();
            s
        })
        .collect();
    nexus_e2e::wait::until(Duration::from_secs(10), "two headers in progress", || {
        (w.edge.metric("nexus_edge_client_headers_in_progress") == 2).then_some(())
    });
    assert_eq!(w.edge.metric("nexus_edge_client_connections"), 2);
    assert_eq!(w.edge.metric("nexus_edge_client_connections_limit"), 2);
    assert_eq!(w.edge.metric("nexus_edge_client_connections_idle"), 0);

    // A third is closed without a byte, and never reaches the instance.
    let hits = w.backend.hits();
    let mut third = connect(&w.edge);
    let _ = third.write_all(login_request().as_bytes());
    let answer = closed_with(&mut third, Duration::from_secs(20)).expect("closed");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert_eq!(w.backend.hits(), hits);
    assert_eq!(
        w.edge.metric("nexus_edge_client_connections_refused_total"),
        1
    );
    assert!(w.edge.log().contains("max_connections are open"));

    // The held connections still work.
    held[0].write_all(b"\r\n").unwrap();
    assert_eq!(read_response(&mut held[0]).unwrap().status, 200);

    // One ends: a new connection is admitted (once the router has seen the close).
    drop(held.pop());
    let r = nexus_e2e::wait::until(Duration::from_secs(10), "a free slot", || {
        let mut s = connect(&w.edge);
        s.write_all(login_request().as_bytes()).ok()?;
        read_response(&mut s).ok()
    });
    assert_eq!(r.status, 200);
}

/// The metric `name` of `w`'s router, once it reads `n` (polled with a deadline).
fn wait_metric(w: &World, name: &str, n: u64) {
    nexus_e2e::wait::until(Duration::from_secs(10), name, || {
        (w.edge.metric(name) == n).then_some(())
    });
}

/// Asserts the router closed `s` without answering (closed to make room).
fn closed_unanswered(s: &mut TcpStream) {
    let answer = closed_with(s, Duration::from_secs(20)).expect("closed");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
}

/// A connection that sent a chunked login request followed by `after`, and got its answer.
fn after_chunked_login(w: &World, after: &str) -> TcpStream {
    let mut s = connect(&w.edge);
    s.write_all(
        format!(
            "POST /login HTTP/1.1\r\nHost: acme.{BASE}\r\nTransfer-Encoding: chunked\r\n\r\n\
             2\r\nhi\r\n0\r\n\r\n{after}"
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(read_next_response(&mut s).unwrap().status, 200);
    s
}

/// A connection with a login request answered, kept alive, once the router counts `idle`
/// idle connections.
fn idle_after_login(w: &World, idle: u64) -> TcpStream {
    let mut s = connect(&w.edge);
    request_ok(&mut s);
    wait_metric(w, "nexus_edge_client_connections_idle", idle);
    s
}

const IDLE: &str = "nexus_edge_client_connections_idle";
const RECLAIMED: &str = "nexus_edge_client_connections_reclaimed_total";

#[test]
fn at_max_connections_the_longest_idle_connection_makes_room_for_a_new_one() {
    // Idle keep-alive connections (and new ones that send nothing) held the cap until their
    // timeout: every new client was turned away meanwhile. (A silent connection below waits
    // for others: the header bound is long, so that it is never closed as unused.)
    let w = world("max_connections = 2\nrequest_header_timeout = \"60s\"");
    let mut older = idle_after_login(&w, 1);
    let mut younger = idle_after_login(&w, 2);

    // A third is served; the connection idle the longest is closed for it, unanswered.
    let mut third = connect(&w.edge);
    request_ok(&mut third);
    closed_unanswered(&mut older);
    assert_eq!(w.edge.metric(RECLAIMED), 1);
    assert_eq!(
        w.edge.metric("nexus_edge_client_connections_refused_total"),
        0
    );
    // The younger one was left alone.
    request_ok(&mut younger);

    // A new connection that sends nothing yet is idle too, and is closed first when it has
    // waited the longest.
    drop((younger, third));
    wait_metric(&w, "nexus_edge_client_connections", 0);
    let mut silent = connect(&w.edge);
    wait_metric(&w, IDLE, 1);
    let mut other = idle_after_login(&w, 2);
    let mut fourth = connect(&w.edge);
    request_ok(&mut fourth);
    closed_unanswered(&mut silent);
    assert_eq!(w.edge.metric(RECLAIMED), 2);
    request_ok(&mut other);
    assert_eq!(
        w.edge.metric("nexus_edge_client_connections_unused_total"),
        0
    );
}

#[test]
fn a_connection_holding_the_start_of_a_request_is_never_closed_for_room() {
    // After a chunked body the router cannot tell where the request ended: Pingora may still
    // drain the body, or read the rest of a pipelined header it kept, as here. Closed for
    // room, the begun request was lost.
    let w = world("max_connections = 2");
    let mut chunked = after_chunked_login(&w, &format!("GET /login HTTP/1.1\r\nHost: acme.{BASE}"));
    let mut plain = idle_after_login(&w, 1);
    let mut new = connect(&w.edge);
    request_ok(&mut new);
    closed_unanswered(&mut plain);
    // The pipelined request, begun before, is answered.
    chunked.write_all(b"\r\n\r\n").unwrap();
    assert_eq!(read_next_response(&mut chunked).unwrap().status, 200);

    // Nor when the read that ended the next request brought the start of a third: the count
    // of what Pingora holds is still unknown then.
    drop((chunked, new));
    wait_metric(&w, "nexus_edge_client_connections", 0);
    let mut chain =
        after_chunked_login(&w, &format!("GET /login HTTP/1.1\r\nHost: acme.{BASE}\r\n"));
    chain.write_all(b"\r\nGET /login HTTP/1.1\r\nHo").unwrap();
    assert_eq!(read_next_response(&mut chain).unwrap().status, 200);
    let mut plain = idle_after_login(&w, 1);
    let mut new = connect(&w.edge);
    request_ok(&mut new);
    closed_unanswered(&mut plain);
    chain
        .write_all(format!("st: acme.{BASE}\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_next_response(&mut chain).unwrap().status, 200);

    // A chunked body with nothing read after it is idle as any other.
    drop((chain, new));
    wait_metric(&w, "nexus_edge_client_connections", 0);
    let mut clean = after_chunked_login(&w, "");
    wait_metric(&w, IDLE, 1);
    let _other = idle_after_login(&w, 2);
    let mut new = connect(&w.edge);
    request_ok(&mut new);
    closed_unanswered(&mut clean);
}

fn request_ok(s: &mut TcpStream) {
    s.write_all(login_request().as_bytes()).unwrap();
    assert_eq!(read_response(s).unwrap().status, 200);
}

#[test]
fn a_cap_the_open_file_limit_cannot_hold_is_cut_down_to_what_fits() {
    // With 128 descriptors and max_connections = 10,000, clients took every descriptor before
    // the cap was reached: new ones waited unaccepted, nothing was made room for, and the ops
    // listener stopped answering.
    let keys = TestKeys::new();
    let backend = Backend::start("instance-a");
    let records = vec![binding("acme", &backend.url(), "active", None)];
    let mut opts = EdgeOptions::new(keys.jwks(), bindings_file(records));
    opts.server_extra = "max_connections = 10000".to_owned();
    opts.open_files = Some(128);
    opts.open_files_hard = true;
    let edge = Edge::start(&opts);
    assert!(edge.log().contains("all are cut down"), "{}", edge.log());
    // 64 kept in reserve, an eighth of the rest (8 at least) for the ops listener, a third
    // of what is left for idle instance connections (18, 9 for each of the 2 threads), two
    // a client.
    let cap = edge.metric("nexus_edge_client_connections_limit");
    assert_eq!(cap, 19);
    let host = format!("acme.{BASE}");
    let mut held: Vec<TcpStream> = (0..cap)
        .map(|_| {
            let mut s = connect(&edge);
            s.write_all(format!("GET /login HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
                .unwrap();
            assert_eq!(read_next_response(&mut s).unwrap().status, 200);
            s
        })
        .collect();
    // At the cap: the ops listener answers, and a new client is let in for an idle one.
    assert_eq!(edge.ops_get("/healthz").status, 200);
    let r = nexus_e2e::http::get(edge.addr, &host, "/login", &[]);
    assert_eq!(r.status, 200);
    assert!(edge.metric("nexus_edge_client_connections_reclaimed_total") >= 1);
    // Idle connections to the ops address take no descriptor the clients' cap counted on:
    // uncounted, they took the last ones, and new clients waited unaccepted.
    // Answered while they are held: an ops connection lives 10 s at most, after which the
    // client was let in all the same.
    let ops_held: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(edge.ops_addr).ok())
        .collect();
    let mut s = connect(&edge);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET /login HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_next_response(&mut s).unwrap().status, 200);
    drop(ops_held);
    held.clear();
}

#[test]
fn the_open_file_limit_is_raised_for_max_connections() {
    // Started at 256, as a shell or service manager may start it; max_connections = 1,000
    // needs a descriptor for each client and its instance connection, plus the idle instance
    // connections kept (`[upstream] idle_connections`, 4,096), the ops listener's 256 and a
    // reserve.
    let keys = TestKeys::new();
    let backend = Backend::start("instance-a");
    let records = vec![binding("acme", &backend.url(), "active", None)];
    let mut opts = EdgeOptions::new(keys.jwks(), bindings_file(records));
    opts.server_extra = "max_connections = 1000".to_owned();
    opts.open_files = Some(256);
    let edge = Edge::start(&opts);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", edge.pid())).unwrap();
    let (soft, hard) = limits
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("Max open files")?;
            let mut numbers = rest.split_whitespace();
            let soft: u64 = numbers.next()?.parse().ok()?;
            let hard = numbers.next()?.parse::<u64>().unwrap_or(u64::MAX);
            Some((soft, hard))
        })
        .unwrap_or_else(|| panic!("{limits}"));
    assert_eq!(soft, hard.min(6_416), "{limits}");
    if hard < 6_416 {
        assert!(
            edge.log().contains("open-file limit is below"),
            "{}",
            edge.log()
        );
    } else {
        assert!(
            edge.log().contains("open-file limit raised"),
            "{}",
            edge.log()
        );
    }
    assert_eq!(
        nexus_e2e::http::get(edge.addr, &format!("acme.{BASE}"), "/login", &[]).status,
        200
    );
}

/// The `THP_enabled` line of a process's status (Linux 5.0 on), `None` on kernels without it.
fn huge_pages_enabled(pid: u32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))?;
    Some(line.trim() != "0")
}

#[test]
fn transparent_huge_pages_are_off_unless_mimalloc_allow_thp_is_set() {
    // Left on, khugepaged merges what the allocator gave back into huge pages again, and an
    // idle router's memory climbs (README, "Memory per connection").
    // Children inherit the flag: under a runner that has it off already, the router would
    // show it off without turning it off itself.
    match huge_pages_enabled(std::process::id()) {
        Some(true) => {}
        Some(false) => {
            eprintln!("huge pages are off for the test itself: nothing to check");
            return;
        }
        None => {
            eprintln!("this kernel shows no THP_enabled line: nothing to check");
            return;
        }
    }
    let keys = TestKeys::new();
    let backend = Backend::start("instance-a");
    let records = vec![binding("acme", &backend.url(), "active", None)];
    let opts = EdgeOptions::new(keys.jwks(), bindings_file(records.clone()));
    let edge = Edge::start(&opts);
    assert_eq!(huge_pages_enabled(edge.pid()), Some(false));
    drop(edge);

    // Set but empty counts as unset: off.
    let mut opts = EdgeOptions::new(keys.jwks(), bindings_file(records.clone()));
    opts.env
        .push(("MIMALLOC_ALLOW_THP".to_owned(), String::new()));
    let edge = Edge::start(&opts);
    assert_eq!(huge_pages_enabled(edge.pid()), Some(false));
    drop(edge);

    // The operator's choice stands: mimalloc applies it.
    let mut opts = EdgeOptions::new(keys.jwks(), bindings_file(records));
    opts.env
        .push(("MIMALLOC_ALLOW_THP".to_owned(), "1".to_owned()));
    let edge = Edge::start(&opts);
    assert_eq!(huge_pages_enabled(edge.pid()), Some(true));
    assert_eq!(
        nexus_e2e::http::get(edge.addr, &format!("acme.{BASE}"), "/login", &[]).status,
        200
    );
}

#[test]
fn a_client_that_stops_reading_is_disconnected() {
    // 50 MB the client never reads: the router's writes stall once the socket buffers are
    // full, and after client_write_timeout the connection (and the instance's) is let go.
    let w = world("client_write_timeout = \"1s\"");
    let mut s = connect(&w.edge);
    s.write_all(
        format!("GET /login/big/50000000 HTTP/1.1\r\nHost: acme.{BASE}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    nexus_e2e::wait::until(Duration::from_secs(20), "the request forwarded", || {
        (w.backend.hits() == 1).then_some(())
    });
    // The client never closes its end: a count back to 0 is the router letting it go.
    nexus_e2e::wait::until(Duration::from_secs(20), "the stalled client cut", || {
        (w.edge.metric("nexus_edge_client_connections") == 0).then_some(())
    });
    // What the client got before the cut: the head and part of the body, never all of it.
    let got = closed_with(&mut s, Duration::from_secs(20)).expect("closed");
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(got.len() < 50_000_000);
}

#[test]
fn a_client_that_reads_slowly_but_steadily_gets_the_whole_response() {
    // Left to its default, the kernel wakes a writer only once half of a send buffer of
    // megabytes has drained, which at this pace takes longer than the bound: the router's
    // writes waited for seconds while the client took bytes all along, and it was cut as a
    // client that takes nothing. The listening socket's TCP_NOTSENT_LOWAT wakes them sooner.
    const SIZE: usize = 4_000_000;
    let w = world("client_write_timeout = \"1s\"");
    let mut s = connect(&w.edge);
    s.write_all(
        format!("GET /login/big/{SIZE} HTTP/1.1\r\nHost: acme.{BASE}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 50_000];
    loop {
        // About 500 KB/s: a read of what has arrived, then a tenth of a second (the client's
        // pace, not a wait for a condition).
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("after {got} bytes: {e}\n{}", w.edge.log()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(got > SIZE, "{got} bytes: cut short\n{}", w.edge.log());
    nexus_e2e::wait::until(Duration::from_secs(20), "the request counted", || {
        (w.edge
            .metric("nexus_edge_requests_total{outcome=\"forwarded\"}")
            == 1)
            .then_some(())
    });
}

#[test]
fn an_instance_that_stalls_after_100_continue_still_gets_the_client_a_504() {
    let w = world_with(|opts| opts.read_timeout = "1s");
    let mut s = connect(&w.edge);
    s.write_all(
        format!("GET /login/continue-then-stall HTTP/1.1\r\nHost: acme.{BASE}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let got = closed_with(&mut s, Duration::from_secs(20)).expect("closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 100 Continue\r\n"), "{text}");
    assert!(
        text.contains("HTTP/1.1 504"),
        "a final answer after the 100: {text}"
    );
}

#[test]
fn no_informational_response_reaches_an_http_1_0_client() {
    let w = world("");
    let ask = |version: &str| {
        let mut s = connect(&w.edge);
        s.write_all(
            format!("GET /login/early-hints HTTP/{version}\r\nHost: acme.{BASE}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let got = closed_with(&mut s, Duration::from_secs(20)).expect("closed");
        String::from_utf8_lossy(&got).into_owned()
    };
    let old = ask("1.0");
    assert!(
        old.starts_with("HTTP/1.1 200"),
        "the 103 is not forwarded: {old}"
    );
    let new = ask("1.1");
    assert!(new.starts_with("HTTP/1.1 103"), "{new}");
    assert!(new.contains("HTTP/1.1 200"), "{new}");
}

#[test]
fn requests_pingora_answers_itself_are_counted() {
    // A header Pingora's parser refuses (400) and a CONNECT (405) are answered before any of
    // the router's hooks run: counted all the same, or a flood of either is invisible.
    let w = world("");
    for (raw, status) in [
        (
            format!("GET /login HTTP/1.1\r\nHost: acme.{BASE}\r\nBad Header: x\r\n\r\n"),
            400,
        ),
        (
            format!("CONNECT acme.{BASE}:443 HTTP/1.1\r\nHost: acme.{BASE}:443\r\n\r\n"),
            405,
        ),
        (login_request(), 200),
    ] {
        let mut s = connect(&w.edge);
        s.write_all(raw.as_bytes()).unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.status, status, "{raw:?}");
    }
    // On a reused connection, bytes the parser refuses before any header began (two bare
    // CRs, taken at first for stray line ends) are counted as well.
    let mut s = connect(&w.edge);
    s.write_all(login_request().as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200);
    s.write_all(b"\r\r").unwrap();
    let refused = closed_with(&mut s, Duration::from_secs(20)).expect("closed");
    assert!(
        refused.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    let count = |outcome: &str| {
        w.edge.metric(&format!(
            "nexus_edge_requests_total{{outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(count("unparsable_request"), 2);
    assert_eq!(count("connect_refused"), 1);
    // Each logged too (its bytes never: a header may hold a credential).
    let unparsable = refused_lines(&w.edge, "unparsable_request", 2);
    assert!(
        unparsable.iter().all(|l| l.contains("status=400")),
        "{unparsable:?}"
    );
    assert!(
        !unparsable.iter().any(|l| l.contains("Bad Header")),
        "{unparsable:?}"
    );
    let connect = refused_lines(&w.edge, "connect_refused", 1);
    assert!(connect[0].contains("status=405"), "{connect:?}");
    // A forwarded request is counted once its response is out, after the client may read it.
    nexus_e2e::wait::until(Duration::from_secs(10), "both requests counted", || {
        (count("forwarded") == 2).then_some(())
    });
    assert_eq!(w.edge.metric("nexus_edge_client_headers_in_progress"), 0);
}

#[test]
fn a_pipelined_header_that_stops_is_cut_at_the_deadline() {
    // Part of the second header comes in the first request's read and Pingora keeps it; the
    // rest never comes. The header has begun: it gets request_header_timeout and a 408, not
    // the keep-alive bound (60 s) and a quiet close.
    let w = world("request_header_timeout = \"500ms\"");
    let mut s = connect(&w.edge);
    let both = format!(
        "{}GET /login HTTP/1.1\r\nHost: acme.{BASE}\r\nX-Slow: ",
        login_request()
    );
    s.write_all(both.as_bytes()).unwrap();
    assert_eq!(read_next_response(&mut s).unwrap().status, 200);
    let answer = closed_with(&mut s, Duration::from_secs(10)).expect("closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
    assert_eq!(w.backend.hits(), 1);
    assert_eq!(w.edge.metric("nexus_edge_request_header_timeouts_total"), 1);
    assert_eq!(w.edge.metric("nexus_edge_client_headers_in_progress"), 0);
}

#[test]
fn a_pipelined_request_pingora_answers_itself_is_counted() {
    // Kept whole from the first request's read, a CONNECT is answered 405 by Pingora
    // without another read: counted as any other.
    let w = world("");
    let mut s = connect(&w.edge);
    let both = format!(
        "{}CONNECT acme.{BASE}:443 HTTP/1.1\r\nHost: acme.{BASE}:443\r\n\r\n",
        login_request()
    );
    s.write_all(both.as_bytes()).unwrap();
    assert_eq!(read_next_response(&mut s).unwrap().status, 200);
    let answer = closed_with(&mut s, Duration::from_secs(10)).expect("closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 405 "), "{text:?}");
    assert_eq!(
        w.edge
            .metric("nexus_edge_requests_total{outcome=\"connect_refused\"}"),
        1
    );
}

#[test]
fn a_line_end_sent_with_a_body_is_not_taken_for_a_pipelined_header() {
    // RFC 9112 §2.2: some clients send an empty line after a body. Read with the body and
    // kept by Pingora, it is not a header begun: the connection idles under the keep-alive
    // bound (60 s), not the header deadline.
    let w = world("request_header_timeout = \"1s\"");
    let mut s = connect(&w.edge);
    s.write_all(
        format!("POST /login HTTP/1.1\r\nHost: acme.{BASE}\r\nContent-Length: 2\r\n\r\nhi\r\n")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(read_next_response(&mut s).unwrap().status, 200);
    assert_eq!(closed_with(&mut s, Duration::from_millis(1500)), None);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(login_request().as_bytes()).unwrap();
    assert_eq!(read_next_response(&mut s).unwrap().status, 200);
    assert_eq!(w.edge.metric("nexus_edge_request_header_timeouts_total"), 0);
}

#[test]
fn the_ops_listener_caps_its_connections_and_the_public_listener_keeps_serving() {
    // Idle connections to the ops address once took every file descriptor the process had:
    // then the public listener's accepts failed too. The ops listener holds 256 at most.
    const OPS_CAP: usize = 256;
    let w = world("");
    let probe = "GET /healthz HTTP/1.1\r\nHost: ops\r\n\r\n";
    let open = |ops: std::net::SocketAddr| {
        let mut s = TcpStream::connect(ops).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(probe.as_bytes()).unwrap();
        s
    };
    // A connection holds its place from the accept (each serves one request, then closes:
    // these send none).
    let mut held: Vec<TcpStream> = (0..OPS_CAP)
        .map(|_| TcpStream::connect(w.edge.ops_addr).unwrap())
        .collect();
    // One more is closed unanswered, at once (not left hanging: a read timeout is no close).
    let closed_unanswered = || {
        let mut over = open(w.edge.ops_addr);
        over.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        match read_next_response(&mut over) {
            Err(e) => matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            )
            .then_some(()),
            Ok(_) => None,
        }
    };
    // Places are taken in the order the connections' tasks run, not the order of the accepts:
    // a probe may take one before the last held connections do, and one of those is refused
    // in its stead (then every later probe would find the place it left). Held connections
    // found closed are opened again before each probe, until a probe finds the cap full,
    // within the held connections' 10 s.
    let still_open = |s: &TcpStream| {
        s.set_nonblocking(true).unwrap();
        let open = matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
        s.set_nonblocking(false).unwrap();
        open
    };
    nexus_e2e::wait::until(
        Duration::from_secs(8),
        "a connection over the cap refused",
        || {
            held.retain(still_open);
            while held.len() < OPS_CAP {
                held.push(TcpStream::connect(w.edge.ops_addr).unwrap());
            }
            closed_unanswered()
        },
    );
    // More refusals are counted, and said in the log once (it was one line each: whoever
    // reached the ops address could fill the log at connection rate).
    for _ in 0..20 {
        let _ = closed_unanswered();
    }
    let said = w
        .edge
        .log()
        .matches("ops connection closed unanswered")
        .count();
    assert_eq!(said, 1, "{}", w.edge.log());
    // The public listener serves on.
    let mut s = connect(&w.edge);
    s.write_all(login_request().as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200);
    // A place given back is taken again, and the refusals were counted.
    held.pop();
    let metrics = nexus_e2e::wait::until(Duration::from_secs(5), "an ops place free again", || {
        let mut s = TcpStream::connect(w.edge.ops_addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: ops\r\n\r\n")
            .ok()?;
        let r = read_next_response(&mut s).ok()?;
        (r.status == 200).then(|| String::from_utf8_lossy(&r.body).into_owned())
    });
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nexus_edge_ops_connections_refused_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(refused.is_some_and(|n| n >= 1), "{refused:?}");
    assert!(w.backend.hits() >= 1);
}

#[test]
fn the_ops_listener_answers_one_request_a_connection_and_bounds_what_it_reads() {
    let w = world("");
    // Two requests at once: the first answered with `Connection: close`, so the client knows
    // the second was not read (kept alive, it was dropped without a word).
    let mut s = TcpStream::connect(w.edge.ops_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: ops\r\n\r\nGET /readyz HTTP/1.1\r\nHost: ops\r\n\r\n",
    )
    .unwrap();
    let r = read_next_response(&mut s).unwrap();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    let mut rest = Vec::new();
    assert!(s.read_to_end(&mut rest).is_ok() && rest.is_empty());
    // An HTTP/1.1 request without a Host is refused (RFC 9112 §3.2).
    let r = nexus_e2e::http::send_raw(w.edge.ops_addr, b"GET /readyz HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(r.status, 400);
    // A header past 64 KiB is not read on (Pingora takes 1 MiB): the connection ends
    // unanswered.
    let mut s = TcpStream::connect(w.edge.ops_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut big = b"GET /healthz HTTP/1.1\r\nHost: ops\r\nX-Pad: ".to_vec();
    big.resize(100 * 1024, b'a');
    let _ = s.write_all(&big);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains(" 200 "),
        "answered"
    );
    // The listener serves on.
    let r = nexus_e2e::http::send_raw(
        w.edge.ops_addr,
        b"GET /healthz HTTP/1.1\r\nHost: ops\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn an_idle_instance_connection_is_closed_after_idle_connection_timeout() {
    // Pooled instance connections stayed open until evicted, to instances no longer bound
    // too, and past the instance's own keep-alive timeout (a request then raced its close).
    let w = world_with(|opts| {
        opts.upstream_extra = "idle_connection_timeout = \"300ms\"".to_owned();
    });
    let host = format!("acme.{BASE}");
    let r = nexus_e2e::http::get(w.edge.addr, &host, "/login", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.backend.connections(), 1);
    nexus_e2e::wait::until(
        Duration::from_secs(10),
        "the idle instance connection to be closed",
        || (w.backend.closed() == 1).then_some(()),
    );
    // The next request opens a new one.
    let r = nexus_e2e::http::get(w.edge.addr, &host, "/login", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.backend.connections(), 2);
}
