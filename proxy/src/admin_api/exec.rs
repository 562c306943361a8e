//! The work an admin API request asks of the store: the reads, and the writes with their
//! preconditions, audit reason and wait for the fleet.

use std::time::Duration;

use http::StatusCode;
use nexus_binding_store::{
    Actor, AdminError, Applied, BindingAdmin, Mutation, Revision, TenantId, TenantStatus,
};
use serde_json::{json, Value};

use super::reply::{Code, Reply};
use super::route::{Read, Write, WriteQuery};
use crate::admin_input::{check_domains, printable, rebind, refuse_repeated_members};
use crate::store::Store;

/// One authenticated request's context: its own, so that a write can outlive its
/// connection.
pub(super) struct Request {
    pub(super) store: Store,
    pub(super) base_domains: std::sync::Arc<[String]>,
    /// The token's name: the audit entry's actor.
    pub(super) actor: String,
}

/// What a write's header says beside its route: its precondition and reason, and its query.
#[derive(Debug)]
pub(super) struct WriteHead {
    expect: Option<Revision>,
    reason: Option<String>,
    query: WriteQuery,
}

/// The header that gives a write's reason (a ticket, a migration), kept in its audit entry.
const REASON_HEADER: &str = "audit-reason";

impl WriteHead {
    /// Reads a write's precondition and reason: refused before the body is read.
    pub(super) fn read(
        req: &pingora::http::RequestHeader,
        query: WriteQuery,
    ) -> Result<Self, String> {
        let bad = |m: String| m;
        let all = |name: http::header::HeaderName| -> Vec<&[u8]> {
            req.headers
                .get_all(name)
                .iter()
                .map(http::HeaderValue::as_bytes)
                .collect()
        };
        let expect = super::route::precondition(
            &all(http::header::IF_MATCH),
            &all(http::header::IF_NONE_MATCH),
        )
        .map_err(bad)?;
        let mut reasons = req.headers.get_all(REASON_HEADER).iter();
        let reason = match (reasons.next(), reasons.next()) {
            (None, _) => None,
            (Some(_), Some(_)) => return Err(bad("Audit-Reason is given twice".to_owned())),
            (Some(v), None) => {
                let text = std::str::from_utf8(v.as_bytes())
                    .map_err(|_| bad("Audit-Reason is not UTF-8".to_owned()))?;
                // As `--reason`: kept without the blanks at its ends, checked as shown.
                let text = text.trim();
                printable("Audit-Reason", Some(text)).map_err(bad)?;
                Some(text.to_owned())
            }
        };
        Ok(Self {
            expect,
            reason,
            query,
        })
    }
}

impl Request {
    fn admin(&self) -> &dyn BindingAdmin {
        self.store.admin()
    }

    /// A read: it changes nothing.
    pub(super) async fn read(&self, read: Read) -> Reply {
        match read {
            Read::List => match self.admin().list().await {
                Ok(l) => Reply::serialized(StatusCode::OK, &Listed(&l)),
                Err(e) => Reply::store_error(&e),
            },
            Read::Get(t) => match self.admin().get(&t).await {
                Ok(Some(b)) => Reply::json(StatusCode::OK, record(&b)).etag(b.revision.get()),
                Ok(None) => Reply::store_error(&AdminError::NotFound(t)),
                Err(e) => Reply::store_error(&e),
            },
            Read::History(t) => match self.admin().history(&t).await {
                Ok(h) => Reply::json(
                    StatusCode::OK,
                    json!({"entries": h.entries, "unreadable": h.unreadable}),
                ),
                Err(e) => Reply::store_error(&e),
            },
            Read::Replicas => match &self.store {
                Store::Redis(r) => match r.replicas().await {
                    Ok(list) => Reply::json(StatusCode::OK, json!({ "replicas": list })),
                    Err(e) => Reply::store_error(&e),
                },
                Store::File(_) => Reply::error(
                    Code::NotFound,
                    "the file store has no replicas to list (the Redis store has)",
                ),
            },
        }
    }

    /// A write: `body` read into the change `route` names, applied under `head`'s
    /// precondition, then waited for when the query asks.
    pub(super) async fn write(&self, write: Write, head: WriteHead, body: &[u8]) -> Reply {
        let (tenant, op) = (write.tenant(), write.op());
        let change = match &write {
            Write::Put(t) => self.put(t, body),
            Write::Rebind(_) => rebind_change(body),
            Write::SetStatus(_) => status_change(body),
            Write::Delete(_) => no_body(body).map(|()| Mutation::Delete),
        };
        let change = match change {
            Ok(m) => m,
            Err(e) => return Reply::error(Code::BadRequest, e),
        };
        // Refused before the write, as `--wait` is: after it, a refusal would read as a
        // change not made, and be made again.
        let fleet = match (&self.store, head.query.wait) {
            (Store::Redis(r), Some(w)) => Some((r, w)),
            (Store::File(_), Some(_)) => {
                return Reply::error(
                    Code::BadRequest,
                    "wait needs the Redis store (a file store has no fleet to confirm); \
                     nothing was written",
                )
            }
            (_, None) => None,
        };
        // Redis's clock before the write: only heartbeats written since count.
        let before = match fleet {
            Some((r, _)) => r.clock_ms().await.ok(),
            None => None,
        };
        let actor = Actor {
            name: self.actor.clone(),
            reason: head.reason,
        };
        let applied = match self
            .admin()
            .apply(tenant, change, head.expect, head.query.if_unchanged, &actor)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(actor = %actor.name, tenant = %tenant, op, error = %e, "admin API change refused");
                return Reply::store_error(&e);
            }
        };
        let revision = applied.revision();
        let unchanged = matches!(applied, Applied::Unchanged(_));
        tracing::info!(
            actor = %actor.name,
            tenant = %tenant,
            op,
            revision = revision.get(),
            unchanged,
            "admin API change"
        );
        let binding = applied.binding();
        let mut body = json!({
            "binding": binding.map(record),
            "revision": revision.get(),
            "unchanged": unchanged,
        });
        let mut status = StatusCode::OK;
        if let Some((redis, asked)) = fleet {
            let wait = lengthened(asked, redis).await;
            let began = std::time::Instant::now();
            let outcome = redis
                .wait_for_revision(revision.get(), tenant.as_str(), wait, before)
                .await;
            // Written either way: 202 says its reach across the fleet is not confirmed.
            let (confirmed, o) = match outcome {
                Ok(o) => (true, o),
                Err(o) => (false, o),
            };
            if !confirmed {
                status = StatusCode::ACCEPTED;
            }
            body["wait"] = serde_json::to_value(&o).unwrap_or(Value::Null);
            body["wait"]["confirmed"] = Value::Bool(confirmed);
            // How long it waited, and the longest it would have (as asked, lengthened).
            body["wait"]["waited_ms"] = json!(began.elapsed().as_millis() as u64);
            body["wait"]["timeout_ms"] = json!(wait.as_millis() as u64);
        }
        let reply = Reply::json(status, body);
        match binding {
            Some(b) => reply.etag(b.revision.get()),
            None => reply,
        }
    }

    /// `PUT /v1/tenants/{id}`: the body is one record, of that tenant, checked as `tenant
    /// put` checks a record file.
    fn put(&self, tenant: &TenantId, body: &[u8]) -> Result<Mutation, String> {
        let value = json_body(body)?;
        if value.get("bindings").is_some() && value.get("tenant_id").is_none() {
            return Err(
                "a bindings file, not one record: `nexus-edge tenant import` imports one"
                    .to_owned(),
            );
        }
        let binding = nexus_binding_store::records::parse_record(&value)
            .map_err(|(_, m)| format!("invalid record: {m}"))?;
        if &binding.tenant_id != tenant {
            return Err(format!(
                "the record is tenant {}'s, not {tenant}'s, whose path it was sent to",
                binding.tenant_id
            ));
        }
        check_domains(&binding, &self.base_domains).map_err(|e| format!("invalid record: {e}"))?;
        Ok(Mutation::Put(Box::new(binding)))
    }
}

/// A binding as the API shows it: the record as stored (what `tenant get --json` prints).
/// `GET /v1/tenants`' document: `{"bindings": [...], "revision": N, "left_out": [...]}`,
/// each record made as it is written (a million bindings are a few hundred megabytes as
/// JSON; as a tree of values, several times that).
pub(super) struct Listed<'l>(pub(super) &'l nexus_binding_store::Listing);

impl serde::Serialize for Listed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Records<'b>(&'b [nexus_binding_store::Binding]);
        impl serde::Serialize for Records<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(nexus_binding_store::Binding::to_record))
            }
        }
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("bindings", &Records(&self.0.bindings))?;
        map.serialize_entry("revision", &self.0.revision.get())?;
        map.serialize_entry("left_out", &self.0.left_out)?;
        map.end()
    }
}

pub(super) fn record(b: &nexus_binding_store::Binding) -> Value {
    serde_json::to_value(b.to_record()).unwrap_or(Value::Null)
}

/// A body as one JSON document, refused when an object in it repeats a member name.
fn json_body(body: &[u8]) -> Result<Value, String> {
    if body.is_empty() {
        return Err("the request has no body; it needs a JSON object".to_owned());
    }
    refuse_repeated_members(body)?;
    serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))
}

/// The members of an object body, refused when it is no object or holds another member than
/// `known`: a misspelt `api_ulr` must not pass for "keep the API URL".
fn members<'v>(
    value: &'v Value,
    known: &[&str],
) -> Result<&'v serde_json::Map<String, Value>, String> {
    let object = value
        .as_object()
        .ok_or_else(|| "the body must be a JSON object".to_owned())?;
    if let Some(unknown) = object.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "unknown member {unknown:?}: it takes {}",
            known.join(", ")
        ));
    }
    Ok(object)
}

fn string_member<'v>(
    object: &'v serde_json::Map<String, Value>,
    name: &str,
) -> Result<&'v str, String> {
    match object.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{name} must be a string")),
        None => Err(format!("{name} is required")),
    }
}

/// `POST .../rebind`: `{"instance_id", "instance_url", "api_url"}`, `api_url` absent to
/// keep the tenant's, `null` to clear it.
pub(super) fn rebind_change(body: &[u8]) -> Result<Mutation, String> {
    let value = json_body(body)?;
    let object = members(&value, &["instance_id", "instance_url", "api_url"])?;
    let instance_id = string_member(object, "instance_id")?;
    let instance_url = string_member(object, "instance_url")?;
    let (api_url, clear) = match object.get("api_url") {
        None => (None, false),
        Some(Value::Null) => (None, true),
        Some(Value::String(s)) => (Some(s.as_str()), false),
        Some(_) => return Err("api_url must be a string, or null to clear it".to_owned()),
    };
    rebind(instance_id, instance_url, api_url, clear)
}

/// `PUT .../status`: `{"status": "suspended"}`.
pub(super) fn status_change(body: &[u8]) -> Result<Mutation, String> {
    let value = json_body(body)?;
    let object = members(&value, &["status"])?;
    let status: TenantStatus = string_member(object, "status")?
        .parse()
        .map_err(|e: nexus_binding_store::FieldError| e.to_string())?;
    Ok(Mutation::SetStatus(status))
}

/// A delete carries no body: one sent is likely meant for another request.
fn no_body(body: &[u8]) -> Result<(), String> {
    if body.is_empty() {
        Ok(())
    } else {
        Err("a delete takes no body".to_owned())
    }
}

/// A wait of at least the slowest live replica's heartbeat interval and a second, as
/// `tenant --wait` lengthens its own: only heartbeats written during the wait count.
async fn lengthened(
    asked: Duration,
    redis: &nexus_binding_store::redis_store::RedisStore,
) -> Duration {
    let floor = redis
        .replicas()
        .await
        .ok()
        .as_deref()
        .and_then(nexus_binding_store::redis_store::wait_floor);
    floor.map_or(asked, |f| f.max(asked))
}
