//! The router's own answer to browsers' cross-origin requests (`[cors]`).
//!
//! Before a script's cross-origin request that is not a simple read (one with
//! `Authorization`, a JSON body, a `PUT`), a browser asks with a preflight: an `OPTIONS`
//! with `Origin` and `Access-Control-Request-Method`, which carries no credential (Fetch
//! standard, "CORS-preflight request"). On a protected path the router could only refuse it
//! (401), so no such request ever reached an instance; and forwarding it unauthenticated would
//! break the rule that protected paths reach instances proven. With a policy configured the
//! router answers preflights itself (204, without asking any instance), and owns the CORS
//! headers of every response: an instance's `Access-Control-*` fields are removed, and the
//! router's set when the request's origin is allowed. So the router's refusals (a 401 the page
//! must read to sign in again, a 503) are readable by the pages the policy names, and one
//! tenant's instance cannot open its responses to pages the operator did not allow.
//!
//! What it does not change: the cross-tenant origin check ([`crate::origin`]) still refuses
//! a tenant's cookie sent from another tenant's page, whatever the policy; nor does it
//! refuse anything but preflights: a page the policy does not allow still sends its requests
//! (a form's post, a WebSocket handshake, which is no CORS request: its `101` gets none of
//! this), and only cannot read the answers.

// Fields are named as `&'static str`, in their usual case: Pingora keeps each name's case
// for the wire, and takes a static name as it is, where a `HeaderName` not among its dozen
// known ones is copied into a new buffer first.
use http::header::{HeaderName, HeaderValue, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use nexus_binding_store::BindingTable;
use nexus_config::{CorsOrigins, CorsSettings, TenancySettings};
use pingora::http::{RequestHeader, ResponseHeader};
use smallvec::SmallVec;

/// A configured CORS policy, its header values made once.
#[derive(Debug)]
pub struct Cors {
    origins: CorsOrigins,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
}

impl Cors {
    /// The policy `settings` describe; `None` when they describe none (the router then leaves
    /// preflights and `Access-Control-*` headers alone).
    pub fn new(settings: &CorsSettings) -> Option<Self> {
        let origins = settings.origins.clone()?;
        Some(Self {
            origins,
            allow_methods: joined(&settings.allowed_methods),
            allow_headers: joined(&settings.allowed_headers),
            expose_headers: joined(&settings.expose_headers),
            max_age: HeaderValue::from(settings.max_age.as_secs()),
        })
    }

    /// The `Access-Control-Allow-Origin` a response to a request with these `Origin` values
    /// gets, addressed to `tenant` (`None` when the request named no known tenant). Under a
    /// policy for any page, `*` for every request, whatever its origin (the answer is the same
    /// for all, so nothing varies by origin for a cache). Else the request's one origin, not
    /// `null`, when:
    /// - the policy lists it, unless a binding has come to name it as another tenant's page
    ///   (a tenant bound to its label: its instance serves it now);
    /// - or the policy allows the tenants' own pages and it is a page of `tenant`, over
    ///   `https`, or over `http` when the client reached the router so (`client_https` says
    ///   how, asked only then): a plain-`http` page could be anyone's on the client's network,
    ///   and must not read what the `https` site serves.
    pub fn allowed_origin(
        &self,
        origins: &[&[u8]],
        tenant: Option<&str>,
        client_https: impl FnOnce() -> bool,
        tenancy: &TenancySettings,
        table: &BindingTable,
    ) -> Option<HeaderValue> {
        let (listed, tenant_pages) = match &self.origins {
            CorsOrigins::Any => return Some(HeaderValue::from_static("*")),
            CorsOrigins::Listed {
                origins,
                tenant_pages,
                ..
            } => (origins, *tenant_pages),
        };
        let [origin] = origins else {
            return None;
        };
        let origin = std::str::from_utf8(origin.trim_ascii()).ok()?;
        if origin.is_empty() || origin == "null" {
            return None;
        }
        let tenant = tenant.unwrap_or_default();
        let allowed = if listed.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            !crate::origin::is_bound_page_of_another(origin, tenant, tenancy, table)
        } else {
            tenant_pages
                && !tenant.is_empty()
                && crate::origin::tenant_page(origin, tenant, tenancy, table) == Some(true)
                && (crate::origin::scheme_stripped(origin, "https://").is_some() || !client_https())
        };
        // The browser compares the value with its own origin: it gets back what it sent.
        allowed
            .then(|| HeaderValue::from_str(origin).ok())
            .flatten()
    }

    /// The answer to an allowed preflight: `204` with what the page may send and for how long
    /// the browser may keep the answer.
    pub fn preflight_answer(&self, allow_origin: &HeaderValue) -> pingora::Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(http::StatusCode::NO_CONTENT, Some(8))?;
        self.set_response_headers(&mut resp, Some(allow_origin))?;
        if let Some(methods) = &self.allow_methods {
            resp.insert_header("Access-Control-Allow-Methods", methods.clone())?;
        }
        if let Some(headers) = &self.allow_headers {
            resp.insert_header("Access-Control-Allow-Headers", headers.clone())?;
        }
        resp.insert_header("Access-Control-Max-Age", self.max_age.clone())?;
        Ok(resp)
    }

    /// Makes `resp`'s CORS headers the policy's: the instance's `Access-Control-*` fields go,
    /// and with `allow_origin` (from [`Cors::allowed_origin`]; under a policy for any page,
    /// always `*`) the router's are set. A policy that depends on the origin says so in
    /// `Vary`, so that a cache between the router and the browser does not hand one page's
    /// answer to another.
    pub fn set_response_headers(
        &self,
        resp: &mut ResponseHeader,
        allow_origin: Option<&HeaderValue>,
    ) -> pingora::Result<()> {
        remove_instance_fields(resp);
        // Any page's answer needs no decision: every response, refusals made before the
        // request's origin was read included. A listed page's depends on the origin.
        let star = HeaderValue::from_static("*");
        let (allow_origin, credentials) = match &self.origins {
            CorsOrigins::Any => (Some(&star), false),
            CorsOrigins::Listed { credentials, .. } => {
                resp.append_header("Vary", HeaderValue::from_static("Origin"))?;
                (allow_origin, *credentials)
            }
        };
        let Some(allow_origin) = allow_origin else {
            return Ok(());
        };
        resp.insert_header("Access-Control-Allow-Origin", allow_origin.clone())?;
        if credentials {
            resp.insert_header("Access-Control-Allow-Credentials", "true")?;
        }
        if let Some(expose) = &self.expose_headers {
            resp.insert_header("Access-Control-Expose-Headers", expose.clone())?;
        }
        Ok(())
    }
}

/// Whether `req` is a CORS preflight: an `OPTIONS` with an `Origin` and an
/// `Access-Control-Request-Method`.
pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == http::Method::OPTIONS
        && req.headers.contains_key(ORIGIN)
        && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// Removes every `Access-Control-*` field from an instance's response (the usual response has
/// none: one pass over its names).
fn remove_instance_fields(resp: &mut ResponseHeader) {
    let theirs: SmallVec<[HeaderName; 4]> = resp
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in theirs {
        resp.remove_header(&name);
    }
}

/// The list as one header value (`GET, POST`); `None` when empty. Config checked every item
/// as a token, so the value is valid.
fn joined(items: &[String]) -> Option<HeaderValue> {
    (!items.is_empty())
        .then(|| HeaderValue::from_str(&items.join(", ")).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::test_support::tenant_binding;

    fn tenancy_and_table() -> (TenancySettings, BindingTable) {
        let mut tenancy = nexus_config::embedded_default().tenancy;
        tenancy.base_domains = vec!["nexus.test".to_owned()];
        let (table, refused) = BindingTable::from_bindings([
            Arc::new(tenant_binding(
                "acme",
                "http://127.0.0.1:1",
                None,
                &["acme.example"],
            )),
            Arc::new(tenant_binding(
                "globex",
                "http://127.0.0.1:1",
                None,
                &["globex.example"],
            )),
        ]);
        assert!(refused.is_empty());
        (tenancy, table)
    }

    fn policy(origins: Option<CorsOrigins>) -> Option<Cors> {
        let mut settings = nexus_config::embedded_default().cors;
        settings.origins = origins;
        Cors::new(&settings)
    }

    #[test]
    fn origins_are_allowed_by_list_and_by_tenant() {
        let (tenancy, table) = tenancy_and_table();
        assert!(policy(None).is_none());
        let cors = policy(Some(CorsOrigins::Listed {
            origins: vec!["https://app.example.com".to_owned()],
            tenant_pages: true,
            credentials: true,
        }))
        .expect("a policy");
        let allowed = |origins: &[&[u8]], tenant: Option<&str>| {
            cors.allowed_origin(origins, tenant, || true, &tenancy, &table)
                .map(|v| v.to_str().expect("ascii").to_owned())
        };
        for (origin, tenant, expected) in [
            (
                "https://app.example.com",
                None,
                Some("https://app.example.com"),
            ),
            (
                "https://app.example.com",
                Some("acme"),
                Some("https://app.example.com"),
            ),
            // Sent back as sent: the browser compares it with its own.
            (
                "HTTPS://APP.example.com",
                None,
                Some("HTTPS://APP.example.com"),
            ),
            ("https://app.example.com:8443", None, None),
            ("https://app.example.com.evil.example", None, None),
            (
                "https://acme.nexus.test",
                Some("acme"),
                Some("https://acme.nexus.test"),
            ),
            (
                "https://x.acme.nexus.test",
                Some("acme"),
                Some("https://x.acme.nexus.test"),
            ),
            (
                "https://acme.example",
                Some("acme"),
                Some("https://acme.example"),
            ),
            // Not without knowing the tenant, nor another tenant's, nor nobody's.
            ("https://acme.nexus.test", None, None),
            ("https://globex.nexus.test", Some("acme"), None),
            ("https://globex.example", Some("acme"), None),
            ("https://nexus.test", Some("acme"), None),
            ("https://elsewhere.example", Some("acme"), None),
            ("null", Some("acme"), None),
            ("", Some("acme"), None),
        ] {
            assert_eq!(
                allowed(&[origin.as_bytes()], tenant).as_deref(),
                expected,
                "{origin} {tenant:?}"
            );
        }
        // Two origins: whose page is it?
        assert_eq!(
            allowed(
                &[b"https://app.example.com", b"https://app.example.com"],
                None
            ),
            None
        );
        assert_eq!(allowed(&[], None), None);

        // A tenant's page over plain `http` only when the client came so too: otherwise
        // anyone on the client's network could serve it.
        let over = |client_https: bool, origin: &str| {
            cors.allowed_origin(
                &[origin.as_bytes()],
                Some("acme"),
                || client_https,
                &tenancy,
                &table,
            )
        };
        assert_eq!(over(true, "http://acme.nexus.test"), None);
        assert_eq!(over(true, "http://acme.example"), None);
        assert!(over(false, "http://acme.nexus.test").is_some());
        assert!(over(true, "https://acme.nexus.test:8443").is_some());

        // Any page, whatever it sends, and the same answer without an origin.
        let any = policy(Some(CorsOrigins::Any)).expect("a policy");
        for origins in [
            &[b"https://globex.nexus.test".as_slice()][..],
            &[b"null"],
            &[],
            &[b"https://a.example", b"https://b.example"],
        ] {
            assert_eq!(
                any.allowed_origin(origins, Some("acme"), || true, &tenancy, &table),
                Some(HeaderValue::from_static("*"))
            );
        }
    }

    #[test]
    fn a_listed_origin_a_tenant_has_come_to_be_bound_at_is_that_tenants() {
        // The operator listed `https://app.nexus.test` (in trusted_origins too); then a tenant
        // `app` was bound: its instance serves that name now.
        let mut tenancy = nexus_config::embedded_default().tenancy;
        tenancy.base_domains = vec!["nexus.test".to_owned()];
        tenancy.trusted_origins = vec!["https://app.nexus.test".to_owned()];
        let cors = policy(Some(CorsOrigins::Listed {
            origins: vec!["https://app.nexus.test".to_owned()],
            tenant_pages: false,
            credentials: true,
        }))
        .expect("a policy");
        let binding = |t: &str| Arc::new(tenant_binding(t, "http://127.0.0.1:1", None, &[]));
        let (unbound, _) = BindingTable::from_bindings([binding("acme")]);
        let (bound, _) = BindingTable::from_bindings([binding("acme"), binding("app")]);
        let origin: &[&[u8]] = &[b"https://app.nexus.test"];
        let allowed = |table: &BindingTable| {
            cors.allowed_origin(origin, Some("acme"), || true, &tenancy, table)
        };
        assert!(allowed(&unbound).is_some());
        assert_eq!(allowed(&bound), None);
        // Its own requests are its own.
        assert!(cors
            .allowed_origin(origin, Some("app"), || true, &tenancy, &bound)
            .is_some());
        // And the cross-tenant check no longer takes it for the operator's page.
        let other = |table: &BindingTable| {
            crate::origin::is_other_tenants(origin[0], true, "acme", &tenancy, table)
        };
        assert!(!other(&unbound));
        assert!(other(&bound));
    }

    #[test]
    fn responses_carry_the_policys_headers_only() {
        let cors = policy(Some(CorsOrigins::Listed {
            origins: vec!["https://app.example.com".to_owned()],
            tenant_pages: false,
            credentials: true,
        }))
        .expect("a policy");
        let instance_response = || {
            let mut resp = ResponseHeader::build(200, None).expect("response");
            resp.insert_header("access-control-allow-origin", "https://evil.example")
                .expect("header");
            resp.insert_header("Access-Control-Allow-Credentials", "true")
                .expect("header");
            resp.insert_header("access-control-expose-headers", "x-secret")
                .expect("header");
            resp.insert_header("vary", "Accept-Encoding")
                .expect("header");
            resp.insert_header("content-type", "text/plain")
                .expect("header");
            resp
        };
        let values = |resp: &ResponseHeader, name: &str| -> Vec<String> {
            resp.headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().expect("ascii").to_owned())
                .collect()
        };
        let mut resp = instance_response();
        cors.set_response_headers(&mut resp, None).expect("headers");
        assert!(!resp
            .headers
            .keys()
            .any(|k| k.as_str().starts_with("access-control-")));
        assert_eq!(values(&resp, "vary"), ["Accept-Encoding", "Origin"]);
        assert_eq!(values(&resp, "content-type"), ["text/plain"]);

        let allow = HeaderValue::from_static("https://app.example.com");
        let mut resp = instance_response();
        cors.set_response_headers(&mut resp, Some(&allow))
            .expect("headers");
        assert_eq!(
            values(&resp, "access-control-allow-origin"),
            ["https://app.example.com"]
        );
        assert_eq!(values(&resp, "access-control-allow-credentials"), ["true"]);
        assert!(values(&resp, "access-control-expose-headers").is_empty());

        let resp = cors.preflight_answer(&allow).expect("answer");
        assert_eq!(resp.status, 204);
        assert_eq!(
            values(&resp, "access-control-allow-methods"),
            ["GET, HEAD, POST, PUT, PATCH, DELETE"]
        );
        assert_eq!(
            values(&resp, "access-control-allow-headers"),
            ["authorization, content-type"]
        );
        assert_eq!(values(&resp, "access-control-max-age"), ["600"]);
        assert_eq!(values(&resp, "vary"), ["Origin"]);

        // Any page: no credentials, nothing varies by origin.
        let any = policy(Some(CorsOrigins::Any)).expect("a policy");
        let mut resp = instance_response();
        let star = HeaderValue::from_static("*");
        any.set_response_headers(&mut resp, Some(&star))
            .expect("headers");
        assert_eq!(values(&resp, "access-control-allow-origin"), ["*"]);
        assert!(values(&resp, "access-control-allow-credentials").is_empty());
        assert_eq!(values(&resp, "vary"), ["Accept-Encoding"]);
    }

    /// Whether `origin` is a page of `acme` by a reading independent of the router's: an
    /// `http(s)` origin whose host, lowercased, without a port and one trailing dot, is
    /// `acme.nexus.test`, a name under it, or its custom domain `acme.example`.
    fn is_acme_page(origin: &str) -> bool {
        let lower = origin.to_ascii_lowercase();
        let Some(rest) = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"))
        else {
            return false;
        };
        let host = match rest.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => rest,
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        host == "acme.nexus.test" || host.ends_with(".acme.nexus.test") || host == "acme.example"
    }

    proptest::proptest! {
        // The pieces combine in about 25,000 ways; enough cases to meet the telling ones.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8192))]
        /// The tenants' own pages are allowed for their own tenant only, whatever the
        /// origin's spelling: another tenant's page, or a name that only looks like acme's,
        /// never reads acme's responses.
        #[test]
        fn only_the_addressed_tenants_pages_are_its_own(
            scheme in proptest::sample::select(vec!["https://", "http://", "HTTPS://", "ftp://", "", "https:/"]),
            label in proptest::sample::select(vec!["acme", "ACME", "globex", "x.acme", "acme-corp", "%61cme", "acme\u{0}", "ac me", "xacme", "acme.globex", ""]),
            base in proptest::sample::select(vec![".nexus.test", ".NEXUS.test", ".nexus.test.", ".example", ".nexus.test.evil", ".test", "", ".nexus.test..", "nexus.test"]),
            port in proptest::sample::select(vec!["", ":443", ":8443", ":", ":x", ":99999"]),
            tail in proptest::sample::select(vec!["", "/", "?", "#", " ", "\t", "@evil.example"]),
            junk in "\\PC{0,12}",
            use_junk in proptest::bool::weighted(0.1),
        ) {
            let (tenancy, table) = tenancy_and_table();
            let cors = policy(Some(CorsOrigins::Listed {
                origins: Vec::new(),
                tenant_pages: true,
                credentials: true,
            }))
            .expect("a policy");
            let origin = if use_junk { junk } else { format!("{scheme}{label}{base}{port}{tail}") };
            let allowed = cors.allowed_origin(&[origin.as_bytes()], Some("acme"), || true, &tenancy, &table);
            if allowed.is_some() {
                proptest::prop_assert!(is_acme_page(origin.trim_ascii()), "{origin:?}");
            }
            let for_globex = cors.allowed_origin(&[origin.as_bytes()], Some("globex"), || true, &tenancy, &table);
            proptest::prop_assert!(allowed.is_none() || for_globex.is_none(), "{origin:?}");
        }
    }

    #[test]
    fn preflights_are_options_with_origin_and_requested_method() {
        let request = |method: &str, headers: &[(&str, &str)]| {
            let mut req = RequestHeader::build(method, b"/api/items", None).expect("request");
            for (n, v) in headers {
                req.insert_header(n.to_string(), *v).expect("header");
            }
            req
        };
        let origin = ("origin", "https://app.example.com");
        let asks = ("access-control-request-method", "PUT");
        assert!(is_preflight(&request("OPTIONS", &[origin, asks])));
        assert!(!is_preflight(&request("OPTIONS", &[origin])));
        assert!(!is_preflight(&request("OPTIONS", &[asks])));
        assert!(!is_preflight(&request("GET", &[origin, asks])));
    }
}
