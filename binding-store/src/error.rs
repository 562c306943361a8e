//! Errors of the binding store.

use std::fmt;
use std::path::PathBuf;

use crate::model::{DomainName, Revision, TenantId};

/// One invalid field of a binding record: which field, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Record field name (`instance_url`, ...).
    pub field: &'static str,
    /// What is wrong, quoting the bad value.
    pub reason: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: &'static str, reason: String) -> Self {
        Self { field, reason }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

/// Joins field errors for one-line messages.
pub(crate) struct FieldErrors<'a>(pub(crate) &'a [FieldError]);

impl fmt::Display for FieldErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Why a change was not applied to the table. The table is left as it was.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApplyError {
    /// The change is older than (or as old as) what the table has for that tenant.
    #[error("tenant {tenant}: revision {got} is not newer than applied revision {have}")]
    Stale {
        /// Tenant changed.
        tenant: TenantId,
        /// Revision the table already has.
        have: Revision,
        /// Revision of the refused change.
        got: Revision,
    },
    /// A custom domain is already bound to another tenant.
    #[error("tenant {tenant}: domain {domain} already belongs to tenant {owner}")]
    DomainTaken {
        /// Tenant whose change was refused.
        tenant: TenantId,
        /// Disputed domain.
        domain: DomainName,
        /// Tenant that holds it.
        owner: TenantId,
    },
}

/// Errors of loading bindings from a file or snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// File could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the expected format at all.
    #[error("{path}: {reason}")]
    Format {
        /// File involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}
