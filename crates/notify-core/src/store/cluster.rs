//! A cluster-wide lock (the cluster kind of [`crate::store::Store`]): an empty directory
//! created with `mkdir` on the shared file system, as pmxcfs's own locks are
//! (`/etc/pve/priv/lock/<id>`). `mkdir` is atomic across nodes where `flock` is not. Who holds
//! it (node name, pid, time, a unique token) is written beside it, to `.<name>.owner` (temp
//! file + rename), so a waiter can name the holder; the lock directory itself stays empty,
//! because pmxcfs can neither rename nor remove a non-empty directory in one step, and expires
//! only empty locks of its own.
//!
//! Shaped by the real pmxcfs (tested on a 3-node cluster, `perl/t/90-pmxcfs.t`):
//! - no directory is ever renamed (pmxcfs refuses to rename a non-empty directory, ENOTEMPTY,
//!   and any lock directory under `priv/lock`, EACCES): release is unlink of the owner file,
//!   then `rmdir`;
//! - in pmxcfs's own lock directory (`.../priv/lock`, where oxnotify's locks are named
//!   `oxnotify-<name>`) a lock is never removed by another node: a waiter sends pmxcfs's unlock
//!   request, `utime(lock, 0, 0)`, at most once a second, and pmxcfs removes the lock once it
//!   is older than its own 120 s (only the creating node could renew it; holders never need
//!   to, their work ends within 3/8 of the stale time); exactly what `PVE::Cluster::cfs_lock`
//!   does;
//! - elsewhere (an ordinary directory, NFS, CephFS, a pmxcfs directory outside `priv/lock`) a
//!   lock whose owner time (or, without an owner file, whose directory time) is older than the
//!   stale time is taken over: one taker at a time (a guard directory, itself created with
//!   `mkdir`) checks again that the lock is still the stale one and removes it with `rmdir`;
//!   then every contender tries `mkdir` again, which exactly one wins.
//!
//! What is left to chance: a holder stalled past the stale time that releases its lock in the
//! microseconds between a taker's check and its `rmdir` can lose the next holder's lock to that
//! `rmdir`. Every state write is also a compare-and-swap on the state's generation
//! ([`crate::state::StateStore::save_next`]), so even then an older state never replaces a
//! newer one.

use crate::error::{Error, Result};
use crate::store::local as fsutil;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Who holds a lock directory (its `owner` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Node name ([`crate::settings::Settings::node_name`]).
    pub node: String,
    /// Process id on that node.
    pub pid: u32,
    /// When the lock was taken (Unix seconds, the holder's clock).
    pub time: i64,
    /// Unique per acquisition: tells this holder's lock from a later one.
    pub token: String,
}

/// A held lock directory, released (renamed away, then removed) on drop if still ours.
#[derive(Debug)]
pub struct ClusterLock {
    path: PathBuf,
    token: String,
    acquired: Instant,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A token no other acquisition on any node has: node, pid, time, a per-process counter.
fn unique_token(node: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{node}.{}.{nanos}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn not_writable(path: &Path, e: &std::io::Error) -> Error {
    Error::StoreNotWritable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl ClusterLock {
    /// Take lock `name` in `dir` if it is free or stale; `Ok(None)` if a live holder has it.
    pub fn try_acquire(
        dir: &Path,
        name: &str,
        node: &str,
        stale: Duration,
    ) -> Result<Option<ClusterLock>> {
        if let Err(e) = std::fs::create_dir(dir) {
            match e.kind() {
                std::io::ErrorKind::AlreadyExists => {}
                _ if fsutil::is_unwritable(&e) => return Err(not_writable(dir, &e)),
                _ => std::fs::DirBuilder::new()
                    .recursive(true)
                    .create(dir)
                    .map_err(|e| Error::io(dir, e))?,
            }
        }
        let path = lock_path(dir, name);
        // two rounds: the second after taking over a stale lock
        for _ in 0..2 {
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    let token = unique_token(node);
                    let owner = Owner {
                        node: node.to_string(),
                        pid: std::process::id(),
                        time: unix_now(),
                        token: token.clone(),
                    };
                    if let Err(e) = write_owner(&path, &owner) {
                        let _ = std::fs::remove_dir(&path);
                        return Err(e);
                    }
                    return Ok(Some(ClusterLock {
                        path,
                        token,
                        acquired: Instant::now(),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if is_pmxcfs_lock_dir(dir) {
                        // pmxcfs decides: it removes the lock if it is older than 120 s
                        unlock_request(&path);
                        return Ok(None);
                    }
                    let seen = read_owner(&path);
                    if !is_stale(&path, seen.as_ref(), stale) {
                        return Ok(None);
                    }
                    take_over(dir, name, &path, seen.as_ref(), stale);
                }
                Err(e) if fsutil::is_unwritable(&e) => return Err(not_writable(&path, &e)),
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(None)
    }

    /// When this lock was taken (for the work deadline under it).
    pub fn acquired(&self) -> Instant {
        self.acquired
    }

    /// True while the lock directory is still this acquisition's (not taken over as stale).
    pub fn still_held(&self) -> bool {
        read_owner(&self.path).is_some_and(|o| o.token == self.token)
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        if !self.still_held() {
            return;
        }
        // the owner first: a lock directory without an owner is not stale to a waiter until
        // the stale time passes, and the next holder's owner file is never removed by us
        let _ = std::fs::remove_file(owner_path(&self.path));
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Whether `dir` is pmxcfs's own lock directory (`/etc/pve/priv/lock`), whose locks expire by
/// pmxcfs's rules (an unlock request once older than 120 s) and may not be removed otherwise.
pub fn is_pmxcfs_lock_dir(dir: &Path) -> bool {
    dir.ends_with("etc/pve/priv/lock")
}

/// The lock directory `name` in `dir`: in pmxcfs's lock directory, which the host stack's own
/// locks share, named `oxnotify-<name>`.
pub fn lock_path(dir: &Path, name: &str) -> PathBuf {
    if is_pmxcfs_lock_dir(dir) {
        dir.join(format!("oxnotify-{name}"))
    } else {
        dir.join(name)
    }
}

/// pmxcfs's unlock request (`utime(lock, 0, 0)`, as `PVE::Cluster::cfs_lock` sends it): pmxcfs
/// removes the lock if it is older than 120 s and refuses (EACCES) otherwise. At most once a
/// second per lock and process: every request is a message to the whole cluster.
fn unlock_request(path: &Path) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static LAST: Mutex<Option<HashMap<PathBuf, Instant>>> = Mutex::new(None);
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        let map = last.get_or_insert_with(HashMap::new);
        if map
            .get(path)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        map.insert(path.to_path_buf(), Instant::now());
    }
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.set_times(
            std::fs::FileTimes::new()
                .set_accessed(UNIX_EPOCH)
                .set_modified(UNIX_EPOCH),
        );
    }
}

/// Where the owner of lock directory `path` is written: beside it, `.<name>.owner`.
fn owner_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.owner"))
}

/// Write `owner` beside the lock directory: temp file + rename, no fsync (a lock does not
/// outlive a crash of the file system's node anyway).
fn write_owner(path: &Path, owner: &Owner) -> Result<()> {
    let json = serde_json::to_vec(owner).map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    let target = owner_path(path);
    let tmp = target.with_file_name(format!(
        "{}~{}",
        target.file_name().unwrap_or_default().to_string_lossy(),
        owner.token
    ));
    let map = |e: std::io::Error| {
        if fsutil::is_unwritable(&e) {
            not_writable(path, &e)
        } else {
            Error::io(path, e)
        }
    };
    std::fs::write(&tmp, &json).map_err(map)?;
    std::fs::rename(&tmp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        map(e)
    })
}

/// Who holds lock directory `path`, for a message: "node N pid P, taken S s ago".
pub fn holder_of(path: &Path) -> Option<String> {
    read_owner(path).map(|o| {
        let age = unix_now().saturating_sub(o.time);
        format!("node {} pid {}, taken {age} s ago", o.node, o.pid)
    })
}

/// How long ago the owner of lock directory `path` took it (by its clock), if known.
pub fn held_for(path: &Path) -> Option<Duration> {
    read_owner(path).map(|o| Duration::from_secs(unix_now().saturating_sub(o.time).max(0) as u64))
}

/// The owner of lock directory `path`, if the lock exists and has a readable owner file.
pub fn read_owner(path: &Path) -> Option<Owner> {
    if !path.is_dir() {
        return None;
    }
    let bytes = fsutil::read_regular(&owner_path(path)).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Older than `stale` by its owner's time, or (no owner file: a holder died between `mkdir`
/// and writing it) by the directory's modification time.
fn is_stale(path: &Path, owner: Option<&Owner>, stale: Duration) -> bool {
    let age = match owner {
        Some(o) => Duration::from_secs(unix_now().saturating_sub(o.time).max(0) as u64),
        None => match std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default())
        {
            Ok(age) => age,
            Err(_) => return false,
        },
    };
    age > stale
}

/// Remove the stale lock `path` (whose owner was `seen`). One taker at a time: the take-over
/// is guarded by a second lock directory (`.takeover~<name>`), under which the lock is checked
/// again (still the stale one?) before its owner file and the directory are removed; a stale
/// guard (a taker that died) is removed in turn.
fn take_over(dir: &Path, name: &str, path: &Path, seen: Option<&Owner>, stale: Duration) {
    let guard = dir.join(format!(".takeover~{name}"));
    match std::fs::create_dir(&guard) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if is_stale(&guard, None, stale) {
                let _ = std::fs::remove_dir(&guard);
            }
            return;
        }
        Err(_) => return,
    }
    let now_seen = read_owner(path);
    if now_seen.as_ref().map(|o| &o.token) == seen.map(|o| &o.token)
        && is_stale(path, now_seen.as_ref(), stale)
    {
        if now_seen.is_some() {
            let _ = std::fs::remove_file(owner_path(path));
        }
        let _ = std::fs::remove_dir(path);
    }
    let _ = std::fs::remove_dir(&guard);
}

/// Whether the cluster store's file system takes writes now (a directory created and removed
/// in the lock directory); [`Error::StoreNotWritable`] if not (no quorum, read-only).
pub fn probe_writable(dir: &Path, node: &str) -> Result<()> {
    let probe = dir.join(format!(".probe~{}", unique_token(node)));
    let created = std::fs::create_dir(dir)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        })
        .and_then(|()| std::fs::create_dir(&probe));
    match created {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            Ok(())
        }
        Err(e) if fsutil::is_unwritable(&e) => Err(not_writable(dir, &e)),
        Err(e) => Err(Error::io(dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: Duration = Duration::from_secs(120);

    #[test]
    fn a_held_lock_excludes_others_until_released() {
        let d = tempfile::tempdir().unwrap();
        let a = ClusterLock::try_acquire(d.path(), "t", "node1", STALE)
            .unwrap()
            .unwrap();
        assert!(ClusterLock::try_acquire(d.path(), "t", "node2", STALE)
            .unwrap()
            .is_none());
        let owner = read_owner(&d.path().join("t")).unwrap();
        assert_eq!(owner.node, "node1");
        assert_eq!(owner.pid, std::process::id());
        assert!(a.still_held());
        drop(a);
        let b = ClusterLock::try_acquire(d.path(), "t", "node2", STALE)
            .unwrap()
            .unwrap();
        assert!(b.still_held());
        drop(b);
        // nothing left but the (free) lock directory's parent
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_stale_lock_is_taken_over_and_its_holder_knows() {
        let d = tempfile::tempdir().unwrap();
        let old = ClusterLock::try_acquire(d.path(), "t", "node1", STALE)
            .unwrap()
            .unwrap();
        // the holder's owner time lies 121 s back
        let mut o = read_owner(&d.path().join("t")).unwrap();
        o.time -= 121;
        write_owner(&d.path().join("t"), &o).unwrap();
        let new = ClusterLock::try_acquire(d.path(), "t", "node2", STALE)
            .unwrap()
            .unwrap();
        assert!(!old.still_held());
        assert!(new.still_held());
        // the old holder's release does not free the new holder's lock
        drop(old);
        assert!(new.still_held());
    }

    #[test]
    fn a_lock_without_owner_is_stale_by_its_directory_time() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("t")).unwrap();
        assert!(ClusterLock::try_acquire(d.path(), "t", "n", STALE)
            .unwrap()
            .is_none());
        // a holder that died between mkdir and writing its owner file, 121 s ago
        std::fs::File::open(d.path().join("t"))
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(121))
            .unwrap();
        let l = ClusterLock::try_acquire(d.path(), "t", "n", STALE).unwrap();
        assert!(l.is_some_and(|l| l.still_held()));
    }

    #[test]
    fn of_many_contenders_for_a_stale_lock_exactly_one_gets_it() {
        for round in 0..30 {
            let d = tempfile::tempdir().unwrap();
            let dead = ClusterLock::try_acquire(d.path(), "t", "dead", STALE)
                .unwrap()
                .unwrap();
            let mut o = read_owner(&d.path().join("t")).unwrap();
            o.time -= 121;
            write_owner(&d.path().join("t"), &o).unwrap();
            std::mem::forget(dead); // killed: never released
            let barrier = std::sync::Barrier::new(8);
            let held: Vec<ClusterLock> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|i| {
                        let (dir, barrier) = (d.path(), &barrier);
                        s.spawn(move || {
                            barrier.wait();
                            ClusterLock::try_acquire(dir, "t", &format!("n{i}"), STALE).unwrap()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().unwrap())
                    .collect()
            });
            assert_eq!(held.len(), 1, "round {round}");
            assert!(held[0].still_held());
            drop(held);
            // nothing left behind: no grave, no guard, no lock
            assert_eq!(
                std::fs::read_dir(d.path()).unwrap().count(),
                0,
                "round {round}"
            );
        }
    }

    #[test]
    fn in_pmxcfs_lock_dir_a_lock_is_named_for_oxnotify_and_only_pmxcfs_expires_it() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("etc/pve/priv/lock");
        std::fs::create_dir_all(&dir).unwrap();
        let a = ClusterLock::try_acquire(&dir, "t", "node1", STALE)
            .unwrap()
            .unwrap();
        let path = dir.join("oxnotify-t");
        assert!(path.is_dir());
        assert_eq!(
            std::fs::read_dir(&path).unwrap().count(),
            0,
            "the lock stays empty"
        );
        // 121 s old by its owner: elsewhere it would be taken over; here the waiter only sends
        // pmxcfs's unlock request (mtime 0), and pmxcfs decides by its own clock
        let mut o = read_owner(&path).unwrap();
        o.time -= 121;
        write_owner(&path, &o).unwrap();
        assert!(ClusterLock::try_acquire(&dir, "t", "node2", STALE)
            .unwrap()
            .is_none());
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(mtime, UNIX_EPOCH, "unlock request sent");
        assert!(a.still_held());
        drop(a);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing left");
    }

    #[test]
    fn a_wait_ends_at_its_deadline_and_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let _held = ClusterLock::try_acquire(d.path(), "t", "node1", STALE)
            .unwrap()
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        let store =
            crate::store::Store::new(crate::store::Kind::Cluster, d.path().into(), "node2", STALE);
        let err = store
            .lock_until(Path::new("/nonexistent"), "t", deadline, "the lock")
            .unwrap_err();
        let msg = err.to_string();
        assert!(err.is_transient(), "{msg}");
        assert!(msg.contains("node node1 pid"), "{msg}");
    }
}
