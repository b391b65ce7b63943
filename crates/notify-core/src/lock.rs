//! The locks that serialise writers of the config and the OAuth2 state, one kind per state
//! store ([`crate::settings::StoreKind`]): an `flock` on a lock file for the local store
//! ([`FileLock`]), a lock directory created with `mkdir` for the cluster store
//! ([`cluster::ClusterLock`]), because `flock` does not reach across the nodes of a shared
//! file system while a directory creation is atomic on all of them.

pub mod cluster;

use crate::error::Result;
use crate::fsutil::FileLock;
use crate::settings::{Settings, StoreKind};
use cluster::ClusterLock;
use std::path::Path;
use std::time::Instant;

/// An exclusive lock of either store, released on drop.
#[derive(Debug)]
pub enum StoreLock {
    /// `flock` on a node-local lock file (released by the kernel when the process dies).
    Local(FileLock),
    /// A lock directory on the shared file system (stale, and taken over, after
    /// [`Settings::cluster_lock_stale`] when its holder died).
    Cluster(ClusterLock),
}

impl StoreLock {
    /// Wait until the lock is ours, at most until `deadline`; then [`crate::Error::LockTimeout`]
    /// naming `what` and the holder. The local store locks `local_file`, the cluster store the
    /// lock directory `name` in [`Settings::cluster_lock_dir`]. A cluster file system that is
    /// not writable (no quorum) fails at once with [`crate::Error::StoreNotWritable`].
    pub fn acquire_until(
        settings: &Settings,
        local_file: &Path,
        name: &str,
        deadline: Instant,
        what: &str,
    ) -> Result<StoreLock> {
        match settings.store {
            StoreKind::Local => {
                FileLock::exclusive_until(local_file, deadline, what).map(Self::Local)
            }
            StoreKind::Cluster => ClusterLock::acquire_until(
                &settings.cluster_lock_dir(),
                name,
                &settings.node_name,
                settings.cluster_lock_stale,
                deadline,
                what,
            )
            .map(Self::Cluster),
        }
    }

    /// Take the lock if it is free (or, in the cluster store, stale); `Ok(None)` if it is held.
    pub fn try_acquire(
        settings: &Settings,
        local_file: &Path,
        name: &str,
    ) -> Result<Option<StoreLock>> {
        match settings.store {
            StoreKind::Local => Ok(FileLock::try_exclusive(local_file)?.map(Self::Local)),
            StoreKind::Cluster => Ok(ClusterLock::try_acquire(
                &settings.cluster_lock_dir(),
                name,
                &settings.node_name,
                settings.cluster_lock_stale,
            )?
            .map(Self::Cluster)),
        }
    }

    /// Until when work under this lock must be done: a cluster lock is acquired time plus
    /// [`Settings::cluster_lock_work_limit`] (so no other node takes it over meanwhile); a local
    /// lock has no limit of its own.
    pub fn work_deadline(&self, settings: &Settings) -> Option<Instant> {
        match self {
            StoreLock::Local(_) => None,
            StoreLock::Cluster(l) => Some(l.acquired() + settings.cluster_lock_work_limit()),
        }
    }
}
