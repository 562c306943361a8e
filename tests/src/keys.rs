//! Signing keys and tokens for tests, including deliberately broken ones.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nexus_edge::auth::mint::SigningKey;

/// Issuer every test config accepts.
pub const ISS: &str = "https://id.edge.test";
/// Audience every test config accepts.
pub const AUD: &str = "nexus";

/// Now, in Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh ES256 key plus the repo's RS256 demo key, and the JWKS with both.
pub struct TestKeys {
    /// ES256 key, kid `test-es256`.
    pub es: SigningKey,
    /// RS256 key, kid `test-rs256`.
    pub rs: SigningKey,
}

impl TestKeys {
    /// Generates / loads the keys.
    pub fn new() -> TestKeys {
        let es = SigningKey::generate_es256("test-es256").expect("es256 key");
        let pem = std::fs::read_to_string(repo_root().join("deploy/demo/demo-rs256-key.pem"))
            .expect("rs256 demo key");
        let rs = SigningKey::from_pem(&pem, Some("test-rs256".to_owned())).expect("rs256 key");
        TestKeys { es, rs }
    }

    /// The JWKS the router should use.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.es.public_jwk(), self.rs.public_jwk()] })
    }

    /// A valid ES256 token for `tenant` / `org`.
    pub fn token(&self, tenant: &str, org: Option<&str>) -> String {
        self.es.sign(&claims(tenant, org)).expect("sign")
    }
}

impl Default for TestKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// The repository root (tests run with the package dir as cwd).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Standard claims: our issuer and audience, one hour of life.
pub fn claims(tenant: &str, org: Option<&str>) -> serde_json::Value {
    let n = now();
    let mut c = serde_json::json!({
        "iss": ISS, "aud": AUD, "sub": "user-1", "iat": n, "exp": n + 3600, "tenant_id": tenant,
    });
    if let Some(o) = org {
        c["org_id"] = serde_json::Value::String(o.to_owned());
    }
    c
}

/// base64url without padding.
pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// An unsigned token (`alg` as given, empty signature).
pub fn unsigned(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// An HS256 token signed with `secret` — e.g. the RSA public key, the classic confusion attack.
pub fn hs256(kid: &str, secret: &[u8], claims: &serde_json::Value) -> String {
    let header = serde_json::json!({ "alg": "HS256", "typ": "JWT", "kid": kid });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let sig = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64(sig.as_ref()))
}

/// Replaces the signature of a token with another token's (valid format, wrong signature).
pub fn with_signature_of(token: &str, other: &str) -> String {
    let (head, _) = token.rsplit_once('.').expect("token");
    let (_, sig) = other.rsplit_once('.').expect("token");
    format!("{head}.{sig}")
}
