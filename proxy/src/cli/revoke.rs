//! `nexus-edge revoke ...`: puts token revocations in force on every router, and takes them
//! out, in the configured revocation source (the Redis store, or a revocations file); each
//! change is audited.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use nexus_binding_store::revocations::model::{format_time, parse_time};
use nexus_binding_store::revocations::redis::RedisRevocations;
use nexus_binding_store::revocations::{file, AdminFailure, Listed, Revocation, Revoked, Stored};
use nexus_binding_store::source::now_unix_ms as now_ms;
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
    /// it, every token it names must have expired. Default: with `--token`, its `exp` plus
    /// the leeway; else `[auth] max_token_lifetime` plus twice the leeway after now (`--jti`)
    /// or `--issued-before` (tokens carrying `iat`).
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
        /// Tokens issued (`iat`) before this RFC 3339 time are refused (not later than
        /// now); default: now, this second's tokens included.
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
    /// The audit entries (who changed which revocation, when, why, old and new), newest
    /// first, one JSON object per line.
    History {
        /// How many entries, at most.
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
    },
    /// Put every revocation of a revocations file in force, each merged over the one held
    /// under its key; into a Redis that holds none (it lost its data), all in one step.
    Import {
        /// A revocations file (`{"revocations": [...]}`).
        file: PathBuf,
    },
}

impl RevokeOp {
    fn writes(&self) -> bool {
        !matches!(self, RevokeOp::List | RevokeOp::History { .. })
    }
}

/// Where a command reads and writes revocations.
enum Target {
    File(PathBuf),
    Redis(Box<RedisRevocations>),
}

impl Target {
    async fn put(&self, r: &Revocation, actor: &str, reason: &str) -> Result<Stored, AdminFailure> {
        match self {
            Target::Redis(s) => s.put(r, actor, reason).await,
            Target::File(p) => file::put(p, r, actor, reason),
        }
    }

    /// Deletes `key`; with `expect`, only while it holds that revocation, as listed.
    async fn delete(
        &self,
        key: &str,
        expect: Option<&Listed>,
        actor: &str,
        reason: &str,
    ) -> Result<(), AdminFailure> {
        match self {
            Target::Redis(s) => {
                s.delete(key, expect.map(|l| l.held.as_slice()), actor, reason)
                    .await
            }
            Target::File(p) => {
                let expect = expect.and_then(|l| l.read.as_ref().ok());
                file::delete(p, key, expect, actor, reason)
            }
        }
    }

    /// Every record held, read or refused, by key.
    async fn list(&self) -> Result<Vec<Listed>, AdminFailure> {
        match self {
            Target::Redis(s) => s.list().await,
            Target::File(p) if !p.exists() => Ok(Vec::new()),
            Target::File(p) => {
                let list = file::read(p).map_err(|e| AdminFailure::Unavailable(e.to_string()))?;
                let mut listed: Vec<_> = list
                    .into_iter()
                    .map(|r| Listed {
                        key: r.key(),
                        held: r.to_json().into_bytes(),
                        read: Ok(r),
                    })
                    .collect();
                listed.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(listed)
            }
        }
    }
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
    let who = &actor.name;
    match args.op {
        RevokeOp::List => rt.block_on(list(&target)),
        RevokeOp::History { limit } => rt.block_on(history(&target, limit)),
        RevokeOp::Prune => rt.block_on(prune(&target, now, who, &reason)),
        RevokeOp::Import { file: from } => rt.block_on(import(&target, &from, who, &reason)),
        RevokeOp::Remove { key } => match rt.block_on(target.delete(&key, None, who, &reason)) {
            Ok(()) => {
                outln!("removed {key}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        op => {
            let r = match revocation(op, &settings, now, who, &reason) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            match rt.block_on(target.put(&r, who, &reason)) {
                Ok(stored) => {
                    say_stored(&stored, &r);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// Says what a put left in force, and when it kept more of the revocation it replaced than
/// was asked.
fn say_stored(stored: &Stored, asked: &Revocation) {
    let r = &stored.revocation;
    outln!(
        "revoked {} until {} (key {})",
        r.what,
        format_time(r.until),
        r.key()
    );
    if stored.replaced_damaged {
        errln!(
            "nexus-edge: note: the record held under {} was damaged (routers kept the \
             revocation they had under that key): replaced by this one",
            r.key()
        );
    }
    if stored.replaced.is_some() && (r.until != asked.until || r.what != asked.what) {
        errln!(
            "nexus-edge: note: the revocation it replaces reached further, and a revocation is \
             only ever extended: kept as above (`revoke remove {}` first to shorten it)",
            r.key()
        );
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

/// An `--until`: RFC 3339, or a duration from `now`.
fn until_arg(text: &str, now: u64) -> Result<u64, String> {
    if let Ok(d) = nexus_config::parse_duration(text) {
        return Ok(now.saturating_add(d.as_secs()));
    }
    parse_time("--until", text).map_err(|e| format!("{e} (or give a duration from now, e.g. 30d)"))
}

/// An `--issued-before`: RFC 3339, not later than now (this second's tokens included).
/// Durations are refused: `1h` could mean an hour ago or an hour ahead.
fn issued_before_arg(given: Option<String>, now: u64) -> Result<u64, String> {
    let Some(text) = given else {
        // Tokens issued from the next second on are accepted: this second's may be the
        // caller's own, issued before they asked.
        return Ok(now + 1);
    };
    let at = parse_time("--issued-before", &text)
        .map_err(|e| format!("{e} (a time, e.g. 2026-12-07T14:00:00Z)"))?;
    if at > now + 1 {
        return Err(format!(
            "--issued-before {} is in the future: it would refuse tokens not issued yet",
            format_time(at)
        ));
    }
    Ok(at)
}

/// The revocation an operation asks for.
fn revocation(
    op: RevokeOp,
    settings: &Settings,
    now: u64,
    actor: &str,
    reason: &str,
) -> Result<Revocation, String> {
    // A token is accepted until `exp` plus the leeway, and its `exp` may lie up to
    // max_token_lifetime plus the leeway past its `iat`.
    let leeway = settings.auth.leeway.as_secs();
    let until = |given: &Until, issued_before: u64| match &given.until {
        Some(t) => until_arg(t, now),
        None => settings
            .auth
            .max_token_lifetime
            .map(|max| issued_before + max.as_secs() + 2 * leeway)
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
                    Some(t) => until_arg(t, now)?,
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
            let issued_before = issued_before_arg(issued_before, now)?;
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
            let issued_before = issued_before_arg(issued_before, now)?;
            (
                Revoked::Tenant {
                    tenant: tenant(&t)?,
                    issued_before,
                },
                until(&u, issued_before)?,
            )
        }
        RevokeOp::Remove { .. }
        | RevokeOp::Prune
        | RevokeOp::List
        | RevokeOp::History { .. }
        | RevokeOp::Import { .. } => return Err("not a revocation".to_owned()),
    };
    if until <= now {
        return Err(format!(
            "the revocation would end at {}, which has passed: every token it names has \
             expired (give a later --until)",
            format_time(until)
        ));
    }
    if let Revoked::Token { jti } | Revoked::Subject { sub: jti, .. } = &what {
        if jti.trim() != jti || jti.chars().any(char::is_control) {
            errln!(
                "nexus-edge: note: the claim given has blanks at an end or control characters; \
                 it is compared byte for byte, so it names only a token whose claim is exactly so"
            );
        }
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
        .ok_or(
            "--token: the token has no jti claim, so it cannot be revoked alone: revoke its \
             user (`revoke user`) instead",
        )?
        .to_owned();
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_f64)
        .filter(|e| e.is_finite() && *e >= 0.0)
        .ok_or("--token: the token has no exp; give --until")?;
    // Rounded up: the revocation lasts as long as the token could.
    Ok((jti, exp.ceil() as u64))
}

async fn list(target: &Target) -> ExitCode {
    let listed = match target.list().await {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut refused = Vec::new();
    for l in &listed {
        match &l.read {
            Ok(r) => outln!(
                "{{\"key\":{},\"revocation\":{}}}",
                serde_json::Value::from(r.key()),
                r.to_json()
            ),
            Err(why) => refused.push((&l.key, why)),
        }
    }
    for (key, why) in &refused {
        errln!("nexus-edge: record {key} refused: {why}");
    }
    if !refused.is_empty() {
        return fail(format!(
            "{} record(s) refused: the list is incomplete",
            refused.len()
        ));
    }
    ExitCode::SUCCESS
}

/// The audit, newest first: Redis's list, or the file's log read backwards.
async fn history(target: &Target, limit: usize) -> ExitCode {
    let entries = match target {
        Target::Redis(s) => match s.audit(limit).await {
            Ok(e) => e,
            Err(e) => return fail(e),
        },
        Target::File(p) => {
            let log = file::audit_path(p);
            match std::fs::read_to_string(&log) {
                Ok(text) => text
                    .lines()
                    .rev()
                    .filter(|l| !l.trim().is_empty())
                    .take(limit)
                    .map(str::to_owned)
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return fail(format!("{}: {e}", log.display())),
            }
        }
    };
    for e in entries {
        outln!("{e}");
    }
    ExitCode::SUCCESS
}

async fn prune(target: &Target, now: u64, actor: &str, reason: &str) -> ExitCode {
    let listed = match target.list().await {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let why = if reason.is_empty() {
        "prune: past its until".to_owned()
    } else {
        format!("prune: past its until; {reason}")
    };
    let mut pruned = 0;
    // Records refused are not pruned: their `until` is not known.
    let past = listed
        .iter()
        .filter(|l| l.read.as_ref().is_ok_and(|r| r.until <= now));
    for l in past {
        // Only the revocation listed: one put under its key since (extended) stays.
        match target.delete(&l.key, Some(l), actor, &why).await {
            Ok(()) => pruned += 1,
            Err(AdminFailure::NotFound(_) | AdminFailure::Changed(_)) => {}
            Err(e) => return fail(e),
        }
    }
    outln!("pruned {pruned} revocation(s) past their until");
    ExitCode::SUCCESS
}

/// Into a Redis store that holds no revocation (it lost its data): the whole list in one
/// step, so routers that kept theirs never take a part of it. Anywhere else: each merged
/// over the one held under its key.
async fn import(target: &Target, from: &std::path::Path, actor: &str, reason: &str) -> ExitCode {
    let read = match file::read(from) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let now = now_ms() / 1000;
    let list: Vec<Revocation> = read.iter().filter(|r| r.until > now).cloned().collect();
    let past = read.len() - list.len();
    if list.is_empty() {
        // Into a wiped Redis, an empty restore would start the list anew, empty, and every
        // router would drop the revocations it kept.
        outln!(
            "nothing to import from {} ({past} past their until left out)",
            from.display()
        );
        return ExitCode::SUCCESS;
    }
    let put = match target {
        Target::Redis(s) => match s.restore(&list, actor, reason).await {
            Ok(_) => Ok(list.len()),
            Err(AdminFailure::NotEmpty(_)) => s.put_all(&list, actor, reason).await,
            // The script may have run with its reply lost: run again (then merged puts).
            Err(e) => {
                return fail(format!(
                    "{e} (whether the list was put in force is not known; run the import \
                     again: into a store that holds it, each is merged)"
                ))
            }
        },
        Target::File(_) => {
            let mut done = 0;
            let mut failed = None;
            for r in &list {
                if let Err(e) = target.put(r, actor, reason).await {
                    failed = Some(e);
                    break;
                }
                done += 1;
            }
            failed.map_or(Ok(done), |e| Err((done, e)))
        }
    };
    match put {
        Ok(n) => {
            outln!(
                "imported {n} revocation(s) from {} ({past} past their until left out)",
                from.display()
            );
            ExitCode::SUCCESS
        }
        Err((done, e)) => fail(format!(
            "{e} ({done} put in force before it; run the import again: each is merged)"
        )),
    }
}
