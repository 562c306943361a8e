//! A blocking TLS client for the router's HTTPS listener: the name it asks for (SNI), the
//! certificate it was shown, and one request's response.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::http::{read_response_from, Response};

/// What one exchange over TLS gave.
#[derive(Debug)]
pub struct Exchange {
    /// The leaf certificate the router presented (DER).
    pub leaf: Vec<u8>,
    /// The response to the request sent.
    pub response: Response,
}

/// A client trusting the CA certificates in the PEM file `ca`, resuming no session.
pub fn trusting(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("CA taken");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every handshake a full one, which asks the router for a certificate: a resumed session
    // goes on with the certificate it began with, whatever the router holds now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A TLS connection to the router, its handshake done.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to `addr` asking for `server_name` in the handshake (an IP address sends no
/// SNI, as clients do) and completes the handshake; the error says what failed. Also the
/// leaf certificate the router presented (DER).
pub fn connect(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
) -> Result<(TlsStream, Vec<u8>), String> {
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(Arc::clone(config), name).map_err(|e| e.to_string())?;
    let mut sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate presented")?;
    Ok((rustls::StreamOwned::new(conn, sock), leaf))
}

/// [`connect`]s, sends `raw`, and reads one response.
pub fn exchange(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
    raw: &[u8],
) -> Result<Exchange, String> {
    let (mut tls, leaf) = connect(config, addr, server_name)?;
    tls.write_all(raw).map_err(|e| e.to_string())?;
    let response = read_response_from(&mut tls).map_err(|e| e.to_string())?;
    Ok(Exchange { leaf, response })
}

/// A `GET` of `path` on `host` with `headers` (`Connection: close` added), over a connection
/// that asked for `server_name`.
pub fn get(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Exchange, String> {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("Connection: close\r\n\r\n");
    exchange(config, addr, server_name, raw.as_bytes())
}
