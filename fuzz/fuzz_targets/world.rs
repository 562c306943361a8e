#![allow(dead_code)] // each target uses part of the shared world
//! What both targets run against: eight tenants in different states, the demo RS256 key, and
//! a pool of genuine tokens the fuzzer can send as they are or mutate.

use std::sync::{Arc, OnceLock};

use nexus_bench::{auth_settings, claims, now, record, rs256_key, tenant, BASE};
use nexus_binding_store::{Binding, BindingTable};
use nexus_config::TenancySettings;
use nexus_edge::auth::Authenticator;

pub const TENANTS: usize = 8;

/// The custom domain of tenant 0 (from the bench fixture's records).
pub const CUSTOM_DOMAIN: &str = "app.customer0.example";

/// Names under the base domain that bindings claim: tenant 0 one under its own subdomain,
/// tenant 1 one under tenant 0's and the base domain itself (claims the router must not
/// honour).
pub fn claimed_under_base() -> [String; 3] {
    [
        format!("api.{}", tenant_host(0)),
        format!("x.{}", tenant_host(0)),
        BASE.to_owned(),
    ]
}

pub struct World {
    pub tenancy: TenancySettings,
    pub table: BindingTable,
    pub auth: Authenticator,
    /// Genuine tokens: one per tenant, then one for tenant 1 carrying tenant 2's org, then one
    /// without a tenant claim.
    pub tokens: Vec<String>,
    pub now: u64,
}

pub fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let jwks =
            std::env::temp_dir().join(format!("nexus-fuzz-jwks-{}.json", std::process::id()));
        let key = rs256_key();
        let auth = Authenticator::new(&auth_settings(&jwks, &[&key], 64)).expect("auth");
        // The keys are loaded; the file is not needed again.
        let _ = std::fs::remove_file(&jwks);
        let statuses = [
            "active",
            "past_due",
            "suspended",
            "canceled",
            "provisioning",
            "trialing",
            "blocked",
            "grace_period",
        ];
        let bindings: Vec<Arc<Binding>> = (0..TENANTS)
            .map(|i| {
                let mut r = record(i, "http://127.0.0.1:9");
                r.status = statuses[i].to_owned();
                if i == 5 {
                    r.identity_org_id = None;
                }
                let [own, foreign, base] = claimed_under_base();
                match i {
                    0 => r.domains.push(own),
                    1 => r.domains.extend([foreign, base]),
                    _ => {}
                }
                Arc::new(Binding::from_record(&r).expect("fixture"))
            })
            .collect();
        let mut tenancy = nexus_config::embedded_default().tenancy;
        tenancy.base_domains = vec![BASE.to_owned()];
        let mut tokens: Vec<String> = (0..TENANTS)
            .map(|i| key.sign(&claims(i, i as u64)).expect("sign"))
            .collect();
        let mut cross = claims(1, 99);
        cross["org_id"] = serde_json::json!(format!("org-{:07}", 2));
        tokens.push(key.sign(&cross).expect("sign"));
        let mut anonymous = claims(0, 100);
        anonymous
            .as_object_mut()
            .expect("object")
            .remove("tenant_id");
        tokens.push(key.sign(&anonymous).expect("sign"));
        World {
            tenancy,
            table: BindingTable::from_bindings(bindings).0,
            auth,
            tokens,
            now: now(),
        }
    })
}

/// The host a request addressed, normalised by rules written independently of the router's:
/// ASCII lowercase, a `:digits` port and one trailing dot dropped.
pub fn reference_host(raw: &[u8]) -> Option<String> {
    let mut h = std::str::from_utf8(raw)
        .ok()?
        .trim_matches([' ', '\t'])
        .to_ascii_lowercase();
    if let Some(colon) = h.rfind(':') {
        if h[colon + 1..].bytes().all(|b| b.is_ascii_digit()) {
            h.truncate(colon);
        }
    }
    if h.ends_with('.') {
        h.pop();
    }
    Some(h)
}

/// `t0000003.nexus.bench` for tenant 3.
pub fn tenant_host(i: usize) -> String {
    format!("{}.{BASE}", tenant(i))
}
