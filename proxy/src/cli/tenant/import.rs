//! Putting a store back: `tenant import` (a bindings file, an export or a replica's
//! snapshot) and `tenant confirm-history`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use nexus_binding_store::records::{parse_records, ParsedRecords};
use nexus_binding_store::snapshot;
use nexus_binding_store::{
    AdminError, Binding, ImportError, ImportSeen, ImportSource, Listing, Revision,
};

use super::print::print_confirmation;
use super::{fail, note_unconfirmed, store_history, Command};
use crate::admin_input::{check_domains, refuse_repeated_members};
use crate::store::Store;

impl Command<'_> {
    /// `tenant import FILE`: every record of the file, or nothing, with the checks that keep
    /// an old or foreign file from undoing changes made since (`--allow-older` passes them).
    pub(super) async fn import(&self, file: PathBuf, allow_older: bool) -> ExitCode {
        let (store, json, actor) = (self.store, self.json, &self.actor);
        let (base_domains, start_new_history) = (self.base_domains, self.start_new_history);
        let admin = store.admin();
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
        // What the check below read of the store: each record is then written only over
        // the one it saw (a change made during the import is not undone either).
        let mut seen = ImportSeen::unchecked();
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
                seen = ImportSeen::read(
                    stored
                        .bindings
                        .iter()
                        .map(|b| (b.tenant_id.clone(), b.revision)),
                );
            }
        }
        if !start_new_history {
            if let Err(e) = newest_kept(store, &source).await {
                return fail(format!("nothing imported: {e}"));
            }
        }
        match admin.import(parsed.bindings, actor, source, &seen).await {
            Err(ImportError {
                written,
                tenant: Some(tenant),
                error:
                    AdminError::Conflict {
                        expected, actual, ..
                    },
            }) => fail(format!(
                "{}: tenant {tenant} changed after the import's check read it (revision \
                 {expected} then, {actual} now), so its record was not written over; {written} \
                 records were written before it. Look at it (`tenant history {tenant}`), then \
                 export again, or import with --allow-older to write the file's record anyway",
                if written == 0 {
                    "nothing imported"
                } else {
                    "import stopped"
                }
            )),
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

    /// `tenant confirm-history`: lets replicas take a history begun while none was heard.
    pub(super) async fn confirm_history(&self, history: Option<String>) -> ExitCode {
        let (store, json, actor) = (self.store, self.json, &self.actor);
        let Store::Redis(r) = store else {
            return fail(
                "confirm-history needs the Redis store (a bindings file has no history to \
                 confirm)",
            );
        };
        match r.confirm_history(history.as_deref(), actor).await {
            Ok(c) => {
                print_confirmation(&c, json);
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        }
    }
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

/// The records of an import that would undo changes the store has since: a record older
/// than the store's record of its tenant, and a record of a tenant the store does not hold
/// while it has changes newer than that record, deletes included (the tenant was deleted
/// since, or the file is another store's). A record without a revision (written by hand) is
/// never older, nor one that equals the store's but for its revision: it undoes nothing (the
/// same export imported twice, each import having written every record anew).
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
            Some(now) if now.revision > b.revision && !now.same_but_revision(b) => Some(format!(
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
    use super::*;
    use crate::cli::tenant::test_binding;

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
        // The file's records differ from the store's (another plan): what it would write back.
        let changed = |tenant: &str, rev: u64| {
            let mut b = test_binding(tenant, rev);
            b.plan = nexus_binding_store::model::Plan::Solo;
            Arc::new(b)
        };
        for (tenant, rev, older) in cases {
            let file = vec![changed(tenant, rev)];
            let named = older_than_store(&file, &stored);
            assert_eq!(!named.is_empty(), older, "{tenant} at {rev}: {named:?}");
        }
        // A delete is the store's newest change: a tenant deleted after the file was taken
        // is named, though every record left is older than the file's.
        stored.revision = Revision(40);
        let file = vec![Arc::new(test_binding("initech", 36))];
        assert_eq!(older_than_store(&file, &stored).len(), 1);
        // Older, but what the store holds: the same export imported again undoes nothing.
        let file = vec![Arc::new(test_binding("acme", 29))];
        assert!(older_than_store(&file, &stored).is_empty());
    }
}
