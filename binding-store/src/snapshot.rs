//! The last-known-good snapshot: the table on local disk, so a replica that restarts while
//! Redis is down can still serve.
//!
//! Layout: one header line of JSON `{"format":"nexus-edge.snapshot","version":4,
//! "key_prefix":"..","history":"..","revision":..,"count":..,"written_at_ms":..,"sha256":".."}`
//! (`history` absent when unknown), then one
//! binding record per line. The checksum covers the header's other fields and every byte
//! after the header line. Written temp → fsync → rename → fsync dir; a snapshot that fails any
//! check is refused whole, never partially loaded.
//!
//! The header's fields are covered because they are what the replica acts on: a damaged
//! `revision` would have it resume the change feed at the wrong place, a damaged `key_prefix`
//! serve another keyspace's table. Versions 1 and 2, whose checksum covers the records only,
//! are still read, so a replica upgraded in place keeps its last good table.
//!
//! The header names the Redis key prefix whose table it holds: a revision only means something
//! within one keyspace, and a replica pointed at another prefix (a new environment, a
//! blue/green switch) must not serve, or stand in with, the old keyspace's bindings. Version
//! 1 (before the prefix was recorded) is still read, as the configured prefix's table: its
//! prefix is the one it wrote under unless the configuration changed in the same step.
//!
//! From version 4 the header also names the history (`{prefix}:history` in Redis) the table
//! was loaded from: a replica restarting over a Redis that lost its data while the whole fleet
//! was down, and that a write then began a new history in, tells that history from its own.
//! Versions 1 to 3 are read as of an unknown history.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::Interner;
use crate::model::{Binding, Revision};
use crate::records::parse_record_with;
use crate::table::BindingTable;

/// Snapshot format version this build writes (4: the header names the history too). It also
/// reads versions 1 to 3.
pub const SNAPSHOT_VERSION: u32 = 4;

/// The version before the key prefix was recorded.
const SNAPSHOT_VERSION_NO_PREFIX: u32 = 1;
/// The last version whose checksum covers the records only.
const SNAPSHOT_VERSION_BODY_SUM: u32 = 2;
/// The last version that does not name the history.
const SNAPSHOT_VERSION_NO_HISTORY: u32 = 3;
const FORMAT: &str = "nexus-edge.snapshot";

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    /// Absent from version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_prefix: Option<String>,
    /// Absent before version 4, and when the history was unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history: Option<String>,
    revision: u64,
    count: usize,
    written_at_ms: u64,
    sha256: String,
}

/// Why a snapshot was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// No snapshot file.
    #[error("{0}: no snapshot")]
    Missing(PathBuf),
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Written by another format version.
    #[error("{path}: snapshot format version {found} is not supported (this build reads 1 to {SNAPSHOT_VERSION})")]
    UnsupportedVersion {
        /// File.
        path: PathBuf,
        /// Version found.
        found: u32,
    },
    /// Holds the table of another keyspace than the one this replica follows.
    #[error(
        "{path}: snapshot of key prefix {found:?}, but this replica follows {expected:?}; \
         refusing it (its bindings are another keyspace's: delete the file, or point \
         snapshot_path elsewhere)"
    )]
    OtherKeyspace {
        /// File.
        path: PathBuf,
        /// Key prefix the snapshot was written under.
        found: String,
        /// Key prefix of this replica.
        expected: String,
    },
    /// Contents do not match the checksum (truncated or damaged).
    #[error("{0}: snapshot checksum mismatch (truncated or damaged); refusing it")]
    ChecksumMismatch(PathBuf),
    /// Not a snapshot, or a record in it is invalid.
    #[error("{path}:{line}: corrupt snapshot: {reason}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The checksum a header of its version must carry for `body`: from version 3 over the
/// header's fields (one per line, the key prefix and history as JSON, so no value can pass
/// for another's line) and then the records; before, over the records only.
fn checksum(header: &Header, body: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    if header.version > SNAPSHOT_VERSION_BODY_SUM {
        let prefix = serde_json::to_string(&header.key_prefix).unwrap_or_default();
        ctx.update(
            format!(
                "{}\nversion={}\nkey_prefix={prefix}\nrevision={}\ncount={}\nwritten_at_ms={}\n",
                header.format, header.version, header.revision, header.count, header.written_at_ms
            )
            .as_bytes(),
        );
    }
    if header.version > SNAPSHOT_VERSION_NO_HISTORY {
        let history = serde_json::to_string(&header.history).unwrap_or_default();
        ctx.update(format!("history={history}\n").as_bytes());
    }
    ctx.update(body);
    hex(ctx.finish().as_ref())
}

/// Writes `table`, followed under Redis key prefix `key_prefix` up to feed revision
/// `applied` of history `history` (`None`: unknown), atomically to `path`.
///
/// The header says `applied`, never the newest record's revision: a follower applies each
/// feed entry as its tenant's newest record, and a full load scans records written after its
/// starting point, so the table can hold records of revisions past changes not applied yet
/// (a later delete). The header is what a restore from the snapshot is measured against, so
/// it only vouches for what was applied. (A delete after the newest record makes `applied`
/// the higher one.)
///
/// The temp file has a random name and is created exclusively: replicas that share the path
/// (containers, all process 1) never write into, or rename, each other's.
pub fn write_snapshot(
    path: &Path,
    table: &BindingTable,
    applied: Revision,
    key_prefix: &str,
    history: Option<&str>,
) -> Result<(), SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut body = Vec::with_capacity(table.len() * 320);
    let mut bindings: Vec<&Arc<Binding>> = table.iter().collect();
    bindings.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    for b in &bindings {
        serde_json::to_writer(&mut body, &b.to_record())
            .map_err(|e| io(std::io::Error::other(e)))?;
        body.push(b'\n');
    }
    let mut header = Header {
        format: FORMAT.to_owned(),
        version: SNAPSHOT_VERSION,
        key_prefix: Some(key_prefix.to_owned()),
        history: history.map(str::to_owned),
        revision: applied.get(),
        count: bindings.len(),
        written_at_ms: crate::source::now_unix_ms(),
        sha256: String::new(),
    };
    header.sha256 = checksum(&header, &body);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let (tmp, file) = create_temp(dir, path).map_err(io)?;
    let result = (|| {
        let mut w = BufWriter::new(file);
        serde_json::to_writer(&mut w, &header).map_err(std::io::Error::other)?;
        w.write_all(b"\n")?;
        w.write_all(&body)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    if result.is_ok() {
        remove_stale_temp_files(dir, path);
    }
    result.map_err(io)
}

/// A temp file this old was left by a writer that died (killed mid-write, a crash): a write
/// of a million bindings takes seconds, and a live writer keeps its file's time moving.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes temp files beside `path` that writers left (`.{name}.tmp.*`, untouched for
/// [`STALE_TEMP`]): each is as large as the snapshot, and a replica killed mid-write at
/// every deploy would fill the disk with them. Younger ones may be another replica's write
/// in progress (replicas may share the path), so they stay. Best effort.
fn remove_stale_temp_files(dir: &Path, path: &Path) {
    let Some(name) = path.file_name() else { return };
    let prefix = format!(".{}.tmp.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(&prefix)
            && entry
                .metadata()
                .ok()
                .filter(std::fs::Metadata::is_file)
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= STALE_TEMP);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A new temp file beside `path` in `dir`, `.{name}.tmp.{random}`, created exclusively
/// (`O_EXCL`): never one another writer (another replica sharing the path, whatever its
/// process id) has open.
fn create_temp(dir: &Path, path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rng = ring::rand::SystemRandom::new();
    let mut tries = 0;
    loop {
        let mut b = [0u8; 12];
        ring::rand::SecureRandom::fill(&rng, &mut b)
            .map_err(|_| std::io::Error::other("no random bytes for the temp file's name"))?;
        let tmp = dir.join(format!(".{name}.tmp.{}", hex(&b)));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Reads and fully checks a snapshot, which must hold the table of key prefix `key_prefix`.
pub fn read_snapshot(path: &Path, key_prefix: &str) -> Result<Snapshot, SnapshotError> {
    // Bounded, and a regular file only: a FIFO put there would block the start-up for good.
    let bytes =
        match nexus_config::files::read_regular(path, crate::records::MAX_BINDINGS_FILE_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SnapshotError::Missing(path.to_path_buf()))
            }
            Err(source) => {
                return Err(SnapshotError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
    let snapshot = parse_snapshot(path, &bytes)?;
    match snapshot.key_prefix {
        Some(found) if found != key_prefix => Err(SnapshotError::OtherKeyspace {
            path: path.to_path_buf(),
            found,
            expected: key_prefix.to_owned(),
        }),
        Some(_) => Ok(snapshot),
        None => {
            tracing::warn!(snapshot = %path.display(), key_prefix,
                "snapshot of format version 1 names no key prefix: read as this prefix's table");
            Ok(snapshot)
        }
    }
}

/// A snapshot's contents, checked.
#[derive(Debug)]
pub struct Snapshot {
    /// The bindings.
    pub table: BindingTable,
    /// The feed revision its replica had applied (its header's): every change up to it is in
    /// the table. A delete after the newest record makes it higher than any record's; a record
    /// read ahead of the feed can make it lower.
    pub revision: Revision,
    /// The Redis key prefix whose table it is (`None`: a version-1 snapshot, which does not
    /// say).
    pub key_prefix: Option<String>,
    /// The id of the Redis history the table was loaded from (`None`: unknown, or a snapshot
    /// older than version 4).
    pub history: Option<String>,
    /// When it was written (Unix ms): its replica was in sync with Redis then, so a table
    /// served from it is at least this old.
    pub written_at_unix_ms: u64,
}

/// Whether `bytes` begin with a snapshot's header line: lets a tool given any file (`tenant
/// import`) tell a snapshot from a bindings document.
pub fn is_snapshot(bytes: &[u8]) -> bool {
    let first = bytes.split(|&c| c == b'\n').next().unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(first)
        .is_ok_and(|v| v.get("format").and_then(serde_json::Value::as_str) == Some(FORMAT))
}

/// Checks the snapshot `bytes` read from `path` (named in errors) as [`read_snapshot`] does,
/// whatever keyspace it holds (an import decides what another keyspace's snapshot is worth).
pub fn parse_snapshot(path: &Path, bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let corrupt = |line: usize, reason: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let nl = bytes
        .iter()
        .position(|&c| c == b'\n')
        .ok_or_else(|| corrupt(1, "no header line".to_owned()))?;
    if !crate::json::is_object_text(&bytes[..nl]) {
        return Err(corrupt(1, "bad header: no JSON object".to_owned()));
    }
    let header: Header =
        serde_json::from_slice(&bytes[..nl]).map_err(|e| corrupt(1, format!("bad header: {e}")))?;
    if header.format != FORMAT {
        return Err(corrupt(1, format!("format is {:?}", header.format)));
    }
    if !(SNAPSHOT_VERSION_NO_PREFIX..=SNAPSHOT_VERSION).contains(&header.version) {
        return Err(SnapshotError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: header.version,
        });
    }
    if header.version > SNAPSHOT_VERSION_NO_PREFIX && header.key_prefix.is_none() {
        return Err(corrupt(1, "no key_prefix".to_owned()));
    }
    let body = &bytes[nl + 1..];
    if checksum(&header, body) != header.sha256 {
        return Err(SnapshotError::ChecksumMismatch(path.to_path_buf()));
    }
    // Before version 3 the header's count is not covered by the checksum: sized by it alone,
    // a damaged count would overflow or exhaust memory before the count check below could
    // refuse it.
    let lines = body.iter().filter(|&&c| c == b'\n').count() + 1;
    let expected = header.count.min(lines);
    let mut bindings = Vec::with_capacity(expected);
    let mut tenants = std::collections::HashSet::with_capacity(expected);
    let mut interner = Interner::default();
    for (i, line) in body
        .split(|&c| c == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
    {
        let record: crate::json::Checked =
            serde_json::from_slice(line).map_err(|e| corrupt(i + 2, e.to_string()))?;
        // As in a bindings file: JSON readers disagree on which of two values counts.
        if let Some(name) = record.repeated.first() {
            return Err(corrupt(
                i + 2,
                format!(
                    "member name {} appears twice in one object",
                    crate::json::shown_name(name)
                ),
            ));
        }
        let b =
            parse_record_with(&record.value, &mut interner).map_err(|(_, m)| corrupt(i + 2, m))?;
        if !tenants.insert(b.tenant_id.clone()) {
            return Err(corrupt(
                i + 2,
                format!("tenant {} listed twice", b.tenant_id),
            ));
        }
        bindings.push(Arc::new(b));
    }
    if bindings.len() != header.count {
        return Err(corrupt(
            0,
            format!("{} records, header says {}", bindings.len(), header.count),
        ));
    }
    let (table, refused) = BindingTable::from_bindings(bindings);
    if let Some(e) = refused.first() {
        return Err(corrupt(0, e.to_string()));
    }
    Ok(Snapshot {
        // Its replica had applied the header's revision, deletes after the newest record too.
        table: table.at_least(Revision(header.revision)),
        revision: Revision(header.revision),
        key_prefix: header.key_prefix,
        // Only a version that covers it by the checksum says it.
        history: header
            .history
            .filter(|_| header.version > SNAPSHOT_VERSION_NO_HISTORY),
        written_at_unix_ms: header.written_at_ms,
    })
}

#[cfg(test)]
mod tests {
    /// The header line of a snapshot's bytes.
    fn good_head(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes)
            .expect("utf8")
            .split_once('\n')
            .expect("header line")
            .0
    }

    use super::*;
    use crate::model::test_binding;

    /// `bytes` with its header changed by `edit` and summed again, as that header's version
    /// sums (how the builds of versions 1 and 2 wrote theirs).
    fn rewritten(bytes: &[u8], edit: impl FnOnce(&mut Header)) -> Vec<u8> {
        let mut header: Header = serde_json::from_str(good_head(bytes)).expect("header");
        let body = &bytes[good_head(bytes).len() + 1..];
        edit(&mut header);
        header.sha256 = checksum(&header, body);
        let mut out = serde_json::to_vec(&header).expect("header");
        out.push(b'\n');
        out.extend_from_slice(body);
        out
    }

    fn table(n: usize) -> BindingTable {
        BindingTable::from_bindings(
            (0..n).map(|i| test_binding(&format!("t{i}"), i as u64 + 1, &[])),
        )
        .0
    }

    #[test]
    fn the_header_says_the_revision_applied_not_the_newest_record_s() {
        // A follower fetches each entry's tenant's newest record, and a full load scans
        // records written after its starting point: the table may hold a record of revision
        // 7 while the feed is applied up to 5 (a delete at 6 not read yet). The snapshot
        // vouches for 5 only, or a restore from it would pass for as recent as revision 7.
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("snap");
        let table = BindingTable::from_bindings([
            test_binding("acme", 2, &[]),
            test_binding("globex", 7, &[]),
        ])
        .0;
        assert_eq!(table.revision().get(), 7);
        write_snapshot(&path, &table, Revision(5), "nexus", None).expect("write");
        let back = read_snapshot(&path, "nexus").expect("read");
        assert_eq!(back.revision.get(), 5);
        assert_eq!(back.table.len(), 2);
        // Past the newest record (deletes after it): that revision.
        write_snapshot(&path, &table, Revision(9), "nexus", None).expect("write");
        assert_eq!(
            read_snapshot(&path, "nexus").expect("read").revision.get(),
            9
        );
    }

    #[test]
    fn temp_files_writers_left_long_ago_are_removed_and_young_ones_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("snap");
        let left = |name: &str, age: u64| {
            let p = dir.path().join(name);
            let f = std::fs::File::create(&p).expect("create");
            let then = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
            f.set_modified(then).expect("mtime");
            p
        };
        let old = left(".snap.tmp.0123abcd", 3600);
        let young = left(".snap.tmp.4567ef01", 5);
        let other = left(".other.tmp.89ab", 3600);
        write_snapshot(&path, &table(3), Revision(3), "nexus", None).expect("write");
        assert!(!old.exists(), "a temp file left an hour ago is removed");
        assert!(young.exists(), "a write in progress elsewhere is kept");
        assert!(
            other.exists(),
            "another file's temp file is not this one's to remove"
        );
        assert_eq!(read_snapshot(&path, "nexus").expect("read").table.len(), 3);
    }

    /// Like [`table`], other tenants.
    fn other_table(n: usize) -> BindingTable {
        BindingTable::from_bindings(
            (0..n).map(|i| test_binding(&format!("u{i}"), i as u64 + 1, &[])),
        )
        .0
    }

    #[test]
    fn writers_sharing_one_path_each_leave_a_whole_snapshot() {
        // Two replicas given one snapshot path (containers, each its process 1): writing at
        // once, neither may rename the other's half-written temp file into place, nor fail
        // because the other renamed it away. Threads of one process share its id as such
        // replicas do.
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("snap");
        // Of one size, so that the two writes overlap.
        let tables = [Arc::new(table(500)), Arc::new(other_table(500))];
        for _ in 0..25 {
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let writers: Vec<_> = tables
                .iter()
                .map(|t| {
                    let (t, path, barrier) = (Arc::clone(t), path.clone(), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        write_snapshot(&path, &t, t.revision(), "nexus", None)
                    })
                })
                .collect();
            for w in writers {
                w.join().expect("writer").expect("each write succeeds");
            }
            let back = read_snapshot(&path, "nexus").expect("a whole snapshot");
            assert_eq!(back.table.len(), 500);
            assert_eq!(back.revision.get(), 500);
        }
        // No temp file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["snap"]);
    }

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("snap");
        assert!(matches!(
            read_snapshot(&path, "nexus"),
            Err(SnapshotError::Missing(_))
        ));
        let before = crate::source::now_unix_ms();
        write_snapshot(&path, &table(10_000), Revision(10_000), "nexus", Some("h1"))
            .expect("write");
        let back = read_snapshot(&path, "nexus").expect("read");
        assert_eq!(back.table.len(), 10_000);
        assert_eq!(back.history.as_deref(), Some("h1"));
        assert_eq!(back.table.revision().get(), 10_000);
        let written = back.written_at_unix_ms;
        assert!(
            (before..=crate::source::now_unix_ms()).contains(&written),
            "{written}"
        );

        let good = std::fs::read(&path).expect("read");
        assert!(is_snapshot(&good));
        // Another keyspace's table: refused, naming both prefixes; an import still reads it.
        match read_snapshot(&path, "nexus-blue") {
            Err(e @ SnapshotError::OtherKeyspace { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("\"nexus\"") && text.contains("\"nexus-blue\""),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        let parsed = parse_snapshot(&path, &good).expect("parse");
        assert_eq!(parsed.key_prefix.as_deref(), Some("nexus"));
        assert_eq!(parsed.revision.get(), 10_000);
        // A version-1 snapshot (no key prefix), as the builds before wrote it: read as the
        // configured prefix's table, whichever it is.
        let v1 = rewritten(&good, |h| {
            h.version = 1;
            h.key_prefix = None;
        });
        assert!(!String::from_utf8_lossy(&v1).contains("key_prefix"));
        std::fs::write(&path, &v1).expect("w");
        assert_eq!(
            read_snapshot(&path, "nexus-blue").expect("v1").table.len(),
            10_000
        );
        let parsed = parse_snapshot(&path, &v1).expect("parse v1");
        assert_eq!(parsed.key_prefix, None);
        assert_eq!(parsed.written_at_unix_ms, written);
        // Version 2 (its checksum covers the records only) is read too.
        let v2 = rewritten(&good, |h| h.version = 2);
        let parsed = parse_snapshot(&path, &v2).expect("parse v2");
        assert_eq!(parsed.key_prefix.as_deref(), Some("nexus"));
        assert_eq!(parsed.revision.get(), 10_000);
        // Version 3 names no history; one found in its header (not covered by its checksum)
        // is not believed.
        let v3 = rewritten(&good, |h| h.version = 3);
        let parsed = parse_snapshot(&path, &v3).expect("parse v3");
        assert_eq!(parsed.revision.get(), 10_000);
        assert_eq!(parsed.history, None);

        // Version 4: a damaged header field is refused like a damaged record. Each of these
        // keeps the line valid JSON, so only the checksum can tell.
        let head = good_head(&good).to_owned();
        for (from, to) in [
            ("\"revision\":10000", "\"revision\":90000"),
            ("\"revision\":10000", "\"revision\":1000"),
            ("\"key_prefix\":\"nexus\"", "\"key_prefix\":\"nexua\""),
            ("\"count\":10000", "\"count\":10001"),
            ("\"history\":\"h1\"", "\"history\":\"h2\""),
            ("\"history\":\"h1\",", ""),
            (
                &format!("\"written_at_ms\":{written}"),
                &format!("\"written_at_ms\":{}", written + 1),
            ),
        ] {
            assert!(head.contains(from), "{head}");
            let damaged = String::from_utf8(good.clone())
                .expect("utf8")
                .replacen(from, to, 1);
            assert!(
                matches!(
                    parse_snapshot(&path, damaged.as_bytes()),
                    Err(SnapshotError::ChecksumMismatch(_))
                ),
                "{from} → {to}"
            );
        }
        for other in [
            &br#"{"format": "nexus-edge.bindings/v1", "bindings": []}"#[..],
            b"",
            b"\xff\n",
            b"{\"format\": 1}\n",
        ] {
            assert!(!is_snapshot(other), "{other:?}");
        }
        let mut flipped = good.clone();
        let last = flipped.len() - 10;
        flipped[last] ^= 0x01;
        std::fs::write(&path, &flipped).expect("w");
        assert!(matches!(
            read_snapshot(&path, "nexus"),
            Err(SnapshotError::ChecksumMismatch(_))
        ));
        std::fs::write(&path, &good[..good.len() / 2]).expect("w");
        assert!(matches!(
            read_snapshot(&path, "nexus"),
            Err(SnapshotError::ChecksumMismatch(_))
        ));
        let text = String::from_utf8(good.clone()).expect("utf8").replacen(
            "\"version\":4",
            "\"version\":9",
            1,
        );
        std::fs::write(&path, text).expect("w");
        assert!(matches!(
            read_snapshot(&path, "nexus"),
            Err(SnapshotError::UnsupportedVersion { found: 9, .. })
        ));
        // A tenant listed twice (checksum and count made to match): named as such.
        let text = String::from_utf8(good.clone()).expect("utf8");
        let (head, body) = text.split_once('\n').expect("header line");
        let first = body.lines().next().expect("a record");
        let doubled = format!("{body}{first}\n");
        let mut header: Header = serde_json::from_str(head).expect("header");
        header.count += 1;
        header.sha256 = checksum(&header, doubled.as_bytes());
        let head = serde_json::to_string(&header).expect("header");
        std::fs::write(&path, format!("{head}\n{doubled}")).expect("w");
        match read_snapshot(&path, "nexus") {
            Err(SnapshotError::Corrupt { reason, .. }) => {
                assert!(reason.contains("listed twice"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // A record repeating a member (checksum made to match): refused, not read with the
        // last value as serde_json reads it.
        let text = String::from_utf8(good.clone()).expect("utf8");
        let (head, body) = text.split_once('\n').expect("header line");
        let repeated = body.replacen("\"plan\":", "\"plan\":\"solo\",\"plan\":", 1);
        assert_ne!(repeated, body);
        let mut header: Header = serde_json::from_str(head).expect("header");
        header.sha256 = checksum(&header, repeated.as_bytes());
        let head = serde_json::to_string(&header).expect("header");
        std::fs::write(&path, format!("{head}\n{repeated}")).expect("w");
        match read_snapshot(&path, "nexus") {
            Err(SnapshotError::Corrupt { reason, .. }) => {
                assert!(reason.contains("\"plan\" appears twice"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // A damaged count in a version-2 snapshot (its checksum covers the records, not the
        // header): refused, never a capacity overflow or an allocation of what it claims.
        for count in [u64::MAX, 4_000_000_000] {
            let v2 = rewritten(&good, |h| h.version = 2);
            let mut header: Header = serde_json::from_str(good_head(&v2)).expect("header");
            header.count = usize::try_from(count).unwrap_or(usize::MAX);
            let head = serde_json::to_string(&header).expect("header");
            let body = String::from_utf8(v2.clone()).expect("utf8");
            let (_, body) = body.split_once('\n').expect("header line");
            std::fs::write(&path, format!("{head}\n{body}")).expect("w");
            match read_snapshot(&path, "nexus") {
                Err(SnapshotError::Corrupt { reason, .. }) => {
                    assert!(reason.contains("header says"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        std::fs::write(&path, "garbage").expect("w");
        assert!(matches!(
            read_snapshot(&path, "nexus"),
            Err(SnapshotError::Corrupt { .. })
        ));
    }
}
