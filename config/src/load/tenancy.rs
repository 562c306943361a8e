//! `[tenancy]`: base domains, public and recovery paths, the API prefix, the past-due notice
//! and the provisioning `Retry-After`.

use std::time::Duration;

use toml::de::DeTable;

use crate::reader::{Problems, Section};
use crate::settings::*;

use super::names::{check_domain, check_origin, check_path_prefix, check_prefix, is_token};

pub(super) fn parse(
    root: &DeTable<'_>,
    d: &TenancySettings,
    p: &mut Problems<'_>,
) -> Option<TenancySettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "tenancy", p);
    let base_domains = s
        .strings("base_domains", p, check_domain)
        .unwrap_or_else(|| d.base_domains.clone());
    if base_domains.is_empty() {
        p.push(
            "tenancy.base_domains",
            None,
            "must list at least one domain",
        );
    }
    let public_paths = s
        .strings("public_paths", p, check_path_prefix)
        .unwrap_or_else(|| d.public_paths.clone());
    let recovery_paths = s
        .strings("recovery_paths", p, check_path_prefix)
        .unwrap_or_else(|| d.recovery_paths.clone());
    let api_prefix = match s.string("api_prefix", p) {
        None => d.api_prefix.clone(),
        Some((v, at)) => check_prefix(&v).unwrap_or_else(|m| {
            p.push("tenancy.api_prefix", Some(at), m);
            v
        }),
    };
    let provisioning_retry_after = s
        .whole_seconds(
            "provisioning_retry_after",
            Duration::from_secs(1),
            Duration::from_secs(86_400),
            "Retry-After counts whole seconds",
            p,
        )
        .unwrap_or(d.provisioning_retry_after);
    let past_due_header = match s.string("past_due_header", p) {
        None => d.past_due_header.clone(),
        Some((v, at)) => {
            if !is_token(&v) || v.bytes().any(|c| c.is_ascii_uppercase()) {
                p.push(
                    "tenancy.past_due_header",
                    Some(at),
                    format!("{v:?} is not a lowercase header name"),
                );
            } else if NOT_A_NOTICE.contains(&v.as_str())
                || v.starts_with("proxy-")
                || v.starts_with("access-control-")
            {
                p.push(
                    "tenancy.past_due_header",
                    Some(at),
                    format!(
                        "{v:?} frames the response or is the router's own; pick a header of \
                         its own, e.g. \"x-subscription-status\""
                    ),
                );
            }
            v
        }
    };
    let trusted_origins = s
        .strings("trusted_origins", p, check_origin)
        .unwrap_or_else(|| d.trusted_origins.clone());
    let frame_ancestors = s
        .choice(
            "frame_ancestors",
            "a framing policy",
            &[
                ("any", FrameAncestors::Any),
                ("tenant", FrameAncestors::Tenant),
            ],
            p,
        )
        .unwrap_or(d.frame_ancestors);
    let refused_paths = ModePaths {
        isolated: refused_paths(&mut s, "isolated_refused_paths", &recovery_paths, p),
        cooperative: refused_paths(&mut s, "cooperative_refused_paths", &recovery_paths, p),
    };
    s.finish(p);
    (p.list.len() == before).then_some(TenancySettings {
        base_domains,
        public_paths,
        recovery_paths,
        api_prefix,
        provisioning_retry_after,
        past_due_header,
        trusted_origins,
        frame_ancestors,
        refused_paths,
    })
}

/// A mode's refused path prefixes (none when left out), lowercase: they are matched without
/// case. Neither `/` nor a prefix that takes in a recovery path, in any case, is taken: a
/// suspended tenant's admins must reach billing whatever the plan.
fn refused_paths(
    s: &mut Section<'_, '_>,
    k: &'static str,
    recovery: &[String],
    p: &mut Problems<'_>,
) -> Vec<String> {
    let at = s.raw(k).map(|v| v.span().start);
    let Some(paths) = s.strings(k, p, |v| check_prefix(&v.to_ascii_lowercase())) else {
        return Vec::new();
    };
    for path in &paths {
        let base = path.trim_end_matches('/');
        let takes_in = |r: &String| {
            r.to_ascii_lowercase()
                .strip_prefix(base)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if base.is_empty() {
            p.push(
                format!("tenancy.{k}"),
                at,
                "\"/\" would refuse these tenants every path",
            );
        } else if let Some(r) = recovery.iter().find(|r| takes_in(r)) {
            p.push(
                format!("tenancy.{k}"),
                at,
                format!(
                    "{path:?} takes in the recovery path {r:?}, which a suspended tenant's \
                     admins must reach whatever the plan"
                ),
            );
        }
    }
    paths
}

/// Response headers the past-due notice may not be: framing and hop-by-hop headers (a
/// second `content-length` or `transfer-encoding` breaks the response, or desynchronises
/// whatever sits in front), standard ones the instance sets (the notice replaces the
/// instance's value: `cache-control: past_due`), and the router's own.
const NOT_A_NOTICE: &[&str] = &[
    "accept-ranges",
    "age",
    "allow",
    "cache-control",
    "connection",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-security-policy",
    "content-type",
    "date",
    "etag",
    "expires",
    "host",
    "keep-alive",
    "last-modified",
    "location",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "vary",
    "www-authenticate",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-org-id",
    "x-request-id",
    "x-tenant-id",
    "x-user-id",
];
