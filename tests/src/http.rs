//! A raw HTTP/1.1 client for tests: exact bytes out, parsed response in.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends `raw` (a complete request) and reads one response. The connection is closed after.
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(raw)?;
    read_response(&mut s)
}

/// A GET with the given host and extra headers (`Connection: close` added).
pub fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("Connection: close\r\n\r\n");
    send_raw(addr, raw.as_bytes()).unwrap_or_else(|e| panic!("GET {host}{path}: {e}"))
}

/// A GET with a bearer token.
pub fn get_with_token(addr: SocketAddr, host: &str, path: &str, token: &str) -> Response {
    get(
        addr,
        host,
        path,
        &[("Authorization", &format!("Bearer {token}"))],
    )
}

/// Reads one response (content-length, chunked, or until close). It reads in 8 KiB pieces, so
/// bytes past the response's end are lost: for responses to pipelined requests, which can
/// arrive together, use [`read_next_response`].
pub fn read_response(s: &mut TcpStream) -> std::io::Result<Response> {
    read_one(s, false)
}

/// Reads one response from any stream (a TLS one) without reading past its end, as
/// [`read_next_response`] does.
pub fn read_next_response_from(s: &mut impl Read) -> std::io::Result<Response> {
    read_one(s, true)
}

/// Reads one response from any stream (a TLS one), as [`read_response`] does.
pub fn read_response_from(s: &mut impl Read) -> std::io::Result<Response> {
    read_one(s, false)
}

/// Reads one response without reading past its end, so the next response on the connection
/// (to a pipelined request) stays to be read: the head and a chunked body are read a byte at
/// a time, a `Content-Length` body to its length.
pub fn read_next_response(s: &mut TcpStream) -> std::io::Result<Response> {
    read_one(s, true)
}

fn read_one(s: &mut impl Read, exact: bool) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // How many bytes the next read may take when `want` more are known to belong to this
    // response.
    let piece = |want: usize| if exact { want.clamp(1, 8192) } else { 8192 };
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk[..piece(1)])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before headers",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if status == 101 || status == 204 || status == 304 {
        return Ok(Response {
            status,
            headers,
            body,
        });
    }
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let n = s.read(&mut chunk[..piece(len - body.len())])?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            if let Some(done) = dechunk(&body) {
                body = done;
                break;
            }
            let n = s.read(&mut chunk[..piece(1)])?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        s.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body, or `None` if more bytes are needed.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n")?;
        let size_txt = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_txt.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if raw.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
