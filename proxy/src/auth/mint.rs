//! Minting tokens, for `nexus-edge token`, the demo, tests and benchmarks.
//!
//! The router itself never signs anything; this exists so a newcomer and the test suite can
//! produce real tokens with real keys.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

use super::jwk::Algorithm;

/// Why a signing key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The file could not be read.
    #[error("cannot read key: {0}")]
    Read(#[from] std::io::Error),
    /// Not a PKCS#8 PEM private key of a supported type.
    #[error("not a PKCS#8 PEM private key (RSA, EC P-256/P-384 or Ed25519): {0}")]
    Format(String),
    /// A private key of a supported type the router would refuse to verify with.
    #[error("{0}")]
    Unusable(&'static str),
    /// Signing failed.
    #[error("signing failed")]
    Sign,
    /// The key cannot sign with the algorithm asked for.
    #[error("{key} key signs {signs} only, not {asked}")]
    Algorithm {
        /// The key's type.
        key: &'static str,
        /// What it can sign.
        signs: &'static str,
        /// What was asked.
        asked: &'static str,
    },
}

enum Kind {
    /// An RSA key, with the algorithm it signs (RS* or PS*; RS256 unless asked otherwise).
    Rsa(RsaKeyPair, Algorithm),
    Ec(EcdsaKeyPair, Algorithm),
    Ed(Ed25519KeyPair),
}

/// A private key with its `kid`, able to sign JWTs.
pub struct SigningKey {
    kind: Kind,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg().name())
            .finish()
    }
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

impl SigningKey {
    /// Loads a PKCS#8 PEM private key. `kid` defaults to the key's RFC 7638 thumbprint.
    pub fn from_pem_file(path: &Path, kid: Option<String>) -> Result<Self, MintError> {
        // A regular file of a private key's size: a FIFO would block, a huge file be read
        // whole.
        let bytes = nexus_config::files::read_regular(path, 64 * 1024)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            MintError::from(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        Self::from_pem(&text, kid)
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pem(pem_text: &str, kid: Option<String>) -> Result<Self, MintError> {
        // The parser's own words (`malformedframing`) say little to someone who passed a JWKS.
        let block = pem::parse(pem_text).map_err(|e| {
            MintError::Format(if pem_text.contains("-----BEGIN ") {
                format!("its PEM block does not decode ({e})")
            } else {
                "no PEM block in it".to_owned()
            })
        })?;
        if block.tag() != "PRIVATE KEY" {
            return Err(MintError::Format(format!(
                "PEM block is {:?}, expected \"PRIVATE KEY\"",
                block.tag()
            )));
        }
        Self::from_pkcs8(block.contents(), kid)
    }

    fn from_pkcs8(der: &[u8], kid: Option<String>) -> Result<Self, MintError> {
        let rng = SystemRandom::new();
        let rsa = RsaKeyPair::from_pkcs8(der);
        let kind = if let Ok(k) = rsa {
            Kind::Rsa(k, Algorithm::RS256)
        } else if rsa.as_ref().is_err_and(|e| e.to_string() == "TooSmall") {
            // The router skips such keys in a key set too (RFC 7518 §3.3: 2048 bits or more).
            return Err(MintError::Unusable(
                "an RSA key of fewer than 2048 bits, which the router refuses",
            ));
        } else if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
        {
            Kind::Ec(k, Algorithm::ES256)
        } else if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, der, &rng)
        {
            Kind::Ec(k, Algorithm::ES384)
        } else if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            Kind::Ed(k)
        } else {
            return Err(MintError::Format("unsupported or damaged key".to_owned()));
        };
        let mut key = SigningKey {
            kind,
            kid: String::new(),
        };
        key.kid = kid.unwrap_or_else(|| key.thumbprint());
        Ok(key)
    }

    /// A fresh EC P-256 key.
    pub fn generate_es256(kid: &str) -> Result<Self, MintError> {
        Ok(Self::generate_es256_pem(kid)?.0)
    }

    /// A fresh EC P-256 key and its PKCS#8 PEM, which [`SigningKey::from_pem`] reads back
    /// (the demo saves it so that `nexus-edge token` can mint with it).
    pub fn generate_es256_pem(kid: &str) -> Result<(Self, String), MintError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| MintError::Sign)?;
        let text = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
        Ok((
            Self::from_pkcs8(pkcs8.as_ref(), Some(kid.to_owned()))?,
            text,
        ))
    }

    /// A fresh Ed25519 key.
    pub fn generate_ed25519(kid: &str) -> Result<Self, MintError> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| MintError::Sign)?;
        Self::from_pkcs8(pkcs8.as_ref(), Some(kid.to_owned()))
    }

    /// The key, signing with `alg`: an RSA key signs any of RS256/384/512 and PS256/384/512
    /// (its JWK says which, and the router verifies with that one only); an EC or Ed25519
    /// key signs its own algorithm alone.
    pub fn with_alg(mut self, alg: Algorithm) -> Result<Self, MintError> {
        use Algorithm::*;
        let (key, signs) = match &self.kind {
            Kind::Rsa(..) => ("an RSA", "RS256, RS384, RS512, PS256, PS384 or PS512"),
            Kind::Ec(_, ES256) => ("an EC P-256", "ES256"),
            Kind::Ec(..) => ("an EC P-384", "ES384"),
            Kind::Ed(_) => ("an Ed25519", "EdDSA"),
        };
        match &mut self.kind {
            Kind::Rsa(_, own) if matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => {
                *own = alg;
                Ok(self)
            }
            Kind::Ec(_, own) if *own == alg => Ok(self),
            Kind::Ed(_) if alg == EdDSA => Ok(self),
            _ => Err(MintError::Algorithm {
                key,
                signs,
                asked: alg.name(),
            }),
        }
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Algorithm {
        match &self.kind {
            Kind::Rsa(_, alg) => *alg,
            Kind::Ec(_, alg) => *alg,
            Kind::Ed(_) => Algorithm::EdDSA,
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Required public members in RFC 7638 order, without `alg`/`kid`/`use`.
    fn public_members(&self) -> serde_json::Value {
        match &self.kind {
            Kind::Rsa(k, _) => {
                let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
                serde_json::json!({ "e": b64(&c.e), "kty": "RSA", "n": b64(&c.n) })
            }
            Kind::Ec(k, alg) => {
                let p = k.public_key().as_ref();
                let half = (p.len() - 1) / 2;
                let crv = if *alg == Algorithm::ES256 {
                    "P-256"
                } else {
                    "P-384"
                };
                serde_json::json!({ "crv": crv, "kty": "EC", "x": b64(&p[1..=half]), "y": b64(&p[1 + half..]) })
            }
            Kind::Ed(k) => {
                serde_json::json!({ "crv": "Ed25519", "kty": "OKP", "x": b64(k.public_key().as_ref()) })
            }
        }
    }

    /// RFC 7638 thumbprint (serde_json sorts object keys, which is the order RFC 7638 needs).
    fn thumbprint(&self) -> String {
        let canonical = self.public_members().to_string();
        b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// The public JWK, with `kid`, `alg` and `use`, for building a JWKS.
    pub fn public_jwk(&self) -> serde_json::Value {
        let mut jwk = self.public_members();
        jwk["kid"] = serde_json::Value::String(self.kid.clone());
        jwk["alg"] = serde_json::Value::String(self.alg().name().to_owned());
        jwk["use"] = serde_json::Value::String("sig".to_owned());
        jwk
    }

    /// Signs `claims` with header `{"alg", "kid", "typ": "JWT"}`.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, MintError> {
        let header = serde_json::json!({ "alg": self.alg().name(), "kid": self.kid, "typ": "JWT" });
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    /// Signs arbitrary header and payload JSON text as given (tests craft odd tokens with it).
    pub fn sign_raw(&self, header_json: &str, payload_json: &str) -> Result<String, MintError> {
        let input = format!(
            "{}.{}",
            b64(header_json.as_bytes()),
            b64(payload_json.as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match &self.kind {
            Kind::Rsa(k, alg) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_SHA384,
                    Algorithm::PS512 => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(padding, &rng, input.as_bytes(), &mut sig)
                    .map_err(|_| MintError::Sign)?;
                sig
            }
            Kind::Ec(k, _) => k
                .sign(&rng, input.as_bytes())
                .map_err(|_| MintError::Sign)?
                .as_ref()
                .to_vec(),
            Kind::Ed(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        Ok(format!("{input}.{}", b64(&sig)))
    }
}
