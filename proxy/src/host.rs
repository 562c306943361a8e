//! Which tenant a request is addressed to.
//!
//! The authority is read once ([`request_authority`]: exactly one `Host`, agreeing with an
//! absolute-form target), then canonicalised and mapped ([`resolve_host`]): `<tenant>.<base>`
//! for a configured base domain, otherwise a custom domain that the binding table may know
//! (under a base domain, only in the namespace of the tenant it is under). Anything ambiguous
//! is refused before any instance is contacted.
//!
//! Both functions are byte scans over the input; for an already-lowercase host the only
//! allocation is the [`TenantId`] (or custom-domain `String`) that the result owns.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use nexus_binding_store::TenantId;

/// Longest host name (RFC 1035), not counting a trailing dot.
const MAX_NAME_LEN: usize = 253;

/// Longest DNS label (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// Where a request is addressed. Borrowed from the request's host when that is already
/// canonical, so resolving a host allocates nothing on the usual path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTarget<'a> {
    /// `<tenant>.<base domain>`.
    Subdomain(TenantLabel<'a>),
    /// A well-formed name outside every base domain (canonical: lowercase, no port, no
    /// trailing dot); looked up in the binding table's domain index.
    CustomDomain(Cow<'a, str>),
    /// A deeper name under a tenant's subdomain (`x.acme.<base>`, canonical): it is in that
    /// tenant's namespace, so the domain index may route it to that tenant only.
    UnderTenant {
        /// The whole name, for the domain index.
        domain: Cow<'a, str>,
        /// The tenant whose subdomain it is under.
        tenant: TenantLabel<'a>,
    },
    /// A configured base domain itself, or a name under one with no tenant id in front of it:
    /// the operator's, never a tenant's. A tenant claiming it would be sent every cookie
    /// scoped to the base domain.
    Reserved,
}

/// A tenant id read from a host name: only made after the check [`TenantId::parse`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantLabel<'a>(Cow<'a, str>);

impl TenantLabel<'_> {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why the request's host was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No `Host` header (HTTP/1.1) and no `:authority` (HTTP/2).
    #[error("no Host header")]
    Missing,
    /// More than one `Host` header, or a list in one.
    #[error("more than one Host")]
    Duplicate,
    /// Not a valid host name (bad characters, empty labels, bad port, user info).
    #[error("malformed Host")]
    Malformed,
    /// An IP address instead of a name: no tenant lives at an address.
    #[error("IP literal as Host")]
    IpLiteral,
    /// The absolute-form request-target (or HTTP/2 `:authority`) names another host than `Host`.
    #[error("request-target authority disagrees with Host")]
    AuthorityMismatch,
}

impl HostError {
    /// Closed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HostError::Missing => "host_missing",
            HostError::Duplicate => "host_duplicate",
            HostError::Malformed => "host_malformed",
            HostError::IpLiteral => "host_ip_literal",
            HostError::AuthorityMismatch => "authority_mismatch",
        }
    }
}

/// Picks the one authority of a request, so that the tenant is read from exactly one place.
///
/// - `Host` must appear at most once, and not as a list (`a, b`): with two, a proxy and an
///   instance could each pick a different one (→ [`HostError::Duplicate`], even if identical).
/// - HTTP/1.1 requires `Host` even with an absolute-form target (RFC 9112 §3.2), so a target
///   authority without `Host` is [`HostError::Missing`], not a fallback.
/// - HTTP/2 carries `:authority` in the URI (`uri_authority`); it is used when there is no
///   `Host`.
/// - When both are present (absolute-form, or HTTP/2 with `Host`) they must name the same host
///   ignoring ASCII case, one trailing dot and the port (→ [`HostError::AuthorityMismatch`]).
///   The port is ignored because it never selects a tenant, and `http://a/` with `Host: a:80`
///   is one request. The `Host` value is returned; [`resolve_host`] validates it. (Pingora,
///   before the router, already refuses an HTTP/1 absolute-form authority that differs from
///   `Host` in any byte; this check is the router's own, for whatever reaches it.)
pub fn request_authority<'a>(
    host_headers: &[&'a [u8]],
    uri_authority: Option<&'a str>,
    is_http2: bool,
) -> Result<&'a str, HostError> {
    let host = match host_headers {
        [] => None,
        [one] => {
            let s = std::str::from_utf8(one).map_err(|_| HostError::Malformed)?;
            if s.contains(',') {
                return Err(HostError::Duplicate);
            }
            Some(s.trim_matches(|c| c == ' ' || c == '\t'))
        }
        _ => return Err(HostError::Duplicate),
    };
    match (host, uri_authority) {
        (Some(h), Some(a)) => {
            if name_part(h).eq_ignore_ascii_case(name_part(a)) {
                Ok(h)
            } else {
                Err(HostError::AuthorityMismatch)
            }
        }
        (Some(h), None) => Ok(h),
        (None, Some(a)) if is_http2 => Ok(a),
        (None, _) => Err(HostError::Missing),
    }
}

/// The host of an authority for comparison only: a `:digits` port and one trailing dot dropped,
/// brackets kept. Lenient on purpose: the chosen value is validated by [`resolve_host`].
fn name_part(authority: &str) -> &str {
    split_name(authority).0
}

/// An authority as [`name_part`] reads it, and its `:port` (empty without one).
fn split_name(authority: &str) -> (&str, &str) {
    let (name, port) = match authority.rfind(':') {
        Some(i)
            if authority[i + 1..].bytes().all(|c| c.is_ascii_digit())
                && !authority[i..].contains(']')
                && (authority.starts_with('[') || !authority[..i].contains(':')) =>
        {
            authority.split_at(i)
        }
        _ => (authority, ""),
    };
    (name.strip_suffix('.').unwrap_or(name), port)
}

/// An authority spelt as it was routed: its host in lowercase without the trailing dot
/// ([`resolve_host`]'s reading), its port kept. Borrowed when it already is so.
pub fn routed_authority(authority: &str) -> Cow<'_, str> {
    let (name, port) = split_name(authority);
    if name.len() + port.len() == authority.len() && !name.bytes().any(|c| c.is_ascii_uppercase()) {
        return Cow::Borrowed(authority);
    }
    Cow::Owned(format!("{}{port}", name.to_ascii_lowercase()))
}

/// Whether the host `authority` names (port and a trailing dot aside, in any case) is
/// `server_name`, the lowercase name a TLS client asked for. An authority that does not
/// parse names no host.
pub fn names_server(authority: &str, server_name: &str) -> bool {
    split_port(authority).is_ok_and(|name| {
        name.strip_suffix('.')
            .unwrap_or(name)
            .eq_ignore_ascii_case(server_name)
    })
}

/// Splits `host[:port]` and checks the port (1–65535, digits only); refuses user info and
/// classifies IP literals, bracketed or not.
fn split_port(authority: &str) -> Result<&str, HostError> {
    if authority.contains('@') {
        return Err(HostError::Malformed);
    }
    if let Some(rest) = authority.strip_prefix('[') {
        // `[IPv6]` or `[vX.future]`, optionally with a port: an address either way.
        let (inner, after) = rest.split_once(']').ok_or(HostError::Malformed)?;
        let ok_inner = inner.parse::<Ipv6Addr>().is_ok() || inner.starts_with(['v', 'V']);
        let ok_after = after.is_empty() || after.strip_prefix(':').is_some_and(valid_port);
        return Err(if ok_inner && ok_after {
            HostError::IpLiteral
        } else {
            HostError::Malformed
        });
    }
    let (name, port) = match authority.rsplit_once(':') {
        None => (authority, None),
        Some((name, port)) => (name, Some(port)),
    };
    if name.contains(':') {
        // Only an unbracketed IPv6 address has more than one colon.
        return Err(if authority.parse::<Ipv6Addr>().is_ok() {
            HostError::IpLiteral
        } else {
            HostError::Malformed
        });
    }
    match port {
        Some(p) if !valid_port(p) => Err(HostError::Malformed),
        _ => Ok(name),
    }
}

/// A port: 1–5 digits, value 1–65535.
fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|c| c.is_ascii_digit())
        && p.parse::<u16>().is_ok_and(|n| n > 0)
}

/// Checks a host name (port and trailing dot already removed): 1–253 bytes of LDH labels, each
/// 1–63 of `A-Za-z0-9-` not starting or ending with `-`; a numeric last label is an IPv4
/// address.
fn check_name(name: &str) -> Result<(), HostError> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > MAX_NAME_LEN {
        return Err(HostError::Malformed);
    }
    let mut last: &[u8] = b;
    for label in b.split(|&c| c == b'.') {
        let ok = !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && label[0] != b'-'
            && label[label.len() - 1] != b'-'
            && label
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-');
        if !ok {
            return Err(HostError::Malformed);
        }
        last = label;
    }
    // A name whose last label is a number is an IPv4 address in one of its many spellings
    // (127.1, 0x7f.1, 2130706433, 127.0.0.0x) for URL parsers (WHATWG "ends in a number"):
    // refuse them all rather than guess which one an upstream would use.
    let hex = last.len() >= 2 && last[0] == b'0' && last[1].eq_ignore_ascii_case(&b'x');
    if last.iter().all(u8::is_ascii_digit) || (hex && last[2..].iter().all(u8::is_ascii_hexdigit)) {
        return Err(HostError::IpLiteral);
    }
    Ok(())
}

/// Canonicalises an authority and maps it to a tenant or a custom domain.
///
/// Canonical: ASCII lowercase, port removed (must be 1–65535), one trailing dot removed. User
/// info → [`HostError::Malformed`]; IPv4/IPv6 literals in any spelling →
/// [`HostError::IpLiteral`]; anything else outside LDH labels (underscores, `%`, non-ASCII —
/// IDNs arrive as `xn--` punycode) → [`HostError::Malformed`].
///
/// `<label>.<base>` for a base in `base_domains` (the longest wins when bases nest), where
/// `label` is a valid tenant id, is a [`HostTarget::Subdomain`]; a deeper name
/// `a.<label>.<base>` is [`HostTarget::UnderTenant`], and a base itself (even one nested
/// under another base) is [`HostTarget::Reserved`]. Every other well-formed name is a
/// [`HostTarget::CustomDomain`] for the domain index, so it can only reach a tenant that
/// claimed it. `base_domains` must be canonical (the config loader checks this).
pub fn resolve_host<'a>(
    authority: &'a str,
    base_domains: &[String],
) -> Result<HostTarget<'a>, HostError> {
    let name = split_port(authority)?;
    let name = name.strip_suffix('.').unwrap_or(name);
    check_name(name)?;
    let canonical: Cow<'a, str> = if name.bytes().any(|c| c.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    };
    // The tenant's label is the last one in front of the base: cut from the name as it is.
    let label = match in_front_of_base(&canonical, base_domains) {
        InFront::Outside => return Ok(HostTarget::CustomDomain(canonical)),
        InFront::Base => return Ok(HostTarget::Reserved),
        InFront::Labels(front) => front.rfind('.').map_or(0, |dot| dot + 1)..front.len(),
    };
    if !TenantId::is_valid(&canonical[label.clone()]) {
        return Ok(HostTarget::Reserved);
    }
    Ok(match canonical {
        Cow::Borrowed(name) if label.start == 0 => {
            HostTarget::Subdomain(TenantLabel(Cow::Borrowed(&name[label])))
        }
        Cow::Owned(mut name) if label.start == 0 => {
            name.truncate(label.end);
            HostTarget::Subdomain(TenantLabel(Cow::Owned(name)))
        }
        Cow::Borrowed(name) => HostTarget::UnderTenant {
            domain: Cow::Borrowed(name),
            tenant: TenantLabel(Cow::Borrowed(&name[label])),
        },
        Cow::Owned(name) => HostTarget::UnderTenant {
            tenant: TenantLabel(Cow::Owned(name[label].to_owned())),
            domain: Cow::Owned(name),
        },
    })
}

/// Where a name stands to the configured base domains.
enum InFront<'n> {
    /// Under none of them.
    Outside,
    /// It is one of them.
    Base,
    /// The labels in front of the longest base it is under, without the joining dot.
    Labels(&'n str),
}

fn in_front_of_base<'n>(name: &'n str, base_domains: &[String]) -> InFront<'n> {
    let mut best: Option<&str> = None;
    for base in base_domains {
        if name == base {
            // A base domain itself is never a tenant's, even when it sits under another base
            // (`eu.example.com` inside `example.com`).
            return InFront::Base;
        }
        let Some(front) = name
            .strip_suffix(base.as_str())
            .and_then(|f| f.strip_suffix('.'))
        else {
            continue;
        };
        if !front.is_empty() && best.is_none_or(|b| b.len() > front.len()) {
            best = Some(front);
        }
    }
    best.map_or(InFront::Outside, InFront::Labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bases() -> Vec<String> {
        vec!["nexus.app".to_owned(), "eu.nexus.app".to_owned()]
    }

    fn sub(t: &str) -> Result<HostTarget<'_>, HostError> {
        assert!(TenantId::is_valid(t), "{t}");
        Ok(HostTarget::Subdomain(TenantLabel(Cow::Borrowed(t))))
    }

    fn custom(d: &str) -> Result<HostTarget<'_>, HostError> {
        Ok(HostTarget::CustomDomain(Cow::Borrowed(d)))
    }

    fn under<'a>(d: &'a str, t: &'a str) -> Result<HostTarget<'a>, HostError> {
        Ok(HostTarget::UnderTenant {
            domain: Cow::Borrowed(d),
            tenant: TenantLabel(Cow::Borrowed(t)),
        })
    }

    #[test]
    fn resolve_table() {
        use HostError::*;
        let cases = [
            // Subdomains: case, port, one trailing dot, nested bases (longest wins).
            ("acme.nexus.app", sub("acme")),
            ("ACME.Nexus.App", sub("acme")),
            ("acme.nexus.app:8443", sub("acme")),
            ("acme.nexus.app:080", sub("acme")),
            ("acme.nexus.app:65535", sub("acme")),
            ("acme.nexus.app.", sub("acme")),
            ("acme.nexus.app.:80", sub("acme")),
            ("acme.eu.nexus.app", sub("acme")),
            ("ACME.EU.NEXUS.APP.", sub("acme")),
            ("a-1.nexus.app", sub("a-1")),
            ("xn--80ak6aa92e.nexus.app", sub("xn--80ak6aa92e")),
            // Deeper names are in the namespace of the tenant in front of the base.
            ("a.b.nexus.app", under("a.b.nexus.app", "b")),
            ("x.acme.eu.nexus.app", under("x.acme.eu.nexus.app", "acme")),
            ("x.y.acme.nexus.app", under("x.y.acme.nexus.app", "acme")),
            ("API.Acme.Nexus.App.", under("api.acme.nexus.app", "acme")),
            // Bare bases (even nested ones) are no tenant's.
            ("nexus.app", Ok(HostTarget::Reserved)),
            ("Nexus.App.:443", Ok(HostTarget::Reserved)),
            ("eu.nexus.app", Ok(HostTarget::Reserved)),
            // Custom domains: names outside every base.
            ("acmenexus.app", custom("acmenexus.app")),
            ("App.Acme.com", custom("app.acme.com")),
            ("xn--caf-dma.example", custom("xn--caf-dma.example")),
            ("localhost", custom("localhost")),
            ("acme.0xg", custom("acme.0xg")),
            ("acme.1e3", custom("acme.1e3")),
            // Malformed.
            ("acme.nexus.app..", Err(Malformed)),
            ("acme..nexus.app", Err(Malformed)),
            (".acme.nexus.app", Err(Malformed)),
            (".", Err(Malformed)),
            ("-acme.nexus.app", Err(Malformed)),
            ("acme-.nexus.app", Err(Malformed)),
            ("acme_1.nexus.app", Err(Malformed)),
            ("acme%2e.nexus.app", Err(Malformed)),
            ("acme .nexus.app", Err(Malformed)),
            ("user@acme.nexus.app", Err(Malformed)),
            ("user:pw@acme.nexus.app", Err(Malformed)),
            ("acme.nexus.app:", Err(Malformed)),
            ("acme.nexus.app:0", Err(Malformed)),
            ("acme.nexus.app:65536", Err(Malformed)),
            ("acme.nexus.app:080808", Err(Malformed)),
            ("acme.nexus.app:80x", Err(Malformed)),
            ("acme.nexus.app:+80", Err(Malformed)),
            ("acme.nexus.app:80:80", Err(Malformed)),
            ("café.nexus.app", Err(Malformed)),
            ("", Err(Malformed)),
            (":80", Err(Malformed)),
            ("[::1", Err(Malformed)),
            ("[nope]", Err(Malformed)),
            ("[::1]x", Err(Malformed)),
            ("[::1]:0", Err(Malformed)),
            // IP literals in every spelling.
            ("127.0.0.1", Err(IpLiteral)),
            ("127.0.0.1:8080", Err(IpLiteral)),
            ("127.0.0.1.", Err(IpLiteral)),
            ("127.1", Err(IpLiteral)),
            ("0x7f.1", Err(IpLiteral)),
            ("0x7f", Err(IpLiteral)),
            ("127.0.0.0x", Err(IpLiteral)),
            ("1.0X7F", Err(IpLiteral)),
            ("2130706433", Err(IpLiteral)),
            ("acme.123", Err(IpLiteral)),
            ("[::1]", Err(IpLiteral)),
            ("[::1]:8080", Err(IpLiteral)),
            ("[v1.x]", Err(IpLiteral)),
            ("::1", Err(IpLiteral)),
            ("fe80::1:443", Err(IpLiteral)),
        ];
        for (host, want) in cases {
            assert_eq!(resolve_host(host, &bases()), want, "{host:?}");
        }
    }

    #[test]
    fn length_limits() {
        let label63 = "a".repeat(63);
        assert_eq!(
            resolve_host(&format!("{label63}.nexus.app"), &bases()),
            sub(&label63)
        );
        let label64 = "a".repeat(64);
        assert_eq!(
            resolve_host(&format!("{label64}.nexus.app"), &bases()),
            Err(HostError::Malformed)
        );
        // 3 x 63 + 3 dots + 61 = 253 bytes is the longest name; one more byte is too long.
        let name253 = [label63.as_str(); 3].join(".") + "." + &"b".repeat(61);
        assert_eq!(name253.len(), 253);
        assert_eq!(resolve_host(&name253, &bases()), custom(&name253));
        assert_eq!(
            resolve_host(&format!("{name253}."), &bases()),
            custom(&name253)
        );
        assert_eq!(
            resolve_host(&format!("{name253}a"), &bases()),
            Err(HostError::Malformed)
        );
    }

    #[test]
    fn nested_bases_in_any_order() {
        let reversed = vec!["eu.nexus.app".to_owned(), "nexus.app".to_owned()];
        assert_eq!(resolve_host("acme.eu.nexus.app", &reversed), sub("acme"));
        assert_eq!(resolve_host("acme.nexus.app", &reversed), sub("acme"));
        assert_eq!(
            resolve_host("eu.nexus.app", &reversed),
            Ok(HostTarget::Reserved)
        );
        assert_eq!(
            resolve_host("x.acme.eu.nexus.app", &reversed),
            under("x.acme.eu.nexus.app", "acme")
        );
        assert_eq!(
            resolve_host("acme.nexus.app", &[]),
            custom("acme.nexus.app")
        );
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table-driven test row is a tuple by design
    fn authority_table() {
        use HostError::*;
        let h = |s: &'static str| s.as_bytes();
        let cases: Vec<(Vec<&[u8]>, Option<&str>, bool, Result<&str, HostError>)> = vec![
            // One Host, origin-form.
            (vec![h("a.x")], None, false, Ok("a.x")),
            (vec![h(" a.x\t")], None, false, Ok("a.x")),
            (vec![h("a.x")], None, true, Ok("a.x")),
            // No Host: only HTTP/2 may use the URI authority.
            (vec![], None, false, Err(Missing)),
            (vec![], None, true, Err(Missing)),
            (vec![], Some("a.x"), false, Err(Missing)),
            (vec![], Some("a.x"), true, Ok("a.x")),
            // Duplicates, even identical ones, and lists.
            (vec![h("a.x"), h("a.x")], None, false, Err(Duplicate)),
            (vec![h("a.x"), h("b.x")], None, false, Err(Duplicate)),
            (vec![h("a.x"), h("a.x")], Some("a.x"), true, Err(Duplicate)),
            (vec![h(""), h("")], None, false, Err(Duplicate)),
            (vec![h("a.x, b.x")], None, false, Err(Duplicate)),
            (vec![h("a.x,")], None, false, Err(Duplicate)),
            // Absolute-form / :authority must agree with Host (case, dot, port aside).
            (vec![h("a.x")], Some("a.x"), false, Ok("a.x")),
            (vec![h("A.X:80")], Some("a.x."), false, Ok("A.X:80")),
            (vec![h("a.x:80")], Some("a.x:8080"), false, Ok("a.x:80")),
            (vec![h("[::1]:80")], Some("[::1]"), false, Ok("[::1]:80")),
            (vec![h("a.x")], Some("b.x"), false, Err(AuthorityMismatch)),
            (vec![h("a.x")], Some("b.x"), true, Err(AuthorityMismatch)),
            (vec![h("a.x")], Some("u@a.x"), false, Err(AuthorityMismatch)),
            (vec![h("a.x")], Some("a.x.y"), false, Err(AuthorityMismatch)),
            (vec![h("a.x")], Some("a.x.."), false, Err(AuthorityMismatch)),
            (vec![h("a.x")], Some("[::1]"), false, Err(AuthorityMismatch)),
            // Not text.
            (vec![&[0xff, 0xfe]], None, false, Err(Malformed)),
        ];
        for (headers, authority, h2, want) in cases {
            assert_eq!(
                request_authority(&headers, authority, h2),
                want,
                "{headers:?} {authority:?} h2={h2}"
            );
        }
    }

    #[test]
    fn error_labels_are_distinct() {
        use HostError::*;
        let all = [Missing, Duplicate, Malformed, IpLiteral, AuthorityMismatch];
        let mut labels: Vec<_> = all.iter().map(HostError::label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }
}
