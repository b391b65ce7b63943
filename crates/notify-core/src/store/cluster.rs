//! A cluster-wide lock (the cluster kind of [`crate::store::Store`]): a directory created with `mkdir` on the shared file system, as
//! pmxcfs's own locks are (`/etc/pve/priv/lock/<id>`). `mkdir` is atomic across nodes where
//! `flock` is not. The directory holds an `owner` file (node name, pid, time, a unique
//! token), written by temp file + rename, so a waiter can name the holder.
//!
//! A lock whose owner time (or, without an owner file, whose directory time) is older than
//! the stale time belongs to a dead or hung holder and is taken over: one taker at a time
//! (a guard directory, itself created with `mkdir`) checks again that the lock is still the
//! stale one, renames it to a unique grave name (atomic) and removes the grave; then every
//! contender tries `mkdir` again, which exactly one wins. Nothing is removed by path
//! (`rm` + `mkdir` would race with a new holder). A taker that finds it moved a lock other than
//! the stale one (possible only if a taker stalled past the stale time) puts it back. Holders keep their
//! work well under the stale time ([`crate::settings::Settings::cluster_lock_work_limit`]);
//! every state write is also a compare-and-swap on the state's generation
//! ([`crate::state::StateStore::save_next`]), so even a holder that outlived its lock never
//! replaces a newer state with an older one.

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

const OWNER_FILE: &str = "owner";

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
        let path = dir.join(name);
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
                        let _ = std::fs::remove_dir_all(&path);
                        return Err(e);
                    }
                    return Ok(Some(ClusterLock {
                        path,
                        token,
                        acquired: Instant::now(),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let seen = read_owner(&path);
                    if !is_stale(&path, seen.as_ref(), stale) {
                        return Ok(None);
                    }
                    take_over(dir, name, &path, seen.as_ref(), node, stale);
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
        // rename first: the lock is free in one atomic step, the cleanup can take its time
        let grave = grave_path(&self.path, &self.token);
        if std::fs::rename(&self.path, &grave).is_ok() {
            let _ = std::fs::remove_dir_all(&grave);
        }
    }
}

fn grave_path(path: &Path, token: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".released-{name}~{token}"))
}

/// Write `owner` into the lock directory: temp file + rename, no fsync (a lock does not
/// outlive a crash of the file system's node anyway).
fn write_owner(path: &Path, owner: &Owner) -> Result<()> {
    let json = serde_json::to_vec(owner).map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    let tmp = path.join(format!(".owner~{}", owner.token));
    let map = |e: std::io::Error| {
        if fsutil::is_unwritable(&e) {
            not_writable(path, &e)
        } else {
            Error::io(path, e)
        }
    };
    std::fs::write(&tmp, &json).map_err(map)?;
    std::fs::rename(&tmp, path.join(OWNER_FILE)).map_err(map)
}

/// "node N pid P, taken S s ago" of lock directory `path`, for a waiter that gives up.
pub fn holder_of(path: &Path) -> Option<String> {
    read_owner(path).map(|o| {
        let age = unix_now().saturating_sub(o.time);
        format!("node {} pid {}, taken {age} s ago", o.node, o.pid)
    })
}

/// The owner of lock directory `path`, if it has a readable one.
pub fn read_owner(path: &Path) -> Option<Owner> {
    let bytes = fsutil::read_regular(&path.join(OWNER_FILE)).ok()??;
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

/// Move the stale lock `path` (whose owner was `seen`) out of the way. One taker at a time:
/// the takeover itself is guarded by a second lock directory (`.takeover~<name>`), under which
/// the lock is checked again (still the stale one?) before it is renamed away; a stale guard
/// (a taker that died) is renamed away in turn. Should a rename still catch a lock other than
/// the stale one (only possible if a taker stalled longer than the stale time), it is put back.
fn take_over(
    dir: &Path,
    name: &str,
    path: &Path,
    seen: Option<&Owner>,
    node: &str,
    stale: Duration,
) {
    let guard = dir.join(format!(".takeover~{name}"));
    match std::fs::create_dir(&guard) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if is_stale(&guard, None, stale) {
                remove_by_rename(dir, name, &guard, node, |_| true);
            }
            return;
        }
        Err(_) => return,
    }
    let now_seen = read_owner(path);
    if now_seen.as_ref().map(|o| &o.token) == seen.map(|o| &o.token)
        && is_stale(path, now_seen.as_ref(), stale)
    {
        let seen_token = seen.map(|o| o.token.clone());
        remove_by_rename(dir, name, path, node, |moved| {
            moved.map(|o| o.token.clone()) == seen_token
        });
    }
    let _ = std::fs::remove_dir(&guard);
}

/// Rename `path` to a unique grave name (atomic: of several contenders one succeeds), then
/// remove the grave if `expected` accepts its owner; otherwise put it back.
fn remove_by_rename(
    dir: &Path,
    name: &str,
    path: &Path,
    node: &str,
    expected: impl Fn(Option<&Owner>) -> bool,
) {
    let grave = dir.join(format!(".stale-{name}~{}", unique_token(node)));
    if std::fs::rename(path, &grave).is_err() {
        return; // another contender moved it first, or it was released
    }
    if expected(read_owner(&grave).as_ref()) {
        let _ = std::fs::remove_dir_all(&grave);
        return;
    }
    // a live lock: give it back; if a new lock was created meanwhile, the one we moved has
    // lost it (its holder's writes are still guarded by the generation compare-and-swap)
    if std::fs::rename(&grave, path).is_err() {
        let _ = std::fs::remove_dir_all(&grave);
    }
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
