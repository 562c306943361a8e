//! The admin API: binding changes over HTTP, for a provisioning pipeline or an operator's
//! tooling, on a listener of its own (`[admin_api] listen`).
//!
//! It is the `nexus-edge tenant` commands' other door: the same store, the same checks
//! ([`crate::admin_input`]), the same atomic, audited writes, with the caller's token naming
//! the actor. Every request needs a bearer token from the tokens file ([`tokens`]), read at
//! every request. What a request asks for is read by [`route`]; what it gets is said by
//! [`reply`]; the work against the store is in `exec`.
//!
//! Each connection serves one request (answered `Connection: close`), sends 1 MiB of body
//! at most, and lives [`ADMIN_CONNECTION_LIFETIME`] at most; [`MAX_ADMIN_CONNECTIONS`] are
//! open at once.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::store::Store;

mod exec;
pub mod reply;
pub mod route;
pub mod tokens;

#[cfg(test)]
mod tests;

use reply::{Code, Reply};

/// Admin API connections open at once: a pipeline and a few operators need a handful.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// The longest an admin connection lives: a write's `wait` (30 s at most, lengthened to the
/// slowest replica's heartbeat interval and a second, 61 s at most) and the write itself.
pub const ADMIN_CONNECTION_LIFETIME: Duration = Duration::from_secs(90);

/// The largest request body: a binding record is a few hundred bytes; one with a thousand
/// custom domains is far below this.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The room a request's header takes beside its body, within a connection's read budget.
const HEADER_ROOM: usize = 64 * 1024;

/// What an admin API listener takes ([`crate::ops::Capped`]): `max` connections
/// ([`MAX_ADMIN_CONNECTIONS`], fewer when the open-file limit holds no more).
pub fn caps(max: usize) -> crate::ops::Caps {
    crate::ops::Caps {
        max,
        lifetime: ADMIN_CONNECTION_LIFETIME,
        read_bytes: MAX_BODY_BYTES + HEADER_ROOM,
        refused_warning: "admin API connection closed unanswered: its connections are all open \
                          (counted by admin_api_connections_refused_total)",
    }
}

/// The admin API over a binding store.
#[derive(Debug)]
pub struct AdminApi {
    store: Store,
    tokens_file: PathBuf,
    /// A record's custom domains are checked against them, as `tenant put` checks them.
    base_domains: Vec<String>,
}

impl AdminApi {
    /// The API writing to `store`, accepting the tokens `tokens_file` lists.
    pub fn new(store: Store, tokens_file: PathBuf, base_domains: Vec<String>) -> Self {
        Self {
            store,
            tokens_file,
            base_domains,
        }
    }

    async fn handle(&self, session: &mut ServerSession) -> Reply {
        // Read at every request: a token taken out stops working at once.
        let tokens = match tokens::Tokens::read(&self.tokens_file) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "admin API request refused: the tokens file cannot be used");
                return Reply::error(
                    Code::TokensUnusable,
                    "the admin API's tokens file cannot be used; the router's log says why",
                );
            }
        };
        let actor = match authenticate(session.req_header(), &tokens) {
            Some(name) => name.to_owned(),
            None => {
                tracing::info!(
                    peer = ?session.client_addr(),
                    "admin API request refused: no token the tokens file lists"
                );
                return Reply::error(
                    Code::Unauthorized,
                    "a bearer token the admin API's tokens file lists is required",
                );
            }
        };
        let req = session.req_header();
        // RFC 9112 §3.2, as the ops listener.
        if req.headers.get(http::header::HOST).is_none() && req.version >= http::Version::HTTP_11 {
            return Reply::error(Code::BadRequest, "a Host header is required");
        }
        let found = match route::route(&req.method, req.uri.path()) {
            Ok(r) => r,
            Err(route::RouteError::NotFound) => {
                return Reply::error(Code::NotFound, "no such resource")
            }
            Err(route::RouteError::MethodNotAllowed(allow)) => {
                return Reply::error(Code::MethodNotAllowed, "method not allowed").allow(allow)
            }
            Err(route::RouteError::BadTenant(e)) => {
                return Reply::error(Code::BadRequest, format!("the path's tenant id: {e}"))
            }
        };
        let query = match route::query(&found, req.uri.query()) {
            Ok(q) => q,
            Err(e) => return Reply::error(Code::BadRequest, e),
        };
        let ctx = exec::Request {
            store: &self.store,
            base_domains: &self.base_domains,
            actor,
        };
        if !found.writes() {
            return ctx.read(found).await;
        }
        let write = match exec::WriteHead::read(req, query) {
            Ok(w) => w,
            Err(reply) => return *reply,
        };
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(reply) => return *reply,
        };
        ctx.write(found, write, &body).await
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // One request a connection, as on the ops listener: nothing pipelined is lost unseen.
        session.set_keepalive(None);
        self.handle(session).await.into_response()
    }
}

/// The name of the token the request carries (`Authorization: Bearer TOKEN`, one such
/// header), if the tokens file lists it.
fn authenticate<'t>(
    req: &pingora::http::RequestHeader,
    tokens: &'t tokens::Tokens,
) -> Option<&'t str> {
    let mut values = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.len() > tokens::MAX_TOKEN_BYTES
    {
        return None;
    }
    tokens.who(token)
}

/// The request's body, [`MAX_BODY_BYTES`] at most. A length declared past it is refused
/// before any of it is read; a client that asked to (`Expect: 100-continue`) is told to send
/// it once the request is known to be acceptable.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Box<Reply>> {
    let too_large = || {
        Box::new(Reply::error(
            Code::PayloadTooLarge,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        ))
    };
    let req = session.req_header();
    let declared = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let expects = req
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects && session.write_continue_response().await.is_err() {
        return Err(Box::new(Reply::error(
            Code::BadRequest,
            "the connection failed before the body was sent",
        )));
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(Box::new(Reply::error(
                    Code::BadRequest,
                    format!("the request body cannot be read: {}", e.etype().as_str()),
                )))
            }
        }
    }
}
