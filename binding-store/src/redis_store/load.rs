//! A full load: every record (SCAN in batches), the domain index's verdicts on contested
//! domains, and the feed position taken before the scan; refused when the store holds no
//! history this replica may take.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

use super::{
    began_by, brief, check_key, confirm_command, field_u64, fleet, lossy, parse_json_record_with,
    record_text, Entries, FeedPosition, RedisStore, Served, StoreHistory, MAX_SETTLING_PASSES,
    RESTORE_POLL,
};
use crate::model::{Binding, Interner, Revision, TenantId};
use crate::records::{
    confirmed_by_index, contested_domains, settle_contested, DomainIndex, Verdicts,
};
use crate::table::BindingTable;

impl RedisStore {
    /// Loads every binding (SCAN + MGET in batches). Invalid records are logged, counted and
    /// returned by tenant, each with its problem, so a reconcile can keep those tenants' last
    /// good bindings and a listing can say what it left out.
    ///
    /// A record equal to `reuse`'s binding of its tenant is given that binding, not a copy:
    /// a reconcile's table then shares every unchanged binding with the table it replaces, so
    /// it costs the index's memory alone, and freeing the replaced table frees no binding.
    pub(crate) async fn load_all(
        &self,
        con: &mut MultiplexedConnection,
        reuse: Option<&BindingTable>,
    ) -> redis::RedisResult<(Vec<Arc<Binding>>, Vec<(String, String)>)> {
        let mut cursor: u64 = 0;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let mut interner = Interner::default();
        let key_head = self.keys.binding("");
        loop {
            // Key names as bytes: one that is not UTF-8 is refused alone, never the load.
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(self.keys.binding_pattern())
                .arg("COUNT")
                .arg(self.opts.scan_batch)
                .query_async(con)
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> =
                    redis::cmd("MGET").arg(&keys).query_async(con).await?;
                // MGET answers nil for a key that holds no string, and for one deleted since
                // the scan saw it: that tenant is gone (its feed entry follows the load), not
                // a refused record, and a listing must not call itself incomplete for it.
                let mut gone = vec![false; keys.len()];
                for (i, _) in values.iter().enumerate().filter(|(_, v)| v.is_none()) {
                    let kind: String = redis::cmd("TYPE").arg(&keys[i]).query_async(con).await?;
                    gone[i] = kind == "none";
                }
                for ((key, value), gone) in keys.iter().zip(values).zip(gone) {
                    if gone {
                        continue;
                    }
                    let key = String::from_utf8_lossy(key);
                    // The tenant is all of the key after `{prefix}:binding:`, and must be an
                    // id: `nexus:binding:zed:acme` is no key of acme's (nor of anyone's), even
                    // if the record in it says acme.
                    let Some(tenant) = key
                        .strip_prefix(key_head.as_str())
                        .filter(|t| TenantId::parse(t).is_ok())
                    else {
                        tracing::warn!(key = %key, "key under the binding pattern is no tenant's binding key; ignored");
                        self.health.add_rejected(1);
                        continue;
                    };
                    let parsed = value
                        .ok_or_else(|| "the key holds no string value".to_owned())
                        .and_then(|v| {
                            record_text(&v).and_then(|t| parse_json_record_with(t, &mut interner))
                        })
                        .and_then(|b| check_key(b, tenant));
                    match parsed {
                        Ok(b) => good.push(
                            // Compared as parsed, so the copy is freed while still in cache.
                            reuse
                                .and_then(|t| t.get(b.tenant_id.as_str()))
                                .filter(|kept| ***kept == b)
                                .map_or_else(|| Arc::new(b), Arc::clone),
                        ),
                        Err(msg) => {
                            if crate::record_lines::admit() {
                                tracing::warn!(key = %key, problem = %brief(&msg), "binding record in Redis refused; the tenant keeps its last good binding");
                            }
                            bad.push((tenant.to_owned(), brief(&msg).to_string()));
                        }
                    }
                }
                if good.len() % 100_000 < keys.len() && good.len() >= 100_000 {
                    tracing::info!(loaded = good.len(), "loading bindings from Redis");
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        // SCAN may return a key twice (a rehash during the scan): each tenant is kept once, at
        // its newest read, or its second copy would be refused as a duplicate.
        good.sort_unstable_by(|a, b| {
            a.tenant_id
                .cmp(&b.tenant_id)
                .then(b.revision.cmp(&a.revision))
        });
        good.dedup_by(|later, kept| later.tenant_id == kept.tenant_id);
        bad.sort_unstable();
        bad.dedup_by(|later, kept| later.0 == kept.0);
        bad.retain(|(t, _)| {
            good.binary_search_by(|b| b.tenant_id.as_str().cmp(t.as_str()))
                .is_err()
        });
        self.health.add_rejected(bad.len() as u64);
        Ok((good, bad))
    }

    /// The stream's newest entry (id, revision), or the start of the stream, the revision
    /// counter, and whether a restore import holds its lock, read together
    /// ([`read_together`]): read apart, a write landing between them would put the counter
    /// past the entry, and the
    /// follower would take that write's entry for a restart of the history and reconcile
    /// again.
    pub(crate) async fn feed_head(
        &self,
        con: &mut MultiplexedConnection,
    ) -> redis::RedisResult<(FeedPosition, Option<u64>, bool, Option<StoreHistory>)> {
        // As bytes: a field an outside writer filled with bytes that are no UTF-8 must not
        // fail every replica's every read of the feed (it stopped the fleet's syncing).
        type Fields = Vec<(Vec<u8>, Vec<u8>)>;
        let mut head = redis::pipe();
        head.cmd("XREVRANGE")
            .arg(self.keys.changes())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .cmd("GET")
            .arg(self.keys.revision())
            .exists(self.keys.restoring())
            .hgetall(self.keys.history());
        let (entries, counter, restoring, history): (Entries, Option<Vec<u8>>, bool, Fields) =
            read_together(con, &mut head).await?;
        let history: BTreeMap<String, String> = history
            .into_iter()
            .map(|(k, v)| (lossy(k), lossy(v)))
            .collect();
        // Written only by the scripts. A hash whose id was deleted by hand names no history,
        // but one that keeps the mark still waits for a confirmation (as a history of an id
        // no replica knows).
        let unconfirmed = history.contains_key("unconfirmed");
        let began = began_by(history.get("began"));
        let history = match history.get("id") {
            Some(id) => Some(StoreHistory {
                id: Arc::from(id.as_str()),
                unconfirmed,
                began,
            }),
            None if unconfirmed => Some(StoreHistory {
                id: Arc::from(""),
                unconfirmed,
                began,
            }),
            None => None,
        };
        let id = history
            .as_ref()
            .map(|h| Arc::clone(&h.id))
            .filter(|id| !id.is_empty());
        let head = entries.into_iter().next().map_or(
            FeedPosition {
                stream_id: "0-0".to_owned(),
                revision: 0,
                history: id.clone(),
                reached: 0,
                ahead: Arc::default(),
            },
            |(id_, fields)| FeedPosition {
                revision: field_u64(&fields, "rev"),
                reached: field_u64(&fields, "rev"),
                ahead: Arc::default(),
                stream_id: id_,
                history: id,
            },
        );
        Ok((head, self.keys.counter(counter)?, restoring, history))
    }

    /// Whether a restore import is writing to a Redis that had no revision counter, or has
    /// since finished (the counter is there now): either way a scan made meanwhile may hold
    /// only part of it. The lock and the counter are read together ([`read_together`]),
    /// because a restore sets one and deletes the other in one step.
    async fn restore_started(&self, con: &mut MultiplexedConnection) -> redis::RedisResult<bool> {
        let mut both = redis::pipe();
        both.exists(self.keys.restoring())
            .exists(self.keys.revision());
        let (lock, counter): (bool, bool) = read_together(con, &mut both).await?;
        Ok(lock || counter)
    }

    /// [`Self::full_table`], asked again over the same connection every [`RESTORE_POLL`]
    /// while a restore import writes and there is no table to keep (a replica serves all of
    /// a restore or none of it). `tell` runs once, when the first refusal comes; `None` if
    /// `stop` says so while waiting.
    pub(crate) async fn full_table_whole<'c>(
        &self,
        con: &mut MultiplexedConnection,
        current: impl FnOnce() -> Option<Served<'c>> + Send + Copy,
        reuse: Option<&BindingTable>,
        tell: impl FnOnce() + Send,
        stop: impl Fn() -> bool + Send,
    ) -> Result<Option<(BindingTable, FeedPosition)>, LoadError> {
        let mut tell = Some(tell);
        loop {
            match self.full_table(con, current, reuse).await {
                Err(LoadError::RestoreUnderWay) => {
                    if let Some(tell) = tell.take() {
                        tell();
                    }
                    if stop() {
                        return Ok(None);
                    }
                    tokio::time::sleep(RESTORE_POLL).await;
                }
                loaded => return loaded.map(Some),
            }
        }
    }

    /// Adds to `index` what the domain index says of `domains` (those not in it yet). A
    /// lookup Redis refuses (the index key of another type) leaves them out, so the bindings
    /// put back keep them, as before the index was asked; a lost connection is an error.
    pub(super) async fn look_up_domains(
        &self,
        con: &mut MultiplexedConnection,
        mut domains: Vec<&str>,
        index: &mut DomainIndex,
    ) -> redis::RedisResult<()> {
        domains.retain(|d| !index.contains_key(*d));
        domains.sort_unstable();
        domains.dedup();
        for chunk in domains.chunks(1000) {
            let owners: Vec<Option<String>> = match redis::cmd("HMGET")
                .arg(self.keys.domains())
                .arg(chunk)
                .query_async(con)
                .await
            {
                Ok(owners) => owners,
                Err(e) if e.is_io_error() || e.is_connection_dropped() => return Err(e),
                Err(e) => {
                    tracing::warn!(key = %self.keys.domains(), error = %e,
                        "the domain index cannot be read: bindings kept for refused records keep their custom domains");
                    return Ok(());
                }
            };
            index.extend(chunk.iter().map(|d| (*d).to_owned()).zip(owners));
        }
        Ok(())
    }

    /// A full table from Redis: the feed position is taken first, so changes made during the
    /// scan are replayed by the follower afterwards.
    ///
    /// `current` gives the table being served (or standing in for it), and is only called when
    /// the load needs it: for tenants whose record is invalid (they keep their current
    /// binding), or to tell an empty Redis from a wiped one. So a start-up against a healthy
    /// Redis never reads the snapshot file.
    ///
    /// `reuse`: a table whose bindings the new one takes where Redis holds the same record
    /// (see [`Self::load_all`]): the one a reconcile replaces.
    ///
    /// Refused (an error, so the caller keeps its table and retries) when Redis holds no
    /// revision counter while `current` has bindings: that Redis was wiped (`FLUSHALL`, a
    /// restart without persistence), or never written through the schema, or a restore import
    /// is writing its records (the counter comes last). Deleting every tenant through the
    /// schema leaves the counter, so it is not refused. With no bindings to keep, it is
    /// refused too while a restore holds its lock ([`LoadError::RestoreUnderWay`]): the records
    /// written so far are only part of the restore.
    pub(crate) async fn full_table<'c>(
        &self,
        con: &mut MultiplexedConnection,
        current: impl FnOnce() -> Option<Served<'c>> + Send,
        reuse: Option<&BindingTable>,
    ) -> Result<(BindingTable, FeedPosition), LoadError> {
        let (head, counter, restoring, history) = self.feed_head(con).await?;
        // Said again by this load (`keeps_other_history`).
        self.keeping
            .store(false, std::sync::atomic::Ordering::Relaxed);
        // The table served, read once and only when needed: when there is no counter, a
        // history to confirm, a refused record or a contested domain.
        let mut current = Some(current);
        let mut served: Option<Option<Served<'c>>> = None;
        let mut served = || *served.get_or_insert_with(|| current.take().and_then(|f| f()));
        // Refused before the scan: replicas retry this while a restore writes its records.
        // Past this check with no counter, the table served is empty: no binding to keep below.
        if counter.is_none() {
            let serving = served().map_or(0, |s| s.table.len());
            if serving > 0 {
                return Err(LoadError::NoHistory { serving });
            }
            // Nothing to keep, but a restore's records so far are only part of it; refused
            // before scanning them, as replicas ask again every 250 ms.
            if restoring {
                return Err(LoadError::RestoreUnderWay);
            }
            // Nothing served here, but replicas serve a history Redis no longer holds: an
            // empty table taken now would answer 404 for every tenant (and a replica starting
            // on it would call itself ready). Refused like a write is (`write.lua`).
            let served = fleet::served_revision(self, con).await?;
            if served > 0 {
                return Err(LoadError::Wiped { served });
            }
        }
        // A history begun by a write while no replica was heard, over the table this replica
        // serves from another history: Redis most likely lost its data while the whole fleet
        // was down, and taking it would unbind every tenant that write did not name.
        if let Some(h) = history.as_ref().filter(|h| h.unconfirmed) {
            let served = served();
            let ours = served.and_then(|s| s.history);
            if let Some(s) = served.filter(|s| !s.table.is_empty()) {
                if ours.is_some_and(|ours| ours != &*h.id) {
                    self.keeping
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(LoadError::UnconfirmedHistory {
                        history: Arc::clone(&h.id),
                        began: h.began,
                        serving: s.table.len(),
                        revision: s.table.revision().get(),
                        store_revision: counter.unwrap_or(0),
                    });
                }
            }
            // Nothing of its own to keep (or a table of no known history), but other replicas
            // keep theirs rather than take this history: joining it would split the fleet.
            // Replicas that start with this one say so once their own load has refused it:
            // they are waited for as a first write waits for the fleet.
            if ours != Some(&*h.id) {
                // Only a replica that has loaded nothing yet waits (one already following
                // saw the fleet's heartbeats for a while).
                let window = if self.position().is_none() {
                    self.fleet_window()
                } else {
                    Duration::ZERO
                };
                if !window.is_zero() {
                    tracing::info!(history = %h.id, wait = ?window,
                        "Redis's history began while no replica was heard and is not confirmed: \
                         waiting for the replicas' heartbeats before taking it (one keeping \
                         another history's bindings keeps it out)");
                }
                let deadline = tokio::time::Instant::now() + window;
                loop {
                    let kept = fleet::kept_by_others(self, con).await?;
                    if kept > 0 {
                        return Err(LoadError::UnconfirmedElsewhere {
                            history: Arc::clone(&h.id),
                            kept,
                        });
                    }
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let (mut bindings, bad) = self.load_all(con, reuse).await?;
        // The records as loaded: those that do not end up in the table were refused.
        let loaded: Vec<Arc<Binding>> = bindings.clone();
        // Asked again after the scan, for a restore that began during it.
        if counter.is_none() && self.restore_started(con).await? {
            return Err(LoadError::RestoreUnderWay);
        }
        // What the store had reached once the scan ended: a record written during it carries
        // at most this (a write changes its record and the counter in one script). A store
        // found behind it later lost writes this table may hold (see `FeedPosition::reached`).
        let after: Option<Vec<u8>> = con.get(self.keys.revision()).await?;
        let after = self.keys.counter(after)?.unwrap_or(0);
        // A refused record's tenant keeps its served binding, which may be an old snapshot's:
        // only with the custom domains the index still gives it.
        let mut put_back = HashSet::new();
        let mut index = DomainIndex::new();
        if !bad.is_empty() {
            if let Some(cur) = served().map(|s| s.table) {
                let old: Vec<&Arc<Binding>> = bad
                    .iter()
                    .filter_map(|(tenant, _)| cur.get(tenant))
                    .collect();
                let domains = old
                    .iter()
                    .flat_map(|b| b.domains.iter().map(|d| d.as_str()));
                self.look_up_domains(con, domains.collect(), &mut index)
                    .await?;
                for b in old {
                    put_back.insert(b.tenant_id.clone());
                    bindings.push(confirmed_by_index(
                        Arc::clone(b),
                        Some(&index),
                        "Redis",
                        Verdicts::Logged,
                    ));
                }
            }
        }
        let contested = contested_domains(&bindings);
        if !contested.is_empty() {
            // The index is asked about the contested domains and those of the served
            // bindings a loser gets back; settling may put back more, whose domains it was
            // not asked about: it is asked, and the settling made again from the start. The
            // index only grows, so this ends; the bound guards a lookup Redis refuses.
            let cur = served().map(|s| s.table);
            let mut ask: Vec<String> = contested
                .iter()
                .map(|(d, _)| d.clone())
                .chain(
                    contested
                        .iter()
                        .flat_map(|(_, claimants)| claimants)
                        .filter_map(|t| cur.and_then(|c| c.get(t.as_str())))
                        .flat_map(|b| b.domains.iter().map(|d| d.as_str().to_owned())),
                )
                .collect();
            // The passes before the last are settled quietly: their verdicts may be undone.
            let settle = |index: &DomainIndex, verdicts| {
                settle_contested(
                    bindings.clone(),
                    &contested,
                    cur,
                    put_back.clone(),
                    Some(index),
                    "Redis",
                    verdicts,
                )
            };
            for pass in 0..MAX_SETTLING_PASSES {
                let known = index.len();
                self.look_up_domains(con, ask.iter().map(String::as_str).collect(), &mut index)
                    .await?;
                // Asked again and nothing learnt (the index cannot be read): the kept
                // bindings keep the domains not asked about.
                if pass > 0 && index.len() == known {
                    break;
                }
                let (kept, back) = settle(&index, Verdicts::Quiet);
                ask = kept
                    .iter()
                    .filter(|b| back.contains(&b.tenant_id))
                    .flat_map(|b| b.domains.iter().map(|d| d.as_str()))
                    .filter(|d| !index.contains_key(*d))
                    .map(str::to_owned)
                    .collect();
                if ask.is_empty() {
                    break;
                }
            }
            bindings = settle(&index, Verdicts::Logged).0;
        }
        let (table, refused) = BindingTable::from_bindings(bindings);
        for e in refused.iter().filter(|_| crate::record_lines::admit()) {
            tracing::warn!(error = %e, "binding refused on load");
        }
        crate::record_lines::summarize("redis");
        let serving = |t: &str| table.get(t).map_or(0, |b| b.revision.get());
        let refusals: BTreeMap<String, u64> = crate::records::not_taken(&loaded, &table)
            .map(|b| b.tenant_id.to_string())
            .chain(bad.iter().map(|(t, _)| t.clone()))
            .map(|t| {
                let r = serving(&t);
                (t, r)
            })
            .collect();
        self.set_refusals(refusals);
        // Every change up to the counter is in the scan; the feed continues after `head`.
        // Writes through the schema put no entry past the counter: one that claims more was
        // written by hand, and is not believed (it would make every later write look old and
        // the fleet report revisions it never applied).
        let revision = match counter {
            Some(c) if head.revision > c => {
                tracing::warn!(
                    entry = %head.stream_id,
                    claims = head.revision,
                    counter = c,
                    "the newest change entry claims a revision past the store's counter; ignored"
                );
                c
            }
            Some(c) => c.max(head.revision),
            None => head.revision,
        };
        self.keeping
            .store(false, std::sync::atomic::Ordering::Relaxed);
        // Records the scan took that were written during it: the feed has their entries
        // after `head`, each of which must be its tenant's (see `FeedPosition::ahead`).
        let ahead: BTreeMap<u64, TenantId> = table
            .iter()
            .filter(|b| b.revision.get() > revision)
            .map(|b| (b.revision.get(), b.tenant_id.clone()))
            .collect();
        Ok((
            // Deletes after the newest record count: the table reflects the store at
            // `revision`, as a follower that applied them would.
            table.at_least(Revision(revision)),
            FeedPosition {
                stream_id: head.stream_id,
                revision,
                history: head.history,
                reached: revision.max(after),
                ahead: Arc::new(ahead),
            },
        ))
    }
}

impl LoadError {
    /// Redis is up, but holds no history this replica takes now: it keeps its table, says
    /// so in its heartbeat, and asks again.
    pub(crate) fn keeps_table(&self) -> bool {
        matches!(
            self,
            Self::NoHistory { .. }
                | Self::UnconfirmedHistory { .. }
                | Self::UnconfirmedElsewhere { .. }
        )
    }
}

/// Why a full load from Redis gave no table ([`RedisStore::full_table`]); the caller keeps
/// what it serves and asks again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// Redis could not be asked, or answered with an error.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// No revision counter while `serving` bindings are served: wiped, never written through
    /// the schema, or a restore import writing.
    #[error(
        "Redis holds no revision counter: it has no history (wiped, or a restore import is \
         under way); keeping the {serving} bindings served now. `nexus-edge tenant import` \
         restores it in one step, or restore Redis from a backup; any other write starts a \
         new history that replicas follow"
    )]
    NoHistory {
        /// Bindings in the table kept.
        serving: usize,
    },
    /// Nothing is served here, no revision counter, and replicas heartbeat revision `served`:
    /// Redis lost its data under them. Not loaded: the table would be empty.
    #[error(
        "Redis holds no revision counter while replicas serve up to revision {served}: it lost \
         its data, and its empty table would unbind every tenant. Restore it (`nexus-edge tenant \
         import` of a replica's snapshot, or a backup), or start a new history with a write \
         made with `--start-new-history`"
    )]
    Wiped {
        /// The highest revision a replica's heartbeat says it applied.
        served: u64,
    },
    /// Redis holds a history begun by a write while no replica was heard serving, not the one
    /// the `serving` bindings served here (up to `revision`) were loaded from: it lost its data
    /// while every replica was down, most likely. Not loaded until an admin confirms it.
    #[error(
        "Redis holds history {history}, begun by {began} while no replica was heard (now at \
         revision {store_revision}), not the one this replica's {serving} bindings (revision \
         {revision}) were loaded from: Redis lost its data while every replica was down, most \
         likely, and taking its table would unbind every tenant it does not hold. \
         Keeping the table served now. To keep these bindings, import a replica's snapshot \
         (`nexus-edge tenant import --allow-older SNAPSHOT`) and then confirm; to serve what \
         Redis holds, confirm: `{confirm}`",
        confirm = confirm_command(history)
    )]
    UnconfirmedHistory {
        /// Redis's history id.
        history: Arc<str>,
        /// What began it.
        began: &'static str,
        /// Bindings in the table kept.
        serving: usize,
        /// The revision of the table kept.
        revision: u64,
        /// Redis's revision counter.
        store_revision: u64,
    },
    /// Redis holds an unconfirmed history that other live replicas do not take (they keep
    /// bindings up to revision `kept`); this one, with nothing of its own to keep, waits too.
    #[error(
        "Redis holds history {history}, begun while no replica was heard and not confirmed, and \
         other replicas keep their bindings (up to revision {kept}) rather than take it: this \
         replica does not take it either, so that every replica routes alike. An admin decides \
         (`nexus-edge replicas`, then `{confirm}`)",
        confirm = confirm_command(history)
    )]
    UnconfirmedElsewhere {
        /// Redis's history id.
        history: Arc<str>,
        /// The highest revision a replica keeping its bindings reports.
        kept: u64,
    },
    /// No revision counter, and this replica's snapshot is there but cannot be used (damaged,
    /// or of a format this build does not read): a replica that wrote one served a table, so
    /// Redis's empty one is not taken for a first deployment's, and the file is kept.
    #[error(
        "Redis holds no revision counter and this replica's snapshot cannot be used \
         ({reason}): it served a table before, so it does not start on Redis's empty one \
         (every tenant 404). Restore Redis (`nexus-edge tenant import` of another replica's \
         snapshot, or a backup), or put a good snapshot there; on a first deployment, remove \
         the file"
    )]
    UnusableSnapshot {
        /// Why the snapshot was refused.
        reason: String,
    },
    /// Nothing is served, and a restore import is writing (or finished during the scan): the
    /// records read are only part of it. Worth asking again soon.
    #[error(
        "a restore import is writing its records to Redis; the whole table is loaded when it \
         finishes"
    )]
    RestoreUnderWay,
}

/// The replies of `reads` as of one moment: in a transaction (`MULTI`/`EXEC`), or, when Redis
/// refuses one for want of memory (at `maxmemory` under `noeviction` it refuses to queue any
/// command, reads included, while it still answers reads), without one, read twice and
/// taken when both agree. The keys these reads take change only in ways a second read
/// shows: a write that moves the counter appends a feed entry under a new id, and the
/// history hash and the restore lock are compared as read (a lock taken and let go between
/// the reads would need a write Redis refuses while full). Before, a replica could neither
/// start nor reconnect until memory was freed.
async fn read_together<T>(
    con: &mut MultiplexedConnection,
    reads: &mut redis::Pipeline,
) -> redis::RedisResult<T>
where
    T: redis::FromRedisValue + PartialEq,
{
    let refused = match reads.clone().atomic().query_async::<T>(con).await {
        Err(e) if e.code() == Some("OOM") => e,
        done => return done,
    };
    for _ in 0..3 {
        let first: T = reads.query_async(con).await?;
        let second: T = reads.query_async(con).await?;
        if first == second {
            return Ok(first);
        }
    }
    Err(refused)
}
