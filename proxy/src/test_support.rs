//! Fixtures shared by the unit tests of several modules.

use nexus_binding_store::{Binding, BindingRecord};

/// An active binding of tenant `acme` at `instance_url`, with `org` as its identity org.
pub(crate) fn binding(instance_url: &str, org: Option<&str>) -> Binding {
    tenant_binding("acme", instance_url, org, &[])
}

/// An active binding of `tenant` at `instance_url`, with `org` and custom `domains`.
pub(crate) fn tenant_binding(
    tenant: &str,
    instance_url: &str,
    org: Option<&str>,
    domains: &[&str],
) -> Binding {
    let record = BindingRecord {
        tenant_id: tenant.into(),
        subscription_id: "s".into(),
        instance_id: "i".into(),
        instance_url: instance_url.into(),
        api_url: None,
        identity_org_id: org.map(str::to_owned),
        status: "active".into(),
        plan: "team".into(),
        region: "r".into(),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        revision: 1,
        updated_at: None,
        mode: None,
    };
    #[allow(clippy::expect_used)] // a fixture that does not build is a broken test
    Binding::from_record(&record).expect("a valid fixture")
}

/// A verified RS256 token's identity, as `decide` hands it on.
pub(crate) fn identity(
    tenant: &str,
    org: Option<&str>,
    sub: Option<&str>,
) -> std::sync::Arc<crate::auth::VerifiedToken> {
    std::sync::Arc::new(crate::auth::VerifiedToken::new(
        sub.map(str::to_owned),
        Some(tenant.to_owned()),
        org.map(str::to_owned),
        crate::auth::claims::TokenTimes {
            exp: u64::MAX,
            nbf: None,
            iat: None,
        },
        None,
        None,
        crate::auth::Algorithm::RS256,
    ))
}
