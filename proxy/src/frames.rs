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
//! still apply beside it (a browser enforces every policy it is sent). A response whose
//! instance keeps it to its own origin by `X-Frame-Options` alone gets none: beside a
//! `frame-ancestors` the browser would ignore that header ([`instance_denies`]).

use http::HeaderValue;
use nexus_binding_store::Binding;
use nexus_config::TenancySettings;

/// `frame-ancestors` naming the pages of `binding`'s tenant (`'self'`, its subdomain and the
/// names under it on every base domain, its custom domains) and `[tenancy] trusted_origins`.
/// Hosts without a scheme match the framed page's own scheme (and `https` for an `http`
/// page); every port (`:*`), as the router may be reached on any. A subdomain that is a base
/// domain itself is the operator's, and names under one with a base domain under it are other
/// tenants' too (nested bases): those are left out.
pub fn policy(binding: &Binding, tenancy: &TenancySettings) -> HeaderValue {
    let tenant = binding.tenant_id.as_str();
    let bases = &tenancy.base_domains;
    let mut value = String::from("frame-ancestors 'self'");
    for base in bases {
        let own = format!("{tenant}.{base}");
        if bases.contains(&own) {
            continue;
        }
        value.push_str(&format!(" {own}:*"));
        let nested = bases.iter().any(|b| {
            b.strip_suffix(own.as_str())
                .is_some_and(|head| head.ends_with('.'))
        });
        if !nested {
            value.push_str(&format!(" *.{own}:*"));
        }
    }
    for domain in &binding.domains {
        value.push_str(&format!(" {domain}:*"));
    }
    for origin in &tenancy.trusted_origins {
        value.push(' ');
        value.push_str(origin);
    }
    // Tenant ids, domains and origins are checked names: never an invalid value.
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("frame-ancestors 'self'"))
}

/// Whether the instance's own header already keeps the response from being framed by any
/// page but its own origin (`X-Frame-Options: DENY` or `SAMEORIGIN`) and sets no
/// `frame-ancestors` of its own: a browser ignores `X-Frame-Options` once a response carries
/// `frame-ancestors`, so the router's would widen it (to the tenant's other names and the
/// operator's pages). Where the instance sends its own `frame-ancestors`, `X-Frame-Options`
/// is ignored anyway and the router's narrows the instance's.
pub fn instance_denies(headers: &http::HeaderMap) -> bool {
    let xfo = headers.get_all("x-frame-options");
    let mut values = xfo.iter().peekable();
    values.peek().is_some()
        && values.all(|v| {
            let v = v.as_bytes().trim_ascii();
            v.eq_ignore_ascii_case(b"deny") || v.eq_ignore_ascii_case(b"sameorigin")
        })
        && !headers.get_all("content-security-policy").iter().any(|v| {
            v.as_bytes()
                .windows(b"frame-ancestors".len())
                .any(|w| w.eq_ignore_ascii_case(b"frame-ancestors"))
        })
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
            "frame-ancestors 'self' acme.nexus.test:* *.acme.nexus.test:* acme.eu.nexus.test:* \
             *.acme.eu.nexus.test:* acme.example:* https://console.nexus.test"
        );
        let globex = tenant_binding("globex", "http://127.0.0.1:1", None, &[]);
        tenancy.trusted_origins.clear();
        tenancy.base_domains.truncate(1);
        assert_eq!(
            policy(&globex, &tenancy),
            "frame-ancestors 'self' globex.nexus.test:* *.globex.nexus.test:*"
        );
    }

    #[test]
    fn nested_base_domains_are_no_tenants_pages() {
        // `eu.nexus.test` is a base: `eu` on `nexus.test` has no page there, and every name
        // under it is another tenant's (`globex.eu.nexus.test`).
        let mut tenancy = nexus_config::embedded_default().tenancy;
        tenancy.base_domains = vec!["nexus.test".to_owned(), "eu.nexus.test".to_owned()];
        tenancy.trusted_origins.clear();
        let eu = tenant_binding("eu", "http://127.0.0.1:1", None, &[]);
        assert_eq!(
            policy(&eu, &tenancy),
            "frame-ancestors 'self' eu.eu.nexus.test:* *.eu.eu.nexus.test:*"
        );
        // A base under a tenant's subdomain: the subdomain is the tenant's, names under it
        // not all.
        tenancy.base_domains = vec!["nexus.test".to_owned(), "x.acme.nexus.test".to_owned()];
        let acme = tenant_binding("acme", "http://127.0.0.1:1", None, &[]);
        assert_eq!(
            policy(&acme, &tenancy),
            "frame-ancestors 'self' acme.nexus.test:* acme.x.acme.nexus.test:* \
             *.acme.x.acme.nexus.test:*"
        );
    }

    #[test]
    fn an_instances_own_x_frame_options_is_kept() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (n, v) in pairs {
                h.append(*n, HeaderValue::from_static(v));
            }
            h
        };
        assert!(instance_denies(&headers(&[("x-frame-options", "DENY")])));
        assert!(instance_denies(&headers(&[(
            "x-frame-options",
            " sameorigin "
        )])));
        assert!(!instance_denies(&headers(&[])));
        assert!(!instance_denies(&headers(&[(
            "x-frame-options",
            "ALLOW-FROM https://a.example"
        )])));
        assert!(!instance_denies(&headers(&[
            ("x-frame-options", "DENY"),
            ("x-frame-options", "bogus")
        ])));
        // Its own frame-ancestors rules instead (the header is then ignored): ours narrows it.
        assert!(!instance_denies(&headers(&[
            ("x-frame-options", "DENY"),
            (
                "content-security-policy",
                "default-src 'self'; Frame-Ancestors *"
            )
        ])));
        assert!(instance_denies(&headers(&[
            ("x-frame-options", "DENY"),
            ("content-security-policy", "default-src 'self'")
        ])));
    }
}
