//! `nexus-edge admin-token --name NAME [--append FILE]`: a new token for the admin API.

use std::io::Write as _;
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
/// large, is refused and the file left as is. The new file is written beside it and renamed
/// over it, so a router never reads half of it; it keeps the old file's mode, owner and
/// group (a router that reads it as its owner must go on reading it), and a new one is made
/// readable by its owner only. Two commands at once take turns (a lock on the directory),
/// so neither loses the other's token.
fn append(path: &Path, entry: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    // A symlink's file is the one replaced, not the link.
    let path = match std::fs::canonicalize(path) {
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
    let existing = match nexus_config::files::read_regular(&path, MAX_TOKENS_FILE_BYTES) {
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
    let meta = match existing {
        Some(_) => Some(std::fs::metadata(&path).map_err(|e| e.to_string())?),
        None => None,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(meta.as_ref().map_or(0o600, |m| m.mode() & 0o7777))
            .open(&temp)?;
        if let Some(m) = &meta {
            // The mode again: the umask took bits off the one asked at creation.
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
                m.mode() & 0o7777,
            ))?;
            if let Err(e) = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid())) {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot give the new file the old one's owner and group ({}:{}): {e}; \
                         run as its owner or root",
                        m.uid(),
                        m.gid()
                    ),
                ));
            }
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e.to_string());
    }
    // The rename itself, on disk. The token is in the file by now: a failure here is said,
    // not taken for a token not made.
    if let Err(e) = turn.sync_all() {
        eprintln!(
            "nexus-edge: warning: {}: the directory could not be synced ({e}); the entry is \
             written, and a crash now could lose it",
            dir.display()
        );
    }
    Ok(())
}
