//! `nexus-edge check`: validate a config file.

use std::path::Path;
use std::process::ExitCode;

pub(super) fn run(config: Option<&Path>) -> ExitCode {
    let Some(path) = config else {
        eprintln!("nexus-edge check: no config file given (--config FILE or NEXUS_EDGE_CONFIG)");
        return ExitCode::from(2);
    };
    match nexus_config::load_file(path) {
        Ok(settings) => {
            // Keys are part of a valid configuration: a config whose JWKS cannot be loaded
            // would start a router that rejects every login.
            match crate::auth::Authenticator::new(&settings.auth) {
                Ok(auth) => {
                    println!(
                        "{}: ok ({} verification keys)",
                        path.display(),
                        auth.key_count()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: auth.jwks_file: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
