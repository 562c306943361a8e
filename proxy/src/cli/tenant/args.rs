//! The command line of `nexus-edge tenant`: its operations, and the checks of their values
//! clap runs before anything is read or written.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use nexus_binding_store::{IfUnchanged, TenantId, TenantStatus};

/// Options shared by every tenant command.
#[derive(Debug, Args)]
pub struct TenantArgs {
    /// Config file naming the store (default: the embedded demo store, read-only).
    #[arg(long, short, env = "NEXUS_EDGE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Who is making the change (audit log; writes only); defaults to $USER, then $LOGNAME,
    /// then `unknown`.
    #[arg(long, global = true)]
    pub actor: Option<String>,
    /// Why (audit log; writes only), e.g. a ticket or migration id.
    #[arg(long, global = true)]
    pub reason: Option<String>,
    /// Writes only: write even into a Redis that looks wiped (no revision counter while replicas serve
    /// bindings), or a bindings file that looks lost (missing while its audit log records
    /// changes): the write starts a new history, and proxies unbind every tenant not in it.
    #[arg(long, global = true)]
    pub start_new_history: bool,
    /// The operation.
    #[command(subcommand)]
    pub op: TenantOp,
}

/// Waiting for the fleet after a write.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Return only when every live replica has applied the change (Redis store).
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits (at most 24h). Only with `--wait`: alone it would bound
    /// nothing, and a script relying on it would not learn so.
    #[arg(long, default_value = "30s", value_parser = wait_timeout, requires = "wait")]
    pub timeout: Duration,
}

/// What a write that would leave the binding as it is does.
#[derive(Debug, Args)]
pub struct UnchangedArgs {
    /// Write a new revision even when the binding already is as asked (by default nothing
    /// is written then: no revision, no change event, no audit entry). It pushes a record
    /// edited in the store by hand to every replica now, not at its next reconcile.
    #[arg(long)]
    pub always_write: bool,
}

impl UnchangedArgs {
    /// The store's name for the choice.
    pub fn if_unchanged(&self) -> IfUnchanged {
        if self.always_write {
            IfUnchanged::Write
        } else {
            IfUnchanged::Skip
        }
    }
}

/// A status argument, refused with the other arguments (exit code 2) when it names none.
pub(super) fn status_arg(text: &str) -> Result<TenantStatus, String> {
    text.parse()
        .map_err(|e: nexus_binding_store::FieldError| e.to_string())
}

/// Why a wait is refused on a file store.
pub(super) const NEEDS_REDIS: &str = "needs the Redis store (a file store has no fleet to confirm)";

/// The longest `--wait` there is: refused at parsing, before anything is written.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A `--timeout` value: a duration of at most [`MAX_WAIT`].
pub(super) fn wait_timeout(text: &str) -> Result<Duration, String> {
    let d = nexus_config::parse_duration(text)?;
    if d > MAX_WAIT {
        return Err("longer than 24h".to_owned());
    }
    // Only heartbeats written during the wait count: one shorter than a heartbeat interval
    // timed out on replicas that had long applied the change.
    if d < MIN_WAIT {
        return Err(
            "shorter than 1s: a wait counts only heartbeats written during it, and a replica \
             heartbeats every heartbeat_interval (2s unless set)"
                .to_owned(),
        );
    }
    Ok(d)
}

/// The shortest `--timeout`: shorter, a wait would time out on replicas that had applied the
/// change long before, between two of their heartbeats.
pub(super) const MIN_WAIT: Duration = Duration::from_secs(1);

/// Tenant operations.
#[derive(Debug, Subcommand)]
pub enum TenantOp {
    /// Create or replace a binding from a JSON record (file, or - for stdin).
    Put {
        /// JSON binding record.
        file: PathBuf,
        /// Fail unless the tenant is at this revision (0: must not exist).
        #[arg(long)]
        expect_revision: Option<u64>,
        #[command(flatten)]
        unchanged: UnchangedArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show one binding.
    Get {
        /// Tenant id.
        tenant: String,
    },
    /// List every binding.
    List,
    /// Move a tenant to another instance.
    Rebind {
        /// Tenant id.
        tenant: String,
        /// New instance id.
        #[arg(long)]
        instance_id: String,
        /// New instance URL.
        #[arg(long)]
        instance_url: String,
        /// New API URL.
        #[arg(long, conflicts_with = "clear_api_url")]
        api_url: Option<String>,
        /// Remove the API URL (API traffic goes to the instance URL).
        #[arg(long)]
        clear_api_url: bool,
        /// Fail unless the tenant is at this revision.
        #[arg(long)]
        expect_revision: Option<u64>,
        #[command(flatten)]
        unchanged: UnchangedArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Change a tenant's status.
    SetStatus {
        /// Tenant id.
        tenant: String,
        /// New status (active, past_due, suspended, canceled, provisioning, ...).
        #[arg(value_parser = status_arg)]
        status: TenantStatus,
        /// Fail unless the tenant is at this revision.
        #[arg(long)]
        expect_revision: Option<u64>,
        #[command(flatten)]
        unchanged: UnchangedArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove a binding.
    Delete {
        /// Tenant id.
        tenant: String,
        /// Fail unless the tenant is at this revision.
        #[arg(long)]
        expect_revision: Option<u64>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Wait again for every live replica to apply a tenant's change (its revision), e.g.
    /// after `--wait` timed out: nothing is written (Redis store).
    Wait {
        /// Tenant id.
        tenant: String,
        /// The revision the change was written at (the write printed it).
        revision: u64,
        /// How long to wait (at most 24h).
        #[arg(long, default_value = "30s", value_parser = wait_timeout)]
        timeout: Duration,
    },
    /// Put every record of a bindings file (`{"format": ..., "bindings": [...]}`) or of a
    /// replica's snapshot file (checked whole first).
    Import {
        /// Bindings file.
        file: PathBuf,
        /// Write records older than the store's own (an export taken before later changes),
        /// and tenants the store no longer holds though it holds newer changes (deleted
        /// since, or from another store): refused without it, as they would undo changes.
        #[arg(long)]
        allow_older: bool,
    },
    /// Print every binding as a bindings file.
    Export,
    /// Show a tenant's audit history, oldest first.
    History {
        /// Tenant id.
        tenant: String,
    },
    /// Let replicas serving other bindings take the history Redis holds, when a write began
    /// it while no replica was heard (after Redis lost its data with the whole fleet down,
    /// replicas keep their tables until this): they then unbind every tenant Redis does not
    /// hold (Redis store).
    ConfirmHistory {
        /// Confirm only this history (the id the replicas' refusal names): one Redis began
        /// since is left as it is.
        #[arg(long)]
        history: Option<String>,
    },
}

impl TenantOp {
    /// Whether the operation changes the store (and writes an audit entry).
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            TenantOp::Get { .. }
                | TenantOp::List
                | TenantOp::Export
                | TenantOp::History { .. }
                | TenantOp::Wait { .. }
        )
    }
}

pub(super) fn tenant_id(s: &str) -> Result<TenantId, String> {
    TenantId::parse(s).map_err(|e| e.to_string())
}
