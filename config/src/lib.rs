//! Nexus Edge configuration: TOML parsing and validation into typed settings.
//!
//! The file format is private to this crate; the rest of the router only sees the validated
//! [`Settings`]. Every problem in a file is reported at once, each with its dotted key path
//! and line, and unknown keys are errors (a typo must not silently fall back to a default).
//! `deploy/nexus-edge.example.toml` documents every key.
#![warn(missing_docs)]

mod defaults;
mod duration;
mod error;
pub mod files;
mod ipnet;
mod load;
mod reader;
pub mod settings;

pub use defaults::embedded_default;
pub use duration::parse_duration;
pub use error::{ConfigError, Problem};
pub use ipnet::IpNet;
pub use load::{
    key_line, listener_clash, load_file, parse_sections, parse_str, read_text, NamedFiles, Sections,
};
pub use settings::*;

#[cfg(test)]
mod tests;
