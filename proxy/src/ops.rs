//! The operations listener: `/metrics`, `/healthz`, `/readyz`, `/bindings/revision`.
//!
//! It runs on its own address (never the public one), so probes and scrapes cannot be
//! reached through a tenant's host.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::state::EdgeState;

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

#[async_trait]
impl ServeHttp for OpsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        let s = &self.state;
        match path.as_str() {
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                s.metrics.render(&s.bindings, &s.sync_health),
            ),
            "/healthz" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                // Ready once a table is being served. A store outage does not make the router
                // unready: it keeps serving the last table (fail-static).
                let table = s.bindings.load();
                let body = serde_json::json!({
                    "bindings": table.len(),
                    "revision": table.revision().get(),
                    "store_up": s.sync_health.store_up(),
                    "last_sync_unix_ms": s.sync_health.last_sync_unix_ms(),
                    "keys": s.auth.key_count(),
                });
                text(
                    StatusCode::OK,
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
