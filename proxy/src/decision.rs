//! The whole routing decision for one request, as one pure function.
//!
//! [`decide`] takes the facts of a request (host headers, target, credentials, time), the
//! tenancy settings, one binding-table snapshot and the authenticator, and returns either
//! where to send the request or why not. No sockets, no Pingora: the service calls it once per
//! request, tests call it table-driven, benches time it.
//!
//! The order matters and is part of the contract:
//! 1. the host is parsed (400 malformed), then the path is normalised once (400 if
//!    unacceptable): a malformed request is refused whoever it is addressed to. That one path
//!    is used for every decision below and is the path sent upstream;
//! 2. the host's tenant is looked up (404 unknown) before anything about a tenant is read,
//!    so nothing about a tenant leaks to a request that is not addressed to one;
//! 3. the tenant's status (410 / 503 / suspended-recovery-only) — an honest "not ready" or
//!    "gone" does not need a login;
//! 4. public paths are routed without a token. A token there that proves the caller belongs
//!    to the tenant is used as anywhere else; any other credential is not refused (an expired
//!    session must still reach `/login`) but taken off the request, so the instance never
//!    receives a credential the router did not accept for it;
//! 5. the token (401), then its tenant/org claims against the binding (403);
//! 6. the paths the tenant's deployment mode refuses (403 `not_in_plan`): after the token,
//!    so on a private path only a member learns what the plan holds.

use std::borrow::Cow;
use std::sync::Arc;

use nexus_binding_store::{Binding, BindingTable, UpstreamUrl};
use nexus_config::TenancySettings;

use crate::auth::credential::check_query_token;
use crate::auth::{extract_token, Authenticator, VerifiedToken};
use crate::authz::check_claims;
use crate::errors::RejectReason;
use crate::host::{request_authority, resolve_host, HostTarget};
use crate::path::{
    has_prefix, may_reach_prefix, normalize_path, split_target, under_prefix_as_routed,
};
use crate::policy::{status_decision, BillingNotice, StatusDecision};

/// What the router knows about a request before deciding.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Every `Host` header value, raw.
    pub host_headers: &'a [&'a [u8]],
    /// Authority of the request-target (absolute-form or HTTP/2 `:authority`).
    pub uri_authority: Option<&'a str>,
    /// Whether the request came over HTTP/2.
    pub is_http2: bool,
    /// The request-target's path and query, as received.
    pub target: &'a str,
    /// Every `Authorization` header value, raw.
    pub authorization: &'a [&'a [u8]],
    /// Every `Cookie` header value, raw.
    pub cookies: &'a [&'a [u8]],
    /// Every value of the headers besides `Authorization` that carry a token
    /// ([`crate::auth::TokenPlaces::is_token_header`]), raw.
    pub token_headers: &'a [&'a [u8]],
    /// Every `Sec-WebSocket-Protocol` value, raw.
    pub subprotocols: &'a [&'a [u8]],
    /// Every `Origin` value, raw (see [`crate::origin`]).
    pub origins: &'a [&'a [u8]],
    /// Every `Sec-Fetch-Site` value, raw (see [`crate::origin`]).
    pub fetch_sites: &'a [&'a [u8]],
    /// Current Unix time in seconds.
    pub now_unix: u64,
    /// The name the client asked for in its TLS handshake (SNI), lowercase; `None` over
    /// plain HTTP.
    pub server_name: Option<&'a str>,
}

/// Which of the binding's upstreams serves the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// `instance_url`.
    App,
    /// `api_url` (requests under the API prefix, when the binding has one).
    Api,
}

impl UpstreamKind {
    /// The binding's URL for this kind: `api_url` when it has one, else `instance_url`.
    pub fn url_of(self, binding: &Binding) -> &UpstreamUrl {
        match (self, &binding.api_url) {
            (UpstreamKind::Api, Some(api)) => api,
            _ => &binding.instance_url,
        }
    }
}

/// A request that may be forwarded, and everything needed to forward it.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The tenant's binding, from the table snapshot the decision was made on.
    pub binding: Arc<Binding>,
    /// Which upstream.
    pub upstream: UpstreamKind,
    /// Normalised path (what the policy saw; what goes upstream).
    pub path: String,
    /// Query string, untouched, without the `?`.
    pub query: Option<String>,
    /// The verified token. `None` only on a public path, when no credential proved the
    /// caller belongs to the tenant: the instance then gets no bearer credential and no
    /// session cookie ([`crate::route::rewrite_upstream_request`]).
    pub identity: Option<Arc<VerifiedToken>>,
    /// Billing notice for the app (`past_due`).
    pub notice: Option<BillingNotice>,
    /// The domain the tenant was found by when it was not its own subdomain (a custom domain,
    /// or a name under its subdomain): a tunnel opened on it may go on only while the domain
    /// still names the tenant ([`crate::tunnel`]).
    pub domain: Option<Box<str>>,
}

impl Decision {
    /// The upstream base URL chosen.
    pub fn upstream_url(&self) -> &UpstreamUrl {
        self.upstream.url_of(&self.binding)
    }
}

/// The longest request-target the `http` crate builds (`u16::MAX - 1` bytes); Pingora takes
/// client targets up to it, so with an upstream path prefix the rebuilt one can exceed it.
const MAX_UPSTREAM_TARGET: usize = u16::MAX as usize - 1;

/// Decides one request. See the module docs for the order of checks.
pub fn decide(
    facts: &RequestFacts<'_>,
    tenancy: &TenancySettings,
    table: &BindingTable,
    auth: &Authenticator,
) -> Result<Decision, RejectReason> {
    decide_addressed(facts, address(facts, tenancy, table)?, tenancy, table, auth)
}

/// Decides a request [`address`] has found the tenant of: steps 3 to 5 (see the module
/// docs). For a caller that needs the tenant whatever the decision (which pages may read a
/// refusal, [`crate::cors`]); [`decide`] is both.
pub fn decide_addressed(
    facts: &RequestFacts<'_>,
    addressed: Addressed<'_, '_>,
    tenancy: &TenancySettings,
    table: &BindingTable,
    auth: &Authenticator,
) -> Result<Decision, RejectReason> {
    let Addressed {
        binding,
        path,
        query,
        domain,
    } = addressed;

    let notice = match status_decision(binding.status, &path, &tenancy.recovery_paths) {
        StatusDecision::Serve { notice } => notice,
        StatusDecision::RecoveryOnly => return Err(RejectReason::Suspended),
        StatusDecision::Gone => return Err(RejectReason::Canceled),
        StatusDecision::NotReady => {
            return Err(RejectReason::NotReady {
                retry_after: tenancy.provisioning_retry_after,
            })
        }
        StatusDecision::Unavailable => return Err(RejectReason::Unavailable),
    };

    let identity = if under_prefix_as_routed(&path, &tenancy.public_paths) {
        // Another tenant's page may still use the public paths, as anyone may, but not as
        // this tenant's user: its cookie is taken off.
        let identity = tenant_identity(facts, &path, query, binding, auth)
            .ok()
            .filter(|_| !from_another_tenant(facts, binding, tenancy, table, auth));
        if identity.is_none() {
            // Headers can be taken off, a query parameter cannot: an `access_token` (or
            // another token parameter) the router did not accept would reach the instance.
            check_query_token(&path, query, "", auth.token_places())
                .map_err(RejectReason::BadCredential)?;
        }
        identity
    } else {
        let identity = tenant_identity(facts, &path, query, binding, auth)?;
        if from_another_tenant(facts, binding, tenancy, table, auth) {
            return Err(RejectReason::CrossTenantOrigin);
        }
        Some(identity)
    };

    // What the tenant's plan never includes, refused after the status and the token: on a
    // private path a stranger is told to sign in first; a public path under a refused
    // prefix is refused to anyone.
    if may_reach_prefix(
        &path,
        crate::policy::refused_paths(binding.mode, &tenancy.refused_paths),
    ) {
        return Err(RejectReason::NotInPlan);
    }

    let upstream = if binding.api_url.is_some() && has_prefix(&path, &tenancy.api_prefix) {
        UpstreamKind::Api
    } else {
        UpstreamKind::App
    };
    // The instance's target is rebuilt from its URL's path prefix, the path and the query:
    // past what a request-target can hold, it could not be sent, and is refused before any
    // instance is asked.
    let prefix = upstream.url_of(binding).path_prefix();
    if prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1) > MAX_UPSTREAM_TARGET {
        return Err(RejectReason::TargetTooLong);
    }

    Ok(Decision {
        binding: Arc::clone(binding),
        upstream,
        path: cow_into_string(path),
        query: query.map(str::to_owned),
        identity,
        notice,
        domain,
    })
}

/// Where a request is addressed, after the checks [`decide`] makes first (steps 1 and 2):
/// the host (400), the path (400), the tenant (404).
#[derive(Debug)]
pub struct Addressed<'t, 'f> {
    binding: &'t Arc<Binding>,
    path: Cow<'f, str>,
    query: Option<&'f str>,
    /// See [`Decision::domain`].
    domain: Option<Box<str>>,
}

impl Addressed<'_, '_> {
    /// The tenant's binding, from the table the request was addressed in.
    pub fn binding(&self) -> &Arc<Binding> {
        self.binding
    }
}

/// Finds where a request is addressed (see [`Addressed`]).
pub fn address<'t, 'f>(
    facts: &RequestFacts<'f>,
    tenancy: &TenancySettings,
    table: &'t BindingTable,
) -> Result<Addressed<'t, 'f>, RejectReason> {
    let authority = request_authority(facts.host_headers, facts.uri_authority, facts.is_http2)
        .map_err(RejectReason::BadHost)?;
    let target = resolve_host(authority, &tenancy.base_domains).map_err(RejectReason::BadHost)?;
    // The connection was set up for the name its handshake asked for, and holds that name's
    // certificate: a request for another host on it is not this connection's to serve (RFC
    // 9110 §15.5.20), whoever the certificate also covers.
    if facts
        .server_name
        .is_some_and(|sni| !crate::host::names_server(authority, sni))
    {
        return Err(RejectReason::Misdirected);
    }

    let (raw_path, query) = split_target(facts.target);
    let path = normalize_path(raw_path).map_err(RejectReason::of_path)?;

    let domain = match &target {
        HostTarget::CustomDomain(domain) | HostTarget::UnderTenant { domain, .. } => {
            Some(Box::from(domain.as_ref()))
        }
        HostTarget::Subdomain(_) | HostTarget::Reserved => None,
    };
    let binding = match &target {
        HostTarget::Subdomain(tenant) => table.get(tenant.as_str()),
        HostTarget::CustomDomain(domain) => table
            .tenant_for_domain(domain)
            .and_then(|tenant| table.get(tenant.as_str())),
        // A record can claim any name; under a base domain only the tenant whose namespace
        // the name is in may have it.
        HostTarget::UnderTenant { domain, tenant } => table
            .tenant_for_domain(domain)
            .filter(|owner| owner.as_str() == tenant.as_str())
            .and_then(|owner| table.get(owner.as_str())),
        HostTarget::Reserved => None,
    }
    .ok_or(RejectReason::UnknownTenant)?;
    Ok(Addressed {
        binding,
        path,
        query,
        domain,
    })
}

/// The request's token, verified and proven to belong to the binding's tenant.
fn tenant_identity(
    facts: &RequestFacts<'_>,
    path: &str,
    query: Option<&str>,
    binding: &Binding,
    auth: &Authenticator,
) -> Result<Arc<VerifiedToken>, RejectReason> {
    let places = auth.token_places();
    let token = extract_token(
        facts.authorization,
        facts.cookies,
        facts.token_headers,
        facts.subprotocols,
        places,
    )
    .map_err(RejectReason::BadCredential)?
    .ok_or(RejectReason::MissingToken)?;
    check_query_token(path, query, token, places).map_err(RejectReason::BadCredential)?;
    let verified = auth
        .verify(token, facts.now_unix)
        .map_err(RejectReason::InvalidToken)?;
    check_claims(verified.tenant.as_deref(), verified.org.as_deref(), binding)
        .map_err(RejectReason::WrongTenant)?;
    Ok(verified)
}

/// Whether the request's credential is a cookie alone and its `Origin` another tenant's page
/// (see [`crate::origin`]): a browser sent this tenant's session from there.
fn from_another_tenant(
    facts: &RequestFacts<'_>,
    binding: &Binding,
    tenancy: &TenancySettings,
    table: &BindingTable,
    auth: &Authenticator,
) -> bool {
    let tenant = binding.tenant_id.as_str();
    let own_site = facts.fetch_sites.iter().any(|v| {
        let v = v.trim_ascii();
        v.eq_ignore_ascii_case(b"same-origin") || v.eq_ignore_ascii_case(b"none")
    });
    facts
        .origins
        .iter()
        .any(|o| crate::origin::is_other_tenants(o, own_site, tenant, tenancy, table))
        && matches!(
            extract_token(
                facts.authorization,
                &[],
                facts.token_headers,
                facts.subprotocols,
                auth.token_places(),
            ),
            Ok(None)
        )
}

fn cow_into_string(c: Cow<'_, str>) -> String {
    c.into_owned()
}
