//! An instance that speaks raw TCP: it records every byte each connection received, exactly,
//! and answers each request it reads with the bytes a test scripts, however wrong they are
//! (two lengths, a transfer coding the router does not implement, a `101` nobody asked for).
//! What the router sends an instance, and does with an instance's bad answer, is seen on the
//! wire.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::loopback::LoopbackServer;

/// The bytes each connection received, in the order the connections were accepted.
type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// The bytes a raw instance answers a request with, and whether it then closes the connection
/// (the end of a body that has no length).
pub struct Answer {
    /// Written as they are.
    pub bytes: Vec<u8>,
    /// Close the connection once they are written.
    pub then_close: bool,
    /// Reset the connection (RST, not FIN) once they are written: an instance that crashed.
    pub then_reset: bool,
}

impl Answer {
    /// `bytes`, the connection kept open for the next request.
    pub fn keep(bytes: &str) -> Answer {
        Answer {
            bytes: bytes.as_bytes().to_vec(),
            then_close: false,
            then_reset: false,
        }
    }

    /// `bytes`, then the connection closed.
    pub fn close(bytes: &str) -> Answer {
        Answer {
            then_close: true,
            ..Answer::keep(bytes)
        }
    }

    /// `bytes`, then the connection reset.
    pub fn reset(bytes: &str) -> Answer {
        Answer {
            then_reset: true,
            ..Answer::keep(bytes)
        }
    }
}

/// A running raw instance, stopped on drop.
pub struct RawInstance {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Received,
    _server: LoopbackServer,
}

impl RawInstance {
    /// Starts an instance that answers each request with `reply(head)`, where `head` is the
    /// request's head as received (without its final blank line). A request's body is read
    /// by its `Content-Length` or up to the last chunk before it is answered.
    pub fn start(reply: impl Fn(&str) -> Answer + Send + Sync + 'static) -> RawInstance {
        Self::start_framing(reply, true)
    }

    /// [`RawInstance::start`] for a server that implements no chunked request bodies, as
    /// uWSGI's `--http11-socket` and Thin: a request's body is its `Content-Length`, or none,
    /// and the bytes after its head are the next request.
    pub fn start_without_chunked(
        reply: impl Fn(&str) -> Answer + Send + Sync + 'static,
    ) -> RawInstance {
        Self::start_framing(reply, false)
    }

    fn start_framing(
        reply: impl Fn(&str) -> Answer + Send + Sync + 'static,
        chunked: bool,
    ) -> RawInstance {
        let received: Received = Arc::default();
        let (log, reply) = (Arc::clone(&received), Arc::new(reply));
        let server = LoopbackServer::start(move |mut stream| {
            let (log, reply) = (Arc::clone(&log), Arc::clone(&reply));
            async move {
                let conn = {
                    let mut all = log.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                let mut pending = Vec::new();
                let mut piece = [0u8; 8192];
                loop {
                    while let Some((head, used)) = next_request(&pending, chunked) {
                        pending.drain(..used);
                        let answer = reply(&head);
                        if stream.write_all(&answer.bytes).await.is_err() || answer.then_close {
                            return;
                        }
                        if answer.then_reset {
                            // Closed with a zero linger: the peer gets a reset.
                            let _ = stream.set_zero_linger();
                            return;
                        }
                    }
                    match stream.read(&mut piece).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            log.lock().unwrap()[conn].extend_from_slice(&piece[..n]);
                            pending.extend_from_slice(&piece[..n]);
                        }
                    }
                }
            }
        });
        RawInstance {
            addr: server.addr,
            received,
            _server: server,
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bytes every connection received so far, one entry per accepted connection.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }
}

/// The first complete request in `buf`: its head, and how many bytes it took with its body
/// (a chunked body read as none unless `chunked`).
fn next_request(buf: &[u8], chunked: bool) -> Option<(String, usize)> {
    let head_end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let body_start = head_end + 4;
    let field = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let body_len = if chunked && field("transfer-encoding").is_some() {
        find(&buf[body_start..], b"0\r\n\r\n")? + 5
    } else {
        field("content-length").map_or(Some(0), |v| v.parse().ok())?
    };
    (buf.len() >= body_start + body_len).then_some((head, body_start + body_len))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
