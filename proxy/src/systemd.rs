//! Telling systemd (a `Type=notify` unit, which sets `NOTIFY_SOCKET`) when the router is ready,
//! and, after an upgrade, which process is now the service's main one: without that, systemd
//! would take the old router's exit for the service's end and stop its successor with it.
//!
//! The protocol is a datagram of `KEY=VALUE` lines to the socket `NOTIFY_SOCKET` names (a
//! path, or an abstract name written with a leading `@`). Without the variable, nothing is
//! sent: the router runs the same under any other supervisor.

use std::os::unix::net::UnixDatagram;

/// The service is ready: its listeners accept and everything is loaded.
pub fn ready() {
    notify("READY=1\nSTATUS=serving");
}

/// The process `pid` is the service's main one from now on. Said by the running router
/// (the main one until then) for its successor just before it lets go of the listeners, so
/// that systemd never sees the main process end; and for itself again should the successor
/// vanish at that moment.
pub fn main_process_is(pid: u32) {
    notify(&format!("MAINPID={pid}\nREADY=1\nSTATUS=serving"));
}

/// Sends `state` when `NOTIFY_SOCKET` is set; a failure is logged, never fatal.
fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&target, state) {
        tracing::warn!(error = %e, socket = ?target, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Sends `state` as one datagram to `target` (a path, or `@` and an abstract name).
pub(crate) fn send(target: &std::ffi::OsStr, state: &str) -> std::io::Result<usize> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    match target.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)
        }
        None => socket.send_to(state.as_bytes(), target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("notify.sock");
        let at_path = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        send(path.as_os_str(), "READY=1").unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 64];
        let n = at_path.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("nexus-edge-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let abstract_socket = UnixDatagram::bind_addr(&addr).unwrap_or_else(|e| panic!("{e}"));
        send(std::ffi::OsStr::new(&format!("@{name}")), "MAINPID=7")
            .unwrap_or_else(|e| panic!("{e}"));
        let n = abstract_socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], b"MAINPID=7");
    }
}
