//! `tenant wait TENANT REVISION`: waits, after the fact, for the live replicas to apply a
//! change written earlier (as `--wait` does right after a write).

use std::process::ExitCode;
use std::time::Duration;

use nexus_binding_store::Revision;

use super::args::{tenant_id, NEEDS_REDIS};
use super::fleet::{wait_fleet, Awaited};
use super::{fail, note_unconfirmed, Command};
use crate::store::Store;

impl Command<'_> {
    /// Refuses a revision the store never wrote, or one of another tenant's change, before
    /// waiting `timeout` at most.
    pub(super) async fn wait(&self, tenant: String, revision: u64, timeout: Duration) -> ExitCode {
        let (store, json) = (self.store, self.json);
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
            // Older than every kept change: maybe one trimmed off, unless the oldest kept
            // made the record (nothing before it is this record's).
            let first = h.entries.first();
            let created = first.filter(|e| e.old.is_none()).map(|e| e.revision);
            if let Some(created) = created.filter(|&c| revision < c) {
                if h.unreadable.is_empty() {
                    return fail(format!(
                        "revision {revision} is older than tenant {t}'s record, made at \
                         revision {created} (`nexus-edge tenant history {t}` lists its changes)"
                    ));
                }
            }
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
        wait_fleet(r, &t, Revision(revision), timeout, now, doc, Awaited::Named).await
    }
}
