use super::admin::{apply_locked, commit, import_locked};
use super::lock::{lock_for_write, lock_for_write_within, Locked};
use super::replace::{audit_path, in_group, owner_could_read, write_checked};
use super::*;
use crate::admin::{Actor, Applied, AuditEntry, IfUnchanged, ImportSeen, Mutation};
use crate::audit_log::AuditLog;
use crate::model::Binding;
use crate::records::parse_record;

#[test]
fn a_stamp_is_trusted_only_once_its_change_time_has_settled() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("f");
    std::fs::write(&path, "one").expect("write");
    let s = stamp(&path).expect("stamp");
    let changed = SystemTime::UNIX_EPOCH + Duration::new(s.changed.0 as u64, s.changed.1 as u32);
    assert_eq!(
        settled(Some(s.clone()), changed + Duration::from_secs(1)),
        None
    );
    assert_eq!(
        settled(Some(s.clone()), changed + RACY_WINDOW),
        Some(s.clone())
    );
    // A write by rename is another file, whatever its size and times.
    let tmp = dir.path().join("g");
    std::fs::write(&tmp, "two").expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    let after = stamp(&path).expect("stamp");
    assert_ne!(after.file, s.file);
    assert_ne!(after, s);
}

#[test]
fn a_change_time_past_any_clock_never_settles_and_does_not_panic() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("f");
    std::fs::write(&path, "one").expect("write");
    let real = stamp(&path).expect("stamp");
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40);
    for changed in [
        (i64::MAX, 999_999_999),
        (i64::MAX - 1, 0),
        (i64::MIN, 0),
        (-1, 0),
    ] {
        let s = Stamp {
            changed,
            ..real.clone()
        };
        assert_eq!(settled(Some(s), far), None, "{changed:?}");
    }
}

#[test]
fn only_a_regular_file_is_read() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bindings.json");
    std::fs::write(&file, "{}").expect("write");
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&file, &link).expect("symlink");
    assert_eq!(read_regular(&file).expect("file"), b"{}");
    assert_eq!(read_regular(&link).expect("link to a file"), b"{}");
    // A FIFO: reading it would wait for a writer that never comes.
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    for path in [&fifo, &dir.path().to_path_buf()] {
        let e = read_regular(path).expect_err("not a regular file");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::InvalidInput,
            "{}",
            path.display()
        );
    }
}

/// Makes a FIFO at `path`: what a read must not wait on, nor a write replace.
fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
}

#[test]
fn only_a_regular_file_or_none_is_replaced() {
    let dir = tempfile::tempdir().expect("dir");
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&fifo, &link).expect("symlink");
    for path in [&fifo, &link, &dir.path().to_path_buf()] {
        let e = write_atomically(path, b"{}").expect_err("refused");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::InvalidInput,
            "{}",
            path.display()
        );
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .expect("still there")
        .file_type()
        .is_fifo());
    let file = dir.path().join("bindings.json");
    write_atomically(&file, b"{}").expect("a new file");
    write_atomically(&file, b"{ }").expect("a file replaced");
    assert_eq!(std::fs::read(&file).expect("read"), b"{ }");
}

fn record(tenant: &str, url: &str) -> Binding {
    parse_record(&serde_json::json!({
        "tenant_id": tenant, "subscription_id": "s", "instance_id": "i", "instance_url": url,
        "status": "active", "plan": "team", "region": "eu"
    }))
    .expect("record")
}

fn put(path: &Path, tenant: &str, url: &str) -> Result<Applied, AdminError> {
    let actor = Actor {
        name: "tester".into(),
        reason: None,
    };
    apply_locked(
        path,
        &TenantId::parse(tenant).expect("tenant"),
        Mutation::Put(Box::new(record(tenant, url))),
        None,
        IfUnchanged::Write,
        &actor,
        WipedStore::Refuse,
    )
}

fn audited(path: &Path) -> Vec<String> {
    std::fs::read_to_string(audit_path(path))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_writer_whose_lock_file_was_removed_writes_nothing_and_keeps_the_next_out() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bindings.json");
    put(&path, "acme", "http://10.0.0.1").expect("first write");
    // A writer holds the lock; the lock file is removed from under it (taken for a stale
    // file). The next writer made a new one, locked it, and ran beside the first.
    let held = lock_for_write(&path, WipedStore::Refuse).expect("locked");
    let lock_text = std::fs::read_to_string(&held.lock.path).expect("lock file");
    assert!(lock_text.contains("Do not remove it"), "{lock_text}");
    std::fs::remove_file(&held.lock.path).expect("removed");
    // It waits for the first (the directory's lock is still held), and says so.
    let second = put_once_waiting(&path, "http://10.0.0.2");
    // The first writer's change is refused: the lock file it holds is gone.
    let Locked {
        lock, doc, mut log, ..
    } = held;
    let e = commit(&path, &lock, &doc, &mut log, &[]).expect_err("refused");
    assert!(e.to_string().contains("lock file was removed"), "{e}");
    drop((lock, log));
    second
        .join()
        .expect("second")
        .expect("the second writer, after the first");
    let text = std::fs::read_to_string(&path).expect("file");
    assert!(text.contains("http://10.0.0.2"), "{text}");
    assert_eq!(audited(&path).len(), 2);
}

#[test]
fn a_file_changed_since_it_was_read_is_not_replaced() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bindings.json");
    put(&path, "acme", "http://10.0.0.1").expect("first write");
    let Locked {
        lock, doc, mut log, ..
    } = lock_for_write(&path, WipedStore::Refuse).expect("locked");
    // A hand edit while the write is made: in place (same length), then by rename.
    let text = std::fs::read_to_string(&path).expect("file");
    let edited = text.replace("10.0.0.1", "10.0.0.9");
    std::fs::write(&path, &edited).expect("edit in place");
    let e = commit(&path, &lock, &doc, &mut log, &[]).expect_err("refused");
    assert!(e.to_string().contains("the file changed"), "{e}");
    write_atomically(&path, edited.replace("10.0.0.9", "10.0.0.8").as_bytes())
        .expect("edit by rename");
    let e = commit(&path, &lock, &doc, &mut log, &[]).expect_err("refused");
    assert!(e.to_string().contains("the file changed"), "{e}");
    assert!(std::fs::read_to_string(&path)
        .expect("file")
        .contains("10.0.0.8"));
    drop(lock);
    // Read again under the lock, the change is made over the edit.
    put(&path, "globex", "http://10.0.0.3").expect("a later write");
    let text = std::fs::read_to_string(&path).expect("file");
    assert!(
        text.contains("10.0.0.8") && text.contains("10.0.0.3"),
        "{text}"
    );
}

#[test]
fn audit_lines_another_writer_appended_after_are_not_cut() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit.log");
    let entry = |revision| AuditEntry {
        tenant: "acme".into(),
        revision,
        at: "2026-12-05T00:00:00Z".into(),
        actor: "tester".into(),
        reason: None,
        op: "put".into(),
        old: None,
        new: None,
    };
    let mut a = AuditLog::open(path.clone()).expect("log");
    let mut b = AuditLog::open(path.clone()).expect("log");
    let before = a.append_all(&[entry(1)]).expect("a");
    b.append_all(&[entry(2)]).expect("b");
    assert!(a.cut(before).is_err());
    assert_eq!(
        std::fs::read_to_string(&path).expect("log").lines().count(),
        2
    );
    // With nothing after its lines, they are cut.
    let before = a.append_all(&[entry(3)]).expect("a");
    a.cut(before).expect("cut");
    assert_eq!(
        std::fs::read_to_string(&path).expect("log").lines().count(),
        2
    );
}

/// Adds `record` to the file by hand (as an operator's editor would).
fn add_by_hand(path: &Path, record: serde_json::Value) {
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("file")).expect("json");
    doc["bindings"]
        .as_array_mut()
        .expect("bindings")
        .push(record);
    std::fs::write(path, doc.to_string()).expect("write");
}

#[test]
fn no_change_is_written_into_a_file_routers_refuse_whole() {
    // A record that names no valid tenant: routers refuse the whole file while it is there,
    // so a change written into it was audited and reported made, and never served.
    for bad in [
        serde_json::json!({ "tenant_id": "Acme", "status": "active" }),
        serde_json::json!({ "status": "active" }),
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bindings.json");
        put(&path, "acme", "http://10.0.0.1").expect("first write");
        add_by_hand(&path, bad.clone());
        let before = std::fs::read(&path).expect("file");
        let e = put(&path, "globex", "http://10.0.0.2").expect_err("refused");
        assert!(
            e.to_string().contains("names no valid tenant"),
            "{bad}: {e}"
        );
        assert_eq!(std::fs::read(&path).expect("file"), before);
        assert_eq!(audited(&path).len(), 1, "{bad}");
    }
}

#[test]
fn a_custom_domain_is_not_claimed_past_a_record_routers_refuse() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bindings.json");
    put(&path, "acme", "http://10.0.0.1").expect("first write");
    // globex's record broken by hand: routers keep its last good binding, and whatever
    // custom domains it had, which the file no longer shows.
    let mut broken =
        serde_json::to_value(record("globex", "http://10.0.0.2").to_record()).expect("json");
    broken["domains"] = serde_json::json!(["shop.globex.test"]);
    broken["status"] = serde_json::json!("actve");
    add_by_hand(&path, broken);
    let actor = Actor {
        name: "tester".into(),
        reason: None,
    };
    let mut claiming = record("acme", "http://10.0.0.1");
    claiming.domains = vec![crate::model::DomainName::parse("shop.globex.test").expect("domain")];
    let acme = TenantId::parse("acme").expect("tenant");
    let e = apply_locked(
        &path,
        &acme,
        Mutation::Put(Box::new(claiming.clone())),
        None,
        IfUnchanged::Write,
        &actor,
        WipedStore::Refuse,
    )
    .expect_err("refused");
    assert!(
        e.to_string()
            .contains("while routers refuse the record(s) of globex"),
        "{e}"
    );
    let e = import_locked(
        &path,
        vec![Arc::new(claiming)],
        &actor,
        WipedStore::Refuse,
        &ImportSeen::unchecked(),
    )
    .expect_err("refused");
    assert!(format!("{e:?}").contains("globex"), "{e:?}");
    // Writes that claim no new domain go on.
    put(&path, "acme", "http://10.0.0.3").expect("no domain claimed");

    // A record refused because it claims a custom domain another record holds counts
    // too: which of the two routers refuse, the file does not say.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bindings.json");
    let mut initech = record("initech", "http://10.0.0.4");
    initech.domains = vec![crate::model::DomainName::parse("app.initech.test").expect("d")];
    apply_locked(
        &path,
        &initech.tenant_id.clone(),
        Mutation::Put(Box::new(initech)),
        None,
        IfUnchanged::Write,
        &actor,
        WipedStore::Refuse,
    )
    .expect("initech");
    let mut hooli =
        serde_json::to_value(record("hooli", "http://10.0.0.5").to_record()).expect("json");
    hooli["domains"] = serde_json::json!(["app.initech.test"]);
    add_by_hand(&path, hooli);
    let mut claiming = record("acme", "http://10.0.0.1");
    claiming.domains = vec![crate::model::DomainName::parse("shop.acme.test").expect("d")];
    let e = apply_locked(
        &path,
        &acme,
        Mutation::Put(Box::new(claiming)),
        None,
        IfUnchanged::Write,
        &actor,
        WipedStore::Refuse,
    )
    .expect_err("refused");
    assert!(e.to_string().contains("hooli, initech"), "{e}");
}

#[test]
fn a_file_its_owner_could_no_longer_read_is_told_by_mode_and_groups() {
    // (uid 1000 is in group 50 only)
    let member = |uid: u32, gid: u32| -> Option<bool> {
        match (uid, gid) {
            (1000, 50) => Some(true),
            (1000, _) => Some(false),
            _ => None,
        }
    };
    let could = |uid, owner, mode| owner_could_read(uid, owner, mode, &member);
    // Root reads anything; a file readable to others, anyone.
    assert_eq!(could(0, (2000, 2000), 0o600), Some(true));
    assert_eq!(could(1000, (2000, 2000), 0o644), Some(true));
    // Through the group: in it, or not (the probe's case: nobody's file, 0640, rewritten
    // by an admin of another group), or unknown.
    assert_eq!(could(1000, (2000, 50), 0o640), Some(true));
    assert_eq!(could(1000, (2000, 2000), 0o640), Some(false));
    assert_eq!(could(3000, (2000, 2000), 0o640), None);
    // No group read: not readable.
    assert_eq!(could(1000, (2000, 50), 0o600), Some(false));
    // Root is in group 0 by the system's own databases.
    assert_eq!(in_group(0, 0), Some(true));
}

/// Log lines written on the thread that holds the returned guard, kept in the buffer.
fn captured() -> (
    Arc<std::sync::Mutex<Vec<u8>>>,
    impl FnOnce() -> tracing::subscriber::DefaultGuard,
) {
    #[derive(Clone)]
    struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = Buffer(Arc::clone(&buffer));
    let install = move || {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    };
    (buffer, install)
}

/// Starts a writer of acme's record to `url` that must wait for the lock, and returns
/// once it has said it waits (polled, with a deadline).
fn put_once_waiting(
    path: &Path,
    url: &'static str,
) -> std::thread::JoinHandle<Result<Applied, AdminError>> {
    let (said, install) = captured();
    let writer = {
        let path = path.to_owned();
        std::thread::spawn(move || {
            let _logging = install();
            put(&path, "acme", url)
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&said.lock().expect("buffer"))
        .contains("another writer holds the bindings file's lock; waiting for it")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer did not wait"
        );
        std::thread::yield_now();
    }
    writer
}

#[test]
fn a_writer_waiting_for_the_lock_says_so() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bindings.json");
    put(&path, "acme", "http://10.0.0.1").expect("first write");
    let held = lock_for_write(&path, WipedStore::Refuse).expect("locked");
    let writer = put_once_waiting(&path, "http://10.0.0.2");
    drop(held);
    let written = writer
        .join()
        .expect("writer")
        .expect("written once the lock is free");
    assert_eq!(written.revision(), Revision(2));
}

#[test]
fn a_writer_gives_up_on_a_lock_held_past_its_wait_having_written_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bindings.json");
    put(&path, "acme", "http://10.0.0.1").expect("first write");
    let before = std::fs::read_to_string(&path).expect("file");
    let held = lock_for_write(&path, WipedStore::Refuse).expect("locked");
    let e = match lock_for_write_within(&path, WipedStore::Refuse, Duration::from_millis(200)) {
        Ok(_) => panic!("locked beside the holder"),
        Err(e) => e,
    };
    assert!(matches!(e, AdminError::Unavailable(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("another writer held the bindings file's lock for the 0.2 s a writer waits"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("file"), before);
    assert_eq!(audited(&path).len(), 1);
    // Free again: the next writer writes.
    drop(held);
    put(&path, "acme", "http://10.0.0.2").expect("written once the lock is free");
}

#[test]
fn the_last_check_runs_with_the_new_file_written_and_before_the_rename() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bindings.json");
    std::fs::write(&path, "old").expect("write");
    let temp_files = || {
        std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .map(|e| std::fs::read_to_string(e.path()).expect("temp file"))
            .collect::<Vec<_>>()
    };
    // Refused at the last moment: the new content was written, the old file stays.
    let e = write_checked(
        &path,
        b"new",
        || {
            assert_eq!(temp_files(), ["new"]);
            Err(std::io::Error::other("no longer ours"))
        },
        None,
    )
    .expect_err("refused");
    assert_eq!(e.to_string(), "no longer ours");
    assert_eq!(std::fs::read_to_string(&path).expect("file"), "old");
    assert!(temp_files().is_empty());
    write_checked(&path, b"new", || Ok(()), None).expect("written");
    assert_eq!(std::fs::read_to_string(&path).expect("file"), "new");
}

#[test]
fn an_edit_that_lands_after_the_last_check_is_put_back_not_undone() {
    // The last check ran before a plain rename: a hand edit landing in between was replaced
    // by a write that reported success.
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bindings.json");
    std::fs::write(&path, "read").expect("write");
    let read = std::fs::metadata(&path).expect("read");
    let same = |_: &Path, m: &std::fs::Metadata| {
        if (m.dev(), m.ino()) == (read.dev(), read.ino()) {
            Ok(())
        } else {
            Err(std::io::Error::other("changed"))
        }
    };
    let edit_by_rename = || {
        let edited = dir.path().join("edited");
        std::fs::write(&edited, "hand edit").expect("edit");
        std::fs::rename(&edited, &path).expect("edit in place");
        Ok(())
    };
    let e = write_checked(&path, b"new", edit_by_rename, Some(&same)).expect_err("refused");
    assert_eq!(e.to_string(), "changed");
    assert_eq!(std::fs::read_to_string(&path).expect("file"), "hand edit");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["bindings.json"], "no temp file left");
    // A file made where none was read is not replaced either.
    let missing = dir.path().join("new.json");
    let made = || std::fs::write(&missing, "made meanwhile");
    write_checked(&missing, b"new", made, Some(&same)).expect_err("refused");
    assert_eq!(
        std::fs::read_to_string(&missing).expect("file"),
        "made meanwhile"
    );
    // Unchanged, the write goes through.
    let read = std::fs::metadata(&path).expect("read");
    let same = |_: &Path, m: &std::fs::Metadata| {
        assert_eq!((m.dev(), m.ino()), (read.dev(), read.ino()));
        Ok(())
    };
    write_checked(&path, b"new", || Ok(()), Some(&same)).expect("written");
    assert_eq!(std::fs::read_to_string(&path).expect("file"), "new");
}

#[test]
fn temp_files_writers_left_are_removed_by_the_next_write() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bindings.json");
    put(&path, "acme", "http://10.0.0.1").expect("first write");
    let left = dir.path().join(".bindings.json.tmp.99999");
    std::fs::write(&left, "half").expect("left by a killed writer");
    let other = dir.path().join(".other.json.tmp.99999");
    std::fs::write(&other, "another file's").expect("write");
    put(&path, "acme", "http://10.0.0.2").expect("next write");
    assert!(!left.exists());
    assert!(other.exists());
}

#[test]
fn files_made_beside_a_read_only_bindings_file_stay_writable_to_their_owner() {
    // They took the bindings file's mode: made beside a 0444 file, the audit log was
    // read-only, and every write failed on it once the file was writable again.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bindings.json");
    put(&path, "acme", "http://10.0.0.1").expect("first write");
    let mut lock = path.clone().into_os_string();
    lock.push(".lock");
    for side in [audit_path(&path), lock.into()] {
        std::fs::remove_file(&side).expect("removed");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("0444");
        put(&path, "acme", "http://10.0.0.2").expect("a write");
        let mode = std::fs::metadata(&side)
            .expect("made again")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{}", side.display());
    }
}

#[test]
fn an_edit_in_place_of_the_same_length_and_time_is_told_by_content_after_the_swap() {
    // The file taken out has the same inode, length and modification time as the one read:
    // only its content tells the edit.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bindings.json");
    put(&path, "acme", "http://10.0.0.1").expect("first write");
    let doc = super::raw_doc::RawDoc::read(&path).expect("read");
    let before = std::fs::read(&path).expect("bytes");
    let modified = std::fs::metadata(&path)
        .expect("meta")
        .modified()
        .expect("mtime");
    let edited = String::from_utf8(before.clone())
        .expect("utf8")
        .replace("10.0.0.1", "10.0.0.9")
        .into_bytes();
    assert_eq!(edited.len(), before.len());
    let edit_in_place = || {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut &f, &edited).expect("edit");
        f.set_modified(modified).expect("same time");
        Ok(())
    };
    let e = doc.write(&path, edit_in_place).expect_err("refused");
    assert!(e.to_string().contains("the file changed"), "{e}");
    assert_eq!(std::fs::read(&path).expect("bytes"), edited);
}
