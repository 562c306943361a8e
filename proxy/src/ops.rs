//! The operations listener: `/metrics`, `/healthz`, `/readyz`, `/bindings/revision`.
//!
//! It runs on its own address (never the public one), so probes and scrapes cannot be
//! reached through a tenant's host, and it serves through the drain, until Pingora stops its
//! runtimes ([`crate::listening::Prebound::serving_through_the_drain`]): `/readyz` says
//! `draining` and `/metrics` show the drain while it lasts.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::apps::ServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::state::EdgeState;

/// Ops connections open at once. Scrapers and probes need a handful; without a cap, idle
/// connections to the ops address could take every file descriptor the process has, and
/// the public listener's accepts would fail with them. (The ops address is meant to be
/// reachable from the cluster only: whoever can fill it can fail the probes.)
pub const MAX_OPS_CONNECTIONS: usize = 256;

/// The longest an ops connection lives, whatever it does: a scrape or a probe takes
/// milliseconds, and a client that trickles its header or sits idle is let go by then.
pub const OPS_CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// How long an ops connection may wait for its next request after a response.
const OPS_KEEPALIVE_SECS: u64 = 5;

/// The ops application behind [`MAX_OPS_CONNECTIONS`] and [`OPS_CONNECTION_LIFETIME`].
pub struct Capped<A> {
    app: Arc<A>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl<A> Capped<A> {
    /// Wraps `app`.
    pub fn new(app: A) -> Self {
        Self {
            app: Arc::new(app),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_OPS_CONNECTIONS)),
        }
    }
}

#[async_trait]
impl<A> ServerApp for Capped<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Full: the connection is closed at once (dropping the stream closes it).
        let _slot = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        let serve = async {
            let mut next = Some(stream);
            while let Some(stream) = next {
                next = self.app.process_new(stream, shutdown).await;
            }
        };
        let _ = tokio::time::timeout(OPS_CONNECTION_LIFETIME, serve).await;
        None
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// Serves the operations endpoints.
#[derive(Debug)]
pub struct OpsApp {
    state: Arc<EdgeState>,
}

impl OpsApp {
    /// An ops app over the shared state.
    pub fn new(state: Arc<EdgeState>) -> Self {
        Self { state }
    }
}

fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

/// Whether the client keeps its connection open after this request (RFC 9112 §9.3): HTTP/1.1
/// unless it says `close`; HTTP/1.0 only when it says `keep-alive`.
fn asks_keepalive(req: &pingora::http::RequestHeader) -> bool {
    let mut said = None;
    for v in req.headers.get_all(http::header::CONNECTION) {
        for token in v.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                return false;
            }
            if token.eq_ignore_ascii_case(b"keep-alive") {
                said = Some(true);
            }
        }
    }
    said.unwrap_or(req.version >= http::Version::HTTP_11)
}

#[async_trait]
impl ServeHttp for OpsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if asks_keepalive(session.req_header()) {
            // Pingora's app wrapper would keep it 60 s: a scraper's next request comes
            // within seconds or on a new connection, and an idle one holds a place.
            session.set_keepalive(Some(OPS_KEEPALIVE_SECS));
        } else {
            // Pingora's app wrapper keeps every connection open for 60 s, HTTP/1.0 ones
            // too: a probe reading to the end of the stream would hang.
            session.set_keepalive(None);
        }
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            let mut resp = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"method not allowed: GET or HEAD\n".to_vec(),
            );
            resp.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            // Whatever body the request carried was not read: the connection cannot be reused.
            session.set_keepalive(None);
            return resp;
        }
        let path = session.req_header().uri.path().to_owned();
        let s = &self.state;
        match path.as_str() {
            "/metrics" => {
                s.metrics.mirror_auth(&s.auth);
                text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    s.metrics.render(&s.bindings, &s.sync_health),
                )
            }
            "/healthz" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                // Ready once a table is being served, until a shutdown begins. A store outage
                // does not make the router unready: it keeps serving the last table
                // (fail-static).
                let table = s.bindings.load();
                let draining = s.is_draining();
                let body = serde_json::json!({
                    "bindings": table.len(),
                    "revision": table.revision().get(),
                    "store_up": s.sync_health.store_up(),
                    "last_sync_unix_ms": s.sync_health.last_sync_unix_ms(),
                    "keys": s.auth.key_count(),
                    "draining": draining,
                });
                text(
                    if draining {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    },
                    "application/json",
                    format!("{body}\n").into_bytes(),
                )
            }
            "/bindings/revision" => {
                let table = s.bindings.load();
                text(
                    StatusCode::OK,
                    "text/plain",
                    format!("{}\n", table.revision().get()).into_bytes(),
                )
            }
            _ => text(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
