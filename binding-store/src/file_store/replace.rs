//! Replacing the bindings file atomically, keeping its links, owner and mode, and where its
//! lock and audit log live.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::audit_log::{self};

/// Temp file in the same directory, fsync, rename, fsync the directory: readers see the old
/// file or the new one, never half of one, even across a crash.
///
/// The new file is what the old one was to everyone else: a symlink at `path` is followed
/// (the file it names is replaced, in its own directory, and the link kept: routers may read
/// the file by either name), and the new file gets the old one's permissions, and its owner
/// and group as far as this process may set them (see [`keep_owner_and_mode`]). A new file
/// gets the default mode (umask).
///
/// An error means the file was not replaced. Once the rename is done the new content is what
/// everyone reads, so a failure to sync the directory after it is logged, not returned (a
/// caller would otherwise undo the audit line of a change that did happen).
pub fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    write_checked(path, content, || Ok(()), None)
}

/// Checks the file a replace took the place of: an error puts it back.
pub(crate) type ReplacedCheck<'a> = &'a dyn Fn(&Path, &std::fs::Metadata) -> std::io::Result<()>;

/// [`write_atomically`], with `last_check` run once the new file is written and synced,
/// right before the rename: an error from it leaves the old file in place. What must still
/// hold when the file is replaced is checked there, not before the write and the sync, which
/// may take long on a slow disk.
///
/// With `replaced`, the swap itself is checked too: the new file and the old one trade places
/// in one step (Linux `renameat2` with `RENAME_EXCHANGE`; a file that was missing must still
/// be, `RENAME_NOREPLACE`), and `replaced` is asked about the file taken out. A hand edit that
/// landed between `last_check` and the swap is refused there and put back, not undone unseen.
/// Where the kernel or the filesystem cannot swap, it is a plain rename, as before (so is a
/// build on another C library than glibc: `renameat2` comes through it). Between the swap and
/// the swap back, a few microseconds, the refused file is the one at `path`.
pub(crate) fn write_checked(
    path: &Path,
    content: &[u8],
    last_check: impl FnOnce() -> std::io::Result<()>,
    replaced: Option<ReplacedCheck<'_>>,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = &resolve_links(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let old = match std::fs::metadata(path) {
        // A device, a FIFO or a directory at the path is no bindings file to replace: a
        // config naming /dev/null would otherwise turn the machine's /dev/null into a file.
        Ok(m) if !m.is_file() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file: not replaced",
            ))
        }
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let result = (|| {
        // A temp file left by a process that had this id before, or anything else put at its
        // name (a link would be followed): never written into, but replaced.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut options = File::options();
        options.write(true).create_new(true);
        if old.is_some() {
            // Readable by no one else until it has the old file's owner and mode.
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        if let Some(old) = &old {
            keep_owner_and_mode(&f, old, path)?;
        }
        f.write_all(content)?;
        f.sync_all()?;
        last_check()?;
        match replaced {
            Some(replaced) => {
                use std::os::unix::fs::MetadataExt;
                let ours = f.metadata().map(|m| (m.dev(), m.ino()))?;
                swap_in(&tmp, path, old.is_some(), ours, replaced)
            }
            None => std::fs::rename(&tmp, path),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(file = %path.display(), error = %e,
            "file replaced, but its directory could not be synced: a crash now may undo it");
    }
    Ok(())
}

/// Puts `tmp` at `path` in one step with the file there (`existed`) taken out to `tmp`, asks
/// `replaced` about that one, and trades them back when it refuses. Without an existing file,
/// `path` must still be free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn swap_in(
    tmp: &Path,
    path: &Path,
    existed: bool,
    ours: (u64, u64),
    replaced: ReplacedCheck<'_>,
) -> std::io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    let flags = if existed {
        RenameFlags::RENAME_EXCHANGE
    } else {
        RenameFlags::RENAME_NOREPLACE
    };
    match renameat2(AT_FDCWD, tmp, AT_FDCWD, path, flags) {
        Ok(()) => {}
        // A filesystem that cannot swap (some network and overlay filesystems).
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
            return std::fs::rename(tmp, path)
        }
        // Made since the last check (none was there), or gone since (one was).
        Err(Errno::EEXIST | Errno::ENOENT) => {
            return Err(std::io::Error::other(
                "the file was made or removed while this write was being made; nothing \
                 written, run the command again",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    if !existed {
        return Ok(());
    }
    let refused = match std::fs::symlink_metadata(tmp) {
        Ok(out) => match replaced(tmp, &out) {
            Ok(()) => {
                // The old file, taken out (a rename would have unlinked it). One left behind
                // is removed by the next write.
                let _ = std::fs::remove_file(tmp);
                return Ok(());
            }
            Err(e) => e,
        },
        Err(e) => e,
    };
    // Kept under a name no writer removes, for the operator to merge; never over a file kept
    // before (a process id comes again).
    let keep = || {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut kept = path.as_os_str().to_owned();
        kept.push(format!(".edit-{}-{since}", std::process::id()));
        let kept = PathBuf::from(kept);
        if renameat2(
            AT_FDCWD,
            tmp,
            AT_FDCWD,
            &kept,
            RenameFlags::RENAME_NOREPLACE,
        )
        .is_ok()
        {
            kept
        } else {
            tmp.to_path_buf()
        }
    };
    match renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE) {
        // Put back: the new file, at `tmp` again, is removed by the caller. Unless a second
        // edit replaced it meanwhile, in the microseconds it was at the path: that one is
        // kept.
        Ok(()) => {
            use std::os::unix::fs::MetadataExt;
            let back = std::fs::symlink_metadata(tmp).map(|m| (m.dev(), m.ino()));
            if back.is_ok_and(|b| b != ours) {
                let at = keep();
                tracing::error!(file = %path.display(), kept = %at.display(),
                    "two edits came while this write was being made; it wrote nothing, and \
                     the first edit is the file now: the second is kept under the name shown");
            }
            Err(refused)
        }
        Err(back) => {
            // The write stands (its audit lines stay).
            let at = keep();
            tracing::error!(file = %path.display(), kept = %at.display(), error = %back,
                why = %refused,
                "this write replaced a file changed since it was read, and could not put it \
                 back: the write stands, the file it replaced is kept under the name shown");
            Ok(())
        }
    }
}

/// Without `renameat2` (other targets): a plain rename, the last check's word standing.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn swap_in(
    tmp: &Path,
    path: &Path,
    _existed: bool,
    _ours: (u64, u64),
    _replaced: ReplacedCheck<'_>,
) -> std::io::Result<()> {
    std::fs::rename(tmp, path)
}

/// Where the bindings file at `path` keeps its lock and audit log: beside the file a symlink
/// at `path` names, not beside the link. Two configs may name one file, one through a link:
/// a lock and a log each would let their writers lose each other's updates, and split the
/// history in two.
pub(super) fn home(path: &Path) -> PathBuf {
    resolve_links(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The audit log of the bindings file at `path` (see [`home`]).
pub(super) fn audit_path(path: &Path) -> PathBuf {
    audit_log::path_for(&home(path))
}

/// `path` with every symlink at it followed, to the file it names (which may not exist yet).
/// Links in its directories need no following: the rename happens in the same directory.
fn resolve_links(path: &Path) -> std::io::Result<PathBuf> {
    // As the kernel's limit (ELOOP).
    const MAX_LINKS: usize = 40;
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p)?;
                // A relative target is relative to the link's directory (an absolute one
                // replaces it in `join`).
                p = match p.parent() {
                    Some(d) => d.join(target),
                    None => target,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::other(format!(
        "{}: more than {MAX_LINKS} symbolic links to follow",
        path.display()
    )))
}

/// Gives the new file `f` the owner, group and permissions of the file it replaces (`old`,
/// at `path`). Only root may give a file to another user; other writers keep the group if
/// they are in it. What cannot be kept is logged, not fatal: the write is the operator's,
/// and the file the same file to them; but a router reading it under another user may no
/// longer be able to. Unless the old file's owner surely could not read the new one (by the
/// mode and the groups the system names): a router running as that owner would refuse every
/// later version, so the write is refused instead.
pub(super) fn keep_owner_and_mode(
    f: &File,
    old: &std::fs::Metadata,
    path: &Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    keep_owner_with_mode(f, old, old.mode() & 0o7777, path)
}

/// [`keep_owner_and_mode`], with `mode` for the new file's permissions.
pub(super) fn keep_owner_with_mode(
    f: &File,
    old: &std::fs::Metadata,
    mode: u32,
    path: &Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::{fchown, MetadataExt, PermissionsExt};
    let owner = |m: &std::fs::Metadata| (m.uid(), m.gid());
    if owner(&f.metadata()?) != owner(old) && fchown(f, Some(old.uid()), Some(old.gid())).is_err() {
        let _ = fchown(f, None, Some(old.gid()));
        let now = owner(&f.metadata()?);
        if now != owner(old) {
            if owner_could_read(old.uid(), now, old.mode(), &in_group) == Some(false) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "it belongs to UID {}, and written by this user it would belong to \
                         {}:{} with mode {:o}, which its owner (a router running as it) could \
                         not read; nothing written: write as UID {} or root, or give the file a \
                         group its owner is in and this user too (readable to the group)",
                        old.uid(),
                        now.0,
                        now.1,
                        old.mode() & 0o7777,
                        old.uid()
                    ),
                ));
            }
            tracing::warn!(file = %path.display(),
                was = %format!("{}:{}", old.uid(), old.gid()),
                now = %format!("{}:{}", now.0, now.1),
                "the file's owner or group could not be kept (only root may give a file \
                 away); check that the routers reading it still may");
        }
    }
    // After the owner: changing it may clear set-id bits.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Whether user `uid` could read a file owned by `file_owner` (`(uid, gid)`) with `mode`:
/// `None` when that cannot be told (a user or group the system does not name). `member` says
/// whether a user is in a group.
pub(super) fn owner_could_read(
    uid: u32,
    file_owner: (u32, u32),
    mode: u32,
    member: &dyn Fn(u32, u32) -> Option<bool>,
) -> Option<bool> {
    if uid == 0 || mode & 0o004 != 0 || (uid == file_owner.0 && mode & 0o400 != 0) {
        return Some(true);
    }
    if mode & 0o040 == 0 {
        return Some(false);
    }
    member(uid, file_owner.1)
}

/// Whether user `uid` is in group `gid` (its primary group or a listed member), by the
/// system's user and group databases; `None` when either does not name them.
pub(super) fn in_group(uid: u32, gid: u32) -> Option<bool> {
    use nix::unistd::{Gid, Group, Uid, User};
    let user = User::from_uid(Uid::from_raw(uid)).ok()??;
    if user.gid == Gid::from_raw(gid) {
        return Some(true);
    }
    let group = Group::from_gid(Gid::from_raw(gid)).ok()??;
    Some(group.mem.contains(&user.name))
}
