//! A process whose wall clock is set off from the host's (libfaketime, preloaded), as a host
//! whose clock runs behind or ahead would have it.

use std::path::PathBuf;

/// Where distributions put libfaketime.
fn library() -> PathBuf {
    let mut candidates = vec![
        PathBuf::from("/usr/lib/faketime/libfaketime.so.1"),
        PathBuf::from("/usr/local/lib/faketime/libfaketime.so.1"),
    ];
    if let Ok(dirs) = std::fs::read_dir("/usr/lib") {
        for d in dirs.flatten() {
            candidates.push(d.path().join("faketime/libfaketime.so.1"));
        }
    }
    candidates
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libfaketime not found: apt-get install faketime"))
}

/// The environment that sets a process's clock off by `offset` (libfaketime's relative form:
/// `-2h`, `+90m`). Its monotonic clock moves with the host's.
pub fn skewed(offset: &str) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".to_owned(), library().display().to_string()),
        ("FAKETIME".to_owned(), offset.to_owned()),
        ("DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
    ]
}
