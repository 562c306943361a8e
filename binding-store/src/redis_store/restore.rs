//! An import into a Redis with no revision counter (wiped, or never written): a restore.
//!
//! Written one tenant at a time through `write.lua`, the first record would start a new
//! history and every replica would follow it at once, serving a table that holds only the
//! tenants imported so far. A restore writes every record first (`restore.lua`, no counter, no
//! change entry; replicas see no history and keep their table), then starts the history in
//! one step (`history.lua`: the counter and one `reset` entry, on which replicas reload).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use redis::aio::MultiplexedConnection;

use super::{parse_json_record, unavailable, RedisStore};
use crate::admin::{Actor, AdminError, AuditEntry, ImportError};
use crate::model::{Binding, Revision, TenantId};

/// Records per pipelined round trip.
const BATCH: usize = 500;

/// The change-feed `op` that makes every replica reload.
pub(crate) const RESET: &str = "reset";

fn whole(error: AdminError) -> ImportError {
    ImportError {
        written: 0,
        tenant: None,
        error,
    }
}

fn at_tenant(tenant: &TenantId, error: AdminError) -> ImportError {
    ImportError {
        written: 0,
        tenant: Some(tenant.clone()),
        error,
    }
}

/// Refuses an import whose domains clash, among its own records or with a record in Redis
/// that the import does not replace. Nothing is written before this passes.
async fn check_domains(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
    bindings: &[Arc<Binding>],
) -> Result<(), ImportError> {
    let imported: HashSet<&TenantId> = bindings.iter().map(|b| &b.tenant_id).collect();
    let mut owners: HashMap<&str, &TenantId> = HashMap::new();
    for b in bindings {
        for d in &b.domains {
            if let Some(other) = owners.insert(d.as_str(), &b.tenant_id) {
                if *other != b.tenant_id {
                    let reason = format!("domain {d} also belongs to tenant {other}");
                    let invalid = AdminError::Invalid {
                        tenant: b.tenant_id.clone(),
                        reason,
                    };
                    return Err(at_tenant(&b.tenant_id, invalid));
                }
            }
        }
    }
    let domains: Vec<&str> = owners.keys().copied().collect();
    for chunk in domains.chunks(BATCH) {
        let stored: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(store.keys.domains())
            .arg(chunk)
            .query_async(con)
            .await
            .map_err(|e| whole(unavailable(e)))?;
        for (d, owner) in chunk.iter().zip(stored) {
            let Some(owner) = owner else { continue };
            if imported.iter().any(|t| t.as_str() == owner) {
                continue;
            }
            let tenant = owners[d];
            let reason = format!("domain {d} already belongs to tenant {owner}");
            let invalid = AdminError::Invalid {
                tenant: tenant.clone(),
                reason,
            };
            return Err(at_tenant(tenant, invalid));
        }
    }
    Ok(())
}

/// Writes every binding (revisions 1..=n in import order), then starts the history.
pub(super) async fn restore(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
    bindings: Vec<Arc<Binding>>,
    actor: &Actor,
) -> Result<u64, ImportError> {
    check_domains(store, con, &bindings).await?;
    let write = redis::Script::new(include_str!("restore.lua"));
    write
        .load_async(con)
        .await
        .map_err(|e| whole(unavailable(e)))?;
    let now = time::OffsetDateTime::now_utc();
    let at = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut revision = 0u64;
    for chunk in bindings.chunks(BATCH) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|b| store.keys.binding(b.tenant_id.as_str()))
            .collect();
        let old: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(con)
            .await
            .map_err(|e| whole(unavailable(e)))?;
        let mut pipe = redis::pipe();
        for ((b, key), old) in chunk.iter().zip(&keys).zip(old) {
            revision += 1;
            let mut next = Binding::clone(b);
            next.revision = Revision(revision);
            next.updated_at = Some(now);
            let record = next.to_record();
            let entry = AuditEntry {
                tenant: next.tenant_id.to_string(),
                revision,
                at: at.clone(),
                actor: actor.name.clone(),
                reason: actor.reason.clone(),
                op: "import".to_owned(),
                old: old
                    .as_deref()
                    .and_then(|t| parse_json_record(t).ok())
                    .map(|o| o.to_record()),
                new: Some(record.clone()),
            };
            let encoded = (
                serde_json::to_string(&record),
                serde_json::to_string(&entry),
            );
            let (Ok(record_json), Ok(entry_json)) = encoded else {
                let e = AdminError::Unavailable("cannot encode a record".to_owned());
                return Err(at_tenant(&next.tenant_id, e));
            };
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(write.get_hash())
                .arg(3)
                .arg(key)
                .arg(store.keys.domains())
                .arg(store.keys.audit(next.tenant_id.as_str()))
                .arg(next.tenant_id.as_str())
                .arg(record_json)
                .arg(entry_json)
                .arg(store.opts.audit_cap);
            for d in &next.domains {
                cmd.arg(d.as_str());
            }
            cmd.ignore();
        }
        pipe.query_async::<()>(con)
            .await
            .map_err(|e| whole(unavailable(e)))?;
    }
    let history = redis::Script::new(include_str!("history.lua"));
    let started = history
        .key(store.keys.revision())
        .key(store.keys.changes())
        .arg(revision)
        .arg(store.opts.stream_maxlen)
        .invoke_async::<u64>(con)
        .await;
    match started {
        Ok(_) => Ok(revision),
        Err(e) if e.to_string().contains("HISTORY") => {
            Err(whole(AdminError::Unavailable(format!(
                "every record was written, but another write started a history first ({e}); \
                 run the import again to put them through it"
            ))))
        }
        Err(e) => Err(whole(unavailable(e))),
    }
}
