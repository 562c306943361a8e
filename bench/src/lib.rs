//! Shared fixtures for the benchmarks and the load harness: large binding tables, key sets,
//! tokens and settings, built the same way in every bench so the figures compare.

// Benchmark fixtures: a failed expectation aborts the benchmark, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nexus_binding_store::{Binding, BindingRecord, BindingTable};
use nexus_config::{AuthSettings, JwksSource};
use nexus_edge::auth::mint::SigningKey;

/// Base domain used by every fixture.
pub const BASE: &str = "nexus.bench";

/// Repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Tenant id number `i` (`t0000042`).
pub fn tenant(i: usize) -> String {
    format!("t{i:07}")
}

/// A typical binding record for tenant `i`, pointing at `url`.
pub fn record(i: usize, url: &str) -> BindingRecord {
    BindingRecord {
        tenant_id: tenant(i),
        subscription_id: format!("sub-{i:07}"),
        instance_id: format!("inst-{:05}", i % 5000),
        instance_url: url.to_owned(),
        api_url: None,
        identity_org_id: Some(format!("org-{i:07}")),
        status: "active".to_owned(),
        plan: "team".to_owned(),
        region: "eu-west".to_owned(),
        domains: if i.is_multiple_of(10) {
            vec![format!("app.customer{i}.example")]
        } else {
            vec![]
        },
        revision: i as u64 + 1,
        updated_at: Some("2026-11-01T12:00:00Z".to_owned()),
        mode: None,
    }
}

/// `n` validated bindings.
pub fn bindings(n: usize, url: &str) -> Vec<Arc<Binding>> {
    (0..n)
        .map(|i| Arc::new(Binding::from_record(&record(i, url)).expect("valid fixture")))
        .collect()
}

/// A table of `n` bindings.
pub fn table(n: usize, url: &str) -> BindingTable {
    BindingTable::from_bindings(bindings(n, url)).0
}

/// Now, Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The repo's RS256 demo key (kid `bench-rs256`).
pub fn rs256_key() -> SigningKey {
    let pem = std::fs::read_to_string(repo_root().join("deploy/demo/demo-rs256-key.pem"))
        .expect("demo key");
    SigningKey::from_pem(&pem, Some("bench-rs256".to_owned())).expect("rs256")
}

/// Claims for tenant `i`, valid for an hour; `nonce` makes otherwise equal tokens distinct.
pub fn claims(i: usize, nonce: u64) -> serde_json::Value {
    let n = now();
    serde_json::json!({
        "iss": "https://id.nexus.bench", "aud": "nexus", "sub": format!("user-{i}"),
        "iat": n, "exp": n + 3600, "jti": format!("{nonce:016x}"),
        "tenant_id": tenant(i), "org_id": format!("org-{i:07}"),
    })
}

/// Auth settings over a JWKS file holding `keys`.
pub fn auth_settings(
    jwks_path: &std::path::Path,
    keys: &[&SigningKey],
    cache: usize,
) -> AuthSettings {
    let jwks =
        serde_json::json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() });
    std::fs::write(jwks_path, jwks.to_string()).expect("write jwks");
    AuthSettings {
        jwks: JwksSource::File(jwks_path.to_path_buf()),
        hmac_keys: Vec::new(),
        issuers: vec!["https://id.nexus.bench".to_owned()],
        issuer_keys: None,
        audiences: vec!["nexus".to_owned()],
        leeway: Duration::from_secs(30),
        max_token_lifetime: None,
        tenant_claim: "tenant_id".to_owned(),
        org_claim: "org_id".to_owned(),
        session_cookie: Some("nexus_session".to_owned()),
        token_headers: Vec::new(),
        token_cookies: Vec::new(),
        token_query_parameters: Vec::new(),
        token_cache_capacity: cache,
        max_token_bytes: 8192,
        jwks_poll_interval: Duration::from_secs(1),
    }
}
