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

/// Most authorizations in progress per target: a new one drops the oldest beyond this (an
/// admin who clicked Authorize again does not need the earlier attempts).
pub const MAX_PENDING_PER_TARGET: usize = 4;

/// Most authorizations in progress in total: beyond this a new one is refused (transient)
/// until some finish or expire, so begin calls cannot fill the state directory.
pub const MAX_PENDING_TOTAL: usize = 100;

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
    /// The fingerprint of the target's client registration when the authorization started
    /// ([`crate::binding::Binding::registration`]): completing it is refused if the target's
    /// registration (client, tenant, endpoints, scope) changed meanwhile, so a code and PKCE
    /// verifier never go to a token URL set after the admin started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<String>,
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
    enforce_caps(settings, &pending.target)?;
    let json = serde_json::to_vec(pending).map_err(|e| Error::param("state", e.to_string()))?;
    store.write(&file(settings, state), &json, Access::Private, ".tmp-")
}

/// Make room for one more authorization of `target`: drop its oldest beyond
/// [`MAX_PENDING_PER_TARGET`] - 1, then refuse if [`MAX_PENDING_TOTAL`] are still waiting.
/// Concurrent begins may overshoot a cap by their number, never without bound.
fn enforce_caps(settings: &Settings, target: &str) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir(settings)) else {
        return Ok(());
    };
    let mut total = 0;
    let mut mine: Vec<(i64, PathBuf)> = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        total += 1;
        // unreadable records count towards the total; they expire with the rest
        if let Some(p) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Pending>(&b).ok())
            .filter(|p| p.target == target)
        {
            mine.push((p.created, path));
        }
    }
    mine.sort();
    let excess = (mine.len() + 1).saturating_sub(MAX_PENDING_PER_TARGET);
    for (_, path) in mine.iter().take(excess) {
        if std::fs::remove_file(path).is_ok() {
            total -= 1;
        }
    }
    if total >= MAX_PENDING_TOTAL {
        return Err(Error::TooManyPending {
            target: target.to_string(),
            limit: MAX_PENDING_TOTAL,
        });
    }
    Ok(())
}

/// The 400 of an authorization that cannot go on, naming `param` (`state` or `handle`).
fn start_again(param: &str, why: &str) -> Error {
    Error::param(
        param,
        format!("{why}: start the authorization again (Authorize button or `oxnotify authorize`)"),
    )
}

/// The record file of `state`, if `state` can be one (`param` names it in the error).
fn record_file(settings: &Settings, state: &str, param: &str) -> Result<PathBuf> {
    if state.is_empty() || state.len() > 512 || state.chars().any(char::is_control) {
        return Err(start_again(param, &format!("invalid {param}")));
    }
    Ok(file(settings, state))
}

/// A record as read, if it parses and has not expired (`on_expired` runs if it has).
fn fresh(bytes: &[u8], param: &str, on_expired: impl FnOnce()) -> Result<Pending> {
    let pending: Pending = serde_json::from_slice(bytes)
        .map_err(|_| start_again(param, "unreadable authorization record"))?;
    if now() - pending.created > PENDING_TTL_SECS {
        on_expired();
        return Err(start_again(
            param,
            "the authorization took longer than 10 minutes",
        ));
    }
    Ok(pending)
}

/// Read the authorization stored under `state` without taking it (a device authorization is
/// polled in several calls); the same checks as [`take`].
pub fn peek(settings: &Settings, state: &str) -> Result<Pending> {
    let path = record_file(settings, state, "handle")?;
    let bytes = std::fs::read(&path)
        .map_err(|_| start_again("handle", "unknown or already used authorization"))?;
    // an expired one can never be completed
    fresh(&bytes, "handle", || {
        let _ = std::fs::remove_file(&path);
    })
}

/// Take the authorization stored under `state`: it is removed, so a replay fails. Unknown,
/// used or expired states are a 400 telling the user to start again.
pub fn take(settings: &Settings, state: &str) -> Result<Pending> {
    let path = record_file(settings, state, "state")?;
    // rename first: of two concurrent callbacks with the same state only one wins
    let claimed = path.with_extension("taken");
    if std::fs::rename(&path, &claimed).is_err() {
        return Err(start_again(
            "state",
            "unknown or already used authorization state",
        ));
    }
    let bytes = std::fs::read(&claimed).map_err(|e| Error::io(&claimed, e));
    let _ = std::fs::remove_file(&claimed);
    fresh(&bytes?, "state", || {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn settings() -> (tempfile::TempDir, Settings) {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
        (dir, s)
    }

    fn pending(target: &str, created: i64) -> Pending {
        Pending {
            target: target.to_string(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            pkce_verifier: Secret::new("verifier"),
            created,
            device: None,
            registration: None,
        }
    }

    fn count(s: &Settings) -> usize {
        std::fs::read_dir(dir(s)).unwrap().count()
    }

    #[test]
    fn a_target_keeps_only_its_newest_pending_authorizations() {
        let (_d, s) = settings();
        for i in 0..10 {
            store(&s, &format!("state-{i}"), &pending("a", now() - 10 + i)).unwrap();
        }
        assert_eq!(MAX_PENDING_PER_TARGET, 4);
        assert_eq!(count(&s), 4, "at most 4 per target");
        // the newest are kept, the oldest were dropped
        assert_eq!(take(&s, "state-9").unwrap().target, "a");
        assert_eq!(take(&s, "state-6").unwrap().target, "a");
        assert!(take(&s, "state-5").is_err());
        assert!(take(&s, "state-0").is_err());
    }

    #[test]
    fn pending_authorizations_are_capped_in_total() {
        let (_d, s) = settings();
        assert_eq!(MAX_PENDING_TOTAL, 100);
        for i in 0..100 {
            store(&s, &format!("state-{i}"), &pending(&format!("t{i}"), now())).unwrap();
        }
        let err = store(&s, "one-more", &pending("t-new", now())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("t-new") && msg.contains("100"), "{msg}");
        assert_eq!(count(&s), 100);
        // one that is taken frees its place
        take(&s, "state-3").unwrap();
        store(&s, "one-more", &pending("t-new", now())).unwrap();
    }
}
