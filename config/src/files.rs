//! Reading the files a config names (and the config itself): regular files only, and no more
//! than a bound. A FIFO or a device at such a path would block `check` and `serve` for good
//! (a read waits for a writer that never comes), and `/dev/zero` would be read until memory
//! runs out.

use std::io::Read;
use std::path::Path;

/// The most a config file is read (far past any real one).
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Reads `path`, which must be a regular file (a symbolic link to one counts) of at most
/// `limit` bytes.
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        )
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    // Grown since it was looked at: still bounded.
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Makes a FIFO at `path` (tests: what a read must not wait on).
#[cfg(test)]
pub(crate) fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_bound_are_read() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("f");
        std::fs::write(&file, "abc").expect("write");
        assert_eq!(read_regular(&file, 3).expect("read"), b"abc");
        let e = read_regular(&file, 2).expect_err("too large");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("larger than 2 bytes"), "{e}");
        let e = read_regular(dir.path(), 10).expect_err("a directory");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        let e = read_regular(Path::new("/dev/zero"), 10).expect_err("a device");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let e = read_regular(&fifo, 10).expect_err("a FIFO");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
}
