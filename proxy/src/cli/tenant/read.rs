//! The reads: `get`, `list`, `export` and `history`. They write no audit entry.

use std::process::ExitCode;

use nexus_binding_store::records::to_document;
use nexus_binding_store::{AdminError, Binding, BindingRecord, Listing};

use super::args::tenant_id;
use super::print::{print_binding, print_history};
use super::{fail, incomplete, note_empty_prefix, note_unconfirmed, store_history, Command};
use crate::store::Store;

impl Command<'_> {
    /// `tenant get TENANT`.
    pub(super) async fn get(&self, tenant: String) -> ExitCode {
        let (store, json) = (self.store, self.json);
        let admin = store.admin();
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

    /// `tenant list`: every binding; exit 1 if the store left records out.
    pub(super) async fn list(&self) -> ExitCode {
        let (store, json) = (self.store, self.json);
        let admin = store.admin();
        match admin.list().await {
            Ok(listing) => {
                // Asked once Redis has answered: an unreachable one is not waited for twice.
                note_unconfirmed(store).await;
                if listing.bindings.is_empty() {
                    note_empty_prefix(store).await;
                }
                let all = &listing.bindings;
                if json {
                    let records: Vec<BindingRecord> = all.iter().map(Binding::to_record).collect();
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

    /// `tenant export`: a bindings document naming the store's history.
    pub(super) async fn export(&self) -> ExitCode {
        let store = self.store;
        // The history is named in the export, so that an import can tell its revisions
        // from a later history's (a restore counts again). Read on both sides of the
        // listing: a restore between them would label one history's records with
        // another's id.
        let history = match store_history(store).await {
            Ok(h) => h,
            Err(e) => return fail(format!("nothing exported: {e}")),
        };
        match consistent_listing(store).await {
            // An export taken as a backup must not pass for the fleet's table (as over a
            // Redis that lost its data: `AdminError::WipedRead`).
            Ok(_) if note_unconfirmed(store).await => {
                fail("nothing exported: what Redis holds is not what the replicas serve (above)")
            }
            Ok((_, Some((domain, a, b)))) => fail(format!(
                "nothing exported: domain {domain} is claimed by both {a} and {b} in \
                     what was read, {READS} reads over (it moved between them while the store \
                     was read, or a record was written by hand), and such a file would not \
                     import; export again when the writes pause"
            )),
            Ok((listing, None)) => match store_history(store).await {
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

    /// `tenant history TENANT`: the audit entries kept of the tenant's changes.
    pub(super) async fn history(&self, tenant: String) -> ExitCode {
        let json = self.json;
        let admin = self.store.admin();
        let t = match tenant_id(&tenant) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        match admin.history(&t).await {
            Ok(h) => {
                if h.entries.is_empty() && h.unreadable.is_empty() && !json {
                    errln!("nexus-edge: no audit entries for tenant {t}");
                }
                print_history(&h.entries, json);
                for u in &h.unreadable {
                    errln!("nexus-edge: unreadable audit entry: {u}");
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

/// How many times an export reads a Redis store that changed under the read.
const READS: usize = 3;

/// The store's bindings for an export, with a custom domain two of them claim, if they still
/// do at the last read. Redis is read in batches, not at one instant: a custom domain that
/// moves between two tenants during the read can show in both records (such a file would not
/// import, nor serve the domain to either tenant), or in one that the domain index, read after
/// them, then gives the other, which leaves that record out. Read again then, up to [`READS`]
/// times (a record left out for damage stays left out, at the cost of two more reads); a
/// bindings file is read whole, and exported as it is.
async fn consistent_listing(store: &Store) -> Result<(Listing, Option<Claimed>), AdminError> {
    let admin = store.admin();
    let redis = matches!(store, Store::Redis(_));
    let mut listing = admin.list().await?;
    let mut reads = 1;
    loop {
        let twice = redis.then(|| claimed_twice(&listing)).flatten();
        if reads == READS || !redis || (listing.left_out.is_empty() && twice.is_none()) {
            return Ok((listing, twice));
        }
        listing = admin.list().await?;
        reads += 1;
    }
}

/// A custom domain two records claim, with the two tenants.
type Claimed = (String, String, String);

/// A custom domain two records of a Redis `listing` claim: the write script never lets two
/// records hold one, so it moved while the store was read (or a record was written by hand).
fn claimed_twice(listing: &Listing) -> Option<Claimed> {
    let mut holders = std::collections::HashMap::new();
    for b in &listing.bindings {
        for d in &b.domains {
            if let Some(first) = holders.insert(d.as_str(), b.tenant_id.as_str()) {
                return Some((d.to_string(), first.to_owned(), b.tenant_id.to_string()));
            }
        }
    }
    None
}
