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
            match p.line {
                Some(l) => write!(f, "  {}:{l}: {}: {}", self.path.display(), p.key, p.message)?,
                None => write!(f, "  {}: {}: {}", self.path.display(), p.key, p.message)?,
            }
            if i + 1 < n {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}
