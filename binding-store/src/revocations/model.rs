//! One revocation: which tokens it refuses, until when, and who asked for it and why.
//!
//! The same JSON object is an entry of a revocations file, the value of a field of the Redis
//! hash, and the payload of a change in the Redis feed, so one parser reads all three.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::model::TenantId;

/// Longest `jti` or `sub` a revocation names: a token is at most 64 KiB (`[auth]
/// max_token_bytes`), so no token the router accepts holds a longer one.
pub const MAX_CLAIM_LEN: usize = 64 * 1024;

/// Which tokens a revocation refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The one token whose `jti` claim is this (a leaked token).
    Token {
        /// The `jti`, byte for byte.
        jti: String,
    },
    /// Every token of one user of one tenant issued before a moment (an abusive or
    /// compromised account): tenant claim and `sub` both equal.
    Subject {
        /// The tenant claim.
        tenant: TenantId,
        /// The `sub` claim, byte for byte.
        sub: String,
        /// Tokens whose `iat` is before this (Unix seconds) are refused; a token without
        /// `iat` cannot show it came after, and is refused too.
        issued_before: u64,
    },
    /// Every token of one tenant issued before a moment (a chargeback, a breach).
    Tenant {
        /// The tenant claim.
        tenant: TenantId,
        /// As for [`Revoked::Subject`].
        issued_before: u64,
    },
}

/// A revocation in force until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// What it refuses.
    pub what: Revoked,
    /// Unix seconds after which it refuses nothing: the tokens it names have expired by then.
    pub until: u64,
    /// When it was made (Unix seconds), if known.
    pub at: Option<u64>,
    /// Who made it, if known.
    pub actor: Option<String>,
    /// Why, if said.
    pub reason: Option<String>,
}

/// The claims of a verified token that a revocation can name.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenFacts<'a> {
    /// `jti`.
    pub jti: Option<&'a str>,
    /// The tenant claim.
    pub tenant: Option<&'a str>,
    /// `sub`.
    pub sub: Option<&'a str>,
    /// `iat`, Unix seconds.
    pub iat: Option<u64>,
}

/// Why a revocation's JSON was refused. The text never quotes a claim value in full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RevocationError(pub String);

/// The JSON form, exactly as written: unknown or repeated members are refused.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issued_before: Option<String>,
    until: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Unix seconds as RFC 3339 (UTC).
pub fn format_time(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_owned())
}

/// An RFC 3339 time as Unix seconds (a time before 1970 reads as 0). A fraction rounds up,
/// the way that refuses more: `issued_before` 10.5 refuses a token issued at 10, and `until`
/// 10.5 lasts through second 10.
pub fn parse_time(field: &str, text: &str) -> Result<u64, RevocationError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|t| {
            let whole = u64::try_from(t.unix_timestamp()).unwrap_or(0);
            whole + u64::from(t.nanosecond() > 0 && t.unix_timestamp() >= 0)
        })
        .map_err(|e| {
            RevocationError(format!(
                "{field}: {} is not an RFC 3339 time: {e}",
                shown(text)
            ))
        })
}

/// `text` quoted for an error message, cut to 64 characters.
fn shown(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// A claim value a revocation names: not empty (no token the router accepts has an empty
/// `sub`, and an empty `jti` names no token), at most [`MAX_CLAIM_LEN`] bytes. Any other
/// string is some token's claim, compared byte for byte: a value refused here would be a
/// token that only its tenant's revocation could reach.
fn claim_value(field: &str, v: String) -> Result<String, RevocationError> {
    if v.is_empty() {
        Err(RevocationError(format!("{field} is empty")))
    } else if v.len() > MAX_CLAIM_LEN {
        Err(RevocationError(format!(
            "{field} is longer than {MAX_CLAIM_LEN} bytes"
        )))
    } else {
        Ok(v)
    }
}

impl Revocation {
    /// The revocation's key: one per token, per user of a tenant, per tenant. A later
    /// revocation with the same key replaces the earlier one (a Redis hash field, a file's
    /// later entry).
    pub fn key(&self) -> String {
        self.what.key()
    }

    /// Whether it refuses a token with these claims at `now` (Unix seconds).
    pub fn refuses(&self, t: &TokenFacts<'_>, now: u64) -> bool {
        if now >= self.until {
            return false;
        }
        let issued_before = |before: u64| t.iat.is_none_or(|iat| iat < before);
        match &self.what {
            Revoked::Token { jti } => t.jti == Some(jti.as_str()),
            Revoked::Subject {
                tenant,
                sub,
                issued_before: before,
            } => {
                t.tenant == Some(tenant.as_str())
                    && t.sub == Some(sub.as_str())
                    && issued_before(*before)
            }
            Revoked::Tenant {
                tenant,
                issued_before: before,
            } => t.tenant == Some(tenant.as_str()) && issued_before(*before),
        }
    }

    /// `self` put in place of `held`, the revocation in force under the same key: a put only
    /// ever refuses more, so the later `issued_before` and `until` of the two are kept (a
    /// revocation written again by a script with an older `issued_before` must not let
    /// tokens back in). Who made it and why are `self`'s. Taking one back is `remove`.
    pub fn merged_over(&self, held: &Revocation) -> Revocation {
        let mut merged = self.clone();
        if held.key() != self.key() {
            return merged;
        }
        merged.until = merged.until.max(held.until);
        match (&mut merged.what, &held.what) {
            (
                Revoked::Subject { issued_before, .. },
                Revoked::Subject {
                    issued_before: before,
                    ..
                },
            )
            | (
                Revoked::Tenant { issued_before, .. },
                Revoked::Tenant {
                    issued_before: before,
                    ..
                },
            ) => *issued_before = (*issued_before).max(*before),
            _ => {}
        }
        merged
    }

    /// Reads one revocation from its JSON text.
    pub fn from_json(text: &[u8]) -> Result<Self, RevocationError> {
        let raw: Raw = serde_json::from_slice(text)
            .map_err(|e| RevocationError(format!("not a revocation: {e}")))?;
        Self::from_raw(raw)
    }

    pub(super) fn from_raw(r: Raw) -> Result<Self, RevocationError> {
        let until = parse_time("until", &r.until)?;
        let issued_before = r
            .issued_before
            .as_deref()
            .map(|t| parse_time("issued_before", t))
            .transpose()?;
        let tenant = r
            .tenant
            .map(|t| {
                TenantId::parse(&t).map_err(|e| RevocationError(format!("tenant: {}", e.reason)))
            })
            .transpose()?;
        let what = match (r.token, tenant, r.subject, issued_before) {
            (Some(jti), None, None, None) => Revoked::Token {
                jti: claim_value("token", jti)?,
            },
            (Some(_), ..) => {
                return Err(RevocationError(
                    "token names one token by its jti: it takes no tenant, subject or \
                     issued_before"
                        .to_owned(),
                ))
            }
            (None, Some(tenant), Some(sub), Some(issued_before)) => Revoked::Subject {
                tenant,
                sub: claim_value("subject", sub)?,
                issued_before,
            },
            (None, Some(tenant), None, Some(issued_before)) => Revoked::Tenant {
                tenant,
                issued_before,
            },
            (None, Some(_), _, None) => {
                return Err(RevocationError(
                    "issued_before is required with tenant: tokens issued from then on are \
                     accepted again"
                        .to_owned(),
                ))
            }
            (None, None, ..) => {
                return Err(RevocationError(
                    "names no token: give token (a jti) or tenant (with subject for one user)"
                        .to_owned(),
                ))
            }
        };
        let at = r.at.as_deref().map(|t| parse_time("at", t)).transpose()?;
        Ok(Self {
            what,
            until,
            at,
            actor: r.actor,
            reason: r.reason,
        })
    }

    /// The JSON text [`Revocation::from_json`] reads back.
    pub fn to_json(&self) -> String {
        let (token, tenant, subject, issued_before) = match &self.what {
            Revoked::Token { jti } => (Some(jti.clone()), None, None, None),
            Revoked::Subject {
                tenant,
                sub,
                issued_before,
            } => (
                None,
                Some(tenant.as_str().to_owned()),
                Some(sub.clone()),
                Some(format_time(*issued_before)),
            ),
            Revoked::Tenant {
                tenant,
                issued_before,
            } => (
                None,
                Some(tenant.as_str().to_owned()),
                None,
                Some(format_time(*issued_before)),
            ),
        };
        let raw = Raw {
            token,
            tenant,
            subject,
            issued_before,
            until: format_time(self.until),
            at: self.at.map(format_time),
            actor: self.actor.clone(),
            reason: self.reason.clone(),
        };
        serde_json::to_string(&raw).unwrap_or_default()
    }
}

impl Revoked {
    /// See [`Revocation::key`]: `token:<jti>`, `subject:<tenant>:<sub>`, `tenant:<tenant>`
    /// (a tenant id holds no `:`, so the key reads back one way only).
    pub fn key(&self) -> String {
        match self {
            Revoked::Token { jti } => format!("token:{jti}"),
            Revoked::Subject { tenant, sub, .. } => format!("subject:{}:{sub}", tenant.as_str()),
            Revoked::Tenant { tenant, .. } => format!("tenant:{}", tenant.as_str()),
        }
    }
}

impl fmt::Display for Revoked {
    /// Names what is revoked without the claim values in full (they are identifiers, but a
    /// log line needs no more than their start).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Revoked::Token { jti } => write!(f, "token {}", shown(jti)),
            Revoked::Subject {
                tenant,
                sub,
                issued_before,
            } => write!(
                f,
                "user {} of tenant {} (tokens issued before {})",
                shown(sub),
                tenant.as_str(),
                format_time(*issued_before)
            ),
            Revoked::Tenant {
                tenant,
                issued_before,
            } => write!(
                f,
                "tenant {} (tokens issued before {})",
                tenant.as_str(),
                format_time(*issued_before)
            ),
        }
    }
}
