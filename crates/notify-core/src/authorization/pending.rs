//! Authorizations in progress: the PKCE verifier of an authorize request, kept server-side and
//! bound to its `state`, until the provider redirects back. Single use, expiring after
//! [`PENDING_TTL_SECS`], shared by all processes of a management stack (files in
//! `<state>/pending/`, 0600, named by a hash of the state so the state itself is not on disk).

use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::settings::Settings;
use crate::state::now;
use crate::store::{self, Access};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How long an authorize request may take (login, MFA, consent).
pub const PENDING_TTL_SECS: i64 = 600;

/// What we remember about an authorize request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pending {
    /// The target being authorized.
    pub target: String,
    /// The redirect URI of the authorize request (the exchange must repeat it).
    pub redirect_uri: String,
    /// The PKCE verifier.
    pub pkce_verifier: Secret,
    /// When the request was made.
    pub created: i64,
    /// A device authorization (RFC 8628) in progress: the provider's answer with the device
    /// code (then `redirect_uri` and `pkce_verifier` are empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Secret>,
}

fn dir(settings: &Settings) -> PathBuf {
    settings.state_dir.join("pending")
}

fn file(settings: &Settings, state: &str) -> PathBuf {
    let h = crate::digest::sha256_hex(state.as_bytes());
    dir(settings).join(format!("{h}.json"))
}

/// Remember `pending` under `state`; also drops expired entries.
pub fn store(settings: &Settings, state: &str, pending: &Pending) -> Result<()> {
    let store = settings.store();
    store.ensure_dir(&settings.state_dir, Access::Private, false)?;
    store.ensure_dir(&dir(settings), Access::Private, true)?;
    store::sweep(
        &dir(settings),
        |_| true,
        Some(std::time::Duration::from_secs(PENDING_TTL_SECS as u64)),
    );
    let json = serde_json::to_vec(pending).map_err(|e| Error::param("state", e.to_string()))?;
    store.write(&file(settings, state), &json, Access::Private, ".tmp-")
}

/// Read the authorization stored under `state` without taking it (a device authorization is
/// polled in several calls); the same checks as [`take`].
pub fn peek(settings: &Settings, state: &str) -> Result<Pending> {
    let again = |why: &str| {
        Error::param(
            "handle",
            format!(
                "{why}: start the authorization again (Authorize button or `oxnotify authorize`)"
            ),
        )
    };
    if state.is_empty() || state.len() > 512 || state.chars().any(char::is_control) {
        return Err(again("invalid handle"));
    }
    let path = file(settings, state);
    let bytes = std::fs::read(&path).map_err(|_| again("unknown or already used authorization"))?;
    let pending: Pending =
        serde_json::from_slice(&bytes).map_err(|_| again("unreadable authorization record"))?;
    if now() - pending.created > PENDING_TTL_SECS {
        let _ = std::fs::remove_file(&path);
        return Err(again("the authorization took longer than 10 minutes"));
    }
    Ok(pending)
}

/// Take the authorization stored under `state`: it is removed, so a replay fails. Unknown,
/// used or expired states are a 400 telling the user to start again.
pub fn take(settings: &Settings, state: &str) -> Result<Pending> {
    let again = |why: &str| {
        Error::param(
            "state",
            format!(
                "{why}: start the authorization again (Authorize button or `oxnotify authorize`)"
            ),
        )
    };
    if state.is_empty() || state.len() > 512 || state.chars().any(char::is_control) {
        return Err(again("invalid state"));
    }
    let path = file(settings, state);
    // rename first: of two concurrent callbacks with the same state only one wins
    let claimed = path.with_extension("taken");
    if std::fs::rename(&path, &claimed).is_err() {
        return Err(again("unknown or already used authorization state"));
    }
    let bytes = std::fs::read(&claimed).map_err(|e| Error::io(&claimed, e));
    let _ = std::fs::remove_file(&claimed);
    let pending: Pending =
        serde_json::from_slice(&bytes?).map_err(|_| again("unreadable authorization record"))?;
    if now() - pending.created > PENDING_TTL_SECS {
        return Err(again("the authorization took longer than 10 minutes"));
    }
    Ok(pending)
}
