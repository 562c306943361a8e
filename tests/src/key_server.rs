//! An identity provider's key set endpoint for tests: a real HTTP (or HTTPS) server on
//! `127.0.0.1:0` answering every request with the answer the test sets, counting requests,
//! stopped on drop. Each answer closes its connection. A `200` answer with an `etag` is
//! answered `304 Not Modified` (its other fields, no body) to a request whose
//! `If-None-Match` names that tag, as a provider's server does.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora::tls::TlsAcceptor;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::loopback::LoopbackServer;

/// What the endpoint answers.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// More header fields (`Content-Length` is added, or `Transfer-Encoding: chunked`).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Send the body in chunks of this many bytes (chunked coding) instead of by length.
    pub chunked: Option<usize>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Answer {
    /// `200` with `jwks` as JSON.
    pub fn keys(jwks: &serde_json::Value) -> Answer {
        Answer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: jwks.to_string().into_bytes(),
            chunked: None,
            delay: Duration::ZERO,
        }
    }

    /// `status` with a short text body.
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: b"no keys here\n".to_vec(),
            chunked: None,
            delay: Duration::ZERO,
        }
    }

    /// The same answer with one more header field.
    pub fn with_header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A running key set endpoint.
pub struct KeyServer {
    /// `http://127.0.0.1:port/.well-known/jwks.json` (`https://localhost:…` for TLS).
    pub url: String,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicU64>,
    paths: Arc<Mutex<Vec<String>>>,
    last: Arc<Mutex<Option<Instant>>>,
    not_modified: Arc<AtomicU64>,
    _server: LoopbackServer,
}

impl KeyServer {
    /// Plain HTTP on loopback, answering `answer`.
    pub fn start(answer: Answer) -> KeyServer {
        Self::start_with(answer, None)
    }

    /// HTTPS with the certificate chain and key in the PEM files `cert` and `key`, whose
    /// names must include `localhost`.
    pub fn start_tls(answer: Answer, cert: &Path, key: &Path) -> KeyServer {
        Self::start_with(answer, Some(crate::tls::acceptor(cert, key)))
    }

    fn start_with(answer: Answer, tls: Option<TlsAcceptor>) -> KeyServer {
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicU64::new(0));
        let paths: Arc<Mutex<Vec<String>>> = Arc::default();
        let last: Arc<Mutex<Option<Instant>>> = Arc::default();
        let not_modified = Arc::new(AtomicU64::new(0));
        let seen = Seen {
            requests: Arc::clone(&requests),
            paths: Arc::clone(&paths),
            last: Arc::clone(&last),
            not_modified: Arc::clone(&not_modified),
        };
        let (a, t) = (Arc::clone(&answer), tls.clone());
        let server = LoopbackServer::start(move |stream| {
            let (a, seen, t) = (Arc::clone(&a), seen.clone(), t.clone());
            async move {
                match t {
                    None => {
                        let _ = serve(stream, &a, &seen).await;
                    }
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            let _ = serve(tls, &a, &seen).await;
                        }
                    }
                }
            }
        });
        let url = match tls {
            None => format!("http://{}/.well-known/jwks.json", server.addr),
            Some(_) => format!(
                "https://localhost:{}/.well-known/jwks.json",
                server.addr.port()
            ),
        };
        KeyServer {
            url,
            answer,
            requests,
            paths,
            last,
            not_modified,
            _server: server,
        }
    }

    /// Answers `answer` from now on.
    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// Requests answered (or being answered) so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// How long since the last request came (forever: none did).
    pub fn since_last_request(&self) -> Duration {
        self.last
            .lock()
            .unwrap()
            .map_or(Duration::MAX, |t| t.elapsed())
    }

    /// Requests answered `304 Not Modified` so far.
    pub fn not_modified(&self) -> u64 {
        self.not_modified.load(Ordering::SeqCst)
    }

    /// Each request's target, in order.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

/// What the server records of the requests it gets.
#[derive(Clone)]
struct Seen {
    requests: Arc<AtomicU64>,
    paths: Arc<Mutex<Vec<String>>>,
    last: Arc<Mutex<Option<Instant>>>,
    not_modified: Arc<AtomicU64>,
}

/// Reads one request head and answers it; the connection then closes.
async fn serve<S>(mut stream: S, answer: &Mutex<Answer>, seen: &Seen) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    if crate::backend::read_to(&mut stream, &mut head, b"\r\n\r\n")
        .await?
        .is_none()
    {
        return Ok(());
    }
    *seen.last.lock().unwrap() = Some(Instant::now());
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&head);
    let target = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    seen.paths.lock().unwrap().push(target);
    let mut a = answer.lock().unwrap().clone();
    let asked = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("if-none-match")
            .then(|| value.trim().to_owned())
    });
    let tag = a
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.clone());
    if a.status == 200 && asked.is_some() && asked == tag {
        seen.not_modified.fetch_add(1, Ordering::SeqCst);
        a.status = 304;
        a.body.clear();
    }
    // The server's own behaviour (a slow provider, as `Backend`'s `/slow/<ms>`), not a test
    // waiting for something.
    tokio::time::sleep(a.delay).await;
    let mut out = format!("HTTP/1.1 {} Answer\r\nconnection: close\r\n", a.status);
    for (n, v) in &a.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    match a.chunked {
        None => {
            out.push_str(&format!("content-length: {}\r\n\r\n", a.body.len()));
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&a.body).await?;
        }
        Some(size) => {
            out.push_str("transfer-encoding: chunked\r\n\r\n");
            stream.write_all(out.as_bytes()).await?;
            for piece in a.body.chunks(size.max(1)) {
                stream
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                stream.write_all(piece).await?;
                stream.write_all(b"\r\n").await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
    }
    stream.flush().await?;
    stream.shutdown().await
}
