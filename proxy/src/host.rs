//! Which tenant a request is addressed to.
//!
//! The authority is read once ([`request_authority`]: exactly one `Host`, agreeing with an
//! absolute-form target), then canonicalised and mapped ([`resolve_host`]): `<tenant>.<base>`
//! for a configured base domain, otherwise a custom domain that the binding table may know.
//! Anything ambiguous is refused before any instance is contacted.

use nexus_binding_store::TenantId;

/// Longest host name (RFC 1035).
const MAX_NAME_LEN: usize = 253;

/// Where a request is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTarget {
    /// `<tenant>.<base domain>`.
    Subdomain(TenantId),
    /// Any other well-formed name (canonical: lowercase, no port, no trailing dot); looked up in
    /// the binding table's domain index.
    CustomDomain(String),
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
    /// The absolute-form request-target names another host than `Host`.
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

/// Picks the one authority of a request.
///
/// - HTTP/1.1: exactly one `Host` header, required even with an absolute-form target (RFC 9112
///   §3.2); when the target is absolute-form its authority must name the same host.
/// - HTTP/2: `:authority` (given here as `uri_authority`); a `Host` header, if also present,
///   must agree with it.
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
            if same_authority(h, a) {
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

/// Whether two authorities name the same host (case, port and trailing dot aside).
fn same_authority(a: &str, b: &str) -> bool {
    match (split_port(a), split_port(b)) {
        (Ok((ha, _)), Ok((hb, _))) => {
            let ha = ha.strip_suffix('.').unwrap_or(ha);
            let hb = hb.strip_suffix('.').unwrap_or(hb);
            ha.eq_ignore_ascii_case(hb)
        }
        _ => false,
    }
}

/// Splits `name[:port]`; IPv6 literals (`[...]`) are reported as such.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), HostError> {
    if authority.starts_with('[') {
        return Err(HostError::IpLiteral);
    }
    match authority.rsplit_once(':') {
        None => Ok((authority, None)),
        Some((name, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|c| c.is_ascii_digit()) {
                return Err(HostError::Malformed);
            }
            match port.parse::<u16>() {
                Ok(p) if p > 0 => Ok((name, Some(p))),
                _ => Err(HostError::Malformed),
            }
        }
    }
}

/// Canonicalises an authority and maps it to a tenant or a custom domain.
pub fn resolve_host(authority: &str, base_domains: &[String]) -> Result<HostTarget, HostError> {
    if authority.contains('@') {
        return Err(HostError::Malformed);
    }
    let (name, _port) = split_port(authority)?;
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(HostError::Malformed);
    }
    let bytes = name.as_bytes();
    if !bytes
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
    {
        return Err(HostError::Malformed);
    }
    for label in name.split('.') {
        let l = label.as_bytes();
        if l.is_empty() || l.len() > 63 || l[0] == b'-' || l[l.len() - 1] == b'-' {
            return Err(HostError::Malformed);
        }
    }
    // An all-numeric (or hex-looking numeric) last label means an IPv4 address in one of its
    // many spellings (127.1, 0x7f.1, 2130706433): refuse them all.
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|c| c.is_ascii_digit())
        || (last.len() > 2
            && last[..2].eq_ignore_ascii_case("0x")
            && last[2..].bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(HostError::IpLiteral);
    }
    let canonical = name.to_ascii_lowercase();

    // Longest matching base domain wins, so nested bases (`eu.example.com` inside
    // `example.com`) address the inner one.
    let mut best: Option<&str> = None;
    for base in base_domains {
        if canonical.len() > base.len() + 1
            && canonical.ends_with(base.as_str())
            && canonical.as_bytes()[canonical.len() - base.len() - 1] == b'.'
            && best.is_none_or(|b| base.len() > b.len())
        {
            best = Some(base);
        }
    }
    if let Some(base) = best {
        let label = &canonical[..canonical.len() - base.len() - 1];
        if !label.contains('.') {
            if let Ok(tenant) = TenantId::parse(label) {
                return Ok(HostTarget::Subdomain(tenant));
            }
        }
    }
    Ok(HostTarget::CustomDomain(canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bases() -> Vec<String> {
        vec!["nexus.app".to_owned(), "eu.nexus.app".to_owned()]
    }

    fn sub(t: &str) -> Result<HostTarget, HostError> {
        Ok(HostTarget::Subdomain(TenantId::parse(t).expect("tenant")))
    }

    fn custom(d: &str) -> Result<HostTarget, HostError> {
        Ok(HostTarget::CustomDomain(d.to_owned()))
    }

    #[test]
    fn resolve_table() {
        let cases = [
            ("acme.nexus.app", sub("acme")),
            ("ACME.Nexus.App", sub("acme")),
            ("acme.nexus.app:8443", sub("acme")),
            ("acme.nexus.app.", sub("acme")),
            ("acme.nexus.app.:80", sub("acme")),
            ("acme.eu.nexus.app", sub("acme")),
            ("eu.nexus.app", sub("eu")),
            ("a.b.nexus.app", custom("a.b.nexus.app")),
            ("nexus.app", custom("nexus.app")),
            ("app.acme.com", custom("app.acme.com")),
            ("xn--caf-dma.example", custom("xn--caf-dma.example")),
            ("acme.nexus.app..", Err(HostError::Malformed)),
            ("acme..nexus.app", Err(HostError::Malformed)),
            ("-acme.nexus.app", Err(HostError::Malformed)),
            ("acme_1.nexus.app", Err(HostError::Malformed)),
            ("acme%2e.nexus.app", Err(HostError::Malformed)),
            ("user@acme.nexus.app", Err(HostError::Malformed)),
            ("acme.nexus.app:", Err(HostError::Malformed)),
            ("acme.nexus.app:0", Err(HostError::Malformed)),
            ("acme.nexus.app:65536", Err(HostError::Malformed)),
            ("acme.nexus.app:80x", Err(HostError::Malformed)),
            ("café.nexus.app", Err(HostError::Malformed)),
            ("", Err(HostError::Malformed)),
            ("127.0.0.1", Err(HostError::IpLiteral)),
            ("127.0.0.1:8080", Err(HostError::IpLiteral)),
            ("127.1", Err(HostError::IpLiteral)),
            ("0x7f.1", Err(HostError::IpLiteral)),
            ("2130706433", Err(HostError::IpLiteral)),
            ("[::1]", Err(HostError::IpLiteral)),
            ("[::1]:8080", Err(HostError::IpLiteral)),
        ];
        for (host, want) in cases {
            assert_eq!(resolve_host(host, &bases()), want, "{host:?}");
        }
        let long_label = format!("{}.nexus.app", "a".repeat(64));
        assert_eq!(
            resolve_host(&long_label, &bases()),
            Err(HostError::Malformed)
        );
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table-driven test row is a tuple by design
    fn authority_table() {
        let h = |s: &'static str| s.as_bytes();
        let cases: Vec<(Vec<&[u8]>, Option<&str>, bool, Result<&str, HostError>)> = vec![
            (vec![h("a.x")], None, false, Ok("a.x")),
            (vec![h(" a.x ")], None, false, Ok("a.x")),
            (vec![], None, false, Err(HostError::Missing)),
            (vec![], Some("a.x"), false, Err(HostError::Missing)),
            (vec![], Some("a.x"), true, Ok("a.x")),
            (
                vec![h("a.x"), h("a.x")],
                None,
                false,
                Err(HostError::Duplicate),
            ),
            (
                vec![h("a.x"), h("b.x")],
                None,
                false,
                Err(HostError::Duplicate),
            ),
            (vec![h("a.x, b.x")], None, false, Err(HostError::Duplicate)),
            (vec![h("a.x")], Some("a.x"), false, Ok("a.x")),
            (vec![h("A.X:80")], Some("a.x."), false, Ok("A.X:80")),
            (
                vec![h("a.x")],
                Some("b.x"),
                false,
                Err(HostError::AuthorityMismatch),
            ),
            (
                vec![h("a.x")],
                Some("b.x"),
                true,
                Err(HostError::AuthorityMismatch),
            ),
            (vec![&[0xff, 0xfe]], None, false, Err(HostError::Malformed)),
        ];
        for (headers, authority, h2, want) in cases {
            assert_eq!(
                request_authority(&headers, authority, h2),
                want,
                "{headers:?} {authority:?}"
            );
        }
    }
}
