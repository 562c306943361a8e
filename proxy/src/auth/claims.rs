//! Registered claims (RFC 7519 §4.1) and the identity the router forwards.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use serde_json::{Map, Value};

use super::error::TokenError;
use super::jwk::Algorithm;

/// A token whose signature and claims were verified. Claim values are the caller's to compare;
/// they are never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `sub`, when a string.
    pub sub: Option<String>,
    /// The tenant claim, when a string.
    pub tenant: Option<String>,
    /// The org claim, when a string.
    pub org: Option<String>,
    /// `exp`, Unix seconds.
    pub exp: u64,
    /// `nbf`, Unix seconds.
    pub nbf: Option<u64>,
    /// `iat`, Unix seconds: revocations of a user's or tenant's tokens compare it.
    pub iat: Option<u64>,
    /// `jti`: a revocation of the one token names it.
    pub jti: Option<String>,
    /// `kid` of the key that verified it.
    pub kid: Option<String>,
    /// Algorithm that verified it.
    pub alg: Algorithm,
    /// `sub`, tenant and org as the header values sent to the instance: made from the
    /// fields above by [`VerifiedToken::new`], and only there.
    pub(crate) headers: IdentityHeaders,
}

/// The identity claims as header values, made once when the token is verified: a cached
/// token serves many requests, and each then clones a shared buffer instead of checking and
/// copying three strings (`X-Tenant-Id`, `X-Org-Id`, `X-User-Id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentityHeaders {
    /// The tenant claim, when present and a valid header value.
    pub(crate) tenant: Option<HeaderValue>,
    /// The org claim, when present and a valid header value.
    pub(crate) org: Option<HeaderValue>,
    /// `sub`, when present and a valid header value.
    pub(crate) user: Option<HeaderValue>,
}

impl IdentityHeaders {
    /// Header values for the claims that are valid ones (no control characters); the three
    /// share one buffer.
    fn new(tenant: Option<&str>, org: Option<&str>, sub: Option<&str>) -> Self {
        let claims = [tenant, org, sub];
        let mut buf = Vec::with_capacity(claims.iter().flatten().map(|c| c.len()).sum());
        let ranges = claims.map(|c| {
            c.map(|c| {
                buf.extend_from_slice(c.as_bytes());
                buf.len() - c.len()..buf.len()
            })
        });
        let buf = Bytes::from(buf);
        let [tenant, org, user] =
            ranges.map(|r| r.and_then(|r| HeaderValue::from_maybe_shared(buf.slice(r)).ok()));
        Self { tenant, org, user }
    }
}

impl VerifiedToken {
    /// The verified identity and time claims, with the header values made from them.
    pub(crate) fn new(
        sub: Option<String>,
        tenant: Option<String>,
        org: Option<String>,
        times: TokenTimes,
        jti: Option<String>,
        kid: Option<String>,
        alg: Algorithm,
    ) -> Self {
        let headers = IdentityHeaders::new(tenant.as_deref(), org.as_deref(), sub.as_deref());
        Self {
            sub,
            tenant,
            org,
            exp: times.exp,
            nbf: times.nbf,
            iat: times.iat,
            jti,
            kid,
            alg,
            headers,
        }
    }

    /// The claims a revocation can name.
    pub fn revocation_facts(&self) -> nexus_binding_store::revocations::TokenFacts<'_> {
        nexus_binding_store::revocations::TokenFacts {
            jti: self.jti.as_deref(),
            tenant: self.tenant.as_deref(),
            sub: self.sub.as_deref(),
            iat: self.iat,
        }
    }

    /// Time claims against `now` with `leeway`: expired at `exp + leeway`, valid from
    /// `nbf - leeway`. Checked on every request, cached or not.
    pub fn check_time(&self, now: u64, leeway: u64) -> Result<(), TokenError> {
        check_time(self.exp, self.nbf, now, leeway)
    }
}

/// A token's time claims, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenTimes {
    pub(crate) exp: u64,
    pub(crate) nbf: Option<u64>,
    pub(crate) iat: Option<u64>,
}

/// What the claims are checked against.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub(crate) issuers: Vec<String>,
    pub(crate) audiences: Vec<String>,
    pub(crate) leeway: u64,
    /// `[auth] max_token_lifetime` in seconds (see [`check_lifetime`]).
    pub(crate) max_lifetime: Option<u64>,
    /// `[auth.issuer_keys]`: each issuer's key ids (see [`check_key_issuer`]).
    pub(crate) issuer_keys: Option<HashMap<String, HashSet<String>>>,
    pub(crate) tenant_claim: String,
    pub(crate) org_claim: String,
}

/// Whether some issuer of `[auth.issuer_keys]` lists `kid`: a key no issuer lists signs
/// nothing.
pub(crate) fn listed_by_an_issuer(
    issuer_keys: &HashMap<String, HashSet<String>>,
    kid: &str,
) -> bool {
    issuer_keys.values().any(|kids| kids.contains(kid))
}

/// Which way a fractional NumericDate is rounded to whole seconds: the way that never lets
/// a token be accepted outside the time its claim allows.
#[derive(Clone, Copy)]
enum Round {
    /// `exp`: a token expiring at 10.9 is taken as expiring at 10.
    Earlier,
    /// `nbf`: a token valid from 10.1 is taken as valid from 11.
    Later,
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds since the epoch, which may be
/// negative or fractional. Dates before the epoch read as 0 and dates past `u64` seconds as
/// `u64::MAX`; both are far outside any leeway, so neither changes a decision. A fraction is
/// read as the nearest double, which may be the next whole second (`X.99999999999` is read
/// as `X + 1`): it is taken one step further toward refusal first, so an `exp` never lasts
/// longer than written (an exact `X.0` may end a second early).
fn numeric_date(v: &Value, round: Round) -> Result<u64, TokenError> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    if v.as_i64().is_some() {
        return Ok(0);
    }
    match v.as_f64() {
        Some(f) if f.is_finite() => {
            let whole = match round {
                Round::Earlier => f.next_down().floor(),
                Round::Later => f.next_up().ceil(),
            };
            // `as` saturates: below 0 gives 0, beyond the range `u64::MAX`.
            Ok(whole as u64)
        }
        _ => Err(TokenError::Malformed(
            "time claim is not a valid NumericDate",
        )),
    }
}

/// See [`VerifiedToken::check_time`].
fn check_time(exp: u64, nbf: Option<u64>, now: u64, leeway: u64) -> Result<(), TokenError> {
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = nbf {
        if now.saturating_add(leeway) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    Ok(())
}

/// A token whose `exp` lies further ahead than `[auth] max_token_lifetime` (beyond the leeway),
/// from now or from its `iat`, is refused: RFC 7519 bounds no lifetime, but an issuer that
/// mints hour-long tokens never means one valid for years, and such a token, leaked, would
/// never stop working. Checked once, at verification: what is left of a token's life only
/// shrinks while it is cached.
fn check_lifetime(
    exp: u64,
    iat: Option<u64>,
    now: u64,
    rules: &ClaimRules,
) -> Result<(), TokenError> {
    let Some(max) = rules.max_lifetime else {
        return Ok(());
    };
    let bound = max.saturating_add(rules.leeway);
    let from_now = exp.saturating_sub(now);
    let declared = iat.map_or(0, |iat| exp.saturating_sub(iat));
    if from_now > bound || declared > bound {
        return Err(TokenError::LifetimeTooLong);
    }
    Ok(())
}

/// RFC 8725 §3.8: the key that signed a token must be its issuer's. With one issuer every key
/// of the set is; with `[auth.issuer_keys]` the key's `kid` must be listed under the token's
/// `iss` (a key without a `kid` is no issuer's). `claims` passed [`check`], so with issuers
/// configured, as they are whenever `issuer_keys` is, `iss` is one of them.
pub(crate) fn check_key_issuer(
    claims: &Map<String, Value>,
    key_kid: Option<&str>,
    rules: &ClaimRules,
) -> Result<(), TokenError> {
    let Some(issuer_keys) = &rules.issuer_keys else {
        return Ok(());
    };
    let iss = claims.get("iss").and_then(Value::as_str);
    let owned = iss
        .and_then(|i| issuer_keys.get(i))
        .zip(key_kid)
        .is_some_and(|(kids, kid)| kids.contains(kid));
    if owned {
        Ok(())
    } else {
        Err(TokenError::KeyNotOfIssuer)
    }
}

/// Whether `claim` reaches the instance unchanged as a header value, and reads there as the
/// issuer wrote it: not empty (an empty field reads as no identity, or as none sent, depending
/// on the app), no control character (tab aside; C1 controls such as U+0085 next line and
/// U+009B included, which the UTF-8 bytes of a header value carry on to an app that may take
/// them for a line break or an escape), no line or paragraph separator (U+2028, U+2029), no
/// invisible character ([`crate::invisible::is_invisible`]: a zero-width space or a bidi override
/// shows `admin` in a log or an admin page for another user), and no white space at either
/// end: HTTP strips blanks from a field value, and apps trim the rest (Python's `strip()`,
/// .NET's `Trim()` take U+00A0 too), so `"admin\u{a0}"` would be `admin`.
pub(crate) fn forwardable(claim: &str) -> bool {
    !claim.is_empty()
        && claim.chars().all(|c| {
            c == '\t'
                || !(c.is_control()
                    || matches!(c, '\u{2028}' | '\u{2029}')
                    || crate::invisible::is_invisible(c))
        })
        && !claim.starts_with(char::is_whitespace)
        && !claim.ends_with(char::is_whitespace)
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// Checks the registered claims and extracts the identity.
pub(crate) fn check(
    claims: &Map<String, Value>,
    rules: &ClaimRules,
    now: u64,
    kid: Option<String>,
    alg: Algorithm,
) -> Result<Arc<VerifiedToken>, TokenError> {
    let exp = numeric_date(
        claims.get("exp").ok_or(TokenError::MissingExp)?,
        Round::Earlier,
    )?;
    let nbf = claims
        .get("nbf")
        .map(|v| numeric_date(v, Round::Later))
        .transpose()?;
    // A token whose `iat` is not a date is malformed.
    let iat = claims
        .get("iat")
        .map(|v| numeric_date(v, Round::Earlier))
        .transpose()?;
    // StringOrURI claims (RFC 7519 §4.1.1, §4.1.2): any other value makes the token invalid,
    // checked or not.
    for (claim, why) in [
        ("iss", "iss is not a string"),
        ("sub", "sub is not a string"),
        // RFC 7519 §4.1.7: a case-sensitive string. Read as none, a number would slip
        // past a revocation of the token.
        ("jti", "jti is not a string"),
    ] {
        if claims.get(claim).is_some_and(|v| !v.is_string()) {
            return Err(TokenError::Malformed(why));
        }
    }
    if !rules.issuers.is_empty() {
        match claims.get("iss") {
            Some(Value::String(iss)) if rules.issuers.iter().any(|i| i == iss) => {}
            _ => return Err(TokenError::WrongIssuer),
        }
    }
    // RFC 7519 §4.1.3: a present `aud` must name this service, so with no audience
    // configured a token that names any audience is meant for someone else.
    let ok = match claims.get("aud") {
        None => rules.audiences.is_empty(),
        Some(Value::String(a)) => rules.audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => {
            if list.iter().any(|v| !v.is_string()) {
                return Err(TokenError::Malformed("aud array holds a non-string"));
            }
            list.iter()
                .filter_map(Value::as_str)
                .any(|a| rules.audiences.iter().any(|x| x == a))
        }
        Some(_) => false,
    };
    if !ok {
        return Err(TokenError::WrongAudience);
    }
    // Before anything is copied out of an expired token.
    check_time(exp, nbf, now, rules.leeway)?;
    check_lifetime(exp, iat, now, rules)?;
    let sub = string_claim(claims, "sub");
    // An empty or null org claim is how many issuers say "no org": read as none (no
    // `X-Org-Id`; a tenant whose binding names an org refuses it). Any other value that is
    // not a string is not what the issuer meant by an org: the token is refused, not read
    // as one without an org. An empty `sub` names nobody: refused.
    let org = match claims.get(&rules.org_claim) {
        None | Some(Value::Null) => None,
        Some(Value::String(o)) => Some(o.clone()).filter(|o| !o.is_empty()),
        Some(_) => return Err(TokenError::Malformed("org claim is not a string")),
    };
    // The instance must be told the identity the issuer meant, byte for byte, or nothing:
    // sent without its blanks, `" admin"` would be another user (the tenant claim is
    // compared with a canonical id before it is sent, so it needs no check here).
    if sub.as_deref().is_some_and(|s| !forwardable(s)) {
        return Err(TokenError::UnforwardableClaim("sub"));
    }
    if org.as_deref().is_some_and(|s| !forwardable(s)) {
        return Err(TokenError::UnforwardableClaim("org"));
    }
    Ok(Arc::new(VerifiedToken::new(
        sub,
        string_claim(claims, &rules.tenant_claim),
        org,
        TokenTimes { exp, nbf, iat },
        string_claim(claims, "jti"),
        kid,
        alg,
    )))
}
