use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use nexus_config::HmacAlgorithm;

use super::mint::SigningKey;
use super::*;

const NOW: u64 = 1_800_000_000;
const RS_PEM: &str = include_str!("../../../deploy/demo/demo-rs256-key.pem");
const ES_PEM: &str = include_str!("../../../deploy/demo/demo-es256-key.pem");
const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const HMAC_SECRET_64: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Fixture {
    rs: SigningKey,
    es: SigningKey,
    ed: SigningKey,
    /// Holds the JWKS file; removed when the fixture is dropped, even on panic.
    dir: tempfile::TempDir,
}

fn fixture(name: &str) -> Fixture {
    let rs = SigningKey::from_pem(RS_PEM, Some("rs".into())).expect("rs");
    let es = SigningKey::from_pem(ES_PEM, Some("es".into())).expect("es");
    let ed = SigningKey::generate_ed25519("ed").expect("ed");
    let dir = tempfile::Builder::new()
        .prefix(&format!("nexus-auth-{name}-"))
        .tempdir()
        .expect("dir");
    let jwks = json!({ "keys": [rs.public_jwk(), es.public_jwk(), ed.public_jwk()] });
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).expect("write");
    Fixture { rs, es, ed, dir }
}

fn settings(f: &Fixture) -> AuthSettings {
    AuthSettings {
        jwks: JwksSource::File(f.dir.path().join("jwks.json")),
        hmac_keys: vec![
            HmacKey {
                kid: "hs".into(),
                alg: HmacAlgorithm::HS256,
                secret: HMAC_SECRET.to_vec(),
            },
            HmacKey {
                kid: "hs512".into(),
                alg: HmacAlgorithm::HS512,
                secret: HMAC_SECRET_64.to_vec(),
            },
        ],
        issuers: vec!["https://id.test".into()],
        issuer_keys: None,
        audiences: vec!["nexus".into()],
        leeway: Duration::from_secs(30),
        max_token_lifetime: None,
        tenant_claim: "tenant_id".into(),
        org_claim: "org_id".into(),
        session_cookie: Some("sess".into()),
        token_headers: Vec::new(),
        token_cookies: Vec::new(),
        token_query_parameters: Vec::new(),
        token_cache_capacity: 1000,
        max_token_bytes: 8192,
        jwks_poll_interval: Duration::from_secs(1),
    }
}

fn claims() -> Value {
    json!({ "iss": "https://id.test", "aud": "nexus", "sub": "u1", "exp": NOW + 600, "iat": NOW, "tenant_id": "acme", "org_id": "org-1" })
}

/// The test claims with `patch` applied: a `null` member removes the claim.
fn claims_with(patch: Value) -> Value {
    let mut c = claims();
    for (k, v) in patch.as_object().expect("obj") {
        if v.is_null() {
            c.as_object_mut().expect("obj").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn b64(s: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn hs(alg: &str, kid: &str, secret: &[u8], claims: &Value) -> String {
    let header = json!({ "alg": alg, "kid": kid });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let algo = match alg {
        "HS384" => ring::hmac::HMAC_SHA384,
        "HS512" => ring::hmac::HMAC_SHA512,
        _ => ring::hmac::HMAC_SHA256,
    };
    let sig = ring::hmac::sign(&ring::hmac::Key::new(algo, secret), input.as_bytes());
    format!("{input}.{}", b64(sig.as_ref()))
}

#[test]
fn every_algorithm_verifies() {
    let f = fixture("algs");
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    let tokens = [
        ("RS256", f.rs.sign(&claims()).expect("sign")),
        ("ES256", f.es.sign(&claims()).expect("sign")),
        ("EdDSA", f.ed.sign(&claims()).expect("sign")),
        ("HS256", hs("HS256", "hs", HMAC_SECRET, &claims())),
        ("HS512", hs("HS512", "hs512", HMAC_SECRET_64, &claims())),
    ];
    for (alg, t) in tokens {
        let v = auth
            .verify(&t, NOW)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(v.tenant.as_deref(), Some("acme"));
        assert_eq!(v.org.as_deref(), Some("org-1"));
        assert_eq!(v.sub.as_deref(), Some("u1"));
        assert_eq!(v.alg.name(), alg);
        let h = &v.headers;
        assert_eq!(h.tenant.as_ref().map(|v| v.as_bytes()), Some(&b"acme"[..]));
        assert_eq!(h.org.as_ref().map(|v| v.as_bytes()), Some(&b"org-1"[..]));
        assert_eq!(h.user.as_ref().map(|v| v.as_bytes()), Some(&b"u1"[..]));
    }
}

/// A token signed with PS256 by the RSA demo key, under `kid`.
fn ps256(kid: &str) -> String {
    let rsa = ring::signature::RsaKeyPair::from_pkcs8(pem::parse(RS_PEM).expect("pem").contents())
        .expect("rsa");
    let input = format!(
        "{}.{}",
        b64(json!({"alg": "PS256", "kid": kid}).to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let mut sig = vec![0; rsa.public().modulus_len()];
    rsa.sign(
        &ring::signature::RSA_PSS_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{input}.{}", b64(&sig))
}

#[test]
fn each_key_verifies_exactly_one_algorithm() {
    // RFC 8725 §3.1. The RSA key published three ways: without `alg` (RS256, its type's
    // default), pinned to PS256, and pinned to RS256; plus a P-384 key without `alg`.
    let f = fixture("pss");
    let bare = |kid: &str| {
        let mut jwk = f.rs.public_jwk();
        jwk.as_object_mut().expect("obj").remove("alg");
        jwk["kid"] = json!(kid);
        jwk
    };
    let mut pss = bare("rs-pss");
    pss["alg"] = json!("PS256");
    let es384_pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .expect("p384");
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", es384_pkcs8.as_ref().to_vec()));
    let es384 = SigningKey::from_pem(&pem, Some("es384".into())).expect("es384");
    let mut es384_jwk = es384.public_jwk();
    es384_jwk.as_object_mut().expect("obj").remove("alg");
    std::fs::write(
        f.dir.path().join("jwks.json"),
        json!({ "keys": [bare("rs-any"), pss, es384_jwk] }).to_string(),
    )
    .expect("write");
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    let verify = |t: &str| auth.verify(t, NOW).map(|_| ());
    assert_eq!(verify(&es384.sign(&claims()).expect("sign")), Ok(()));
    assert_eq!(verify(&ps256("rs-pss")), Ok(()));
    // The key without `alg` is RS256's only: a PSS token under it is refused unverified.
    assert_eq!(verify(&ps256("rs-any")), Err(TokenError::AlgorithmMismatch));
    let rs256 = |kid: &str, alg: &str| {
        f.rs.sign_raw(
            &json!({"alg": alg, "kid": kid}).to_string(),
            &claims().to_string(),
        )
        .expect("s")
    };
    assert_eq!(verify(&rs256("rs-any", "RS256")), Ok(()));
    assert_eq!(
        verify(&rs256("rs-pss", "RS256")),
        Err(TokenError::AlgorithmMismatch)
    );
    // An HMAC secret verifies its configured algorithm only, whatever the header asks.
    assert_eq!(
        verify(&hs("HS512", "hs", HMAC_SECRET, &claims())),
        Err(TokenError::AlgorithmMismatch)
    );
    assert_eq!(
        verify(&hs("HS256", "hs512", HMAC_SECRET_64, &claims())),
        Err(TokenError::AlgorithmMismatch)
    );
}

#[test]
fn keys_of_different_types_may_share_a_kid() {
    // RFC 7517 §4.5: an RSA and an EC key under one `kid`, as alternatives. The token's
    // `alg` picks the key; a second key of the same algorithm under that `kid` is skipped.
    let f = fixture("sharedkid");
    let mut rs = f.rs.public_jwk();
    rs["kid"] = json!("k1");
    let mut es = f.es.public_jwk();
    es["kid"] = json!("k1");
    let mut ed = f.ed.public_jwk();
    ed["kid"] = json!("k1");
    let mut ed_again = ed.clone();
    ed_again["x"] = json!(b64(&[9u8; 32]));
    std::fs::write(
        f.dir.path().join("jwks.json"),
        json!({ "keys": [rs, es, ed, ed_again] }).to_string(),
    )
    .expect("write");
    let mut s = settings(&f);
    s.hmac_keys.clear();
    let auth = Authenticator::new(&s).expect("auth");
    assert_eq!(auth.key_count(), 3);
    assert_eq!(
        auth.skipped_keys(),
        vec!["kid \"k1\": duplicate kid for EdDSA".to_owned()]
    );
    let under_k1 = |key: &SigningKey| {
        key.sign_raw(
            &json!({"alg": key.alg().name(), "kid": "k1"}).to_string(),
            &claims().to_string(),
        )
        .expect("s")
    };
    for key in [&f.rs, &f.es, &f.ed] {
        assert_eq!(
            auth.verify(&under_k1(key), NOW).map(|v| v.alg),
            Ok(key.alg()),
            "{}",
            key.alg().name()
        );
    }
    // No key under k1 verifies PS256.
    assert_eq!(
        auth.verify(&ps256("k1"), NOW).map(|_| ()),
        Err(TokenError::AlgorithmMismatch)
    );
}

#[test]
fn refusals() {
    let f = fixture("refusals");
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    let with = claims_with;
    let rsa_pub_der = {
        let rsa =
            ring::signature::RsaKeyPair::from_pkcs8(pem::parse(RS_PEM).expect("pem").contents())
                .expect("rsa");
        use ring::signature::KeyPair;
        rsa.public_key().as_ref().to_vec()
    };
    let good = f.es.sign(&claims()).expect("sign");
    let (good_head, _) = good.rsplit_once('.').expect("dot");
    let cases: Vec<(&str, String, TokenError)> = vec![
        (
            "expired",
            f.es.sign(&with(json!({"exp": NOW - 31}))).expect("s"),
            TokenError::Expired,
        ),
        (
            "not yet valid",
            f.es.sign(&with(json!({"nbf": NOW + 31}))).expect("s"),
            TokenError::NotYetValid,
        ),
        (
            "no exp",
            f.es.sign(&with(json!({"exp": null}))).expect("s"),
            TokenError::MissingExp,
        ),
        (
            "exp string",
            f.es.sign(&with(json!({"exp": "soon"}))).expect("s"),
            TokenError::Malformed("time claim is not a valid NumericDate"),
        ),
        (
            "wrong iss",
            f.es.sign(&with(json!({"iss": "https://evil"}))).expect("s"),
            TokenError::WrongIssuer,
        ),
        (
            "no iss",
            f.es.sign(&with(json!({"iss": null}))).expect("s"),
            TokenError::WrongIssuer,
        ),
        (
            "wrong aud",
            f.es.sign(&with(json!({"aud": "other"}))).expect("s"),
            TokenError::WrongAudience,
        ),
        (
            "wrong aud array",
            f.es.sign(&with(json!({"aud": ["a", "b"]}))).expect("s"),
            TokenError::WrongAudience,
        ),
        (
            "no aud",
            f.es.sign(&with(json!({"aud": null}))).expect("s"),
            TokenError::WrongAudience,
        ),
        (
            "bad signature",
            format!("{good_head}.{}", b64(&[0u8; 64])),
            TokenError::BadSignature,
        ),
        (
            "HS256 with RSA public key",
            hs("HS256", "rs", &rsa_pub_der, &claims()),
            TokenError::AlgorithmMismatch,
        ),
        (
            "HS256 with PEM text",
            hs("HS256", "rs", RS_PEM.as_bytes(), &claims()),
            TokenError::AlgorithmMismatch,
        ),
        (
            "HS256 with wrong secret",
            hs(
                "HS256",
                "hs",
                b"another-secret-of-32-bytes-long!",
                &claims(),
            ),
            TokenError::BadSignature,
        ),
        (
            "ES256 token on RSA key",
            f.es.sign_raw(
                &json!({"alg":"ES256","kid":"rs"}).to_string(),
                &claims().to_string(),
            )
            .expect("s"),
            TokenError::AlgorithmMismatch,
        ),
        (
            "RS384 on RS256-pinned key",
            f.rs.sign_raw(
                &json!({"alg":"RS384","kid":"rs"}).to_string(),
                &claims().to_string(),
            )
            .expect("s"),
            TokenError::AlgorithmMismatch,
        ),
        (
            "unknown kid",
            f.es.sign_raw(
                &json!({"alg":"ES256","kid":"nope"}).to_string(),
                &claims().to_string(),
            )
            .expect("s"),
            TokenError::UnknownKey,
        ),
        (
            "no kid, many keys",
            f.es.sign_raw(&json!({"alg":"ES256"}).to_string(), &claims().to_string())
                .expect("s"),
            TokenError::UnknownKey,
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none"}"#),
                b64(claims().to_string().as_bytes())
            ),
            TokenError::Malformed("empty part"),
        ),
        (
            "alg none signed",
            format!(
                "{}.{}.AAAA",
                b64(br#"{"alg":"none","kid":"es"}"#),
                b64(claims().to_string().as_bytes())
            ),
            TokenError::UnsupportedAlgorithm,
        ),
        (
            "duplicate claim",
            f.es.sign_raw(
                &json!({"alg":"ES256","kid":"es"}).to_string(),
                r#"{"exp":1900000000,"tenant_id":"a","tenant_id":"b"}"#,
            )
            .expect("s"),
            TokenError::DuplicateKey,
        ),
        (
            "crit",
            f.es.sign_raw(
                &json!({"alg":"ES256","kid":"es","crit":["x"],"x":1}).to_string(),
                &claims().to_string(),
            )
            .expect("s"),
            TokenError::CriticalHeader,
        ),
        (
            "jwk header",
            f.es.sign_raw(
                &json!({"alg":"ES256","kid":"es","jwk":f.es.public_jwk()}).to_string(),
                &claims().to_string(),
            )
            .expect("s"),
            TokenError::ForbiddenHeader("jwk"),
        ),
        (
            "typ",
            f.es.sign_raw(
                &json!({"alg":"ES256","kid":"es","typ":"secevent+jwt"}).to_string(),
                &claims().to_string(),
            )
            .expect("s"),
            TokenError::WrongType,
        ),
        ("too large", "a".repeat(9000), TokenError::TooLarge),
    ];
    for (name, token, want) in cases {
        assert_eq!(auth.verify(&token, NOW).map(|_| ()), Err(want), "{name}");
    }
    // Unknown, non-critical header parameters are ignored (RFC 7515 §4).
    let extra =
        f.es.sign_raw(
            &json!({"alg":"ES256","kid":"es","x-vendor":{"a":1},"x5t":"abc"}).to_string(),
            &claims().to_string(),
        )
        .expect("s");
    assert!(auth.verify(&extra, NOW).is_ok());
    // Leeway edges.
    assert!(auth
        .verify(&f.es.sign(&with(json!({"exp": NOW - 29}))).expect("s"), NOW)
        .is_ok());
    assert!(auth
        .verify(&f.es.sign(&with(json!({"nbf": NOW + 29}))).expect("s"), NOW)
        .is_ok());
    // A non-string tenant claim verifies, but yields no tenant (the caller rejects with 403).
    let v = auth
        .verify(&f.es.sign(&with(json!({"tenant_id": 42}))).expect("s"), NOW)
        .expect("ok");
    assert_eq!(v.tenant, None);
    assert_eq!(v.headers.tenant, None);
    // `iss` and `sub` are StringOrURI: any other value makes the token invalid.
    for (patch, why) in [
        (json!({"sub": 42}), "sub is not a string"),
        (json!({"sub": {"id": 1}}), "sub is not a string"),
        (
            json!({"iss": ["https://issuer.test"]}),
            "iss is not a string",
        ),
    ] {
        let token = f.es.sign(&with(patch.clone())).expect("s");
        assert_eq!(
            auth.verify(&token, NOW).map(|_| ()),
            Err(TokenError::Malformed(why)),
            "{patch}"
        );
    }
    // An identity claim the instance would not be told byte for byte is refused: control
    // characters, blanks at its ends (HTTP strips them: " admin" would be `admin`), and an
    // empty one (an empty header names nobody).
    for (patch, claim) in [
        (json!({"sub": ""}), "sub"),
        (json!({"sub": "u\n1"}), "sub"),
        (json!({"sub": " admin"}), "sub"),
        (json!({"sub": "admin\t"}), "sub"),
        (json!({"sub": "a\u{7f}"}), "sub"),
        (json!({"org_id": "o\r\n"}), "org"),
        (json!({"org_id": " org-other "}), "org"),
        (json!({"org_id": "org\u{1}x"}), "org"),
        (json!({"org_id": "org\u{85}x"}), "org"),
        (json!({"sub": "u\u{9b}1"}), "sub"),
        (json!({"sub": "u\u{2028}1"}), "sub"),
        // White space an app trims, and invisible format characters (zero-width, bidi).
        (json!({"sub": "admin\u{a0}"}), "sub"),
        (json!({"sub": "\u{3000}admin"}), "sub"),
        (json!({"sub": "adm\u{200b}in"}), "sub"),
        (json!({"sub": "adm\u{202e}in"}), "sub"),
        (json!({"sub": "\u{feff}admin"}), "sub"),
        (json!({"org_id": "org\u{2066}x"}), "org"),
        (json!({"org_id": "org\u{e0041}"}), "org"),
    ] {
        let token = f.es.sign(&with(patch.clone())).expect("s");
        assert_eq!(
            auth.verify(&token, NOW).map(|_| ()),
            Err(TokenError::UnforwardableClaim(claim)),
            "{patch}"
        );
    }
    // An empty or null org claim is no org: none is sent.
    for none in [json!(""), Value::Null] {
        let mut c = claims();
        c["org_id"] = none;
        let v = auth.verify(&f.es.sign(&c).expect("s"), NOW).expect("ok");
        assert_eq!((v.org.as_deref(), v.headers.org.as_ref()), (None, None));
    }
    // Any other value that is not a string is refused, not read as no org.
    for org in [json!(1), json!({"a": 1}), json!(["org-1"]), json!(true)] {
        let token = f.es.sign(&with(json!({"org_id": org.clone()}))).expect("s");
        assert_eq!(
            auth.verify(&token, NOW).map(|_| ()),
            Err(TokenError::Malformed("org claim is not a string")),
            "{org}"
        );
    }
    // Inner blanks and tabs, and text past ASCII, are sent as they are.
    let v = auth
        .verify(
            &f.es
                .sign(&with(
                    json!({"sub": "Ada Lovelace\tx", "org_id": "órg", "tenant_id": "acme"}),
                ))
                .expect("s"),
            NOW,
        )
        .expect("ok");
    assert_eq!(
        v.headers.user.as_ref().map(|v| v.as_bytes()),
        Some("Ada Lovelace\tx".as_bytes())
    );
    assert_eq!(
        v.headers.org.as_ref().map(|v| v.as_bytes()),
        Some("órg".as_bytes())
    );
    assert_eq!(
        v.headers.tenant.as_ref().map(|v| v.as_bytes()),
        Some(&b"acme"[..])
    );
}

#[test]
fn time_claims_round_toward_refusal_and_may_precede_the_epoch() {
    let f = fixture("numericdate");
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    let verify = |patch: Value| {
        auth.verify(&f.es.sign(&claims_with(patch)).expect("s"), NOW)
            .map(|_| ())
    };
    // Leeway is 30 s. A token valid from NOW + 30.5 is not valid at NOW + 0.9 (the clock
    // reads whole seconds): its `nbf` counts as NOW + 31, not NOW + 30.
    assert_eq!(
        verify(json!({"nbf": NOW as f64 + 30.5})),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(verify(json!({"nbf": NOW as f64 + 29.5})), Ok(()));
    // An `exp` of NOW - 29.5 has passed, with the leeway, by NOW + 0.5.
    assert_eq!(
        verify(json!({"exp": NOW as f64 - 29.5})),
        Err(TokenError::Expired)
    );
    assert_eq!(verify(json!({"exp": NOW as f64 - 28.5})), Ok(()));
    // NumericDates are signed (RFC 7519 §2): before the epoch is a date, long past.
    assert_eq!(verify(json!({"nbf": -1, "iat": -5})), Ok(()));
    assert_eq!(verify(json!({"nbf": -1.5})), Ok(()));
    assert_eq!(verify(json!({"exp": -1})), Err(TokenError::Expired));
    // Far-future dates of either JSON kind read alike.
    assert_eq!(verify(json!({"exp": 1e300})), Ok(()));
    assert_eq!(verify(json!({"exp": u64::MAX})), Ok(()));
    // A fraction the nearest double makes the next whole second (`X.99999999999` reads as
    // `X + 1.0`) does not lengthen the token: a fractional date is taken a step toward
    // refusal first. Here `exp` is NOW - 29.00000000001, past with the leeway.
    let raw = claims_with(json!({"exp": 0}))
        .to_string()
        .replace("\"exp\":0", &format!("\"exp\":{}.99999999999", NOW - 30));
    let header = json!({"alg": "ES256", "kid": "es"}).to_string();
    assert_eq!(
        auth.verify(&f.es.sign_raw(&header, &raw).expect("s"), NOW)
            .map(|_| ()),
        Err(TokenError::Expired)
    );
    // An exact `X.0` may end a second early; the whole number `X` does not.
    assert_eq!(
        verify(json!({"exp": (NOW - 29) as f64})),
        Err(TokenError::Expired)
    );
    assert_eq!(verify(json!({"exp": NOW - 29})), Ok(()));
}

#[test]
fn with_no_audience_configured_a_token_naming_one_is_refused() {
    let f = fixture("noaud");
    let mut s = settings(&f);
    s.audiences.clear();
    let auth = Authenticator::new(&s).expect("auth");
    let with_aud = |aud: Option<Value>| {
        let c = claims_with(json!({ "aud": aud }));
        auth.verify(&f.es.sign(&c).expect("s"), NOW).map(|_| ())
    };
    // RFC 7519 §4.1.3: this service identifies with no audience, so a present `aud` is not
    // for it.
    assert_eq!(
        with_aud(Some(json!("some-other-service"))),
        Err(TokenError::WrongAudience)
    );
    assert_eq!(
        with_aud(Some(json!(["a", "b"]))),
        Err(TokenError::WrongAudience)
    );
    assert_eq!(with_aud(Some(json!([]))), Err(TokenError::WrongAudience));
    assert_eq!(with_aud(None), Ok(()));
}

#[test]
fn hmac_is_refused_without_configured_secret() {
    let f = fixture("nohmac");
    let mut s = settings(&f);
    s.hmac_keys.clear();
    let auth = Authenticator::new(&s).expect("auth");
    assert_eq!(
        auth.verify(&hs("HS256", "hs", HMAC_SECRET, &claims()), NOW)
            .map(|_| ()),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn cache_skips_signature_but_not_time() {
    let f = fixture("cache");
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    let t = f.rs.sign(&claims()).expect("sign");
    for _ in 0..5 {
        auth.verify(&t, NOW).expect("ok");
    }
    assert_eq!(auth.signature_checks(), 1, "later requests hit the cache");
    // Past exp the cached entry is refused and dropped.
    assert_eq!(
        auth.verify(&t, NOW + 700).map(|_| ()),
        Err(TokenError::Expired)
    );
    assert_eq!(auth.cached_tokens(), 0);
    // A token differing in one byte of the signature is not a cache hit.
    let mut tampered = t.clone();
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(auth.verify(&tampered, NOW).is_err());
}

/// A revocation refuses a token whether it comes from the cache or is verified in full, and
/// taken back, the cached token is served again. A `jti` that is not a string is refused:
/// read as none, it would slip past a revocation of the token.
#[test]
fn revocations_are_checked_on_every_request_cached_or_not() {
    use nexus_binding_store::revocations::{Revocation, RevocationList, Revocations, Revoked};
    let f = fixture("revoked");
    let revocations = Revocations::followed();
    let auth = Authenticator::new(&settings(&f))
        .expect("auth")
        .with_revocations(revocations.clone());
    let cached =
        f.rs.sign(&claims_with(json!({ "jti": "j-1" })))
            .expect("sign");
    let fresh =
        f.es.sign(&claims_with(json!({ "jti": "j-1" })))
            .expect("sign");
    let other =
        f.rs.sign(&claims_with(json!({ "jti": "j-2" })))
            .expect("sign");
    auth.verify(&cached, NOW).expect("ok");
    let revoke = |what: Revoked| {
        revocations.install(RevocationList::new([Revocation {
            what,
            until: NOW + 600,
            at: None,
            actor: None,
            reason: None,
        }]))
    };
    revoke(Revoked::Token { jti: "j-1".into() });
    for t in [&cached, &fresh] {
        assert_eq!(auth.verify(t, NOW).map(|_| ()), Err(TokenError::Revoked));
    }
    assert!(auth.verify(&other, NOW).is_ok());
    // Every token of the tenant issued before NOW + 1: both, whatever their jti.
    let acme = nexus_binding_store::TenantId::parse("acme").expect("id");
    revoke(Revoked::Tenant {
        tenant: acme,
        issued_before: NOW + 1,
    });
    assert_eq!(
        auth.verify(&other, NOW).map(|_| ()),
        Err(TokenError::Revoked)
    );
    revocations.install(RevocationList::default());
    let checks = auth.signature_checks();
    assert!(auth.verify(&cached, NOW).is_ok());
    assert_eq!(
        auth.signature_checks(),
        checks,
        "served from the cache again"
    );

    let numeric = f.rs.sign(&claims_with(json!({ "jti": 7 }))).expect("sign");
    assert_eq!(
        auth.verify(&numeric, NOW).map(|_| ()),
        Err(TokenError::Malformed("jti is not a string"))
    );
}

#[test]
fn with_the_cache_off_every_request_is_verified_in_full() {
    let f = fixture("nocache");
    let mut s = settings(&f);
    s.token_cache_capacity = 0;
    let auth = Authenticator::new(&s).expect("auth");
    let t = f.rs.sign(&claims()).expect("sign");
    for _ in 0..3 {
        auth.verify(&t, NOW).expect("ok");
    }
    assert_eq!(auth.signature_checks(), 3);
    assert_eq!(auth.cached_tokens(), 0);
    assert_eq!(
        auth.verify(&t, NOW + 700).map(|_| ()),
        Err(TokenError::Expired)
    );
}

#[test]
fn key_rotation_invalidates_cache_and_bad_file_keeps_keys() {
    let f = fixture("rotation");
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    let t = f.es.sign(&claims()).expect("sign");
    auth.verify(&t, NOW).expect("ok");
    assert!(
        !auth.reload_keys().expect("unchanged"),
        "same file: no reload"
    );

    // The ES key is removed: its cached token must stop working at once.
    std::fs::write(
        f.dir.path().join("jwks.json"),
        json!({ "keys": [f.rs.public_jwk()] }).to_string(),
    )
    .expect("w");
    assert_eq!(auth.cached_tokens(), 1);
    assert!(auth.reload_keys().expect("reloaded"));
    // Entries of the old key set are dropped, not counted on as cached (`token_cache_entries`).
    assert_eq!(auth.cached_tokens(), 0);
    assert_eq!(
        auth.verify(&t, NOW).map(|_| ()),
        Err(TokenError::UnknownKey)
    );

    // A broken file is refused and the current keys stay.
    std::fs::write(f.dir.path().join("jwks.json"), "{ nope").expect("w");
    assert!(auth.reload_keys().is_err());
    assert_eq!(auth.key_count(), 3, "rs + two hmac");
    assert!(auth.verify(&f.rs.sign(&claims()).expect("s"), NOW).is_ok());
}

/// A fetched key set (`jwks_url`): none until one is installed (HMAC secrets verify from the
/// start), then installed by the key file's rules.
#[test]
fn a_fetched_key_set_starts_with_the_hmac_secrets_and_is_installed_by_the_file_rules() {
    let f = fixture("fetched");
    let mut s = settings(&f);
    s.jwks = JwksSource::Url(Box::new(remote::settings_for_tests("https://id.test/jwks")));
    let auth = Authenticator::new(&s).expect("auth");
    assert!(!auth.has_key_set());
    assert_eq!(auth.key_count(), 2, "the two HMAC secrets");
    assert!(auth
        .verify(&hs("HS256", "hs", HMAC_SECRET, &claims()), NOW)
        .is_ok());
    let es = f.es.sign(&claims()).expect("sign");
    assert_eq!(
        auth.verify(&es, NOW).map(|_| ()),
        Err(TokenError::UnknownKey)
    );
    // Nothing to read from a file.
    assert_eq!(auth.reload_keys().ok(), Some(false));

    let set = json!({ "keys": [f.es.public_jwk()] })
        .to_string()
        .into_bytes();
    assert!(auth
        .install_fetched(set.clone(), "https://id.test/jwks".into())
        .expect("taken"));
    assert!(auth.has_key_set());
    assert_eq!(auth.key_count(), 3);
    auth.verify(&es, NOW).expect("the fetched key verifies");
    let generation = auth.key_generation();
    assert!(!auth
        .install_fetched(set, "https://id.test/jwks".into())
        .expect("same"));
    assert_eq!(
        auth.key_generation(),
        generation,
        "the same set is no change"
    );

    // A set that is refused keeps the keys, and is refused once.
    let bad = b"{\"keys\": 5}".to_vec();
    assert!(auth.install_fetched(bad.clone(), "u".into()).is_err());
    assert!(auth.refusing());
    assert_eq!(auth.install_fetched(bad, "u".into()).ok(), Some(false));
    auth.verify(&es, NOW).expect("kept");
    // A set whose key has an HMAC secret's kid is refused whole.
    let mut taken = f.rs.public_jwk();
    taken["kid"] = "hs".into();
    let clash = json!({ "keys": [taken] }).to_string().into_bytes();
    assert!(matches!(
        auth.install_fetched(clash, "u".into()),
        Err(AuthSetupError::HmacKidTaken { .. })
    ));
    auth.verify(&es, NOW).expect("kept");
}

/// The key file is polled every `jwks_poll_interval`: a refused content (JSON that does not
/// parse, or keys all unusable) is parsed and reported once, not once a poll (an error line,
/// and a warning per skipped key, every poll until fixed), and `refusing` says so meanwhile.
#[test]
fn a_refused_key_file_is_parsed_and_reported_once_until_it_changes() {
    let f = fixture("refused-once");
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    let path = f.dir.path().join("jwks.json");
    let good = std::fs::read_to_string(&path).expect("jwks");
    let loads = auth.key_set_loads();
    assert!(!auth.refusing());
    std::fs::write(&path, "{ nope").expect("w");
    assert!(auth.reload_keys().is_err());
    assert!(auth.refusing());
    // The same content again: nothing new (no parse, no log line); still refused.
    for _ in 0..3 {
        assert!(!auth.reload_keys().expect("refused before"));
    }
    assert!(auth.refusing());
    assert_eq!(auth.key_set_loads(), loads + 1);
    // Another refused content, keys all unusable, is parsed and reported again, once.
    let unusable = json!({ "keys": [json!({"kty":"oct","k":"AA"})] }).to_string();
    std::fs::write(&path, &unusable).expect("w");
    assert!(matches!(
        auth.reload_keys(),
        Err(AuthSetupError::NoKeys { .. })
    ));
    assert!(!auth.reload_keys().expect("refused before"));
    assert_eq!(auth.key_set_loads(), loads + 2);
    // Back to the keys in use: nothing to load, nothing refused.
    std::fs::write(&path, &good).expect("w");
    assert!(!auth.reload_keys().expect("unchanged"));
    assert!(!auth.refusing());
    // The same refused content written again: a new attempt, reported again.
    std::fs::write(&path, &unusable).expect("w");
    assert!(auth.reload_keys().is_err());
    assert!(auth.refusing());
    assert_eq!(auth.key_set_loads(), loads + 3);
    // A new good set: loaded.
    std::fs::write(&path, json!({ "keys": [f.rs.public_jwk()] }).to_string()).expect("w");
    assert!(auth.reload_keys().expect("reloaded"));
    assert!(!auth.refusing());
    assert_eq!(auth.key_set_loads(), loads + 4);
    // A file gone (or unreadable) is refused alike: reported once, shown until it is back.
    std::fs::remove_file(&path).expect("rm");
    assert!(matches!(
        auth.reload_keys(),
        Err(AuthSetupError::Read { .. })
    ));
    for _ in 0..3 {
        assert!(!auth.reload_keys().expect("refused before"));
    }
    assert!(auth.refusing());
    std::fs::write(&path, json!({ "keys": [f.rs.public_jwk()] }).to_string()).expect("w");
    assert!(!auth.reload_keys().expect("unchanged"));
    assert!(!auth.refusing());
}

#[test]
fn a_key_set_emptied_on_reload_revokes_every_key_and_one_all_skipped_does_not() {
    let f = fixture("revoke");
    let mut s = settings(&f);
    s.hmac_keys.clear();
    let auth = Authenticator::new(&s).expect("auth");
    let t = f.rs.sign(&claims()).expect("sign");
    auth.verify(&t, NOW).expect("ok");
    // Keys all unusable: a mistake, not a revocation; the keys stay.
    std::fs::write(
        f.dir.path().join("jwks.json"),
        json!({ "keys": [json!({"kty":"oct","k":"AA"})] }).to_string(),
    )
    .expect("w");
    assert!(matches!(
        auth.reload_keys(),
        Err(AuthSetupError::NoKeys { .. })
    ));
    assert!(auth.verify(&t, NOW).is_ok());
    // Emptied: every key withdrawn, the cached token included.
    std::fs::write(
        f.dir.path().join("jwks.json"),
        json!({ "keys": [] }).to_string(),
    )
    .expect("w");
    assert!(auth.reload_keys().expect("reloaded"));
    assert_eq!(auth.key_count(), 0);
    assert_eq!(
        auth.verify(&t, NOW).map(|_| ()),
        Err(TokenError::UnknownKey)
    );
    // At start an empty set is still an error: nothing could ever be served.
    assert!(matches!(
        Authenticator::new(&s),
        Err(AuthSetupError::NoKeys { .. })
    ));
}

#[test]
fn a_reload_with_keys_all_unusable_keeps_the_keys_with_hmac_secrets_configured_too() {
    // The configured HMAC secrets are no usable JWKS key: counted as one, they let a bad
    // push revoke every key the JWKS held.
    let f = fixture("skip-hmac");
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    let t = f.es.sign(&claims()).expect("sign");
    auth.verify(&t, NOW).expect("ok");
    let keys_before = auth.key_count();
    std::fs::write(
        f.dir.path().join("jwks.json"),
        json!({ "keys": [json!({"kty":"oct","k":"AA"})] }).to_string(),
    )
    .expect("w");
    assert!(matches!(
        auth.reload_keys(),
        Err(AuthSetupError::NoKeys { .. })
    ));
    assert_eq!(auth.key_count(), keys_before);
    assert!(auth.verify(&t, NOW).is_ok());
    // Emptied, the JWKS keys go and the configured secrets stay.
    std::fs::write(
        f.dir.path().join("jwks.json"),
        json!({ "keys": [] }).to_string(),
    )
    .expect("w");
    assert!(auth.reload_keys().expect("reloaded"));
    assert_eq!(auth.key_count(), settings(&f).hmac_keys.len());
    assert_eq!(
        auth.verify(&t, NOW).map(|_| ()),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn an_ed25519_key_anyone_could_sign_for_is_skipped() {
    // With a small-order key the signature R = identity, S = 0 verifies any message.
    let f = fixture("ed-small-order");
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut order_two = [0xffu8; 32];
    order_two[0] = 0xec;
    order_two[31] = 0x7f;
    let mut past_p = [0xffu8; 32];
    past_p[0] = 0xee;
    past_p[31] = 0x7f;
    let mut negative_zero = [0u8; 32];
    negative_zero[31] = 0x80;
    let weak = [identity, order_two, past_p, negative_zero, [0u8; 32]];
    let mut keys = vec![f.es.public_jwk()];
    for (i, x) in weak.iter().enumerate() {
        keys.push(json!({"kty": "OKP", "crv": "Ed25519", "kid": format!("weak-{i}"), "x": b64(x)}));
    }
    std::fs::write(
        f.dir.path().join("jwks.json"),
        json!({ "keys": keys }).to_string(),
    )
    .expect("w");
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    assert_eq!(
        auth.skipped_keys().len(),
        weak.len(),
        "{:?}",
        auth.skipped_keys()
    );
    assert!(auth.skipped_keys()[0].contains("small-order"));
    let input = format!(
        "{}.{}",
        b64(json!({"alg": "EdDSA", "kid": "weak-0"})
            .to_string()
            .as_bytes()),
        b64(claims_with(json!({"sub": "attacker"}))
            .to_string()
            .as_bytes())
    );
    let mut sig = [0u8; 64];
    sig[0] = 1;
    let forged = format!("{input}.{}", b64(&sig));
    assert_eq!(
        auth.verify(&forged, NOW).map(|_| ()),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn a_jwk_carrying_its_private_key_is_skipped() {
    let f = fixture("private-jwk");
    let mut leaked = f.es.public_jwk();
    leaked["kid"] = json!("leaked");
    leaked["d"] = json!(b64(&[7u8; 32]));
    std::fs::write(
        f.dir.path().join("jwks.json"),
        json!({ "keys": [f.rs.public_jwk(), leaked] }).to_string(),
    )
    .expect("w");
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    assert_eq!(auth.skipped_keys().len(), 1, "{:?}", auth.skipped_keys());
    assert!(
        auth.skipped_keys()[0].contains("private key material"),
        "{:?}",
        auth.skipped_keys()
    );
}

#[test]
fn an_hmac_key_whose_kid_the_jwks_holds_is_refused_not_skipped() {
    // Skipped, every HS256 token would be refused while the router looked healthy.
    let f = fixture("hmac-kid");
    let mut s = settings(&f);
    let rs_kid = f.rs.public_jwk()["kid"].as_str().expect("kid").to_owned();
    s.hmac_keys[0].kid = rs_kid.clone();
    match Authenticator::new(&s) {
        Err(AuthSetupError::HmacKidTaken { kid, .. }) => assert_eq!(kid, rs_kid),
        other => panic!("{other:?}"),
    }
    // A key set that comes to hold an HMAC key's kid is refused on reload; the keys stay.
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    let mut taken = f.rs.public_jwk();
    taken["kid"] = json!("hs");
    std::fs::write(
        f.dir.path().join("jwks.json"),
        json!({ "keys": [f.rs.public_jwk(), taken] }).to_string(),
    )
    .expect("w");
    assert!(matches!(
        auth.reload_keys(),
        Err(AuthSetupError::HmacKidTaken { .. })
    ));
    assert!(auth.verify(&f.rs.sign(&claims()).expect("s"), NOW).is_ok());
    assert_eq!(auth.key_count(), 5, "rs, es, ed + two hmac");
}

#[test]
fn jwks_loading_skips_bad_keys() {
    let f = fixture("jwks");
    let weak = json!({"kty":"RSA","kid":"weak","n": b64(&[0xff; 128]),"e":"AQAB"});
    let oct = json!({"kty":"oct","kid":"sym","k": b64(b"secret")});
    let enc = {
        let mut j = f.es.public_jwk();
        j["use"] = json!("enc");
        j["kid"] = json!("enc");
        j
    };
    let bad_curve = json!({"kty":"EC","crv":"P-521","kid":"p521","x":"AA","y":"AA"});
    std::fs::write(
        f.dir.path().join("jwks.json"),
        json!({ "keys": [weak, oct, enc, bad_curve, f.es.public_jwk()] }).to_string(),
    )
    .expect("w");
    let mut s = settings(&f);
    s.hmac_keys.clear();
    let auth = Authenticator::new(&s).expect("one usable key");
    assert_eq!(auth.key_count(), 1);

    std::fs::write(
        f.dir.path().join("jwks.json"),
        json!({ "keys": [json!({"kty":"oct","k":"AA"})] }).to_string(),
    )
    .expect("w");
    assert!(matches!(
        Authenticator::new(&s),
        Err(AuthSetupError::NoKeys { .. })
    ));
    std::fs::write(f.dir.path().join("jwks.json"), "[]").expect("w");
    assert!(matches!(
        Authenticator::new(&s),
        Err(AuthSetupError::Format { .. })
    ));
    // A byte order mark before the set is passed over, as in the config and bindings file.
    let with_bom = format!("\u{feff}{}", json!({ "keys": [f.es.public_jwk()] }));
    std::fs::write(f.dir.path().join("jwks.json"), with_bom).expect("w");
    assert_eq!(
        Authenticator::new(&s)
            .expect("a set after a BOM")
            .key_count(),
        1
    );
    // A member written twice, at any depth: the whole set is refused, naming why.
    let es = f.es.public_jwk().to_string();
    let twice = es.replacen('{', "{\"alg\":\"ES256\",", 1);
    for text in [
        format!("{{\"keys\":[{twice}]}}"),
        format!("{{\"keys\":[{es}],\"keys\":[]}}"),
    ] {
        std::fs::write(f.dir.path().join("jwks.json"), &text).expect("w");
        match Authenticator::new(&s) {
            Err(e @ AuthSetupError::Format { .. }) => {
                assert!(e.to_string().contains("repeats a member name"), "{e}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn embedded_demo_keys_load() {
    let f = fixture("demo");
    let mut s = settings(&f);
    s.jwks = JwksSource::EmbeddedDemo;
    let auth = Authenticator::new(&s).expect("demo keys");
    let demo = SigningKey::from_pem(ES_PEM, Some("demo-es256".into())).expect("key");
    assert!(auth.verify(&demo.sign(&claims()).expect("s"), NOW).is_ok());
}

mod props {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// One authenticator for all cases: building it per case would dominate the run time.
    fn shared() -> &'static Authenticator {
        static AUTH: OnceLock<Authenticator> = OnceLock::new();
        AUTH.get_or_init(|| Authenticator::new(&settings(&fixture("prop"))).expect("auth"))
    }

    proptest! {
        #[test]
        fn verify_never_panics(s in ".{0,600}") {
            let auth = shared();
            let _ = auth.verify(&s, NOW);
        }

        #[test]
        fn verify_never_panics_on_token_shaped_input(h in "[A-Za-z0-9_-]{0,80}", p in "[A-Za-z0-9_-]{0,200}", s in "[A-Za-z0-9_-]{0,90}") {
            let auth = shared();
            let _ = auth.verify(&format!("{h}.{p}.{s}"), NOW);
        }

        #[test]
        fn verify_never_panics_on_any_json(header in any::<Vec<(String, i64)>>(), payload in any::<Vec<(String, String)>>()) {
            let auth = shared();
            let hj: serde_json::Map<String, Value> = header.into_iter().map(|(k, v)| (k, json!(v))).collect();
            let pj: serde_json::Map<String, Value> = payload.into_iter().map(|(k, v)| (k, json!(v))).collect();
            let t = format!("{}.{}.{}", b64(Value::Object(hj).to_string().as_bytes()), b64(Value::Object(pj).to_string().as_bytes()), b64(b"sig"));
            let _ = auth.verify(&t, NOW);
        }

        #[test]
        fn extract_never_panics(
            a in any::<Vec<Vec<u8>>>(),
            c in any::<Vec<Vec<u8>>>(),
            h in any::<Vec<Vec<u8>>>(),
        ) {
            let a: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
            let c: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            let h: Vec<&[u8]> = h.iter().map(Vec::as_slice).collect();
            let places = TokenPlaces::new(&nexus_config::AuthSettings {
                session_cookie: Some("sess".to_owned()),
                token_cookies: vec!["jwt".to_owned()],
                token_headers: vec!["x-token".to_owned()],
                ..nexus_config::embedded_default().auth
            });
            let _ = extract_token(&a, &c, &h, &h, &places);
        }
    }
}

#[test]
fn a_token_refused_on_its_claims_costs_no_signature_check() {
    // An expired token keeps coming from a browser until it refreshes, and anyone can send
    // tokens naming another issuer or audience: refusing them needs no signature check.
    let f = fixture("claims-first");
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    let with = claims_with;
    for (patch, want) in [
        (json!({"exp": NOW - 31}), TokenError::Expired),
        (json!({"nbf": NOW + 31}), TokenError::NotYetValid),
        (json!({"exp": null}), TokenError::MissingExp),
        (json!({"iss": "https://evil"}), TokenError::WrongIssuer),
        (json!({"aud": ["a", "b"]}), TokenError::WrongAudience),
        (
            json!({"iat": "now"}),
            TokenError::Malformed("time claim is not a valid NumericDate"),
        ),
        (
            json!({"sub": " admin"}),
            TokenError::UnforwardableClaim("sub"),
        ),
    ] {
        let token = f.rs.sign(&with(patch.clone())).expect("s");
        for _ in 0..3 {
            assert_eq!(auth.verify(&token, NOW).map(|_| ()), Err(want), "{patch}");
        }
    }
    assert_eq!(auth.signature_checks(), 0);
    // Claims that pass prove nothing by themselves: the signature is still what accepts.
    let good = f.rs.sign(&claims()).expect("s");
    let (head, _) = good.rsplit_once('.').expect("dot");
    let forged = format!("{head}.{}", b64(&[7u8; 256]));
    assert_eq!(
        auth.verify(&forged, NOW).map(|_| ()),
        Err(TokenError::BadSignature)
    );
    assert_eq!(auth.signature_checks(), 1);
    // A cached token that expires is refused without one too, every time.
    auth.verify(&good, NOW).expect("ok");
    for _ in 0..3 {
        assert_eq!(
            auth.verify(&good, NOW + 700).map(|_| ()),
            Err(TokenError::Expired)
        );
    }
    assert_eq!(auth.signature_checks(), 2);
}

#[test]
fn max_token_lifetime_bounds_exp_from_now_and_from_iat() {
    let f = fixture("lifetime");
    let unbounded = Authenticator::new(&settings(&f)).expect("auth");
    let mut s = settings(&f);
    s.max_token_lifetime = Some(Duration::from_secs(3600));
    let bounded = Authenticator::new(&s).expect("auth");
    let ten_years = NOW + 10 * 365 * 86_400;
    // (claims patch, accepted under a 1 h bound with 30 s of leeway)
    for (patch, accepted) in [
        (json!({}), true),
        (json!({"exp": NOW + 3630, "iat": null}), true),
        (json!({"exp": NOW + 3631, "iat": null}), false),
        (json!({"exp": ten_years, "iat": null}), false),
        (json!({"exp": 1e30, "iat": null}), false),
        // Issued long ago, so declared to live longer than the bound, though little is left.
        (json!({"exp": NOW + 60, "iat": NOW - 3600}), false),
        (json!({"exp": NOW + 60, "iat": NOW - 3570}), true),
        // A fraction is rounded toward refusal.
        (json!({"exp": NOW + 60, "iat": NOW as f64 - 3570.5}), false),
    ] {
        let token = f.rs.sign(&claims_with(patch.clone())).expect("s");
        let got = bounded.verify(&token, NOW).map(|_| ());
        if accepted {
            assert_eq!(got, Ok(()), "{patch}");
        } else {
            assert_eq!(got, Err(TokenError::LifetimeTooLong), "{patch}");
        }
        // Without the bound any exp is taken.
        assert_eq!(unbounded.verify(&token, NOW).map(|_| ()), Ok(()), "{patch}");
    }
    // Refused on the claims, before a signature check.
    let checks = bounded.signature_checks();
    let token =
        f.rs.sign(&claims_with(json!({"exp": ten_years})))
            .expect("s");
    assert!(bounded.verify(&token, NOW).is_err());
    assert_eq!(bounded.signature_checks(), checks);
}

#[test]
fn with_issuer_keys_a_key_signs_only_its_issuers_tokens() {
    // RFC 8725 §3.8: two issuers, one key set; each key is one issuer's. Without the listing
    // either issuer's key would sign the other's tokens.
    let f = fixture("issuer-keys");
    const OTHER: &str = "https://other.test";
    let mut s = settings(&f);
    s.issuers.push(OTHER.into());
    let open = Authenticator::new(&s).expect("auth");
    s.issuer_keys = Some(
        [
            (
                "https://id.test".to_owned(),
                vec!["rs".to_owned(), "hs".to_owned()],
            ),
            (OTHER.to_owned(), vec!["es".to_owned(), "rs".to_owned()]),
        ]
        .into(),
    );
    let bound = Authenticator::new(&s).expect("auth");
    // Keys listed under no issuer ("ed", "hs512") verify nothing, and are not counted as
    // keys in use.
    assert_eq!((open.key_count(), bound.key_count()), (5, 3));
    let of = |iss: &str| claims_with(json!({ "iss": iss }));
    // (token, accepted when keys are bound to issuers)
    let cases = [
        (f.rs.sign(&of("https://id.test")).expect("s"), true),
        // One key may be two issuers' (listed under both).
        (f.rs.sign(&of(OTHER)).expect("s"), true),
        (f.es.sign(&of(OTHER)).expect("s"), true),
        (f.es.sign(&of("https://id.test")).expect("s"), false),
        (hs("HS256", "hs", HMAC_SECRET, &of("https://id.test")), true),
        (hs("HS256", "hs", HMAC_SECRET, &of(OTHER)), false),
        // Listed under no issuer.
        (f.ed.sign(&of("https://id.test")).expect("s"), false),
    ];
    for (i, (token, accepted)) in cases.iter().enumerate() {
        assert!(open.verify(token, NOW).is_ok(), "case {i}");
        let got = bound.verify(token, NOW).map(|_| ());
        let want = if *accepted {
            Ok(())
        } else {
            Err(TokenError::KeyNotOfIssuer)
        };
        assert_eq!(got, want, "case {i}");
    }
    // A token without a kid, verified by the only key: a key without a kid is no issuer's.
    let dir = tempfile::tempdir().expect("dir");
    let mut lone = f.es.public_jwk();
    lone.as_object_mut().expect("obj").remove("kid");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({ "keys": [lone] }).to_string()).expect("write");
    s.jwks = JwksSource::File(path);
    s.hmac_keys.clear();
    let anonymous = Authenticator::new(&s).expect("auth");
    assert_eq!(anonymous.key_count(), 0, "no key verifies a token");
    let kidless =
        f.es.sign_raw(r#"{"alg":"ES256","typ":"JWT"}"#, &of(OTHER).to_string())
            .expect("s");
    assert_eq!(
        anonymous.verify(&kidless, NOW).map(|_| ()),
        Err(TokenError::KeyNotOfIssuer)
    );
}

#[test]
fn a_key_without_kid_beside_other_keys_is_skipped_as_unusable() {
    let f = fixture("kidless");
    let mut lone = f.es.public_jwk();
    lone.as_object_mut().expect("obj").remove("kid");
    let kidless =
        f.es.sign_raw(r#"{"alg":"ES256","typ":"JWT"}"#, &claims().to_string())
            .expect("s");
    let write = |keys: Vec<Value>| {
        std::fs::write(
            f.dir.path().join("jwks.json"),
            json!({ "keys": keys }).to_string(),
        )
        .expect("write")
    };
    let mut s = settings(&f);
    s.hmac_keys.clear();
    // Alone: it verifies tokens without a kid.
    write(vec![lone.clone()]);
    let alone = Authenticator::new(&s).expect("auth");
    assert_eq!(alone.key_count(), 1);
    assert!(alone.verify(&kidless, NOW).is_ok());
    // Beside a key with a kid it could verify nothing: skipped and said, not counted.
    write(vec![lone.clone(), f.rs.public_jwk()]);
    let beside = Authenticator::new(&s).expect("auth");
    assert_eq!(beside.key_count(), 1);
    assert!(
        beside
            .skipped_keys()
            .iter()
            .any(|k| k.starts_with("keys[0]: no kid")),
        "{:?}",
        beside.skipped_keys()
    );
    // (The set's one usable key is then the RSA key, which verifies no ES256 token.)
    assert_eq!(
        beside.verify(&kidless, NOW).map(|_| ()),
        Err(TokenError::AlgorithmMismatch)
    );
    // Beside an HMAC secret alike; and then no key of the JWKS is usable: refused whole.
    write(vec![lone]);
    let with_hmac = Authenticator::new(&settings(&f)).map(|_| ());
    assert!(
        matches!(with_hmac, Err(AuthSetupError::NoKeys { .. })),
        "{with_hmac:?}"
    );
}

#[test]
fn a_key_file_past_the_bound_is_refused_at_start_and_on_reload() {
    let f = fixture("too-large");
    let path = f.dir.path().join("jwks.json");
    let keys = json!({ "keys": [f.rs.public_jwk()] }).to_string();
    // JSON that parses, padded with blanks to `len` bytes.
    let padded = |len: usize| format!("{keys}{}", " ".repeat(len - keys.len()));
    std::fs::write(&path, padded(MAX_JWKS_BYTES)).expect("w");
    let auth = Authenticator::new(&settings(&f)).expect("at the bound");
    std::fs::write(&path, padded(MAX_JWKS_BYTES + 1)).expect("w");
    assert!(matches!(
        Authenticator::new(&settings(&f)),
        Err(AuthSetupError::TooLarge { .. })
    ));
    assert!(matches!(
        auth.reload_keys(),
        Err(AuthSetupError::TooLarge { .. })
    ));
    assert!(!auth.reload_keys().expect("refused once"));
    assert_eq!(auth.key_count(), 3, "rs + two hmac");
}

#[test]
fn the_payload_is_parsed_only_for_a_known_key_and_well_formed_parts() {
    // A payload whose JSON would be refused (a repeated member) shows whether it was parsed:
    // a token refused on its kid or on a part's base64url must not pay for up to a token's
    // worth of JSON first.
    let f = fixture("payload-last");
    let auth = Authenticator::new(&settings(&f)).expect("auth");
    let repeated = r#"{"exp":1900000000,"tenant_id":"a","tenant_id":"b"}"#;
    let unknown_kid =
        f.rs.sign_raw(&json!({"alg":"RS256","kid":"nope"}).to_string(), repeated)
            .expect("s");
    assert_eq!(
        auth.verify(&unknown_kid, NOW).map(|_| ()),
        Err(TokenError::UnknownKey)
    );
    let known_kid =
        f.rs.sign_raw(&json!({"alg":"RS256","kid":"rs"}).to_string(), repeated)
            .expect("s");
    assert_eq!(
        auth.verify(&known_kid, NOW).map(|_| ()),
        Err(TokenError::DuplicateKey)
    );
    // Padding at the end of the signature is no base64url.
    assert_eq!(
        auth.verify(&format!("{known_kid}="), NOW).map(|_| ()),
        Err(TokenError::Malformed("invalid base64url"))
    );
    assert_eq!(auth.signature_checks(), 0);
}

#[test]
fn the_cache_bounds_the_identity_bytes_it_holds_not_only_its_entries() {
    // A cached token keeps its identity claims (twice: as text and as header values). Counted
    // as one entry each, `capacity` tokens with claims near `max_token_bytes` held that many
    // times 5 KB; each KiB started counts as an entry now.
    const SUB: usize = 5000;
    let f = fixture("cache-bytes");
    let s = settings(&f);
    let capacity = s.token_cache_capacity;
    // The claims a revocation compares (`jti`) are kept too, and count the same.
    for claim in ["sub", "jti"] {
        let auth = Authenticator::new(&s).expect("auth");
        for i in 0..capacity {
            let value = format!("{i:0>SUB$}");
            let t = f.ed.sign(&claims_with(json!({ claim: value }))).expect("s");
            assert!(t.len() <= s.max_token_bytes);
            auth.verify(&t, NOW).expect("ok");
        }
        let pinned = auth.cached_tokens() * SUB;
        assert!(
            pinned <= capacity * 1024 * 11 / 10,
            "{} tokens of {SUB} bytes of {claim} cached",
            auth.cached_tokens()
        );
    }
    // Tokens of common size count one entry each, as before.
    let auth = Authenticator::new(&s).expect("auth");
    let tokens: Vec<String> = (0..capacity / 2)
        .map(|i| {
            f.ed.sign(&claims_with(json!({ "sub": format!("u{i}") })))
                .expect("s")
        })
        .collect();
    for t in tokens.iter().chain(&tokens) {
        auth.verify(t, NOW).expect("ok");
    }
    assert_eq!(auth.signature_checks(), capacity as u64 / 2);
}

#[test]
fn a_flood_of_forged_tokens_is_not_cached_and_evicts_nothing() {
    let f = fixture("flood");
    let s = settings(&f);
    let auth = Authenticator::new(&s).expect("auth");
    let good = f.ed.sign(&claims()).expect("s");
    auth.verify(&good, NOW).expect("ok");
    let (head, _) = good.rsplit_once('.').expect("dot");
    let flood = 3 * s.token_cache_capacity;
    for i in 0..flood {
        let mut sig = [0u8; 64];
        sig[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let forged = format!("{head}.{}", b64(&sig));
        assert_eq!(
            auth.verify(&forged, NOW).map(|_| ()),
            Err(TokenError::BadSignature)
        );
    }
    // Each forged token costs its signature check (a failure is not remembered: the next
    // one differs anyway), and none takes a place in the cache.
    assert_eq!(auth.signature_checks(), 1 + flood as u64);
    assert_eq!(auth.cached_tokens(), 1);
    auth.verify(&good, NOW).expect("still cached");
    assert_eq!(auth.signature_checks(), 1 + flood as u64);
}

#[test]
fn a_key_the_router_would_refuse_or_a_damaged_pem_is_said_so() {
    // A 1,024-bit RSA key (generated for this test, used nowhere): it is PKCS#8, and what is
    // wrong with it is its size, which "not a PKCS#8 PEM private key" hid.
    const RSA_1024: &str = "-----BEGIN PRIVATE KEY-----\nMIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBAMcjUyl81RVVl7Yz\nUkbZ9SJNqiD5jOVkvFBCCclzaf4TBR36GSlVouyPdRG85eOEXXDQHUPjuKCH3tYK\nwtWPlKONpa/Z2M6M3xHEdFIr7OYzzcCgO9p1VLn1O2nIdVF6rzE14ktDkIYIUadh\nWk7rqNbsM45j1HcoQlqcAoXfxpW1AgMBAAECgYAtYw68QPhr8WMvosjY3ypw1BS3\niUkkq24EONj0MjrxLrKW337Gnf8RPa0oCs62qV+Gq9hPteJJrE4MqM05UY1Fxn8y\ntiEqWNsurdYFjDmzn6fwbSnK7r42BxIK7iCDOHJH5sEuTPdQkolOxLvFkyfKzAVu\njsCVw7RF6JkXyTwMYQJBAPJs+ZKiBnb7W3Qr/3C33tAGSsg9hVzlKe96QLSIEeyU\n8/oBMgNiCY2CMf7JKTZRWaftxqprw8mTyvDTzxqr7g0CQQDSSdjbvViZJTT3yJ3U\nH1nfOBx7JlCy4weTrbDhr49wZIMbiYlM+T6PcocN5I5KJn2hOotgO/Fa+rKd2Tym\nxYRJAkEAvR9EyB78uh+3pfaZDZ90BIeUGYjdHK5uu7N8/RnWGeHOP/BkyvzVhP7X\n7/OQ4h4uunIl9Vei4wQYYy5qOF1+lQJAY4O68lIqqV6oMFJqDkY/25jMMaMyMVWq\n8kISINtaABAw00lFBn41EuFZ9EMi6whID5KK/qGfWDSnbnetciaqsQJAVufYXYZ/\nF0duZ+imFk1elkwMtPI1Nqy9ybCws8ArTNUsqJ1YXALaaD28RGzfwJKWAsd4j8VV\nKFDEj3JlxDmJiw==\n-----END PRIVATE KEY-----\n";
    let e = SigningKey::from_pem(RSA_1024, None).expect_err("too small");
    assert_eq!(
        e.to_string(),
        "an RSA key of fewer than 2048 bits, which the router refuses"
    );
    let garbled = "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n";
    let e = SigningKey::from_pem(garbled, None).expect_err("garbled");
    assert!(
        e.to_string().contains("its PEM block does not decode"),
        "{e}"
    );
    let e = SigningKey::from_pem("{\"keys\": []}", None).expect_err("no PEM");
    assert!(e.to_string().ends_with("no PEM block in it"), "{e}");
}
