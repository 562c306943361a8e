//! The HTTPS listener: certificates chosen by SNI and reloaded while the router runs, the
//! handshake done under the client connection cap and header deadline, and the name the
//! client asked for kept for the request ([`server_name`]).
//!
//! Pingora's own TLS listener hands the proxy a connection only once its handshake is done,
//! and bounds the handshake at 60 s outside the connection cap: a client that opens
//! connections and never finishes a handshake would hold that many descriptors uncounted.
//! So the listener is a plain one to Pingora, and [`crate::connections::Guarded`] takes a
//! place among the open connections first and then runs the handshake
//! ([`TlsEndpoint::handshake`]) within `[server] request_header_timeout`.
//!
//! The admin API, given certificates, serves HTTPS the same way, with a [`Certificates`] of
//! its own: its handshakes run within its connections' caps ([`crate::ops::Capped`]).

use std::any::Any;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use nexus_certs::{CertError, CertFiles, SniResolver, Validity};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{TlsAccept, ALPN};
use pingora::protocols::tls::TlsRef;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::background::JobsStop;
use crate::metrics::{gauge_value, TlsMetrics};

/// Why the HTTPS listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// No certificate file could be used: every one is named with its problem, after the
    /// setting that names them (`tls.certificates`, `admin_api.certificates`).
    #[error("{}: no certificate could be loaded{}", .0, listed(.1))]
    NoCertificate(&'static str, Vec<CertError>),
}

fn listed(problems: &[CertError]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

/// The certificates in use, and the files they come from: the HTTPS listener's, or the
/// admin API's.
pub struct Certificates {
    /// The setting naming the files (`tls.certificates`), said with what the log says of them.
    setting: &'static str,
    resolver: Arc<SniResolver>,
    files: Mutex<CertFiles>,
    metrics: TlsMetrics,
}

impl Certificates {
    /// Reads `sources` (files and directories), as `setting` names them. Files that cannot
    /// be used are logged and counted, and the rest serve: one bad customer certificate must
    /// not keep every tenant off HTTPS. With none usable, start-up fails naming each file's
    /// problem.
    pub fn load(
        setting: &'static str,
        sources: Vec<std::path::PathBuf>,
        metrics: TlsMetrics,
    ) -> Result<Self, HttpsError> {
        let mut files = CertFiles::new(sources);
        let first = files.reload();
        let set = files.set();
        if set.is_empty() {
            return Err(HttpsError::NoCertificate(setting, first.new_problems));
        }
        for problem in &first.new_problems {
            tracing::error!(setting, error = %problem, "certificate file not used");
        }
        for cert in &first.loaded {
            warn_if_out_of_date(setting, cert);
        }
        tracing::info!(setting, certificates = set.len(), "TLS certificates loaded");
        let this = Self {
            setting,
            resolver: Arc::new(SniResolver::new(set)),
            files: Mutex::new(files),
            metrics,
        };
        this.show(&this.files.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(this)
    }

    /// Reads the files again; a change serves from the next handshake on.
    pub fn reload(&self) {
        let setting = self.setting;
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let reload = files.reload();
        for problem in &reload.new_problems {
            tracing::error!(setting, error = %problem, "certificate file not used; its last good certificate, if any, keeps serving");
        }
        for cert in &reload.loaded {
            tracing::info!(setting, file = %cert.path.display(), names = ?cert.names().collect::<Vec<_>>(), "TLS certificate loaded");
            warn_if_out_of_date(setting, cert);
        }
        // A certificate given that has just become valid may now serve a name another did.
        let now = nexus_certs::unix_now();
        let due = self
            .resolver
            .current()
            .next_change()
            .is_some_and(|t| now >= t);
        if reload.changed || due {
            let set = files.set();
            tracing::info!(
                setting,
                certificates = set.len(),
                "TLS certificates in use changed"
            );
            self.resolver.replace(set);
        }
        self.show(&files);
    }

    /// Sets the metrics to what is in use now (`files`: the files, as locked by the caller).
    fn show(&self, files: &CertFiles) {
        let set = self.resolver.current();
        self.metrics.certificates.set(gauge_value(set.len()));
        self.metrics
            .earliest_expiry
            .set(set.earliest_not_after().unwrap_or(0));
        self.metrics
            .files_refused
            .set(gauge_value(files.refused().count()));
    }

    /// The HTTPS listener bound at `addr`: TLS 1.2 and 1.3, HTTP/1.1 (the router does not
    /// serve HTTP/2), each handshake's certificate from the current set.
    pub fn endpoint(&self, addr: SocketAddr) -> TlsEndpoint {
        let mut settings = TlsSettings::with_callbacks(Box::new(KeepServerName))
            .unwrap_or_else(|e| unreachable!("with_callbacks never fails: {e}"));
        settings.set_cert_resolver(self.resolver.clone());
        settings.set_alpn(ALPN::H1);
        TlsEndpoint {
            addr,
            acceptor: settings.build(),
            failed: self.metrics.handshakes_failed.clone(),
        }
    }
}

/// Says so when `cert` is expired or not valid yet: it is served all the same (where it
/// names what no other certificate does, browsers refuse it rather than find no handshake),
/// and the expiry gauge shows the earliest.
fn warn_if_out_of_date(setting: &str, cert: &nexus_certs::LoadedCert) {
    match cert.validity_at(nexus_certs::unix_now()) {
        Validity::Expired => {
            tracing::warn!(setting, file = %cert.path.display(), not_after = cert.not_after, "TLS certificate expired: clients will refuse it")
        }
        Validity::NotYet => {
            tracing::warn!(setting, file = %cert.path.display(), not_before = cert.not_before, "TLS certificate not valid yet: clients will refuse it where it serves")
        }
        Validity::Valid => {}
    }
}

/// The name a TLS client asked for (SNI), lowercase, kept in the connection's digest.
#[derive(Debug)]
struct ServerName(String);

/// Keeps each handshake's SNI for the requests of its connection.
struct KeepServerName;

#[async_trait]
impl TlsAccept for KeepServerName {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let name = nexus_certs::sni_key(tls.server_name()?).into_owned();
        Some(Arc::new(ServerName(name)))
    }
}

/// The name the client asked for in its TLS handshake, when the request came over HTTPS. A
/// TLS connection without one kept (none completes today: see [`SniResolver`]; a default
/// certificate would change that) gets `""`, which names no host: its requests are
/// misdirected, not let through unchecked.
pub fn server_name(session: &Session) -> Option<&str> {
    let tls = session.digest()?.ssl_digest.as_ref()?;
    Some(
        tls.extension
            .get::<ServerName>()
            .map_or("", |n| n.0.as_str()),
    )
}

/// A TLS listener's address and acceptor: the HTTPS listener's, whose connections
/// [`crate::connections::Guarded`] tells from the plain listener's by the address; or the
/// admin API's, whose connections are all TLS ([`crate::ops::Capped::over_tls`]: only the
/// handshake is used).
pub struct TlsEndpoint {
    /// The address bound (with port 0 configured, the port the system chose).
    pub addr: SocketAddr,
    acceptor: pingora::listeners::tls::Acceptor,
    /// Counts the handshakes that fail.
    pub failed: pingora_prometheus::prometheus::IntCounter,
}

impl TlsEndpoint {
    /// Whether `stream` was accepted by this listener, by its local address: see
    /// [`listener_takes`]. A stream whose local address cannot be read is taken for one: it
    /// then gets a handshake, never plain HTTP on the HTTPS port.
    pub fn accepted(&self, stream: &Stream) -> bool {
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
        local.is_none_or(|l| listener_takes(self.addr, l))
    }

    /// Runs the TLS handshake on `stream`, to be complete by `deadline`; `None` (counted)
    /// when it is not.
    pub async fn handshake(
        &self,
        stream: Stream,
        deadline: tokio::time::Instant,
    ) -> Option<Stream> {
        let stream = Accepted { inner: stream };
        match tokio::time::timeout_at(deadline, self.acceptor.tls_handshake(stream)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                self.failed.inc();
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.failed.inc();
                tracing::debug!("TLS handshake not complete by its deadline");
                None
            }
        }
    }
}

/// Whether a listener bound at `listener` accepts connections arriving at `local`, as Linux
/// binds: the same port, and the same address (an IPv4-mapped IPv6 address being its IPv4
/// one), or `0.0.0.0` for an IPv4 address, or `::` for any. Plain and HTTPS listeners never
/// take one port on overlapping addresses (the config refuses it), so this tells them apart.
fn listener_takes(listener: SocketAddr, local: SocketAddr) -> bool {
    let (bound, local_ip) = (listener.ip().to_canonical(), local.ip().to_canonical());
    local.port() == listener.port()
        && match bound {
            std::net::IpAddr::V6(any) if any.is_unspecified() => true,
            std::net::IpAddr::V4(any) if any.is_unspecified() => local_ip.is_ipv4(),
            ip => ip == local_ip,
        }
}

/// A connection of the HTTPS listener as Pingora accepted it, before its handshake: the
/// acceptor wants a concrete stream type under the TLS one.
#[derive(Debug)]
struct Accepted {
    inner: Stream,
}

impl AsyncRead for Accepted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

crate::connections::forward_stream_traits!(Accepted);

/// Reads the certificate files again every `every`, until the process ends.
pub struct CertReload {
    certificates: Arc<Certificates>,
    every: Duration,
    stop: JobsStop,
}

impl CertReload {
    /// A job reloading `certificates` every `every`.
    pub fn new(certificates: Arc<Certificates>, every: Duration, stop: JobsStop) -> Self {
        Self {
            certificates,
            every,
            stop,
        }
    }
}

#[async_trait]
impl BackgroundService for CertReload {
    async fn start(&self, shutdown: ShutdownWatch) {
        let mut shutdown = self.stop.signal(shutdown, Duration::ZERO);
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is now: the files were just read.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let certificates = Arc::clone(&self.certificates);
                    // Blocking file reads; a panic there (logged and counted by the panic
                    // hook) keeps the certificates in use and the job alive.
                    let done = tokio::task::spawn_blocking(move || certificates.reload()).await;
                    if done.is_err() {
                        tracing::error!("certificates not reloaded: the reload panicked; keeping the certificates in use");
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_takes_what_the_kernel_would_send_it() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        for (listener, local, takes) in [
            ("127.0.0.1:443", "127.0.0.1:443", true),
            ("127.0.0.1:443", "127.0.0.1:8080", false),
            ("127.0.0.1:443", "127.0.0.2:443", false),
            ("0.0.0.0:443", "10.1.2.3:443", true),
            ("0.0.0.0:443", "[::ffff:10.1.2.3]:443", true),
            // A plain listener on an IPv6 address beside HTTPS on every IPv4 one.
            ("0.0.0.0:443", "[2001:db8::1]:443", false),
            ("[::]:443", "[2001:db8::1]:443", true),
            ("[::]:443", "10.1.2.3:443", true),
            ("[::ffff:0.0.0.0]:443", "10.1.2.3:443", true),
            ("[::ffff:127.0.0.1]:443", "127.0.0.1:443", true),
        ] {
            assert_eq!(
                listener_takes(at(listener), at(local)),
                takes,
                "{listener} {local}"
            );
        }
    }
}
