//! An import into a Redis with no revision counter (wiped, or never written): a restore.
//!
//! Written one tenant at a time through `write.lua`, the first record would start a new
//! history and every replica would follow it at once, serving a table that holds only the
//! tenants imported so far. A restore writes every record first (`restore.lua`, no counter, no
//! change entry; replicas see no history and keep their table), then starts the history in
//! one step (`history.lua`: the counter and one `reset` entry, on which replicas reload).
//! A lock (`{prefix}:restoring`, renewed by every batch, released by `history.lua`) keeps
//! every other writer out meanwhile: `write.lua` refuses while it is held.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use redis::aio::MultiplexedConnection;

use super::{unavailable, RedisStore, WipedStore};
use crate::admin::{Actor, AdminError, AuditEntry, ImportError, ImportSource};
use crate::model::{Binding, BindingRecord, Revision, TenantId};

/// Records per pipelined round trip.
const BATCH: usize = 500;

/// The change-feed `op` that makes every replica reload.
pub(crate) const RESET: &str = "reset";

/// Refuses an import whose domains clash, among its own records or with a record in Redis
/// that the import does not replace. Nothing is written before this passes.
async fn check_domains(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
    bindings: &[Arc<Binding>],
) -> Result<(), ImportError> {
    let imported: HashSet<&str> = bindings.iter().map(|b| b.tenant_id.as_str()).collect();
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
                    return Err(ImportError::at(&b.tenant_id, invalid));
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
            .map_err(|e| ImportError::nothing(unavailable(e)))?;
        for (d, owner) in chunk.iter().zip(stored) {
            let Some(owner) = owner else { continue };
            if imported.contains(owner.as_str()) {
                continue;
            }
            let tenant = owners[d];
            let reason = format!("domain {d} already belongs to tenant {owner}");
            let invalid = AdminError::Invalid {
                tenant: tenant.clone(),
                reason,
            };
            return Err(ImportError::at(tenant, invalid));
        }
    }
    Ok(())
}

/// How long the restore lock lives without a batch renewing it: a restore that died frees
/// the store after this.
const LOCK_MS: u64 = 60_000;

/// Releases the lock if it is still ours (best effort: it expires anyway).
async fn release(store: &RedisStore, con: &mut MultiplexedConnection, token: &str) {
    let script = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
         return 0",
    );
    let released = script
        .key(store.keys.restoring())
        .arg(token)
        .invoke_async::<i64>(con)
        .await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "restore lock not released; it expires on its own");
    }
}

/// A random lock token, so only its holder renews or releases the lock.
fn token() -> String {
    super::random_hex()
}

/// Restores `bindings` into a Redis without history. `Ok(None)` when a history started
/// before the lock was taken: the caller imports the usual way.
pub(super) async fn restore(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
    bindings: Vec<Arc<Binding>>,
    actor: &Actor,
    source: ImportSource,
) -> Result<Option<u64>, ImportError> {
    let token = token();
    let locked: Option<String> = redis::cmd("SET")
        .arg(store.keys.restoring())
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(LOCK_MS)
        .query_async(con)
        .await
        .map_err(|e| ImportError::nothing(unavailable(e)))?;
    if locked.is_none() {
        return Err(ImportError::nothing(AdminError::Unavailable(format!(
            "another restore import is writing to this Redis (or one stopped less than {} s \
             ago); try again when it has finished",
            LOCK_MS / 1000
        ))));
    }
    let result = restore_locked(store, con, bindings, actor, source, &token).await;
    if !matches!(result, Ok(Some(_))) {
        release(store, con, &token).await;
    }
    result
}

async fn restore_locked(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
    bindings: Vec<Arc<Binding>>,
    actor: &Actor,
    source: ImportSource,
    token: &str,
) -> Result<Option<u64>, ImportError> {
    // Every other writer is out now; one may have started a history just before.
    let counter: Option<Vec<u8>> = redis::cmd("GET")
        .arg(store.keys.revision())
        .query_async(con)
        .await
        .map_err(|e| ImportError::nothing(unavailable(e)))?;
    let counter = store
        .keys
        .counter(counter)
        .map_err(|e| ImportError::nothing(unavailable(e)))?;
    if counter.is_some() {
        return Ok(None);
    }
    // Replicas that serve a table over this Redis reload whatever the restore holds: only
    // a table as recent as theirs may replace it, unless the admin says otherwise.
    if store.opts.wiped_store != WipedStore::StartNewHistory {
        // Right after a wipe the heartbeats are gone too: wait for them, as a write does.
        store
            .wait_for_wiped_fleet(con)
            .await
            .map_err(ImportError::nothing)?;
        let super::fleet::FleetServes {
            revision: served,
            by_history,
        } = super::fleet::fleet_serves(store, con)
            .await
            .map_err(|e| ImportError::nothing(unavailable(e)))?;
        if let Some(offered) = stale_offer(&source, served, &by_history, &store.opts.key_prefix) {
            return Err(ImportError::nothing(AdminError::StaleRestore {
                served: Revision(served),
                offered,
            }));
        }
    }
    check_types(store, con, &bindings).await?;
    check_domains(store, con, &bindings).await?;
    // Records already in Redis (an earlier restore that stopped, or ones written outside the
    // schema) keep their revisions: number after the highest, so none is ever reissued. The
    // same read gives the audit entries their old records.
    let (present, _) = store
        .load_all(con, None)
        .await
        .map_err(|e| ImportError::nothing(unavailable(e)))?;
    let mut revision = present.iter().map(|b| b.revision.get()).max().unwrap_or(0);
    let mut records: HashMap<String, BindingRecord> = present
        .iter()
        .map(|b| (b.tenant_id.to_string(), b.to_record()))
        .collect();
    let write = redis::Script::new(include_str!("restore.lua"));
    write
        .load_async(con)
        .await
        .map_err(|e| ImportError::nothing(unavailable(e)))?;
    let now = super::fleet::audit_now(con).await;
    let at = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut written = 0u64;
    let stopped = |written: u64, e: &redis::RedisError| ImportError {
        written,
        tenant: None,
        error: super::wrong_type(
            e,
            "so the import stopped there; no history was started, so replicas serve what they \
             served before: run the import again once it is fixed",
        )
        .unwrap_or_else(|| {
            AdminError::Unavailable(format!(
                "{e}; no history was started, so replicas serve what they served before: run \
                 the import again"
            ))
        }),
    };
    for chunk in bindings.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for b in chunk {
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
                // What the tenant held before this write (an earlier record of the same import
                // counts).
                old: records.insert(next.tenant_id.to_string(), record.clone()),
                new: Some(record.clone()),
            };
            let encoded = (
                serde_json::to_string(&record),
                serde_json::to_string(&entry),
            );
            let (Ok(record_json), Ok(entry_json)) = encoded else {
                let e = AdminError::Unavailable("cannot encode a record".to_owned());
                return Err(ImportError::at(&next.tenant_id, e));
            };
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(write.get_hash())
                .arg(5)
                .arg(store.keys.binding(next.tenant_id.as_str()))
                .arg(store.keys.domains())
                .arg(store.keys.audit(next.tenant_id.as_str()))
                .arg(store.keys.revision())
                .arg(store.keys.restoring())
                .arg(next.tenant_id.as_str())
                .arg(record_json)
                .arg(entry_json)
                .arg(store.opts.audit_cap)
                .arg(token)
                .arg(LOCK_MS);
            for d in &next.domains {
                cmd.arg(d.as_str());
            }
            cmd.ignore();
        }
        pipe.query_async::<()>(con)
            .await
            .map_err(|e| stopped(written, &e))?;
        written += chunk.len() as u64;
    }
    let history = redis::Script::new(include_str!("history.lua"));
    history
        .key(store.keys.revision())
        .key(store.keys.changes())
        .key(store.keys.restoring())
        .key(store.keys.history())
        .key(store.keys.replicas())
        .arg(revision)
        .arg(store.opts.stream_maxlen)
        .arg(token)
        .arg(super::new_history_id())
        .arg(match store.opts.wiped_store {
            WipedStore::Refuse => "",
            WipedStore::StartNewHistory => "new-history",
        })
        .invoke_async::<u64>(con)
        .await
        .map_err(|e| stopped(written, &e))?;
    Ok(Some(written))
}

/// Every key the restore writes must be absent or of the schema's type. Checked for all of
/// them before the first write: `restore.lua` checks its own keys too, but the other scripts
/// of its batch run whatever one of them refuses, and `history.lua` comes after every record.
async fn check_types(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
    bindings: &[Arc<Binding>],
) -> Result<(), ImportError> {
    let mut wanted: Vec<(String, &'static str)> = vec![
        (store.keys.domains(), "hash"),
        (store.keys.changes(), "stream"),
        (store.keys.history(), "hash"),
        (store.keys.replicas(), "hash"),
    ];
    for b in bindings {
        wanted.push((store.keys.binding(b.tenant_id.as_str()), "string"));
        wanted.push((store.keys.audit(b.tenant_id.as_str()), "list"));
    }
    for chunk in wanted.chunks(BATCH) {
        let named = super::misplaced(
            con,
            chunk,
            "so the import was refused before anything was written",
        )
        .await
        .map_err(|e| ImportError::nothing(unavailable(e)))?;
        if let Some(e) = named {
            return Err(ImportError::nothing(e));
        }
    }
    Ok(())
}

/// Why `source` may not replace the table of revision `served` that replicas of keyspace
/// `key_prefix` serve, or `None` when it may: only that keyspace's snapshot at `served` or
/// later tells it is as recent. Another keyspace's snapshot counts like a bindings file: its
/// revision belongs to another history.
fn stale_offer(
    source: &ImportSource,
    served: u64,
    histories: &std::collections::BTreeMap<String, u64>,
    key_prefix: &str,
) -> Option<String> {
    if served == 0 {
        return None;
    }
    // A snapshot of a history replicas name is measured against theirs only.
    let served = match source {
        ImportSource::Snapshot {
            history: Some(theirs),
            ..
        } => histories.get(theirs).copied().unwrap_or(served),
        ImportSource::Snapshot { .. } | ImportSource::Records => served,
    };
    match source {
        ImportSource::Snapshot {
            revision,
            key_prefix: Some(theirs),
            ..
        } if theirs != key_prefix => Some(format!(
            "this snapshot holds key prefix {theirs:?}'s table, not {key_prefix:?}'s: its \
             revision ({revision}) says nothing of this keyspace"
        )),
        // A restore starts the count again: revision 4 of an earlier history may hold less
        // than revision 4 of the one replicas serve.
        ImportSource::Snapshot {
            revision,
            history: Some(theirs),
            ..
        } if !histories.is_empty() && !histories.contains_key(theirs) => Some(format!(
            "this snapshot is of history {theirs}, not the one replicas serve ({}): its \
             revision ({revision}) says nothing of theirs",
            histories.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
        ImportSource::Snapshot { revision, .. } if revision.get() >= served => None,
        ImportSource::Snapshot { revision, .. } => {
            Some(format!("this snapshot is older (revision {revision})"))
        }
        ImportSource::Records => Some(
            "this bindings file may be older or smaller than their table (only a replica's \
             snapshot tells its revision)"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(revision: u64, key_prefix: &str) -> ImportSource {
        ImportSource::Snapshot {
            revision: Revision(revision),
            key_prefix: Some(key_prefix.to_owned()),
            history: None,
        }
    }

    #[test]
    fn only_this_keyspaces_recent_snapshot_replaces_a_served_table() {
        let cases = [
            (snapshot(7, "nexus"), 7, None),
            (snapshot(9, "nexus"), 7, None),
            (snapshot(6, "nexus"), 7, Some("older")),
            (
                snapshot(9, "nexus-blue"),
                7,
                Some("key prefix \"nexus-blue\""),
            ),
            (ImportSource::Records, 7, Some("bindings file")),
            // A version-1 snapshot names no prefix: taken as this keyspace's.
            (
                ImportSource::Snapshot {
                    revision: Revision(7),
                    key_prefix: None,
                    history: None,
                },
                7,
                None,
            ),
            // Of another history than the one replicas serve: its revision does not compare.
            (
                ImportSource::Snapshot {
                    revision: Revision(9),
                    key_prefix: Some("nexus".to_owned()),
                    history: Some("h0".to_owned()),
                },
                7,
                Some("history h0"),
            ),
            // Of theirs: by its revision against their own (7 here), whatever the others'.
            (
                ImportSource::Snapshot {
                    revision: Revision(8),
                    key_prefix: Some("nexus".to_owned()),
                    history: Some("h1".to_owned()),
                },
                9,
                None,
            ),
            (
                ImportSource::Snapshot {
                    revision: Revision(6),
                    key_prefix: Some("nexus".to_owned()),
                    history: Some("h1".to_owned()),
                },
                9,
                Some("older"),
            ),
            // Nobody serves a table: anything may start the history.
            (snapshot(1, "nexus-blue"), 0, None),
            (ImportSource::Records, 0, None),
        ];
        for (source, served, want) in cases {
            let histories = std::collections::BTreeMap::from([("h1".to_owned(), 7)]);
            let got = stale_offer(&source, served, &histories, "nexus");
            match (got.as_deref(), want) {
                (None, None) => {}
                (Some(text), Some(part)) if text.contains(part) => {}
                other => panic!("{source:?} over {served}: {other:?}"),
            }
        }
    }
}
