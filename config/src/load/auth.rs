//! `[auth]`: the key set, issuers (and each one's keys), audiences, claim names, HMAC keys,
//! the token's bounds and cache.

use std::path::Path;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::reader::{unknown_message, Problems, Section};
use crate::settings::*;

use super::names::is_token;
use super::{env_problem, NamedFiles};

/// Claims the router reads as NumericDates (RFC 7519 §4.1.4-6): a number in every token it
/// accepts, never the string a tenant or org claim must be.
const DATE_CLAIMS: [&str; 3] = ["exp", "nbf", "iat"];

pub(super) fn parse(
    root: &DeTable<'_>,
    d: &AuthSettings,
    base: &Path,
    named: &mut NamedFiles,
    token_bound: &mut Option<usize>,
    p: &mut Problems<'_>,
) -> Option<AuthSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "auth", p);
    let jwks = super::jwks::parse(&mut s, base, named, p);
    let hmac_keys = hmac_keys(&mut s, base, p);
    // An empty or blank entry would accept a token whose claim is empty or blank: a value an
    // issuer never means, and one a forged token's author picks first.
    let named = |v: &str| {
        if v.trim().is_empty() || v.trim() != v {
            Err(format!("{v:?} is empty or has blanks at its ends"))
        } else {
            Ok(v.to_owned())
        }
    };
    let issuers = s
        .strings("issuers", p, named)
        .unwrap_or_else(|| d.issuers.clone());
    let issuer_keys = issuer_keys(&mut s, &issuers, p);
    let audiences = s
        .strings("audiences", p, named)
        .unwrap_or_else(|| d.audiences.clone());
    let leeway = s
        .whole_seconds(
            "leeway",
            Duration::ZERO,
            Duration::from_secs(300),
            "token times are whole seconds",
            p,
        )
        .unwrap_or(d.leeway);
    let max_token_lifetime = match s.raw("max_token_lifetime") {
        None => d.max_token_lifetime,
        Some(_) => s
            .whole_seconds(
                "max_token_lifetime",
                Duration::ZERO,
                Duration::from_secs(10 * 366 * 86_400),
                "token times are whole seconds",
                p,
            )
            .filter(|d| !d.is_zero()),
    };
    let claim = |v: &str| {
        if v.is_empty() {
            Err("must not be empty".to_owned())
        } else if v.trim() != v || v.chars().any(char::is_control) {
            Err(format!(
                "{v:?} has blanks at an end or control characters: no issuer names a claim so"
            ))
        } else if DATE_CLAIMS.contains(&v) {
            Err(format!(
                "{v:?} is a date claim: the router reads it as a number (NumericDate), and \
                 this claim must be a string, so every token would be refused; name a claim \
                 of its own"
            ))
        } else {
            Ok(v.to_owned())
        }
    };
    let tenant_claim = match s.string("tenant_claim", p) {
        None => d.tenant_claim.clone(),
        Some((v, at)) => claim(&v).unwrap_or_else(|m| {
            p.push("auth.tenant_claim", Some(at), m);
            v
        }),
    };
    let org_claim = match s.string("org_claim", p) {
        None => d.org_claim.clone(),
        Some((v, at)) => claim(&v).unwrap_or_else(|m| {
            p.push("auth.org_claim", Some(at), m);
            v
        }),
    };
    if tenant_claim == org_claim {
        // Named by the one the file sets (the other is its default), at its line.
        let (key, other) = match (s.raw("tenant_claim"), s.raw("org_claim")) {
            (Some(_), None) => ("auth.tenant_claim", "auth.org_claim"),
            _ => ("auth.org_claim", "auth.tenant_claim"),
        };
        p.push(key, None, format!("must differ from {other}"));
    }
    let session_cookie = match s.string("session_cookie", p) {
        None => d.session_cookie.clone(),
        Some((v, _)) if v.is_empty() => None,
        Some((v, at)) => {
            if !is_token(&v) {
                p.push(
                    "auth.session_cookie",
                    Some(at),
                    format!("{v:?} is not a valid cookie name"),
                );
            }
            Some(v)
        }
    };
    let token_headers = s
        .strings("token_headers", p, token_header)
        .unwrap_or_else(|| d.token_headers.clone());
    let session = session_cookie.as_deref().map(name_fold);
    let token_cookies = s
        .strings("token_cookies", p, |v| token_cookie(v, session.as_deref()))
        .unwrap_or_else(|| d.token_cookies.clone());
    let token_query_parameters = s
        .strings("token_query_parameters", p, token_query_parameter)
        .unwrap_or_else(|| d.token_query_parameters.clone());
    let token_cache_capacity = s
        .integer("token_cache_capacity", 0, 10_000_000, p)
        .map_or(d.token_cache_capacity, |n| n as usize);
    let read = s
        .integer("max_token_bytes", 256, MAX_TOKEN_BYTES_CEILING as i64, p)
        .map(|n| n as usize);
    *token_bound = s.parsed_or_default("max_token_bytes", read, d.max_token_bytes);
    let max_token_bytes = read.unwrap_or(d.max_token_bytes);
    let jwks_poll_interval = s
        .duration(
            "jwks_poll_interval",
            Duration::from_millis(10),
            Duration::from_secs(3600),
            p,
        )
        .unwrap_or(d.jwks_poll_interval);
    s.finish(p);
    let jwks = jwks?;
    (p.list.len() == before).then_some(AuthSettings {
        jwks,
        hmac_keys,
        issuers,
        issuer_keys,
        audiences,
        leeway,
        max_token_lifetime,
        tenant_claim,
        org_claim,
        session_cookie,
        token_headers,
        token_cookies,
        token_query_parameters,
        token_cache_capacity,
        max_token_bytes,
        jwks_poll_interval,
    })
}

/// Request headers no app reads its token from: the ones the router reads itself, frames the
/// request with or sets. The proxy refuses, beside these, every header it takes off requests
/// (its `route::is_reserved`, which knows the families of identity and address headers).
const NOT_A_TOKEN_HEADER: &[&str] = &[
    "connection",
    "content-length",
    "expect",
    "forwarded",
    "host",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-request-id",
];

/// An `auth.token_headers` entry, as the router compares it: lowercase, `_` and `.` written
/// `-` (servers that pass headers as CGI variables give an app `X_Token` and `X-Token` under
/// one name, and PHP `X.Token` too).
fn token_header(v: &str) -> Result<String, String> {
    if !is_token(v) {
        return Err(format!(
            "{v:?} is not a header name (letters, digits and !#$%&'*+-.^_`|~)"
        ));
    }
    let folded: String = v
        .bytes()
        .map(|c| match c {
            b'_' | b'.' => '-',
            c => char::from(c.to_ascii_lowercase()),
        })
        .collect();
    match folded.as_str() {
        "authorization" => Err(format!(
            "{v:?} is read already (Bearer, or a token under another scheme): list other \
             headers only"
        )),
        "cookie" => Err(format!(
            "{v:?}: cookies that carry a token are named in auth.token_cookies"
        )),
        f if f.starts_with("sec-") => Err(format!(
            "{v:?} is set by the browser, not by the app's code (a JWS in a WebSocket \
             subprotocol is read as a token already: see the README)"
        )),
        f if NOT_A_TOKEN_HEADER.contains(&f)
            || f.starts_with("x-forwarded-")
            || f.starts_with("proxy-") =>
        {
            Err(format!(
                "{v:?} frames the request or is the router's own: it carries no token"
            ))
        }
        _ => Ok(folded),
    }
}

/// A cookie or query parameter name as the router compares it (lowercase, `.` written `_`,
/// as PHP and ASP.NET Core read it).
fn name_fold(v: &str) -> String {
    v.bytes()
        .map(|c| match c {
            b'.' => '_',
            c => char::from(c.to_ascii_lowercase()),
        })
        .collect()
}

/// An `auth.token_cookies` entry: a cookie name, not the session cookie's in any spelling.
fn token_cookie(v: &str, session: Option<&str>) -> Result<String, String> {
    if !is_token(v) {
        return Err(format!("{v:?} is not a valid cookie name"));
    }
    let folded = name_fold(v);
    if session == Some(folded.as_str()) {
        return Err(format!(
            "{v:?} is auth.session_cookie (names are compared without case, `.` as `_`)"
        ));
    }
    Ok(folded)
}

/// An `auth.token_query_parameters` entry: letters, digits and `-._~` (no byte with a meaning
/// in a query), not one of [`crate::QUERY_TOKENS`], which are always held to the token.
fn token_query_parameter(v: &str) -> Result<String, String> {
    if v.is_empty()
        || !v
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~".contains(&c))
    {
        return Err(format!(
            "{v:?} is not a query parameter name of letters, digits and -._~"
        ));
    }
    let folded = name_fold(v);
    if crate::QUERY_TOKENS.contains(&folded.as_str()) {
        return Err(format!(
            "{v:?} is always held to the token (`access_token`, RFC 6750 §2.3, and \
             `bearer_token`): list other names only"
        ));
    }
    Ok(folded)
}

/// `[auth.issuer_keys]`: each issuer of `issuers` (quoted, as a key) with the `kid`s of the
/// keys it signs with. Required when `issuers` lists more than one: with one key set for
/// all, any issuer's key would sign another's tokens (RFC 8725 §3.8). Every issuer listed,
/// and only those; a `kid` may be listed under two issuers (one key, two names).
fn issuer_keys(
    s: &mut Section<'_, '_>,
    issuers: &[String],
    p: &mut Problems<'_>,
) -> Option<std::collections::BTreeMap<String, Vec<String>>> {
    const KEY: &str = "auth.issuer_keys";
    let Some(v) = s.raw("issuer_keys") else {
        if issuers.len() > 1 {
            p.push(
                KEY,
                None,
                "is required when auth.issuers lists more than one issuer: name the key ids \
                 (kid) each one signs with (e.g. \"https://id.example\" = [\"2025-rsa\"]), so \
                 that one issuer's key cannot sign another's tokens (RFC 8725 §3.8)",
            );
        }
        return None;
    };
    let DeValue::Table(t) = v.get_ref() else {
        p.push(
            KEY,
            Some(v.span().start),
            format!(
                "must be a table of issuer = [key ids], found {}",
                v.get_ref().type_str()
            ),
        );
        return None;
    };
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in t.iter() {
        let issuer = k.get_ref().as_ref();
        let key = format!("{KEY}.{issuer:?}");
        let at = Some(k.span().start);
        if !issuers.iter().any(|i| i == issuer) {
            p.push(
                key.as_str(),
                at,
                "names an issuer that is not in auth.issuers",
            );
        }
        let kids: Option<Vec<String>> = match v.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .map(|i| {
                    i.get_ref()
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                })
                .collect(),
            _ => None,
        };
        match kids {
            None => p.push(key, at, "must be a list of key ids (kid), none empty"),
            Some(kids) if kids.is_empty() => p.push(
                key,
                at,
                "lists no key: every token of this issuer would be refused (take the issuer \
                 out of auth.issuers instead)",
            ),
            Some(kids) => {
                let mut seen = std::collections::HashSet::new();
                if let Some(kid) = kids.iter().find(|k| !seen.insert(k.as_str())) {
                    p.push(key, at, format!("lists key {kid:?} twice"));
                }
                out.insert(issuer.to_owned(), kids);
            }
        }
    }
    for issuer in issuers
        .iter()
        .filter(|i| !t.iter().any(|(k, _)| k.get_ref().as_ref() == i.as_str()))
    {
        p.push(
            KEY,
            Some(v.span().start),
            format!("has no entry for issuer {issuer:?}: every token it issues would be refused"),
        );
    }
    Some(out)
}

/// The fields of one `[[auth.hmac_keys]]` table.
const HMAC_KEY_FIELDS: &[&str] = &["kid", "alg", "secret_env", "secret_file"];

/// `[[auth.hmac_keys]]`: `kid`, `alg` (HS256 when left out) and exactly one of `secret_env` /
/// `secret_file`. HMAC is off unless a key is configured here; secrets never come from the
/// JWKS file.
fn hmac_keys(s: &mut Section<'_, '_>, base: &Path, p: &mut Problems<'_>) -> Vec<HmacKey> {
    let Some(v) = s.raw("hmac_keys") else {
        return Vec::new();
    };
    let DeValue::Array(items) = v.get_ref() else {
        p.push(
            "auth.hmac_keys",
            Some(v.span().start),
            "must be an array of tables ([[auth.hmac_keys]])",
        );
        return Vec::new();
    };
    let mut keys = Vec::new();
    let mut kids = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("auth.hmac_keys[{i}]");
        let at = Some(item.span().start);
        let DeValue::Table(t) = item.get_ref() else {
            p.push(
                key,
                at,
                "must be a table with kid and secret_env or secret_file",
            );
            continue;
        };
        let field = |n: &str| {
            t.iter()
                .find(|(k, _)| k.get_ref().as_ref() == n)
                .and_then(|(_, v)| v.get_ref().as_str().map(str::to_owned))
        };
        // A field's problem is said at its line; the table's own at its header.
        let field_at = |n: &str| {
            t.iter()
                .find(|(k, _)| k.get_ref().as_ref() == n)
                .map(|(_, v)| v.span().start)
                .or(at)
        };
        // Fields that are there but no string: said once here, and judged no further (a
        // mistyped `kid` is not "required", a mistyped `alg = 512` must not become the
        // default), while the table's other fields are still checked.
        let mut mistyped: Vec<&str> = Vec::new();
        for (k, v) in t.iter() {
            let n = k.get_ref().as_ref();
            if !HMAC_KEY_FIELDS.contains(&n) {
                p.push(
                    format!("{key}.{n}"),
                    Some(k.span().start),
                    unknown_message(n, HMAC_KEY_FIELDS),
                );
            } else if v.get_ref().as_str().is_none() {
                // Not taken as absent: `alg = 512` must not become the default.
                p.push(
                    format!("{key}.{n}"),
                    Some(k.span().start),
                    "must be a string",
                );
                mistyped.push(n);
            }
        }
        let typed = |n: &str| !mistyped.contains(&n);
        // Each field is judged on its own, so that one run lists every problem of the table.
        let kid = match field("kid").filter(|k| !k.is_empty()) {
            None if !typed("kid") => None,
            None => {
                p.push(format!("{key}.kid"), at, "is required");
                None
            }
            // A token's kid selects one key: a second one under the same kid would never
            // be used.
            Some(kid) if !kids.insert(kid.clone()) => {
                p.push(
                    format!("{key}.kid"),
                    field_at("kid"),
                    format!("{kid:?} is listed twice"),
                );
                None
            }
            Some(kid) => Some(kid),
        };
        let alg = match field("alg") {
            None if !typed("alg") => None,
            None => Some(HmacAlgorithm::HS256),
            Some(name) => {
                let alg = HmacAlgorithm::from_name(&name);
                if alg.is_none() {
                    p.push(
                        format!("{key}.alg"),
                        field_at("alg"),
                        format!("{name:?} is not one of \"HS256\", \"HS384\", \"HS512\""),
                    );
                }
                alg
            }
        };
        let secret = match (field("secret_env"), field("secret_file")) {
            _ if !typed("secret_env") || !typed("secret_file") => None,
            (Some(env), None) => match std::env::var(&env) {
                Ok(v) => Some(v.into_bytes()),
                Err(e) => {
                    p.push(
                        format!("{key}.secret_env"),
                        field_at("secret_env"),
                        env_problem(&env, &e),
                    );
                    None
                }
            },
            (None, Some(file)) if file.is_empty() => {
                p.push(
                    format!("{key}.secret_file"),
                    field_at("secret_file"),
                    "must not be empty",
                );
                None
            }
            (None, Some(file)) => match crate::files::read_regular(&base.join(&file), 64 * 1024) {
                Ok(mut b) => {
                    while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                        b.pop();
                    }
                    Some(b)
                }
                Err(e) => {
                    p.push(
                        format!("{key}.secret_file"),
                        field_at("secret_file"),
                        format!("cannot read {}: {e}", base.join(&file).display()),
                    );
                    None
                }
            },
            _ => {
                p.push(
                    key.clone(),
                    at,
                    "needs exactly one of secret_env or secret_file",
                );
                None
            }
        };
        let (Some(kid), Some(alg), Some(secret)) = (kid, alg, secret) else {
            continue;
        };
        // RFC 7518 §3.2: an HMAC key at least as long as the hash's output.
        if secret.len() < alg.min_secret_len() {
            let from = if field("secret_env").is_some() {
                "secret_env"
            } else {
                "secret_file"
            };
            p.push(
                key,
                field_at(from),
                format!(
                    "secret for kid {kid:?} is shorter than {} bytes, the least {} allows",
                    alg.min_secret_len(),
                    alg.name()
                ),
            );
            continue;
        }
        keys.push(HmacKey { kid, alg, secret });
    }
    keys
}
