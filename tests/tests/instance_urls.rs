//! Instance URLs as the real binary reads them: what a binding's `instance_url` may name, and
//! what a record that names no instance gets (refused and named, the other records loaded).

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nexus_e2e::backend::Backend;
use nexus_e2e::edge::{binding, bindings_file, Edge, EdgeOptions};
use nexus_e2e::http::get_with_token;
use nexus_e2e::keys::TestKeys;
use nexus_e2e::probe::host;

#[test]
fn an_instance_url_of_the_unspecified_address_or_port_0_is_refused_at_load() {
    // A listen address copied from an instance's own config (`0.0.0.0:8080`) names no
    // instance: a connect to it reaches whatever listens on the router's host at that port,
    // here a server that is nobody's instance.
    let local = Backend::start("on-the-routers-host");
    let port = local.addr.port();
    let keys = TestKeys::new();
    let refused = [
        ("t0", format!("http://0.0.0.0:{port}")),
        ("t1", format!("http://[::ffff:0.0.0.0]:{port}")),
        ("t2", format!("http://[::]:{port}")),
        ("t3", "http://127.0.0.1:0".to_owned()),
    ];
    let mut records: Vec<_> = refused
        .iter()
        .map(|(t, url)| binding(t, url, "active", None))
        .collect();
    records.push(binding("acme", &local.url(), "active", None));
    let edge = Edge::start(&EdgeOptions::new(keys.jwks(), bindings_file(records)));
    for (tenant, url) in &refused {
        let r = get_with_token(edge.addr, &host(tenant), "/app", &keys.token(tenant, None));
        assert_eq!(r.status, 404, "{url}: {}", r.text());
        let log = edge.log();
        assert!(
            log.lines().any(|l| l.contains("binding record refused")
                && l.contains(&format!("tenant \"{tenant}\""))
                && l.contains(url.as_str())),
            "{url} not named: {log}"
        );
    }
    assert_eq!(local.hits(), 0, "a request reached the router's own host");
    // The other records loaded.
    let r = get_with_token(edge.addr, &host("acme"), "/app", &keys.token("acme", None));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(local.hits(), 1);
}
