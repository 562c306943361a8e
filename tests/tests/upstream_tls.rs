//! HTTPS instances: the real binary reaches an instance over TLS only when the instance's
//! certificate chains to a trusted CA (`[upstream] ca_file`, else the system roots) and names
//! the host of its URL. Real handshakes against a real TLS server.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use nexus_e2e::backend::{echoed_header, Backend};
use nexus_e2e::edge::{binding, bindings_file, Edge, EdgeOptions, BASE};
use nexus_e2e::http::{get, get_with_token};
use nexus_e2e::in_process::InProcessEdge;
use nexus_e2e::keys::TestKeys;
use nexus_e2e::probe::{host, wait_instance};
use nexus_e2e::tls::TestPki;
use nexus_e2e::wait;
use nexus_edge::resolve::NameLookup;

/// A router whose `acme` is `https://localhost:<port>` (a name: SNI and a DNS name check) and
/// `globex` is `https://127.0.0.1:<port>` (an address: an IP address check), both `instance`.
fn edge_for(instance: &Backend, keys: &TestKeys, ca: Option<&std::path::Path>) -> Edge {
    let port = instance.addr.port();
    let bindings = bindings_file(vec![
        binding("acme", &format!("https://localhost:{port}"), "active", None),
        binding("globex", &instance.url(), "active", None),
    ]);
    let mut opts = EdgeOptions::new(keys.jwks(), bindings);
    if let Some(ca) = ca {
        opts.upstream_extra = format!("ca_file = {:?}", ca.display().to_string());
    }
    Edge::start(&opts)
}

/// Both tenants of [`edge_for`] get 502 (the instance cannot be verified).
fn assert_refused(edge: &Edge, keys: &TestKeys) {
    for tenant in ["acme", "globex"] {
        let r = get_with_token(edge.addr, &host(tenant), "/app", &keys.token(tenant, None));
        assert_eq!(r.status, 502, "{tenant}: {}", r.text());
    }
}

#[test]
fn an_https_instance_is_reached_through_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let instance = Backend::start_tls("secure", &pki.server_cert, &pki.server_key);
    assert!(instance.url().starts_with("https://127.0.0.1:"));
    let keys = TestKeys::new();
    let edge = edge_for(&instance, &keys, Some(&pki.ca));
    for tenant in ["acme", "globex"] {
        let r = get_with_token(edge.addr, &host(tenant), "/app", &keys.token(tenant, None));
        assert_eq!(r.status, 200, "{tenant}: {}", r.text());
        let echo = r.json();
        assert_eq!(echo["instance"], "secure");
        assert_eq!(echoed_header(&echo, "x-tenant-id"), [tenant]);
    }
    assert_eq!(instance.hits(), 2);
    // The name goes out as SNI; an address does not (RFC 6066 §3).
    assert_eq!(
        instance.server_names(),
        [Some("localhost".to_owned()), None]
    );
}

#[test]
fn an_instance_certificate_the_router_cannot_verify_gets_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let keys = TestKeys::new();

    // A CA the router was not told about: the system roots do not include it.
    let instance = Backend::start_tls("untrusted", &pki.server_cert, &pki.server_key);
    assert_refused(&edge_for(&instance, &keys, None), &keys);
    assert_eq!(
        instance.hits(),
        0,
        "a request crossed an unverified connection"
    );

    // A trusted CA, but a certificate for another name than the instance URL's host.
    let elsewhere = Backend::start_tls("elsewhere", &pki.other_name_cert, &pki.other_name_key);
    assert_refused(&edge_for(&elsewhere, &keys, Some(&pki.ca)), &keys);
    assert_eq!(
        elsewhere.hits(),
        0,
        "a request reached a certificate for another name"
    );
}

/// Every name is the loopback address: the system resolver here knows no
/// `*.instances.test`.
#[derive(Debug)]
struct AllLoopback;

#[async_trait::async_trait]
impl NameLookup for AllLoopback {
    async fn lookup(&self, _host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
    }
}

#[test]
fn an_https_host_with_an_underscore_is_refused_not_checked_as_another_name() {
    // Pingora's connector would check `tenant_a.instances.test`'s certificate as
    // `tenant-a.instances.test` (and send that as SNI): this instance, with a certificate for
    // that other host only, must not be taken for it.
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let other = Backend::start_tls("other-host", &pki.dashed_name_cert, &pki.dashed_name_key);
    let port = other.addr.port();
    let acme = format!("acme.{BASE}");

    // The certificate's own name reaches it: the setup is sound.
    let url = format!("https://tenant-a.instances.test:{port}");
    let edge = InProcessEdge::start(&url, Some(&pki.ca), Arc::new(AllLoopback));
    assert_eq!(get(edge.addr, &acme, "/login", &[]).status, 200);
    assert_eq!(other.hits(), 1);

    // The name with `_`: its record is refused at load, so `acme` has no binding.
    let url = format!("https://tenant_a.instances.test:{port}");
    let edge = InProcessEdge::start(&url, Some(&pki.ca), Arc::new(AllLoopback));
    let r = get(edge.addr, &acme, "/login", &[]);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(
        other.hits(),
        1,
        "a request reached a certificate for another name"
    );
    assert_eq!(
        other.server_names(),
        [Some("tenant-a.instances.test".to_owned())]
    );
}

#[test]
fn a_binding_whose_https_host_would_be_checked_as_another_name_is_refused_and_named() {
    // The real binary: that one record is refused, with the reason in the log, and the other
    // tenants load.
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let instance = Backend::start_tls("secure", &pki.server_cert, &pki.server_key);
    let keys = TestKeys::new();
    let bindings = bindings_file(vec![
        binding("acme", "https://tenant_a.instances.test", "active", None),
        binding("globex", &instance.url(), "active", None),
    ]);
    let mut opts = EdgeOptions::new(keys.jwks(), bindings);
    opts.upstream_extra = format!("ca_file = {:?}", pki.ca.display().to_string());
    let edge = Edge::start(&opts);
    let r = get_with_token(
        edge.addr,
        &host("globex"),
        "/app",
        &keys.token("globex", None),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get_with_token(edge.addr, &host("acme"), "/app", &keys.token("acme", None));
    assert_eq!(r.status, 404, "{}", r.text());
    let log = edge.log();
    assert!(
        log.lines().any(|l| l.contains("binding record refused")
            && l.contains("tenant \"acme\"")
            && l.contains("tenant-a.instances.test, another name")),
        "{log}"
    );
}

#[test]
fn instances_sharing_an_address_never_share_a_connection_and_a_rebind_leaves_the_old_ones() {
    // `acme` (`https://localhost:<port>`) and `globex` (`https://127.0.0.1:<port>`) are one
    // address under two names: each name gets its own connections, verified for it, reused
    // for its own requests only.
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let instance = Backend::start_tls("secure", &pki.server_cert, &pki.server_key);
    let keys = TestKeys::new();
    let edge = edge_for(&instance, &keys, Some(&pki.ca));
    let ask = |tenant: &str| {
        let r = get_with_token(edge.addr, &host(tenant), "/app", &keys.token(tenant, None));
        assert_eq!(r.status, 200, "{tenant}: {}", r.text());
        r.json()["instance"].as_str().unwrap().to_owned()
    };
    for _ in 0..3 {
        ask("acme");
        ask("globex");
    }
    assert_eq!(instance.hits(), 6);
    assert_eq!(
        instance.server_names(),
        [Some("localhost".to_owned()), None],
        "one connection per name, each reused"
    );
    // The metric that sizes the pool says the same: two opened, four reused (counted as each
    // request ends, after its response is sent: polled).
    let lines = [
        "nexus_edge_instance_connections_total{how=\"new\"} 2",
        "nexus_edge_instance_connections_total{how=\"reused\"} 4",
    ];
    wait::until(
        Duration::from_secs(10),
        "the requests to be counted",
        || {
            let metrics = edge.ops_get("/metrics").text();
            lines.iter().all(|l| metrics.contains(l)).then_some(())
        },
    );

    // `acme` moves to another instance while its connections to the first stay pooled: once
    // the router serves the change, no request of `acme` reaches the first again.
    let moved = Backend::start("moved");
    edge.write_bindings(&bindings_file(vec![
        binding("acme", &moved.url(), "active", None),
        binding("globex", &instance.url(), "active", None),
    ]));
    wait_instance(&edge, &keys, "acme", "moved");
    let (before, moved_before) = (instance.hits(), moved.hits());
    for _ in 0..3 {
        assert_eq!(ask("acme"), "moved");
    }
    assert_eq!(
        instance.hits(),
        before,
        "a request of acme reached its old instance"
    );
    assert_eq!(moved.hits(), moved_before + 3);
}

/// An `https` instance signed by a test CA the router trusts, serving acme, and acme's token.
struct SecureWorld {
    _dir: tempfile::TempDir,
    instance: Backend,
    edge: Edge,
    token: String,
}

fn secure_world() -> SecureWorld {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let instance = Backend::start_tls("secure", &pki.server_cert, &pki.server_key);
    let keys = TestKeys::new();
    let edge = edge_for(&instance, &keys, Some(&pki.ca));
    let token = keys.token("acme", None);
    SecureWorld {
        _dir: dir,
        instance,
        edge,
        token,
    }
}

impl SecureWorld {
    /// Whether `send` (a request to `/close-before-answer`, answered 502) was sent to the
    /// instance again after its pooled connection broke, within 20 rounds: each round pools
    /// a connection (a request answered), then sends; the instance closes the pooled
    /// connection unanswered, and the new one too (a new connection's failure is not sent
    /// again). Rounds, as a request can come before the last one's connection is back in the
    /// pool.
    fn sent_again(&self, send: impl Fn() -> u16) -> bool {
        (0..20).any(|_| {
            let warm = get_with_token(self.edge.addr, &host("acme"), "/warm", &self.token);
            assert_eq!(warm.status, 200, "{}", warm.text());
            let before = self.instance.hits();
            assert_eq!(send(), 502);
            self.instance.hits() >= before + 2
        })
    }
}

#[test]
fn a_pooled_https_connection_closed_without_close_notify_is_retried_as_a_plain_one_is() {
    // An instance that closes a kept connection as a request arrives (its idle timeout, a
    // crash) ends TLS without `close_notify`. Pingora sends a request again after such a
    // close on plain connections only: on `https` the request failed with 502.
    let w = secure_world();
    let get = || get_with_token(w.edge.addr, &host("acme"), "/close-before-answer", &w.token);
    assert!(
        w.sent_again(|| get().status),
        "never sent again: {}",
        w.edge.log()
    );
    // A request the instance answers goes through after it.
    let after = get_with_token(w.edge.addr, &host("acme"), "/after", &w.token);
    assert_eq!(after.status, 200, "{}", after.text());
}

#[test]
fn a_put_that_asked_to_continue_is_sent_again_after_its_pooled_https_connection_broke() {
    // The router answers `Expect: 100-continue` itself, and that `100` counted as a response
    // begun: such a request was never sent again after its pooled connection broke, and got
    // 502 where the same request without `Expect` went through.
    let w = secure_world();
    let put_expecting_continue = || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(w.edge.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "PUT /close-before-answer HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Length: 1\r\nExpect: 100-continue\r\n\r\n",
            host("acme"),
            w.token
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut interim = Vec::new();
        let mut byte = [0u8; 1];
        while !interim.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "closed before the 100");
            interim.push(byte[0]);
        }
        assert!(interim.starts_with(b"HTTP/1.1 100"), "{interim:?}");
        s.write_all(b"x").unwrap();
        nexus_e2e::http::read_response(&mut s).unwrap().status
    };
    assert!(
        w.sent_again(put_expecting_continue),
        "never sent again: {}",
        w.edge.log()
    );
}

#[test]
fn an_https_response_cut_short_is_counted_invalid_as_a_plain_one_is() {
    // The instance sends its header and part of the body, then closes without TLS
    // `close_notify`: it answered, with less than a whole response (`upstream_invalid`), as
    // over `http`; not an instance out of reach.
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let instance = Backend::start_tls("secure", &pki.server_cert, &pki.server_key);
    let keys = TestKeys::new();
    let edge = edge_for(&instance, &keys, Some(&pki.ca));
    let raw = format!(
        "GET /cut/100 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        host("acme"),
        keys.token("acme", None)
    );
    let mut s = std::net::TcpStream::connect(edge.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(&mut s, raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    edge.wait_for("the request counted invalid", || {
        edge.ops_get("/metrics")
            .text()
            .contains("nexus_edge_requests_total{outcome=\"upstream_invalid\"} 1")
    });
    assert!(edge
        .ops_get("/metrics")
        .text()
        .contains("nexus_edge_requests_total{outcome=\"upstream_unreachable\"} 0"));
}
