//! The Prometheus alert rules shipped in `deploy/prometheus/`: valid for Prometheus
//! (`promtool check rules`), passing their own unit tests (`promtool test rules`), and naming
//! only metrics the real router exports, so that a renamed metric cannot leave an alert
//! silently watching nothing.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nexus_e2e::backend::Backend;
use nexus_e2e::edge::{binding, bindings_file, Edge, EdgeOptions};
use nexus_e2e::keys::TestKeys;
use nexus_e2e::wait;

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// Runs `promtool` with `args` in the rules' folder; its output on failure.
fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool could not be run ({e}): install it with `bash scripts/deps.sh --test`")
        });
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_are_valid_and_pass_their_unit_tests() {
    promtool(&["check", "rules", "nexus-edge.rules.yml"]);
    promtool(&["test", "rules", "nexus-edge.rules.test.yml"]);
}

/// Every `nexus_edge_*` name in the rules is a series the router exports (from start-up, or
/// once an instance has had a request and an interval has ended).
#[test]
fn every_metric_the_alerts_name_is_one_the_router_exports() {
    let rules = std::fs::read_to_string(rules_dir().join("nexus-edge.rules.yml")).unwrap();
    let mut named: Vec<&str> = rules
        .match_indices("nexus_edge_")
        .map(|(at, _)| {
            let rest = &rules[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        // The prefix alone, as the file's header names it, is no metric.
        .filter(|name| name.len() > "nexus_edge_".len())
        .collect();
    named.sort_unstable();
    named.dedup();
    assert!(named.len() >= 15, "{named:?}");

    let keys = TestKeys::new();
    let instance = Backend::start("instance");
    let mut opts = EdgeOptions::new(
        keys.jwks(),
        bindings_file(vec![binding("acme", &instance.url(), "active", None)]),
    );
    opts.extra = "[metrics]\ninterval = \"1s\"\nmin_requests = 1\n".to_owned();
    let edge = Edge::start(&opts);
    let r = nexus_e2e::http::get_with_token(
        edge.addr,
        &nexus_e2e::probe::host("acme"),
        "/",
        &keys.token("acme", None),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text = wait::until(Duration::from_secs(10), "the instance's series", || {
        let text = edge.ops_get("/metrics").text();
        text.contains("instance_id=\"inst-acme\"").then_some(text)
    });
    let exported = |name: &str| {
        text.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
    };
    let missing: Vec<&str> = named.into_iter().filter(|n| !exported(n)).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{text}");
}
