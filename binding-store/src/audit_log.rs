//! The file store's audit log, `<bindings file>.audit.jsonl`: one JSON line per change,
//! appended and synced before the change is made.
//!
//! Writing the line first means no change is ever made without one. It also means a writer
//! that stops between the two (killed, power lost) leaves a line for a change that was not
//! made. The next writer, under the same lock, tells that from the bindings file (its
//! revision never reached the line's) and records that the change was not made, so the log
//! stays a true account. A line torn by a crash mid-write (no final newline, and not a whole
//! entry) is cut off; a whole entry missing only its newline is finished.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::admin::AuditEntry;

/// How much of the end of the log is read first to find its last line (doubled until found).
const TAIL_WINDOW: u64 = 64 * 1024;

/// What the end of a log tells: its last readable entry, if any.
#[derive(Debug)]
pub(crate) enum Tail {
    /// No lines (or blank ones only): a new store's log.
    Empty,
    /// The last entry that can be read.
    Entry(Box<AuditEntry>),
    /// Lines, none of them an entry: whether the store recorded changes cannot be told.
    Unreadable,
}

/// The log next to a bindings file (or a revocations file).
pub(crate) fn path_for(bindings: &Path) -> PathBuf {
    beside(bindings, ".audit.jsonl")
}

/// The path of the file beside `path` named as it is with `suffix` added (`x.json` →
/// `x.json.lock`).
pub(crate) fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// An open audit log. Callers hold the store's write lock while they use it.
pub(crate) struct AuditLog {
    file: File,
    path: PathBuf,
    /// The log's length after this writer's last append, for [`AuditLog::cut`].
    appended_to: Option<u64>,
}

impl AuditLog {
    /// Opens (creating) the log for appending.
    pub(crate) fn open(path: PathBuf) -> std::io::Result<AuditLog> {
        let file = File::options()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        Ok(AuditLog {
            file,
            path,
            appended_to: None,
        })
    }

    /// The open log file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The last entry that can be read, after cutting off a torn final line.
    ///
    /// Lines after it that are not entries (edited by hand, damaged) are passed over, as
    /// [`AuditLog::unmade_after`] and a tenant's history pass over them. Were one of them
    /// taken as "nothing can be told from the log", a single junk line would turn off what
    /// the log guards: the refusal to start a new bindings file over a lost one, and the
    /// numbering past every revision handed out (the next write would reuse them). Refusing
    /// every write until the line is mended would keep them too, but stop all writes over a
    /// line that holds nothing. What a damaged line can still hide is its own revision, had
    /// it been an entry: a change made is in the bindings file's counter too, and a change
    /// never made reached no router; only a lost file written over with
    /// `--start-new-history` could reuse it.
    pub(crate) fn last_entry(&mut self) -> std::io::Result<Tail> {
        let mut window = TAIL_WINDOW;
        loop {
            let len = self.file.metadata()?.len();
            if len == 0 {
                return Ok(Tail::Empty);
            }
            let start = len.saturating_sub(window);
            let mut tail = Vec::with_capacity((len - start) as usize);
            self.file.seek(SeekFrom::Start(start))?;
            (&self.file).take(len - start).read_to_end(&mut tail)?;
            if tail.last() != Some(&b'\n') {
                let cut_at = match tail.iter().rposition(|&b| b == b'\n') {
                    Some(i) => start + i as u64 + 1,
                    None if start == 0 => 0,
                    None => {
                        window = window.saturating_mul(2);
                        continue;
                    }
                };
                let unfinished = &tail[(cut_at - start) as usize..];
                if serde_json::from_slice::<AuditEntry>(unfinished).is_ok() {
                    // A whole entry that lacks only its newline (a writer stopped just before
                    // it, or the file was copied or edited): finish it, and keep it.
                    self.file.write_all(b"\n")?;
                } else {
                    // Torn: the writer stopped inside the line, so its sync never returned and
                    // its change was never attempted. Cut back to the last whole line.
                    tracing::warn!(file = %self.path.display(), bytes = len - cut_at,
                        "cutting off a torn audit line (its writer stopped mid-write)");
                    self.file.set_len(cut_at)?;
                }
                self.file.sync_all()?;
                continue;
            }
            let mut lines: Vec<&[u8]> = tail[..tail.len() - 1].split(|&b| b == b'\n').collect();
            // The window's first line may begin before it: only whole lines are read.
            if start > 0 {
                lines.remove(0);
            }
            let mut unreadable = 0usize;
            for line in lines.iter().rev() {
                if line.trim_ascii().is_empty() {
                    continue;
                }
                match serde_json::from_slice::<AuditEntry>(line) {
                    Ok(entry) => {
                        if unreadable > 0 {
                            tracing::warn!(file = %self.path.display(), lines = unreadable,
                                revision = entry.revision,
                                "audit lines after the last readable entry are not entries \
                                 (edited by hand?); going by that entry");
                        }
                        return Ok(Tail::Entry(Box::new(entry)));
                    }
                    Err(_) => unreadable += 1,
                }
            }
            if start > 0 {
                window = window.saturating_mul(2);
                continue;
            }
            return Ok(if unreadable == 0 {
                Tail::Empty
            } else {
                Tail::Unreadable
            });
        }
    }

    /// Appends entries in one write and one sync. Returns the length before, for
    /// [`AuditLog::cut`].
    pub(crate) fn append_all(&mut self, entries: &[AuditEntry]) -> std::io::Result<u64> {
        let mut lines = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut lines, entry).map_err(std::io::Error::other)?;
            lines.push(b'\n');
        }
        let before = self.file.metadata()?.len();
        let written = self
            .file
            .write_all(&lines)
            .and_then(|()| self.file.sync_all());
        if let Err(e) = written {
            let _ = self.file.set_len(before);
            return Err(e);
        }
        self.appended_to = Some(before + lines.len() as u64);
        Ok(before)
    }

    /// The logged changes past revision `high` that have no `not_made` entry yet, in log
    /// order. Reads the whole log: only called when its last entry is past the file's
    /// counter, i.e. after a writer stopped between its audit lines and the file.
    pub(crate) fn unmade_after(
        &mut self,
        high: u64,
        not_made: &str,
    ) -> std::io::Result<Vec<AuditEntry>> {
        let mut bytes = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        (&self.file).read_to_end(&mut bytes)?;
        // Bytes, not text: a damaged line (even one that is not UTF-8) is skipped, not fatal.
        let past: Vec<AuditEntry> = bytes
            .split(|&b| b == b'\n')
            .filter_map(|l| serde_json::from_slice::<AuditEntry>(l).ok())
            .filter(|e| e.revision > high)
            .collect();
        let noted: std::collections::HashSet<u64> = past
            .iter()
            .filter(|e| e.op == not_made)
            .map(|e| e.revision)
            .collect();
        Ok(past
            .into_iter()
            .filter(|e| e.op != not_made && !noted.contains(&e.revision))
            .collect())
    }

    /// Removes what was appended after `before` (the change it announced failed).
    ///
    /// Only while nothing follows this writer's lines: lines another writer appended after
    /// them (one whose lock file was removed from under this one's) are not cut with them;
    /// this writer's then stay, and the next write marks them not made.
    pub(crate) fn cut(&mut self, before: u64) -> std::io::Result<()> {
        if self.appended_to != Some(self.file.metadata()?.len()) {
            return Err(std::io::Error::other(
                "another writer's lines follow them in the log",
            ));
        }
        self.file.set_len(before)?;
        self.appended_to = None;
        self.file.sync_all()
    }

    /// Where the log is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
