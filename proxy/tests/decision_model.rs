//! A reference model of the routing decision, written from the README's request-path rules,
//! its status table and the product brief alone, compared with [`decide`] table-driven and over
//! generated requests. The model is deliberately naive (string operations, no shared code with
//! the router): where it and the router disagree, one of them misreads the documents.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use nexus_binding_store::{Binding, BindingRecord, BindingTable};
use nexus_config::{AuthSettings, JwksSource, TenancySettings};
use nexus_edge::auth::mint::SigningKey;
use nexus_edge::auth::Authenticator;
use nexus_edge::decision::{decide, RequestFacts, UpstreamKind};
use proptest::prelude::*;

const BASE: &str = "nexus.app";
const EU: &str = "eu.nexus.app";

/// The configured path prefixes (`[tenancy]`).
#[derive(Clone, Copy, Debug)]
struct Prefixes {
    public: &'static [&'static str],
    recovery: &'static [&'static str],
    api: &'static str,
}

/// As in the example config.
const DEFAULT: Prefixes = Prefixes {
    public: &["/login", "/assets/"],
    recovery: &["/billing", "/admin/recovery"],
    api: "/api/",
};

/// The same prefixes, each written with the other trailing-slash convention.
const SLASHED: Prefixes = Prefixes {
    public: &["/login/", "/assets"],
    recovery: &["/billing/", "/admin/recovery/"],
    api: "/api",
};

/// Every status, with the tenant id that carries it (`acme` is `active`).
const STATUSES: [(&str, &str); 18] = [
    ("acme", "active"),
    // On the Solo plan: isolated, refused the API prefix.
    ("solo", "active"),
    ("beta", "active"),
    // A tenant named like the nested base domain's first label.
    ("eu", "active"),
    // Claims the base domains themselves.
    ("gamma", "active"),
    ("trial", "trialing"),
    ("grace", "grace_period"),
    ("late", "past_due"),
    ("susp", "suspended"),
    ("gone", "canceled"),
    ("ordered", "order_received"),
    ("paid", "payment_verified"),
    ("queued", "queued_for_provisioning"),
    ("prov", "provisioning"),
    ("valid", "validation"),
    ("waiting", "awaiting_customer_action"),
    ("blocked", "blocked"),
    ("incident", "incident"),
];

/// Custom domains: `acme` holds a domain of its own and a deeper name in its namespace; `beta`
/// claims a name under the base whose label is no tenant's.
fn domains_of(tenant: &str) -> Vec<String> {
    match tenant {
        "acme" => vec!["app.acme.example".into(), format!("api.acme.{BASE}")],
        "beta" => vec![
            format!("nobody.{BASE}"),
            format!("trial.{EU}"),
            format!("x.acme.{BASE}"),
        ],
        "gamma" => vec![BASE.into(), EU.into(), format!("acme.x{BASE}")],
        "late" => vec!["late.example".into()],
        "gone" => vec!["gone.example".into()],
        "susp" => vec!["susp.example".into()],
        _ => vec![],
    }
}

fn record(tenant: &str, status: &str) -> BindingRecord {
    BindingRecord {
        tenant_id: tenant.into(),
        subscription_id: format!("sub-{tenant}"),
        instance_id: format!("inst-{tenant}"),
        instance_url: format!("http://10.0.0.1:8080/{tenant}"),
        // Every tenant but `trial` has an API upstream.
        api_url: (tenant != "trial").then(|| format!("http://10.0.0.2:8080/{tenant}")),
        identity_org_id: (tenant != "grace").then(|| format!("org-{tenant}")),
        status: status.into(),
        plan: if tenant == "solo" { "solo" } else { "team" }.into(),
        region: "eu-west".into(),
        domains: domains_of(tenant),
        revision: 1,
        updated_at: None,
        mode: None,
    }
}

struct World {
    prefixes: Prefixes,
    tenancy: TenancySettings,
    table: BindingTable,
    auth: Authenticator,
    key: SigningKey,
    now: u64,
    _dir: tempfile::TempDir,
}

impl World {
    fn new(prefixes: Prefixes) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let key = SigningKey::generate_es256("model").expect("key");
        let jwks = serde_json::json!({ "keys": [key.public_jwk()] });
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks.to_string()).expect("jwks");
        let auth = Authenticator::new(&AuthSettings {
            jwks: JwksSource::File(path),
            hmac_keys: Vec::new(),
            issuers: vec!["https://id.test".into()],
            issuer_keys: None,
            audiences: vec!["nexus".into()],
            leeway: Duration::from_secs(30),
            max_token_lifetime: None,
            tenant_claim: "tenant_id".into(),
            org_claim: "org_id".into(),
            session_cookie: Some("nexus_session".into()),
            token_headers: vec!["x-access-token".into()],
            token_cookies: Vec::new(),
            token_query_parameters: vec!["token".into()],
            token_cache_capacity: 1000,
            max_token_bytes: 8192,
            jwks_poll_interval: Duration::from_secs(1),
        })
        .expect("auth");
        let bindings: Vec<Arc<Binding>> = STATUSES
            .iter()
            .map(|(t, s)| Arc::new(Binding::from_record(&record(t, s)).expect("valid fixture")))
            .collect();
        let (table, refused) = BindingTable::from_bindings(bindings);
        assert!(refused.is_empty(), "{refused:?}");
        World {
            prefixes,
            tenancy: TenancySettings {
                base_domains: vec![BASE.into(), EU.into()],
                public_paths: prefixes.public.iter().map(|s| s.to_string()).collect(),
                recovery_paths: prefixes.recovery.iter().map(|s| s.to_string()).collect(),
                api_prefix: prefixes.api.into(),
                provisioning_retry_after: Duration::from_secs(30),
                past_due_header: "x-nexus-billing-notice".into(),
                trusted_origins: Vec::new(),
                frame_ancestors: nexus_config::FrameAncestors::Any,
                // The default: the API prefix, for isolated tenants.
                refused_paths: nexus_config::ModePaths {
                    isolated: vec![prefixes.api.into()],
                    cooperative: Vec::new(),
                },
            },
            table,
            auth,
            key,
            now: 1_900_000_000,
            _dir: dir,
        }
    }

    fn token(&self, tenant: &str, org: &str) -> String {
        self.key
            .sign(&serde_json::json!({
                "iss": "https://id.test", "aud": "nexus", "sub": "user-1",
                "exp": self.now + 3600, "tenant_id": tenant, "org_id": org,
            }))
            .expect("sign")
    }
}

/// The credential a request carries.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    None,
    /// A genuine token for (tenant, org).
    Valid(String, String),
    /// Not a token at all.
    Garbage,
}

/// Where the token travels, and what an `access_token` query parameter says.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Carry {
    Bearer,
    Cookie,
    /// `Authorization: Bearer` and the session cookie, the same token.
    BothSame,
    /// `Authorization: Bearer` the token, the session cookie another genuine token.
    BothDiffer,
    /// `Authorization: Bearer`, and `?access_token=` the same token.
    QuerySame,
    /// `Authorization: Bearer`, and `?access_token=` something else.
    QueryOther,
    /// The configured token header (`X-Access-Token`) alone.
    Header,
    /// `Authorization: Bearer` the token, the token header another genuine token.
    HeaderDiffer,
    /// `Authorization: Bearer`, and a configured token query parameter (`?token=`) something
    /// else.
    TokenQueryOther,
    /// A WebSocket subprotocol alone (`Sec-WebSocket-Protocol: access_token, <token>`).
    Subprotocol,
    /// `Authorization: Bearer` the token, a subprotocol another genuine token.
    SubprotocolDiffer,
}

/// Every way of carrying a token.
const CARRIES: [Carry; 11] = [
    Carry::Bearer,
    Carry::Cookie,
    Carry::BothSame,
    Carry::BothDiffer,
    Carry::QuerySame,
    Carry::QueryOther,
    Carry::Header,
    Carry::HeaderDiffer,
    Carry::TokenQueryOther,
    Carry::Subprotocol,
    Carry::SubprotocolDiffer,
];

#[derive(Clone, Debug)]
struct Req {
    carry: Carry,
    host: String,
    /// Authority of an absolute-form target.
    authority: Option<String>,
    target: String,
    token: Tok,
}

/// What the documents say should happen.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Route {
        tenant: String,
        api: bool,
        path: String,
        identity: bool,
        notice: bool,
    },
    /// Status, and `Retry-After` for the 503s.
    Reject(u16, Option<String>),
}

fn reject(code: u16) -> Outcome {
    Outcome::Reject(code, None)
}

// ---------------------------------------------------------------------------------------------
// The model, from the README alone.
// ---------------------------------------------------------------------------------------------

/// "case, port and one trailing dot ignored in Host; IP literals, user info, bad labels
/// refused". A port is digits naming a TCP port a client can have connected to (1–65535).
fn model_host(raw: &str) -> Option<String> {
    if raw.contains('@') || raw.starts_with('[') {
        return None;
    }
    let (name, port) = match raw.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (raw, None),
    };
    if let Some(p) = port {
        if !p.bytes().all(|b| b.is_ascii_digit())
            || !p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
        {
            return None;
        }
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    let good = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !labels.iter().all(|l| good(l)) {
        return None;
    }
    // An IPv4 literal: a name ending in a number is one to a URL parser (WHATWG "ends in a
    // number"), `1.2.3.4` as much as `app.123` or `0x7f.1`.
    let last = labels.last().copied().unwrap_or("");
    if last.bytes().all(|b| b.is_ascii_digit())
        || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(name)
}

/// Decodes the unreserved `%XX`, refuses what the README lists, removes dot-segments and
/// collapses `//`. Only the inputs the generators below produce are modelled.
fn model_path(raw: &str) -> Option<String> {
    let lower = raw.to_ascii_lowercase();
    for bad in ["%2f", "%5c", "%00", "\\", "%252e", "%c0%ae", "%c0%af"] {
        if lower.contains(bad) {
            return None;
        }
    }
    let mut decoded = String::new();
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                decoded.push(v as char);
            } else {
                decoded.push_str(&format!("%{:02X}", v));
            }
            i += 3;
        } else {
            decoded.push(b[i] as char);
            i += 1;
        }
    }
    // A dot-segment with parameters (`..;x`, `.;`) is `..` or `.` to a servlet container.
    let dotted = |seg: &str| matches!(seg.split(';').next(), Some("." | ".."));
    if decoded
        .split('/')
        .any(|seg| seg.contains(';') && dotted(seg))
    {
        return None;
    }
    let trailing = decoded.ends_with('/');
    let mut stack: Vec<&str> = Vec::new();
    let segs: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segs.len().saturating_sub(1);
    let mut dir = trailing;
    for (n, s) in segs.iter().enumerate() {
        match *s {
            "" => {}
            "." => dir |= n == last,
            ".." => {
                stack.pop();
                dir |= n == last;
            }
            seg => stack.push(seg),
        }
    }
    let mut out = format!("/{}", stack.join("/"));
    if dir && out != "/" {
        out.push('/');
    }
    Some(out)
}

/// "segment-aware: `/login` matches `/login/sso`, not `/loginx`"; "/assets/" matches
/// everything under /assets.
fn under(path: &str, prefix: &str) -> bool {
    let base = prefix.strip_suffix('/').unwrap_or(prefix);
    path == base || path.starts_with(&format!("{base}/"))
}

/// The README's public and recovery rows: under a prefix, and not through a PHP script to
/// more path (`/billing/public/index.php/admin`).
fn under_as_routed(path: &str, prefixes: &[&str]) -> bool {
    let lower = path.to_ascii_lowercase();
    let through_script = lower
        .match_indices(".php/")
        .any(|(i, _)| i > 0 && !lower[..i].ends_with('/'));
    prefixes.iter().any(|p| under(path, p)) && !through_script
}

/// The tenant a (normalised) host names, by the README's tenant row.
fn model_tenant(host: &str) -> Option<String> {
    let bases = [EU, BASE];
    if bases.contains(&host) {
        return None;
    }
    for base in bases {
        if let Some(rest) = host.strip_suffix(&format!(".{base}")) {
            return match rest.rsplit_once('.') {
                None => STATUSES
                    .iter()
                    .any(|(t, _)| *t == rest)
                    .then(|| rest.to_owned()),
                Some((_, owner)) => domains_of(owner)
                    .contains(&host.to_owned())
                    .then(|| owner.to_owned()),
            };
        }
    }
    STATUSES
        .iter()
        .find(|(t, _)| domains_of(t).contains(&host.to_owned()))
        .map(|(t, _)| t.to_string())
}

fn model(pre: &Prefixes, req: &Req) -> Outcome {
    if matches!(
        req.carry,
        Carry::BothDiffer | Carry::HeaderDiffer | Carry::SubprotocolDiffer
    ) && req.token == Tok::None
    {
        // Only the cookie or the token header is there: another tenant's genuine token,
        // nothing to conflict with.
        let zed = Tok::Valid("zed".into(), "org-zed".into());
        return model(
            pre,
            &Req {
                carry: Carry::Cookie,
                token: zed,
                ..req.clone()
            },
        );
    }
    let Some(host) = model_host(&req.host) else {
        return reject(400);
    };
    // On the wire Pingora refuses an absolute-form authority that differs from `Host` in any
    // byte before the router reads the request; the router's own check (the one `decide` makes,
    // for what reaches it, HTTP/2 included) names the same host, port and case aside.
    if let Some(a) = &req.authority {
        if model_host(a) != Some(host.clone()) {
            return reject(400);
        }
    }
    let (raw_path, _query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let Some(path) = model_path(raw_path) else {
        return reject(400);
    };
    let Some(tenant) = model_tenant(&host) else {
        return reject(404);
    };
    let status = STATUSES.iter().find(|(t, _)| *t == tenant).unwrap().1;
    match status {
        "canceled" => return reject(410),
        "blocked" | "incident" => return Outcome::Reject(503, Some("60".into())),
        "order_received"
        | "payment_verified"
        | "queued_for_provisioning"
        | "provisioning"
        | "validation"
        | "awaiting_customer_action" => return Outcome::Reject(503, Some("30".into())),
        "suspended" if !under_as_routed(&path, pre.recovery) => return reject(403),
        _ => {}
    }
    let org = record(&tenant, status).identity_org_id;
    // "both present and different → 401"; an `access_token` query parameter "must repeat the
    // verified token" (public path: refused when it carries a value and no token proves the
    // caller belongs, as it cannot be taken off).
    let conflict = matches!(
        req.carry,
        Carry::BothDiffer
            | Carry::QueryOther
            | Carry::HeaderDiffer
            | Carry::TokenQueryOther
            | Carry::SubprotocolDiffer
    ) || (req.carry == Carry::QuerySame && req.token == Tok::None);
    let token_ok = !conflict && matches!(req.token, Tok::Valid(..));
    let belongs = token_ok
        && match &req.token {
            Tok::Valid(t, o) => *t == tenant && org.as_ref().is_none_or(|want| want == o),
            _ => false,
        };
    let public = under_as_routed(&path, pre.public);
    let query_token = matches!(
        req.carry,
        Carry::QuerySame | Carry::QueryOther | Carry::TokenQueryOther
    );
    if public && query_token && !belongs {
        return reject(401);
    }
    if !public && conflict {
        return reject(401);
    }
    if !public {
        match &req.token {
            Tok::None | Tok::Garbage => return reject(401),
            Tok::Valid(..) if !belongs => return reject(403),
            Tok::Valid(..) => {}
        }
    }
    // "An isolated (Solo) tenant is refused the prefixes its mode lists (here the API
    // prefix), in any case, with `;` parameters cut, and through a PHP script to it
    // (`/index.php/api/x`), after the token; public paths too."
    if tenant == "solo" {
        let lower: String = path
            .to_ascii_lowercase()
            .split('/')
            .map(|seg| seg.split(';').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("/");
        let after_script = lower
            .match_indices(".php/")
            .filter(|(i, _)| *i > 0 && !lower[..*i].ends_with('/'))
            .map(|(i, _)| &lower[i + 4..]);
        if std::iter::once(lower.as_str())
            .chain(after_script)
            .any(|p| under(p, pre.api))
        {
            return reject(403);
        }
    }
    let api = under(&path, pre.api) && record(&tenant, status).api_url.is_some();
    Outcome::Route {
        tenant,
        api,
        path,
        identity: belongs,
        notice: status == "past_due",
    }
}

// ---------------------------------------------------------------------------------------------
// The router.
// ---------------------------------------------------------------------------------------------

fn real(w: &World, req: &Req) -> Outcome {
    let host = [req.host.as_bytes()];
    let token = match &req.token {
        Tok::None => None,
        Tok::Valid(t, o) => Some(w.token(t, o)),
        Tok::Garbage => Some("not.a.token".to_owned()),
    };
    let other = w.token("zed", "org-zed");
    let (mut bearer, mut cookie, mut header, mut query, mut protocol) =
        (None, None, None, None, None);
    match req.carry {
        Carry::Bearer => bearer = token.clone(),
        Carry::Cookie => cookie = token.clone(),
        Carry::BothSame => (bearer, cookie) = (token.clone(), token.clone()),
        Carry::BothDiffer => (bearer, cookie) = (token.clone(), Some(other.clone())),
        Carry::QuerySame => {
            bearer = token.clone();
            query = Some(("access_token", token.clone().unwrap_or(other)));
        }
        Carry::QueryOther => (bearer, query) = (token.clone(), Some(("access_token", "x".into()))),
        Carry::Header => header = token.clone(),
        Carry::HeaderDiffer => (bearer, header) = (token.clone(), Some(other.clone())),
        Carry::TokenQueryOther => (bearer, query) = (token.clone(), Some(("token", "x".into()))),
        Carry::Subprotocol => protocol = token.clone(),
        Carry::SubprotocolDiffer => (bearer, protocol) = (token.clone(), Some(other.clone())),
    }
    let bearer = bearer.map(|t| format!("Bearer {t}"));
    let cookie = cookie.map(|t| format!("theme=dark; nexus_session={t}"));
    let target = match query {
        Some((name, q)) if req.target.contains('?') => format!("{}&{name}={q}", req.target),
        Some((name, q)) => format!("{}?{name}={q}", req.target),
        None => req.target.clone(),
    };
    let auth: Vec<&[u8]> = bearer.iter().map(|b| b.as_bytes()).collect();
    let cookies: Vec<&[u8]> = cookie.iter().map(|c| c.as_bytes()).collect();
    let headers: Vec<&[u8]> = header.iter().map(|h| h.as_bytes()).collect();
    let protocol = protocol.map(|t| format!("access_token, {t}"));
    let protocols: Vec<&[u8]> = protocol.iter().map(|p| p.as_bytes()).collect();
    let facts = RequestFacts {
        host_headers: &host,
        uri_authority: req.authority.as_deref(),
        is_http2: false,
        target: &target,
        authorization: &auth,
        cookies: &cookies,
        token_headers: &headers,
        subprotocols: &protocols,
        origins: &[],
        fetch_sites: &[],
        now_unix: w.now,
        server_name: None,
    };
    match decide(&facts, &w.tenancy, &w.table, &w.auth) {
        Ok(d) => Outcome::Route {
            tenant: d.binding.tenant_id.as_str().to_owned(),
            api: d.upstream == UpstreamKind::Api && d.binding.api_url.is_some(),
            path: d.path.clone(),
            identity: d.identity.is_some(),
            notice: d.notice.is_some(),
        },
        Err(e) => Outcome::Reject(
            e.status(),
            e.extra_headers()
                .into_iter()
                .find(|(n, _)| *n == "retry-after")
                .map(|(_, v)| v),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison.
// ---------------------------------------------------------------------------------------------

fn req(host: &str, target: &str, token: Tok) -> Req {
    Req {
        carry: Carry::Bearer,
        host: host.into(),
        authority: None,
        target: target.into(),
        token,
    }
}

fn valid(tenant: &str) -> Tok {
    Tok::Valid(tenant.into(), format!("org-{tenant}"))
}

/// Every request of `cases` is decided alike by the model and the router; all disagreements
/// are reported at once.
fn compare(cases: &[Req]) {
    compare_under(&[DEFAULT, SLASHED], cases);
}

/// [`compare`] under the given prefix configurations.
fn compare_under(configs: &[Prefixes], cases: &[Req]) {
    let mut diffs = Vec::new();
    for &prefixes in configs {
        let w = World::new(prefixes);
        diffs.extend(cases.iter().filter_map(|r| {
            let (m, g) = (model(&prefixes, r), real(&w, r));
            (m != g).then(|| format!("{prefixes:?} {r:?}\n  model:  {m:?}\n  router: {g:?}"))
        }));
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn every_status_with_every_kind_of_path() {
    let paths = [
        "/",
        "/app",
        "/login",
        "/login/sso",
        "/loginx",
        "/assets",
        "/assets/",
        "/assets/a.css",
        "/assetsx",
        "/billing",
        "/billing/invoices",
        "/billingx",
        "/admin/recovery",
        "/admin/recovery/x",
        "/admin/recoveryx",
        "/admin",
        "/api",
        "/api/",
        "/api/v1",
        "/API/v1",
        "/Api",
        "/index.php/api/v1",
        "/app/x.PHP/API",
        "/api;x/v1",
        "/apix",
        "/api/../billing",
        "/billing/../app",
        "/login/../app",
    ];
    let mut cases = Vec::new();
    for (tenant, _) in STATUSES {
        for path in paths {
            for token in [Tok::None, valid(tenant), valid("other"), Tok::Garbage] {
                cases.push(req(&format!("{tenant}.{BASE}"), path, token));
            }
        }
    }
    compare(&cases);
}

#[test]
fn credentials_in_every_place_on_public_and_private_paths() {
    let mut cases = Vec::new();
    for tenant in ["acme", "susp", "late", "grace"] {
        for path in [
            "/app",
            "/login",
            "/billing",
            "/api/v1",
            "/assets/x?y=1",
            "/billing/pay.php",
            "/billing/public/index.php/app",
            "/login/index.PHP/",
        ] {
            for token in [Tok::None, valid(tenant), valid("other"), Tok::Garbage] {
                for carry in CARRIES {
                    cases.push(Req {
                        carry,
                        ..req(&format!("{tenant}.{BASE}"), path, token.clone())
                    });
                }
            }
        }
    }
    compare(&cases);
}

#[test]
fn hosts_ports_and_names() {
    let hosts = [
        "acme.nexus.app",
        "ACME.Nexus.App",
        "acme.nexus.app.",
        "acme.nexus.app..",
        "acme.nexus.app:8080",
        "acme.nexus.app.:443",
        "acme.nexus.app:",
        "acme.nexus.app:0",
        "acme.nexus.app:080",
        "acme.nexus.app:65535",
        "acme.nexus.app:65536",
        "acme.nexus.app:+80",
        "acme.nexus.app:-1",
        "acme.nexus.app:8o",
        "acme.eu.nexus.app",
        "eu.nexus.app",
        "nexus.app",
        "nexus.app.",
        "api.acme.nexus.app",
        "www.acme.nexus.app",
        "x.api.acme.nexus.app",
        "x.acme.nexus.app",
        "trial.eu.nexus.app",
        "trial.nexus.app",
        "eu.nexus.app.",
        "EU.nexus.app:443",
        "acme.xnexus.app",
        "xnexus.app",
        "nexus.app:443",
        "api.acme.eu.nexus.app",
        "app.acme.example",
        "APP.ACME.EXAMPLE.",
        "app.acme.example:8443",
        "late.example",
        "unknown.example",
        "nobody.nexus.app",
        "xn--bcher-kva.nexus.app",
        "bücher.nexus.app",
        "acme.nexus.app\u{0}",
        "user@acme.nexus.app",
        "user:pw@acme.nexus.app",
        "127.0.0.1",
        "127.0.0.1:8080",
        "app.123",
        "acme.nexus.app.1",
        "0x7f.1",
        "acme.0x1",
        "2130706433",
        "[::1]",
        "[::1]:8080",
        "-acme.nexus.app",
        "acme-.nexus.app",
        "ac_me.nexus.app",
        ".acme.nexus.app",
        "acme..nexus.app",
        "",
    ];
    let mut cases = Vec::new();
    for host in hosts {
        for token in [
            valid("acme"),
            valid("late"),
            valid("beta"),
            valid("trial"),
            valid("eu"),
            valid("gamma"),
            Tok::None,
        ] {
            cases.push(req(host, "/app", token.clone()));
            cases.push(req(host, "/login", token));
        }
    }
    compare(&cases);
}

#[test]
fn absolute_form_targets_name_the_host() {
    let mut cases = Vec::new();
    for (host, authority) in [
        ("acme.nexus.app", "acme.nexus.app"),
        ("acme.nexus.app", "ACME.nexus.app"),
        ("acme.nexus.app", "late.nexus.app"),
        ("acme.nexus.app:80", "acme.nexus.app:80"),
        ("acme.nexus.app:80", "acme.nexus.app"),
    ] {
        cases.push(Req {
            authority: Some(authority.into()),
            ..req(host, "/app", valid("acme"))
        });
    }
    compare(&cases);
}

#[test]
fn path_spellings_around_the_prefixes() {
    let paths = [
        "/login/",
        "/login//sso",
        "//login",
        "/./login",
        "/x/../login",
        "/%6cogin",
        "/LOGIN",
        "/login;x",
        "/login;/x",
        "/login%3b",
        "/login/%2e%2e/app",
        "/login/..",
        "/login/.",
        "/assets/%2e%2e/app",
        "/assets//",
        "/billing/%2e%2e/app",
        "/billing/./",
        "/%62illing",
        "/billing;jsessionid=1",
        "/api%2fv1",
        "/api/%2e%2e/billing",
        "/api/./v1",
        "/api;/v1",
        "/login/a.;b",
        "/billing/...;x",
        "/login/%2e%2e;x/app",
        "/admin/recovery/../x",
        "/admin//recovery",
        "/admin/./recovery",
        "/admin/recovery/.",
        "/login/..;/app",
        "/login/.;/app",
        "/login%2f..%2fapp",
        "/login/%252e%252e/app",
        "/app?x=/login",
        "/login?next=/app",
        "/billing?x",
        "/a/b/../../billing",
    ];
    let mut cases = Vec::new();
    for tenant in ["acme", "susp", "late", "trial"] {
        for path in paths {
            for token in [Tok::None, valid(tenant)] {
                cases.push(req(&format!("{tenant}.{BASE}"), path, token));
            }
        }
    }
    compare(&cases);
}

#[test]
fn custom_domains_get_their_tenants_status() {
    let mut cases = Vec::new();
    for host in [
        "gone.example",
        "susp.example",
        "late.example",
        "app.acme.example",
    ] {
        for path in ["/", "/login", "/billing", "/api/x", "/assets/a"] {
            for token in [Tok::None, valid("acme"), valid("late"), valid("susp")] {
                cases.push(req(host, path, token));
            }
        }
    }
    compare(&cases);
}

/// A suspended tenant's users sign in only through paths listed as recovery paths too: the
/// status is applied before the public paths are.
#[test]
fn a_sign_in_path_listed_for_recovery_serves_a_suspended_tenant() {
    const SIGN_IN: Prefixes = Prefixes {
        public: &["/login", "/assets/"],
        recovery: &["/billing", "/admin/recovery", "/login"],
        api: "/api/",
    };
    let mut cases = Vec::new();
    for path in ["/login", "/login/sso", "/assets/a.css", "/billing", "/app"] {
        for token in [Tok::None, valid("susp"), valid("acme")] {
            cases.push(req(&format!("susp.{BASE}"), path, token));
        }
    }
    compare_under(&[DEFAULT, SIGN_IN], &cases);
    let w = World::new(SIGN_IN);
    let login = real(&w, &req(&format!("susp.{BASE}"), "/login/sso", Tok::None));
    assert!(
        matches!(
            login,
            Outcome::Route {
                identity: false,
                ..
            }
        ),
        "{login:?}"
    );
    let w = World::new(DEFAULT);
    let login = real(&w, &req(&format!("susp.{BASE}"), "/login/sso", Tok::None));
    assert_eq!(login, reject(403));
}

/// "the instance's target (its URL's path prefix, the normalised path, the query) fits in 65,534
/// bytes ... A path alone may hold 8 KiB": 414 past either.
#[test]
fn target_length_limits() {
    let w = World::new(DEFAULT);
    let tok = valid("acme");
    let check = |target: String, want: u16| {
        let r = req(&format!("acme.{BASE}"), &target, tok.clone());
        let got = match real(&w, &r) {
            Outcome::Route { .. } => 200,
            Outcome::Reject(c, _) => c,
        };
        assert_eq!(got, want, "target of {} bytes", target.len());
    };
    // `acme`'s instance URL has the path prefix `/acme` (5 bytes).
    let path = |n: usize| format!("/{}", "a".repeat(n - 1));
    check(path(8192), 200);
    check(path(8193), 414);
    // The path as sent is bounded, dot-segments included.
    check(format!("{}/x/..", path(8187)), 200);
    check(format!("{}/x/..", path(8188)), 414);
    let with_query = |total: usize| format!("/a?{}", "q".repeat(total - 5 - 3));
    check(with_query(65_534), 200);
    check(with_query(65_535), 414);
}

// ---------------------------------------------------------------------------------------------
// Generated requests.
// ---------------------------------------------------------------------------------------------

fn host_strategy() -> impl Strategy<Value = String> {
    let label = prop::sample::select(vec![
        "acme",
        "late",
        "susp",
        "gone",
        "prov",
        "blocked",
        "trial",
        "nobody",
        "api",
        "eu",
        "www",
        "xn--bcher-kva",
        "gamma",
        "nexus",
    ]);
    let suffix = prop::sample::select(vec![
        ".nexus.app",
        ".eu.nexus.app",
        ".api.acme.nexus.app",
        ".acme.nexus.app",
        ".example",
        ".acme.example",
        ".app",
        ".xnexus.app",
        "",
    ]);
    let port = prop::sample::select(vec!["", ":80", ":8443", ":", ":0", ":080", ":65535"]);
    (label, suffix, port, any::<bool>(), any::<bool>()).prop_map(|(l, s, p, dot, upper)| {
        let name = format!("{l}{s}{}", if dot { "." } else { "" });
        let name = if upper {
            name.to_ascii_uppercase()
        } else {
            name
        };
        format!("{name}{p}")
    })
}

fn path_strategy() -> impl Strategy<Value = String> {
    let seg = prop::sample::select(vec![
        "login",
        "loginx",
        "assets",
        "billing",
        "admin",
        "recovery",
        "api",
        "v1",
        "app",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        "",
        "%6cogin",
        "%61pi",
        "x;y",
        "a.b",
        "%7e",
        "%3a",
        "%3B",
        "%40x",
        "%25",
        "%2541",
        "%41%42",
        "%zz",
        "%2",
        "%20",
        "bill%69ng",
        "%2fx",
        "a%5cb",
        "~a",
    ]);
    (prop::collection::vec(seg, 0..6), any::<bool>())
        .prop_map(|(segs, slash)| format!("/{}{}", segs.join("/"), if slash { "/" } else { "" }))
}

fn token_strategy() -> impl Strategy<Value = Tok> {
    prop_oneof![
        Just(Tok::None),
        Just(Tok::Garbage),
        prop::sample::select(vec![
            "acme", "late", "susp", "trial", "grace", "prov", "eu", "gamma"
        ])
        .prop_map(valid),
        Just(Tok::Valid("acme".into(), "org-late".into())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_router_decides_as_the_documents_say(
        host in host_strategy(),
        target in path_strategy(),
        token in token_strategy(),
        carry in prop::sample::select(CARRIES.to_vec()),
    ) {
        thread_local!(static WORLDS: [World; 2] = [World::new(DEFAULT), World::new(SLASHED)]);
        let r = Req { carry, ..req(&host, &target, token) };
        WORLDS.with(|worlds| {
            for w in worlds {
                prop_assert_eq!(model(&w.prefixes, &r), real(w, &r), "{:?} {:?}", w.prefixes, r);
            }
            Ok(())
        })?;
    }
}
