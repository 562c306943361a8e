//! The handover's messages on its Unix socket: three fixed lines and one JSON line that
//! carries the sockets.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use super::HandoverError;

/// The successor's request (the version is the protocol's).
pub const REQUEST: &str = "nexus-edge handover 1";
/// The successor serves on the sockets it got.
pub const SERVING: &str = "serving";
/// The old router has stopped accepting and drains.
pub const DRAINING: &str = "draining";

/// The most sockets one handover carries (a router has three listeners at most).
pub const MAX_SOCKETS: usize = 8;

/// The longest line either side reads: a message past it is not one of the handover's.
const MAX_LINE: usize = 64 * 1024;

/// The old router's answer to [`REQUEST`]; with `Listeners`, the sockets ride along.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Answer {
    /// The configured address of each socket sent, in order.
    Listeners(Vec<String>),
    /// Why no socket is sent.
    Refused(String),
}

/// Writes `line` and its newline.
pub fn write_line(conn: &mut UnixStream, line: &str) -> std::io::Result<()> {
    conn.write_all(format!("{line}\n").as_bytes())
}

/// Reads one line (without its newline), byte by byte so that nothing after it is taken.
pub fn read_line(conn: &mut UnixStream) -> Result<String, HandoverError> {
    read_first_line(conn)?
        .ok_or_else(|| HandoverError::Protocol("the other side closed the connection".to_owned()))
}

/// Like [`read_line`], but `None` when the connection is closed before its first byte.
pub fn read_first_line(conn: &mut UnixStream) -> Result<Option<String>, HandoverError> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        match conn.read(&mut byte) {
            Ok(0) if line.is_empty() => return Ok(None),
            Ok(0) => {
                return Err(HandoverError::Protocol(
                    "the other side closed the connection mid-line".to_owned(),
                ))
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= MAX_LINE => {
                return Err(HandoverError::Protocol("a line too long".to_owned()))
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HandoverError::io("read from the upgrade socket")(e)),
        }
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| HandoverError::Protocol("a line not in UTF-8".to_owned()))
}

/// Sends `answer` as one line, with `sockets` attached to its first byte.
pub fn send_answer(
    conn: &mut UnixStream,
    answer: &Answer,
    sockets: &[impl AsFd],
) -> Result<(), HandoverError> {
    let mut text = serde_json::to_vec(answer)
        .map_err(|e| HandoverError::Protocol(format!("cannot write the answer: {e}")))?;
    text.push(b'\n');
    let fds: Vec<_> = sockets.iter().map(AsFd::as_fd).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(HandoverError::Protocol(format!(
            "{} sockets do not fit in one message",
            fds.len()
        )));
    }
    let sent = loop {
        match rustix::net::sendmsg(
            &*conn,
            &[IoSlice::new(&text)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(HandoverError::io("send the sockets")(e.into())),
        }
    };
    // The sockets went with the first byte; the rest of the line, if the system took only
    // part of it, follows plainly.
    conn.write_all(&text[sent..])
        .map_err(HandoverError::io("send the sockets"))
}

/// Receives the answer line and the sockets attached to it (close-on-exec).
pub fn recv_answer(conn: &mut UnixStream) -> Result<(Answer, Vec<OwnedFd>), HandoverError> {
    let mut first = vec![0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(
            &*conn,
            &mut [IoSliceMut::new(&mut first)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(got) => break got,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(HandoverError::io("receive the sockets")(e.into())),
        }
    };
    // Taken before anything can fail: dropped, they are closed.
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(sockets) = message {
            fds.extend(sockets);
        }
    }
    if got.flags.contains(ReturnFlags::CTRUNC) {
        return Err(HandoverError::Protocol(format!(
            "more than {MAX_SOCKETS} sockets were sent"
        )));
    }
    if got.bytes == 0 {
        return Err(HandoverError::Protocol(
            "the running router closed the connection without answering".to_owned(),
        ));
    }
    let mut text = first[..got.bytes].to_vec();
    if !text.ends_with(b"\n") {
        let rest = read_line(conn)?;
        text.extend_from_slice(rest.as_bytes());
    }
    let text = text.strip_suffix(b"\n").unwrap_or(&text);
    let answer: Answer = serde_json::from_slice(text)
        .map_err(|e| HandoverError::Protocol(format!("an answer that does not parse: {e}")))?;
    Ok((answer, fds))
}
