//! Zero-downtime upgrade: a new router process takes the listening sockets over from the
//! running one, which then drains and exits. No connection is refused in between: the
//! sockets never close, and connections that arrive while neither process accepts wait in
//! the kernel's backlog.
//!
//! With `[server] upgrade_socket` set, every router offers its listeners on that Unix socket
//! ([`Offer`]). `nexus-edge serve --upgrade` with the same config loads everything first
//! (keys, bindings, certificates), then asks there ([`take`]):
//!
//! 1. the successor sends [`wire::REQUEST`];
//! 2. the running router checks that the peer runs as its own user (or root) and sends its
//!    listening sockets (`SCM_RIGHTS`) with the address each was configured as;
//! 3. the successor serves on them (binding only addresses the old router did not have) and,
//!    once its listeners run, sends [`wire::SERVING`];
//! 4. the old router tells systemd the successor is the main process (when it runs under
//!    one, see [`crate::systemd`]), answers [`wire::DRAINING`] and drains as on SIGTERM (for
//!    `shutdown_delay` every response closes its connection, so that busy keep-alive clients
//!    reconnect, to the successor; then it stops accepting); its ops listener closes at once,
//!    so that `/readyz` on the shared port is the successor's.
//!
//! A successor that fails or dies before step 3 leaves the old router serving as before: a
//! failed upgrade changes nothing. One that gets no answer at step 4, is told to stop, or is
//! stuck past [`take`]'s deadline leaves the sockets to the old router and drains.
//!
//! Pingora's own upgrade (SIGQUIT sends the sockets to a process started beforehand with
//! `--upgrade`) is not used: it hands them over whether or not the new process is ready, and
//! would need the old process to be told when; here the successor asks once it is ready, and
//! the old one lets go only once it serves.

mod offer;
mod take;
pub mod wire;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use offer::Offer;

/// The environment variable `nexus-edge upgrade` gives the new router: a datagram socket to
/// tell it, with [`TOOK_OVER`], that the handover is done.
pub const REPORT_ENV: &str = "NEXUS_EDGE_UPGRADE_REPORT";

/// What the new router sends to [`REPORT_ENV`]'s socket once the handover is confirmed.
pub const TOOK_OVER: &str = "took-over";
pub use take::{take, Confirm, Outcome, Taken};

/// What a starting router does about handovers.
#[derive(Debug)]
pub enum Plan {
    /// No `upgrade_socket`: nothing is offered or taken.
    Off,
    /// Offers its listeners at the socket it claimed.
    Offer(Offer),
    /// Took its listeners from the router running at `path` (`serve --upgrade`).
    Succeed {
        /// The predecessor's sockets, and the connection to confirm on.
        taken: Taken,
        /// The upgrade socket, offered at in turn once confirmed.
        path: PathBuf,
    },
}

/// The listening sockets a router offers to its successor, each under the address it was
/// configured as (the key of [`crate::listening::BoundListeners`]). Shared between the offer
/// and the shutdown: withdrawn once the router stops, which closes the copies (a socket no
/// one accepts on must not stay open, holding connections that will never be answered) and
/// the upgrade socket (a router started once this one is gone must not find it).
#[derive(Clone, Debug, Default)]
pub struct Offered(Arc<Mutex<OfferState>>);

/// Listening sockets, each under the address it was configured as.
type Sockets = Vec<(String, TcpListener)>;

#[derive(Debug, Default)]
struct OfferState {
    /// `None` once withdrawn.
    sockets: Option<Sockets>,
    /// The upgrade socket the offer listens on, once it does.
    door: Option<offer::Door>,
    /// A successor has the sockets and the handover is not over yet.
    handing_over: bool,
}

impl Offered {
    /// Offers `sockets` (duplicates of the ones the router accepts on).
    pub fn new(sockets: Sockets) -> Self {
        Self(Arc::new(Mutex::new(OfferState {
            sockets: Some(sockets),
            door: None,
            handing_over: false,
        })))
    }

    /// Waits, `at_most` long, while a successor has the sockets and the handover is not over:
    /// a process that exits then leaves the successor with no one to confirm it.
    pub fn wait_handover_done(&self, at_most: std::time::Duration) {
        let until = std::time::Instant::now() + at_most;
        while self.lock().handing_over && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Marks a handover under way (`true`) or over.
    fn handing_over(&self, under_way: bool) {
        self.lock().handing_over = under_way;
    }

    /// The upgrade socket's file is left where it is when the socket closes: a successor is
    /// about to replace it, and removing it could remove the successor's.
    fn keep_file(&self) {
        if let Some(door) = self.lock().door.as_mut() {
            door.keep_file();
        }
    }

    /// Closes the offered copies and the upgrade socket: the router is stopping, and hands
    /// nothing over any more (a handover already under way completes).
    pub fn withdraw(&self) {
        let (sockets, door) = {
            let mut state = self.lock();
            (state.sockets.take(), state.door.take())
        };
        drop(sockets);
        if let Some(door) = door {
            door.close();
        }
    }

    /// Whether [`Offered::withdraw`] was called.
    fn is_withdrawn(&self) -> bool {
        self.lock().sockets.is_none()
    }

    /// Keeps `door` to close on [`Offered::withdraw`] (at once, if that already came).
    fn attach(&self, door: offer::Door) {
        let mut state = self.lock();
        if state.sockets.is_none() {
            drop(state);
            door.close();
        } else {
            state.door = Some(door);
        }
    }

    /// Duplicates of the offered sockets, or `None` once withdrawn.
    fn duplicates(&self) -> Option<std::io::Result<Sockets>> {
        let offered = self.lock();
        let sockets = offered.sockets.as_ref()?;
        Some(crate::listening::copies(
            sockets.iter().map(|(k, s)| (k, s)),
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OfferState> {
        // Nothing panics while the lock is held.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a handover could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoverError {
    /// A router already offers its listeners at the path: a second one cannot start beside it.
    #[error(
        "a router is already running with upgrade_socket {0}: take its listeners over with \
         `nexus-edge serve --upgrade`, or stop it first"
    )]
    RouterRunning(PathBuf),
    /// The socket cannot be bound (no such directory, no permission).
    #[error("cannot listen at upgrade_socket {path}: {source}")]
    Bind {
        /// The configured path.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The path holds something other than a socket, which the router will not delete.
    #[error("upgrade_socket {0} exists and is not a socket: remove it, or choose another path")]
    NotASocket(PathBuf),
    /// No router answers at the path: there is nothing to take over.
    #[error(
        "no router answers at upgrade_socket {path} ({source}): start without --upgrade, \
         or check that the running router has this upgrade_socket"
    )]
    NoRouter {
        /// The configured path.
        path: PathBuf,
        /// What connecting said.
        #[source]
        source: std::io::Error,
    },
    /// The peer runs as another user, who may not take (or give) this router's sockets.
    #[error("the peer at the upgrade socket runs as user {peer}, not as this router's user {own} (nor root)")]
    Stranger {
        /// The peer's user id.
        peer: u32,
        /// This process's user id.
        own: u32,
    },
    /// The running router refused (it is stopping).
    #[error("the running router refused the handover: {0}")]
    Refused(String),
    /// The other side said something the handover does not expect.
    #[error("handover: {0}")]
    Protocol(String),
    /// A step of the handover failed at the system level.
    #[error("handover: cannot {step}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

impl HandoverError {
    fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { step, source }
    }
}

/// Checks that the peer of `conn` runs as this process's user, or as root; returns its
/// process id, `None` when the peer is in another pid namespace (the kernel says 0).
fn same_user(conn: &std::os::unix::net::UnixStream) -> Result<Option<u32>, HandoverError> {
    // nix's, not rustix's: rustix takes the pid for non-zero, which the kernel does not
    // promise.
    let peer = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| HandoverError::io("read the peer's credentials")(e.into()))?;
    let own = rustix::process::getuid().as_raw();
    if peer.uid() != own && peer.uid() != 0 {
        return Err(HandoverError::Stranger {
            peer: peer.uid(),
            own,
        });
    }
    Ok(u32::try_from(peer.pid()).ok().filter(|&pid| pid != 0))
}

#[cfg(test)]
mod tests;
