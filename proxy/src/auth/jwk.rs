//! Verification keys: JWKs turned into ready-to-use key material, each pinned to the one
//! algorithm it may verify (RFC 8725 §3.1: each key is used with exactly one algorithm).
//!
//! The key decides the algorithm, never the token: a key's own `alg` wins, and must fit its
//! type. Without one, the key type gives it: RSA → RS256 (the algorithm OpenID Connect
//! requires every provider to offer), P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA; an RSA key
//! meant for PS256 or RS512 must say so in its `alg`. So an RSA key never verifies an HMAC
//! token (the classic "HS256 signed with the public key" confusion) nor a PSS one it was not
//! published for. HMAC secrets never come from a JWKS file; they are configured explicitly,
//! each with its algorithm.
//!
//! Public keys are parsed once, at load, into aws-lc-rs `ParsedPublicKey`s: a request never
//! re-parses key bytes, and an RSA key keeps its Montgomery constants between verifications
//! (`ring` recomputes them on every call, a third of an RS256 verification). A key the library
//! rejects (a point off the curve, a malformed modulus) is skipped at load with the reason.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self as lc, ParsedPublicKey, VerificationAlgorithm};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nexus_config::HmacAlgorithm;
use serde_json::Value;

use super::error::TokenError;

/// A JWS algorithm this router implements (RFC 7518 §3, RFC 8037 for EdDSA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
    /// HMAC SHA-256 (only with a configured secret).
    HS256,
    /// HMAC SHA-384 (only with a configured secret).
    HS384,
    /// HMAC SHA-512 (only with a configured secret).
    HS512,
}

impl Algorithm {
    /// Parses the `alg` name, exactly (names are case-sensitive; `none` is never accepted).
    pub fn from_name(s: &str) -> Option<Algorithm> {
        Some(match s {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            _ => return None,
        })
    }

    /// The `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
        }
    }
}

/// Key material, parsed once at load so no request re-parses a JWK.
#[derive(Debug)]
enum Material {
    /// A public key, parsed for the key's one algorithm.
    Public(ParsedPublicKey),
    /// An HMAC secret, for the key's one algorithm.
    Hmac(ring::hmac::Key),
}

/// The verification algorithm of the library for a JWS algorithm (`None` for HMAC).
fn verification_algorithm(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    use Algorithm::*;
    Some(match alg {
        RS256 => &lc::RSA_PKCS1_2048_8192_SHA256,
        RS384 => &lc::RSA_PKCS1_2048_8192_SHA384,
        RS512 => &lc::RSA_PKCS1_2048_8192_SHA512,
        PS256 => &lc::RSA_PSS_2048_8192_SHA256,
        PS384 => &lc::RSA_PSS_2048_8192_SHA384,
        PS512 => &lc::RSA_PSS_2048_8192_SHA512,
        ES256 => &lc::ECDSA_P256_SHA256_FIXED,
        ES384 => &lc::ECDSA_P384_SHA384_FIXED,
        EdDSA => &lc::ED25519,
        HS256 | HS384 | HS512 => return None,
    })
}

/// Parses `bytes` as a public key for `alg`.
fn parse_public(bytes: &[u8], alg: Algorithm) -> Result<Material, String> {
    let verification = verification_algorithm(alg)
        .ok_or_else(|| format!("{} needs a configured secret", alg.name()))?;
    ParsedPublicKey::new(verification, bytes)
        .map(Material::Public)
        .map_err(|e| format!("key rejected for {}: {e}", alg.name()))
}

/// The DER public key (X.509 `SubjectPublicKeyInfo`) the library parses an RSA key from.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Result<Vec<u8>, String> {
    let e = &e[e.iter().position(|&b| b != 0).unwrap_or(e.len())..];
    aws_lc_rs::rsa::PublicKeyComponents { n, e }
        .as_der()
        .map(|der| der.as_ref().to_vec())
        .map_err(|_| "RSA key rejected: n and e do not form a public key".to_owned())
}

/// One verification key.
#[derive(Debug)]
pub struct VerifyKey {
    /// `kid`, when the key has one.
    pub kid: Option<String>,
    /// The one algorithm the key verifies: its JWK `alg`, else its type's (module docs).
    pub alg: Algorithm,
    material: Material,
}

impl VerifyKey {
    /// An HMAC key from a configured secret, for its configured algorithm.
    pub fn hmac(kid: &str, alg: HmacAlgorithm, secret: &[u8]) -> VerifyKey {
        let (alg, hash) = match alg {
            HmacAlgorithm::HS256 => (Algorithm::HS256, ring::hmac::HMAC_SHA256),
            HmacAlgorithm::HS384 => (Algorithm::HS384, ring::hmac::HMAC_SHA384),
            HmacAlgorithm::HS512 => (Algorithm::HS512, ring::hmac::HMAC_SHA512),
        };
        VerifyKey {
            kid: Some(kid.to_owned()),
            alg,
            material: Material::Hmac(ring::hmac::Key::new(hash, secret)),
        }
    }

    /// Verifies `sig` over `msg` for a token whose header says `alg`: only the key's own
    /// algorithm is ever used.
    pub fn verify(&self, alg: Algorithm, msg: &[u8], sig: &[u8]) -> Result<(), TokenError> {
        if alg != self.alg {
            return Err(TokenError::AlgorithmMismatch);
        }
        let ok = match &self.material {
            Material::Public(key) => key.verify_sig(msg, sig).is_ok(),
            Material::Hmac(key) => ring::hmac::verify(key, msg, sig).is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(TokenError::BadSignature)
        }
    }
}

fn b64_field(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    let s = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing {name}"))?;
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("{name} is not base64url"))
}

fn str_field<'a>(jwk: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

/// `key_ops` (RFC 7517 §4.3): an array of distinct strings that includes `verify`; beside
/// `use` (which is `sig` here) it must say the same, so it names no operation of another
/// use. A key whose members contradict each other is not one its publisher meant.
fn check_key_ops(ops: &Value, with_use: bool) -> Result<(), String> {
    let Some(list) = ops.as_array() else {
        return Err("key_ops is not an array".to_owned());
    };
    let mut names: Vec<&str> = Vec::with_capacity(list.len());
    for op in list {
        let Some(name) = op.as_str() else {
            return Err("key_ops holds a value that is not a string".to_owned());
        };
        if names.contains(&name) {
            return Err(format!("key_ops lists {name:?} twice"));
        }
        names.push(name);
    }
    if !names.contains(&"verify") {
        return Err("key_ops does not include \"verify\"".to_owned());
    }
    if let Some(other) = names
        .iter()
        .find(|n| with_use && !matches!(**n, "sign" | "verify"))
    {
        return Err(format!(
            "key_ops names {other:?}, which use \"sig\" contradicts"
        ));
    }
    Ok(())
}

/// Parses one JWK. `Err` explains why the key is skipped (never key material).
pub fn parse_jwk(jwk: &Value) -> Result<VerifyKey, String> {
    if !jwk.is_object() {
        return Err("not an object".to_owned());
    }
    let kid = str_field(jwk, "kid")?.map(str::to_owned);
    // A key set is public: one that carries a private key has leaked it, and anyone who read
    // the set can sign for the key. Its tokens prove nothing.
    if let Some(member) = ["d", "p", "q", "dp", "dq", "qi", "oth"]
        .into_iter()
        .find(|m| jwk.get(m).is_some())
    {
        return Err(format!(
            "it holds private key material ({member:?}): the key has leaked with the key set; \
             rotate it and publish only the public part"
        ));
    }
    if let Some(u) = str_field(jwk, "use")? {
        if u != "sig" {
            return Err(format!("use is {u:?}, not \"sig\""));
        }
    }
    if let Some(ops) = jwk.get("key_ops") {
        check_key_ops(ops, jwk.get("use").is_some())?;
    }
    let alg = match str_field(jwk, "alg")? {
        None => None,
        Some(a) => {
            Some(Algorithm::from_name(a).ok_or_else(|| format!("alg {a:?} is not supported"))?)
        }
    };
    let kty = str_field(jwk, "kty")?.ok_or("missing kty")?;
    let (alg, material) = match kty {
        "RSA" => {
            let n = b64_field(jwk, "n")?;
            let e = b64_field(jwk, "e")?;
            let first = n.iter().position(|&b| b != 0).unwrap_or(n.len());
            let n = &n[first..];
            // `n` has no leading zero bytes here, so only its first byte has leading zero bits
            // (an empty or all-zero `n` is 0 bits).
            let bits =
                (n.len() * 8).saturating_sub(n.first().map_or(0, |b| b.leading_zeros() as usize));
            if !(2048..=8192).contains(&bits) {
                return Err(format!(
                    "RSA key of {bits} bits; 2048 to 8192 are supported"
                ));
            }
            use Algorithm::*;
            let alg = match alg {
                None => RS256,
                Some(a @ (RS256 | RS384 | RS512 | PS256 | PS384 | PS512)) => a,
                Some(_) => return Err("alg does not fit an RSA key".to_owned()),
            };
            (alg, parse_public(&rsa_public_key_der(n, &e)?, alg)?)
        }
        "EC" => {
            let crv = str_field(jwk, "crv")?.ok_or("missing crv")?;
            let x = b64_field(jwk, "x")?;
            let y = b64_field(jwk, "y")?;
            let (len, want) = match crv {
                "P-256" => (32, Algorithm::ES256),
                "P-384" => (48, Algorithm::ES384),
                other => return Err(format!("curve {other:?} is not supported")),
            };
            if x.len() != len || y.len() != len {
                return Err(format!("{crv} coordinates must be {len} bytes"));
            }
            if alg.is_some_and(|a| a != want) {
                return Err(format!("alg does not fit a {crv} key"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (want, parse_public(&point, want)?)
        }
        "OKP" => {
            let crv = str_field(jwk, "crv")?.ok_or("missing crv")?;
            if crv != "Ed25519" {
                return Err(format!("curve {crv:?} is not supported"));
            }
            let x = b64_field(jwk, "x")?;
            let Ok(x) = <[u8; 32]>::try_from(x) else {
                return Err("Ed25519 key must be 32 bytes".to_owned());
            };
            if forgeable_ed25519(&x) {
                return Err(
                    "Ed25519 key is a small-order point or not canonically encoded: anyone \
                     could sign for it"
                        .to_owned(),
                );
            }
            if alg.is_some_and(|a| a != Algorithm::EdDSA) {
                return Err("alg does not fit an Ed25519 key".to_owned());
            }
            (Algorithm::EdDSA, parse_public(&x, Algorithm::EdDSA)?)
        }
        "oct" => {
            // Its `k` is the secret itself, published with the set.
            return Err(
                "a symmetric key (oct) in a key set has leaked with it: anyone who read the set \
                 can sign with it; rotate it, and configure HMAC secrets under \
                 [[auth.hmac_keys]], never in a JWKS"
                    .to_owned(),
            );
        }
        other => return Err(format!("kty {other:?} is not supported")),
    };
    Ok(VerifyKey { kid, alg, material })
}

/// The y coordinates (little-endian, sign bit clear) of Ed25519's points of small order:
/// the identity, the point of order 2, and the two of order 8 (the order-4 points have y = 0).
const SMALL_ORDER_Y: [[u8; 32]; 4] = [
    [
        0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
];

/// Whether an Ed25519 public key lets anyone sign for it: a point of small order (with such a
/// key the signature R = identity, S = 0 verifies any message, and the library does not
/// refuse it), or an encoding whose y is not below the field prime 2^255 - 19 (never
/// produced by a key generator; some of them spell small-order points too).
fn forgeable_ed25519(x: &[u8; 32]) -> bool {
    let mut y = *x;
    y[31] &= 0x7f;
    // y >= p: the top bytes all 0xff (0x7f last) and the lowest at 0xed or above.
    let non_canonical = y[0] >= 0xed && y[1..31].iter().all(|&b| b == 0xff) && y[31] == 0x7f;
    non_canonical || y == [0; 32] || SMALL_ORDER_Y.contains(&y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_moduli_outside_2048_to_8192_bits_are_skipped_at_load() {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let key = |n: &[u8]| serde_json::json!({ "kty": "RSA", "n": b64(n), "e": "AQAB" });
        for (n, bits) in [
            (vec![], 0),
            (vec![0; 300], 0),
            (vec![0xff; 255], 2040),
            (vec![0xff; 1025], 8200),
        ] {
            let err = parse_jwk(&key(&n)).expect_err("refused");
            assert!(err.contains(&format!("{bits} bits")), "{err}");
        }
    }

    #[test]
    fn rsa_exponents_the_library_refuses_are_skipped_at_load() {
        // An exponent sets each verification's cost; 1 or an even one is no RSA key.
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut n = vec![0xc3; 256];
        n[255] |= 1;
        let key = |e: &[u8]| serde_json::json!({ "kty": "RSA", "n": b64(&n), "e": b64(e) });
        for e in [&[1][..], &[2], &[1, 0, 0], &[0xff, 0xff, 0xff, 0xff, 1]] {
            let err = parse_jwk(&key(e)).expect_err("refused");
            assert!(err.contains("key rejected"), "{e:?}: {err}");
        }
        for e in [&[3][..], &[1, 0, 1], &[1, 1, 1, 1]] {
            assert!(parse_jwk(&key(e)).is_ok(), "{e:?}");
        }
    }

    #[test]
    fn key_ops_must_be_distinct_strings_with_verify_and_agree_with_use() {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut n = vec![0xc3; 256];
        n[255] |= 1;
        let key = |extra: Value| {
            let mut k = serde_json::json!({ "kty": "RSA", "n": b64(&n), "e": "AQAB" });
            for (name, v) in extra.as_object().expect("obj") {
                k[name] = v.clone();
            }
            parse_jwk(&k).map(|_| ())
        };
        use serde_json::json;
        for ok in [
            json!({}),
            json!({ "key_ops": ["verify"] }),
            json!({ "key_ops": ["sign", "verify"], "use": "sig" }),
            json!({ "key_ops": ["verify", "encrypt"] }),
        ] {
            assert_eq!(key(ok.clone()), Ok(()), "{ok}");
        }
        for (bad, why) in [
            (json!({ "key_ops": "verify" }), "not an array"),
            (json!({ "key_ops": ["verify", "verify"] }), "twice"),
            (json!({ "key_ops": ["verify", 1] }), "not a string"),
            (json!({ "key_ops": ["sign"] }), "does not include"),
            (
                json!({ "key_ops": ["verify", "encrypt"], "use": "sig" }),
                "contradicts",
            ),
        ] {
            let err = key(bad.clone()).expect_err("skipped");
            assert!(err.contains(why), "{bad}: {err}");
        }
        let secret = parse_jwk(&json!({ "kty": "oct", "k": "c2VjcmV0" })).map(|_| ());
        assert!(secret.expect_err("skipped").contains("leaked"));
    }

    #[test]
    fn a_point_off_the_curve_is_skipped_at_load() {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": "bad",
            "x": b64(&[1; 32]), "y": b64(&[2; 32]),
        });
        let err = parse_jwk(&jwk).expect_err("off-curve point");
        assert!(err.contains("key rejected"), "{err}");
    }
}
