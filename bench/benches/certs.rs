//! The HTTPS listener's certificates: choosing one by SNI among thousands, rebuilding the
//! index after a reload, reading one PEM file, and a whole TLS 1.3 handshake through the
//! router's resolver (client and server in one thread, bytes passed in memory: the CPU a
//! handshake costs both ends, no network).
//!
//! `cargo bench -p nexus-bench --bench certs`. With NEXUS_BENCH_SMOKE=1 the set is small.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use nexus_certs::{parse_pem, CertSet, LoadedCert, SniResolver};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

fn sizes() -> Vec<usize> {
    if std::env::var_os("NEXUS_BENCH_SMOKE").is_some() {
        vec![100]
    } else {
        vec![100, 10_000]
    }
}

/// A CA, and certificates it issued: one for `*.edge.test`, and one for each of `n` custom
/// domains `shop-<i>.example` (one key for all: the bench is of the index, not the keys).
struct Issued {
    ca: rcgen::Certificate,
    certs: Vec<LoadedCert>,
}

fn issue(n: usize) -> Issued {
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let one = |name: String| {
        let cert = CertificateParams::new(vec![name])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        parse_pem(pem.as_bytes(), Path::new("bench.pem")).unwrap()
    };
    let mut certs = vec![one("*.edge.test".to_owned())];
    certs.extend((0..n).map(|i| one(format!("shop-{i}.example"))));
    Issued { ca, certs }
}

fn find(c: &mut Criterion) {
    for n in sizes() {
        let issued = issue(n);
        let set = CertSet::build(&issued.certs);
        let exact = format!("shop-{}.example", n / 2);
        c.bench_function(&format!("certs/find/{n}_domains/exact"), |b| {
            b.iter(|| black_box(set.find(black_box(&exact))))
        });
        c.bench_function(&format!("certs/find/{n}_domains/wildcard"), |b| {
            b.iter(|| black_box(set.find(black_box("acme.edge.test"))))
        });
        c.bench_function(&format!("certs/find/{n}_domains/mixed_case"), |b| {
            b.iter(|| black_box(set.find(black_box("Acme.Edge.test"))))
        });
        c.bench_function(&format!("certs/find/{n}_domains/miss"), |b| {
            b.iter(|| black_box(set.find(black_box("other.example"))))
        });
        // What a reload that changed one file costs before the swap.
        c.bench_function(&format!("certs/build/{n}_domains"), |b| {
            b.iter(|| black_box(CertSet::build(&issued.certs)))
        });
    }
}

fn parse(c: &mut Criterion) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["shop.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    c.bench_function("certs/parse_pem/ecdsa_p256", |b| {
        b.iter(|| black_box(parse_pem(black_box(pem.as_bytes()), Path::new("x.pem")).unwrap()))
    });
}

/// Runs one handshake between `client` and `server` in memory.
fn handshake(client: &mut rustls::ClientConnection, server: &mut rustls::ServerConnection) {
    let mut buf = Vec::with_capacity(8192);
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
        }
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
    }
}

fn full_handshake(c: &mut Criterion) {
    let n = *sizes().last().unwrap();
    let issued = issue(n);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(SniResolver::new(CertSet::build(&issued.certs)));
    let server_config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(issued.ca.der().clone()).unwrap();
    let mut client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_config.resumption = rustls::client::Resumption::disabled();
    let client_config = Arc::new(client_config);
    let name = rustls::pki_types::ServerName::try_from(format!("shop-{}.example", n / 2)).unwrap();
    c.bench_function(
        &format!("certs/tls13_full_handshake/ecdsa_p256/{n}_domains/client_and_server"),
        |b| {
            b.iter(|| {
                let mut client =
                    rustls::ClientConnection::new(Arc::clone(&client_config), name.clone())
                        .unwrap();
                let mut server = rustls::ServerConnection::new(Arc::clone(&server_config)).unwrap();
                handshake(&mut client, &mut server);
                black_box((client, server))
            })
        },
    );
}

criterion_group!(benches, find, parse, full_handshake);
criterion_main!(benches);
