//! Node-local file primitives: exact-mode directories, atomic (fsynced) writes, reading only
//! regular files, and `flock` locks. The [`crate::store::Store`] builds on them; node-local
//! files (outbox, connection slots) use them directly.

use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// Create `dir` (and parents) if missing; a directory we create gets `mode`. An existing
/// directory keeps its mode, except that `tighten` forces `mode` on it (our own private dirs).
pub fn ensure_dir(dir: &Path, mode: u32, tighten: bool) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .map_err(|e| Error::io(dir, e))?;
        // recursive create applies the umask: set the exact mode on the leaf
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(dir, e))?;
    } else if tighten {
        let current = fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        // only when needed: a read-only file system refuses even a no-op chmod
        if current.permissions().mode() & 0o7777 != mode {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(dir, e))?;
        }
    }
    Ok(())
}

/// Replace `path` atomically with `data`: write a temp file in the same directory (mode
/// `mode`), fsync it, rename it over `path`, fsync the directory. A crash leaves either the old
/// or the new content, never a torn file.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_atomic_prefixed(path, data, mode, ".tmp-")
}

/// [`write_atomic`] with the temp file named `<prefix><random>`, so that leftovers of a killed
/// writer can be told apart (the state files use one prefix per target).
pub fn write_atomic_prefixed(path: &Path, data: &[u8], mode: u32, prefix: &str) -> Result<()> {
    write_atomic_with(path, data, mode, prefix, true)
}

/// [`write_atomic_prefixed`]; with `durable` false there is no fsync (a cluster file system
/// such as pmxcfs has none: its replication, not the local disk, makes a write durable), so
/// only the rename's atomicity is relied on.
pub fn write_atomic_with(
    path: &Path,
    data: &[u8],
    mode: u32,
    prefix: &str,
    durable: bool,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix)
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    // the umask may have narrowed the mode; set it exactly
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.write_all(data).map_err(|e| Error::io(path, e))?;
    if !durable {
        return tmp
            .persist(path)
            .map(|_| ())
            .map_err(|e| Error::io(path, e.error));
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The content of `path` if it is a regular file, `None` if it does not exist. Anything else
/// (a FIFO, which would block the reader forever; a device; a directory) is refused with an
/// error naming the file.
pub fn read_regular(path: &Path) -> Result<Option<Vec<u8>>> {
    let not_regular = || {
        Error::io(
            path,
            std::io::Error::other(
                "not a regular file (a FIFO, device or directory?); refusing to read it",
            ),
        )
    };
    // check before opening: opening a FIFO for reading blocks until a writer appears
    match fs::metadata(path) {
        Ok(m) if !m.is_file() => return Err(not_regular()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    }
    // The file existed a moment ago: on pmxcfs, open() on the node that replaces it by rename
    // can fail with ENOENT for a moment (its FUSE layer drops the old node), so a missing file
    // is believed only after a few tries.
    let mut missing = 0;
    let mut grow = 0;
    loop {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing += 1;
                if missing > 10 {
                    return Ok(None);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        // and after: the path may have been replaced in between
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(not_regular());
        }
        // One read() into a buffer larger than the file: a reader that loops read() on pmxcfs
        // can get the old content's head and the new content's tail when another node
        // replaces the file in between (the next read goes by path to the new file); a single
        // read is one FUSE request and one version. A second read() must then find the end;
        // if it finds more (the file grew or was replaced), read again from the start.
        let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        let cap = size.saturating_add(1).max(64 * 1024) << grow;
        let mut bytes = vec![0u8; cap];
        let n = read_once(&mut file, &mut bytes).map_err(|e| Error::io(path, e))?;
        if n < cap {
            let mut probe = [0u8; 1];
            if read_once(&mut file, &mut probe).map_err(|e| Error::io(path, e))? == 0 {
                bytes.truncate(n);
                return Ok(Some(bytes));
            }
        }
        grow += 1;
        if grow > 4 {
            // still changing under us: the whole file, as an ordinary reader would get it
            let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| Error::io(path, e))?;
            return Ok(Some(bytes));
        }
    }
}

/// One read(), retried only when interrupted.
fn read_once(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match std::io::Read::read(file, buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// An exclusive `flock` on a lock file, released on drop (also when the process dies).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Wait until the exclusive lock on `path` is ours (the file is created 0600), at most
    /// until `deadline`; then [`Error::LockTimeout`] naming `what` and the holder's pid.
    pub fn exclusive_until(path: &Path, deadline: Instant, what: &str) -> Result<FileLock> {
        crate::store::poll_until(deadline, Duration::from_millis(100), || {
            Self::try_exclusive(path)
        })?
        .ok_or_else(|| Error::LockTimeout {
            what: what.to_string(),
            path: path.to_path_buf(),
            holder: holder_of(path),
        })
    }

    /// Take the lock if it is free; `Ok(None)` if another process holds it. The holder's pid
    /// is written into the lock file so that a waiter that gives up can name it.
    pub fn try_exclusive(path: &Path) -> Result<Option<FileLock>> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => {
                // best effort: the pid only helps an admin find a stuck holder
                // fixed width, written in place: no truncation, which on ext4 forces a
                // writeback on close (a disk write per lock: per send, per broker request)
                let _ = std::os::unix::fs::FileExt::write_all_at(
                    &file,
                    format!("{:>10}\n", std::process::id()).as_bytes(),
                    0,
                );
                Ok(Some(FileLock { _file: file }))
            }
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
        }
    }
}

/// "pid N (command)" of the process that wrote `path`, if it is still running.
pub fn holder_of(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(format!("pid {pid} ({})", comm.trim()))
}

fn open_lock_file(path: &Path) -> Result<File> {
    // O_NOFOLLOW: a symlink planted in the lock's place must not make us create, lock or
    // write (the holder's pid, at offset 0) the file it points to; O_NONBLOCK: opening a FIFO
    // must not block (it is refused below)
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(flags)
        .open(path)
    {
        Ok(f) => f,
        // a read-only or full file system: an existing lock file still locks when opened
        // for reading (flock needs no write access), so readers and writers stay serialised
        Err(e) if is_unwritable(&e) => OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
            .map_err(|_| Error::io(path, e))?,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::io(
                path,
                std::io::Error::other(
                    "the lock file is a symbolic link; refusing to follow it (remove it)",
                ),
            ))
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    if !file.metadata().map_err(|e| Error::io(path, e))?.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::other(
                "the lock file is not a regular file (a FIFO, device or directory?); remove it",
            ),
        ));
    }
    Ok(file)
}

/// True for the errors of a directory or file system we may not or cannot write to
/// (read-only, permission, full, quota).
pub fn is_unwritable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    // EPERM, EACCES, ENOSPC, EROFS, EDQUOT; by kind too, where a helper wrapped the OS error
    // (tempfile's errors name the path and keep only the kind: a cluster file system without
    // quorum was reported as a plain I/O error)
    matches!(e.raw_os_error(), Some(1 | 13 | 28 | 30 | 122))
        || matches!(
            e.kind(),
            K::PermissionDenied | K::ReadOnlyFilesystem | K::StorageFull | K::QuotaExceeded
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atomic_write_is_private_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        // no temp files left behind
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_lock_file_that_is_a_symlink_or_no_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious content\n").unwrap();
        let link = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = FileLock::try_exclusive(&link).unwrap_err().to_string();
        assert!(err.contains("x.lock"), "{err}");
        let deadline = Instant::now() + Duration::from_millis(200);
        assert!(FileLock::exclusive_until(&link, deadline, "the test lock").is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious content\n");
        // a dangling link is not followed to create its target either
        let dangling = dir.path().join("d.lock");
        std::os::unix::fs::symlink(dir.path().join("created"), &dangling).unwrap();
        assert!(FileLock::try_exclusive(&dangling).is_err());
        assert!(!dir.path().join("created").exists());
        // a FIFO (or any non-regular file) is no lock file
        let fifo = dir.path().join("f.lock");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = FileLock::try_exclusive(&fifo).unwrap_err().to_string();
        assert!(err.contains("regular file"), "{err}");
    }

    #[test]
    fn try_lock_sees_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let held = FileLock::try_exclusive(&p).unwrap().unwrap();
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        drop(held);
        assert!(FileLock::try_exclusive(&p).unwrap().is_some());
    }

    #[test]
    fn a_lock_wait_ends_at_its_deadline_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let _held = FileLock::try_exclusive(&p).unwrap().unwrap();
        // flock locks are per open file description: a second open in this process conflicts
        let deadline = Instant::now() + Duration::from_millis(200);
        let err = FileLock::exclusive_until(&p, deadline, "the test lock").unwrap_err();
        assert!(Instant::now() >= deadline);
        let msg = err.to_string();
        assert!(err.is_transient(), "{msg}");
        assert!(msg.contains("the test lock is busy"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
    }
}
