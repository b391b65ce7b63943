//! Per-target OAuth2 state files: `<state>/oauth2/<target>.json`, 0600 in a 0700 directory,
//! replaced atomically. Only this library writes them; [`TargetLock`] serialises writers.

use crate::error::{Error, Result};
use crate::fsutil::{self, FileLock};
use crate::secret::Secret;
use crate::settings::Settings;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

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

    /// The cached access token if it is valid for at least `margin_secs` more.
    pub fn cached_access_token(&self, margin_secs: i64) -> Option<&Secret> {
        match (&self.access_token, self.access_token_expires_at) {
            (Some(t), Some(exp)) if exp - margin_secs > now() => Some(t),
            _ => None,
        }
    }

    /// Forget the cached access token.
    pub fn drop_access_token(&mut self) {
        self.access_token = None;
        self.access_token_expires_at = None;
    }

    /// Record a failure (message must be secret-free: it comes from our error types).
    pub fn record_error(&mut self, message: &str) {
        self.last_error = Some(LastError {
            message: message.to_string(),
            time: now(),
            kind: None,
        });
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

/// Exclusive per-target lock: refreshes (which may rotate the refresh token) and state
/// writes happen only while it is held.
#[derive(Debug)]
pub struct TargetLock(#[allow(dead_code)] FileLock);

/// Reads and writes the state files.
#[derive(Debug, Clone)]
pub struct StateStore {
    settings: Settings,
}

impl StateStore {
    /// A store over `settings.state_dir`.
    pub fn new(settings: &Settings) -> Self {
        StateStore {
            settings: settings.clone(),
        }
    }

    fn ensure_dirs(&self) -> Result<()> {
        fsutil::ensure_dir(&self.settings.state_dir, 0o700, false)?;
        fsutil::ensure_dir(&self.settings.oauth2_state_dir(), 0o700, true)
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
        self.ensure_dirs()?;
        FileLock::exclusive_until(
            &self.settings.oauth2_lock_file(target),
            deadline,
            &format!("the OAuth2 state of target '{target}'"),
        )
        .map(TargetLock)
    }

    /// The state of `target`, `None` if it has none. A corrupt file is an error and is left
    /// untouched.
    pub fn load(&self, target: &str) -> Result<Option<OAuth2State>> {
        let path = self.settings.oauth2_state_file(target);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| Error::CorruptState {
                        path,
                        // serde_json's message names line/column and the kind of problem, not data
                        message: format!("invalid JSON at line {} column {}", e.line(), e.column()),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Replace the state of `target` atomically (0600). Requires the target's lock.
    pub fn save(&self, target: &str, state: &OAuth2State, _lock: &TargetLock) -> Result<()> {
        self.ensure_dirs()?;
        let mut state = state.clone();
        state.version = STATE_VERSION;
        let json = serde_json::to_vec_pretty(&state).map_err(|e| Error::CorruptState {
            path: self.settings.oauth2_state_file(target),
            message: e.to_string(),
        })?;
        fsutil::write_atomic(&self.settings.oauth2_state_file(target), &json, 0o600)
    }

    /// Remove the state of `target` (when the target is deleted). Requires the lock.
    pub fn remove(&self, target: &str, _lock: &TargetLock) -> Result<()> {
        let path = self.settings.oauth2_state_file(target);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}
