//! Authentication errors. Messages and labels are fixed texts: never token content.

/// Why a token was refused (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a well-formed JWS compact token; the reason is a fixed text.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Longer than the configured maximum.
    #[error("token too large")]
    TooLarge,
    /// A JSON object in the token repeats a member name (RFC 7515 §5.2, RFC 8725 §3.5).
    #[error("duplicate member name in token JSON")]
    DuplicateKey,
    /// `alg` is `none` or not one this router implements.
    #[error("algorithm not accepted")]
    UnsupportedAlgorithm,
    /// `alg` is not the one the selected key is pinned to.
    #[error("algorithm does not match the key")]
    AlgorithmMismatch,
    /// No key with this `kid` (or no `kid` and several keys).
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// No `exp` claim: tokens must expire.
    #[error("token has no exp claim")]
    MissingExp,
    /// The key that signs the token is not one its issuer signs with (`[auth.issuer_keys]`,
    /// RFC 8725 §3.8).
    #[error("signing key is not one of the token's issuer")]
    KeyNotOfIssuer,
    /// `exp` lies further ahead than `[auth] max_token_lifetime` allows.
    #[error("token lifetime longer than max_token_lifetime")]
    LifetimeTooLong,
    /// `iss` is not an accepted issuer.
    #[error("issuer not accepted")]
    WrongIssuer,
    /// `aud` does not name this service.
    #[error("audience not accepted")]
    WrongAudience,
    /// `crit` lists extensions; this verifier understands none (RFC 7515 §4.1.11).
    #[error("critical header extension not understood")]
    CriticalHeader,
    /// A header that points at keys (`jku`, `x5u`, `jwk`, `x5c`): never followed, refused.
    #[error("header parameter {0} is not accepted")]
    ForbiddenHeader(&'static str),
    /// `typ` says this is not a JWT (RFC 8725 §3.11).
    #[error("token type not accepted")]
    WrongType,
    /// An identity claim the instance is told (`sub`, the org claim) cannot be sent as it is:
    /// blanks at its ends, which every HTTP parser strips (RFC 9110 §5.5), so `" admin"`
    /// would reach the instance as the user `admin`; characters no header may hold; or
    /// nothing at all, which an app may read as no identity sent.
    #[error("the {0} claim cannot be sent to the instance as it is")]
    UnforwardableClaim(&'static str),
    /// A revocation in force names the token (`[revocation]`): by its `jti`, or as one of
    /// its user's or tenant's tokens issued before the revocation.
    #[error("token revoked")]
    Revoked,
}

impl TokenError {
    /// Closed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::TooLarge => "too_large",
            TokenError::DuplicateKey => "duplicate_key",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::AlgorithmMismatch => "algorithm_mismatch",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::MissingExp => "missing_exp",
            TokenError::LifetimeTooLong => "lifetime_too_long",
            TokenError::KeyNotOfIssuer => "key_not_of_issuer",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::CriticalHeader => "critical_header",
            TokenError::ForbiddenHeader(_) => "forbidden_header",
            TokenError::WrongType => "wrong_type",
            TokenError::UnforwardableClaim(_) => "unforwardable_claim",
            TokenError::Revoked => "revoked",
        }
    }

    /// The fixed text that says more than [`TokenError::label`] (which malformation, which
    /// header or claim), for the log; never token content.
    pub fn why(&self) -> Option<&'static str> {
        match self {
            TokenError::Malformed(why)
            | TokenError::ForbiddenHeader(why)
            | TokenError::UnforwardableClaim(why) => Some(why),
            _ => None,
        }
    }

    /// RFC 6750 §3 challenge. The description is a fixed text (only characters RFC 6750
    /// allows), so nothing from the request is reflected.
    pub fn www_authenticate(&self) -> String {
        let description = match self {
            TokenError::Expired => "the token expired",
            TokenError::NotYetValid => "the token is not valid yet",
            TokenError::LifetimeTooLong => "the token lives longer than this service accepts",
            TokenError::WrongIssuer | TokenError::WrongAudience => {
                "the token was not issued for this service"
            }
            // Key ids are public (the JWKS), so naming this one tells a caller nothing new,
            // and it is the usual mistake: a token minted with another key set's key.
            TokenError::UnknownKey => "the token is signed with a key this service does not know",
            TokenError::BadSignature
            | TokenError::AlgorithmMismatch
            | TokenError::KeyNotOfIssuer => "the token signature is not valid",
            TokenError::Revoked => "the token was revoked",
            _ => "the token is malformed or not accepted",
        };
        format!(
            "Bearer realm=\"nexus\", error=\"invalid_token\", error_description=\"{description}\""
        )
    }
}

/// The challenge sent with a 403 for a valid token that is not this tenant's (or org's): its
/// privileges do not reach the resource (RFC 6750 §3.1, `insufficient_scope`).
pub fn www_authenticate_forbidden() -> String {
    "Bearer realm=\"nexus\", error=\"insufficient_scope\", error_description=\"the token is not \
     valid for this tenant\""
        .to_owned()
}

/// The challenge sent when no token was presented: no error code (RFC 6750 §3.1).
pub fn www_authenticate_missing() -> String {
    "Bearer realm=\"nexus\"".to_owned()
}

/// Why the credential could not be taken from the request (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Two places (header, cookies, token headers, a token query parameter) carry different
    /// tokens: which one is the caller?
    #[error("conflicting credentials")]
    Conflict,
    /// `Authorization: Bearer`, a token cookie or a token header without a valid token (RFC
    /// 6750 §2.1 syntax), or spelt so that an app could read it otherwise.
    #[error(
        "malformed credential (Authorization, a token cookie, a token header or a WebSocket \
         subprotocol)"
    )]
    Malformed,
    /// More than one `Authorization` header.
    #[error("more than one Authorization header")]
    Duplicate,
}

impl CredentialError {
    /// Closed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CredentialError::Conflict => "credential_conflict",
            CredentialError::Malformed => "credential_malformed",
            CredentialError::Duplicate => "credential_duplicate",
        }
    }

    /// RFC 6750 challenge: the request itself is malformed.
    pub fn www_authenticate(&self) -> String {
        "Bearer realm=\"nexus\", error=\"invalid_request\", error_description=\"the credentials in the request are malformed or conflicting\"".to_owned()
    }
}

/// Why the key set could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSetupError {
    /// The JWKS file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The JWKS is not valid JSON of the right shape.
    #[error("{path}: not a JWKS: {reason}")]
    Format {
        /// File (or `embedded demo key set`).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The JWKS file is larger than the router reads.
    #[error("{path}: larger than {limit} bytes; a key set holds a few keys")]
    TooLarge {
        /// File.
        path: String,
        /// The bound, [`super::MAX_JWKS_BYTES`].
        limit: usize,
    },
    /// An `[[auth.hmac_keys]]` key's `kid` is also a key's in the JWKS: a token naming it
    /// could be meant for either, so the HMAC key would never be used.
    #[error(
        "{path}: kid {kid:?} of an [[auth.hmac_keys]] key is also a key's in this JWKS; an HMAC \
         key's kid must be its own"
    )]
    HmacKidTaken {
        /// The JWKS file.
        path: String,
        /// The kid both name.
        kid: String,
    },
    /// The JWKS holds no usable verification key.
    #[error(
        "{path}: no usable verification key{}",
        if *skipped == 0 { " (the set is empty)".to_owned() } else { format!(" ({skipped} skipped: {reasons})") }
    )]
    NoKeys {
        /// File.
        path: String,
        /// How many keys were skipped.
        skipped: usize,
        /// Why each was skipped.
        reasons: String,
    },
}
