//! Tenant bindings for Nexus Edge.
//!
//! - [`model`]: the binding record and the types it is made of.
//! - [`table`]: the immutable, structurally shared [`BindingTable`] and the lock-free
//!   [`BindingHandle`] requests read it through.
//! - [`revocations`]: the token deny list, synced from Redis or a file the same way.
//!
//! This crate knows nothing of Pingora or HTTP: it is shared by the proxy, the admin CLI
//! and the benchmarks.
#![warn(missing_docs)]

pub mod error;
pub mod model;
pub mod table;

pub use error::{ApplyError, FieldError, StoreError};
pub use model::{
    is_instance_address, Binding, BindingRecord, DomainName, InstanceId, Interner, Mode, OrgId,
    Plan, Region, Revision, SubscriptionId, TenantId, TenantStatus, UpstreamUrl,
};
pub use table::{BindingHandle, BindingTable, Change};
pub mod source;
pub use source::{BindingSource, SyncHealth};
pub mod admin;
mod audit_log;
pub mod file_store;
mod json;
mod record_lines;
pub mod records;
pub mod redis_store;
mod retire;
pub mod revocations;
pub mod snapshot;
pub use admin::{
    Actor, AdminError, Applied, AuditEntry, BindingAdmin, History, IfUnchanged, ImportError,
    ImportSeen, ImportSource, Listing, Mutation, WipedStore,
};
