//! Whether a request was sent from another tenant's page.
//!
//! Every tenant is served under the same base domain, so to a browser `globex.<base>` and
//! `acme.<base>` are the same site: `SameSite` cookies, the usual defence against cross-site
//! request forgery, are sent on requests from one to the other. A page of `globex` (whose
//! instance serves whatever its owner likes) could post forms to `acme`, open a WebSocket to
//! it (which no CORS rule covers) or read its API where the app reflects origins, all as the
//! acme user who visits it, by that user's `acme` session cookie. The router refuses a
//! request whose only credential is a cookie when its `Origin` (which browsers send on every
//! request but simple reads and navigations, and on every WebSocket handshake) names another
//! tenant's host: another tenant's subdomain or a name under it, another tenant's custom
//! domain, or any other name under a base domain but the operator's own base domains and the
//! origins `[tenancy] trusted_origins` lists (unless a binding has come to name one: a tenant
//! bound at its label serves it); or is `null` on a request the browser does not
//! call its page's own (see [`is_other_tenants`]). Credentials a page cannot attach by itself
//! (`Authorization`, a token header or subprotocol) are its script's own to send; origins
//! outside every base domain are cross-site, where `SameSite` cookies do their work.

use nexus_binding_store::BindingTable;
use nexus_config::TenancySettings;

use crate::host::{resolve_host, HostTarget};

/// Whether the `Origin` value `origin` names a page of another tenant than `tenant` (see the
/// module docs). A malformed origin or one outside every base domain and binding is no
/// tenant's page. `null` counts as one unless the browser says the request is its page's
/// own (`own_site`: `Sec-Fetch-Site: same-origin` or `none`). A browser sends `null` for a
/// request redirected across origins, and a globex form posting to a name of its own outside
/// the base (its custom domain) that redirects to acme arrives so, `Sec-Fetch-Site:
/// cross-site`, with acme's cookie (Chromium sends `SameSite` cookies by the page that began
/// the chain, not by its hops); over plain `http` it sends no `Sec-Fetch-Site` at all. A
/// page's own requests send its origin, or `null` with `same-origin` under `Referrer-Policy:
/// no-referrer`.
pub fn is_other_tenants(
    origin: &[u8],
    own_site: bool,
    tenant: &str,
    tenancy: &TenancySettings,
    table: &BindingTable,
) -> bool {
    let Ok(origin) = std::str::from_utf8(origin.trim_ascii()) else {
        return false;
    };
    if origin == "null" {
        return !own_site;
    }
    let trusted = tenancy
        .trusted_origins
        .iter()
        .any(|t| t.eq_ignore_ascii_case(origin));
    // A trusted origin is the operator's page, unless a binding has come to name it: then a
    // tenant's instance serves it.
    with_owner(origin, tenancy, table, |owner, bound| {
        owner != tenant && (!trusted || bound)
    })
    .unwrap_or(false)
}

/// Whether the origin `origin` (not `null`: an `Origin` value as sent, trimmed) names a page
/// of `tenant` (`Some(true)`: its subdomain or a name under it, or one of its custom domains)
/// or of another tenant (`Some(false)`: another tenant's subdomain or a name under it, also of
/// one nobody is bound to yet, or another binding's custom domain). `None`: no tenant's page
/// (a base domain itself, a name outside every base domain and binding, a malformed origin).
pub fn tenant_page(
    origin: &str,
    tenant: &str,
    tenancy: &TenancySettings,
    table: &BindingTable,
) -> Option<bool> {
    with_owner(origin, tenancy, table, |owner, _| owner == tenant)
}

/// Whether `origin` names a page of a tenant other than `tenant` that a binding names now
/// (its subdomain's tenant is bound, or a binding claims the name): whoever listed the origin
/// as the operator's, that tenant's instance serves it.
pub fn is_bound_page_of_another(
    origin: &str,
    tenant: &str,
    tenancy: &TenancySettings,
    table: &BindingTable,
) -> bool {
    with_owner(origin, tenancy, table, |owner, bound| {
        bound && owner != tenant
    }) == Some(true)
}

/// The tenant whose page `origin` names when a binding names it now (see
/// [`is_bound_page_of_another`]), for `nexus-edge check`.
pub fn bound_owner(
    origin: &str,
    tenancy: &TenancySettings,
    table: &BindingTable,
) -> Option<String> {
    with_owner(origin, tenancy, table, |owner, bound| {
        bound.then(|| owner.to_owned())
    })
    .flatten()
}

/// `f(owner, bound)` for the tenant whose page `origin` names (see [`tenant_page`]): `bound`
/// when a binding names it now. `None` for no tenant's page.
fn with_owner<R>(
    origin: &str,
    tenancy: &TenancySettings,
    table: &BindingTable,
    f: impl FnOnce(&str, bool) -> R,
) -> Option<R> {
    let authority =
        scheme_stripped(origin, "https://").or_else(|| scheme_stripped(origin, "http://"));
    let authority = authority.filter(|a| !a.contains(['/', '?', '#']))?;
    match resolve_host(authority, &tenancy.base_domains) {
        Ok(HostTarget::Subdomain(label) | HostTarget::UnderTenant { tenant: label, .. }) => {
            let bound = table.get(label.as_str()).is_some();
            Some(f(label.as_str(), bound))
        }
        Ok(HostTarget::CustomDomain(domain)) => table
            .tenant_for_domain(&domain)
            .map(|owner| f(owner.as_str(), true)),
        Ok(HostTarget::Reserved) | Err(_) => None,
    }
}

/// `origin` after `scheme`, in any case.
pub(crate) fn scheme_stripped<'a>(origin: &'a str, scheme: &str) -> Option<&'a str> {
    origin
        .get(..scheme.len())
        .filter(|s| s.eq_ignore_ascii_case(scheme))
        .map(|_| &origin[scheme.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_tenants_pages_are_found_and_no_others() {
        let mut tenancy = nexus_config::embedded_default().tenancy;
        tenancy.base_domains = vec!["nexus.test".to_owned()];
        tenancy.trusted_origins = vec!["https://console.nexus.test".to_owned()];
        use crate::test_support::tenant_binding;
        let (table, refused) = BindingTable::from_bindings([
            std::sync::Arc::new(tenant_binding(
                "acme",
                "http://127.0.0.1:1",
                None,
                &["acme.example"],
            )),
            std::sync::Arc::new(tenant_binding(
                "globex",
                "http://127.0.0.1:1",
                None,
                &["globex.example"],
            )),
        ]);
        assert!(refused.is_empty());
        let tenant = "acme";
        for (origin, other) in [
            ("https://globex.nexus.test", true),
            ("http://GLOBEX.nexus.test:8443", true),
            ("https://app.globex.nexus.test", true),
            ("https://globex.example", true),
            // A tenant nobody is bound to yet is still not this one.
            ("https://unbound.nexus.test", true),
            (&format!("https://{tenant}.nexus.test"), false),
            (&format!("https://x.{tenant}.nexus.test"), false),
            ("https://acme.example", false),
            ("https://nexus.test", false),
            ("https://console.nexus.test", false),
            ("https://elsewhere.example", false),
            ("https://globex.nexus.test/", false),
            ("ftp://globex.nexus.test", false),
            ("https://10.0.0.1", false),
            ("", false),
        ] {
            assert_eq!(
                is_other_tenants(origin.as_bytes(), true, tenant, &tenancy, &table),
                other,
                "{origin}"
            );
        }
        // `null`: a request redirected across origins, unless the browser calls it the page's
        // own (`same-origin` under `Referrer-Policy: no-referrer`).
        assert!(is_other_tenants(b"null", false, tenant, &tenancy, &table));
        assert!(!is_other_tenants(b"null", true, tenant, &tenancy, &table));
        assert!(is_other_tenants(
            b"https://globex.nexus.test",
            true,
            tenant,
            &tenancy,
            &table
        ));
    }
}
