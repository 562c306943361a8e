//! The binding record and the small types it is made of.
//!
//! Every field that the router makes a decision on is a type that can only hold a valid
//! value: a `TenantId` is always canonical, a status is one of the known states, an
//! upstream URL is always `http(s)://host[:port][/path]`. Records arrive as JSON
//! ([`BindingRecord`], the wire format) and become a [`Binding`] only through
//! [`Binding::from_record`], which names every problem it finds.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::FieldError;

/// Longest tenant id: one DNS label, so `<tenant>.<base domain>` is always a valid host.
pub const MAX_TENANT_ID_LEN: usize = 63;
/// Custom domains one binding may claim: far above any real tenant's, low enough that a
/// runaway record cannot stall a load or flood the domain index.
pub const MAX_DOMAINS: usize = 1_000;
/// Longest `instance_url` / `api_url` accepted (bytes), as common HTTP tooling limits URLs.
pub const MAX_URL_LEN: usize = 2_048;

/// A tenant id in canonical form: 1–63 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
///
/// Canonical means there is exactly one spelling per tenant, so comparing two ids is a byte
/// comparison and a token claim `ACME` never matches the tenant `acme`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Whether `s` is a canonical tenant id, the check [`TenantId::parse`] makes (for callers
    /// that only look an id up and need not own it).
    pub fn is_valid(s: &str) -> bool {
        is_dns_label(s)
    }

    /// Parses a tenant id that must already be canonical (no case folding, no trimming).
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        if Self::is_valid(s) {
            Ok(Self(Arc::from(s)))
        } else {
            Err(FieldError::new(
                "tenant_id",
                format!("{q} is not a canonical tenant id (1-63 of a-z, 0-9, '-', not starting or ending with '-')", q = quoted(s)),
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", &self.0)
    }
}

impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// True for a lowercase DNS label: 1–63 of `a-z0-9-`, not starting or ending with `-`.
pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TENANT_ID_LEN
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// An opaque identifier (instance id, subscription id, org id, region): 1–128 printable ASCII
/// characters without spaces, so it is safe to put in a header or a log line as it is.
fn check_opaque(field: &'static str, s: &str) -> Result<(), FieldError> {
    if !s.is_empty() && s.len() <= 128 && s.bytes().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "{q} must be 1-128 printable ASCII characters without spaces",
                q = quoted(s)
            ),
        ))
    }
}

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses the id: 1–128 printable ASCII characters, no spaces.
            pub fn parse(s: &str) -> Result<Self, FieldError> {
                check_opaque($field, s)?;
                Ok(Self(Arc::from(s)))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

opaque_id!(
    /// The backend instance a tenant runs on (e.g. `inst-eu-042`).
    InstanceId,
    "instance_id"
);
opaque_id!(
    /// The billing subscription behind the tenant.
    SubscriptionId,
    "subscription_id"
);
opaque_id!(
    /// The identity provider's organisation id; tokens carry it in the org claim.
    OrgId,
    "identity_org_id"
);
opaque_id!(
    /// Deployment region (e.g. `eu-west`).
    Region,
    "region"
);

/// A store-wide revision. Every change gets a larger one; a table never goes back.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl Revision {
    /// No change applied yet.
    pub const ZERO: Revision = Revision(0);

    /// The numeric value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Every state a tenant can be in: the billing states and the provisioning states of the brief.
///
/// `active` appears in both lists and is one state. Policy code matches on this exhaustively,
/// so a new state does not compile until someone decides what the router does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Billing: trial period; served.
    Trialing,
    /// Billing and provisioning: paid and running; served.
    Active,
    /// Billing: payment failed; served with a notice to the app.
    PastDue,
    /// Billing: grace period after a failed payment; served.
    GracePeriod,
    /// Billing: only the billing / admin recovery paths are served.
    Suspended,
    /// Billing: deprovisioning; no longer served (410).
    Canceled,
    /// Provisioning: order received, nothing deployed yet.
    OrderReceived,
    /// Provisioning: payment verified.
    PaymentVerified,
    /// Provisioning: waiting for a provisioning slot.
    QueuedForProvisioning,
    /// Provisioning: instance being deployed.
    Provisioning,
    /// Provisioning: deployed instance being validated.
    Validation,
    /// Provisioning: waiting on the customer (DNS, identity).
    AwaitingCustomerAction,
    /// Operations: blocked by an operator.
    Blocked,
    /// Operations: an incident is open for this tenant's instance.
    Incident,
}

impl TenantStatus {
    /// Every state, for help texts and exhaustive tests.
    pub const ALL: [TenantStatus; 14] = [
        TenantStatus::Trialing,
        TenantStatus::Active,
        TenantStatus::PastDue,
        TenantStatus::GracePeriod,
        TenantStatus::Suspended,
        TenantStatus::Canceled,
        TenantStatus::OrderReceived,
        TenantStatus::PaymentVerified,
        TenantStatus::QueuedForProvisioning,
        TenantStatus::Provisioning,
        TenantStatus::Validation,
        TenantStatus::AwaitingCustomerAction,
        TenantStatus::Blocked,
        TenantStatus::Incident,
    ];

    /// The wire name (`past_due`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Trialing => "trialing",
            TenantStatus::Active => "active",
            TenantStatus::PastDue => "past_due",
            TenantStatus::GracePeriod => "grace_period",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Canceled => "canceled",
            TenantStatus::OrderReceived => "order_received",
            TenantStatus::PaymentVerified => "payment_verified",
            TenantStatus::QueuedForProvisioning => "queued_for_provisioning",
            TenantStatus::Provisioning => "provisioning",
            TenantStatus::Validation => "validation",
            TenantStatus::AwaitingCustomerAction => "awaiting_customer_action",
            TenantStatus::Blocked => "blocked",
            TenantStatus::Incident => "incident",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TenantStatus {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        TenantStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = TenantStatus::ALL.iter().map(|s| s.as_str()).collect();
                FieldError::new(
                    "status",
                    format!(
                        "unknown status {q}; expected one of {}",
                        names.join(", "),
                        q = quoted(s)
                    ),
                )
            })
    }
}

/// The plan the tenant bought.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// Single-user workspaces on shared nodes.
    Solo,
    /// Multi-user production.
    Team,
    /// High-seat, high-compliance.
    Enterprise,
}

impl Plan {
    /// The deployment mode a plan gets when the record does not say.
    pub fn default_mode(self) -> Mode {
        match self {
            Plan::Solo => Mode::Isolated,
            Plan::Team | Plan::Enterprise => Mode::Cooperative,
        }
    }
}

/// Deployment mode: same runtime, different policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Solo: single-user workspaces, no API access.
    Isolated,
    /// Team / Enterprise: shared workspace with RBAC.
    Cooperative,
}

/// An upstream base URL: `http` or `https`, a host, an optional port and path prefix; no user
/// info, query or fragment (those would silently change every forwarded request).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct UpstreamUrl(Arc<url::Url>);

impl UpstreamUrl {
    /// Parses and checks an upstream URL; `field` names the record field in the error.
    pub fn parse(field: &'static str, s: &str) -> Result<Self, FieldError> {
        // Every refusal, which is logged, shows the text without its user info, query and
        // fragment (where a URL carries a password or a token), even one that does not parse.
        let quoted = |s: &str| quoted(&without_secrets(s));
        if s.len() > MAX_URL_LEN {
            return Err(FieldError::new(
                field,
                format!("{} is longer than {MAX_URL_LEN} bytes", quoted(s)),
            ));
        }
        let written_host = written_plainly(s)
            .map_err(|why| FieldError::new(field, format!("{q}: {why}", q = quoted(s))))?;
        let u = url::Url::parse(s)
            .map_err(|e| FieldError::new(field, format!("{q} is not a URL: {e}", q = quoted(s))))?;
        if let Some(read_as) = host_read_otherwise(written_host, &u) {
            return Err(FieldError::new(
                field,
                format!(
                    "{q}: the host is read as {read_as} (an address in another spelling, or an \
                     encoded name); write it so",
                    q = quoted(s)
                ),
            ));
        }
        if u.domain().is_some_and(|d| {
            let d = d.strip_suffix('.').unwrap_or(d);
            d.split('.').any(str::is_empty)
        }) {
            return Err(FieldError::new(
                field,
                format!("{q}: the host has an empty label", q = quoted(s)),
            ));
        }
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(FieldError::new(
                field,
                format!("{q}: scheme must be http or https", q = quoted(s)),
            ));
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err(FieldError::new(
                field,
                format!("{q}: a host is required", q = quoted(s)),
            ));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(FieldError::new(
                field,
                format!(
                    "{q}: user info is not allowed (not shown here)",
                    q = quoted(s)
                ),
            ));
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err(FieldError::new(
                field,
                format!(
                    "{q}: query and fragment are not allowed (not shown here)",
                    q = quoted(s)
                ),
            ));
        }
        if u.port() == Some(0) {
            return Err(FieldError::new(
                field,
                format!("{q}: port 0 is no instance's port", q = quoted(s)),
            ));
        }
        if let Some(ip) = literal_ip(&u).filter(|ip| !is_instance_address(*ip)) {
            return Err(FieldError::new(
                field,
                format!(
                    "{q}: {ip} is not one host's address (unspecified, multicast or broadcast)",
                    q = quoted(s)
                ),
            ));
        }
        if let Some(checked) = u
            .domain()
            .filter(|_| u.scheme() == "https")
            .and_then(name_tls_would_check)
        {
            return Err(FieldError::new(
                field,
                format!(
                    "{q}: an https host may not have `_` in its first label (the certificate \
                     would be checked for {checked}, another name)",
                    q = quoted(s)
                ),
            ));
        }
        Ok(Self(Arc::new(u)))
    }

    /// The parsed URL.
    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// True for `https`.
    pub fn is_tls(&self) -> bool {
        self.0.scheme() == "https"
    }

    /// Host as it appears in the URL (IPv6 without brackets).
    pub fn host(&self) -> &str {
        match self.0.host() {
            Some(url::Host::Ipv6(_)) => self
                .0
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                .unwrap_or(""),
            _ => self.0.host_str().unwrap_or(""),
        }
    }

    /// The host's address when it is an IP literal (parsed once, with the URL).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        literal_ip(&self.0)
    }

    /// Port, defaulting by scheme.
    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(80)
    }

    /// Path prefix without a trailing slash ("" for the root).
    pub fn path_prefix(&self) -> &str {
        self.0.path().trim_end_matches('/')
    }
}

/// Checks that `s` is an upstream URL as written, not one URL parsing would mend into another:
/// the WHATWG parser drops blanks and tabs, reads `\` as `/`, takes `http:host` and
/// `http:///host` for `http://host`, and an empty port for the default one. A template whose
/// host or port came out empty would then name another instance instead of being refused.
/// Returns the host as written (an IPv6 address without its brackets).
fn written_plainly(s: &str) -> Result<&str, &'static str> {
    if s.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'\\') {
        return Err("blanks, control characters and `\\` are not allowed");
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err("must begin with http:// or https://");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err("scheme must be http or https");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // After the user info, if any (refused later with its own message).
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (v6, None),
        },
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err("a host is required");
    }
    if port.is_some_and(str::is_empty) {
        return Err("the port is empty");
    }
    Ok(host)
}

/// The host `u` was read with, when `written` (the host as written) is another: URL parsing
/// reads `010.0.0.1` (octal) as `8.0.0.1`, `10.1` and `167772161` as `10.0.0.1`, and decodes
/// `%31` and full-width digits. Letter case aside, the host must be written as it is read; an
/// IPv6 address may be written in any of its spellings.
fn host_read_otherwise(written: &str, u: &url::Url) -> Option<String> {
    let read = u.host_str()?;
    let same = match u.host()? {
        url::Host::Ipv6(ip) => written.parse::<std::net::Ipv6Addr>().ok() == Some(ip),
        _ => written.eq_ignore_ascii_case(read),
    };
    (!same).then(|| read.to_owned())
}

/// The host of `u` when it is an IP literal.
fn literal_ip(u: &url::Url) -> Option<std::net::IpAddr> {
    match u.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

/// Whether an instance may be reached at `ip`: not the unspecified address (`0.0.0.0`, `::`,
/// `::ffff:0.0.0.0`), to which a connect reaches whatever listens on the router's own host (a
/// listen address copied from an instance's config; DNS block lists answer `0.0.0.0` too),
/// nor a multicast or broadcast address, which no connection can be made to.
pub fn is_instance_address(ip: std::net::IpAddr) -> bool {
    let ip = ip.to_canonical();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_unspecified() || ip.is_multicast() || broadcast)
}

/// The name Pingora's TLS connector would send as SNI and check the certificate against,
/// when it is not `host` itself: with `_` in the first label of a name of three labels or more
/// it puts `-` in its place (`tenant_a.inst.internal` → `tenant-a.inst.internal`), so a
/// certificate for that other host, maybe another tenant's instance, would be taken.
fn name_tls_would_check(host: &str) -> Option<String> {
    let (first, rest) = host.split_once('.')?;
    (first.contains('_') && rest.contains('.'))
        .then(|| format!("{}.{rest}", first.replace('_', "-")))
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse("url", &s).map_err(serde::de::Error::custom)
    }
}

/// A custom domain in canonical form: lowercase, no trailing dot, at least two labels, each a
/// valid DNS label (punycode for internationalised names). Never an IP address.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DomainName(Arc<str>);

impl DomainName {
    /// Parses a domain that must already be canonical.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let ok = s.len() <= 253
            && s.contains('.')
            && s.split('.').all(is_dns_label)
            // The last label of a real domain is never all digits; this also refuses IPv4.
            && !s.rsplit('.').next().is_some_and(|l| l.bytes().all(|c| c.is_ascii_digit()));
        if ok {
            Ok(Self(Arc::from(s)))
        } else {
            Err(FieldError::new(
                "domains",
                format!("{q} is not a canonical domain name (lowercase labels, no trailing dot, not an IP)", q = quoted(s)),
            ))
        }
    }

    /// The domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for DomainName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainName({})", &self.0)
    }
}

impl<'de> Deserialize<'de> for DomainName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Shares equal values across the bindings of one load: thousands of tenants sit on the same
/// instance, in the same region, so a million bindings need only a few thousand URL and id
/// allocations. Keeps a 1M-binding table in memory budget.
#[derive(Debug, Default)]
pub struct Interner {
    urls: std::collections::HashMap<String, UpstreamUrl>,
    instances: std::collections::HashMap<String, InstanceId>,
    regions: std::collections::HashMap<String, Region>,
}

impl Interner {
    fn url(&mut self, field: &'static str, s: &str) -> Result<UpstreamUrl, FieldError> {
        if let Some(u) = self.urls.get(s) {
            return Ok(u.clone());
        }
        let u = UpstreamUrl::parse(field, s)?;
        self.urls.insert(s.to_owned(), u.clone());
        Ok(u)
    }

    fn instance(&mut self, s: &str) -> Result<InstanceId, FieldError> {
        if let Some(i) = self.instances.get(s) {
            return Ok(i.clone());
        }
        let i = InstanceId::parse(s)?;
        self.instances.insert(s.to_owned(), i.clone());
        Ok(i)
    }

    fn region(&mut self, s: &str) -> Result<Region, FieldError> {
        if let Some(r) = self.regions.get(s) {
            return Ok(r.clone());
        }
        let r = Region::parse(s)?;
        self.regions.insert(s.to_owned(), r.clone());
        Ok(r)
    }
}

/// The wire form of a binding, as stored in JSON files and in Redis.
///
/// Every field is plain data; [`Binding::from_record`] validates it. Unknown fields are
/// refused so that a typo (`instance_ur1`) is an error instead of a silently missing value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingRecord {
    /// Canonical tenant id.
    pub tenant_id: String,
    /// Billing subscription.
    pub subscription_id: String,
    /// Backend instance id.
    pub instance_id: String,
    /// Where the tenant's app runs.
    pub instance_url: String,
    /// Where the tenant's API runs, if not on `instance_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The identity org the tenant's tokens must carry, if the tenant has one. Left out for
    /// none; `null` is refused (see [`present_string`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_string"
    )]
    pub identity_org_id: Option<String>,
    /// Subscription / provisioning status (wire name).
    pub status: String,
    /// Plan (`solo`, `team`, `enterprise`).
    pub plan: String,
    /// Region.
    pub region: String,
    /// Custom domains served for this tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Store revision of the last change to this record.
    #[serde(default)]
    pub revision: u64,
    /// RFC 3339 time of the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Deployment mode; defaults from the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A member that, when present, must be a string. For `identity_org_id`, `null` read as
/// "none" would drop the tenant's org check: a template that renders a missing variable as
/// `null` would open the tenant to every token with its tenant claim.
fn present_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// A validated binding: everything the router needs to send a tenant's traffic to its instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Billing subscription.
    pub subscription_id: SubscriptionId,
    /// Backend instance.
    pub instance_id: InstanceId,
    /// The instance's base URL.
    pub instance_url: UpstreamUrl,
    /// API base URL, when API traffic goes elsewhere.
    pub api_url: Option<UpstreamUrl>,
    /// Org the tenant's tokens must carry, when set.
    pub identity_org_id: Option<OrgId>,
    /// Current status.
    pub status: TenantStatus,
    /// Plan.
    pub plan: Plan,
    /// Region.
    pub region: Region,
    /// Custom domains (canonical, no duplicates).
    pub domains: Vec<DomainName>,
    /// Revision of the last change.
    pub revision: Revision,
    /// Time of the last change.
    pub updated_at: Option<OffsetDateTime>,
    /// Deployment mode.
    pub mode: Mode,
}

/// `s` without what may carry a secret, parsed as a URL or not: everything up to the last
/// `@` after `scheme://` (user info, even one holding `/`, `?` or `#`; more where a path or
/// query holds an `@`), then the query and fragment.
fn without_secrets(s: &str) -> String {
    let (scheme, rest) = match s.find("://") {
        Some(end) => (&s[..end + 3], &s[end + 3..]),
        None => ("", s),
    };
    let rest = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    format!("{scheme}{rest}")
}

/// `s` quoted for an error message, cut to its first 80 characters: a record's bad value can
/// be megabytes, and it ends up in a log line.
pub(crate) fn quoted(s: &str) -> String {
    const SHOWN: usize = 80;
    match s.char_indices().nth(SHOWN) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    field: &'static str,
    s: &str,
    expected: &str,
) -> Result<T, FieldError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        FieldError::new(
            field,
            format!(
                "unknown {field} {q}; expected one of {expected}",
                q = quoted(s)
            ),
        )
    })
}

impl Binding {
    /// Whether `other` is this binding at another revision: every field but `revision` and
    /// `updated_at` equal, so a router serves the two alike.
    pub fn same_but_revision(&self, other: &Binding) -> bool {
        // Compared whole (the derived `PartialEq`), so that a field added later is compared
        // too; once per admin write, the clone costs nothing that matters.
        let mut other = other.clone();
        other.revision = self.revision;
        other.updated_at = self.updated_at;
        *self == other
    }

    /// Validates a wire record. Returns every field problem at once.
    pub fn from_record(r: &BindingRecord) -> Result<Binding, Vec<FieldError>> {
        Self::from_record_with(r, &mut Interner::default())
    }

    /// Like [`Binding::from_record`], sharing equal URLs and ids through `interner`.
    pub fn from_record_with(
        r: &BindingRecord,
        interner: &mut Interner,
    ) -> Result<Binding, Vec<FieldError>> {
        let mut errs = Vec::new();
        macro_rules! take {
            ($e:expr) => {
                match $e {
                    Ok(v) => Some(v),
                    Err(e) => {
                        errs.push(e);
                        None
                    }
                }
            };
        }
        let tenant_id = take!(TenantId::parse(&r.tenant_id));
        let subscription_id = take!(SubscriptionId::parse(&r.subscription_id));
        let instance_id = take!(interner.instance(&r.instance_id));
        let instance_url = take!(interner.url("instance_url", &r.instance_url));
        let api_url = match &r.api_url {
            None => Some(None),
            Some(s) => take!(interner.url("api_url", s)).map(Some),
        };
        let identity_org_id = match &r.identity_org_id {
            None => Some(None),
            Some(s) => take!(OrgId::parse(s)).map(Some),
        };
        let status = take!(r.status.parse::<TenantStatus>());
        let plan: Option<Plan> = take!(parse_enum("plan", &r.plan, "solo, team, enterprise"));
        let region = take!(interner.region(&r.region));
        let mut domains = Vec::with_capacity(r.domains.len().min(MAX_DOMAINS));
        let mut seen = std::collections::HashSet::with_capacity(domains.capacity());
        if r.domains.len() > MAX_DOMAINS {
            errs.push(FieldError::new(
                "domains",
                format!(
                    "{} custom domains; a tenant may have at most {MAX_DOMAINS}",
                    r.domains.len()
                ),
            ));
        } else {
            for d in &r.domains {
                if let Some(d) = take!(DomainName::parse(d)) {
                    if seen.insert(d.clone()) {
                        domains.push(d);
                    } else {
                        errs.push(FieldError::new("domains", format!("{d} is listed twice")));
                    }
                }
            }
        }
        let updated_at = match &r.updated_at {
            None => Some(None),
            Some(s) => take!(OffsetDateTime::parse(
                s,
                &time::format_description::well_known::Rfc3339
            )
            .map_err(|e| FieldError::new(
                "updated_at",
                format!("{q} is not an RFC 3339 time: {e}", q = quoted(s))
            )))
            .map(Some),
        };
        let mode: Option<Option<Mode>> = match &r.mode {
            None => Some(None),
            Some(s) => take!(parse_enum("mode", s, "isolated, cooperative")).map(Some),
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        // Every `take!` above succeeded, so each Option is Some.
        match (
            tenant_id,
            subscription_id,
            instance_id,
            instance_url,
            api_url,
            identity_org_id,
            status,
            plan,
            region,
            updated_at,
            mode,
        ) {
            (
                Some(tenant_id),
                Some(subscription_id),
                Some(instance_id),
                Some(instance_url),
                Some(api_url),
                Some(identity_org_id),
                Some(status),
                Some(plan),
                Some(region),
                Some(updated_at),
                Some(mode),
            ) => Ok(Binding {
                tenant_id,
                subscription_id,
                instance_id,
                instance_url,
                api_url,
                identity_org_id,
                status,
                plan,
                region,
                domains,
                revision: Revision(r.revision),
                updated_at,
                mode: mode.unwrap_or(plan.default_mode()),
            }),
            _ => Err(vec![FieldError::new("record", "invalid record".to_owned())]),
        }
    }

    /// The wire form of this binding.
    pub fn to_record(&self) -> BindingRecord {
        BindingRecord {
            tenant_id: self.tenant_id.to_string(),
            subscription_id: self.subscription_id.to_string(),
            instance_id: self.instance_id.to_string(),
            instance_url: self.instance_url.to_string(),
            api_url: self.api_url.as_ref().map(ToString::to_string),
            identity_org_id: self.identity_org_id.as_ref().map(ToString::to_string),
            status: self.status.as_str().to_owned(),
            plan: serde_json::to_value(self.plan)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            region: self.region.to_string(),
            domains: self.domains.iter().map(ToString::to_string).collect(),
            revision: self.revision.0,
            updated_at: self.updated_at.and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }),
            mode: serde_json::to_value(self.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned)),
        }
    }
}

/// A valid binding for unit tests: `tenant` at `revision`, with `domains`.
#[cfg(test)]
pub(crate) fn test_binding(tenant: &str, revision: u64, domains: &[&str]) -> Arc<Binding> {
    let r = BindingRecord {
        tenant_id: tenant.into(),
        subscription_id: "s".into(),
        instance_id: "i".into(),
        instance_url: "http://10.0.0.1".into(),
        api_url: None,
        identity_org_id: None,
        status: "active".into(),
        plan: "team".into(),
        region: "eu".into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        revision,
        updated_at: None,
        mode: None,
    };
    Arc::new(Binding::from_record(&r).expect("valid test binding"))
}

#[cfg(test)]
mod limits {
    use super::*;

    fn record(domains: Vec<String>, url: String) -> BindingRecord {
        BindingRecord {
            tenant_id: "acme".into(),
            subscription_id: "s".into(),
            instance_id: "i".into(),
            instance_url: url,
            api_url: None,
            identity_org_id: None,
            status: "active".into(),
            plan: "team".into(),
            region: "eu".into(),
            domains,
            revision: 0,
            updated_at: None,
            mode: None,
        }
    }

    fn field_errors(r: &BindingRecord) -> Vec<String> {
        match Binding::from_record(r) {
            Ok(_) => Vec::new(),
            Err(errs) => errs.iter().map(ToString::to_string).collect(),
        }
    }

    /// Each URL loads as an `instance_url`, or is refused, as its flag says.
    fn loads_as_instance_url(cases: &[(&str, bool)]) {
        for &(url, ok) in cases {
            let parsed = UpstreamUrl::parse("instance_url", url);
            assert_eq!(parsed.is_ok(), ok, "{url}: {parsed:?}");
        }
    }

    #[test]
    fn a_refused_url_is_shown_without_its_user_info_or_query() {
        // The refusal is logged and printed by `check`: a password or token in the URL was.
        for (url, says) in [
            (
                "http://admin:PassSECRET@10.0.0.1:8080/app",
                "\"http://10.0.0.1:8080/app\": user info is not allowed (not shown here)",
            ),
            (
                "https://inst.internal/app?token=SECRET#SECRET",
                "\"https://inst.internal/app\": query and fragment are not allowed (not shown here)",
            ),
            // Refused before it parses, or for its scheme: quoted without its user info.
            (
                "http://admin:SECRET@h:99999/x",
                "\"http://h:99999/x\" is not a URL",
            ),
            ("ftp://u:SECRET@h/x", "\"ftp://h/x\": scheme must be http or https"),
            (
                "http://u:SE?CRET@h:99999/x",
                "\"http://h:99999/x\" is not a URL",
            ),
        ] {
            let e = UpstreamUrl::parse("instance_url", url).unwrap_err().to_string();
            assert!(e.contains(says) && !e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn a_url_that_parsing_would_mend_into_another_is_refused() {
        // The WHATWG parser reads each of these as another URL: a template whose host or port
        // came out empty named some other instance.
        loads_as_instance_url(&[
            ("http:///path", false),
            ("http:////x", false),
            ("http://127.0.0.1:", false),
            ("http://[::1]:", false),
            ("http://:8080", false),
            ("http:/127.0.0.1:47390", false),
            ("http:127.0.0.1:47390", false),
            ("http://a..b/", false),
            ("http://.a.b/", false),
            ("http://a../", false),
            // Addresses and names in another spelling than the one they are read as.
            ("http://010.0.0.1/", false),
            ("http://10.1/", false),
            ("http://167772161/", false),
            ("http://0x0a.0.0.1/", false),
            ("http://%31%30.0.0.1/", false),
            ("http://\u{ff11}\u{ff10}.0.0.1/", false),
            ("http://b\u{fc}cher.example/", false),
            ("http://[0:0:0:0:0:0:0:1]:8080/", true),
            ("http://Inst.Internal:8080/", true),
            (" http://10.0.0.1", false),
            ("http://10.0.0.1 ", false),
            ("http://10.0.0.1:80\t80", false),
            ("http://10.0.0.1/a\nb", false),
            ("http:\\\\10.0.0.1\\x", false),
            ("http://10.0.0.1\\x", false),
            // As written.
            ("HTTP://10.0.0.1:8080/base/", true),
            ("http://inst.internal.", true),
            ("https://[::1]:8443/", true),
        ]);
    }

    #[test]
    fn an_address_or_port_no_instance_has_is_refused() {
        loads_as_instance_url(&[
            ("http://0.0.0.0:8080", false),
            ("http://0:8080", false),
            ("http://[::]:8080", false),
            ("http://[::ffff:0.0.0.0]:8080", false),
            ("https://224.0.0.1", false),
            ("http://[ff02::1]", false),
            ("http://255.255.255.255", false),
            ("http://10.0.0.1:0", false),
            ("http://instance.internal:0/base", false),
            ("http://10.0.0.1", true),
            ("http://127.0.0.1:8080", true),
            ("http://[::1]:8080", true),
            ("http://[::ffff:10.0.0.1]", true),
            ("http://10.255.255.255", true),
            ("http://instance.internal:8080", true),
        ]);
    }

    #[test]
    fn every_spelling_of_those_addresses_is_refused_and_no_host_that_names_one_instance() {
        loads_as_instance_url(&[
            // Other spellings of 0.0.0.0, ::, broadcast and multicast.
            ("http://0:8080", false),
            ("http://0x0:8080", false),
            ("http://0.0:8080", false),
            ("http://00.0.0.0:8080", false),
            ("http://[::ffff:0:0]:8080", false),
            ("http://[0::0]:8080", false),
            ("http://[0:0:0:0:0:0:0:0]:8080", false),
            ("http://[::0.0.0.0]:8080", false),
            ("http://4294967295", false),
            ("http://0xffffffff", false),
            ("http://[::ffff:255.255.255.255]", false),
            ("http://[::ffff:224.0.0.251]", false),
            ("https://239.255.255.250:8443", false),
            ("http://[ff05::1:3]", false),
            // Names and addresses of one host each.
            ("https://inst.tenant_a.internal", true),
            ("https://a.b_c.d.internal", true),
            ("http://a_b.c.d", true),
            ("https://[2001:db8::1]:8443/base", true),
            ("https://[::1]", true),
            ("https://[::ffff:7f00:1]", true),
            ("http://0.0.0.1", true),
            ("http://10.0.0.0", true),
            ("http://192.168.1.255", true),
            ("http://[fe80::1]", true),
            ("http://instance.internal:65535", true),
        ]);
    }

    #[test]
    fn an_https_host_whose_certificate_pingora_would_check_for_another_name_is_refused() {
        loads_as_instance_url(&[
            ("https://tenant_a.inst.internal", false),
            ("https://TENANT_A.inst.internal:8443/base", false),
            ("https://a_.b.c.", false),
            // Names Pingora checks as they are.
            ("https://tenant-a.inst.internal", true),
            ("https://tenant_a.internal", true),
            ("https://inst.tenant_a.internal", true),
            ("https://127.0.0.1", true),
            // Plain HTTP checks no certificate.
            ("http://tenant_a.inst.internal", true),
        ]);
        let err = UpstreamUrl::parse("api_url", "https://tenant_a.inst.internal")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("api_url"), "{err}");
        assert!(err.contains("tenant-a.inst.internal"), "{err}");
    }

    #[test]
    fn oversized_records_are_refused_with_short_messages() {
        let url = "http://10.0.0.1".to_owned();
        let many = |n: usize| (0..n).map(|i| format!("d{i}.example.com")).collect();
        assert!(field_errors(&record(many(MAX_DOMAINS), url.clone())).is_empty());
        let errs = field_errors(&record(many(100_000), url.clone()));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("at most 1000"), "{errs:?}");
        let mut twice = many(3);
        twice.push("d1.example.com".into());
        let errs = field_errors(&record(twice, url));
        assert!(
            errs[0].contains("d1.example.com is listed twice"),
            "{errs:?}"
        );

        let long = format!("http://10.0.0.1/{}", "a".repeat(MAX_URL_LEN));
        let errs = field_errors(&record(Vec::new(), long));
        assert!(errs[0].contains("longer than 2048 bytes"), "{errs:?}");
        assert!(errs[0].len() < 200, "{errs:?}");
        let mut bad_plan = record(Vec::new(), "http://10.0.0.1".into());
        bad_plan.plan = "x".repeat(1_000_000);
        let errs = field_errors(&bad_plan);
        assert!(errs[0].contains("(1000000 bytes)"), "{errs:?}");
        assert!(errs[0].len() < 200, "{errs:?}");
    }
}
