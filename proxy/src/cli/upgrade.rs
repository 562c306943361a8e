//! `nexus-edge upgrade`: starts the new router (`serve --upgrade`) in the background and
//! returns once it has taken the listeners over (exit 0) or has given up (exit 1), so that a
//! deploy script, or systemd's `ExecReload=`, learns how the upgrade went.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use crate::handover::REPORT_ENV;

pub(super) fn run(config: &Path) -> ExitCode {
    let settings = match super::load_settings(Some(config)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if settings.server.upgrade_socket.is_none() {
        eprintln!(
            "nexus-edge: upgrade takes the listeners over through [server] upgrade_socket, \
             which {} does not set (the running router must have it too)",
            config.display()
        );
        return ExitCode::FAILURE;
    }
    let report = match Report::open() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nexus-edge: cannot open a socket to hear the new router on: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("nexus-edge: cannot find this program's own path: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Its own process group: a Ctrl-C meant for this command does not reach the new router,
    // which outlives it.
    let spawned = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--upgrade")
        .env(REPORT_ENV, &report.address)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("nexus-edge: cannot start the new router: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = child.id();
    loop {
        let ended = child.try_wait();
        // What it said just before it ended counts.
        let wait = match ended {
            Ok(None) => Duration::from_millis(100),
            _ => Duration::ZERO,
        };
        if report.took_over(wait) {
            println!("nexus-edge: the new router (pid {pid}) took the listeners over; the old one drains");
            return ExitCode::SUCCESS;
        }
        match ended {
            Ok(None) => {}
            Ok(Some(status)) => {
                eprintln!(
                    "nexus-edge: the new router (pid {pid}) ended ({status}) without taking the \
                     listeners over; the running router goes on serving"
                );
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("nexus-edge: cannot watch the new router (pid {pid}): {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// A datagram socket at an abstract address (no file to leave behind, a random name no one
/// else holds), where the new router says it took over.
struct Report {
    socket: UnixDatagram,
    /// `@` and the name, as `NOTIFY_SOCKET` writes an abstract address.
    address: String,
}

impl Report {
    fn open() -> std::io::Result<Self> {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("nexus-edge-upgrade-{}", uuid::Uuid::new_v4().simple());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let socket = UnixDatagram::bind_addr(&addr)?;
        Ok(Self {
            socket,
            address: format!("@{name}"),
        })
    }

    /// Whether the new router said it took over, waiting `wait` at most (not at all for
    /// zero).
    fn took_over(&self, wait: Duration) -> bool {
        let set = if wait.is_zero() {
            self.socket.set_nonblocking(true)
        } else {
            self.socket
                .set_nonblocking(false)
                .and_then(|()| self.socket.set_read_timeout(Some(wait)))
        };
        if set.is_err() {
            return false;
        }
        let mut buf = [0u8; 256];
        matches!(self.socket.recv(&mut buf), Ok(n) if buf[..n].starts_with(crate::handover::TOOK_OVER.as_bytes()))
    }
}
