//! Per-target OAuth2 state files: `<state>/oauth2/<target>.json`, 0600 in a 0700 directory,
//! replaced atomically. Only this library writes them; [`TargetLock`] serialises writers.
//!
//! Nothing the provider issued is dropped:
//! - every save increments the state's `generation`; the temp file of a save is named
//!   `.tmp-<target>~<random>`, so a writer killed between writing it and renaming it leaves a
//!   complete, identifiable newer state behind;
//! - a save that fails (read-only directory, full file system) is retried, then the state is
//!   written to a recovery file beside the state (`<target>.recovery.json` in the state's
//!   directory, else `<target>.oauth2-recovery.json` one level up) and kept in this process's
//!   memory ([`SaveOutcome::Kept`]);
//! - [`StateStore::load_locked`] (every access under the lock) takes over the newest of the
//!   state file, complete temp files, recovery files and the memory copy (highest generation,
//!   same target), writes it as the state and removes the rest.
//!
//! The files live in the [`crate::store`] of the settings: node-local (flock per target,
//! fsynced writes) or a shared file system that several nodes use at once (pmxcfs, NFS,
//! CephFS), where the lock is a lock directory, work under it ends within its work deadline
//! ([`TargetLock::bound`], token requests included), and files stay small (a state is under
//! 4 KiB; pmxcfs allows 1 MiB).
//!
//! **Compare-and-swap on the generation** (both stores): a save is refused
//! ([`Error::NewerStateStored`]) if the state file already holds a higher generation than the
//! one the saved state was based on, so an older state never replaces a newer one, even if a
//! lock was lost (a holder that outlived the stale time, a taken-over lock). The check and the
//! rename are two steps; under the lock no other writer runs between them.
//!
//! **The inherent window**: a refresh grant rotates the refresh token at the provider the
//! moment the provider answers. A process killed (or a node that loses power or quorum)
//! after the provider answered and before the new state is written loses the new refresh
//! token, and with reuse detection (Okta, Auth0, Keycloak, oidc-provider; not Microsoft) the
//! grant: no client can close this window, only keep it short (the write follows the answer
//! at once, under the lock, and a complete temp file of a killed writer is taken over).

use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::settings::Settings;
use crate::store::{self, local, Access, Store, StoreLock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Current state-file format version.
pub const STATE_VERSION: u32 = 1;

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The last failure of a refresh or send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// The error message (never contains a secret).
    pub message: String,
    /// When it happened (Unix seconds).
    pub time: i64,
    /// What must happen next (absent in states written by older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::error::ErrorKind>,
}

/// What we keep per OAuth2 target. Timestamps are Unix seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OAuth2State {
    /// Format version.
    #[serde(default)]
    pub version: u32,
    /// The refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    /// When the admin authorized (code exchange or a refresh token given by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_at: Option<i64>,
    /// When the current refresh token was issued to us (authorization or last rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_issued_at: Option<i64>,
    /// How many times the provider rotated the refresh token since authorization.
    #[serde(default)]
    pub rotations: u64,
    /// Last successful refresh grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<i64>,
    /// Cached access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Secret>,
    /// When the cached access token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_expires_at: Option<i64>,
    /// The cached access token's lifetime as issued (`expires_in`, seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_lifetime: Option<i64>,
    /// The last refresh/send failure, cleared by the next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// Set when the provider said the grant is gone (`invalid_grant`); cleared by a new
    /// authorization or a successful refresh.
    #[serde(default)]
    pub needs_reauthorization: bool,
    /// Fingerprint of the app registration the refresh token was obtained for
    /// ([`crate::binding::Binding::registration`]); a state without one (written by an older
    /// version) is bound to the target's registration at its next use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_binding: Option<String>,
    /// Fingerprint of the server, mode and identity the tokens may be sent to
    /// ([`crate::binding::Binding::delivery`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_binding: Option<String>,
    /// Incremented by every save: of two copies of a target's state, the higher generation is
    /// the newer (crash leftovers and recovery files are compared by it).
    #[serde(default)]
    pub generation: u64,
    /// The node that made the last successful refresh (cluster store: the daily job of the
    /// other nodes skips the target within the refresh window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_by: Option<String>,
    /// The target this state belongs to (written by every save; a leftover temp or recovery
    /// file is taken over only by its own target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl OAuth2State {
    /// A fresh state for a newly authorized refresh token.
    pub fn authorized(refresh_token: Secret) -> Self {
        let t = now();
        OAuth2State {
            version: STATE_VERSION,
            refresh_token: Some(refresh_token),
            authorized_at: Some(t),
            refresh_token_issued_at: Some(t),
            ..Default::default()
        }
    }

    /// The cached access token if it is valid for at least `margin_secs` more. The margin
    /// adapts to short-lived tokens: it is at most a quarter of the token's lifetime, so a
    /// provider that issues 5-minute tokens does not cost a refresh on every use.
    pub fn cached_access_token(&self, margin_secs: i64) -> Option<&Secret> {
        let margin = self
            .access_token_lifetime
            .map_or(margin_secs, |l| margin_secs.min(l / 4));
        match (&self.access_token, self.access_token_expires_at) {
            (Some(t), Some(exp)) if exp - margin > now() => Some(t),
            _ => None,
        }
    }

    /// Forget the cached access token.
    pub fn drop_access_token(&mut self) {
        self.access_token = None;
        self.access_token_expires_at = None;
        self.access_token_lifetime = None;
    }

    /// Record `e` with its kind, for the status report.
    pub fn record_failure(&mut self, e: &crate::error::Error) {
        self.last_error = Some(LastError {
            message: e.to_string(),
            time: now(),
            kind: Some(e.kind()),
        });
    }
}

/// Where a state that could not be saved is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptIn {
    /// A recovery file (and this process's memory); taken over by the next access.
    RecoveryFile(PathBuf),
    /// Only this process's memory: lost when the process ends.
    Memory,
}

impl std::fmt::Display for KeptIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeptIn::RecoveryFile(p) => write!(
                f,
                "the recovery file {} (taken over by the next access)",
                p.display()
            ),
            KeptIn::Memory => f.write_str(
                "this process's memory only (lost when it ends: fix the state directory now)",
            ),
        }
    }
}

/// Result of [`StateStore::save_or_keep`].
#[derive(Debug)]
pub enum SaveOutcome {
    /// Written as the state file.
    Saved,
    /// The state file could not be written (`error`); the state is kept in `kept_in`.
    Kept {
        /// Where the state is now.
        kept_in: KeptIn,
        /// Why the state file could not be written.
        error: Error,
    },
}

/// States that could not be written anywhere, by state-file path: a long-running process
/// (the server) keeps using them, and saves them once the directory is writable again.
static KEPT: Mutex<BTreeMap<PathBuf, OAuth2State>> = Mutex::new(BTreeMap::new());

fn kept() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, OAuth2State>> {
    KEPT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Pauses between the attempts of a state save (a transiently full disk may clear).
const SAVE_RETRY_PAUSES: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(100)];
/// How long a save to a shared store that refuses writes (no quorum) keeps trying: a pmxcfs
/// partition stalls writes about 8 s, then refuses them until the link is back and resynced.
const SHARED_SAVE_WAIT: Duration = Duration::from_secs(60);

/// Temp files of writers without a per-target prefix (older versions) are removed once they
/// are this old: no live writer keeps a temp file that long.
const LEGACY_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Exclusive per-target lock: refreshes (which may rotate the refresh token) and state
/// writes happen only while it is held (an `flock`, or a lock directory in the cluster store).
#[derive(Debug)]
pub struct TargetLock(StoreLock);

impl TargetLock {
    /// `deadline`, bounded by the time work under this lock must be done
    /// ([`StoreLock::bound`]: a cluster lock must not be outlived).
    pub fn bound(&self, deadline: std::time::Instant) -> std::time::Instant {
        self.0.bound(deadline)
    }
}

/// Reads and writes the state files.
#[derive(Debug, Clone)]
pub struct StateStore {
    settings: Settings,
    store: Store,
}

impl StateStore {
    /// A store over `settings.state_dir`.
    pub fn new(settings: &Settings) -> Self {
        StateStore {
            settings: settings.clone(),
            store: settings.store(),
        }
    }

    fn ensure_dirs(&self) -> Result<()> {
        self.store
            .ensure_dir(&self.settings.state_dir, Access::Private, false)?;
        self.store
            .ensure_dir(&self.settings.oauth2_state_dir(), Access::Private, true)
    }

    /// The store the state files live in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The local lock files live beside the state files; a shared store keeps its lock
    /// directories elsewhere and creates them itself (without quorum a read still works).
    fn ensure_lock_dirs(&self) -> Result<()> {
        if self.store.is_shared() {
            return Ok(());
        }
        self.ensure_dirs()
    }

    /// Wait for the lock of `target`, at most the configured lock timeout.
    pub fn lock(&self, target: &str) -> Result<TargetLock> {
        self.lock_until(
            target,
            std::time::Instant::now() + self.settings.lock_timeout,
        )
    }

    /// Wait for the lock of `target` until `deadline` at the latest ([`Error::LockTimeout`]).
    pub fn lock_until(&self, target: &str, deadline: std::time::Instant) -> Result<TargetLock> {
        self.ensure_lock_dirs()?;
        self.store
            .lock_until(
                &self.settings.oauth2_lock_file(target),
                &format!("oauth2-{target}"),
                deadline,
                &format!("the OAuth2 state of target '{target}'"),
            )
            .map(TargetLock)
    }

    /// Take the lock of `target` if it is free, `Ok(None)` if another process holds it.
    pub fn try_lock(&self, target: &str) -> Result<Option<TargetLock>> {
        self.ensure_lock_dirs()?;
        Ok(self
            .store
            .try_lock(
                &self.settings.oauth2_lock_file(target),
                &format!("oauth2-{target}"),
            )?
            .map(TargetLock))
    }

    /// The state of `target` as the state file holds it, `None` if it has none. A corrupt
    /// file is an error and is left untouched. Without the lock (status display, read-only
    /// fallback); accesses that may write use [`StateStore::load_locked`].
    pub fn load(&self, target: &str) -> Result<Option<OAuth2State>> {
        read_state(&self.settings.oauth2_state_file(target))
    }

    /// The newest state of `target` this process can see without the lock and without
    /// writing: the state file, a recovery file or the memory copy, by generation. For the
    /// read-only fallback (the lock file cannot be created).
    pub fn load_unlocked_newest(&self, target: &str) -> Result<Option<OAuth2State>> {
        let path = self.settings.oauth2_state_file(target);
        let mut best = read_state(&path)?;
        let mut others: Vec<OAuth2State> = self
            .recovery_files(target)
            .iter()
            .filter_map(|r| read_state(r).ok().flatten())
            .collect();
        others.extend(kept().get(&path).cloned());
        for cand in others {
            if cand.target.as_deref() == Some(target)
                && best.as_ref().is_none_or(|b| cand.generation > b.generation)
            {
                best = Some(cand);
            }
        }
        Ok(best)
    }

    /// The state of `target` under its lock, after taking over what a crash or a failed save
    /// left: the newest (highest generation) of the state file, complete `.tmp-<target>~*`
    /// files, recovery files and this process's memory copy. A newer copy is written as the
    /// state (if that fails it is still returned); leftover temp and recovery files are
    /// removed once nothing newer than the state file remains in them.
    pub fn load_locked(&self, target: &str, lock: &TargetLock) -> Result<Option<OAuth2State>> {
        let path = self.settings.oauth2_state_file(target);
        let current = read_state(&path);
        let base = match &current {
            Ok(Some(s)) => Some(s.generation),
            _ => None,
        };
        let temps = self.temp_files(target);
        let mut best: Option<OAuth2State> = None;
        let mut consider = |cand: OAuth2State| {
            let ours = cand.target.as_deref() == Some(target);
            let newer = base.is_none_or(|g| cand.generation > g);
            if ours && newer && best.as_ref().is_none_or(|b| cand.generation > b.generation) {
                best = Some(cand);
            }
        };
        for t in &temps {
            // an incomplete temp file does not parse: it never wins
            if let Ok(Some(cand)) = read_state(t) {
                consider(cand);
            }
        }
        for r in self.recovery_files(target) {
            if let Ok(Some(cand)) = read_state(&r) {
                consider(cand);
            }
        }
        if let Some(cand) = kept().get(&path).cloned() {
            consider(cand);
        }
        let Some(mut newer) = best else {
            let state = current?;
            // nothing newer anywhere: what is left over is stale
            self.remove_leftovers(&temps);
            return Ok(state);
        };
        match self.save_next(target, &mut newer, lock) {
            // save_next removed the leftovers
            Ok(()) => {}
            Err(_) => {
                kept().insert(path, newer.clone());
            }
        }
        Ok(Some(newer))
    }

    /// Replace the state of `target` atomically (0600). Requires the target's lock.
    pub fn save(&self, target: &str, state: &OAuth2State, lock: &TargetLock) -> Result<()> {
        let mut state = state.clone();
        self.save_next(target, &mut state, lock)
    }

    /// [`StateStore::save`], with `state.generation` advanced to the saved generation. The
    /// write is retried; on success every older copy (temp, recovery, memory) is removed.
    /// Refused with [`Error::NewerStateStored`] if the state file holds a higher generation
    /// than `state` (compare-and-swap: an older state never replaces a newer one).
    pub fn save_next(
        &self,
        target: &str,
        state: &mut OAuth2State,
        _lock: &TargetLock,
    ) -> Result<()> {
        let path = self.settings.oauth2_state_file(target);
        if let Ok(Some(stored)) = read_state(&path) {
            if stored.generation > state.generation {
                return Err(Error::NewerStateStored {
                    target: target.to_string(),
                    path,
                    ours: state.generation,
                    stored: stored.generation,
                });
            }
        }
        // a generation of u64::MAX comes only from a damaged or hand-edited file: wrapping to
        // 0 would let every older copy win the next compare-and-swap
        let Some(next) = state.generation.checked_add(1) else {
            return Err(Error::CorruptState {
                path,
                message: format!(
                    "target '{target}': its generation counter is exhausted (u64::MAX), so no \
                     newer state can be written"
                ),
            });
        };
        state.version = STATE_VERSION;
        state.generation = next;
        state.target = Some(target.to_string());
        let json = serde_json::to_vec_pretty(&state).map_err(|e| Error::CorruptState {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut attempt = 0;
        loop {
            let result = self.ensure_dirs().and_then(|()| {
                self.store
                    .write(&path, &json, Access::Private, &temp_prefix(target))
            });
            match result {
                Ok(()) => break,
                // a file system that refuses writes will not change its mind in 100 ms
                Err(e @ Error::StoreNotWritable { .. }) => return Err(e),
                Err(e) => match SAVE_RETRY_PAUSES.get(attempt) {
                    Some(pause) => {
                        std::thread::sleep(*pause);
                        attempt += 1;
                    }
                    None => return Err(e),
                },
            }
        }
        kept().remove(&path);
        for r in self.recovery_files(target) {
            let _ = std::fs::remove_file(r);
        }
        self.remove_leftovers(&self.temp_files(target));
        Ok(())
    }

    /// [`StateStore::save_next`]; if the state file cannot be written, keep the state in a
    /// recovery file (where one can be written) and in memory, and say where.
    pub fn save_or_keep(
        &self,
        target: &str,
        state: &mut OAuth2State,
        lock: &TargetLock,
    ) -> SaveOutcome {
        let base = state.generation;
        let mut error = match self.save_next(target, state, lock) {
            Ok(()) => return SaveOutcome::Saved,
            Err(e) => e,
        };
        // A shared file system that refuses writes has usually lost quorum for a moment (a
        // pmxcfs node cut off by a partition, then busy while it resyncs): the lock cannot
        // be taken from us meanwhile (its holder's node cannot release it, the others expire
        // it only after 120 s), so keep trying to store what the provider issued.
        if self.store.is_shared() && matches!(error, Error::StoreNotWritable { .. }) {
            let until = std::time::Instant::now() + SHARED_SAVE_WAIT;
            while std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(500));
                state.generation = base;
                match self.save_next(target, state, lock) {
                    Ok(()) => return SaveOutcome::Saved,
                    Err(e @ (Error::StoreNotWritable { .. } | Error::Io { .. })) => error = e,
                    Err(e) => {
                        error = e;
                        break;
                    }
                }
            }
        }
        let path = self.settings.oauth2_state_file(target);
        kept().insert(path, state.clone());
        let mut kept_in = KeptIn::Memory;
        if let Ok(json) = serde_json::to_vec_pretty(&state) {
            for r in self.recovery_paths(target) {
                let written = if r.starts_with(self.settings.local_dir()) && self.store.is_shared()
                {
                    // this node's own disk: written where the shared file system cannot be
                    r.parent()
                        .map_or(Ok(()), |d| local::ensure_dir(d, 0o700, false))
                        .and_then(|()| {
                            local::write_atomic_with(&r, &json, 0o600, &temp_prefix(target), true)
                        })
                } else {
                    self.store
                        .write(&r, &json, Access::Private, &temp_prefix(target))
                };
                if written.is_ok() {
                    kept_in = KeptIn::RecoveryFile(r);
                    break;
                }
            }
        }
        SaveOutcome::Kept { kept_in, error }
    }

    /// Remove the state of `target` (when the target is deleted), with any recovery file,
    /// leftover and memory copy. Requires the lock.
    pub fn remove(&self, target: &str, _lock: &TargetLock) -> Result<()> {
        let path = self.settings.oauth2_state_file(target);
        kept().remove(&path);
        for r in self.recovery_files(target) {
            let _ = std::fs::remove_file(r);
        }
        self.remove_leftovers(&self.temp_files(target));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Where a state that cannot be saved goes, in order of preference: beside the state,
    /// then one directory up (when the state's own directory is read-only or full); with a
    /// shared store last this node's own directory (a cluster file system without quorum
    /// takes no file at all; the next access on this node takes it over).
    pub fn recovery_paths(&self, target: &str) -> Vec<PathBuf> {
        let mut paths = vec![
            self.settings
                .oauth2_state_dir()
                .join(format!("{target}.recovery.json")),
            self.settings
                .state_dir
                .join(format!("{target}.oauth2-recovery.json")),
        ];
        if self.store.is_shared() {
            paths.push(
                self.settings
                    .local_dir()
                    .join("oauth2-recovery")
                    .join(format!("{target}.json")),
            );
        }
        paths
    }

    fn recovery_files(&self, target: &str) -> Vec<PathBuf> {
        self.recovery_paths(target)
            .into_iter()
            .filter(|p| p.exists())
            .collect()
    }

    /// This target's temp files in the state directory (and the recovery directory).
    fn temp_files(&self, target: &str) -> Vec<PathBuf> {
        let prefix = temp_prefix(target);
        [
            self.settings.oauth2_state_dir(),
            self.settings.state_dir.clone(),
        ]
        .iter()
        .flat_map(|dir| store::files_matching(dir, |n| n.starts_with(&prefix), None))
        .collect()
    }

    /// Remove `temps` (ours: we hold the target's lock, so no writer of this target is
    /// alive) and old temp files of writers that did not name their target.
    fn remove_leftovers(&self, temps: &[PathBuf]) {
        for t in temps {
            let _ = std::fs::remove_file(t);
        }
        store::sweep(
            &self.settings.oauth2_state_dir(),
            |n| n.starts_with(".tmp-") && !n.contains('~'),
            Some(LEGACY_TEMP_AGE),
        );
    }
}

/// The temp-file prefix of `target`'s state writes; `~` cannot occur in a target name, so no
/// target's prefix is a prefix of another's.
fn temp_prefix(target: &str) -> String {
    format!(".tmp-{target}~")
}

fn read_state(path: &Path) -> Result<Option<OAuth2State>> {
    match local::read_regular(path)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::CorruptState {
                path: path.to_path_buf(),
                // serde_json's message names line/column and the kind of problem, not data
                message: format!("invalid JSON at line {} column {}", e.line(), e.column()),
            }),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, StateStore) {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
        (dir, StateStore::new(&settings))
    }

    fn with_token(rt: &str, generation: u64, target: &str) -> Vec<u8> {
        let mut s = OAuth2State::authorized(Secret::new(rt));
        s.generation = generation;
        s.target = Some(target.to_string());
        serde_json::to_vec(&s).unwrap()
    }

    #[test]
    fn a_short_lived_token_is_cached_for_most_of_its_life() {
        let mut s = OAuth2State::authorized(Secret::new("rt"));
        // a 5-minute token, issued a minute ago: the 300 s margin would never use it
        s.access_token = Some(Secret::new("at"));
        s.access_token_expires_at = Some(now() + 240);
        s.access_token_lifetime = Some(300);
        assert!(s.cached_access_token(300).is_some());
        // a minute before expiry it is refreshed (a quarter of its life)
        s.access_token_expires_at = Some(now() + 60);
        assert!(s.cached_access_token(300).is_none());
        // an hour's token keeps the configured margin
        s.access_token_lifetime = Some(3600);
        s.access_token_expires_at = Some(now() + 240);
        assert!(s.cached_access_token(300).is_none());
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn every_save_advances_the_generation_and_names_the_target() {
        let (_d, st) = store();
        let lock = st.lock("t").unwrap();
        let mut s = OAuth2State::authorized(Secret::new("rt-1"));
        st.save_next("t", &mut s, &lock).unwrap();
        st.save_next("t", &mut s, &lock).unwrap();
        let read = st.load("t").unwrap().unwrap();
        assert_eq!(read.generation, 2);
        assert_eq!(read.target.as_deref(), Some("t"));
    }

    #[test]
    fn a_complete_newer_temp_file_is_adopted_and_the_rest_removed() {
        let (_d, st) = store();
        let dir = st.settings.oauth2_state_dir();
        let lock = st.lock("t").unwrap();
        let mut s = OAuth2State::authorized(Secret::new("rt-old"));
        s.generation = 2;
        st.save_next("t", &mut s, &lock).unwrap(); // generation 3
        std::fs::write(dir.join(".tmp-t~aaaa"), with_token("rt-new", 4, "t")).unwrap();
        // torn write of an even newer one: never adopted
        let torn = with_token("rt-torn", 9, "t");
        std::fs::write(dir.join(".tmp-t~bbbb"), &torn[..torn.len() / 2]).unwrap();
        std::fs::write(dir.join(".tmp-t~cccc"), with_token("rt-older", 1, "t")).unwrap();
        // a file named for this target but holding another's state: not adopted
        std::fs::write(dir.join(".tmp-t~dddd"), with_token("rt-x", 8, "x")).unwrap();
        // another target's leftover: not ours to touch
        std::fs::write(dir.join(".tmp-t.b~eeee"), with_token("rt-b", 7, "t.b")).unwrap();
        let got = st.load_locked("t", &lock).unwrap().unwrap();
        assert_eq!(got.refresh_token.as_ref().unwrap().expose(), "rt-new");
        let on_disk = st.load("t").unwrap().unwrap();
        assert_eq!(on_disk.refresh_token.unwrap().expose(), "rt-new");
        assert_eq!(on_disk.generation, 5);
        assert_eq!(names(&dir), [".tmp-t.b~eeee", "t.json", "t.lock"]);
    }

    #[test]
    fn stale_leftovers_are_removed_without_changing_the_state() {
        let (_d, st) = store();
        let dir = st.settings.oauth2_state_dir();
        let lock = st.lock("t").unwrap();
        let mut s = OAuth2State::authorized(Secret::new("rt-cur"));
        s.generation = 4;
        st.save_next("t", &mut s, &lock).unwrap();
        std::fs::write(dir.join(".tmp-t~old1"), with_token("rt-older", 3, "t")).unwrap();
        std::fs::write(dir.join(".tmp-t~old2"), b"{\"version\":1,\"refre").unwrap();
        let got = st.load_locked("t", &lock).unwrap().unwrap();
        assert_eq!(got.refresh_token.unwrap().expose(), "rt-cur");
        assert_eq!(got.generation, 5);
        assert_eq!(names(&dir), ["t.json", "t.lock"]);
    }

    #[test]
    fn an_exhausted_generation_is_refused_not_wrapped() {
        let (_d, st) = store();
        let path = st.settings.oauth2_state_file("t");
        let lock = st.lock("t").unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let stored = with_token("rt-max", u64::MAX, "t");
        std::fs::write(&path, &stored).unwrap();
        let mut s = st.load_locked("t", &lock).unwrap().unwrap();
        assert_eq!(s.generation, u64::MAX);
        let err = st.save_next("t", &mut s, &lock).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("generation") && msg.contains("t.json"),
            "{msg}"
        );
        // nothing replaced the stored state, and no generation 0 anywhere
        assert_eq!(std::fs::read(&path).unwrap(), stored);
        assert_eq!(s.generation, u64::MAX);
    }

    #[test]
    fn a_recovery_file_is_taken_over_by_the_next_access() {
        let (_d, st) = store();
        let lock = st.lock("t").unwrap();
        let mut s = OAuth2State::authorized(Secret::new("rt-cur"));
        st.save_next("t", &mut s, &lock).unwrap();
        let rec = st.recovery_paths("t")[1].clone();
        std::fs::write(&rec, with_token("rt-rotated", 2, "t")).unwrap();
        let got = st.load_locked("t", &lock).unwrap().unwrap();
        assert_eq!(got.refresh_token.unwrap().expose(), "rt-rotated");
        assert!(!rec.exists());
        assert_eq!(
            st.load("t")
                .unwrap()
                .unwrap()
                .refresh_token
                .unwrap()
                .expose(),
            "rt-rotated"
        );
    }
}
