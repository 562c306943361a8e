//! An instance whose name has a dead address: nexus-edge's Pingora service, run in process,
//! fails over to the live address, and later requests pass the dead one over.
//!
//! In process rather than the binary because the system resolver here knows no name with two
//! addresses; in process the service is given one (`InstanceResolver::with_lookup`). Everything
//! else is real: Pingora's HTTP proxy, TCP connects (one refused), the HTTP instance.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use nexus_e2e::backend::Backend;
use nexus_e2e::edge::{BASE, UNBOUND_IP};
use nexus_e2e::http::{get, send_raw};
use nexus_e2e::in_process::InProcessEdge;
use nexus_edge::resolve::NameLookup;

/// `instance.test` has a dead address first (nothing listens on [`UNBOUND_IP`], which no
/// harness server binds) and the live one second, so the first request's first pick is the
/// dead one.
#[derive(Debug, Default)]
struct DeadThenLive {
    lookups: AtomicU32,
}

const DEAD: IpAddr = IpAddr::V4(UNBOUND_IP);
const LIVE: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[async_trait::async_trait]
impl NameLookup for DeadThenLive {
    async fn lookup(&self, host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        match host {
            "instance.test" => Ok(vec![DEAD, LIVE]),
            _ => Err(std::io::Error::other(format!("{host}: unknown name"))),
        }
    }
}

/// The router in process, serving `acme` at `http://instance.test:<instance_port>`.
fn start_edge(instance_port: u16, lookup: Arc<dyn NameLookup>) -> InProcessEdge {
    let url = format!("http://instance.test:{instance_port}");
    InProcessEdge::start(&url, None, lookup)
}

#[test]
fn a_dead_address_of_an_instance_name_fails_no_request() {
    let instance = Backend::start("instance-a");
    let lookup = Arc::new(DeadThenLive::default());
    let edge = start_edge(instance.addr.port(), Arc::clone(&lookup) as _);
    let host = format!("acme.{BASE}");
    for i in 0..6 {
        let r = get(edge.addr, &host, "/login", &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.json()["instance"], "instance-a", "request {i}");
    }
    assert_eq!(instance.hits(), 6);
    assert_eq!(lookups(&lookup), 1, "the answer is cached");
    // One retry: the first request's; later ones passed the dead address over.
    let retries = edge.state.metrics.upstream_connect_retries.get();
    assert_eq!(retries, 1);
}

#[test]
fn a_request_body_arrives_whole_after_a_failover() {
    let instance = Backend::start("instance-a");
    let edge = start_edge(instance.addr.port(), Arc::new(DeadThenLive::default()));
    // The first request's first pick is the dead address.
    let body = "user=alice&password=correct-horse";
    let raw = format!(
        "POST /login HTTP/1.1\r\nHost: acme.{BASE}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let r = send_raw(edge.addr, raw.as_bytes()).expect("response");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], body);
    assert_eq!(edge.state.metrics.upstream_connect_retries.get(), 1);
}

fn lookups(l: &DeadThenLive) -> u32 {
    l.lookups.load(Ordering::SeqCst)
}

/// `instance.test` has an AAAA and an A record, IPv6 first (as `localhost` has on many
/// hosts); the instance listens on IPv4 only.
#[derive(Debug, Default)]
struct DualStack;

#[async_trait::async_trait]
impl NameLookup for DualStack {
    async fn lookup(&self, _host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok(vec![IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), LIVE])
    }
}

#[test]
fn a_dual_stack_instance_name_listening_on_ipv4_only_is_reached() {
    // The IPv6 connect fails; the request goes again to the name's IPv4 address, and later
    // requests pass the IPv6 address over while it is marked down.
    let instance = Backend::start("instance-a");
    let edge = start_edge(instance.addr.port(), Arc::new(DualStack));
    let host = format!("acme.{BASE}");
    for i in 0..3 {
        let r = get(edge.addr, &host, "/login", &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(instance.hits(), 3);
    // One retry: the first request's; the later ones went to IPv4 first (the mark lasts
    // DOWN_FOR, 10 s, far longer than three requests take).
    assert_eq!(edge.state.metrics.upstream_connect_retries.get(), 1);
}
