//! Listening sockets bound before Pingora starts, so a router either accepts or exits.
//!
//! Left to itself, Pingora binds each listener on the service's own runtime after start-up,
//! which gets two things wrong for a router behind a load balancer:
//! - the services start in parallel, so the ops listener (and its `/readyz`) could answer
//!   while the public port still refused connections;
//! - a listener that cannot bind (address in use for 30 s, address not on this host) panics
//!   its service thread while the process lives on, serving nothing on that port.
//!
//! So [`bind`] binds every listener up front, where a failure is a start-up error naming the
//! address (or [`adopt`] takes one over from the router this one succeeds, see
//! [`crate::handover`]), and [`Prebound`] hands the socket to Pingora through its listener fd
//! table. Any later failure of a listening service stops the process rather than leaving it
//! half alive.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ListenFds, RuntimeOpts, ShutdownWatch};
use pingora::services::listening::Service as ListeningService;
use pingora::services::{Service, ServiceReadyNotifier, ServiceWithDependents};

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({role}): {source}")]
pub struct BindError {
    /// The configured address.
    pub addr: SocketAddr,
    /// Which listener: `public` or `ops`.
    pub role: &'static str,
    /// What the system said.
    #[source]
    pub source: std::io::Error,
}

/// Sockets bound and listening, keyed by the address string Pingora is given for them.
#[derive(Debug, Default)]
pub struct BoundListeners {
    sockets: HashMap<String, TcpListener>,
}

/// Binds `addr` for `role`, with the options Pingora's own bind uses (address reuse,
/// non-blocking; Pingora raises the backlog when it adopts the socket).
pub fn bind(
    listeners: &mut BoundListeners,
    addr: SocketAddr,
    role: &'static str,
) -> Result<(), BindError> {
    let err = |source| BindError { addr, role, source };
    if listeners.sockets.contains_key(&key(addr)) {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another listener of this router has this address",
        )));
    }
    let socket = TcpListener::bind(addr).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    // Inherited by every connection accepted on it. A kernel without it (before Linux 3.12,
    // or not Linux) keeps its default: slow readers are then judged by the send buffer's
    // wake-ups.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(&socket).set_tcp_notsent_lowat(CLIENT_NOTSENT_LOWAT) {
        tracing::warn!(%addr, error = %e, "TCP_NOTSENT_LOWAT not set: a client reading slowly but steadily may be cut by client_write_timeout");
    }
    listeners.sockets.insert(key(addr), socket);
    Ok(())
}

/// The most response bytes the kernel holds unsent for a client connection
/// (`TCP_NOTSENT_LOWAT`, set on the listening socket). Without it the kernel wakes a waiting
/// writer only once half of what its send buffer holds (megabytes, grown for the connection)
/// has drained: a client reading slowly but steadily left each write waiting for longer than
/// `client_write_timeout`, and was cut as one that takes nothing. With it the writer is woken
/// once about half of this has gone, so such a client shows as writes making progress; and a
/// slow reader holds this much kernel memory, not megabytes. Bytes sent and awaiting
/// acknowledgement are not limited by it: a single 300 MB response over loopback went at
/// 1.6 GB/s with it, 1.7 without (`docs/benchmarks.md`), the same CPU per byte.
pub const CLIENT_NOTSENT_LOWAT: u32 = 128 * 1024;

/// Takes `socket`, a listener of the router this one succeeds, as the one configured as
/// `addr`: it listens already, with the options [`bind`] set.
pub fn adopt(listeners: &mut BoundListeners, addr: SocketAddr, socket: TcpListener) {
    listeners.sockets.insert(key(addr), socket);
}

impl BoundListeners {
    /// The address the listener configured as `addr` is bound to: with port 0 the system
    /// picks the port, and this is the one to connect to.
    pub fn local_addr(&self, addr: SocketAddr) -> Option<SocketAddr> {
        self.sockets.get(&key(addr))?.local_addr().ok()
    }

    /// A copy of each socket, under its key, to offer to a successor: Pingora owns (and
    /// closes) the ones it is given.
    pub fn duplicates(&self) -> std::io::Result<Vec<(String, TcpListener)>> {
        copies(&self.sockets)
    }
}

/// A copy (`dup`) of each socket, under its key.
pub fn copies<'a>(
    sockets: impl IntoIterator<Item = (&'a String, &'a TcpListener)>,
) -> std::io::Result<Vec<(String, TcpListener)>> {
    sockets
        .into_iter()
        .map(|(key, s)| Ok((key.clone(), s.try_clone()?)))
        .collect()
}

/// The string a listener is registered under, both in Pingora's `add_tcp` and its fd table,
/// and in a handover.
pub fn key(addr: SocketAddr) -> String {
    addr.to_string()
}

/// A shutdown watch that fires when Pingora stops its runtimes (the drain is over, or its
/// grace ran out), not when the drain begins; or once `handed_over` turns true.
fn shutdown_at_runtime_stop(
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    mut handed_over: tokio::sync::watch::Receiver<bool>,
) -> ShutdownWatch {
    let (stop, watch) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        let runtimes_stop = async {
            loop {
                match phases.recv().await {
                    Ok(ExecutionPhase::ShutdownRuntimes | ExecutionPhase::Terminated)
                    | Err(RecvError::Closed) => break,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                }
            }
        };
        tokio::select! {
            () = runtimes_stop => {}
            // A sender dropped without a handover leaves the runtimes' stop to wait for.
            Ok(_) = handed_over.wait_for(|h| *h) => {}
        }
        let _ = stop.send(true);
    });
    watch
}

/// A listening service whose socket was bound by [`bind`].
pub struct Prebound<S> {
    /// Taken when the service starts: it runs in its own task so that a panic can be seen.
    inner: Option<S>,
    sockets: Vec<(String, TcpListener)>,
    name: String,
    threads: Option<usize>,
    addresses: Option<Vec<String>>,
    /// Pingora's phases and the handover's end, when the listener goes on accepting through
    /// the drain (see [`Prebound::serving_through_the_drain`]).
    through_drain: Option<(
        tokio::sync::broadcast::Receiver<ExecutionPhase>,
        tokio::sync::watch::Receiver<bool>,
    )>,
}

impl<A> Prebound<ListeningService<A>>
where
    ListeningService<A>: Service,
{
    /// Makes `inner` listen on `addr` on the socket [`bind`] bound there, taken out of
    /// `listeners` (if it is not there, Pingora binds the address itself).
    pub fn new(
        mut inner: ListeningService<A>,
        listeners: &mut BoundListeners,
        addr: SocketAddr,
    ) -> Self {
        let key = key(addr);
        inner.add_tcp(&key);
        Self {
            name: Service::name(&inner).to_owned(),
            threads: Service::threads(&inner),
            addresses: Service::listen_addresses(&inner),
            inner: Some(inner),
            sockets: listeners
                .sockets
                .remove(&key)
                .map(|s| (key, s))
                .into_iter()
                .collect(),
            through_drain: None,
        }
    }

    /// Makes the service listen on `addr` too (the HTTPS listener, which the same application
    /// serves), on the socket [`bind`] bound there.
    #[must_use]
    pub fn also_on(mut self, listeners: &mut BoundListeners, addr: SocketAddr) -> Self {
        let key = key(addr);
        if let Some(inner) = self.inner.as_mut() {
            inner.add_tcp(&key);
            self.addresses = Service::listen_addresses(inner);
        }
        if let Some(socket) = listeners.sockets.remove(&key) {
            self.sockets.push((key, socket));
        }
        self
    }
}

impl<S> Prebound<S> {
    /// Keeps the listener accepting through the drain, until Pingora stops its runtimes
    /// (`phases`: [`pingora::server::Server::watch_execution_phase`]), instead of closing it
    /// when the drain begins: the ops listener, so that `/readyz` says `draining` and
    /// `/metrics` show the drain (requests finishing, connections left) while it lasts. Its
    /// connections are not the drain's to wait for, and it holds no client's request.
    /// Closed at once, though, when `handed_over` turns true: the successor accepts on the
    /// same socket, and a probe must hear the successor, not a draining router.
    pub fn serving_through_the_drain(
        mut self,
        phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
        handed_over: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        self.through_drain = Some((phases, handed_over));
        self
    }
}

#[async_trait]
impl<S: Service + 'static> ServiceWithDependents for Prebound<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        let Some(mut inner) = self.inner.take() else {
            tracing::error!(service = %self.name, "started twice; ignored");
            return;
        };
        // The router does not run Pingora's socket-passing upgrade (its own hands the sockets
        // over before this: see `crate::handover`), so the table holds none of them yet.
        if let Some(table) = &fds {
            for (key, socket) in self.sockets.drain(..) {
                table.lock().add(key, socket.into_raw_fd());
            }
        }
        // The socket already accepts: dependents may start.
        ready.notify_ready();
        let shutdown = match self.through_drain.take() {
            Some((phases, handed_over)) => shutdown_at_runtime_stop(phases, handed_over),
            None => shutdown,
        };
        let run = tokio::spawn(async move {
            inner.start_service(fds, shutdown, listeners_per_fd).await;
        });
        match run.await {
            Ok(()) => {}
            // Pingora panics when it cannot build a listener; its message says why.
            Err(e) if e.is_panic() => {
                tracing::error!(service = %self.name, error = %e, "listener failed; exiting");
                eprintln!("nexus-edge: the {} listener failed; exiting", self.name);
                std::process::exit(1);
            }
            Err(e) => tracing::warn!(service = %self.name, error = %e, "listener stopped"),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        self.threads
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner
            .as_ref()
            .and_then(|s| s.runtime_opts_override(global))
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.addresses.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_address_is_a_named_error_and_binds_nothing() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut bound = BoundListeners::default();
        let e = bind(&mut bound, addr, "public").err();
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.starts_with(&format!("cannot listen on {addr} (public): ")),
            "{msg}"
        );
        assert!(bound.sockets.is_empty());
    }

    #[test]
    fn a_bound_socket_accepts_before_any_service_runs() {
        let mut bound = BoundListeners::default();
        // Port 0: the system picks a port no other process holds (a port found free and
        // released first could be taken in between).
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        bind(&mut bound, any, "public").unwrap_or_else(|e| panic!("{e}"));
        assert!(bound.sockets.contains_key(&key(any)));
        let bound_at = bound
            .local_addr(any)
            .unwrap_or_else(|| panic!("no local address"));
        assert_ne!(bound_at.port(), 0);
        std::net::TcpStream::connect(bound_at).unwrap_or_else(|e| panic!("{e}"));
        // Two listeners on one address (e.g. both on port 0) would share one socket.
        let twice = bind(&mut bound, any, "ops").err().map(|e| e.to_string());
        assert!(
            twice
                .as_deref()
                .is_some_and(|m| m.contains("another listener")),
            "{twice:?}"
        );
    }
}
