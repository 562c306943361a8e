//! `[cors]`: the origins whose pages may read tenants' responses, and what preflights are
//! told.

use std::time::Duration;

use toml::de::DeTable;

use crate::reader::{Problems, Section};
use crate::settings::*;

use super::names::{check_origin, is_token};

/// The longest `max_age`: Firefox keeps a preflight's answer for at most a day (Chromium for
/// two hours), so a longer one would promise what no browser does.
const MAX_AGE_CEILING: Duration = Duration::from_secs(86_400);

/// `tenancy`, when its section parsed, is what a listed origin is checked against (see
/// [`under_a_base_domain`]).
pub(super) fn parse(
    root: &DeTable<'_>,
    d: &CorsSettings,
    tenancy: Option<&TenancySettings>,
    p: &mut Problems<'_>,
) -> Option<CorsSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "cors", p);
    let origins_at = s.raw("allowed_origins").map(|v| v.span().start);
    let listed = s
        .strings("allowed_origins", p, |o| {
            if o == "*" {
                Ok(o.to_owned())
            } else {
                let o = check_origin(o).map_err(|m| format!("{m}, or \"*\" alone"))?;
                tenancy.map_or(Ok(o.clone()), |t| under_a_base_domain(&o, t).map(|()| o))
            }
        })
        .unwrap_or_default();
    let tenant_pages_at = s.raw("tenant_origins").map(|v| v.span().start);
    let tenant_pages = s.boolean("tenant_origins", p).unwrap_or(false);
    let credentials_at = s.raw("allow_credentials").map(|v| v.span().start);
    let credentials = s.boolean("allow_credentials", p).unwrap_or(false);
    let any = listed.iter().any(|o| o == "*");
    let origins = if any {
        if listed.len() > 1 {
            p.push(
                "cors.allowed_origins",
                origins_at,
                "\"*\" allows every origin: list nothing beside it",
            );
        }
        if tenant_pages {
            p.push(
                "cors.tenant_origins",
                tenant_pages_at,
                "allowed_origins = [\"*\"] already allows the tenants' own pages",
            );
        }
        if credentials {
            p.push(
                "cors.allow_credentials",
                credentials_at,
                "browsers refuse credentials from a response that allows every origin \
                 (\"*\"): list the origins instead",
            );
        }
        Some(CorsOrigins::Any)
    } else if listed.is_empty() && !tenant_pages {
        if credentials {
            p.push(
                "cors.allow_credentials",
                credentials_at,
                "allows credentials to no origin: list allowed_origins or set tenant_origins",
            );
        }
        None
    } else {
        Some(CorsOrigins::Listed {
            origins: listed,
            tenant_pages,
            credentials,
        })
    };
    let allowed_methods = s
        .strings("allowed_methods", p, check_method)
        .unwrap_or_else(|| d.allowed_methods.clone());
    let allowed_headers = s
        .strings("allowed_headers", p, check_header_name)
        .unwrap_or_else(|| d.allowed_headers.clone());
    let expose_headers = s
        .strings("expose_headers", p, check_header_name)
        .unwrap_or_else(|| d.expose_headers.clone());
    let max_age = s
        .whole_seconds(
            "max_age",
            Duration::ZERO,
            MAX_AGE_CEILING,
            "Access-Control-Max-Age counts whole seconds",
            p,
        )
        .unwrap_or(d.max_age);
    s.finish(p);
    (p.list.len() == before).then_some(CorsSettings {
        origins,
        allowed_methods,
        allowed_headers,
        expose_headers,
        max_age,
    })
}

/// An allowed origin under a base domain that `[tenancy] trusted_origins` does not list is
/// a problem: a tenant's page could be served at that name (a tenant bound to its first
/// label), and would read every tenant's responses. The operator's own pages there are
/// listed in both.
fn under_a_base_domain(origin: &str, tenancy: &TenancySettings) -> Result<(), String> {
    if tenancy.trusted_origins.iter().any(|t| t == origin) {
        return Ok(());
    }
    let host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    match tenancy.base_domains.iter().find(|b| {
        host.strip_suffix(b.as_str())
            .is_some_and(|r| r.ends_with('.'))
    }) {
        None => Ok(()),
        Some(base) => Err(format!(
            "{origin:?} is a name under the base domain {base:?}, where a tenant's page \
             could be served: list it in tenancy.trusted_origins too if it is the \
             operator's own page (while a tenant is bound at that name, its pages are the \
             tenant's, and neither list lets them in), or use tenant_origins for the \
             tenants' own pages"
        )),
    }
}

/// A method as a request line carries it (methods are case-sensitive: a standard one in
/// capitals), but none the router refuses whatever a preflight says, and not `*` (which with
/// credentials names a method called `*`).
fn check_method(m: &str) -> Result<String, String> {
    if !is_token(m) || m == "*" {
        Err(format!(
            "{m:?} is not a method name (a token, such as \"PUT\")"
        ))
    } else if crate::STANDARD_METHODS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(m) && *s != m)
    {
        Err(format!(
            "{m:?}: methods are case-sensitive, and the router refuses a standard method in \
             another case; write it in capitals"
        ))
    } else if ["CONNECT", "TRACE", "TRACK"]
        .iter()
        .any(|r| r.eq_ignore_ascii_case(m))
    {
        Err(format!(
            "{m:?} is refused by the router whatever a preflight says"
        ))
    } else {
        Ok(m.to_owned())
    }
}

/// A lowercase header name; not `*`, which with credentials names a header called `*` and
/// without them does not cover `Authorization`.
fn check_header_name(h: &str) -> Result<String, String> {
    if h == "*" {
        Err(
            "\"*\" is not taken: list the header names (it would not cover authorization, \
             and with credentials browsers read it as a header named \"*\")"
                .to_owned(),
        )
    } else if !is_token(h) || h.bytes().any(|c| c.is_ascii_uppercase()) {
        Err(format!("{h:?} is not a lowercase header name"))
    } else {
        Ok(h.to_owned())
    }
}
