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
    let source = match crate::store::Store::open(&settings.store) {
        Ok(s) => s.source(),
        Err(e) => {
            eprintln!("nexus-edge: {e}");
            return ExitCode::FAILURE;
        }
    };
    match crate::server::prepare(settings, &source) {
        Ok(state) => {
            crate::server::run(state, source);
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("nexus-edge: cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}
