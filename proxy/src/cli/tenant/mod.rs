//! `nexus-edge tenant ...` and `nexus-edge replicas`: admin operations on the configured
//! binding store (Redis, or the JSON file). Every write is atomic and audited.
//!
//! Here a command is parsed into a [`Command`] and its operation run: the writes are in
//! `write`, the reads in `read`, `import` and `confirm-history` in `import`, and `tenant
//! wait` in `wait`. The command line and the checks of its values are in `args`, what is
//! printed in `print`, and the wait for the fleet of replicas (and `nexus-edge replicas`) in
//! `fleet`.

use std::process::ExitCode;

use nexus_binding_store::redis_store::{RedisStore, WipedStore};
use nexus_binding_store::{Actor, AdminError, IfUnchanged, Mutation};

use crate::store::Store;

mod args;
mod fleet;
mod import;
mod print;
mod read;
mod wait;
mod write;

use crate::admin_input::printable;
pub(super) use args::{TenantArgs, TenantOp, WaitArgs};
pub(super) use fleet::replicas;

/// The runtime an admin command runs its store calls on: one thread, as one command runs.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    // Store errors quote what it holds; a config's problems take a line each.
    eprintln!(
        "nexus-edge: {}",
        crate::cli::shown::escaped(&msg.to_string())
    );
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
        errln!("nexus-edge: record refused; left out: {record}");
    }
    fail(format!(
        "{} record(s) left out: the output is incomplete",
        left_out.len()
    ))
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
        errln!(
            "nexus-edge: note: Redis's history {id} began while no replica was heard, and is \
             not confirmed: a replica that starts with another history's bindings (its \
             snapshot) keeps them rather than take it. Once Redis's table is whole (a new \
             store, or one put back), run `{confirm}`"
        );
        return false;
    }
    errln!(
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
pub(super) fn admin_logging(settings: &nexus_config::Settings) {
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
    if args.config.is_none() && args.op.writes() {
        // Said before anything else (who the audit entry would name, say): no write can be
        // made to bindings compiled into the binary.
        return fail(
            "no --config (nor NEXUS_EDGE_CONFIG): the embedded demo store is read-only; a \
             change needs the config whose [store] the routers read",
        );
    }
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

/// What every operation of one command shares: the store, the base domains (a record's
/// custom domains are checked against them), who makes the change, and the output form.
struct Command<'a> {
    store: &'a Store,
    base_domains: &'a [String],
    actor: Actor,
    json: bool,
    start_new_history: bool,
}

/// Who a command's audit entry names: `--actor`, else `$USER` or `$LOGNAME`, else `unknown`
/// (said on stderr), with `--reason`. Checked for a write only.
pub(super) fn audited_actor(
    given: Option<&str>,
    reason: Option<&str>,
    writes: bool,
) -> Result<Actor, String> {
    if writes && given.is_some_and(|a| a.trim().is_empty()) {
        return Err(
            "--actor is empty: name who makes the change (or leave it out for $USER)".to_owned(),
        );
    }
    let login = || {
        ["USER", "LOGNAME"]
            .into_iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
    };
    let name = given.map(str::to_owned).or_else(login).unwrap_or_else(|| {
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
        reason: reason.map(|r| r.trim().to_owned()),
    };
    // Checked for writes only: a reading command has nothing to audit.
    if writes {
        printable("--actor (or $USER)", Some(&actor.name))?;
        printable("--reason", actor.reason.as_deref())?;
    }
    Ok(actor)
}

/// Runs the operation `args` names.
async fn exec(store: &Store, base_domains: &[String], args: TenantArgs) -> ExitCode {
    // An audit entry must name someone: an empty `--actor` is a script's unset variable.
    // Reading commands write no entry, so a shared wrapper passing one to them is harmless.
    let writes = args.op.writes();
    let actor = match audited_actor(args.actor.as_deref(), args.reason.as_deref(), writes) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let cmd = Command {
        store,
        base_domains,
        actor,
        json: args.json,
        start_new_history: args.start_new_history,
    };
    match args.op {
        TenantOp::Put {
            file,
            expect_revision,
            unchanged,
            wait,
        } => {
            cmd.put(file, expect_revision, unchanged.if_unchanged(), wait)
                .await
        }
        TenantOp::Get { tenant } => cmd.get(tenant).await,
        TenantOp::List => cmd.list().await,
        TenantOp::Rebind {
            tenant,
            instance_id,
            instance_url,
            api_url,
            clear_api_url,
            expect_revision,
            unchanged,
            wait,
        } => match crate::admin_input::rebind(
            &instance_id,
            &instance_url,
            api_url.as_deref(),
            clear_api_url,
        ) {
            Ok(m) => {
                let if_unchanged = unchanged.if_unchanged();
                cmd.write(tenant, m, expect_revision, if_unchanged, wait)
                    .await
            }
            Err(e) => fail(e),
        },
        TenantOp::SetStatus {
            tenant,
            status,
            expect_revision,
            unchanged,
            wait,
        } => {
            let (m, if_unchanged) = (Mutation::SetStatus(status), unchanged.if_unchanged());
            cmd.write(tenant, m, expect_revision, if_unchanged, wait)
                .await
        }
        TenantOp::Delete {
            tenant,
            expect_revision,
            wait,
        } => {
            // A delete always changes the store, or finds nothing to delete.
            let if_unchanged = IfUnchanged::Write;
            cmd.write(
                tenant,
                Mutation::Delete,
                expect_revision,
                if_unchanged,
                wait,
            )
            .await
        }
        TenantOp::Wait {
            tenant,
            revision,
            timeout,
        } => cmd.wait(tenant, revision, timeout).await,
        TenantOp::Import { file, allow_older } => cmd.import(file, allow_older).await,
        TenantOp::ConfirmHistory { history } => cmd.confirm_history(history).await,
        TenantOp::Export => cmd.export().await,
        TenantOp::History { tenant } => cmd.history(tenant).await,
    }
}

/// A valid binding of `tenant` at `revision`, for the operations' tests.
#[cfg(test)]
fn test_binding(tenant: &str, revision: u64) -> nexus_binding_store::Binding {
    nexus_binding_store::records::parse_record(&serde_json::json!({
        "tenant_id": tenant, "subscription_id": "s", "instance_id": "i",
        "instance_url": "http://10.0.0.1/", "status": "active", "plan": "team",
        "region": "r", "revision": revision,
    }))
    .expect("a valid record")
}
