//! Hot-path micro-benchmarks: host → tenant lookup at 1,000,000 bindings, token verification
//! per algorithm (cache hit and miss; a hit beside 300,000 revocations), the token-cache key's
//! hash against the alternatives,
//! the whole routing decision, the reserved-header pass over a request's header names, and what
//! a CORS policy adds.
//!
//! `cargo bench -p nexus-bench --bench decision`. With NEXUS_BENCH_SMOKE=1 the table is small
//! (CI runs it with `--test` so the bench never rots).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use nexus_bench::*;
use nexus_edge::auth::mint::SigningKey;
use nexus_edge::auth::Authenticator;
use nexus_edge::decision::{decide, RequestFacts};
use nexus_edge::host::{resolve_host, HostTarget};

fn size() -> usize {
    if std::env::var_os("NEXUS_BENCH_SMOKE").is_some() {
        1_000
    } else {
        1_000_000
    }
}

fn host_lookup(c: &mut Criterion) {
    let n = size();
    let table = table(n, "http://10.0.0.1:8080");
    let bases = vec![BASE.to_owned()];
    let hosts: Vec<String> = (0..1024)
        .map(|i| format!("{}.{BASE}", tenant(i * 977 % n)))
        .collect();
    let mut i = 0;
    c.bench_function(&format!("host_to_binding/{n}_bindings"), |b| {
        b.iter(|| {
            i = (i + 1) % hosts.len();
            let target = resolve_host(black_box(&hosts[i]), &bases).expect("host");
            let HostTarget::Subdomain(t) = target else {
                panic!("subdomain")
            };
            black_box(table.get(t.as_str()).is_some())
        })
    });
    let domain = format!("app.customer{}.example", (n / 2) / 10 * 10);
    c.bench_function(&format!("custom_domain_to_binding/{n}_bindings"), |b| {
        b.iter(|| {
            let target = resolve_host(black_box(&domain), &bases).expect("host");
            let HostTarget::CustomDomain(d) = target else {
                panic!("custom")
            };
            black_box(
                table
                    .tenant_for_domain(&d)
                    .and_then(|t| table.get(t.as_str()))
                    .is_some(),
            )
        })
    });
}

fn token_verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let keys = [
        rs256_key(),
        SigningKey::generate_es256("bench-es256").expect("es"),
        SigningKey::generate_ed25519("bench-ed25519").expect("ed"),
    ];
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let cached = Authenticator::new(&auth_settings(
        &dir.path().join("jwks.json"),
        &refs,
        100_000,
    ))
    .expect("auth");
    let uncached =
        Authenticator::new(&auth_settings(&dir.path().join("jwks2.json"), &refs, 0)).expect("auth");
    let now = now();
    for key in &keys {
        let alg = key.alg().name();
        let token = key.sign(&claims(1, 1)).expect("sign");
        c.bench_function(&format!("verify/{alg}/miss"), |b| {
            b.iter(|| black_box(uncached.verify(black_box(&token), now).expect("valid")))
        });
        cached.verify(&token, now).expect("valid");
        c.bench_function(&format!("verify/{alg}/hit"), |b| {
            b.iter(|| black_box(cached.verify(black_box(&token), now).expect("valid")))
        });
    }
    // A cache hit checked against many revocations, none of them the token's: one per
    // token, per user of its own tenant and per other tenant (all three lookups made).
    let n = size() / 10;
    let revocations = nexus_binding_store::revocations::Revocations::followed();
    revocations.install(revocation_list(n, now));
    let revoking = Authenticator::new(&auth_settings(
        &dir.path().join("jwks3.json"),
        &refs,
        100_000,
    ))
    .expect("auth")
    .with_revocations(revocations);
    let token = keys[0].sign(&claims(1, 1)).expect("sign");
    revoking.verify(&token, now).expect("valid");
    c.bench_function(&format!("verify/RS256/hit/{}_revocations", 3 * n), |b| {
        b.iter(|| black_box(revoking.verify(black_box(&token), now).expect("valid")))
    });
}

/// `n` revocations of each kind, none of them refusing [`claims`]`(1, 1)`'s token.
fn revocation_list(n: usize, now: u64) -> nexus_binding_store::revocations::RevocationList {
    use nexus_binding_store::revocations::{Revocation, RevocationList, Revoked};
    use nexus_binding_store::TenantId;
    let of = |what| Revocation {
        what,
        until: now + 3600,
        at: None,
        actor: None,
        reason: None,
    };
    let own = TenantId::parse(&tenant(1)).expect("id");
    RevocationList::new((0..n).flat_map(|i| {
        [
            of(Revoked::Token {
                jti: format!("other-{i:016x}"),
            }),
            of(Revoked::Subject {
                tenant: own.clone(),
                sub: format!("other-user-{i}"),
                issued_before: now + 1,
            }),
            of(Revoked::Tenant {
                tenant: TenantId::parse(&tenant(i + 2)).expect("id"),
                issued_before: now + 1,
            }),
        ]
    }))
}

/// The token cache keys entries by a hash of the whole token, and that hash is most of a
/// cache hit: the one in use (aws-lc-rs SHA-256) beside the alternatives, on a real RS256
/// token.
fn token_hash(c: &mut Criterion) {
    let token = rs256_key().sign(&claims(1, 1)).expect("sign");
    let bytes = token.as_bytes();
    let n = bytes.len();
    c.bench_function(&format!("token_hash/{n}_bytes/sha256_aws_lc"), |b| {
        b.iter(|| {
            black_box(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                black_box(bytes),
            ))
        })
    });
    c.bench_function(&format!("token_hash/{n}_bytes/sha256_ring"), |b| {
        b.iter(|| {
            black_box(ring::digest::digest(
                &ring::digest::SHA256,
                black_box(bytes),
            ))
        })
    });
    let key = [7u8; 32];
    c.bench_function(&format!("token_hash/{n}_bytes/blake3_keyed"), |b| {
        b.iter(|| black_box(blake3::keyed_hash(&key, black_box(bytes))))
    });
}

fn full_decision(c: &mut Criterion) {
    let n = size();
    let dir = tempfile::tempdir().expect("dir");
    let key = rs256_key();
    let auth = Authenticator::new(&auth_settings(
        &dir.path().join("jwks.json"),
        &[&key],
        100_000,
    ))
    .expect("auth");
    let table = table(n, "http://10.0.0.1:8080");
    let mut tenancy = nexus_config::embedded_default().tenancy;
    tenancy.base_domains = vec![BASE.to_owned()];
    let now = now();
    let requests: Vec<(String, String)> = (0..1000)
        .map(|i| {
            let t = i * 997 % n;
            (
                format!("{}.{BASE}", tenant(t)),
                format!("Bearer {}", key.sign(&claims(t, i as u64)).expect("sign")),
            )
        })
        .collect();
    for (_, auth_header) in &requests {
        let token = auth_header.trim_start_matches("Bearer ");
        auth.verify(token, now).expect("warm");
    }
    let mut i = 0;
    c.bench_function(&format!("decide/cached_token/{n}_bindings"), |b| {
        b.iter(|| {
            i = (i + 1) % requests.len();
            let (host, authz) = &requests[i];
            let facts = RequestFacts {
                host_headers: &[host.as_bytes()],
                uri_authority: None,
                is_http2: false,
                target: "/api/v1/items?page=2",
                authorization: &[authz.as_bytes()],
                cookies: &[],
                token_headers: &[],
                subprotocols: &[],
                origins: &[],
                fetch_sites: &[],
                now_unix: now,
                server_name: None,
            };
            black_box(decide(&facts, &tenancy, &table, &auth).expect("routed"))
        })
    });
    let mut nonce = 1_000_000u64;
    c.bench_function(&format!("decide/new_rs256_token/{n}_bindings"), |b| {
        b.iter_batched(
            || {
                nonce += 1;
                let t = (nonce as usize) % n;
                (
                    format!("{}.{BASE}", tenant(t)),
                    format!("Bearer {}", key.sign(&claims(t, nonce)).expect("sign")),
                )
            },
            |(host, authz)| {
                let facts = RequestFacts {
                    host_headers: &[host.as_bytes()],
                    uri_authority: None,
                    is_http2: false,
                    target: "/api/v1/items",
                    authorization: &[authz.as_bytes()],
                    cookies: &[],
                    token_headers: &[],
                    subprotocols: &[],
                    origins: &[],
                    fetch_sites: &[],
                    now_unix: now,
                    server_name: None,
                };
                black_box(decide(&facts, &tenancy, &table, &auth).expect("routed"));
            },
            BatchSize::SmallInput,
        )
    });
}

/// The per-request pass that finds client headers the router owns: a browser's request
/// behind a load balancer (12 names, 3 of them `X-Forwarded-*`), and one without any.
fn reserved_headers(c: &mut Criterion) {
    use http::header::HeaderName;
    let names = |list: &[&str]| -> Vec<HeaderName> {
        list.iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).expect("name"))
            .collect()
    };
    let behind_lb = names(&[
        "host",
        "user-agent",
        "accept",
        "accept-language",
        "accept-encoding",
        "authorization",
        "cookie",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "content-type",
        "x-custom-trace",
    ]);
    let direct = names(&["host", "user-agent", "accept", "authorization"]);
    for (label, list) in [
        ("12_names_3_reserved", &behind_lb),
        ("4_names_none", &direct),
    ] {
        c.bench_function(&format!("reserved_headers/{label}"), |b| {
            b.iter(|| {
                black_box(list)
                    .iter()
                    .filter(|n| nexus_edge::route::is_reserved(n))
                    .count()
            })
        });
    }
}

/// The instance's request rebuilt from a browser's behind a load balancer (12 fields, 3 of
/// them `X-Forwarded-*`): target kept, identity and forwarding headers written.
fn upstream_request(c: &mut Criterion) {
    use nexus_edge::route::{rewrite_upstream_request, Forwarding};
    use pingora::http::RequestHeader;
    let dir = tempfile::tempdir().expect("dir");
    let key = rs256_key();
    let auth = Authenticator::new(&auth_settings(&dir.path().join("jwks.json"), &[&key], 16))
        .expect("auth");
    let table = table(1_000, "http://10.0.0.1:8080");
    let mut tenancy = nexus_config::embedded_default().tenancy;
    tenancy.base_domains = vec![BASE.to_owned()];
    let now = now();
    let host = format!("{}.{BASE}", tenant(7));
    let authz = format!("Bearer {}", key.sign(&claims(7, 1)).expect("sign"));
    let target = "/api/v1/items?page=2";
    let facts = RequestFacts {
        host_headers: &[host.as_bytes()],
        uri_authority: None,
        is_http2: false,
        target,
        authorization: &[authz.as_bytes()],
        cookies: &[],
        token_headers: &[],
        subprotocols: &[],
        origins: &[],
        fetch_sites: &[],
        now_unix: now,
        server_name: None,
    };
    let decision = decide(&facts, &tenancy, &table, &auth).expect("routed");
    let mut template = RequestHeader::build("GET", target.as_bytes(), None).expect("request");
    for (name, value) in [
        ("host", host.as_str()),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-GB,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("authorization", authz.as_str()),
        ("cookie", "theme=dark; lang=en"),
        ("x-forwarded-for", "198.51.100.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", host.as_str()),
        ("content-type", "application/json"),
        ("x-custom-trace", "abc123"),
    ] {
        template.append_header(name, value).expect("header");
    }
    let request_id = http::HeaderValue::from_static("0191b0c4-6a4e-7c2b-9f3e-5d2a1b0c9e8f");
    c.bench_function("upstream_request/12_fields", |b| {
        b.iter_batched(
            || template.clone(),
            |mut req| {
                let fwd = Forwarding {
                    forwarded_for: Some("198.51.100.7".to_owned()),
                    proto: "http",
                    host: http::HeaderValue::from_str(&host).expect("host"),
                    request_id: &request_id,
                    token_places: auth.token_places(),
                    long: false,
                };
                rewrite_upstream_request(&mut req, &decision, fwd).expect("rewritten");
                req
            },
            BatchSize::SmallInput,
        )
    });
}

/// What a `[cors]` policy adds to a request with an `Origin`: deciding which page may read
/// the answer (a listed origin; the addressed tenant's own page, which reads the origin's
/// host against the binding table), and setting the response's fields.
fn cors(c: &mut Criterion) {
    use nexus_config::CorsOrigins;
    use nexus_edge::cors::Cors;
    let n = size();
    let table = table(n, "http://10.0.0.1:8080");
    let mut tenancy = nexus_config::embedded_default().tenancy;
    tenancy.base_domains = vec![BASE.to_owned()];
    let mut settings = nexus_config::embedded_default().cors;
    settings.origins = Some(CorsOrigins::Listed {
        origins: vec!["https://app.example.com".to_owned()],
        tenant_pages: true,
        credentials: true,
    });
    let policy = Cors::new(&settings).expect("a policy");
    let tenants: Vec<(String, String)> = (0..1000)
        .map(|i| {
            let t = tenant(i * 997 % n);
            let page = format!("https://{t}.{BASE}");
            (t, page)
        })
        .collect();
    let mut i = 0;
    c.bench_function(&format!("cors/listed_origin/{n}_bindings"), |b| {
        b.iter(|| {
            i = (i + 1) % tenants.len();
            let origin: &[&[u8]] = &[b"https://app.example.com"];
            black_box(policy.allowed_origin(origin, Some(&tenants[i].0), || true, &tenancy, &table))
                .expect("allowed")
        })
    });
    c.bench_function(&format!("cors/tenant_page/{n}_bindings"), |b| {
        b.iter(|| {
            i = (i + 1) % tenants.len();
            let (t, page) = &tenants[i];
            black_box(policy.allowed_origin(&[page.as_bytes()], Some(t), || true, &tenancy, &table))
                .expect("allowed")
        })
    });
    let mut template = pingora::http::ResponseHeader::build(200, None).expect("response");
    for (name, value) in [
        ("content-type", "application/json"),
        ("content-length", "512"),
        ("cache-control", "no-store"),
        ("vary", "Accept-Encoding"),
        ("date", "Mon, 07 Dec 2026 05:00:00 GMT"),
    ] {
        template.append_header(name, value).expect("header");
    }
    let allow = http::HeaderValue::from_static("https://app.example.com");
    // A response's first new field grows its maps (a clone holds no spare room), whoever
    // adds it; the router adds `X-Request-Id` to every response before these, so what a
    // policy costs is the difference between the two figures.
    c.bench_function("cors/reference_one_field/5_fields", |b| {
        b.iter_batched(
            || template.clone(),
            |mut resp| {
                resp.insert_header("X-Request-Id", allow.clone())
                    .expect("set");
                resp
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("cors/response_fields/5_fields", |b| {
        b.iter_batched(
            || template.clone(),
            |mut resp| {
                policy
                    .set_response_headers(&mut resp, Some(&allow))
                    .expect("set");
                resp
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    benches,
    host_lookup,
    token_verify,
    token_hash,
    full_decision,
    reserved_headers,
    upstream_request,
    cors
);
criterion_main!(benches);
