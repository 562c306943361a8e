//! Whether an open tunnel (a WebSocket, after its `101`) may go on carrying bytes.
//!
//! A tunnel is one request that lasts: decided once, when it was opened, it would otherwise
//! keep reaching the instance it was opened to after the tenant was rebound elsewhere,
//! suspended, canceled or unbound, for as long as either side keeps talking. So each piece of a
//! tunnel, either way, is checked against the binding the router serves now; the tunnel is
//! closed at the first piece its tenant's current binding would not route there, or, when it
//! was opened on a custom domain or a name under its tenant's subdomain, once that name names
//! another tenant or none.
//!
//! The token it was opened with is held to what a request's is: the tunnel is closed at its
//! first piece after the token expires (`exp` and the leeway), and after a key-set change the
//! token is verified again under the new keys, so a key taken out of the set ends the tunnels
//! its tokens opened as it ends their requests.

use std::sync::Arc;

use nexus_binding_store::BindingTable;
use nexus_config::TenancySettings;

use crate::auth::{Authenticator, TokenError, VerifiedToken};
use crate::authz::check_claims;
use crate::decision::{Decision, UpstreamKind};
use crate::path::has_prefix;
use crate::policy::{status_decision, StatusDecision};

/// Why a tunnel may not go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TunnelEnd {
    /// The tenant has no binding any more.
    #[error("the tenant is no longer bound")]
    Unbound,
    /// The tenant's binding routes the tunnel's path to another instance URL.
    #[error("the tenant was rebound to another instance")]
    Rebound,
    /// The tenant's status no longer lets the tunnel's path through.
    #[error("the tenant's status no longer serves this path")]
    NotServed,
    /// The tunnel's verified token no longer matches the binding (its org changed).
    #[error("the token no longer matches the tenant's binding")]
    ClaimsNoLonger,
    /// The domain the tunnel was opened on names another tenant now, or none.
    #[error("the tunnel's domain no longer names its tenant")]
    DomainMoved,
    /// The token the tunnel was opened with would be refused now: it expired, or the current
    /// key set no longer verifies it.
    #[error("the tunnel's token is no longer accepted ({0})")]
    TokenRefused(TokenError),
}

impl TunnelEnd {
    /// The `tunnels_closed_total` label of a tunnel the router closed for this reason.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Unbound => "unbound",
            Self::Rebound => "rebound",
            Self::NotServed => "not_served",
            Self::ClaimsNoLonger => "claims_changed",
            Self::DomainMoved => "domain_moved",
            Self::TokenRefused(_) => "token_refused",
        }
    }
}

/// How a tunnel ended, as `tunnels_closed_total` counts it: closed by the router for a
/// [`TunnelEnd`], or otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelClose {
    /// The router closed it: it would no longer be routed as opened.
    Router(TunnelEnd),
    /// A side closed it (an end of stream, either way).
    Ended,
    /// Silent for `[upstream] tunnel_idle_timeout`.
    IdleTimeout,
    /// The client's connection failed (a reset, an error).
    ClientError,
    /// The instance's connection failed.
    InstanceError,
}

impl TunnelClose {
    /// Every label, so that each series exists from the start at 0.
    pub const LABELS: [&'static str; 10] = [
        "ended",
        "idle_timeout",
        "client_error",
        "instance_error",
        "unbound",
        "rebound",
        "not_served",
        "claims_changed",
        "domain_moved",
        "token_refused",
    ];

    /// The `tunnels_closed_total` label (one of [`Self::LABELS`]).
    pub const fn label(self) -> &'static str {
        match self {
            Self::Router(end) => end.label(),
            Self::Ended => "ended",
            Self::IdleTimeout => "idle_timeout",
            Self::ClientError => "client_error",
            Self::InstanceError => "instance_error",
        }
    }
}

/// Checks the token a tunnel was opened with at `now_unix`: within its time claims, not
/// revoked, and, when the key set in use is no longer the one it was last verified under
/// (`verified_under`), verified again under the current keys (then `verified_under` moves
/// on). `token` gives the token again, read from the request that opened the tunnel; it is
/// asked for only then.
pub fn token_still_accepted<'a>(
    identity: &VerifiedToken,
    auth: &Authenticator,
    verified_under: &mut u64,
    now_unix: u64,
    token: impl FnOnce() -> Option<&'a str>,
) -> Result<(), TunnelEnd> {
    auth.check_time(identity, now_unix)
        .map_err(TunnelEnd::TokenRefused)?;
    // A revocation reaches tunnels at their next piece, as a key taken out of the set does.
    auth.check_revoked(identity, now_unix)
        .map_err(TunnelEnd::TokenRefused)?;
    // Read before verifying: keys that change meanwhile are caught at the next piece.
    let generation = auth.key_generation();
    if generation != *verified_under {
        // The request that opened the tunnel carried the token: it cannot be missing now.
        let token = token().ok_or(TunnelEnd::TokenRefused(TokenError::Malformed(
            "the tunnel's token is gone from its request",
        )))?;
        auth.verify(token, now_unix)
            .map_err(TunnelEnd::TokenRefused)?;
        *verified_under = generation;
    }
    Ok(())
}

/// Checks `decision` (the tunnel's) against the binding `table` holds for its tenant now.
pub fn still_routed(
    decision: &Decision,
    table: &BindingTable,
    tenancy: &TenancySettings,
) -> Result<(), TunnelEnd> {
    let tenant = decision.binding.tenant_id.as_str();
    let now = table.get(tenant).ok_or(TunnelEnd::Unbound)?;
    // Checked before the binding itself: a request on the domain now would be another
    // tenant's (or refused), and so is the tunnel opened on it.
    if let Some(domain) = &decision.domain {
        if table.tenant_for_domain(domain).map(|t| t.as_str()) != Some(tenant) {
            return Err(TunnelEnd::DomainMoved);
        }
    }
    if Arc::ptr_eq(now, &decision.binding) {
        // The usual case: the binding the tunnel was opened with.
        return Ok(());
    }
    let upstream = if now.api_url.is_some() && has_prefix(&decision.path, &tenancy.api_prefix) {
        UpstreamKind::Api
    } else {
        UpstreamKind::App
    };
    if upstream.url_of(now) != decision.upstream_url() {
        return Err(TunnelEnd::Rebound);
    }
    if !matches!(
        status_decision(now.status, &decision.path, &tenancy.recovery_paths),
        StatusDecision::Serve { .. }
    ) || crate::path::may_reach_prefix(
        &decision.path,
        crate::policy::refused_paths(now.mode, &tenancy.refused_paths),
    ) {
        return Err(TunnelEnd::NotServed);
    }
    if let Some(identity) = &decision.identity {
        check_claims(identity.tenant.as_deref(), identity.org.as_deref(), now)
            .map_err(|_| TunnelEnd::ClaimsNoLonger)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_binding_store::{Binding, TenantStatus};

    fn decision(binding: &Arc<Binding>, path: &str) -> Decision {
        Decision {
            binding: Arc::clone(binding),
            upstream: UpstreamKind::App,
            path: path.to_owned(),
            query: None,
            identity: Some(crate::test_support::identity("acme", Some("org-1"), None)),
            notice: None,
            domain: None,
        }
    }

    fn table(binding: Option<Binding>) -> BindingTable {
        let (table, errors) = BindingTable::from_bindings(binding.map(Arc::new));
        assert!(errors.is_empty(), "{errors:?}");
        table
    }

    #[test]
    fn every_way_a_tunnel_ends_has_a_listed_label() {
        let ends = [
            TunnelClose::Ended,
            TunnelClose::IdleTimeout,
            TunnelClose::ClientError,
            TunnelClose::InstanceError,
            TunnelClose::Router(TunnelEnd::Unbound),
            TunnelClose::Router(TunnelEnd::Rebound),
            TunnelClose::Router(TunnelEnd::NotServed),
            TunnelClose::Router(TunnelEnd::ClaimsNoLonger),
            TunnelClose::Router(TunnelEnd::DomainMoved),
            TunnelClose::Router(TunnelEnd::TokenRefused(TokenError::Expired)),
        ];
        let labels: Vec<_> = ends.iter().map(|e| e.label()).collect();
        assert_eq!(labels, TunnelClose::LABELS);
    }

    #[test]
    fn a_tunnel_goes_on_while_its_tenant_is_routed_there() {
        let tenancy = nexus_config::embedded_default().tenancy;
        let opened = Arc::new(crate::test_support::binding(
            "http://10.0.0.1",
            Some("org-1"),
        ));
        let (same, _) = BindingTable::from_bindings([Arc::clone(&opened)]);
        let d = decision(&opened, "/ws");
        assert_eq!(still_routed(&d, &same, &tenancy), Ok(()));
        // A change that does not touch the route (another region, a new revision).
        let mut other = crate::test_support::binding("http://10.0.0.1", Some("org-1"));
        other.revision = nexus_binding_store::Revision(9);
        assert_eq!(still_routed(&d, &table(Some(other)), &tenancy), Ok(()));

        let cases: [(Option<Binding>, &str, TunnelEnd); 4] = [
            (None, "/ws", TunnelEnd::Unbound),
            (
                Some(crate::test_support::binding(
                    "http://10.0.0.2",
                    Some("org-1"),
                )),
                "/ws",
                TunnelEnd::Rebound,
            ),
            (
                Some(Binding {
                    status: TenantStatus::Suspended,
                    ..crate::test_support::binding("http://10.0.0.1", Some("org-1"))
                }),
                "/ws",
                TunnelEnd::NotServed,
            ),
            (
                Some(crate::test_support::binding(
                    "http://10.0.0.1",
                    Some("org-2"),
                )),
                "/ws",
                TunnelEnd::ClaimsNoLonger,
            ),
        ];
        for (now, path, want) in cases {
            let d = decision(&opened, path);
            assert_eq!(
                still_routed(&d, &table(now), &tenancy),
                Err(want),
                "{want:?}"
            );
        }
        // A suspended tenant's recovery paths still serve.
        let suspended = Binding {
            status: TenantStatus::Suspended,
            ..crate::test_support::binding("http://10.0.0.1", Some("org-1"))
        };
        let d = decision(&opened, "/billing/live");
        assert_eq!(still_routed(&d, &table(Some(suspended)), &tenancy), Ok(()));
    }

    #[test]
    fn a_tunnel_ends_once_its_tenants_mode_refuses_its_path() {
        let mut tenancy = nexus_config::embedded_default().tenancy;
        tenancy.refused_paths.isolated = vec!["/api/live/".to_owned()];
        let opened = Arc::new(crate::test_support::binding(
            "http://10.0.0.1",
            Some("org-1"),
        ));
        let isolated = Binding {
            mode: nexus_binding_store::Mode::Isolated,
            ..crate::test_support::binding("http://10.0.0.1", Some("org-1"))
        };
        let d = decision(&opened, "/API/live/feed");
        assert_eq!(
            still_routed(&d, &table(Some(isolated.clone())), &tenancy),
            Err(TunnelEnd::NotServed)
        );
        let d = decision(&opened, "/ws");
        assert_eq!(still_routed(&d, &table(Some(isolated)), &tenancy), Ok(()));
    }

    #[test]
    fn a_tunnel_opened_on_a_domain_ends_once_the_domain_names_another_tenant_or_none() {
        use crate::test_support::tenant_binding;
        let tenancy = nexus_config::embedded_default().tenancy;
        let url = "http://10.0.0.1";
        let acme = |domains: &[&str]| Arc::new(tenant_binding("acme", url, Some("org-1"), domains));
        let globex = |domains: &[&str]| Arc::new(tenant_binding("globex", url, None, domains));
        let opened = acme(&["app.acme.example", "www.acme.example"]);
        let d = Decision {
            domain: Some("app.acme.example".into()),
            ..decision(&opened, "/ws")
        };
        let check = |bindings: Vec<Arc<Binding>>| {
            let (table, errors) = BindingTable::from_bindings(bindings);
            assert!(errors.is_empty(), "{errors:?}");
            still_routed(&d, &table, &tenancy)
        };
        assert_eq!(check(vec![Arc::clone(&opened)]), Ok(()));
        // Another of its domains goes: the tunnel's stays.
        assert_eq!(check(vec![acme(&["app.acme.example"])]), Ok(()));
        // The domain moves to globex, or leaves every tenant.
        assert_eq!(
            check(vec![acme(&[]), globex(&["app.acme.example"])]),
            Err(TunnelEnd::DomainMoved)
        );
        assert_eq!(check(vec![acme(&[])]), Err(TunnelEnd::DomainMoved));
        // A tunnel opened on the tenant's own subdomain has no domain to lose.
        let by_subdomain = decision(&opened, "/ws");
        let (table, _) = BindingTable::from_bindings([acme(&[])]);
        assert_eq!(still_routed(&by_subdomain, &table, &tenancy), Ok(()));
    }

    #[test]
    fn a_tunnel_token_is_refused_once_expired_or_once_the_keys_no_longer_verify_it() {
        use crate::auth::mint::SigningKey;
        use serde_json::json;
        let key = SigningKey::generate_es256("k1").expect("key");
        let other = SigningKey::generate_es256("k2").expect("key");
        let dir = tempfile::tempdir().expect("dir");
        let jwks = dir.path().join("jwks.json");
        let keep = |keys: &[&SigningKey]| {
            let keys: Vec<_> = keys.iter().map(|k| k.public_jwk()).collect();
            std::fs::write(&jwks, json!({ "keys": keys }).to_string()).expect("write");
        };
        keep(&[&key, &other]);
        let auth = Authenticator::new(&nexus_config::AuthSettings {
            jwks: nexus_config::JwksSource::File(jwks.clone()),
            issuers: vec!["https://id.test".into()],
            issuer_keys: None,
            audiences: vec!["nexus".into()],
            leeway: std::time::Duration::from_secs(30),
            ..nexus_config::embedded_default().auth
        })
        .expect("auth");
        let now = 1_800_000_000;
        let token = key
            .sign(
                &json!({ "iss": "https://id.test", "aud": "nexus", "sub": "u1",
                "exp": now + 60, "tenant_id": "acme" }),
            )
            .expect("sign");
        let identity = auth.verify(&token, now).expect("valid");
        let mut under = auth.key_generation();
        let asked = std::cell::Cell::new(0);
        let mut check = |at: u64| {
            token_still_accepted(&identity, &auth, &mut under, at, || {
                asked.set(asked.get() + 1);
                Some(token.as_str())
            })
        };

        // Within its time, under the keys it was verified with: the token is not read again.
        assert_eq!(check(now + 89), Ok(()));
        assert_eq!(asked.get(), 0);
        // Past `exp` and the leeway.
        assert_eq!(
            check(now + 90),
            Err(TunnelEnd::TokenRefused(TokenError::Expired))
        );
        // Another key taken out: verified again once, and still accepted.
        keep(&[&key]);
        assert!(auth.reload_keys().expect("reloaded"));
        assert_eq!(check(now + 1), Ok(()));
        assert_eq!(check(now + 2), Ok(()));
        assert_eq!(asked.get(), 1);
        // Its own key taken out: refused, as a request with it is.
        keep(&[&other]);
        assert!(auth.reload_keys().expect("reloaded"));
        assert_eq!(
            check(now + 3),
            Err(TunnelEnd::TokenRefused(TokenError::UnknownKey))
        );
        assert_eq!(asked.get(), 2);
    }

    /// A revocation made while a tunnel is open ends it at its next piece, without the
    /// token being read again (the keys did not change).
    #[test]
    fn a_tunnel_token_is_refused_once_revoked() {
        use crate::auth::mint::SigningKey;
        use nexus_binding_store::revocations::{Revocation, RevocationList, Revocations, Revoked};
        use serde_json::json;
        let key = SigningKey::generate_es256("k1").expect("key");
        let dir = tempfile::tempdir().expect("dir");
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, json!({ "keys": [key.public_jwk()] }).to_string()).expect("write");
        let revocations = Revocations::followed();
        let auth = Authenticator::new(&nexus_config::AuthSettings {
            jwks: nexus_config::JwksSource::File(jwks),
            issuers: vec!["https://id.test".into()],
            issuer_keys: None,
            audiences: vec!["nexus".into()],
            ..nexus_config::embedded_default().auth
        })
        .expect("auth")
        .with_revocations(revocations.clone());
        let now = 1_800_000_000;
        let token = key
            .sign(
                &json!({ "iss": "https://id.test", "aud": "nexus", "sub": "u1",
                "iat": now, "exp": now + 60, "tenant_id": "acme" }),
            )
            .expect("sign");
        let identity = auth.verify(&token, now).expect("valid");
        let mut under = auth.key_generation();
        let mut check = || token_still_accepted(&identity, &auth, &mut under, now + 1, || None);
        assert_eq!(check(), Ok(()));
        revocations.install(RevocationList::new([Revocation {
            what: Revoked::Subject {
                tenant: nexus_binding_store::TenantId::parse("acme").expect("id"),
                sub: "u1".into(),
                issued_before: now + 1,
            },
            until: now + 60,
            at: None,
            actor: None,
            reason: None,
        }]));
        assert_eq!(check(), Err(TunnelEnd::TokenRefused(TokenError::Revoked)));
    }
}
