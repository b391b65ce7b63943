//! Per-target connection slots: at most `max-connections` SMTP sessions to one target at a
//! time, across every process of the host. Slot `i` of target `t` is an exclusive `flock` on
//! `<state>/slots/<t>.<i>.lock`; the kernel releases it when its holder exits, so a crashed
//! sender never keeps a slot.
//!
//! Why: submission servers refuse connections beyond a per-account or per-client limit with a
//! temporary `421` (Microsoft 365 allows 3 concurrent SMTP connections per mailbox). Waiting
//! for a slot locally is cheaper and more reliable than being refused and retrying.

use crate::error::{Error, Result};
use crate::settings::Settings;
use crate::store::local::{self, FileLock};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A held connection slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _lock: Option<FileLock>,
    /// Which slot (0-based), for diagnostics; `None` if the slot files could not be used.
    pub index: Option<u32>,
}

fn dir(settings: &Settings) -> PathBuf {
    settings.local_dir().join("slots")
}

/// Wait for one of the `limit` slots of `target` until `deadline`; a wait that runs out is a
/// transient [`Error::LockTimeout`] naming the limit. If the slot files cannot be created
/// (a read-only or full state directory) the send goes ahead without a slot: the limit only
/// avoids refusals, and a send must not fail for it.
pub fn acquire(settings: &Settings, target: &str, limit: u32, deadline: Instant) -> Result<Slot> {
    let unlimited = Slot {
        _lock: None,
        index: None,
    };
    if local::ensure_dir(&settings.local_dir(), 0o700, false).is_err()
        || local::ensure_dir(&dir(settings), 0o700, false).is_err()
    {
        return Ok(unlimited);
    }
    let limit = limit.max(1);
    // start at a per-process offset so that waiters do not all poll slot 0 first
    let start = std::process::id() % limit;
    let found = crate::store::poll_until(deadline, Duration::from_millis(50), || {
        for k in 0..limit {
            let index = (start + k) % limit;
            let path = dir(settings).join(format!("{target}.{index}.lock"));
            match FileLock::try_exclusive(&path) {
                Ok(Some(lock)) => {
                    return Ok(Some(Slot {
                        _lock: Some(lock),
                        index: Some(index),
                    }))
                }
                Ok(None) => {}
                // the slot files cannot be used: go ahead without a slot
                Err(_) => {
                    return Ok(Some(Slot {
                        _lock: None,
                        index: None,
                    }))
                }
            }
        }
        Ok(None)
    })?;
    found.ok_or_else(|| Error::LockTimeout {
        what: format!("target '{target}': all {limit} connection slot(s) (max-connections)"),
        path: dir(settings).join(format!("{target}.0.lock")),
        holder: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_more_than_limit_slots_are_held_and_a_freed_slot_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
        let far = Instant::now() + Duration::from_secs(5);
        let a = acquire(&s, "t", 2, far).unwrap();
        let b = acquire(&s, "t", 2, far).unwrap();
        assert!(a.index.is_some() && b.index.is_some());
        assert_ne!(a.index, b.index);
        // the third waits until its deadline and says why
        let err = acquire(&s, "t", 2, Instant::now() + Duration::from_millis(100)).unwrap_err();
        assert!(err.is_transient());
        assert!(err.to_string().contains("connection slot"), "{err}");
        // another target has its own slots
        acquire(&s, "other", 2, far).unwrap();
        drop(a);
        acquire(&s, "t", 2, far).unwrap();
    }

    #[test]
    fn an_unusable_state_dir_does_not_block_a_send() {
        let dir = tempfile::tempdir().unwrap();
        // the state "directory" is a file: no slot file can be created below it
        let file = dir.path().join("state");
        std::fs::write(&file, b"").unwrap();
        let s = Settings::with_dirs(dir.path().join("etc"), &file);
        let slot = acquire(&s, "t", 2, Instant::now()).unwrap();
        assert_eq!(slot.index, None);
    }
}
