//! Whether an open tunnel (a WebSocket, after its `101`) may go on carrying bytes.
//!
//! A tunnel is one request that lasts: decided once, when it was opened, it would otherwise
//! keep reaching the instance it was opened to after the tenant was rebound elsewhere,
//! suspended, canceled or unbound, for as long as either side keeps talking. So each piece of a
//! tunnel, either way, is checked against the binding the router serves now; the tunnel is
//! closed at the first piece its tenant's current binding would not route there, or, when it
//! was opened on a custom domain or a name under its tenant's subdomain, once that name names
//! another tenant or none.

use std::sync::Arc;

use nexus_binding_store::BindingTable;
use nexus_config::TenancySettings;

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
}
