//! Token revocations: the synced deny list that refuses tokens before they expire
//! (a leaked token, an abusive user, a tenant's chargeback).
//!
//! - [`model`]: one revocation and its JSON form;
//! - [`list`]: the immutable [`RevocationList`] and the lock-free [`Revocations`] handle
//!   requests check every token against;
//! - [`file`]: the revocations file (a router without Redis; a replica's snapshot);
//! - [`redis`]: the Redis keys, the admin's script and a replica's follower.
//!
//! A router whose source is away keeps the list it has (it fails open on revocations, as
//! the brief asks) and says how stale it is.

pub mod file;
pub mod list;
pub mod model;
pub mod redis;

pub use list::{RevocationList, Revocations};
pub use model::{Revocation, RevocationError, Revoked, TokenFacts};

/// A revocation record as a source holds it, read or refused.
#[derive(Debug)]
pub struct Listed {
    /// Its key (a Redis field): the revocation's, when the record is right.
    pub key: String,
    /// The record as held (what a conditional delete expects).
    pub held: Vec<u8>,
    /// The revocation it is, or why it is refused.
    pub read: Result<Revocation, RevocationError>,
}

/// What a put left in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The revocation now in force under its key ([`Revocation::merged_over`] the one held).
    pub revocation: Revocation,
    /// The one it replaced, if any.
    pub replaced: Option<Revocation>,
    /// Whether it replaced a record that was refused (routers kept the revocation they held
    /// under its key, which this one may reach less far than).
    pub replaced_damaged: bool,
}

/// Why an admin's revocation command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum AdminFailure {
    /// No revocation under this key.
    #[error("no revocation {0}")]
    NotFound(String),
    /// The revocation under this key is not the one the command read: another admin changed
    /// it meanwhile.
    #[error("revocation {0} changed meanwhile")]
    Changed(String),
    /// The store holds revocations (or a change counter): a restore is for an empty one.
    #[error("{0} is not empty: a restore puts a whole list into a store that holds none")]
    NotEmpty(String),
    /// The store could not be reached or refused the command.
    #[error("revocations unavailable: {0}")]
    Unavailable(String),
}

#[cfg(test)]
mod tests;
