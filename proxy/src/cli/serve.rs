//! `nexus-edge serve`: run the router.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

pub(super) fn run(
    config: Option<&Path>,
    listen: Option<SocketAddr>,
    admin_listen: Option<super::OpsAddress>,
    upgrade: bool,
) -> ExitCode {
    let mut settings = match super::load_settings(config) {
        Ok(s) => s,
        Err(e) => {
            // Every problem at once, those of the files the config names (a key set, a CA
            // bundle, the bindings file) too, as `check` lists them: an operator restarting
            // a service would otherwise meet them one start at a time.
            if let (Some(path), nexus_config::ConfigError::Invalid { .. }) = (config, &e) {
                if super::check::run(Some(path)) != ExitCode::SUCCESS {
                    return ExitCode::FAILURE;
                }
            }
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // What the file cannot serve with (the admin commands read it too, and take it): listed
    // with every other problem, as `check` lists them.
    if nexus_config::serving_problem(&settings.server, &settings.store).is_some() {
        if let Some(path) = config {
            let _ = super::check::run(Some(path));
        }
        return ExitCode::FAILURE;
    }
    if let Some(l) = listen {
        settings.server.listen = l;
    }
    if let Some(super::OpsAddress(a)) = admin_listen {
        settings.server.admin_listen = a;
    }
    // The file's check saw the file's addresses; an option may have changed either.
    if let (Some(admin), true) = (
        settings.server.admin_listen,
        listen.is_some() || admin_listen.is_some_and(|a| a.0.is_some()),
    ) {
        let named = if listen.is_some() {
            "--listen"
        } else {
            "server.listen"
        };
        if let Some(clash) = nexus_config::listener_clash(settings.server.listen, admin, named) {
            let from = if admin_listen.is_some_and(|a| a.0.is_some()) {
                "--admin-listen"
            } else {
                "server.admin_listen, or its default"
            };
            eprintln!(
                "nexus-edge: cannot serve: the ops listener at {admin} ({from}) cannot sit \
                 beside the router: {clash}"
            );
            return ExitCode::FAILURE;
        }
    }
    if upgrade && settings.server.upgrade_socket.is_none() {
        eprintln!(
            "nexus-edge: --upgrade takes the listeners over through [server] upgrade_socket, \
             which {} does not set (the running router must have it too)",
            config.map_or_else(
                || "the embedded default".to_owned(),
                |c| c.display().to_string()
            )
        );
        return ExitCode::FAILURE;
    }
    crate::logging::init(&settings.log);
    if config.is_none() {
        tracing::warn!(
            "no config file: serving the embedded demo default (demo keys, demo bindings); \
             never use it in production"
        );
    }
    crate::server::serve(settings, config, upgrade)
}
