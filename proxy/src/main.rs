//! The `nexus-edge` command.

use std::process::ExitCode;

use clap::Parser;

/// glibc's allocator was a sixth of the router's CPU per request under load (malloc, free and
/// chunk consolidation around Pingora's and our per-request buffers); mimalloc's thread-local
/// free lists cost a fraction of that.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = nexus_edge::cli::Cli::parse();
    nexus_edge::cli::run(cli)
}
