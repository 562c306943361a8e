//! The whole routing decision on fuzzed requests. Whatever comes in, the router must not panic,
//! and a request it routes must provably belong to the tenant it is routed to:
//! - the Host names that tenant (its subdomain or one of its custom domains), and a name under
//!   the base domain only when it is under that tenant's subdomain;
//! - with a token, the token's tenant (and org, when the binding pins one) are the tenant's;
//! - without a token, the path is public;
//! - the path sent on is normalised (absolute, no empty, `.` or `..` segments).

#![no_main]

#[path = "world.rs"]
mod world;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nexus_edge::decision::{decide, RequestFacts};
use nexus_edge::path::normalize_path;

#[derive(Arbitrary, Debug)]
enum Host<'a> {
    Tenant {
        index: u8,
        upper: bool,
        port: Option<u16>,
        dot: bool,
    },
    /// Tenant 0's custom domain.
    Domain {
        upper: bool,
        port: Option<u16>,
        dot: bool,
    },
    /// A name under the base domain that a binding claims.
    UnderBase {
        which: u8,
        upper: bool,
        port: Option<u16>,
        dot: bool,
    },
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
enum Token<'a> {
    None,
    Genuine(u8),
    /// A genuine token with one byte replaced.
    Flipped {
        index: u8,
        at: u16,
        byte: u8,
    },
    /// Two genuine tokens' parts spliced: header and payload of one, signature of another.
    Spliced {
        first: u8,
        second: u8,
    },
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    host: Host<'a>,
    second_host: Option<&'a [u8]>,
    authority: Option<&'a str>,
    http2: bool,
    target: &'a str,
    token: Token<'a>,
    as_cookie: bool,
    extra_authorization: Option<&'a [u8]>,
    /// An `Origin`, and whether the request says `Sec-Fetch-Site: same-site`.
    origin: Option<&'a [u8]>,
    same_site: bool,
}

fn host_bytes(host: &Host<'_>) -> Vec<u8> {
    match host {
        Host::Tenant {
            index,
            upper,
            port,
            dot,
        } => {
            let h = world::tenant_host(usize::from(*index) % (world::TENANTS + 1));
            dress(h, *upper, *port, *dot)
        }
        Host::Domain { upper, port, dot } => {
            dress(world::CUSTOM_DOMAIN.to_owned(), *upper, *port, *dot)
        }
        Host::UnderBase {
            which,
            upper,
            port,
            dot,
        } => {
            let names = world::claimed_under_base();
            let h = names[usize::from(*which) % names.len()].clone();
            dress(h, *upper, *port, *dot)
        }
        Host::Raw(raw) => raw.to_vec(),
    }
}

fn dress(mut h: String, upper: bool, port: Option<u16>, dot: bool) -> Vec<u8> {
    if upper {
        h = h.to_ascii_uppercase();
    }
    if dot {
        h.push('.');
    }
    if let Some(p) = port {
        h.push_str(&format!(":{p}"));
    }
    h.into_bytes()
}

fn token_text(token: &Token<'_>, pool: &[String]) -> Option<Vec<u8>> {
    let pick = |i: &u8| pool[usize::from(*i) % pool.len()].as_bytes().to_vec();
    match token {
        Token::None => None,
        Token::Genuine(i) => Some(pick(i)),
        Token::Flipped { index, at, byte } => {
            let mut t = pick(index);
            let at = usize::from(*at) % t.len();
            t[at] = *byte;
            Some(t)
        }
        Token::Spliced { first, second } => {
            let a = pick(first);
            let b = pick(second);
            let cut_a = a.iter().rposition(|&c| c == b'.').unwrap_or(0);
            let cut_b = b.iter().rposition(|&c| c == b'.').unwrap_or(0);
            let mut t = a[..cut_a].to_vec();
            t.extend_from_slice(&b[cut_b..]);
            Some(t)
        }
        Token::Raw(raw) => Some(raw.to_vec()),
    }
}

fuzz_target!(|input: Input<'_>| {
    let w = world::world();
    let host = host_bytes(&input.host);
    let mut hosts: Vec<&[u8]> = vec![&host];
    if let Some(second) = input.second_host {
        hosts.push(second);
    }
    let token = token_text(&input.token, &w.tokens);
    let bearer = token.as_ref().map(|t| [b"Bearer ".as_slice(), t].concat());
    let cookie = token
        .as_ref()
        .map(|t| [b"nexus_session=".as_slice(), t].concat());
    let mut authorization: Vec<&[u8]> = Vec::new();
    let mut cookies: Vec<&[u8]> = Vec::new();
    match (&bearer, &cookie, input.as_cookie) {
        (Some(_), Some(c), true) => cookies.push(c),
        (Some(b), _, _) => authorization.push(b),
        _ => {}
    }
    if let Some(extra) = input.extra_authorization {
        authorization.push(extra);
    }
    let origins: Vec<&[u8]> = input.origin.into_iter().collect();
    let facts = RequestFacts {
        host_headers: &hosts,
        uri_authority: input.authority,
        is_http2: input.http2,
        target: input.target,
        authorization: &authorization,
        cookies: &cookies,
        token_headers: &[],
        subprotocols: &[],
        origins: &origins,
        fetch_sites: if input.same_site {
            &[b"same-site"]
        } else {
            &[]
        },
        now_unix: w.now,
        server_name: None,
    };
    let Ok(d) = decide(&facts, &w.tenancy, &w.table, &w.auth) else {
        return;
    };

    let tenant = d.binding.tenant_id.as_str();
    let addressed = world::reference_host(&host).expect("a routed Host is text");
    let by_subdomain = addressed == format!("{tenant}.{}", nexus_bench::BASE);
    let by_domain = d.binding.domains.iter().any(|dn| dn.as_str() == addressed);
    assert!(
        by_subdomain || by_domain,
        "routed {addressed:?} to {tenant}"
    );
    // Under the base domain a name is in the namespace of the label in front of the base.
    assert_ne!(addressed, nexus_bench::BASE, "routed the base domain");
    if let Some(front) = addressed.strip_suffix(&format!(".{}", nexus_bench::BASE)) {
        let owner = front.rsplit('.').next();
        assert_eq!(
            owner,
            Some(tenant),
            "routed {addressed:?}, under {owner:?}, to {tenant}"
        );
    }

    match &d.identity {
        Some(id) => {
            assert_eq!(
                id.tenant.as_deref(),
                Some(tenant),
                "token of another tenant"
            );
            if let Some(org) = &d.binding.identity_org_id {
                assert_eq!(
                    id.org.as_deref(),
                    Some(org.as_str()),
                    "token of another org"
                );
            }
        }
        // Written apart from the router's segment-aware matcher, and looser (a prefix's own
        // path counts too), so it can only miss a bug, never raise a false alarm.
        None => assert!(
            w.tenancy.public_paths.iter().any(|p| {
                let base = p.trim_end_matches('/');
                d.path == base || d.path.starts_with(&format!("{base}/"))
            }),
            "served {:?} without a token",
            d.path
        ),
    }

    assert!(d.path.starts_with('/'), "path {:?}", d.path);
    for segment in d.path[1..].split('/').rev().skip(1) {
        assert!(
            !segment.is_empty() && segment != "." && segment != "..",
            "path {:?} not normalised",
            d.path
        );
    }
    assert!(
        !d.path.ends_with("/.") && !d.path.ends_with("/.."),
        "path {:?}",
        d.path
    );
    let again = normalize_path(&d.path).expect("a normalised path normalises");
    assert_eq!(again, d.path, "normalising is not a fixed point");
});
