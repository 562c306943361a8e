//! `nexus-edge tenant ...` and `nexus-edge replicas`: admin operations on the configured
//! binding store (Redis, or the JSON file). Every write is atomic and audited.
//!
//! Here each operation is run against the store; its command line and the checks of its
//! values are in `args`, what it prints in `print`, and the wait for the fleet of replicas (and
//! `nexus-edge replicas`) in `fleet`.

use std::process::ExitCode;
use std::sync::Arc;

use nexus_binding_store::records::{parse_records, to_document, ParsedRecords};
use nexus_binding_store::snapshot;
use nexus_binding_store::{
    Actor, AdminError, Binding, BindingRecord, ImportSource, InstanceId, Listing, Mutation,
    Revision, UpstreamUrl,
};

use crate::store::Store;
use nexus_binding_store::redis_store::{RedisStore, WipedStore};

mod args;
mod fleet;
mod print;

use args::{printable, refuse_repeated_members, tenant_id, NEEDS_REDIS};
pub(super) use args::{TenantArgs, TenantOp, WaitArgs};
pub(super) use fleet::replicas;
use fleet::wait_fleet;
use print::{print_binding, print_confirmation, print_history};

/// The runtime an admin command runs its store calls on: one thread, as one command runs.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("nexus-edge: {msg}");
    ExitCode::FAILURE
}

/// The exit of a listing or an export: 1 when the store refused records and so left them
/// out, each named on stderr. The readable bindings are printed either way, but a backup
/// taken by `export > file && …` must not pass for whole.
fn incomplete(left_out: &[String]) -> ExitCode {
    if left_out.is_empty() {
        return ExitCode::SUCCESS;
    }
    for record in left_out {
        eprintln!("nexus-edge: record refused; left out: {record}");
    }
    fail(format!(
        "{} record(s) left out: the output is incomplete",
        left_out.len()
    ))
}

/// Refuses to put back into a Redis whose history waits for a confirmation anything but the
/// newest table live replicas keep: confirmed after it, the import would undo the changes
/// only a replica still holds. A snapshot of their history must be at least as recent as
/// what each keeps of it; a snapshot of another history, or a bindings file, says nothing of
/// theirs. (`--start-new-history` lets it through.)
async fn newest_kept(store: &Store, source: &ImportSource) -> Result<(), String> {
    let Store::Redis(r) = store else {
        return Ok(());
    };
    if !matches!(r.unconfirmed_history().await, Ok(Some(_))) {
        return Ok(());
    }
    let Ok(list) = r.replicas().await else {
        return Ok(());
    };
    let keepers: Vec<_> = list.iter().filter(|x| x.live && x.keeps).collect();
    if keepers.is_empty() {
        return Ok(());
    }
    let anyway = "or pass --start-new-history to import it anyway (into a Redis that lost its \
                  data meanwhile, that flag also lets the import start a new history unchecked)";
    let (revision, history) = match source {
        ImportSource::Records => {
            return Err(format!(
                "replicas keep their bindings rather than take Redis's history, and a bindings \
                 file says nothing of how recent it is: put back the snapshot of the replica \
                 with the highest revision in `nexus-edge replicas`, {anyway}"
            ))
        }
        ImportSource::Snapshot {
            revision, history, ..
        } => (revision, history),
    };
    let known: Vec<&str> = keepers
        .iter()
        .filter_map(|x| x.history.as_deref())
        .collect();
    if let Some(theirs) = history.as_deref() {
        if !known.is_empty() && !known.contains(&theirs) {
            return Err(format!(
                "this snapshot is of history {theirs}, not one the replicas keep ({}): put back \
                 the snapshot of the replica with the highest revision in `nexus-edge \
                 replicas`, {anyway}",
                known.join(", ")
            ));
        }
    }
    let newer = keepers
        .iter()
        .filter(|x| x.applied_revision > revision.get())
        .filter(|x| history.is_none() || x.history.is_none() || x.history == *history)
        .max_by_key(|x| x.applied_revision);
    match newer {
        Some(x) => Err(format!(
            "replica {} keeps revision {} of this snapshot's history, newer than the snapshot \
             (revision {revision}): put back its snapshot (the replica with the highest revision \
             in `nexus-edge replicas`), {anyway}",
            x.id, x.applied_revision
        )),
        None => Ok(()),
    }
}

/// Says, on stderr, when Redis's history waits for an admin's confirmation (`tenant
/// confirm-history`). Returns true when live replicas keep another history's bindings
/// meanwhile: what Redis holds is then not what they serve.
async fn note_unconfirmed(store: &Store) -> bool {
    let Store::Redis(r) = store else {
        return false;
    };
    let Ok(Some(id)) = r.unconfirmed_history().await else {
        return false;
    };
    let refusing: Vec<String> = r
        .replicas()
        .await
        .map(|list| {
            list.into_iter()
                .filter(|x| x.live && x.keeps)
                .map(|x| x.id)
                .collect()
        })
        .unwrap_or_default();
    let confirm = nexus_binding_store::redis_store::confirm_command(&id);
    if refusing.is_empty() {
        eprintln!(
            "nexus-edge: note: Redis's history {id} began while no replica was heard, and is \
             not confirmed: a replica that starts with another history's bindings (its \
             snapshot) keeps them rather than take it. Once Redis's table is whole (a new \
             store, or one put back), run `{confirm}`"
        );
        return false;
    }
    eprintln!(
        "nexus-edge: warning: Redis holds history {id}, begun while no replica was heard and \
         not confirmed, and replicas {} keep the bindings of another history rather than take \
         it: what Redis holds is not what they serve. Put back what should stay (`nexus-edge \
         tenant import --allow-older SNAPSHOT`), then run `{confirm}`",
        refusing.join(", ")
    );
    true
}

/// The history a Redis store holds (`None` for a file store, which has none, or for a Redis
/// that names none).
async fn store_history(store: &Store) -> Result<Option<String>, AdminError> {
    match store {
        Store::Redis(r) => r.history_id().await,
        Store::File(_) => Ok(None),
    }
}

/// Says so when Redis holds nothing at all under the key prefix (no revision counter, no
/// replica heartbeat): a new store, or a `key_prefix` that names another store than the
/// routers' (a typo reads as an empty store, every tenant "not found").
async fn note_empty_prefix(store: &Store) {
    let Store::Redis(r) = store else { return };
    if matches!(r.counter().await, Ok(None)) && r.replicas().await.is_ok_and(|l| l.is_empty()) {
        eprintln!("{}", empty_prefix_note(r));
    }
}

fn empty_prefix_note(r: &RedisStore) -> String {
    format!(
        "nexus-edge: note: Redis holds nothing under key prefix {:?} (no revision counter, no \
         replica heartbeat): a new store, or `[store] key_prefix` names another one than the \
         routers'",
        r.key_prefix()
    )
}

/// Admin commands print the store's warnings (a record refused, a failover waited out) to
/// stderr, and nothing chattier unless `RUST_LOG` asks for it.
fn admin_logging(settings: &nexus_config::Settings) {
    crate::logging::init(&nexus_config::LogSettings {
        filter: "warn".to_owned(),
        ..settings.log.clone()
    });
}

/// Runs a tenant command.
pub(super) fn run(args: TenantArgs) -> ExitCode {
    let settings = match super::load_settings(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    admin_logging(&settings);
    if args.config.is_none() {
        // Demo tenants listed as if they were the store's would mislead.
        eprintln!(
            "nexus-edge: note: no --config (nor NEXUS_EDGE_CONFIG): this is the embedded demo \
             store"
        );
    }
    let wiped = if args.start_new_history {
        WipedStore::StartNewHistory
    } else {
        WipedStore::Refuse
    };
    let store = match Store::open_admin(&settings.store, wiped) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    rt.block_on(exec(&store, &settings.tenancy.base_domains, args))
}

/// Refuses a binding's custom domains that the router would never route to its tenant: a
/// base domain itself, a tenant's subdomain (routed by name, not through the domain index),
/// or a name under another tenant's subdomain (that tenant's namespace). Said here, at write
/// time, instead of leaving a claim that only ever answers 404 and blocks the rightful owner.
fn check_domains(binding: &Binding, base_domains: &[String]) -> Result<(), String> {
    use crate::host::{resolve_host, HostTarget};
    let tenant = binding.tenant_id.as_str();
    for domain in &binding.domains {
        let why = match resolve_host(domain.as_str(), base_domains) {
            Ok(HostTarget::CustomDomain(_)) => continue,
            Ok(HostTarget::UnderTenant { tenant: owner, .. }) if owner.as_str() == tenant => {
                continue
            }
            Ok(HostTarget::UnderTenant { tenant: owner, .. }) => {
                format!("it is under tenant {}'s subdomain", owner.as_str())
            }
            Ok(HostTarget::Subdomain(owner)) => {
                format!(
                    "it is tenant {}'s subdomain, routed by name",
                    owner.as_str()
                )
            }
            Ok(HostTarget::Reserved) => "it is a base domain, no tenant's".to_owned(),
            Err(e) => e.to_string(),
        };
        return Err(format!("{tenant}: domain {domain}: {why}"));
    }
    Ok(())
}

async fn exec(store: &Store, base_domains: &[String], args: TenantArgs) -> ExitCode {
    // An audit entry must name someone: an empty `--actor` is a script's unset variable.
    // Reading commands write no entry, so a shared wrapper passing one to them is harmless.
    let writes = !matches!(
        args.op,
        TenantOp::Get { .. }
            | TenantOp::List
            | TenantOp::Export
            | TenantOp::History { .. }
            | TenantOp::Wait { .. }
    );
    if writes && args.actor.as_deref().is_some_and(|a| a.trim().is_empty()) {
        return fail("--actor is empty: name who makes the change (or leave it out for $USER)");
    }
    let login = || {
        ["USER", "LOGNAME"]
            .into_iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
    };
    let name = args.actor.clone().or_else(login).unwrap_or_else(|| {
        if writes {
            // Audited as nobody in particular: said, so that it is not found out later.
            eprintln!(
                "nexus-edge: neither --actor nor $USER nor $LOGNAME names who makes this \
                 change: the audit entry says `unknown`"
            );
        }
        "unknown".to_owned()
    });
    // Kept as said, without the blanks at its ends (` bob ` is bob).
    let actor = Actor {
        name: name.trim().to_owned(),
        reason: args.reason.as_deref().map(|r| r.trim().to_owned()),
    };
    // Checked for writes only: a reading command has nothing to audit.
    if writes {
        if let Err(e) = printable("--actor (or $USER)", Some(&actor.name))
            .and_then(|()| printable("--reason", actor.reason.as_deref()))
        {
            return fail(e);
        }
    }
    let admin = store.admin();
    let json = args.json;
    let start_new_history = args.start_new_history;
    let write = |tenant: String, m: Mutation, expect: Option<u64>, wait: Option<WaitArgs>| {
        let actor = actor.clone();
        async move {
            let t = match tenant_id(&tenant) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            // The fleet to wait for. Refused before the write: after it, the exit code would
            // say the change failed when it was made, and a script would make it again.
            let waiting = wait.filter(|w| w.wait);
            let fleet = match (store, &waiting) {
                (Store::Redis(r), Some(_)) => Some(r),
                (_, Some(_)) => return fail(format!("--wait {NEEDS_REDIS}")),
                (_, None) => None,
            };
            // Redis's clock before the write: --wait counts only heartbeats written since.
            let before = match fleet {
                Some(r) => r.clock_ms().await.ok(),
                None => None,
            };
            // A rebind that names no API URL leaves the tenant's: said after the write.
            let api_kept = matches!(m, Mutation::Rebind { api_url: None, .. });
            match admin.apply(&t, m, expect.map(Revision), &actor).await {
                Ok((rev, after)) => {
                    if let Some(api) = after
                        .as_ref()
                        .and_then(|b| b.api_url.as_ref())
                        .filter(|_| api_kept)
                    {
                        eprintln!(
                            "nexus-edge: note: API traffic of {t} still goes to {api}; pass \
                             --api-url to move it too, or --clear-api-url to send it to the \
                             instance URL"
                        );
                    }
                    note_unconfirmed(store).await;
                    // (A wait says so itself: it names the live replicas.)
                    if let (Store::Redis(r), None) = (store, &waiting) {
                        if r.any_heartbeat().await.is_ok_and(|any| !any) {
                            eprintln!(
                                "nexus-edge: note: no replica heartbeat is kept under this key \
                                 prefix: no router follows it (is [store] key_prefix the \
                                 routers' own?), or none has for an hour; the change is written"
                            );
                        }
                    }
                    let written = match &after {
                        Some(b) => serde_json::to_value(b.to_record()).unwrap_or_default(),
                        None => serde_json::json!({"deleted": t.as_str(), "revision": rev.get()}),
                    };
                    match (&after, json) {
                        // With --wait, one JSON document holds both (see `wait_fleet`).
                        (_, true) if waiting.is_some() => {}
                        (Some(b), _) => print_binding(b, json),
                        (None, true) => outln!("{written}"),
                        (None, false) => outln!("{t} deleted at revision {rev}"),
                    }
                    match (fleet, waiting) {
                        (Some(r), Some(w)) => {
                            let doc = json.then_some(("written", written));
                            let present = Some(after.is_some());
                            wait_fleet(r, &t, rev, w.timeout, before, doc, present).await
                        }
                        _ => ExitCode::SUCCESS,
                    }
                }
                Err(e @ (AdminError::Conflict { .. } | AdminError::Exists { .. })) => {
                    eprintln!("nexus-edge: {e}");
                    ExitCode::from(3)
                }
                Err(e @ AdminError::NotFound(_)) => {
                    note_empty_prefix(store).await;
                    fail(e)
                }
                Err(e) => fail(e),
            }
        }
    };
    match args.op {
        TenantOp::Put {
            file,
            expect_revision,
            wait,
        } => {
            // A record is small: read at most 16 MiB of it, from a file, a pipe (`-` for
            // standard input, `<(jq ...)`) or whatever the admin names.
            const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;
            let read = |from: &mut dyn std::io::Read| -> std::io::Result<String> {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(from, MAX_RECORD_BYTES + 1),
                    &mut bytes,
                )?;
                if bytes.len() as u64 > MAX_RECORD_BYTES {
                    return Err(std::io::Error::other(format!(
                        "larger than {MAX_RECORD_BYTES} bytes"
                    )));
                }
                String::from_utf8(bytes).map_err(std::io::Error::other)
            };
            // Every refusal names where the record came from.
            let source = if file.as_os_str() == "-" {
                "standard input".to_owned()
            } else {
                file.display().to_string()
            };
            let text = if file.as_os_str() == "-" {
                read(&mut std::io::stdin())
            } else {
                std::fs::File::open(&file).and_then(|mut f| read(&mut f))
            };
            let text = match text {
                Ok(s) => s,
                Err(e) => return fail(format!("{source}: {e}")),
            };
            if let Err(e) = refuse_repeated_members(text.as_bytes()) {
                return fail(format!("{source}: {e}"));
            }
            let value: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => return fail(format!("{source}: not JSON: {e}")),
            };
            if value.get("bindings").is_some() && value.get("tenant_id").is_none() {
                return fail(format!(
                    "{source}: a bindings file, not one record: `tenant import` puts every \
                     record of one"
                ));
            }
            let binding = match nexus_binding_store::records::parse_record(&value) {
                Ok(b) => b,
                Err((_, m)) => return fail(format!("{source}: invalid record: {m}")),
            };
            if let Err(e) = check_domains(&binding, base_domains) {
                return fail(format!("{source}: invalid record: {e}"));
            }
            let tenant = binding.tenant_id.to_string();
            write(
                tenant,
                Mutation::Put(Box::new(binding)),
                expect_revision,
                Some(wait),
            )
            .await
        }
        TenantOp::Get { tenant } => {
            let t = match tenant_id(&tenant) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            match admin.get(&t).await {
                Ok(Some(b)) => {
                    print_binding(&b, json);
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    note_empty_prefix(store).await;
                    fail(AdminError::NotFound(t))
                }
                Err(e) => fail(e),
            }
        }
        TenantOp::List => {
            match admin.list().await {
                Ok(listing) => {
                    // Asked once Redis has answered: an unreachable one is not waited for twice.
                    note_unconfirmed(store).await;
                    if listing.bindings.is_empty() {
                        note_empty_prefix(store).await;
                    }
                    let all = &listing.bindings;
                    if json {
                        let records: Vec<BindingRecord> =
                            all.iter().map(Binding::to_record).collect();
                        outln!(
                            "{}",
                            serde_json::to_string_pretty(&records).unwrap_or_default()
                        );
                    } else {
                        all.iter().for_each(|b| print_binding(b, false));
                    }
                    incomplete(&listing.left_out)
                }
                Err(e) => fail(e),
            }
        }
        TenantOp::Rebind {
            tenant,
            instance_id,
            instance_url,
            api_url,
            clear_api_url,
            expect_revision,
            wait,
        } => {
            let instance_id = match InstanceId::parse(&instance_id) {
                Ok(i) => i,
                Err(e) => return fail(e),
            };
            let instance_url = match UpstreamUrl::parse("instance_url", &instance_url) {
                Ok(u) => u,
                Err(e) => return fail(e),
            };
            let api_url = match (api_url, clear_api_url) {
                (Some(a), _) => match UpstreamUrl::parse("api_url", &a) {
                    Ok(u) => Some(Some(u)),
                    Err(e) => return fail(e),
                },
                (None, true) => Some(None),
                (None, false) => None,
            };
            let m = Mutation::Rebind {
                instance_id,
                instance_url,
                api_url,
            };
            write(tenant, m, expect_revision, Some(wait)).await
        }
        TenantOp::SetStatus {
            tenant,
            status,
            expect_revision,
            wait,
        } => {
            write(
                tenant,
                Mutation::SetStatus(status),
                expect_revision,
                Some(wait),
            )
            .await
        }
        TenantOp::Delete {
            tenant,
            expect_revision,
            wait,
        } => write(tenant, Mutation::Delete, expect_revision, Some(wait)).await,
        TenantOp::Wait {
            tenant,
            revision,
            timeout,
        } => {
            let t = match tenant_id(&tenant) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            let Store::Redis(r) = store else {
                return fail(format!("wait {NEEDS_REDIS}"));
            };
            // A revision the store has not reached was never written: waiting for it would
            // take the whole timeout and then blame the replicas.
            match r.counter().await {
                Ok(Some(c)) if (1..=c).contains(&revision) => {}
                Ok(c) => {
                    return fail(format!(
                        "revision {revision} is not one the store has written (it is at \
                         revision {}): give the revision the write printed",
                        c.unwrap_or(0)
                    ))
                }
                Err(e) => return fail(e),
            }
            // A revision of another tenant's change (a mistyped tenant) would be confirmed
            // without a word about this tenant's record. Changes older than the audit kept
            // cannot be told apart, and an unreadable audit leaves the wait to say what it can.
            if let Ok(h) = store.admin().history(&t).await {
                let kept: Vec<u64> = h.entries.iter().map(|e| e.revision).collect();
                let older = kept.first().is_some_and(|&o| revision < o);
                if !kept.contains(&revision) && !older && h.unreadable.is_empty() {
                    return fail(match kept.last() {
                        None => format!("no change of tenant {t} is recorded"),
                        Some(last) => format!(
                            "revision {revision} is not a change of tenant {t} (its latest is \
                             revision {last}; `nexus-edge tenant history {t}` lists them)"
                        ),
                    });
                }
            }
            // Only heartbeats written from now on count, as for a wait right after a write:
            // every live replica says again what it has applied.
            let now = r.clock_ms().await.ok();
            let doc = json.then(|| {
                (
                    "waited_for",
                    serde_json::json!({"tenant": t.as_str(), "revision": revision}),
                )
            });
            note_unconfirmed(store).await;
            wait_fleet(r, &t, Revision(revision), timeout, now, doc, None).await
        }
        TenantOp::Import { file, allow_older } => {
            let bytes = match nexus_config::files::read_regular(
                &file,
                nexus_binding_store::records::MAX_BINDINGS_FILE_BYTES,
            ) {
                Ok(b) => b,
                Err(e) => return fail(format!("{}: {e}", file.display())),
            };
            if !snapshot::is_snapshot(&bytes) {
                if let Err(e) = refuse_repeated_members(&bytes) {
                    return fail(format!("{}: {e}", file.display()));
                }
            }
            // A replica's snapshot is the fleet's table when Redis lost it: restorable as is.
            let (parsed, source) = if snapshot::is_snapshot(&bytes) {
                match snapshot::parse_snapshot(&file, &bytes) {
                    Ok(snap) => (
                        ParsedRecords {
                            bindings: snap.table.iter().cloned().collect(),
                            ..ParsedRecords::default()
                        },
                        ImportSource::Snapshot {
                            revision: snap.revision,
                            key_prefix: snap.key_prefix,
                            history: snap.history,
                        },
                    ),
                    Err(e) => return fail(e),
                }
            } else {
                match parse_records(&bytes) {
                    Ok(p) => (p, ImportSource::Records),
                    Err(e) => return fail(format!("{}: {e}", file.display())),
                }
            };
            let mut misplaced: Vec<String> = parsed
                .bindings
                .iter()
                .filter_map(|b| check_domains(b, base_domains).err())
                .collect();
            // Checked here for every store: a Redis import writes record by record, and
            // would stop at the second claimant with the first one written.
            misplaced.extend(
                nexus_binding_store::records::contested_domains(&parsed.bindings)
                    .into_iter()
                    .map(|(domain, tenants)| {
                        let names: Vec<&str> = tenants.iter().map(|t| t.as_str()).collect();
                        format!("domain {domain} is claimed by {}", names.join(" and "))
                    }),
            );
            if !parsed.problems.is_empty() || !misplaced.is_empty() {
                for p in &parsed.problems {
                    eprintln!("nexus-edge: {}: {p}", file.display());
                }
                for p in &misplaced {
                    eprintln!("nexus-edge: {}: {p}", file.display());
                }
                return fail("nothing imported: fix the records above first");
            }
            if !allow_older {
                // An export or snapshot of another history: its revisions and the store's
                // count from different starts (a restore began the store's again), so no
                // comparison below could tell that it undoes the changes made since.
                let from = match &source {
                    ImportSource::Snapshot { history, .. } => history.as_ref(),
                    ImportSource::Records => parsed.history.as_ref(),
                };
                if let Some(from) = from {
                    match store_history(store).await {
                        Ok(Some(now)) if now != *from => {
                            return fail(format!(
                                "nothing imported: the file is of history {from}, and the store \
                                 holds history {now} (Redis lost its data and was restored or \
                                 written again since, or the file is another store's): its \
                                 revisions cannot be compared with the store's, and writing it \
                                 may undo changes made since; pass --allow-older to write it \
                                 anyway"
                            ))
                        }
                        Ok(_) => {}
                        Err(e) => return fail(format!("nothing imported: {e}")),
                    }
                }
                // Read only to compare. A store that looks wiped cannot be listed: a restore
                // into it is checked on its own terms, by the import.
                let stored = match admin.list().await {
                    Ok(stored) => Some(stored),
                    Err(AdminError::WipedRead { .. }) => None,
                    // A bindings file that cannot be read (none yet: a new store) holds
                    // nothing to compare with; the import says what it does with a missing
                    // one (makes it, or refuses one whose audit log says it was lost).
                    Err(_) if !matches!(store, Store::Redis(_)) => None,
                    Err(e) => return fail(format!("nothing imported: {e}")),
                };
                if let Some(stored) = stored {
                    let older = older_than_store(&parsed.bindings, &stored);
                    if !older.is_empty() {
                        for o in &older {
                            eprintln!("nexus-edge: {}: {o}", file.display());
                        }
                        return fail(
                            "nothing imported: the file is older than the store (above), and \
                             writing it would undo the changes made since; pass --allow-older \
                             to write it anyway",
                        );
                    }
                }
            }
            if !start_new_history {
                if let Err(e) = newest_kept(store, &source).await {
                    return fail(format!("nothing imported: {e}"));
                }
            }
            match admin.import(parsed.bindings, &actor, source).await {
                Ok(n) => {
                    note_unconfirmed(store).await;
                    if json {
                        outln!("{}", serde_json::json!({ "imported": n }));
                    } else {
                        outln!("imported {n} bindings");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        TenantOp::ConfirmHistory { history } => {
            let Store::Redis(r) = store else {
                return fail(
                    "confirm-history needs the Redis store (a bindings file has no history to \
                     confirm)",
                );
            };
            match r.confirm_history(history.as_deref(), &actor).await {
                Ok(c) => {
                    print_confirmation(&c, json);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        TenantOp::Export => {
            // The history is named in the export, so that an import can tell its revisions
            // from a later history's (a restore counts again). Read on both sides of the
            // listing: a restore between them would label one history's records with
            // another's id.
            let history = match store_history(store).await {
                Ok(h) => h,
                Err(e) => return fail(format!("nothing exported: {e}")),
            };
            match admin.list().await {
                // An export taken as a backup must not pass for the fleet's table (as over a
                // Redis that lost its data: `AdminError::WipedRead`).
                Ok(_) if note_unconfirmed(store).await => fail(
                    "nothing exported: what Redis holds is not what the replicas serve (above)",
                ),
                Ok(listing) => match store_history(store).await {
                    Ok(after) if after == history => {
                        out!(
                            "{}",
                            to_document(listing.bindings.iter(), history.as_deref())
                        );
                        incomplete(&listing.left_out)
                    }
                    Ok(_) => fail(
                        "nothing exported: the store began another history while it was read \
                         (a restore); export again",
                    ),
                    Err(e) => fail(format!("nothing exported: {e}")),
                },
                Err(e) => fail(e),
            }
        }
        TenantOp::History { tenant } => {
            let t = match tenant_id(&tenant) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            match admin.history(&t).await {
                Ok(h) => {
                    if h.entries.is_empty() && h.unreadable.is_empty() && !json {
                        eprintln!("nexus-edge: no audit entries for tenant {t}");
                    }
                    print_history(&h.entries, json);
                    for u in &h.unreadable {
                        eprintln!("nexus-edge: unreadable audit entry: {u}");
                    }
                    if h.unreadable.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        fail(format!(
                            "the history above leaves out {} unreadable entries",
                            h.unreadable.len()
                        ))
                    }
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// The records of an import that would undo changes the store has since: a record older
/// than the store's record of its tenant, and a record of a tenant the store does not hold
/// while it has changes newer than that record, deletes included (the tenant was deleted
/// since, or the file is another store's). A record without a revision (written by hand) is
/// never older.
fn older_than_store(file: &[Arc<Binding>], stored: &Listing) -> Vec<String> {
    let newest = stored
        .bindings
        .iter()
        .map(|b| b.revision)
        .max()
        .unwrap_or_default()
        .max(stored.revision);
    let by_tenant: std::collections::HashMap<&str, &Binding> = stored
        .bindings
        .iter()
        .map(|b| (b.tenant_id.as_str(), b))
        .collect();
    file.iter()
        .filter(|b| b.revision > Revision::ZERO)
        .filter_map(|b| match by_tenant.get(b.tenant_id.as_str()) {
            Some(now) if now.revision > b.revision => Some(format!(
                "tenant {}: the file holds revision {}, the store revision {}: older",
                b.tenant_id, b.revision, now.revision
            )),
            None if newest > b.revision => Some(format!(
                "tenant {}: not in the store, which holds changes up to revision {} while the \
                 file's record is of revision {}: deleted since, or another store's",
                b.tenant_id, newest, b.revision
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::print::changed_members;
    use super::*;

    fn test_binding(tenant: &str, revision: u64) -> Binding {
        nexus_binding_store::records::parse_record(&serde_json::json!({
            "tenant_id": tenant, "subscription_id": "s", "instance_id": "i",
            "instance_url": "http://10.0.0.1/", "status": "active", "plan": "team",
            "region": "r", "revision": revision,
        }))
        .expect("a valid record")
    }

    #[test]
    fn history_names_every_member_a_change_moved() {
        let old = test_binding("acme", 3).to_record();
        let mut new = old.clone();
        new.revision = 4;
        new.identity_org_id = Some("org-evil".to_owned());
        new.plan = "enterprise".to_owned();
        new.domains = vec!["app.acme.test".to_owned()];
        assert_eq!(
            changed_members(&old, &new),
            [
                "domains - -> [\"app.acme.test\"]",
                "identity_org_id - -> org-evil",
                "plan team -> enterprise",
            ]
        );
        assert!(changed_members(&old, &old).is_empty());
    }

    #[test]
    fn an_import_older_than_the_store_is_named_tenant_by_tenant() {
        let mut stored = Listing {
            bindings: [("acme", 32), ("globex", 5)]
                .iter()
                .map(|(t, r)| test_binding(t, *r))
                .collect(),
            revision: Revision(32),
            left_out: Vec::new(),
        };
        // (tenant, revision in the file, named as older)
        let cases = [
            ("acme", 29, true),
            ("acme", 32, false),
            ("acme", 40, false),
            // Written by hand: no revision, never older.
            ("acme", 0, false),
            // Not in the store, which holds newer changes: deleted since.
            ("initech", 21, true),
            // Not in the store, and newer than anything in it.
            ("hooli", 33, false),
            ("globex", 4, true),
        ];
        for (tenant, rev, older) in cases {
            let file = vec![Arc::new(test_binding(tenant, rev))];
            let named = older_than_store(&file, &stored);
            assert_eq!(!named.is_empty(), older, "{tenant} at {rev}: {named:?}");
        }
        // A delete is the store's newest change: a tenant deleted after the file was taken
        // is named, though every record left is older than the file's.
        stored.revision = Revision(40);
        let file = vec![Arc::new(test_binding("initech", 36))];
        assert_eq!(older_than_store(&file, &stored).len(), 1);
    }
}
