//! The successor's side: asks the running router for its listeners, and tells it once it
//! serves on them.

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::wire::{self, Answer};
use super::HandoverError;

/// How long each step of the exchange may take on the successor's side: the running router
/// answers at once, from a thread of its own.
const STEP_WAIT: Duration = Duration::from_secs(10);

/// How long a successor may take from receiving the sockets to saying it serves: less than
/// the running router waits for it (30 s), so that a successor stuck on the way gives up
/// before the running router does, and never serves beside it.
const CONFIRM_DEADLINE: Duration = Duration::from_secs(20);

/// The running router's listening sockets, taken; the handover is complete once
/// [`Taken::confirm`] returns. Held past [`CONFIRM_DEADLINE`] before confirming, the deadline
/// given to [`take`] is called.
#[derive(Debug)]
pub struct Taken {
    conn: UnixStream,
    /// Dropped (with this, or as the confirmation begins), it disarms the deadline.
    deadline: Option<std::sync::mpsc::Sender<()>>,
    /// The running router's process id (`None` when it is in another pid namespace).
    pub from_pid: Option<u32>,
    /// The sockets by the address each was configured as.
    pub sockets: HashMap<String, TcpListener>,
}

/// Asks the router answering at `path` for its listening sockets; `on_deadline` is called
/// if they are held [`CONFIRM_DEADLINE`] without confirming.
pub fn take(path: &Path, on_deadline: Box<dyn FnOnce() + Send>) -> Result<Taken, HandoverError> {
    let mut conn = UnixStream::connect(path).map_err(|source| HandoverError::NoRouter {
        path: path.to_owned(),
        source,
    })?;
    let from_pid = super::same_user(&conn)?;
    conn.set_read_timeout(Some(STEP_WAIT))
        .map_err(HandoverError::io("set a read timeout"))?;
    conn.set_write_timeout(Some(STEP_WAIT))
        .map_err(HandoverError::io("set a write timeout"))?;
    wire::write_line(&mut conn, wire::REQUEST).map_err(HandoverError::io(
        "ask the running router for its listeners",
    ))?;
    let (answer, fds) = wire::recv_answer(&mut conn)?;
    let keys = match answer {
        Answer::Listeners(keys) => keys,
        Answer::Refused(why) => return Err(HandoverError::Refused(why)),
    };
    if keys.len() != fds.len() {
        return Err(HandoverError::Protocol(format!(
            "{} listeners named but {} sockets sent",
            keys.len(),
            fds.len()
        )));
    }
    let mut sockets = HashMap::with_capacity(keys.len());
    for (key, fd) in keys.into_iter().zip(fds) {
        let socket = TcpListener::from(fd);
        let sock = socket2::SockRef::from(&socket);
        let listening = sock.is_listener().unwrap_or(false)
            && sock.r#type().is_ok_and(|t| t == socket2::Type::STREAM);
        if !listening {
            return Err(HandoverError::Protocol(format!(
                "the socket sent for {key} is not a listening TCP socket"
            )));
        }
        socket
            .set_nonblocking(true)
            .map_err(HandoverError::io("make a taken socket non-blocking"))?;
        if sockets.insert(key.clone(), socket).is_some() {
            return Err(HandoverError::Protocol(format!("{key} sent twice")));
        }
    }
    Ok(Taken {
        conn,
        deadline: Some(deadline(on_deadline)?),
        from_pid,
        sockets,
    })
}

/// Calls `on_deadline` at [`CONFIRM_DEADLINE`] unless the returned sender is dropped first.
fn deadline(
    on_deadline: Box<dyn FnOnce() + Send>,
) -> Result<std::sync::mpsc::Sender<()>, HandoverError> {
    let (disarm, armed) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("handover-deadline".to_owned())
        .spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                armed.recv_timeout(CONFIRM_DEADLINE)
            {
                tracing::error!(deadline = ?CONFIRM_DEADLINE, "the handover was not confirmed in time: the listeners are left to the running router");
                on_deadline();
            }
        })
        .map_err(HandoverError::io("start the handover's deadline"))?;
    Ok(disarm)
}

impl Taken {
    /// Tells the running router this process serves on the sockets, and waits for it to say
    /// it drains. An error means it may still be accepting.
    pub fn confirm(mut self) -> Result<(), HandoverError> {
        // Once "serving" is on its way, the running router may let go at any moment: giving
        // up then (the deadline) could leave no one serving.
        drop(self.deadline.take());
        wire::write_line(&mut self.conn, wire::SERVING)
            .map_err(HandoverError::io("tell the running router this one serves"))?;
        let answer = wire::read_line(&mut self.conn)?;
        if answer != wire::DRAINING {
            return Err(HandoverError::Protocol(format!(
                "the running router answered {:?}, not that it drains",
                answer.chars().take(80).collect::<String>()
            )));
        }
        Ok(())
    }
}

/// The successor's last step, run once its listeners accept (a Pingora background service
/// that depends on them): confirms the handover, then offers the listeners in turn at the
/// same path.
pub struct Confirm {
    pending: std::sync::Mutex<Option<Pending>>,
}

struct Pending {
    taken: Taken,
    path: std::path::PathBuf,
    offered: super::Offered,
    outcome: Outcome,
}

/// What the successor's [`Confirm`] reports to the rest of the router.
pub struct Outcome {
    /// Whether a stop signal has come to this router: then it does not confirm, and the
    /// predecessor serves on. Asked last thing before saying it serves.
    pub stopping: Box<dyn Fn() -> bool + Send>,
    /// Called with this router's own successor's process id once it serves.
    pub handed_over: Box<dyn FnOnce(u32) + Send>,
    /// Called when this router leaves the sockets to its predecessor (which never let go and
    /// is still alive, or this one was told to stop first): it drains, and exits 1.
    pub abandoned: Box<dyn FnOnce() + Send>,
}

impl Confirm {
    /// Confirms `taken`, then offers `offered` at `path`.
    pub fn new(
        taken: Taken,
        path: std::path::PathBuf,
        offered: super::Offered,
        outcome: Outcome,
    ) -> Self {
        Self {
            pending: std::sync::Mutex::new(Some(Pending {
                taken,
                path,
                offered,
                outcome,
            })),
        }
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Confirm {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(Pending {
            taken,
            path,
            offered,
            outcome,
        }) = pending
        else {
            return;
        };
        let predecessor = taken.from_pid;
        let stopping = outcome.stopping;
        let confirmed = tokio::task::spawn_blocking(move || {
            // Checked last thing before saying it serves: a stop signal to this router means
            // the upgrade is off, and the predecessor must not let go.
            if stopping() {
                return Ok(None);
            }
            taken.confirm()?;
            Ok::<_, HandoverError>(Some(super::Offer::replace(&path)))
        })
        .await
        .unwrap_or_else(|e| Err(HandoverError::io("confirm")(std::io::Error::other(e))));
        match confirmed {
            Ok(None) => {
                tracing::warn!("called off before the handover was confirmed (a stop signal, or the deadline): the listeners are left to the predecessor, which serves on");
                (outcome.abandoned)();
            }
            Ok(Some(offer)) => {
                tracing::info!(
                    predecessor_pid = predecessor,
                    "took the listeners over; the predecessor drains"
                );
                report_taken_over();
                let opened = offer.map_err(|e| e.to_string()).and_then(|offer| {
                    offer
                        .open(offered, outcome.handed_over)
                        .map_err(|e| e.to_string())
                });
                if let Err(e) = opened {
                    tracing::warn!(error = %e, "the listeners are not offered to a successor: `serve --upgrade` will not find this router");
                }
            }
            Err(e) => not_confirmed(&e.to_string(), predecessor, outcome.abandoned),
        }
    }
}

/// Tells `nexus-edge upgrade`, when it started this router, that the handover is done.
fn report_taken_over() {
    let Some(target) = std::env::var_os(super::REPORT_ENV) else {
        return;
    };
    if let Err(e) = crate::systemd::send(&target, super::TOOK_OVER) {
        tracing::warn!(error = %e, "cannot tell `nexus-edge upgrade` the handover is done");
    }
}

/// A handover that was not confirmed: the predecessor may still accept on the sockets. If it
/// lives, this router leaves them to it (`abandoned`); if it is gone, this one serves alone.
fn not_confirmed(why: &str, predecessor: Option<u32>, abandoned: Box<dyn FnOnce() + Send>) {
    if predecessor.is_some_and(|pid| !is_alive(pid)) {
        tracing::warn!(
            error = %why,
            predecessor_pid = predecessor,
            "handover not confirmed, and the predecessor is gone: this router serves alone \
             (it does not offer its listeners: restart it to have them offered again)"
        );
        return;
    }
    tracing::error!(error = %why, "handover not confirmed: this router drains and exits 1; the predecessor serves on");
    eprintln!(
        "nexus-edge: handover not confirmed ({why}): draining and exiting; the running router \
         goes on serving"
    );
    abandoned();
}

/// Whether a `/proc/<pid>/stat` line is a process's that has not exited: `pid (name) S ...`,
/// the state after the name's last `)` (the name may hold anything), neither zombie (`Z`)
/// nor dead (`X`).
pub(super) fn stat_says_running(stat: &str) -> bool {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_none_or(|state| !matches!(state, 'Z' | 'X'))
}

/// Whether process `pid` runs: it exists and has not exited (a zombie, not yet reaped by its
/// parent, has).
pub(super) fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_says_running(&stat),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // No /proc: whether a signal could be sent to it.
        Err(_) => {
            let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            else {
                return true;
            };
            !matches!(
                rustix::process::test_kill_process(pid),
                Err(rustix::io::Errno::SRCH)
            )
        }
    }
}
