//! The fleet of replicas following a Redis store: `--wait` for a change to reach every live
//! one, and `nexus-edge replicas`.

use std::process::ExitCode;
use std::time::Duration;

use nexus_binding_store::{BindingAdmin, Revision, TenantId};

use crate::store::Store;
use nexus_binding_store::redis_store::RedisStore;

use super::{admin_logging, empty_prefix_note, fail, runtime};

/// What a wait is for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Awaited {
    /// The change this command wrote, which left the tenant bound or not.
    Written {
        /// Whether the tenant is bound after it.
        bound: bool,
    },
    /// The tenant's stored revision, after a write that found it as asked and wrote nothing.
    Unchanged,
    /// A revision the admin named (`tenant wait`).
    Named,
}

/// Waits for the fleet to apply `rev` and says how it went. `doc`: with `--json`, what was
/// waited for (the write's own result, under `written`), printed with the wait's as one
/// document (`{"written", "wait"}`). `awaited` tells a tenant deleted since from one the
/// change deleted, and words a timeout.
pub(super) async fn wait_fleet(
    redis: &RedisStore,
    tenant: &TenantId,
    rev: Revision,
    timeout: Duration,
    written_after_ms: Option<u64>,
    doc: Option<(&'static str, serde_json::Value)>,
    awaited: Awaited,
) -> ExitCode {
    let present = match awaited {
        Awaited::Written { bound } => Some(bound),
        Awaited::Unchanged => Some(true),
        Awaited::Named => None,
    };
    let replicas = redis.replicas().await;
    // Only heartbeats written during the wait count: one shorter than the slowest live
    // replica's heartbeat interval (and a second for its write) times out on replicas that
    // had applied the change long before.
    let floor = replicas
        .as_deref()
        .ok()
        .and_then(nexus_binding_store::redis_store::wait_floor);
    let timeout = match floor {
        Some(floor) if floor > timeout => {
            errln!(
                "nexus-edge: note: waiting up to {}, not {}: replicas heartbeat every {}, and \
                 only heartbeats written during the wait count",
                humantime::format_duration(floor),
                humantime::format_duration(timeout),
                humantime::format_duration(floor - Duration::from_secs(1))
            );
            floor
        }
        _ => timeout,
    };
    // Said at once: otherwise the whole timeout passes in silence. A replica that starts
    // within it still counts (a fleet being restarted).
    if replicas.is_ok_and(|all| !all.iter().any(|r| r.live)) {
        errln!(
            "nexus-edge: no replica is live (none is heartbeating); waiting up to {} for one \
             to apply revision {}",
            humantime::format_duration(timeout),
            rev.get()
        );
    }
    let result = redis
        .wait_for_revision(rev.get(), tenant.as_str(), timeout, written_after_ms)
        .await;
    let (ok, o) = match result {
        Ok(o) => (true, o),
        Err(o) => (false, o),
    };
    if doc.is_none() && !o.silent.is_empty() {
        errln!(
            "nexus-edge: not counted, silent since before the wait: {} (a replica cut off from \
             Redis keeps serving its last table; see `nexus-edge replicas`)",
            o.silent.join(", ")
        );
    }
    let text = doc.is_none();
    if let Some((key, value)) = doc {
        let mut doc = serde_json::json!({ key: value, "wait": o });
        // Under the key a write's always has, so a script reading `.written.revision` reads
        // the stored revision; beside it, that nothing was written.
        if matches!(awaited, Awaited::Unchanged) {
            doc["unchanged"] = serde_json::Value::Bool(true);
        }
        outln!("{doc}");
    } else if ok {
        outln!(
            "{}/{} replicas on revision {}",
            o.applied,
            o.live,
            o.revision
        );
        // The fleet applied this change, and serves whatever came after it: a change made by
        // someone else meanwhile is what is served now.
        let now = redis.get(tenant).await.ok().map(|b| b.map(|b| b.revision));
        match now {
            Some(Some(r)) if r > rev => errln!(
                "nexus-edge: note: tenant {tenant} has changed again since (now at revision {r}): \
                 that is what is served; see `tenant history {tenant}`"
            ),
            Some(None) if present == Some(true) => errln!(
                "nexus-edge: note: tenant {tenant} has been deleted since; see `tenant history \
                 {tenant}`"
            ),
            _ => {}
        }
    } else if !o.refused.is_empty() && o.behind.is_empty() {
        errln!(
            "nexus-edge: {}/{} live replicas serve revision {}; not confirmed by {} (see their \
             logs: a replica that refused the record keeps serving the binding named until the \
             record is put right)",
            o.applied,
            o.live,
            o.revision,
            o.refused.join(", ")
        );
    } else {
        errln!(
            "nexus-edge: timed out after {}: {}/{} live replicas on revision {}; behind: {}",
            humantime::format_duration(timeout),
            o.applied,
            o.live,
            o.revision,
            if o.behind.is_empty() {
                "no live replica".to_owned()
            } else {
                o.behind
                    .iter()
                    .chain(&o.refused)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        if text {
            // What the exit code alone does not say: nothing is undone.
            match awaited {
                Awaited::Unchanged => errln!(
                    "nexus-edge: nothing was written; the tenant's stored revision {rev} is \
                     served by the replicas that applied it; `nexus-edge tenant wait {tenant} \
                     {rev}` waits again"
                ),
                Awaited::Written { .. } | Awaited::Named => errln!(
                    "nexus-edge: the change is written (revision {rev}) and served by the \
                     replicas that applied it; `nexus-edge tenant wait {tenant} {rev}` waits \
                     again without writing"
                ),
            }
        }
        ExitCode::from(4)
    }
}

/// `replicas` without `--config`: the embedded demo store it then reads is a file store.
const NO_CONFIG: &str = "replicas needs --config naming a Redis store (without one it reads \
                         the embedded demo store, a file store)";

/// `nexus-edge replicas`.
pub(in crate::cli) fn replicas(config: Option<&std::path::Path>, json: bool) -> ExitCode {
    let settings = match crate::cli::load_settings(config) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    admin_logging(&settings);
    let redis = match Store::open(&settings.store) {
        Ok(Store::Redis(redis)) => redis,
        Ok(Store::File(_)) if config.is_none() => return fail(NO_CONFIG),
        Ok(Store::File(_)) => return fail("replicas needs the Redis store"),
        Err(e) => return fail(e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    match rt.block_on(redis.replicas()) {
        Ok(list) => {
            let refusing = list.iter().any(|r| r.live && r.keeps);
            let serving = list.iter().any(|r| r.live && r.applied_revision > 0);
            // Read once, for the two notes that go by it.
            let no_counter =
                (list.is_empty() || serving) && matches!(rt.block_on(redis.counter()), Ok(None));
            if list.is_empty() && no_counter {
                errln!("{}", empty_prefix_note(&redis));
            }
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                outln!(
                    "{:<40} {:>10} {:>8} {:>10}  live",
                    "replica",
                    "revision",
                    "lag",
                    "seen(ms)"
                );
                for r in list {
                    outln!(
                        "{:<40} {:>10} {:>8} {:>10}  {}{}",
                        crate::cli::shown::one_line(&r.id),
                        r.applied_revision,
                        r.lag,
                        r.last_seen_ms,
                        if r.live { "yes" } else { "no" },
                        if r.keeps {
                            "  (keeps another history's bindings rather than take Redis's: below)"
                        } else if r.other_history {
                            "  (on another history: not yet reloaded)"
                        } else {
                            ""
                        }
                    );
                    if !r.refused.is_empty() {
                        let tenants: Vec<&str> = r.refused.keys().map(String::as_str).collect();
                        outln!("{:<40} refused the records of: {}", "", tenants.join(", "));
                    }
                    if r.id_shared {
                        outln!(
                            "{:<40} another process heartbeats under this id: give each \
                             replica its own replica_id",
                            ""
                        );
                    }
                    if r.stamped_ahead_ms > 0 {
                        outln!(
                            "{:<40} its heartbeat is stamped {} s ahead of Redis's clock \
                             (written by hand, with a host's clock, or before a failover to \
                             a node whose clock runs behind): not counted as live",
                            "",
                            r.stamped_ahead_ms / 1000
                        );
                    }
                }
            }
            // Only when it may be why a replica is on another history; on stderr, so that
            // `--json` stays one document.
            if let (true, Ok(Some(id))) = (refusing, rt.block_on(redis.unconfirmed_history())) {
                errln!(
                    "nexus-edge: warning: Redis holds history {id}, begun while no replica was \
                     heard serving, and not confirmed: a replica serving another history's \
                     bindings keeps them (above) until `{}`; put back what should stay first \
                     (`nexus-edge tenant import --allow-older SNAPSHOT`, the snapshot of the \
                     replica with the highest revision)",
                    nexus_binding_store::redis_store::confirm_command(&id)
                );
            }
            // Every replica "on another history" because Redis has none at all: say so.
            if serving && no_counter {
                errln!(
                    "nexus-edge: warning: Redis holds no revision counter while replicas serve \
                     bindings: it lost its data (a restart without persistence, a FLUSHALL). \
                     They keep serving their tables; restore it with `nexus-edge tenant import \
                     SNAPSHOT` (a replica's snapshot, the highest revision above), or from \
                     Redis's own backup"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
