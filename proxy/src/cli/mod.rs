//! The `nexus-edge` command line: `serve`, `check`, `token`, `demo`, `tenant`, `revoke`,
//! `replicas`, `upgrade`, `admin-token`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `print!` for the commands' output: see [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` for the commands' output: see [`write_stdout`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` for one-line messages that quote what the store holds (heartbeat keys, audit
/// entries): printed with [`shown::one_line`].
macro_rules! errln {
    ($($arg:tt)*) => {
        eprintln!("{}", $crate::cli::shown::one_line(&format!($($arg)*)))
    };
}

mod admin_token;
mod check;
mod revoke;
mod serve;
pub(crate) mod shown;
mod tenant;
mod token;
mod upgrade;

/// Writes a command's output. A reader that has gone away (`tenant list | head -1`) ends the
/// command quietly, with success, as the default SIGPIPE action would: Rust ignores SIGPIPE,
/// and `println!` panics on a closed pipe.
/// Text the store holds is printed with [`shown::escaped`].
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let text = args.to_string();
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(shown::escaped(&text).as_bytes())
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("nexus-edge: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Nexus Edge: the tenant router in front of every Nexus instance.
#[derive(Debug, Parser)]
#[command(name = "nexus-edge", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the router (embedded demo default when no config is given).
    Serve {
        /// Config file (TOML). See deploy/nexus-edge.example.toml.
        #[arg(long, short, env = "NEXUS_EDGE_CONFIG")]
        config: Option<PathBuf>,
        /// Listen here instead of `[server] listen` (e.g. several routers on one host).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Serve metrics and probes here instead of `[server] admin_listen` ("" turns the
        /// ops listener off, as `admin_listen = ""` does).
        #[arg(long, value_parser = ops_address)]
        admin_listen: Option<OpsAddress>,
        /// Take the listening sockets over from the router running with this config's
        /// `[server] upgrade_socket`, once everything is loaded; that router then drains and
        /// exits. No connection is refused in between.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file; exits non-zero and lists every problem if it is invalid.
    Check {
        /// Config file (TOML): required, given here or in NEXUS_EDGE_CONFIG.
        #[arg(long, short, env = "NEXUS_EDGE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Mint a signed login token for testing.
    Token(token::TokenArgs),
    /// Start the router with three demo tenants (one still provisioning) on two tiny demo
    /// instances, and print curl commands that show routing, a cross-tenant 403, a 401, a
    /// past_due notice, a tenant still provisioning and a custom domain, and the command
    /// that mints more tokens.
    Demo(crate::demo::DemoArgs),
    /// Read and change tenant bindings in the configured store (atomic, audited).
    Tenant(tenant::TenantArgs),
    /// Revoke tokens before they expire (one token, a user's, a tenant's), on every router
    /// (audited); list and remove revocations.
    Revoke(revoke::RevokeArgs),
    /// Start the new router (`serve --upgrade`) in the background and wait until it has
    /// taken the listeners over from the running one (exit 0) or given up (exit 1; the
    /// running router goes on serving). For deploy scripts and systemd's `ExecReload=`.
    Upgrade {
        /// Config file (TOML) of the running router, with `[server] upgrade_socket`.
        #[arg(long, short, env = "NEXUS_EDGE_CONFIG")]
        config: PathBuf,
    },
    /// List the router replicas following the Redis store, their applied revision and lag.
    Replicas {
        /// Config file naming a Redis store (required: the default, the embedded demo store,
        /// is a file store, which has no replicas to list).
        #[arg(long, short, env = "NEXUS_EDGE_CONFIG")]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a token for the admin API (`[admin_api]`): printed once on stdout, its digest
    /// added to the tokens file (`--append`) or printed on stderr.
    AdminToken(admin_token::AdminTokenArgs),
}

/// An `--admin-listen` value: an address, or none (the ops listener off).
#[derive(Debug, Clone, Copy)]
pub struct OpsAddress(pub Option<std::net::SocketAddr>);

fn ops_address(text: &str) -> Result<OpsAddress, String> {
    if text.is_empty() {
        return Ok(OpsAddress(None));
    }
    text.parse()
        .map(|a| OpsAddress(Some(a)))
        .map_err(|e| format!("{e} (or \"\" to turn the ops listener off)"))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
            upgrade,
        } => serve::run(config.as_deref(), listen, admin_listen, upgrade),
        Command::Check { config } => check::run(config.as_deref()),
        Command::Token(args) => token::run(&args),
        Command::Demo(args) => crate::demo::run(&args),
        Command::Tenant(args) => tenant::run(args),
        Command::Revoke(args) => revoke::run(args),
        Command::Upgrade { config } => upgrade::run(&config),
        Command::Replicas { config, json } => tenant::replicas(config.as_deref(), json),
        Command::AdminToken(args) => admin_token::run(&args),
    }
}

/// Loads settings from `path`, or the embedded default when there is none.
pub(crate) fn load_settings(
    path: Option<&Path>,
) -> Result<nexus_config::Settings, nexus_config::ConfigError> {
    match path {
        Some(p) => nexus_config::load_file(p),
        None => Ok(nexus_config::embedded_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::ops_address;

    #[test]
    fn an_empty_admin_listen_turns_the_ops_listener_off() {
        assert_eq!(ops_address("").map(|a| a.0), Ok(None));
        assert_eq!(
            ops_address("127.0.0.1:9090").map(|a| a.0),
            Ok(Some("127.0.0.1:9090".parse().unwrap()))
        );
        assert!(ops_address("nowhere").is_err_and(|e| e.contains("\"\" to turn")));
    }
}
