//! The `nexus-edge` command.

use std::process::ExitCode;

use clap::Parser;

/// glibc's allocator was a sixth of the router's CPU per request under load (malloc, free and
/// chunk consolidation around Pingora's and our per-request buffers); mimalloc's thread-local
/// free lists cost a fraction of that.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before the first request's memory: what is mapped early stays as it was faulted in.
    nexus_edge::huge_pages::keep_off();
    let cli = match nexus_edge::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // clap reads an empty NEXUS_EDGE_CONFIG as `--config` given no value, and says so of
        // `--config`, which the user never typed.
        Err(e)
            if e.kind() == clap::error::ErrorKind::InvalidValue
                && e.to_string().contains("'--config <CONFIG>'")
                && std::env::var_os("NEXUS_EDGE_CONFIG").is_some_and(|v| v.is_empty())
                && !std::env::args().any(|a| a == "-c" || a.starts_with("--config")) =>
        {
            eprintln!(
                "nexus-edge: NEXUS_EDGE_CONFIG is set but empty: name a config file in it, or \
                 unset it (`--config FILE` takes its place)"
            );
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    nexus_edge::cli::run(cli)
}
