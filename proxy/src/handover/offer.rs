//! The running router's side: offers its listeners at `upgrade_socket` until a successor
//! takes them, or the router stops.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::wire::{self, Answer};
use super::{HandoverError, Offered};

/// How long a successor has to send its request once connected.
const REQUEST_WAIT: Duration = Duration::from_secs(5);

/// How long a successor has, from receiving the sockets, to say it serves on them. It loaded
/// everything before asking, so it only starts its listeners: past this it is taken as stuck,
/// and the running router goes on as if nothing had been asked.
const SERVING_WAIT: Duration = Duration::from_secs(30);

/// The upgrade socket, bound and listening: no other router can start with this path.
#[derive(Debug)]
pub struct Offer {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's device and inode, to tell it from a successor's at the same path.
    file: (u64, u64),
}

/// What closes the upgrade socket when the router stops: a copy of the listener, to wake
/// the offer's `accept`, and the file, removed unless a successor has replaced it.
#[derive(Debug)]
pub(super) struct Door {
    listener: UnixListener,
    path: PathBuf,
    file: (u64, u64),
    /// Leave the file: a successor replaces it (see [`Door::keep_file`]).
    keep_file: bool,
}

impl Door {
    /// Stops the offer's `accept` and removes the socket file if it is still this router's
    /// (and no successor is to replace it).
    pub(super) fn close(self) {
        // A listening socket shut down wakes the thread waiting in `accept` with an error.
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Both);
        if !self.keep_file && file_id(&self.path).is_some_and(|id| id == self.file) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Leaves the file when the socket closes: the successor that has just been told to take
    /// over replaces it, and a removal racing that would remove the successor's. (Should that
    /// successor vanish, the file is a dead router's, which the next start replaces.)
    pub(super) fn keep_file(&mut self) {
        self.keep_file = true;
    }
}

/// The device and inode of the file at `path`.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

impl Offer {
    /// Binds `path` for a router starting afresh. A socket left there by a router that is
    /// gone (nothing accepts on it) is replaced; one a router answers on is an error, as is
    /// anything at the path that is not a socket.
    pub fn claim(path: &Path) -> Result<Self, HandoverError> {
        if socket_at(path)? {
            match UnixStream::connect(path) {
                Ok(_) => return Err(HandoverError::RouterRunning(path.to_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    remove_socket(path)?;
                }
                Err(e) => return Err(HandoverError::io("connect to the upgrade socket")(e)),
            }
        }
        Self::bind(path)
    }

    /// Binds `path` for a successor that has just taken over: the socket there is its
    /// predecessor's, which is draining and offers nothing any more.
    pub fn replace(path: &Path) -> Result<Self, HandoverError> {
        if socket_at(path)? {
            remove_socket(path)?;
        }
        Self::bind(path)
    }

    fn bind(path: &Path) -> Result<Self, HandoverError> {
        let listener = UnixListener::bind(path).map_err(|source| HandoverError::Bind {
            path: path.to_owned(),
            source,
        })?;
        // Only this user may connect; the peer's credentials are checked on top (see
        // `same_user`), for a directory whose permissions let others in before this ran.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            HandoverError::io("restrict the upgrade socket to this user"),
        )?;
        let file = file_id(path).ok_or_else(|| {
            HandoverError::io("read the upgrade socket's file")(std::io::Error::other(
                "it is gone just after being bound",
            ))
        })?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            file,
        })
    }

    /// Offers `offered` to the first successor that asks, on a thread of its own, until it
    /// is withdrawn; calls `handed_over` with the successor's process id (0 when unknown)
    /// once it serves on them, and stops. A handover that fails on the way is logged and the
    /// offer stands.
    pub fn open(
        self,
        offered: Offered,
        handed_over: impl FnOnce(u32) + Send + 'static,
    ) -> std::io::Result<()> {
        offered.attach(Door {
            listener: self.listener.try_clone()?,
            path: self.path.clone(),
            file: self.file,
            keep_file: false,
        });
        std::thread::Builder::new()
            .name("handover".to_owned())
            .spawn(move || {
                tracing::info!(path = %self.path.display(), "listeners offered to a successor (`serve --upgrade`)");
                for conn in self.listener.incoming() {
                    if offered.is_withdrawn() {
                        return;
                    }
                    let conn = match conn {
                        Ok(conn) => conn,
                        Err(e) => {
                            tracing::warn!(error = %e, "upgrade socket: accept failed");
                            // Out of descriptors, say: the next accept may do better.
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    };
                    match hand_over(conn, &offered) {
                        // A router starting with the same path, checking whether this one
                        // is alive.
                        Ok(None) => {}
                        Ok(Some(successor)) => {
                            tracing::info!(
                                successor_pid = successor,
                                "the successor serves on this router's listeners"
                            );
                            handed_over(successor);
                            return;
                        }
                        Err(e) => tracing::warn!(
                            error = %e,
                            "handover not done: this router goes on serving"
                        ),
                    }
                }
            })
            .map(drop)
    }
}

/// A handover under way, for as long as this lives.
struct UnderWay<'a>(&'a Offered);

impl<'a> UnderWay<'a> {
    fn begin(offered: &'a Offered) -> Self {
        offered.handing_over(true);
        Self(offered)
    }
}

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        self.0.handing_over(false);
    }
}

/// Whether a socket file is at `path`; anything else there is an error (it is not the
/// router's to remove).
fn socket_at(path: &Path) -> Result<bool, HandoverError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(HandoverError::io("read the upgrade socket's path")(e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            Err(HandoverError::NotASocket(path.to_owned()))
        }
        Ok(_) => Ok(true),
    }
}

/// Removes the socket file at `path` (a dead router's, or the predecessor's).
fn remove_socket(path: &Path) -> Result<(), HandoverError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(HandoverError::io("remove the old upgrade socket")(e))
        }
        _ => Ok(()),
    }
}

/// One successor's handover, to the end: the successor's process id once it serves (0 when
/// unknown), or `None` for a connection closed without a word.
fn hand_over(mut conn: UnixStream, offered: &Offered) -> Result<Option<u32>, HandoverError> {
    let successor = super::same_user(&conn)?.unwrap_or(0);
    conn.set_read_timeout(Some(REQUEST_WAIT))
        .map_err(HandoverError::io("set a read timeout"))?;
    conn.set_write_timeout(Some(REQUEST_WAIT))
        .map_err(HandoverError::io("set a write timeout"))?;
    let Some(request) = wire::read_first_line(&mut conn)? else {
        return Ok(None);
    };
    if request != wire::REQUEST {
        return Err(HandoverError::Protocol(format!(
            "not a handover request: {:?}",
            request.chars().take(80).collect::<String>()
        )));
    }
    let sockets = match offered.duplicates() {
        Some(Ok(sockets)) => sockets,
        Some(Err(e)) => {
            let why = format!("cannot duplicate the listening sockets: {e}");
            let _ = wire::send_answer(
                &mut conn,
                &Answer::Refused(why.clone()),
                &[] as &[std::net::TcpListener],
            );
            return Err(HandoverError::Refused(why));
        }
        None => {
            let why = "it is stopping, or could not copy its sockets".to_owned();
            let _ = wire::send_answer(
                &mut conn,
                &Answer::Refused(why.clone()),
                &[] as &[std::net::TcpListener],
            );
            return Err(HandoverError::Refused(why));
        }
    };
    let (keys, sockets): (Vec<_>, Vec<_>) = sockets.into_iter().unzip();
    tracing::info!(successor_pid = successor, listeners = ?keys, "handing the listeners over");
    // From the moment the successor may hold the sockets until this ends, a drain ending
    // waits for it (see `Offered::wait_handover_done`).
    let _under_way = UnderWay::begin(offered);
    wire::send_answer(&mut conn, &Answer::Listeners(keys), &sockets)?;
    // The successor has the sockets; until it serves on them, this router accepts on them
    // too, and goes on doing so if it never does.
    drop(sockets);
    conn.set_read_timeout(Some(SERVING_WAIT))
        .map_err(HandoverError::io("set a read timeout"))?;
    let serving = wire::read_line(&mut conn).map_err(|e| {
        HandoverError::Protocol(format!("the successor did not say it serves ({e})"))
    })?;
    if serving != wire::SERVING {
        return Err(HandoverError::Protocol(format!(
            "the successor said {:?}, not that it serves",
            serving.chars().take(80).collect::<String>()
        )));
    }
    // systemd hears it from the main process, before it may exit.
    if successor != 0 {
        crate::systemd::main_process_is(successor);
    } else if std::env::var_os("NOTIFY_SOCKET").is_some() {
        tracing::warn!(
            "the successor's process id is unknown (another pid namespace): systemd is not \
             told it is the service's main process now, and may stop it when this one exits"
        );
    }
    offered.keep_file();
    if let Err(e) = wire::write_line(&mut conn, wire::DRAINING) {
        crate::systemd::main_process_is(std::process::id());
        return Err(HandoverError::io("tell the successor this router drains")(
            e,
        ));
    }
    Ok(Some(successor))
}
