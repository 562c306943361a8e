//! `nexus-edge serve`: run the router.

use std::path::Path;
use std::process::ExitCode;

pub(super) fn run(config: Option<&Path>) -> ExitCode {
    let settings = match super::load_settings(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    crate::logging::init(&settings.log);
    if config.is_none() {
        tracing::warn!(
            "no config file: serving the embedded demo default (demo keys, demo bindings); \
             never use it in production"
        );
    }
    crate::server::serve(settings)
}
