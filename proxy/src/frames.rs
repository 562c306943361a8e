//! Which pages may show a tenant's pages in a frame (`[tenancy] frame_ancestors`).
//!
//! Every tenant is served under the same base domain, one site to a browser: a page of
//! `globex` may frame a page of `acme`, and the browser sends acme's `SameSite` cookies (`Lax`,
//! even `Strict`) with the frame's requests, as it would not from another site. A frame's
//! navigation carries no `Origin`, so the cross-tenant origin check ([`crate::origin`]) does
//! not see it, and what the user then clicks in the frame is acme's own request from acme's
//! own page. Nor can any rule on requests stop it: once framed, the page's own navigations
//! are same-origin. The browser's defence is the framed page's answer,
//! `Content-Security-Policy: frame-ancestors`, checked against every ancestor. With
//! `frame_ancestors = "tenant"` the router adds one to every response it forwards, naming
//! the tenant's own pages and the operator's trusted origins; an instance's own policies
//! still apply beside it (a browser enforces every policy it is sent).

use http::HeaderValue;
use nexus_binding_store::Binding;
use nexus_config::TenancySettings;

/// `frame-ancestors` naming the pages of `binding`'s tenant (`'self'`, its subdomain and the
/// names under it on every base domain, its custom domains) and `[tenancy] trusted_origins`.
/// Hosts without a scheme match the framed page's own scheme (and `https` for an `http`
/// page).
pub fn policy(binding: &Binding, tenancy: &TenancySettings) -> HeaderValue {
    let tenant = binding.tenant_id.as_str();
    let mut value = String::from("frame-ancestors 'self'");
    for base in &tenancy.base_domains {
        value.push_str(&format!(" {tenant}.{base} *.{tenant}.{base}"));
    }
    for domain in &binding.domains {
        value.push(' ');
        value.push_str(domain.as_str());
    }
    for origin in &tenancy.trusted_origins {
        value.push(' ');
        value.push_str(origin);
    }
    // Tenant ids, domains and origins are checked names: never an invalid value.
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("frame-ancestors 'self'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::tenant_binding;

    #[test]
    fn names_the_tenants_own_pages_and_the_operators() {
        let mut tenancy = nexus_config::embedded_default().tenancy;
        tenancy.base_domains = vec!["nexus.test".to_owned(), "eu.nexus.test".to_owned()];
        tenancy.trusted_origins = vec!["https://console.nexus.test".to_owned()];
        let acme = tenant_binding("acme", "http://127.0.0.1:1", None, &["acme.example"]);
        assert_eq!(
            policy(&acme, &tenancy),
            "frame-ancestors 'self' acme.nexus.test *.acme.nexus.test acme.eu.nexus.test \
             *.acme.eu.nexus.test acme.example https://console.nexus.test"
        );
        let globex = tenant_binding("globex", "http://127.0.0.1:1", None, &[]);
        tenancy.trusted_origins.clear();
        tenancy.base_domains.truncate(1);
        assert_eq!(
            policy(&globex, &tenancy),
            "frame-ancestors 'self' globex.nexus.test *.globex.nexus.test"
        );
    }
}
