//! The `nexus-edge` command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = nexus_edge::cli::Cli::parse();
    nexus_edge::cli::run(cli)
}
