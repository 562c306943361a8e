//! Nexus Edge configuration.
#![warn(missing_docs)]

pub mod settings;

pub use settings::*;
