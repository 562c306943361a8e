//! `nexus-edge revoke ...`: puts token revocations in force on every router, and takes them
//! out, in the configured revocation source (the Redis store, or a revocations file); each
//! change is audited.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use nexus_binding_store::revocations::list::now_ms;
use nexus_binding_store::revocations::model::{format_time, parse_time};
use nexus_binding_store::revocations::redis::RedisRevocations;
use nexus_binding_store::revocations::{file, Revocation, Revoked};
use nexus_binding_store::TenantId;
use nexus_config::{RevocationSource, Settings, StoreSettings};

/// Options shared by every revoke command.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Config file naming the revocation source (`[revocation] file`, or a Redis `[store]`).
    #[arg(long, short, env = "NEXUS_EDGE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Who is making the change (audit; writes only); defaults to $USER, then $LOGNAME.
    #[arg(long, global = true)]
    pub actor: Option<String>,
    /// Why (audit; writes only), e.g. a ticket.
    #[arg(long, global = true)]
    pub reason: Option<String>,
    /// The operation.
    #[command(subcommand)]
    pub op: RevokeOp,
}

/// When a revocation stops refusing tokens.
#[derive(Debug, Args)]
pub struct Until {
    /// When the revocation may end: an RFC 3339 time, or a duration from now (`30d`). Past
    /// it, every token it names must have expired. Default: the token's own `exp` with
    /// `--token`; else `[auth] max_token_lifetime` (plus the leeway) after `issued_before`.
    #[arg(long)]
    pub until: Option<String>,
}

/// The operations.
#[derive(Debug, Subcommand)]
pub enum RevokeOp {
    /// Revoke one token, by its `jti`.
    Token {
        /// The token's `jti` claim.
        #[arg(long, required_unless_present = "token", conflicts_with = "token")]
        jti: Option<String>,
        /// The token itself: its `jti` and `exp` are read from it (not verified, not stored).
        #[arg(long)]
        token: Option<String>,
        #[command(flatten)]
        until: Until,
    },
    /// Revoke every token of one user (`sub`) of a tenant issued before a moment.
    User {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The user's `sub` claim.
        #[arg(long)]
        sub: String,
        /// Tokens issued (`iat`) before this RFC 3339 time are refused; default: now, this
        /// second's tokens included.
        #[arg(long)]
        issued_before: Option<String>,
        #[command(flatten)]
        until: Until,
    },
    /// Revoke every token of a tenant issued before a moment.
    Tenant {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// As for `user`.
        #[arg(long)]
        issued_before: Option<String>,
        #[command(flatten)]
        until: Until,
    },
    /// Take a revocation out of force, by its key (as `list` shows it).
    Remove {
        /// `token:<jti>`, `subject:<tenant>:<sub>` or `tenant:<tenant>`.
        key: String,
    },
    /// Take out every revocation whose `until` has passed (they refuse nothing).
    Prune,
    /// List the revocations, one JSON object per line, with their keys.
    List,
}

impl RevokeOp {
    fn writes(&self) -> bool {
        !matches!(self, RevokeOp::List)
    }
}

/// Where a command reads and writes revocations.
enum Target {
    File(PathBuf),
    Redis(Box<RedisRevocations>),
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!(
        "nexus-edge: {}",
        crate::cli::shown::escaped(&msg.to_string())
    );
    ExitCode::FAILURE
}

/// Runs a revoke command.
pub(super) fn run(args: RevokeArgs) -> ExitCode {
    let Some(config) = args.config.as_deref() else {
        return fail(
            "no --config (nor NEXUS_EDGE_CONFIG): revocations live in the source the routers' \
             config names ([revocation] file, or the Redis [store])",
        );
    };
    let settings = match nexus_config::load_file(config) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    super::tenant::admin_logging(&settings);
    let target = match target(&settings) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let actor = match super::tenant::audited_actor(
        args.actor.as_deref(),
        args.reason.as_deref(),
        args.op.writes(),
    ) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let reason = actor.reason.clone().unwrap_or_default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let now = now_ms() / 1000;
    let change = match args.op {
        RevokeOp::List => return rt.block_on(list(&target)),
        RevokeOp::Prune => return rt.block_on(prune(&target, now, &actor.name)),
        RevokeOp::Remove { key } => Err(key),
        op => match revocation(op, &settings, now, &actor.name, &reason) {
            Ok(r) => Ok(r),
            Err(e) => return fail(e),
        },
    };
    let done = rt.block_on(async {
        match (&target, &change) {
            (Target::Redis(r), Ok(rev)) => r.put(rev, &actor.name, &reason).await.map(|_| ()),
            (Target::Redis(r), Err(key)) => r.delete(key, &actor.name, &reason).await.map(|_| ()),
            (Target::File(p), Ok(rev)) => file::put(p, rev, &actor.name, &reason),
            (Target::File(p), Err(key)) => file::delete(p, key, &actor.name, &reason),
        }
    });
    match (done, change) {
        (Ok(()), Ok(rev)) => {
            outln!(
                "revoked {} until {} (key {})",
                rev.what,
                format_time(rev.until),
                rev.key()
            );
            ExitCode::SUCCESS
        }
        (Ok(()), Err(key)) => {
            outln!("removed {key}");
            ExitCode::SUCCESS
        }
        (Err(e), _) => fail(e),
    }
}

fn target(settings: &Settings) -> Result<Target, String> {
    match (&settings.revocation.source, &settings.store) {
        (RevocationSource::File(p), _) => Ok(Target::File(p.clone())),
        (RevocationSource::Store, StoreSettings::Redis(r)) => {
            let opts = crate::store::redis_options(r).map_err(|e| e.to_string())?;
            RedisRevocations::new(opts).map(|r| Target::Redis(Box::new(r)))
        }
        _ => Err(
            "the config names no revocation source: set [revocation] file, or use the Redis \
             [store]"
                .to_owned(),
        ),
    }
}

/// A time given as RFC 3339, or as a duration from `now`.
fn time_arg(flag: &str, text: &str, now: u64) -> Result<u64, String> {
    if let Ok(d) = nexus_config::parse_duration(text) {
        return Ok(now.saturating_add(d.as_secs()));
    }
    parse_time(flag, text).map_err(|e| format!("{e} (or give a duration from now, e.g. 30d)"))
}

/// The revocation an operation asks for.
fn revocation(
    op: RevokeOp,
    settings: &Settings,
    now: u64,
    actor: &str,
    reason: &str,
) -> Result<Revocation, String> {
    let leeway = settings.auth.leeway.as_secs();
    // Tokens issued from the next second on are accepted: this second's are the caller's
    // own, issued before they asked.
    let issued = |given: Option<String>| match given {
        Some(t) => time_arg("--issued-before", &t, now),
        None => Ok(now + 1),
    };
    let until = |given: &Until, issued_before: u64| match &given.until {
        Some(t) => time_arg("--until", t, now),
        None => settings
            .auth
            .max_token_lifetime
            .map(|max| issued_before + max.as_secs() + leeway)
            .ok_or_else(|| {
                "--until is required: [auth] max_token_lifetime is not set, so how long the \
                 tokens live is not known"
                    .to_owned()
            }),
    };
    let tenant = |t: &str| TenantId::parse(t).map_err(|e| e.to_string());
    let (what, until) = match op {
        RevokeOp::Token {
            jti,
            token,
            until: u,
        } => match (jti, token) {
            (Some(jti), _) => (Revoked::Token { jti }, until(&u, now)?),
            (None, Some(token)) => {
                let (jti, exp) = read_token(&token)?;
                let end = match &u.until {
                    Some(t) => time_arg("--until", t, now)?,
                    None => exp.saturating_add(leeway + 1),
                };
                (Revoked::Token { jti }, end)
            }
            (None, None) => return Err("give --jti or --token".to_owned()),
        },
        RevokeOp::User {
            tenant: t,
            sub,
            issued_before,
            until: u,
        } => {
            let issued_before = issued(issued_before)?;
            (
                Revoked::Subject {
                    tenant: tenant(&t)?,
                    sub,
                    issued_before,
                },
                until(&u, issued_before)?,
            )
        }
        RevokeOp::Tenant {
            tenant: t,
            issued_before,
            until: u,
        } => {
            let issued_before = issued(issued_before)?;
            (
                Revoked::Tenant {
                    tenant: tenant(&t)?,
                    issued_before,
                },
                until(&u, issued_before)?,
            )
        }
        RevokeOp::Remove { .. } | RevokeOp::Prune | RevokeOp::List => {
            return Err("not a revocation".to_owned())
        }
    };
    if until <= now {
        return Err(format!(
            "--until {} has passed: the revocation would refuse nothing",
            format_time(until)
        ));
    }
    let r = Revocation {
        what,
        until,
        at: Some(now),
        actor: Some(actor.to_owned()),
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
    };
    // Through the reader the routers use: what they would refuse is refused here.
    Revocation::from_json(r.to_json().as_bytes()).map_err(|e| e.to_string())
}

/// A token's `jti` and `exp`, read without verifying it (it is the one to refuse).
fn read_token(token: &str) -> Result<(String, u64), String> {
    let parsed = crate::auth::jws::parse(token.trim()).map_err(|e| format!("--token: {e}"))?;
    let claims = parsed.claims().map_err(|e| format!("--token: {e}"))?;
    let jti = claims
        .get("jti")
        .and_then(|v| v.as_str())
        .ok_or("--token: the token has no jti claim, so it cannot be revoked alone: revoke its user (`revoke user`) instead")?
        .to_owned();
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .ok_or("--token: the token has no whole-second exp; give --until")?;
    Ok((jti, exp))
}

async fn list(target: &Target) -> ExitCode {
    let entries = match target {
        Target::Redis(r) => match r.list().await {
            Ok(l) => l,
            Err(e) => return fail(e),
        },
        Target::File(p) => match file::read(p) {
            Ok(l) => l.into_iter().map(|r| (r.key(), Ok(r))).collect(),
            Err(_) if !p.exists() => Vec::new(),
            Err(e) => return fail(e),
        },
    };
    let mut refused = 0;
    for (key, read) in entries {
        match read {
            Ok(r) => outln!(
                "{{\"key\":{},\"revocation\":{}}}",
                serde_json::Value::from(key),
                r.to_json()
            ),
            Err(e) => {
                refused += 1;
                errln!("nexus-edge: record {key} refused: {e}");
            }
        }
    }
    if refused > 0 {
        return fail(format!(
            "{refused} record(s) refused: the list is incomplete"
        ));
    }
    ExitCode::SUCCESS
}

async fn prune(target: &Target, now: u64, actor: &str) -> ExitCode {
    let entries: Vec<Revocation> = match target {
        Target::Redis(r) => match r.list().await {
            Ok(l) => l.into_iter().filter_map(|(_, r)| r.ok()).collect(),
            Err(e) => return fail(e),
        },
        Target::File(p) => match file::read(p) {
            Ok(l) => l,
            Err(e) => return fail(e),
        },
    };
    let mut pruned = 0;
    for r in entries.iter().filter(|r| r.until <= now) {
        let key = r.key();
        let done = match target {
            Target::Redis(s) => s
                .delete(&key, actor, "prune: past its until")
                .await
                .map(|_| ()),
            Target::File(p) => file::delete(p, &key, actor, "prune: past its until"),
        };
        match done {
            Ok(()) => pruned += 1,
            // Taken out meanwhile by another admin: the same end.
            Err(nexus_binding_store::revocations::AdminFailure::NotFound(_)) => {}
            Err(e) => return fail(e),
        }
    }
    outln!("pruned {pruned} revocation(s) past their until");
    ExitCode::SUCCESS
}
