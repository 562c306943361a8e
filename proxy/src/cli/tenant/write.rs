//! The writes: `put`, `rebind`, `set-status` and `delete`, each one audited change of one
//! tenant's binding, and `--wait` for the replicas to apply it.

use std::path::PathBuf;
use std::process::ExitCode;

use nexus_binding_store::{AdminError, Applied, IfUnchanged, Mutation, Revision};

use super::args::{tenant_id, NEEDS_REDIS};
use super::fleet::{wait_fleet, Awaited};
use super::print::print_binding;
use super::{fail, note_empty_prefix, note_unconfirmed, Command, WaitArgs};
use crate::admin_input::{check_domains, refuse_repeated_members};
use crate::store::Store;

impl Command<'_> {
    /// Applies `m` to `tenant`'s binding (if its revision is still `expect`), prints the
    /// binding written (or left as it was: `if_unchanged`), and waits for the fleet when
    /// `wait` asks.
    pub(super) async fn write(
        &self,
        tenant: String,
        m: Mutation,
        expect: Option<u64>,
        if_unchanged: IfUnchanged,
        wait: WaitArgs,
    ) -> ExitCode {
        let (store, json, actor) = (self.store, self.json, &self.actor);
        let admin = store.admin();
        let t = match tenant_id(&tenant) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        // The fleet to wait for. Refused before the write: after it, the exit code would
        // say the change failed when it was made, and a script would make it again.
        let waiting = wait.wait.then_some(wait);
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
        match admin
            .apply(&t, m, expect.map(Revision), if_unchanged, actor)
            .await
        {
            Ok(applied) => {
                let (rev, after) = (applied.revision(), applied.binding().cloned());
                if let Applied::Unchanged(_) = applied {
                    eprintln!(
                        "nexus-edge: note: {t} already is as asked (revision {rev}): nothing \
                         written; --always-write writes a new revision anyway"
                    );
                }
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
                             routers' own?), or none has for an hour; {}",
                            match applied {
                                Applied::Written { .. } => "the change is written",
                                Applied::Unchanged(_) => "the binding is stored as asked",
                            }
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
                        let awaited = match applied {
                            Applied::Written { .. } => Awaited::Written {
                                bound: after.is_some(),
                            },
                            Applied::Unchanged(_) => Awaited::Unchanged,
                        };
                        let doc = json.then_some(("written", written));
                        wait_fleet(r, &t, rev, w.timeout, before, doc, awaited).await
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

    /// `tenant put FILE`: one record, read from a file or standard input (`-`).
    pub(super) async fn put(
        &self,
        file: PathBuf,
        expect_revision: Option<u64>,
        if_unchanged: IfUnchanged,
        wait: WaitArgs,
    ) -> ExitCode {
        let base_domains = self.base_domains;
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
        // A byte order mark, as `import` and the routers read past it in a bindings file.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        if let Err(e) = refuse_repeated_members(text.as_bytes()) {
            return fail(format!("{source}: {e}"));
        }
        let value: serde_json::Value = match serde_json::from_str(text) {
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
        let m = Mutation::Put(Box::new(binding));
        self.write(tenant, m, expect_revision, if_unchanged, wait)
            .await
    }
}
