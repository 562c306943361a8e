//! Nexus Edge: the tenant router.
#![warn(missing_docs)]

pub mod auth;
pub mod authz;
pub mod host;
pub mod path;
pub mod policy;
