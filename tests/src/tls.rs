//! A throwaway certificate authority for TLS tests: a CA, a server certificate for
//! `localhost`/`127.0.0.1`, and a client certificate, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// PEM files of one test CA and the certificates it issued.
pub struct TestPki {
    /// The CA certificate.
    pub ca: PathBuf,
    /// Server certificate (SAN `localhost`, `127.0.0.1`) and key.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// A server certificate from the same CA for `elsewhere.test` only, and its key.
    pub other_name_cert: PathBuf,
    /// Its key.
    pub other_name_key: PathBuf,
    /// A server certificate from the same CA for `tenant-a.instances.test` only, and its key.
    pub dashed_name_cert: PathBuf,
    /// Its key.
    pub dashed_name_key: PathBuf,
    /// Client certificate and key (for mutual TLS).
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
}

impl TestPki {
    /// Generates a fresh CA and certificates into `dir`.
    pub fn generate(dir: &Path) -> TestPki {
        let ca = TestCa::new(dir);
        let issue = |names: &[&str], usage: ExtendedKeyUsagePurpose| ca.issue_pair(names, usage);
        let (server_cert, server_key) = issue(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (other_name_cert, other_name_key) =
            issue(&["elsewhere.test"], ExtendedKeyUsagePurpose::ServerAuth);
        let (dashed_name_cert, dashed_name_key) = issue(
            &["tenant-a.instances.test"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = issue(&["nexus-edge"], ExtendedKeyUsagePurpose::ClientAuth);

        let write = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).expect("write pem");
            p
        };
        TestPki {
            ca: ca.ca_pem.clone(),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            other_name_cert: write("other-name.pem", &other_name_cert),
            other_name_key: write("other-name-key.pem", &other_name_key),
            dashed_name_cert: write("dashed-name.pem", &dashed_name_cert),
            dashed_name_key: write("dashed-name-key.pem", &dashed_name_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
        }
    }
}

/// A test CA that goes on issuing: certificates for instances and clients, and for the
/// router's HTTPS listener as the one PEM file (chain, then key) `[tls] certificates` reads.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate, for clients to trust.
    pub ca_pem: PathBuf,
}

impl TestCa {
    /// A new CA, its certificate written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> TestCa {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nexus test CA");
        let cert = params.self_signed(&key).expect("ca");
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, cert.pem()).expect("write ca");
        TestCa { cert, key, ca_pem }
    }

    /// A server certificate for `names`, as PEM: the certificate, then its key. Each call
    /// makes a new key, so two certificates for the same names differ.
    pub fn issue(&self, names: &[&str]) -> String {
        let (cert, key) = self.issue_pair(names, ExtendedKeyUsagePurpose::ServerAuth);
        format!("{cert}{key}")
    }

    /// A certificate and its key, as [`TestCa::issue`], valid only in the years
    /// `from..until` (1 January each).
    pub fn issue_for_years(&self, names: &[&str], from: i32, until: i32) -> String {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign");
        format!("{}{}", cert.pem(), key.serialize_pem())
    }

    /// A certificate for `names` and `usage`, and its new key, as two PEM texts.
    pub fn issue_pair(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

/// The leaf certificate (DER) of a PEM file's text as [`TestCa::issue`] makes it.
pub fn leaf_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}

/// A TLS acceptor serving the certificate chain and key in the PEM files `cert` and `key`,
/// as Pingora's rustls reads them: for the test servers that speak HTTPS.
pub fn acceptor(cert: &Path, key: &Path) -> pingora::tls::TlsAcceptor {
    pingora::tls::install_default_crypto_provider();
    let (chain, key) = pingora::tls::load_certs_and_key_files(
        &cert.display().to_string(),
        &key.display().to_string(),
    )
    .expect("read certificate files")
    .expect("a certificate and a key");
    let config = pingora::tls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
    pingora::tls::TlsAcceptor::from(std::sync::Arc::new(config))
}
