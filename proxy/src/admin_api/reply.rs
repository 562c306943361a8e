//! What the admin API answers: a JSON body, its status, and for a refusal an error code a
//! script can match on beside a message a person can read.

use http::{HeaderValue, Response, StatusCode};
use nexus_binding_store::AdminError;

/// Every `outcome` label of `admin_api_requests_total`: the answers' and the refusals'.
pub const OUTCOMES: [&str; 13] = [
    "ok",
    "not_confirmed",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "bad_request",
    "payload_too_large",
    "precondition_failed",
    "conflict",
    "unavailable",
    "tokens_unusable",
    "internal",
    "outcome_unknown",
];

/// The kinds of refusal, each with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 401: no token, or one the tokens file does not list.
    Unauthorized,
    /// 404: no such resource, or no such tenant.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 400: the request is malformed, or what it asks is refused by the checks.
    BadRequest,
    /// 413: a body past [`super::MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// 412: `If-Match` / `If-None-Match` did not hold: someone changed the tenant first.
    PreconditionFailed,
    /// 409: the store's state refuses the change (a custom domain another tenant holds).
    Conflict,
    /// 503: the store cannot be reached, or looks wiped and waits for a restore.
    Unavailable,
    /// 503: the tokens file cannot be read or holds a mistake.
    TokensUnusable,
    /// 500: the store's data is damaged, or the router failed.
    Internal,
    /// 504: the write was sent to the store and no answer came: it may have been made. The
    /// tenant's history says whether it was; retrying blindly may make it twice.
    OutcomeUnknown,
}

impl Code {
    fn status(self) -> StatusCode {
        match self {
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Code::Conflict => StatusCode::CONFLICT,
            Code::Unavailable | Code::TokensUnusable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::OutcomeUnknown => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `error` member of the body.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthorized => "unauthorized",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::BadRequest => "bad_request",
            Code::PayloadTooLarge => "payload_too_large",
            Code::PreconditionFailed => "precondition_failed",
            Code::Conflict => "conflict",
            Code::Unavailable => "unavailable",
            Code::TokensUnusable => "tokens_unusable",
            Code::Internal => "internal",
            Code::OutcomeUnknown => "outcome_unknown",
        }
    }

    /// The refusal a store error is.
    pub fn of(e: &AdminError) -> Code {
        match e {
            AdminError::NotFound(_) => Code::NotFound,
            AdminError::Conflict { .. } | AdminError::Exists { .. } => Code::PreconditionFailed,
            AdminError::Invalid { .. } => Code::Conflict,
            AdminError::Unanswered(_) => Code::OutcomeUnknown,
            AdminError::Unavailable(_)
            | AdminError::Wiped { .. }
            | AdminError::WipedRead { .. }
            | AdminError::FileLost { .. }
            | AdminError::StaleRestore { .. } => Code::Unavailable,
            _ => Code::Internal,
        }
    }
}

/// One answer.
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    /// Its `outcome` label (one of [`OUTCOMES`]).
    outcome: &'static str,
    /// The JSON document, serialized as it was made: a listing of every binding goes from
    /// the store's records to bytes without a tree of values between.
    body: Vec<u8>,
    headers: Vec<(http::header::HeaderName, HeaderValue)>,
}

impl Reply {
    /// `status` with `body`: a request done (200, 201), or a write whose reach across the
    /// fleet is not confirmed (202).
    pub fn json(status: StatusCode, body: serde_json::Value) -> Self {
        Self::serialized(status, &body)
    }

    /// As [`Reply::json`], of any document that serializes (a type's own `Serialize`).
    pub fn serialized(status: StatusCode, body: &impl serde::Serialize) -> Self {
        let mut body = match serde_json::to_vec(body) {
            Ok(b) => b,
            // Not from a `Value`, nor from the store's records: said, never a 200 with no
            // document.
            Err(e) if status != StatusCode::INTERNAL_SERVER_ERROR => {
                return Self::error(
                    Code::Internal,
                    format!("the answer could not be written: {e}"),
                )
            }
            Err(_) => b"{\"error\": \"internal\"}".to_vec(),
        };
        body.push(b'\n');
        Self {
            status,
            outcome: if status == StatusCode::ACCEPTED {
                "not_confirmed"
            } else {
                "ok"
            },
            body,
            headers: Vec::new(),
        }
    }

    /// A refusal: `{"error": code, "message": message}`.
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        let mut reply = Self::json(
            code.status(),
            serde_json::json!({"error": code.as_str(), "message": message.into()}),
        );
        reply.outcome = code.as_str();
        match code {
            // RFC 6750 §3: a 401 says which scheme it wants.
            Code::Unauthorized => reply.header(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"nexus-edge admin\""),
            ),
            _ => reply,
        }
    }

    /// A store error, in its own words.
    pub fn store_error(e: &AdminError) -> Self {
        Self::error(Code::of(e), e.to_string())
    }

    /// With `Allow` (a 405).
    pub fn allow(self, methods: &'static str) -> Self {
        self.header(http::header::ALLOW, HeaderValue::from_static(methods))
    }

    /// With `ETag: "revision"`, the tag `If-Match` takes back. A record without a revision
    /// (written by hand, read as revision 0) gets none: no `If-Match` can name it, and its
    /// first write gives it one.
    pub fn etag(self, revision: u64) -> Self {
        if revision == 0 {
            return self;
        }
        match HeaderValue::from_str(&format!("\"{revision}\"")) {
            Ok(v) => self.header(http::header::ETAG, v),
            Err(_) => self,
        }
    }

    fn header(mut self, name: http::header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Its `outcome` label.
    pub fn outcome(&self) -> &'static str {
        self.outcome
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<Vec<u8>> {
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Answers hold bindings and audit entries: no cache keeps them.
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        for (name, value) in self.headers {
            h.insert(name, value);
        }
        let len = resp.body().len();
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        resp
    }
}
