//! Config errors: every problem at once, each with its key path and line.

use std::fmt;
use std::path::PathBuf;

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `auth.leeway` or `tenancy.base_domains[1]`.
    pub key: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, and what would be right.
    pub message: String,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}", path = path.display())]
    Io {
        /// The config file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{}", Invalid { path, problems })]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems of the config file at `path`, in file order (problems without a line,
    /// whole-file ones, last).
    pub fn invalid(path: &std::path::Path, mut problems: Vec<Problem>) -> Self {
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        }
    }
}

/// A key path as a problem line shows it: as written, unless it holds a character a terminal
/// would act on or hide (a quoted TOML key may hold any): then quoted with escapes, so that a
/// key cannot end its line and forge another problem, or send the terminal an escape.
fn shown_key(key: &str) -> std::borrow::Cow<'_, str> {
    // Quotes are escaped by `escape_debug` but do a terminal no harm: a quoted key part
    // (`auth.issuer_keys."b"`) is shown as written.
    let plain = key.chars().all(|c| {
        let escaped = c.escape_debug();
        matches!(c, '"' | '\'') || escaped.len() == 1 && !matches!(c, '\u{2028}' | '\u{2029}')
    });
    if plain {
        key.into()
    } else {
        format!("{key:?}").into()
    }
}

/// Display helper: one line per problem, `file:line: key: message`.
struct Invalid<'a> {
    path: &'a PathBuf,
    problems: &'a [Problem],
}

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: invalid config ({n} problem{}):",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for (i, p) in self.problems.iter().enumerate() {
            let key = shown_key(&p.key);
            match p.line {
                Some(l) => write!(f, "  {}:{l}: {key}: {}", self.path.display(), p.message)?,
                None => write!(f, "  {}: {key}: {}", self.path.display(), p.message)?,
            }
            if i + 1 < n {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_could_forge_a_line_or_drive_a_terminal_is_shown_escaped() {
        for plain in [
            "server.threads",
            "tenancy.base_domains[1]",
            "auth.hmac_keys[0].kid",
        ] {
            assert_eq!(shown_key(plain), plain);
        }
        for (key, shown) in [
            (
                "server.x\nc.toml:1: server.threads: ok",
                r#""server.x\nc.toml:1: server.threads: ok""#,
            ),
            ("server.x\u{1b}[2J", r#""server.x\u{1b}[2J""#),
            ("server.a\u{202e}b", r#""server.a\u{202e}b""#),
            ("server.a\u{2028}b", r#""server.a\u{2028}b""#),
        ] {
            assert_eq!(shown_key(key), shown, "{key:?}");
        }
        let e = ConfigError::invalid(
            std::path::Path::new("c.toml"),
            vec![Problem {
                key: "server.x\nforged".to_owned(),
                line: Some(3),
                message: "unknown key".to_owned(),
            }],
        );
        assert_eq!(e.to_string().lines().count(), 2, "{e}");
    }
}
