//! The admin API's tokens file: who may call it, each token known only by its SHA-256 digest
//! and named for the audit log.
//!
//! ```toml
//! [[token]]
//! name = "provisioner"
//! sha256 = "<64 hex digits: SHA-256 of the token>"
//! ```
//!
//! The file is looked at for every request (read again when it has changed): a token added
//! counts at once, and one taken out (a leak) stops at once, with no restart. A file that
//! cannot be read or holds a mistake refuses every request ([`TokensError`]) rather than fall
//! back on an older version.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use nexus_config::files::Stamp;
use ring::digest::{digest, SHA256};

/// The largest tokens file read: a few hundred entries.
pub const MAX_TOKENS_FILE_BYTES: u64 = 256 * 1024;

/// The longest token name: it is the actor of every audit entry its writes make.
const MAX_NAME_BYTES: usize = 64;

/// The longest token accepted in a request; [`new_token`]'s are 47 bytes.
pub const MAX_TOKEN_BYTES: usize = 256;

/// What every generated token starts with, so that one found in a log or a repository is
/// known for what it is.
const TOKEN_PREFIX: &str = "nxa_";

/// The tokens the admin API accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    digest: [u8; 32],
}

/// Why the tokens file cannot be used. Every admin request is refused while it lasts.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file cannot be read (missing, no permission, too large, not a regular file).
    #[error("cannot read the admin API's tokens file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file reads, but holds a mistake.
    #[error("the admin API's tokens file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
}

/// One `[[token]]` as written: every member checked before any is used.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    sha256: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    token: Vec<RawEntry>,
}

impl Tokens {
    /// Reads and checks the tokens file at `path`.
    pub fn read(path: &Path) -> Result<Self, TokensError> {
        let bytes =
            nexus_config::files::read_regular(path, MAX_TOKENS_FILE_BYTES).map_err(|source| {
                TokensError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let invalid = |message: String| TokensError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8".to_owned()))?;
        Self::parse(&text).map_err(invalid)
    }

    /// Checks a tokens file's text: every entry named and holding a digest, no name or
    /// digest twice (two tokens under one name would make its audit entries ambiguous).
    pub fn parse(text: &str) -> Result<Self, String> {
        // toml's message names the line and the key.
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.token.len());
        for (i, t) in raw.token.into_iter().enumerate() {
            let at = format!("token {:?} ([[token]] number {})", t.name, i + 1);
            check_name(&t.name).map_err(|e| format!("{at}: name {e}"))?;
            let digest = parse_digest(&t.sha256).map_err(|e| format!("{at}: sha256 {e}"))?;
            if entries.iter().any(|e| e.name == t.name) {
                return Err(format!("{at}: the name is given to another token already"));
            }
            if entries.iter().any(|e| e.digest == digest) {
                return Err(format!(
                    "{at}: the digest is another token's too: one token, two names"
                ));
            }
            entries.push(Entry {
                name: t.name,
                digest,
            });
        }
        Ok(Self { entries })
    }

    /// The name of the token `presented` is, if it is one of these. Every entry is compared,
    /// each in constant time, so that the time taken says nothing about which came close.
    pub fn who(&self, presented: &str) -> Option<&str> {
        let d = digest(&SHA256, presented.as_bytes());
        let mut found = None;
        for e in &self.entries {
            if constant_time_eq(d.as_ref(), &e.digest) {
                found = Some(e.name.as_str());
            }
        }
        found
    }

    /// How many tokens the file lists.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file lists none (every request is refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The tokens file, parsed again only when it has changed: each request looks at the file's
/// identity and times (a `stat`), so a token removed stops working at the next request, and
/// an unauthenticated flood costs no parsing.
#[derive(Debug)]
pub struct TokensFile {
    path: PathBuf,
    parsed: std::sync::Mutex<Option<(Stamp, std::sync::Arc<Tokens>)>>,
}

impl TokensFile {
    /// The tokens file at `path`, not read yet.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            parsed: std::sync::Mutex::new(None),
        }
    }

    /// The tokens the file lists now. The stamp is taken before the read: a file changed in
    /// between is read again at the next request, its stamp then differing.
    pub fn current(&self) -> Result<std::sync::Arc<Tokens>, TokensError> {
        let stamp = Stamp::of(&self.path);
        let mut parsed = self
            .parsed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Some((kept, tokens)), Some(now)) = (parsed.as_ref(), stamp) {
            if *kept == now {
                return Ok(std::sync::Arc::clone(tokens));
            }
        }
        // A file that fails is forgotten with its version: no older one stands in for it.
        *parsed = None;
        let tokens = std::sync::Arc::new(Tokens::read(&self.path)?);
        // Kept only once old: a write within the same second could share a recent stamp.
        if let Some(stamp) = stamp.filter(|s| !s.recent()) {
            *parsed = Some((stamp, std::sync::Arc::clone(&tokens)));
        }
        Ok(tokens)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token's name: the audit log's actor, so printable, short, and one a reader cannot
/// mistake for another (no blanks, no look-alike Unicode).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("is longer than {MAX_NAME_BYTES} bytes"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')))
    {
        Some(c) => Err(format!(
            "holds {c:?}: letters, digits, `.`, `_`, `@` and `-` only"
        )),
        None => Ok(()),
    }
}

fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    let wrong =
        || "must be 64 hex digits (SHA-256 of the token: `printf %s TOKEN | sha256sum`)".to_owned();
    if hex.len() != 64 {
        return Err(wrong());
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let digit = |i: usize| crate::path::hex_val(pair[i]).ok_or_else(wrong);
        *byte = (digit(0)? << 4) | digit(1)?;
    }
    Ok(out)
}

/// A new random token: `nxa_`, then 32 bytes from the system's generator in base64url.
pub fn new_token() -> Result<String, String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system's random number generator failed".to_owned())?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The tokens file entry that accepts `token` under `name` (checked as the file's are).
pub fn entry_for(name: &str, token: &str) -> Result<String, String> {
    check_name(name).map_err(|e| format!("--name {e}"))?;
    let hex = nexus_binding_store::snapshot::hex(digest(&SHA256, token.as_bytes()).as_ref());
    Ok(format!(
        "[[token]]\nname = \"{name}\"\nsha256 = \"{hex}\"\n"
    ))
}
