//! Real HTTP (or HTTPS) instances for tests, on `127.0.0.1:0`, stopped on drop.
//!
//! Every response is JSON naming the instance and echoing the request line, headers and body
//! (read by its length or its chunks), so a test sees exactly which instance got a request and
//! what the router sent it. Paths:
//! - `/slow/<ms>`: answers after `<ms>` milliseconds (in-flight requests across a rebind,
//!   upstream timeouts);
//! - `/no-length`: a `200` whose body ends with the connection (no length, not chunked);
//! - `/hop-by-hop`: a `200` with `Keep-Alive`, `Proxy-Connection` and a field its
//!   `Connection` names;
//! - `…/own-cors`: a `200` with the instance's own `Access-Control-*` fields (any origin,
//!   with credentials);
//! - `…/own-xfo`: a `200` with `X-Frame-Options: SAMEORIGIN`;
//! - `/no-content`: a `204` that (wrongly) carries `content-length: 5` and no body;
//! - `/cut/<n>`: announces `<n>` bytes more than it sends, then closes (an instance that
//!   dies mid-response); `/cut-chunked`: one chunk of a chunked body, then closes;
//! - `…/close-before-answer`: reads the request and closes without answering;
//! - a request with `Upgrade: websocket`: answers `101` and then echoes bytes back; under
//!   a path ending `/late/<ms>`, each after `<ms>` of silence.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::tls::TlsAcceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::loopback::LoopbackServer;

/// A running test instance.
pub struct Backend {
    /// Name reported in every response.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    scheme: &'static str,
    hits: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
    server_names: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    _server: LoopbackServer,
}

impl Backend {
    /// Starts an instance called `name`.
    pub fn start(name: &str) -> Backend {
        Self::start_with(name, None)
    }

    /// Starts an instance called `name` that speaks HTTPS only, with the certificate chain
    /// and key in the PEM files `cert` and `key`. A connection whose TLS handshake fails is
    /// closed without reading a request.
    pub fn start_tls(name: &str, cert: &Path, key: &Path) -> Backend {
        Self::start_with(name, Some(crate::tls::acceptor(cert, key)))
    }

    /// Plain HTTP without `tls`; with it, HTTPS only, recording each connection's SNI.
    fn start_with(name: &str, tls: Option<TlsAcceptor>) -> Backend {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let hits = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(0));
        let server_names: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
        let (owned, counter, accepted, names) = (
            name.to_owned(),
            Arc::clone(&hits),
            Arc::clone(&connections),
            Arc::clone(&server_names),
        );
        let ended = Arc::clone(&closed);
        let server = LoopbackServer::start(move |stream| {
            accepted.fetch_add(1, Ordering::SeqCst);
            let (name, hits, names, tls, ended) = (
                owned.clone(),
                Arc::clone(&counter),
                Arc::clone(&names),
                tls.clone(),
                Arc::clone(&ended),
            );
            async move {
                match tls {
                    None => {
                        let _ = serve_conn(stream, &name, &hits).await;
                    }
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            let sni = tls.get_ref().1.server_name().map(str::to_owned);
                            names.lock().unwrap().push(sni);
                            let _ = serve_conn(tls, &name, &hits).await;
                        }
                    }
                }
                ended.fetch_add(1, Ordering::SeqCst);
            }
        });
        Backend {
            name: name.to_owned(),
            addr: server.addr,
            scheme,
            hits,
            connections,
            closed,
            server_names,
            _server: server,
        }
    }

    /// `http://addr` (`https://` for a TLS instance).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections ended so far (closed by the router, or by the instance after answering).
    pub fn closed(&self) -> u64 {
        self.closed.load(Ordering::SeqCst)
    }

    /// The server name (SNI) of every TLS connection accepted so far, in order; `None` for a
    /// client that sent none.
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.server_names.lock().unwrap().clone()
    }
}

async fn serve_conn<S>(mut stream: S, name: &str, hits: &AtomicU64) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    loop {
        // One request head at a time (keep-alive supported, request bodies read by length or
        // by chunks).
        let Some(head_end) = read_to(&mut stream, &mut buf, b"\r\n\r\n").await? else {
            return Ok(());
        };
        hits.fetch_add(1, Ordering::SeqCst);
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body_bytes = None;
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let Some(body) = read_chunked(&mut stream, &mut buf).await? else {
                return Ok(());
            };
            body_bytes = Some(String::from_utf8_lossy(&body).into_owned());
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if !fill(&mut stream, &mut buf, len).await? {
                return Ok(());
            }
            body_bytes = Some(String::from_utf8_lossy(&buf[..len]).into_owned());
            buf.drain(..len);
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        if let Some(ms) = path
            .strip_prefix("/slow/")
            .and_then(|m| m.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nx-instance: {name}\r\n\r\n"
            );
            stream.write_all(resp.as_bytes()).await?;
            if !buf.is_empty() {
                stream.write_all(&buf).await?;
            }
            let (mut r, mut w) = tokio::io::split(stream);
            // `…/late/<ms>`: each piece is echoed only after `<ms>` of silence (an instance
            // slower to answer than a read timeout).
            let late = path
                .rsplit_once("/late/")
                .and_then(|(_, ms)| ms.parse::<u64>().ok());
            match late {
                None => {
                    tokio::io::copy(&mut r, &mut w).await?;
                }
                Some(ms) => {
                    let mut piece = [0u8; 4096];
                    loop {
                        let n = r.read(&mut piece).await?;
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        w.write_all(&piece[..n]).await?;
                    }
                }
            }
            return Ok(());
        }
        let body = serde_json::json!({
            "instance": name,
            "request_line": request_line,
            "path": path,
            "headers": headers.iter().map(|(k, v)| serde_json::json!([k, v])).collect::<Vec<_>>(),
            "body": body_bytes,
        })
        .to_string();
        // `/big/N` (under any prefix): N bytes of body, written as fast as the router takes
        // them.
        if let Some(n) = path
            .rsplit_once("/big/")
            .and_then(|(_, n)| n.parse::<usize>().ok())
        {
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\nx-instance: {name}\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len());
                stream.write_all(&chunk[..k]).await?;
                left -= k;
            }
            continue;
        }
        // A `100 Continue`, then nothing until the router gives up on it and closes.
        if path.ends_with("/continue-then-stall") {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            return Ok(());
        }
        // A `103 Early Hints` before the answer.
        if path.ends_with("/early-hints") {
            stream
                .write_all(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n")
                .await?;
        }
        if path.starts_with("/bad-header") {
            // A response header that does not parse, with a cookie the router must not log.
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nset-cookie: sid=instance-secret-cookie\r\nno colon here\r\n\r\n")
                .await?;
            return Ok(());
        }
        if path.ends_with("/close-before-answer") {
            // Reads the request, then closes without a byte of answer (an instance that
            // crashed on it, or closed an idle keep-alive connection as the request came).
            return Ok(());
        }
        if path == "/no-length" {
            let resp =
                format!("HTTP/1.1 200 OK\r\nconnection: close\r\nx-instance: {name}\r\n\r\n{body}");
            stream.write_all(resp.as_bytes()).await?;
            return Ok(());
        }
        if path == "/hop-by-hop" {
            // Fields for the instance's own connection, one of them named by `Connection`.
            let resp = format!(
                "HTTP/1.1 200 OK\r\nconnection: x-internal\r\nx-internal: secret\r\n\
                 keep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nx-app: kept\r\n\
                 x-instance: {name}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(resp.as_bytes()).await?;
            continue;
        }
        if path.ends_with("/own-xfo") {
            // An instance that keeps its pages out of other origins' frames itself.
            let resp = format!(
                "HTTP/1.1 200 OK\r\nx-frame-options: SAMEORIGIN\r\nx-instance: {name}\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(resp.as_bytes()).await?;
            continue;
        }
        if path.ends_with("/own-cors") {
            // An instance answering CORS itself, for every page.
            let resp = format!(
                "HTTP/1.1 200 OK\r\naccess-control-allow-origin: *\r\n\
                 access-control-allow-credentials: true\r\n\
                 access-control-expose-headers: x-secret\r\nvary: Accept-Encoding\r\n\
                 x-instance: {name}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(resp.as_bytes()).await?;
            continue;
        }
        if path == "/no-content" {
            // Framing fields a 204 must not carry (RFC 9110 §8.6, RFC 9112 §6.1).
            let resp = format!(
                "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\nx-instance: {name}\r\n\r\n"
            );
            stream.write_all(resp.as_bytes()).await?;
            continue;
        }
        if path == "/cut-chunked" {
            let resp = format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-instance: {name}\r\n\r\n{:x}\r\n{body}\r\n",
                body.len()
            );
            stream.write_all(resp.as_bytes()).await?;
            return Ok(());
        }
        let missing = path
            .strip_prefix("/cut/")
            .and_then(|n| n.parse::<usize>().ok());
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-instance: {name}\r\n\r\n{body}",
            body.len() + missing.unwrap_or(0)
        );
        stream.write_all(resp.as_bytes()).await?;
        if missing.is_some() {
            return Ok(());
        }
    }
}

/// Reads until `buf` holds `end`; its position, or `None` if the connection ended first.
pub(crate) async fn read_to<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    end: &[u8],
) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(i) = buf.windows(end.len()).position(|w| w == end) {
            return Ok(Some(i));
        }
        if !read_more(stream, buf).await? {
            return Ok(None);
        }
    }
}

/// Reads until `buf` holds at least `len` bytes; false if the connection ended first.
async fn fill<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    len: usize,
) -> std::io::Result<bool> {
    while buf.len() < len {
        if !read_more(stream, buf).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// A chunked body (RFC 9112 §7.1), trailers skipped; `None` if the connection ended first.
async fn read_chunked<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = read_to(stream, buf, b"\r\n").await? else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        buf.drain(..line_end + 2);
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "chunk size"))?;
        if size == 0 {
            // Trailer lines, up to the empty one.
            loop {
                let Some(end) = read_to(stream, buf, b"\r\n").await? else {
                    return Ok(None);
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Ok(Some(body));
                }
            }
        }
        if !fill(stream, buf, size + 2).await? {
            return Ok(None);
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// All values of a header the backend received, from its JSON echo.
pub fn echoed_header(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter(|h| h[0].as_str() == Some(name))
                .filter_map(|h| h[1].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
