//! `nexus-edge admin-token --name NAME [--append FILE]`: a new token for the admin API.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::admin_api::tokens::{entry_for, new_token, Tokens};

/// Arguments of `admin-token`.
#[derive(Debug, clap::Args)]
pub struct AdminTokenArgs {
    /// The token's name: the actor of every audit entry its writes make (letters, digits,
    /// `.`, `_`, `@`, `-`).
    #[arg(long)]
    name: String,
    /// Add its entry to this tokens file (`[admin_api] tokens_file`; created, mode 0600, if
    /// missing). Without it the entry is printed on stderr, to be added by hand.
    #[arg(long)]
    append: Option<PathBuf>,
}

/// Prints a new token on stdout (its only copy: the file keeps its digest), and adds its
/// entry to the tokens file or prints it.
pub(super) fn run(args: &AdminTokenArgs) -> ExitCode {
    let made = new_token().and_then(|token| Ok((entry_for(&args.name, &token)?, token)));
    let (entry, token) = match made {
        Ok(m) => m,
        Err(e) => {
            eprintln!("nexus-edge: {e}");
            return ExitCode::FAILURE;
        }
    };
    match &args.append {
        Some(path) => {
            if let Err(e) = append(path, &entry) {
                eprintln!("nexus-edge: {}: {e}; no token made", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!(
                "nexus-edge: token {} added to {} (the admin API reads it at every request)",
                args.name,
                path.display()
            );
        }
        None => eprint!("{entry}"),
    }
    outln!("{token}");
    ExitCode::SUCCESS
}

/// Adds `entry` to the tokens file at `path`, once the file with it is known to be valid: a
/// name taken already, or a file that is already wrong, is refused and the file left as is.
fn append(path: &Path, entry: &str) -> Result<(), String> {
    let existing = match nexus_config::files::read_regular(path, 256 * 1024) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.to_string()),
    };
    let separator = if existing.is_empty() || existing.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let added = format!("{separator}{entry}");
    Tokens::parse(&format!("{existing}{added}"))?;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    file.write_all(added.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| e.to_string())
}
