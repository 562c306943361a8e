//! Key names under the prefix, and the ids that tell one history of the store from another.

use std::sync::Arc;

/// Key names under the prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: String) -> Self {
        Self { prefix }
    }
    pub(crate) fn binding(&self, tenant: &str) -> String {
        format!("{}:binding:{tenant}", self.prefix)
    }
    pub(crate) fn binding_pattern(&self) -> String {
        format!("{}:binding:*", self.prefix)
    }
    pub(crate) fn revision(&self) -> String {
        format!("{}:revision", self.prefix)
    }

    /// The revision counter's value as read (`GET`): see [`counter_value`].
    pub(crate) fn counter(&self, raw: Option<Vec<u8>>) -> redis::RedisResult<Option<u64>> {
        counter_value(
            &self.revision(),
            "revision counter is no whole number",
            raw,
            "set it to the highest revision written, or restore the store",
        )
    }
    pub(crate) fn changes(&self) -> String {
        format!("{}:changes", self.prefix)
    }
    pub(crate) fn audit(&self, tenant: &str) -> String {
        format!("{}:audit:{tenant}", self.prefix)
    }
    pub(crate) fn domains(&self) -> String {
        format!("{}:domains", self.prefix)
    }
    pub(crate) fn replicas(&self) -> String {
        format!("{}:replicas", self.prefix)
    }
    /// Held by a restore import while it writes (see `restore`).
    pub(crate) fn restoring(&self) -> String {
        format!("{}:restoring", self.prefix)
    }
    /// The id of the history the counter counts, and how it began (see [`StoreHistory`]).
    pub(crate) fn history(&self) -> String {
        format!("{}:history", self.prefix)
    }
    /// The revocations in force: revocation key → its JSON (`crate::revocations`).
    pub(crate) fn revocations(&self) -> String {
        format!("{}:revocations", self.prefix)
    }
    /// The revocation changes counter: one more per change, so a follower sees a gap.
    pub(crate) fn revocation_seq(&self) -> String {
        format!("{}:revocations:seq", self.prefix)
    }
    /// The revocation change feed (stream): `seq`, `key`, `op` (`put`, `delete`), `entry`.
    pub(crate) fn revocation_changes(&self) -> String {
        format!("{}:revocations:changes", self.prefix)
    }
    /// The revocation audit list, newest first.
    pub(crate) fn revocation_audit(&self) -> String {
        format!("{}:revocations:audit", self.prefix)
    }
}

/// A counter's value as read (`GET` of `key`): a whole number, or none. Anything else was
/// written outside the schema, and the error (`what`) names the key, what it holds and
/// `remedy`, where a plain conversion would say only that a value was not a number.
pub(crate) fn counter_value(
    key: &str,
    what: &'static str,
    raw: Option<Vec<u8>>,
    remedy: &str,
) -> redis::RedisResult<Option<u64>> {
    let Some(raw) = raw else { return Ok(None) };
    // Digits only, as the scripts read it (Rust's parse would take a `+` too).
    std::str::from_utf8(&raw)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            let shown: String = String::from_utf8_lossy(&raw).chars().take(40).collect();
            redis::RedisError::from((
                redis::ErrorKind::TypeError,
                what,
                format!("{key} holds {shown:?}, written outside nexus-edge: {remedy}"),
            ))
        })
}

/// A new random id for a history that a write or restore may begin (`write.lua` uses it only
/// when it begins one): 128 bits, so no two histories, of any Redis, share one.
pub(crate) fn new_history_id() -> String {
    random_hex()
}

/// 128 random bits as hex: lock tokens and history ids.
pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    crate::snapshot::hex(&b)
}

/// Which history Redis holds (`{prefix}:history`), as a replica reads it with the counter.
///
/// A replica remembers the id of the history its table was loaded from, and its snapshot
/// keeps it. A Redis that lost its data while every replica was down shows none of their
/// heartbeats, so nothing stops an admin's write from beginning a new history there, holding
/// that one tenant; replicas taking it would unbind every other tenant. Such a history is
/// `unconfirmed`, and a replica serving another one's bindings keeps them until an admin
/// confirms it ([`LoadError::UnconfirmedHistory`](super::load::LoadError::UnconfirmedHistory)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreHistory {
    /// Random id, new for each history.
    pub(crate) id: Arc<str>,
    /// Begun by a write or a restore while no replica heartbeat was kept, and not confirmed
    /// since.
    pub(crate) unconfirmed: bool,
    /// What began it, as said in a log line: "a write", "a restore import", ...
    pub(crate) began: &'static str,
}

/// The command that confirms history `id` (`""`: one whose id was deleted by hand, confirmed
/// without naming it).
pub fn confirm_command(id: &str) -> String {
    if id.is_empty() {
        "nexus-edge tenant confirm-history".to_owned()
    } else {
        format!("nexus-edge tenant confirm-history --history {id}")
    }
}

/// What began a history (`began` in `{prefix}:history`), as a log line says it.
pub(crate) fn began_by(field: Option<&String>) -> &'static str {
    match field.map(String::as_str) {
        Some("write") => "a write",
        Some("restore") => "a restore import",
        Some("new-history") => "a write with --start-new-history",
        Some("before-ids") => "writes made before history ids were kept",
        _ => "a writer outside nexus-edge",
    }
}
