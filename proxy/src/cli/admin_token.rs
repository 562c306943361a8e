//! `nexus-edge admin-token --name NAME [--append FILE]`: a new token for the admin API.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::admin_api::tokens::{entry_for, new_token, Tokens, MAX_TOKENS_FILE_BYTES};

/// Arguments of `admin-token`.
#[derive(Debug, clap::Args)]
pub struct AdminTokenArgs {
    /// The token's name: the actor of every audit entry its writes make (letters, digits,
    /// `.`, `_`, `@`, `-`).
    #[arg(long)]
    name: String,
    /// Add its entry to this tokens file (`[admin_api] tokens_file`; created, mode 0600, if
    /// missing; an existing one keeps its mode, owner and group). Without it the entry is
    /// printed on stderr, to be added by hand.
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
                "nexus-edge: token {} added to {} (the admin API takes it at its next request)",
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
/// name taken already, a file that is already wrong, or one the router would find too
/// large, is refused and the file left as is. The file is replaced whole
/// ([`nexus_binding_store::file_store::write_atomically`]: a router never reads half of it,
/// a symlink's file is the one replaced, and the old file's mode, owner and group are kept);
/// a new one is made readable by its owner only. Two commands at once take turns (a lock on
/// the directory), so neither loses the other's token.
fn append(path: &Path, entry: &str) -> Result<(), String> {
    // Its warnings (an owner that could not be kept, a directory not synced) on stderr.
    super::tenant::admin_logging(&nexus_config::embedded_default());
    // The file a symlink names: its directory is where writers take turns.
    let path = &match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e.to_string()),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let turn = std::fs::File::open(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    turn.lock()
        .map_err(|e| format!("cannot lock {}: {e}", dir.display()))?;
    let existing = match nexus_config::files::read_regular(path, MAX_TOKENS_FILE_BYTES) {
        Ok(bytes) => Some(String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.to_string()),
    };
    let old = existing.as_deref().unwrap_or("");
    let separator = if old.is_empty() || old.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let text = format!("{old}{separator}{entry}");
    Tokens::parse(&text)?;
    if text.len() as u64 > MAX_TOKENS_FILE_BYTES {
        return Err(format!(
            "with this entry the file would be larger than the {MAX_TOKENS_FILE_BYTES} bytes \
             the router reads: take out tokens no longer used first"
        ));
    }
    if existing.is_none() {
        // Made first, empty and 0600, so that the replace keeps that mode (a router reading
        // it meanwhile finds no token, as it found no file).
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| e.to_string())?;
    }
    nexus_binding_store::file_store::write_atomically(path, text.as_bytes())
        .map_err(|e| e.to_string())
}
