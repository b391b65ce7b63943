//! The store: where config, OAuth2 state and pending authorizations are written and how their
//! writers are serialised. This module is the only code that knows the two kinds ([`Kind`]):
//!
//! - **local**: a node-local directory; locks are `flock`s on lock files ([`local::FileLock`]),
//!   every write is fsynced, directories get exact modes;
//! - **cluster**: a directory on a shared file system (pmxcfs `/etc/pve`, NFS, CephFS) that
//!   several nodes use at once; locks are directories created with `mkdir`
//!   ([`cluster::ClusterLock`]), because `flock` does not reach across nodes while a directory
//!   creation is atomic on all of them; writes are temp file + rename without fsync and without
//!   chmod (pmxcfs has neither), and a refused write (no quorum) is
//!   [`Error::StoreNotWritable`] at once.
//!
//! Everything else asks a [`Store`] (from [`crate::Settings::store`]) to lock, write, create a
//! directory or probe, and asks it the two questions whose answers differ by kind
//! ([`Store::is_shared`], [`Store::work_deadline`]). Node-local files (outbox, slots) use
//! [`local`] directly: they never live on the shared file system.

pub mod cluster;
pub mod local;

use crate::error::{Error, Result};
use cluster::ClusterLock;
use local::FileLock;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which store the OAuth2 state, the config and the pending authorizations live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A node-local directory: `flock` per target, fsynced writes (the default).
    Local,
    /// A directory on a shared file system that several nodes use at once: lock directories
    /// (stale after [`crate::Settings::cluster_lock_stale`]), temp file + rename without
    /// fsync, a generation compare-and-swap on every state write, and one refresh per target
    /// per [`crate::Settings::refresh_window`] across all nodes.
    Cluster,
}

impl Kind {
    /// Parse `local` / `cluster`.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "local" => Some(Kind::Local),
            "cluster" => Some(Kind::Cluster),
            _ => None,
        }
    }

    /// The directory of node-local files (outbox, connection slots) when none is configured:
    /// the state directory itself for the local store, never the shared one for the cluster
    /// store.
    pub fn default_node_local_dir(&self, state_dir: &Path, system_default: &Path) -> PathBuf {
        match self {
            Kind::Local => state_dir.to_path_buf(),
            Kind::Cluster => system_default.to_path_buf(),
        }
    }
}

/// Who may read a file the store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Root only (0600; directories 0700): secrets, state, pending authorizations.
    Private,
    /// Readable by others (0644 locally; 0640, what pmxcfs allows, in the cluster store).
    Public,
}

/// The store of one [`crate::Settings`]: its kind and what the cluster kind needs.
#[derive(Debug, Clone)]
pub struct Store {
    kind: Kind,
    lock_dir: PathBuf,
    node: String,
    stale: Duration,
}

/// An exclusive lock of either store, released on drop.
#[derive(Debug)]
pub struct StoreLock {
    /// Held for its `Drop`, which releases the lock.
    _held: Held,
    /// Until when work under it must be done (cluster locks: before anyone may take it over).
    work_deadline: Option<Instant>,
}

#[derive(Debug)]
enum Held {
    Local(#[allow(dead_code)] FileLock),
    Cluster(#[allow(dead_code)] ClusterLock),
}

impl StoreLock {
    /// Until when work under this lock must be done: a cluster lock's acquisition time plus
    /// 3/8 of the stale time (so no other node takes it over meanwhile); a local lock has no
    /// limit of its own.
    pub fn work_deadline(&self) -> Option<Instant> {
        self.work_deadline
    }

    /// Bound `deadline` by this lock's work deadline.
    pub fn bound(&self, deadline: Instant) -> Instant {
        self.work_deadline.map_or(deadline, |d| d.min(deadline))
    }
}

impl Store {
    /// A store of `kind`; the cluster kind keeps its lock directories in `lock_dir`, names
    /// this node `node` in them and takes over locks older than `stale`.
    pub fn new(kind: Kind, lock_dir: PathBuf, node: &str, stale: Duration) -> Self {
        Store {
            kind,
            lock_dir,
            node: node.to_string(),
            stale,
        }
    }

    /// True if several nodes share this store: a cached token is read without the lock (a
    /// lock directory costs a round trip of the cluster), and the daily job refreshes a
    /// target once per refresh window across all nodes, not once per node.
    pub fn is_shared(&self) -> bool {
        self.kind == Kind::Cluster
    }

    /// Wait until the lock is ours, at most until `deadline`; then [`Error::LockTimeout`]
    /// naming `what` and the holder. The local store locks `local_file`, the cluster store the
    /// lock directory `name`. A cluster file system that is not writable (no quorum) fails at
    /// once with [`Error::StoreNotWritable`].
    pub fn lock_until(
        &self,
        local_file: &Path,
        name: &str,
        deadline: Instant,
        what: &str,
    ) -> Result<StoreLock> {
        // a lock directory is polled more often: its holders' work is short and bounded
        let max_pause = match self.kind {
            Kind::Local => Duration::from_millis(100),
            Kind::Cluster => Duration::from_millis(50),
        };
        match poll_until(deadline, max_pause, || self.try_lock(local_file, name))? {
            Some(l) => Ok(l),
            None => Err(Error::LockTimeout {
                what: what.to_string(),
                holder: match self.kind {
                    Kind::Local => local::holder_of(local_file),
                    Kind::Cluster => cluster::holder_of(&cluster::lock_path(&self.lock_dir, name)),
                },
                path: match self.kind {
                    Kind::Local => local_file.to_path_buf(),
                    Kind::Cluster => cluster::lock_path(&self.lock_dir, name),
                },
            }),
        }
    }

    /// Take the lock if it is free (or, in the cluster store, stale); `Ok(None)` if it is held.
    pub fn try_lock(&self, local_file: &Path, name: &str) -> Result<Option<StoreLock>> {
        Ok(match self.kind {
            Kind::Local => FileLock::try_exclusive(local_file)?.map(|l| StoreLock {
                _held: Held::Local(l),
                work_deadline: None,
            }),
            Kind::Cluster => {
                ClusterLock::try_acquire(&self.lock_dir, name, &self.node, self.stale)?.map(|l| {
                    StoreLock {
                        work_deadline: Some(l.acquired() + self.stale * 3 / 8),
                        _held: Held::Cluster(l),
                    }
                })
            }
        })
    }

    /// Create `dir` (and parents) if missing, for files of `access`. Locally a directory we
    /// create gets the exact mode and `tighten` forces it on an existing one (our own private
    /// directories); on a cluster file system the directory is created without a chmod and
    /// never tightened (pmxcfs decides modes itself and refuses most chmods).
    pub fn ensure_dir(&self, dir: &Path, access: Access, tighten: bool) -> Result<()> {
        let mode = match access {
            Access::Private => 0o700,
            Access::Public => 0o755,
        };
        match self.kind {
            Kind::Local => local::ensure_dir(dir, mode, tighten),
            Kind::Cluster => std::fs::DirBuilder::new()
                .recursive(true)
                .create(dir)
                .map_err(|e| self.write_error(dir, e)),
        }
    }

    /// Replace `path` atomically with `data` (temp file named `<prefix><random>` in the same
    /// directory, then rename): a crash leaves the old or the new content, never a torn file.
    /// Locally the file and the directory are fsynced; the cluster store relies on the
    /// rename's atomicity (its replication, not the local disk, makes a write durable).
    pub fn write(&self, path: &Path, data: &[u8], access: Access, prefix: &str) -> Result<()> {
        let mode = match (access, self.kind) {
            (Access::Private, _) => 0o600,
            (Access::Public, Kind::Local) => 0o644,
            (Access::Public, Kind::Cluster) => 0o640,
        };
        let durable = self.kind == Kind::Local;
        local::write_atomic_with(path, data, mode, prefix, durable).map_err(|e| match e {
            Error::Io { path, source } if self.kind == Kind::Cluster => {
                if local::is_unwritable(&source) {
                    Error::StoreNotWritable {
                        path,
                        reason: source.to_string(),
                    }
                } else {
                    Error::Io { path, source }
                }
            }
            other => other,
        })
    }

    /// For how long the lock has been held: the lock file's last write (the holder writes
    /// its pid when it takes it), or the lock directory owner's time in the cluster store.
    /// `None` if that cannot be told.
    pub fn held_for(&self, local_file: &Path, name: &str) -> Option<Duration> {
        match self.kind {
            Kind::Local => std::fs::metadata(local_file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok()),
            Kind::Cluster => cluster::held_for(&cluster::lock_path(&self.lock_dir, name)),
        }
    }

    /// Whether the store takes writes now; [`Error::StoreNotWritable`] if not (a cluster file
    /// system without quorum). The local store is not probed.
    pub fn probe_writable(&self) -> Result<()> {
        match self.kind {
            Kind::Local => Ok(()),
            Kind::Cluster => cluster::probe_writable(&self.lock_dir, &self.node),
        }
    }

    fn write_error(&self, path: &Path, e: std::io::Error) -> Error {
        if self.kind == Kind::Cluster && local::is_unwritable(&e) {
            Error::StoreNotWritable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        } else {
            Error::io(path, e)
        }
    }
}

/// Call `attempt` until it yields a value or `deadline` passes (`Ok(None)` then): the one
/// lock poll of the crate (state, config, daily, outbox and slot locks). Pauses grow from
/// 5 ms to `max_pause`, never past the deadline; the last attempt is made at the deadline.
pub fn poll_until<T>(
    deadline: Instant,
    max_pause: Duration,
    mut attempt: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = attempt()? {
            return Ok(Some(v));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(max_pause);
    }
}

/// The files in `dir` whose name `matches` and, with `older_than`, that were last modified
/// longer ago than that (a live writer's temp file is seconds old).
pub fn files_matching(
    dir: &Path,
    matches: impl Fn(&str) -> bool,
    older_than: Option<Duration>,
) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| matches(&e.file_name().to_string_lossy()))
        .filter(|e| {
            older_than.is_none_or(|min| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > min)
            })
        })
        .map(|e| e.path())
        .collect()
}

/// Remove what [`files_matching`] finds: the one sweep of leftovers (temp files of killed
/// writers, expired pending authorizations).
pub fn sweep(dir: &Path, matches: impl Fn(&str) -> bool, older_than: Option<Duration>) {
    for p in files_matching(dir, matches, older_than) {
        let _ = std::fs::remove_file(p);
    }
}
