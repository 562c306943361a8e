//! Admin commands against Redis: reads, writes through `write.lua`, imports and history.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

use super::{
    fleet, last_number, misplaced, new_history_id, parse_json_record, read_failure,
    record_revision, record_text, restore, script_error, unavailable, wrong_type, RedisEndpoint,
    RedisStore, WipedStore,
};
use crate::admin::{
    import_each, Actor, AdminError, Applied, AuditEntry, BindingAdmin, History, IfUnchanged,
    ImportError, ImportSeen, ImportSource, Listing, Mutation, FIX_A_RECORD,
};
use crate::admin::{mutate, op_name, unchanged};
use crate::model::{Binding, Revision, TenantId};
use crate::records::{contested_domains, settle_contested, DomainIndex, Verdicts};

/// How long a write behind Sentinel waits for a standby to acknowledge it.
const STANDBY_ACK_WAIT: Duration = Duration::from_secs(1);

/// Whether a stored record (`raw`) claims `domain`, as `write.lua`'s `claims_of` reads it: a
/// record that cannot say (no JSON object, a `domains` that is no list of names) keeps its
/// claims; one without `domains` claims none.
fn still_claims(raw: &[u8], domain: &str) -> bool {
    if crate::json::is_array_text(raw) {
        return true;
    }
    // cjson reads bytes that are no UTF-8 as they are; they are in no domain name.
    let text = String::from_utf8_lossy(raw);
    let Ok(serde_json::Value::Object(record)) = serde_json::from_str(&text) else {
        return true;
    };
    match record.get("domains") {
        None => false,
        Some(serde_json::Value::Array(names)) if names.iter().all(|n| n.is_string()) => {
            names.iter().any(|n| n.as_str() == Some(domain))
        }
        // cjson reads `{}` as an empty table, which the script takes for an empty list.
        Some(serde_json::Value::Object(members)) if members.is_empty() => false,
        Some(_) => true,
    }
}

/// A write of `tenant` refused for `domain`, which `owner`'s record holds.
fn domain_held(tenant: &TenantId, domain: &str, owner: &str) -> AdminError {
    AdminError::Invalid {
        tenant: tenant.clone(),
        reason: format!(
            "domain {domain} already belongs to tenant {owner}; release it there first"
        ),
    }
}

/// What [`RedisStore::skippable`] found.
enum Skip {
    /// Nothing to write: the record is the one the write was computed from, made by the
    /// write script (so every replica heard of it), and its domains are the tenant's.
    Yes,
    /// The record is no longer the text read: read again.
    ReadAgain,
    /// Write it, through the script: it puts right, or refuses with its reason, what the
    /// check could not vouch for.
    No,
}

impl RedisStore {
    /// What would stop an import one write at a time half way, checked before the first
    /// write: a key of the schema holding another type, or a custom domain the domain index
    /// gives a tenant outside the import whose record still claims it. (`write.lua` checks
    /// again at each write: a change made meanwhile can still stop the import there.)
    async fn import_preflight(
        &self,
        con: &mut MultiplexedConnection,
        bindings: &[Arc<Binding>],
    ) -> Result<(), ImportError> {
        let whole = ImportError::nothing;
        let mut wanted: Vec<(String, &'static str)> = vec![
            (self.keys.revision(), "string"),
            (self.keys.changes(), "stream"),
            (self.keys.domains(), "hash"),
        ];
        for b in bindings {
            wanted.push((self.keys.binding(b.tenant_id.as_str()), "string"));
            wanted.push((self.keys.audit(b.tenant_id.as_str()), "list"));
        }
        let consequence = "so the import was refused before any of it was written";
        if let Some(named) = misplaced(con, &wanted, consequence)
            .await
            .map_err(|e| whole(unavailable(e)))?
        {
            return Err(whole(named));
        }
        let claims: Vec<(&TenantId, &str)> = bindings
            .iter()
            .flat_map(|b| b.domains.iter().map(move |d| (&b.tenant_id, d.as_str())))
            .collect();
        if claims.is_empty() {
            return Ok(());
        }
        let domains: Vec<&str> = claims.iter().map(|(_, d)| *d).collect();
        let owners: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.domains())
            .arg(&domains)
            .query_async(con)
            .await
            .map_err(|e| whole(unavailable(e)))?;
        let importing: HashSet<&str> = bindings.iter().map(|b| b.tenant_id.as_str()).collect();
        for ((tenant, domain), owner) in claims.into_iter().zip(owners) {
            let Some(owner) = owner.filter(|o| o != tenant.as_str()) else {
                continue;
            };
            // The import may let it go (written first: `release_first`).
            if importing.contains(owner.as_str()) {
                continue;
            }
            // An index entry can outlive the claim (a record deleted or edited by hand):
            // the script lets a write take such a domain. Read as the script reads it.
            let raw: redis::RedisResult<Option<Vec<u8>>> = con.get(self.keys.binding(&owner)).await;
            let claimed = match raw {
                Ok(None) => false,
                Ok(Some(raw)) => still_claims(&raw, domain),
                // A key of another type cannot say either.
                Err(e) if e.code() == Some("WRONGTYPE") => true,
                Err(e) => return Err(whole(unavailable(e))),
            };
            if claimed {
                return Err(ImportError::at(tenant, domain_held(tenant, domain, &owner)));
            }
        }
        Ok(())
    }

    /// Whether a write that would change nothing may be skipped. Read in one `MULTI`: the
    /// tenant's record must still be `raw`, the text the write was computed from; the
    /// tenant's last audit entry must have made that very record (one edited by hand, which
    /// no change event announced, is written again so that replicas hear of it); the
    /// revision counter must be there and not behind the record, with no restore under way
    /// (the script refuses a write into a wiped store, begins a new history when asked, and
    /// moves a counter that is behind); and the domain index must name the tenant for each
    /// of its domains (replicas settle a contested domain by it). A failed read says write:
    /// the script then names what is wrong.
    async fn skippable(
        &self,
        con: &mut MultiplexedConnection,
        tenant: &TenantId,
        raw: &[u8],
        stored: &Binding,
    ) -> Skip {
        let key = self.keys.binding(tenant.as_str());
        let domains: Vec<&str> = stored.domains.iter().map(|d| d.as_str()).collect();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .get(&key)
            .get(self.keys.revision())
            .exists(self.keys.restoring())
            .lindex(self.keys.audit(tenant.as_str()), 0);
        if !domains.is_empty() {
            pipe.cmd("HMGET").arg(self.keys.domains()).arg(&domains);
        }
        let read: redis::RedisResult<Vec<redis::Value>> = pipe.query_async(con).await;
        let Ok(mut read) = read else {
            return Skip::No;
        };
        let owners: Vec<Option<String>> = match (read.len(), domains.is_empty()) {
            (4, true) => Vec::new(),
            (5, false) => match read.pop().map(|v| redis::from_redis_value(&v)) {
                Some(Ok(owners)) => owners,
                _ => return Skip::No,
            },
            _ => return Skip::No,
        };
        let bytes = |v: Option<redis::Value>| -> Option<Vec<u8>> {
            v.and_then(|v| {
                redis::from_redis_value::<Option<Vec<u8>>>(&v)
                    .ok()
                    .flatten()
            })
        };
        let (audit, restoring, counter, now) = (
            bytes(read.pop()),
            read.pop(),
            bytes(read.pop()),
            bytes(read.pop()),
        );
        if now.as_deref() != Some(raw) {
            return Skip::ReadAgain;
        }
        let restoring = restoring.is_none_or(|v| redis::from_redis_value::<bool>(&v) != Ok(false));
        let counted = self
            .keys
            .counter(counter)
            .is_ok_and(|c| c.is_some_and(|c| c >= stored.revision.get()));
        let made_by_script = audit
            .and_then(|a| serde_json::from_slice::<AuditEntry>(&a).ok())
            .zip(serde_json::from_slice::<crate::model::BindingRecord>(raw).ok())
            .is_some_and(|(entry, record)| {
                entry.revision == stored.revision.get() && entry.new.as_ref() == Some(&record)
            });
        let held = owners.len() == domains.len()
            && owners.iter().all(|o| o.as_deref() == Some(tenant.as_str()));
        if !restoring && counted && made_by_script && held {
            Skip::Yes
        } else {
            Skip::No
        }
    }

    /// Behind Sentinel, says so (a warning the admin CLI prints) when no standby acknowledged
    /// the write at `revision` within [`STANDBY_ACK_WAIT`] (see [`RedisStore::unreplicated`]).
    async fn warn_unless_replicated(
        &self,
        con: &mut MultiplexedConnection,
        tenant: &TenantId,
        revision: u64,
    ) {
        if self.unreplicated(con).await {
            tracing::warn!(
                "tenant {tenant} at revision {revision} is written on the primary, but no \
                 standby acknowledged it within {}s: a failover now would lose it (after one, \
                 `nexus-edge tenant history {tenant}` says whether it is there)",
                STANDBY_ACK_WAIT.as_secs()
            );
        }
    }

    /// Behind Sentinel, whether no standby acknowledged the connection's last write within
    /// [`STANDBY_ACK_WAIT`] (`WAIT 1`): replication is asynchronous, and a failover now would
    /// lose it, though the write succeeded. `false` with a fixed URL (no failover to lose it
    /// to), and when Redis answers nothing to `WAIT` (a user without the right).
    pub(crate) async fn unreplicated(&self, con: &mut MultiplexedConnection) -> bool {
        if !matches!(self.opts.endpoint, RedisEndpoint::Sentinel(_)) {
            return false;
        }
        let acked: redis::RedisResult<u64> = redis::cmd("WAIT")
            .arg(1)
            .arg(STANDBY_ACK_WAIT.as_millis() as u64)
            .query_async(con)
            .await;
        acked == Ok(0)
    }
}

#[async_trait]
impl BindingAdmin for RedisStore {
    async fn get(&self, tenant: &TenantId) -> Result<Option<Binding>, AdminError> {
        let mut con = self.admin_connection().await?;
        let key = self.keys.binding(tenant.as_str());
        let raw: Option<Vec<u8>> = match con.get(&key).await {
            Ok(raw) => raw,
            Err(e) => return Err(read_failure(&mut con, &key, e, "string").await),
        };
        if raw.is_none() {
            // "Not found" from a wiped Redis would send the admin to recreate a tenant every
            // replica still serves.
            if let Some(served) = self.looks_wiped(&mut con).await? {
                return Err(AdminError::WipedRead { served });
            }
        }
        raw.map(|r| {
            record_text(&r)
                .and_then(parse_json_record)
                .map_err(|m| AdminError::Corrupt(format!("tenant {tenant}: {m}; {FIX_A_RECORD}")))
        })
        .transpose()
    }

    async fn list(&self) -> Result<Listing, AdminError> {
        let mut con = self.admin_connection().await?;
        // An empty (or partial) listing of a wiped Redis, exported as a backup, would pass
        // for the fleet's table.
        if let Some(served) = self.looks_wiped(&mut con).await? {
            return Err(AdminError::WipedRead { served });
        }
        let revision = Revision(self.read_counter(&mut con).await?.unwrap_or(0));
        let (mut bindings, bad) = self.load_all(&mut con, None).await.map_err(unavailable)?;
        let mut left_out: Vec<String> = bad
            .iter()
            .map(|(t, problem)| format!("{}: {problem}", self.keys.binding(t)))
            .collect();
        // A record claiming a domain another record claims too is refused by every replica
        // but the one the domain index names: settled as a replica with no table settles it,
        // and named, so that a listing or backup does not look whole.
        let contested = contested_domains(&bindings);
        if !contested.is_empty() {
            let mut index = DomainIndex::new();
            let domains = contested.iter().map(|(d, _)| d.as_str()).collect();
            self.look_up_domains(&mut con, domains, &mut index)
                .await
                .map_err(unavailable)?;
            let (kept, _) = settle_contested(
                bindings.clone(),
                &contested,
                None,
                HashSet::new(),
                Some(&index),
                "Redis",
                Verdicts::Quiet,
            );
            // Refused: the tenants not kept. One kept without the domain (no claimant won
            // it) is listed as stored.
            let kept: HashSet<TenantId> = kept.iter().map(|b| b.tenant_id.clone()).collect();
            for b in bindings.iter().filter(|b| !kept.contains(&b.tenant_id)) {
                let claimed: Vec<String> = contested
                    .iter()
                    .filter(|(_, claimants)| claimants.contains(&b.tenant_id))
                    .map(|(d, _)| match index.get(d).cloned().flatten() {
                        Some(owner) => format!("{d} (held by {owner})"),
                        None => format!("{d} (held by none)"),
                    })
                    .collect();
                left_out.push(format!(
                    "{}: claims a custom domain another record claims too: {}; replicas \
                     refuse the record",
                    self.keys.binding(b.tenant_id.as_str()),
                    claimed.join(", ")
                ));
            }
            bindings.retain(|b| kept.contains(&b.tenant_id));
        }
        Ok(Listing {
            revision,
            bindings: crate::records::sorted_by_tenant(&bindings),
            left_out,
        })
    }

    async fn apply(
        &self,
        tenant: &TenantId,
        mutation: Mutation,
        expect: Option<Revision>,
        if_unchanged: IfUnchanged,
        actor: &Actor,
    ) -> Result<Applied, AdminError> {
        let mut con = self.admin_connection().await?;
        if self.opts.wiped_store == WipedStore::Refuse {
            self.wait_for_wiped_fleet(&mut con).await?;
        }
        // The record text the script last refused, with the revision it read there: should
        // the two readings of one text ever differ, the next attempt goes by the script's.
        let mut script_read: Option<(Vec<u8>, u64)> = None;
        // Read-modify-write with an optimistic check: without --expect-revision the script is
        // still told what we read, and a concurrent change makes us re-read and retry.
        for attempt in 0u64..200 {
            if attempt > 0 {
                // Back off a little, randomly, so concurrent writers to one tenant do not keep
                // invalidating each other's reads.
                let mut b = [0u8; 1];
                let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
                let micros = (u64::from(b[0]) * 8 * attempt.min(10)).max(100);
                tokio::time::sleep(Duration::from_micros(micros)).await;
            }
            let key = self.keys.binding(tenant.as_str());
            // As bytes: a record that is no UTF-8 text is a damaged one, to replace or delete.
            let raw: Option<Vec<u8>> = match con.get(&key).await {
                Ok(raw) => raw,
                Err(e) => return Err(read_failure(&mut con, &key, e, "string").await),
            };
            let parsed = raw.as_deref().map(|r| {
                record_text(r).and_then(parse_json_record).map_err(|msg| {
                    AdminError::Corrupt(format!("tenant {tenant}: {msg}; {FIX_A_RECORD}"))
                })
            });
            let current = match (parsed, &mutation) {
                (None, _) => None,
                (Some(Ok(b)), _) => Some(b),
                (Some(Err(_)), Mutation::Put(_) | Mutation::Delete) => None,
                (Some(Err(e)), _) => return Err(e),
            };
            let read_rev = match (&script_read, &raw) {
                (Some((text, rev)), Some(now)) if text == now => *rev,
                _ => raw.as_deref().map_or(0, record_revision),
            };
            // With no record, the store may be a wiped one: say that, as the script would,
            // rather than "not found" or a conflict that send the admin to recreate tenants.
            let missing = raw.is_none()
                && (!matches!(mutation, Mutation::Put(_))
                    || expect.is_some_and(|e| e != Revision::ZERO));
            if missing && self.opts.wiped_store == WipedStore::Refuse {
                if let Some(served) = self.looks_wiped(&mut con).await? {
                    return Err(AdminError::Wiped { served });
                }
            }
            if let Some(e) = expect {
                // 0 says "must not exist", which a record without a revision does not satisfy
                // (one with a revision gets the usual conflict below, naming it).
                if e == Revision::ZERO && read_rev == 0 && raw.is_some() {
                    return Err(AdminError::Exists {
                        tenant: tenant.clone(),
                    });
                }
                if e.get() != read_rev {
                    return Err(AdminError::Conflict {
                        tenant: tenant.clone(),
                        expected: e,
                        actual: Revision(read_rev),
                    });
                }
            }
            let op = op_name(&mutation);
            let now = fleet::audit_now(&mut con).await;
            let next = match (&mutation, &raw, &current) {
                (Mutation::Delete, None, _) => return Err(AdminError::NotFound(tenant.clone())),
                // A damaged record: deleting it is how it is cleared.
                (Mutation::Delete, Some(_), None) => None,
                _ => mutate(
                    tenant,
                    current.as_ref(),
                    mutation.clone(),
                    Revision::ZERO,
                    now,
                )?,
            };
            if let (Some(stored), Some(raw)) = (
                unchanged(if_unchanged, current.as_ref(), next.as_ref()),
                &raw,
            ) {
                match self.skippable(&mut con, tenant, raw, &stored).await {
                    Skip::Yes => return Ok(Applied::Unchanged(stored)),
                    Skip::ReadAgain => continue,
                    Skip::No => {}
                }
            }
            let at = now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let new_json = match &next {
                Some(b) => serde_json::to_string(&b.to_record()).map_err(unavailable)?,
                None => String::new(),
            };
            let entry = AuditEntry {
                tenant: tenant.to_string(),
                revision: 0,
                at,
                actor: actor.name.clone(),
                reason: actor.reason.clone(),
                op: op.to_owned(),
                old: current.as_ref().map(Binding::to_record),
                new: next.as_ref().map(Binding::to_record),
            };
            let audit_json = serde_json::to_string(&entry).map_err(unavailable)?;
            let mut inv = self.script.prepare_invoke();
            inv.key(self.keys.binding(tenant.as_str()))
                .key(self.keys.revision())
                .key(self.keys.changes())
                .key(self.keys.audit(tenant.as_str()))
                .key(self.keys.domains())
                .key(self.keys.restoring())
                .key(self.keys.replicas())
                .key(self.keys.history())
                .arg(tenant.as_str())
                .arg(read_rev.to_string())
                .arg(new_json)
                .arg(audit_json)
                .arg(self.opts.stream_maxlen)
                .arg(self.opts.audit_cap)
                .arg(match self.opts.wiped_store {
                    WipedStore::Refuse => "",
                    WipedStore::StartNewHistory => "new-history",
                })
                .arg(new_history_id());
            if let Some(b) = &next {
                for d in &b.domains {
                    inv.arg(d.as_str());
                }
            }
            match inv.invoke_async::<u64>(&mut con).await {
                Ok(rev) => {
                    self.warn_unless_replicated(&mut con, tenant, rev).await;
                    let binding = next.map(|mut b| {
                        b.revision = Revision(rev);
                        b
                    });
                    return Ok(Applied::Written {
                        revision: Revision(rev),
                        binding,
                    });
                }
                // By the error's code (its first word), never by searching the text: the
                // detail carries key names, and a key prefix is any text.
                Err(e) => {
                    let (code, detail) = script_error(&e).unwrap_or_default();
                    match code {
                        "CONFLICT" if expect.is_some() => {
                            return Err(AdminError::Conflict {
                                tenant: tenant.clone(),
                                expected: expect.unwrap_or_default(),
                                actual: Revision(last_number(detail)),
                            });
                        }
                        "CONFLICT" => {
                            script_read = raw.map(|r| (r, last_number(detail)));
                            continue;
                        }
                        "RESTORING" => {
                            return Err(AdminError::Unavailable(format!(
                                "a restore import is writing to this Redis ({} is set); try \
                                 again when it has finished (the lock lasts 60 s; one that \
                                 stays was set by hand: delete it once no restore runs)",
                                self.keys.restoring()
                            )))
                        }
                        "WIPED" => {
                            return Err(AdminError::Wiped {
                                served: Revision(last_number(detail)),
                            })
                        }
                        "NOTFOUND" => return Err(AdminError::NotFound(tenant.clone())),
                        "EXHAUSTED" => {
                            return Err(AdminError::Corrupt(format!(
                                "{} carries revision 2^52, the highest replicas take, which no \
                                 write through the schema makes (written by hand): a write \
                                 after it would take a revision every replica refuses, so \
                                 nothing was written. Set its revision by hand to the value \
                                 of {}, then write {tenant} again",
                                detail.trim(),
                                self.keys.revision()
                            )))
                        }
                        "DOMAIN" => {
                            // `<domain> <owner>`, as the script says it.
                            return Err(match detail.trim().split_once(' ') {
                                Some((domain, owner)) => domain_held(tenant, domain, owner),
                                None => AdminError::Invalid {
                                    tenant: tenant.clone(),
                                    reason: format!("domain already bound: {}", detail.trim()),
                                },
                            });
                        }
                        _ => {}
                    }
                    if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() {
                        // No answer: the script may have run, whole (it is atomic), before
                        // the connection failed. Said, so the write is not taken as not made.
                        return Err(AdminError::Unanswered(format!(
                            "{e}: the write was sent and Redis did not answer, so it may have \
                             been made; `nexus-edge tenant history {tenant}` says whether it \
                             was before you write again"
                        )));
                    }
                    // Redis's own words (code ERR): the one error the script's feed entry,
                    // written before anything else, can meet on a stream.
                    if e.detail()
                        .is_some_and(|d| d.contains("exhausted the last possible ID"))
                    {
                        return Err(AdminError::Corrupt(format!(
                            "the change feed {} takes no more entries (its last id is the \
                             highest a stream can have, set by hand), so nothing was written. \
                             Delete or rename it (replicas then read the whole table again), \
                             and write again",
                            self.keys.changes()
                        )));
                    }
                    return Err(wrong_type(
                        &e,
                        "so the write was refused before any of it was made",
                    )
                    .unwrap_or_else(|| unavailable(e)));
                }
            }
        }
        Err(AdminError::Unavailable(format!(
            "tenant {tenant} kept changing under this write; try again"
        )))
    }

    /// Into a Redis with a revision counter, one atomic write per tenant, each followed at
    /// once. Into one without (wiped, or never written), a restore: every record first, then
    /// the history in one step, so a replica serving a table keeps it until the whole import
    /// is in; over serving replicas it takes only a snapshot as recent as their table, unless
    /// told to start a new history (`restore`).
    async fn import(
        &self,
        bindings: Vec<Arc<Binding>>,
        actor: &Actor,
        source: ImportSource,
        seen: &ImportSeen,
    ) -> Result<u64, ImportError> {
        let whole = ImportError::nothing;
        if bindings.is_empty() {
            return Ok(0);
        }
        let mut con = self.admin_connection().await.map_err(whole)?;
        let counter: Option<Vec<u8>> = con
            .get(self.keys.revision())
            .await
            .map_err(|e| whole(unavailable(e)))?;
        let counter = self
            .keys
            .counter(counter)
            .map_err(|e| whole(unavailable(e)))?;
        if counter.is_none() {
            // Cloning the Arcs keeps them for the usual way if a history started meanwhile.
            if let Some(n) =
                restore::restore(self, &mut con, bindings.clone(), actor, source).await?
            {
                return Ok(n);
            }
        }
        self.import_preflight(&mut con, &bindings).await?;
        import_each(self, bindings, actor, seen).await
    }

    async fn history(&self, tenant: &TenantId) -> Result<History, AdminError> {
        let mut con = self.admin_connection().await?;
        let key = self.keys.audit(tenant.as_str());
        // Bytes: an entry that is not UTF-8 is one unreadable entry, not a failed read.
        let lines: Vec<Vec<u8>> = match con.lrange(&key, 0, -1).await {
            Ok(lines) => lines,
            Err(e) => return Err(read_failure(&mut con, &key, e, "list").await),
        };
        let mut out = History::default();
        // Newest first in Redis (LPUSH); index i is `LINDEX key i`.
        for (i, l) in lines.iter().enumerate().rev() {
            match serde_json::from_slice::<AuditEntry>(l) {
                Ok(entry) if entry.tenant == tenant.as_str() => out.entries.push(entry),
                // Not this tenant's: written there by hand, so not part of its history.
                Ok(entry) => out.unreadable.push(format!(
                    "{key} index {i}: an entry of tenant {}",
                    crate::model::quoted(&entry.tenant)
                )),
                Err(e) => out.unreadable.push(format!("{key} index {i}: {e}")),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::still_claims;

    /// As `write.lua`'s `claims_of` reads a holder's record: the import's check must refuse
    /// no more than the script does, and no less.
    #[test]
    fn a_holder_s_claim_is_read_as_the_write_script_reads_it() {
        let d = "shop.example.test";
        for (raw, claims) in [
            (br#"{"domains":["shop.example.test"]}"#.to_vec(), true),
            (br#"{"domains":["other.example.test"]}"#.to_vec(), false),
            (br#"{"tenant_id":"hooli"}"#.to_vec(), false),
            (br#"{"domains":{}}"#.to_vec(), false),
            (b"{\"x\":\"\xff\",\"domains\":[]}".to_vec(), false),
            // Records that cannot say keep their claims.
            (br#"["shop.example.test"]"#.to_vec(), true),
            (b"not json".to_vec(), true),
            (br#"{"domains":"shop.example.test"}"#.to_vec(), true),
            (br#"{"domains":[5]}"#.to_vec(), true),
            (br#"{"domains":null}"#.to_vec(), true),
        ] {
            assert_eq!(
                still_claims(&raw, d),
                claims,
                "{}",
                String::from_utf8_lossy(&raw)
            );
        }
    }
}
