//! What an admin API request asks for: its resource and method, its query, its
//! preconditions. Pure functions, so that every refusal is tested without a server.

use std::time::Duration;

use http::Method;
use nexus_binding_store::{IfUnchanged, Revision, TenantId};

/// What a request asks for: a read, or a write (audited, and may wait for the fleet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Changes nothing.
    Read(Read),
    /// Changes one tenant's binding.
    Write(Write),
}

/// The reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// `GET /v1/tenants`.
    List,
    /// `GET /v1/tenants/{id}`.
    Get(TenantId),
    /// `GET /v1/tenants/{id}/history`.
    History(TenantId),
    /// `GET /v1/replicas`.
    Replicas,
}

/// The writes, each of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `PUT /v1/tenants/{id}`: create or replace the record.
    Put(TenantId),
    /// `DELETE /v1/tenants/{id}`.
    Delete(TenantId),
    /// `POST /v1/tenants/{id}/rebind`.
    Rebind(TenantId),
    /// `PUT /v1/tenants/{id}/status`.
    SetStatus(TenantId),
}

impl Write {
    /// The tenant it changes.
    pub fn tenant(&self) -> &TenantId {
        match self {
            Write::Put(t) | Write::Delete(t) | Write::Rebind(t) | Write::SetStatus(t) => t,
        }
    }

    /// Its name in the log, as the audit log names the operation.
    pub fn op(&self) -> &'static str {
        match self {
            Write::Put(_) => "put",
            Write::Delete(_) => "delete",
            Write::Rebind(_) => "rebind",
            Write::SetStatus(_) => "set-status",
        }
    }
}

/// Why a request names nothing the API serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No such resource.
    NotFound,
    /// The resource is there, not for this method; the methods it takes.
    MethodNotAllowed(&'static str),
    /// The path names a tenant by an id that is not one.
    BadTenant(String),
}

/// The resource and method of a request. The path is matched as sent, segment by segment:
/// no decoding, so `%2F` or `..` in it names no resource.
pub fn route(method: &Method, path: &str) -> Result<Route, RouteError> {
    let rest = path.strip_prefix("/v1/").ok_or(RouteError::NotFound)?;
    let segments: Vec<&str> = rest.split('/').collect();
    // `/v1/tenants/` and `/v1//tenants` name nothing, rather than a tenant with no id.
    if segments.iter().any(|s| s.is_empty()) {
        return Err(RouteError::NotFound);
    }
    let tenant = |s: &str| TenantId::parse(s).map_err(|e| RouteError::BadTenant(e.to_string()));
    let allowed = |allow: &'static str| Err(RouteError::MethodNotAllowed(allow));
    match segments.as_slice() {
        ["tenants"] => match *method {
            Method::GET => Ok(Route::Read(Read::List)),
            _ => allowed("GET"),
        },
        ["tenants", id] => match *method {
            Method::GET => Ok(Route::Read(Read::Get(tenant(id)?))),
            Method::PUT => Ok(Route::Write(Write::Put(tenant(id)?))),
            Method::DELETE => Ok(Route::Write(Write::Delete(tenant(id)?))),
            _ => allowed("GET, PUT, DELETE"),
        },
        ["tenants", id, "rebind"] => match *method {
            Method::POST => Ok(Route::Write(Write::Rebind(tenant(id)?))),
            _ => allowed("POST"),
        },
        ["tenants", id, "status"] => match *method {
            Method::PUT => Ok(Route::Write(Write::SetStatus(tenant(id)?))),
            _ => allowed("PUT"),
        },
        ["tenants", id, "history"] => match *method {
            Method::GET => Ok(Route::Read(Read::History(tenant(id)?))),
            _ => allowed("GET"),
        },
        ["replicas"] => match *method {
            Method::GET => Ok(Route::Read(Read::Replicas)),
            _ => allowed("GET"),
        },
        _ => Err(RouteError::NotFound),
    }
}

/// The longest `wait` a write may ask for. A replica's heartbeat interval (up to 60 s) may
/// lengthen it, as `tenant --wait` does: only heartbeats written during the wait count.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// The shortest `wait`: shorter, it would end between two heartbeats of replicas that had
/// long applied the change.
pub const MIN_WAIT: Duration = Duration::from_secs(1);

/// A write's query: `always_write=true`, `wait=DURATION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteQuery {
    /// What a write that changes nothing does.
    pub if_unchanged: IfUnchanged,
    /// How long to wait for every live replica to apply the change (Redis only).
    pub wait: Option<Duration>,
}

/// Reads a write's query: `always_write` and `wait`, each once. Anything else is refused,
/// so that a misspelt `wiat=10s` does not pass for a wait.
pub fn write_query(query: Option<&str>) -> Result<WriteQuery, String> {
    let mut q = WriteQuery::default();
    let mut seen: Vec<&str> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if seen.contains(&name) {
            return Err(format!("query parameter {name:?} is given twice"));
        }
        seen.push(name);
        match name {
            "always_write" => {
                q.if_unchanged = match value {
                    "true" => IfUnchanged::Write,
                    "false" => IfUnchanged::Skip,
                    _ => return Err(format!("always_write={value:?}: true or false")),
                }
            }
            "wait" => {
                let d = nexus_config::parse_duration(value)
                    .map_err(|e| format!("wait={value:?}: {e}"))?;
                if !(MIN_WAIT..=MAX_WAIT).contains(&d) {
                    return Err(format!(
                        "wait={value:?}: from 1s to 30s (a replica's heartbeat interval may \
                         lengthen it)"
                    ));
                }
                q.wait = Some(d);
            }
            _ => {
                return Err(format!(
                    "unknown query parameter {name:?}: a write takes always_write and wait"
                ))
            }
        }
    }
    Ok(q)
}

/// A read takes no query: a parameter it would ignore is refused, not passed over.
pub fn read_query(query: Option<&str>) -> Result<(), String> {
    match query.unwrap_or("").split('&').find(|p| !p.is_empty()) {
        Some(pair) => Err(format!(
            "unknown query parameter {:?}: a read takes none",
            pair.split_once('=').map_or(pair, |(name, _)| name)
        )),
        None => Ok(()),
    }
}

/// A write's precondition, from `If-Match` and `If-None-Match`: the revision the tenant must
/// still have (0: none, the tenant must not exist), as `--expect-revision` says it.
///
/// An entity tag is the revision in quotes, as `GET` sends it in `ETag` (`"12"`); `*` in
/// `If-None-Match` asks for a tenant that does not exist. Anything else (a list, a weak tag,
/// `If-Match: *`) is refused: a precondition the router would read another way than the
/// client meant must not let a write through.
pub fn precondition(
    if_match: &[&[u8]],
    if_none_match: &[&[u8]],
) -> Result<Option<Revision>, String> {
    match (if_match, if_none_match) {
        ([], []) => Ok(None),
        ([tag], []) => {
            let text = std::str::from_utf8(tag).unwrap_or("").trim();
            let digits = text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    "If-Match must be one entity tag as the API sends it in ETag: the \
                     revision in quotes (\"12\")"
                        .to_owned()
                })?;
            let n: u64 = digits
                .parse()
                .map_err(|_| "If-Match: the revision is out of range".to_owned())?;
            if n == 0 {
                return Err(
                    "If-Match: \"0\" names no revision; If-None-Match: * asks for a tenant \
                     that does not exist"
                        .to_owned(),
                );
            }
            Ok(Some(Revision(n)))
        }
        ([], [star]) if star.trim_ascii() == b"*" => Ok(Some(Revision::ZERO)),
        ([], [_]) => Err("If-None-Match takes only * (the tenant must not exist)".to_owned()),
        ([_, _, ..], _) | (_, [_, _, ..]) => {
            Err("If-Match and If-None-Match may each be given once".to_owned())
        }
        (_, _) => Err("If-Match and If-None-Match cannot be given together".to_owned()),
    }
}
