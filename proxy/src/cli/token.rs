//! `nexus-edge token`: mint a signed token for testing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;

use crate::auth::jwk::Algorithm;
use crate::auth::mint::SigningKey;
use nexus_config::MAX_TOKEN_BYTES_CEILING;

/// Arguments of `nexus-edge token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Tenant id to put in the tenant claim.
    #[arg(long)]
    pub tenant: String,
    /// Org id to put in the org claim.
    #[arg(long)]
    pub org: Option<String>,
    /// Subject (user id).
    #[arg(long, default_value = "demo-user")]
    pub sub: String,
    /// Lifetime, e.g. `15m`, `1h`: from 1 s to 366 days.
    #[arg(long, default_value = "1h", value_parser = token_ttl)]
    pub ttl: Duration,
    /// PKCS#8 PEM private key (RSA, EC P-256/P-384 or Ed25519).
    #[arg(long)]
    pub key: PathBuf,
    /// Algorithm: RS256 (the default), RS384, RS512, PS256, PS384 or PS512 for an RSA key,
    /// as its JWK's `alg` says (the router verifies with that one only); an EC or Ed25519
    /// key signs only its own (ES256, ES384, EdDSA).
    #[arg(long, value_parser = signing_alg)]
    pub alg: Option<Algorithm>,
    /// Key id for the header (defaults from the key).
    #[arg(long)]
    pub kid: Option<String>,
    /// Issuer.
    #[arg(long, default_value = "https://id.nexus.localhost")]
    pub iss: String,
    /// Audience; empty (`--aud ""`) leaves the claim out, for a router with no audiences.
    #[arg(long, default_value = "nexus")]
    pub aud: String,
    /// Name of the tenant claim.
    #[arg(long, default_value = "tenant_id")]
    pub tenant_claim: String,
    /// Name of the org claim.
    #[arg(long, default_value = "org_id")]
    pub org_claim: String,
}

pub(super) fn run(a: &TokenArgs) -> ExitCode {
    // The router compares the claim with a canonical tenant id byte for byte: a token for
    // `ACME` could never be used, so it is not minted.
    if let Err(e) = nexus_binding_store::TenantId::parse(&a.tenant) {
        eprintln!("nexus-edge token: --tenant {:?}: {e}", a.tenant);
        return ExitCode::from(2);
    }
    // Tokens the router would refuse, or read otherwise than meant, are not minted: a tenant
    // or org claim may not take the name of a claim this command sets or the router reads
    // as a date (`nbf`).
    const RESERVED: [&str; 7] = ["iss", "sub", "iat", "exp", "aud", "nbf", "jti"];
    for (flag, name) in [
        ("--tenant-claim", &a.tenant_claim),
        ("--org-claim", &a.org_claim),
    ] {
        if name.is_empty() {
            eprintln!("nexus-edge token: {flag}: the claim's name is empty");
            return ExitCode::from(2);
        }
        if RESERVED.contains(&name.as_str()) {
            eprintln!(
                "nexus-edge token: {flag} {name:?}: the claim must have a name of its own, not \
                 one of {RESERVED:?}"
            );
            return ExitCode::from(2);
        }
    }
    if a.tenant_claim == a.org_claim && a.org.is_some() {
        eprintln!("nexus-edge token: --tenant-claim and --org-claim name the same claim");
        return ExitCode::from(2);
    }
    for (flag, value) in [("--sub", Some(&a.sub)), ("--org", a.org.as_ref())] {
        if let Some(v) = value.filter(|v| !crate::auth::claims::forwardable(v)) {
            let why = match (flag, v.is_empty()) {
                ("--org", true) => "the router reads an empty org claim as none: leave --org out",
                ("--org", false) => {
                    "the router refuses an org claim with blanks at its ends or control characters"
                }
                _ => {
                    "the router refuses an empty sub, and one with blanks at its ends or \
                     control characters"
                }
            };
            eprintln!("nexus-edge token: {flag} {v:?}: {why}");
            return ExitCode::from(2);
        }
    }
    let key = match SigningKey::from_pem_file(&a.key, a.kid.clone()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("nexus-edge token: {}: {e}", a.key.display());
            return ExitCode::FAILURE;
        }
    };
    let key = match a.alg {
        Some(alg) => key.with_alg(alg),
        None => Ok(key),
    };
    let key = match key {
        Ok(k) => k,
        Err(e) => {
            eprintln!("nexus-edge token: --alg: {}: {e}", a.key.display());
            return ExitCode::from(2);
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut claims = serde_json::json!({
        "iss": a.iss,
        "sub": a.sub,
        "iat": now,
        "exp": now.saturating_add(a.ttl.as_secs()),
        // A token of its own: `revoke token --token` can name this one alone.
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    if !a.aud.is_empty() {
        claims["aud"] = serde_json::Value::String(a.aud.clone());
    }
    claims[&a.tenant_claim] = serde_json::Value::String(a.tenant.clone());
    if let Some(org) = &a.org {
        claims[&a.org_claim] = serde_json::Value::String(org.clone());
    }
    match key.sign(&claims) {
        // `[auth] max_token_bytes` is at most 64 KiB: every router refuses a longer token.
        Ok(t) if t.len() > MAX_TOKEN_BYTES_CEILING => {
            eprintln!(
                "nexus-edge token: the token would be {} bytes long, and a router refuses one \
                 past {MAX_TOKEN_BYTES_CEILING} ([auth] max_token_bytes is at most that): give \
                 shorter \
                 claims",
                t.len()
            );
            ExitCode::from(2)
        }
        Ok(t) => {
            let default = nexus_config::embedded_default().auth.max_token_bytes;
            if t.len() > default {
                eprintln!(
                    "nexus-edge token: note: the token is {} bytes long; a router refuses one \
                     past [auth] max_token_bytes ({default} unless set)",
                    t.len()
                );
            }
            outln!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nexus-edge token: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A token's lifetime: whole seconds, from 1 s (an `exp` at `iat` would be refused once the
/// leeway passed) to 366 days (a longer one is a credential that never expires in practice).
fn token_ttl(text: &str) -> Result<Duration, String> {
    let d = nexus_config::parse_duration(text.trim())?;
    if d.subsec_nanos() != 0 {
        // `exp` is whole seconds: 1500ms would be cut to 1 s.
        return Err(format!("{text:?} is not whole seconds"));
    }
    if d < Duration::from_secs(1) || d > Duration::from_secs(366 * 86_400) {
        return Err(format!("{text:?} is not from 1s to 366d"));
    }
    Ok(d)
}

/// `--alg`: a signature algorithm's name, as in a JWT header (case-sensitive). HMAC is not
/// minted: its secret is no key file.
fn signing_alg(text: &str) -> Result<Algorithm, String> {
    match Algorithm::from_name(text) {
        Some(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => Err(format!(
            "{text}: HMAC tokens are signed with the shared secret, not a key file"
        )),
        Some(alg) => Ok(alg),
        None => Err(format!(
            "{text:?} is no signature algorithm: RS256, RS384, RS512, PS256, PS384, PS512, \
             ES256, ES384 or EdDSA"
        )),
    }
}
