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

/// The running router's listening sockets, taken; the handover is complete once
/// [`Taken::confirm`] returns.
#[derive(Debug)]
pub struct Taken {
    conn: UnixStream,
    /// The running router's process id.
    pub from_pid: u32,
    /// The sockets by the address each was configured as.
    pub sockets: HashMap<String, TcpListener>,
}

/// Asks the router answering at `path` for its listening sockets.
pub fn take(path: &Path) -> Result<Taken, HandoverError> {
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
        from_pid,
        sockets,
    })
}

impl Taken {
    /// Tells the running router this process serves on the sockets, and waits for it to say
    /// it drains. An error means it may still be accepting: this process must not stay.
    pub fn confirm(mut self) -> Result<u32, HandoverError> {
        wire::write_line(&mut self.conn, wire::SERVING)
            .map_err(HandoverError::io("tell the running router this one serves"))?;
        let answer = wire::read_line(&mut self.conn)?;
        if answer != wire::DRAINING {
            return Err(HandoverError::Protocol(format!(
                "the running router answered {:?}, not that it drains",
                answer.chars().take(80).collect::<String>()
            )));
        }
        Ok(self.from_pid)
    }
}

/// The successor's last step, run once its listeners accept (a Pingora background service
/// that depends on them): confirms the handover, then offers the listeners in turn at the
/// same path. A handover that cannot be confirmed ends this process: the old router may
/// still accept on the sockets, and goes on serving alone.
pub struct Confirm {
    pending: std::sync::Mutex<Option<Pending>>,
}

struct Pending {
    taken: Taken,
    path: std::path::PathBuf,
    offered: super::Offered,
    notice: Box<dyn FnOnce(u32) + Send>,
}

impl Confirm {
    /// Confirms `taken`, then offers `offered` at `path`, calling `notice` when this router's
    /// own successor serves.
    pub fn new(
        taken: Taken,
        path: std::path::PathBuf,
        offered: super::Offered,
        notice: impl FnOnce(u32) + Send + 'static,
    ) -> Self {
        Self {
            pending: std::sync::Mutex::new(Some(Pending {
                taken,
                path,
                offered,
                notice: Box::new(notice),
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
            notice,
        }) = pending
        else {
            return;
        };
        // systemd must know the main process before the predecessor may exit.
        let predecessor = taken.from_pid;
        crate::systemd::main_process_is(std::process::id());
        let confirmed = tokio::task::spawn_blocking(move || {
            let predecessor = taken.confirm()?;
            Ok::<_, HandoverError>((predecessor, super::Offer::replace(&path)))
        })
        .await;
        if !matches!(confirmed, Ok(Ok(_))) {
            crate::systemd::main_process_is(predecessor);
        }
        match confirmed {
            Ok(Ok((predecessor, offer))) => {
                tracing::info!(
                    predecessor_pid = predecessor,
                    "took the listeners over; the predecessor drains"
                );
                let opened = offer
                    .map_err(|e| e.to_string())
                    .and_then(|offer| offer.open(offered, notice).map_err(|e| e.to_string()));
                if let Err(e) = opened {
                    tracing::warn!(error = %e, "the listeners are not offered to a successor: `serve --upgrade` will not find this router");
                }
            }
            Ok(Err(e)) => abandon(&e.to_string()),
            Err(e) => abandon(&e.to_string()),
        }
    }
}

/// Ends a successor whose handover was not confirmed.
fn abandon(why: &str) {
    tracing::error!(error = %why, "handover not confirmed: exiting, the running router goes on serving");
    eprintln!(
        "nexus-edge: handover not confirmed ({why}): exiting; the running router goes on serving"
    );
    std::process::exit(1);
}
