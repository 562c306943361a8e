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
///
/// The file is opened first and what was opened is looked at: looked at by path first, the
/// path could be swapped for a FIFO before the open (an atomic rename races every reload),
/// and the open then waited for a writer for good. Opened without blocking, a FIFO opens at
/// once and is refused.
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
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
    // (O_NONBLOCK means nothing to a regular file's reads.)
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    // Grown since it was looked at: still bounded.
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// What tells that a file may have changed without reading it: the file (device, inode: a
/// rename puts another in its place), its length, and its modification and change times
/// (nanoseconds; any write or rename sets them). For files read again only when changed
/// (certificates, the admin API's tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Stamp {
    /// `path`'s stamp, following a symbolic link as a read does; `None` when it cannot be
    /// had (the file is then read every time, and its read says why).
    pub fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Whether the file changed within the last two seconds: a file system that keeps whole
    /// seconds could hide a second write of the same length in the same second, so a stamp
    /// so recent is not to be kept: the file is read again until its times are older.
    pub fn recent(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.modified.0.max(self.changed.0) >= now.saturating_sub(2)
    }
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

    /// A FIFO renamed over the file between a look at the path and its open made the open
    /// wait for a writer for good (the key reload then stopped, unseen). Here a file and a
    /// FIFO are renamed over the path in turn while it is read, for a second.
    #[test]
    fn a_fifo_renamed_over_the_file_never_holds_a_read() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().expect("dir");
        let (file, fifo, path) = (
            dir.path().join("file"),
            dir.path().join("fifo"),
            dir.path().join("keys"),
        );
        std::fs::write(&file, "{}").expect("write");
        mkfifo(&fifo);
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (dir, stop) = (dir.path().to_owned(), Arc::clone(&stop));
            let (file, fifo, path) = (file.clone(), fifo.clone(), path.clone());
            std::thread::spawn(move || {
                let staged = dir.join("staged");
                while !stop.load(Ordering::Relaxed) {
                    for from in [&file, &fifo] {
                        let _ = std::fs::hard_link(from, &staged);
                        let _ = std::fs::rename(&staged, &path);
                    }
                }
            })
        };
        let (done, reads) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(1);
            let mut read = 0u32;
            while Instant::now() < until {
                match read_regular(&path, 10) {
                    Ok(bytes) => {
                        assert_eq!(bytes, b"{}");
                        read += 1;
                    }
                    Err(e) => assert!(
                        matches!(
                            e.kind(),
                            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::NotFound
                        ),
                        "{e}"
                    ),
                }
            }
            let _ = done.send(read);
        });
        let outcome = reads.recv_timeout(Duration::from_secs(30));
        stop.store(true, Ordering::Relaxed);
        if outcome.is_err() {
            // Let the held read go (a writer opens the FIFO), then fail.
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        }
        swapper.join().expect("swapper");
        let read = outcome.expect("a read waited on a FIFO renamed over the file");
        assert!(read > 0, "the file was never read");
    }
}
