//! Access tokens for OAuth2 targets: served from the state file's cache until shortly before
//! expiry, otherwise refreshed under the per-target lock. A rotated refresh token is written
//! to the state file (atomically, fsynced) before the new access token is used, so no rotation
//! is ever lost, even with providers that revoke the grant when an old token is replayed.
//! If the state cannot be written (read-only or full state directory), the new tokens are
//! kept in a recovery file or in memory ([`crate::state::SaveOutcome`]), the send goes on
//! with the new access token, and the failure is reported loudly ([`Error::StateNotSaved`]:
//! the error of a refresh, a warning on stderr for a send).
//! In a shared (cluster) store ([`crate::store::Store::is_shared`]) the cache is read without
//! the lock, the lock is a lock directory and bounds the token request's deadline, and the
//! daily job's [`TokenManager::refresh_if_due`] refreshes a target once per window cluster-wide.

use crate::binding::{Binding, Fit};
use crate::config::smtp::{OAuth2Flow, SmtpSecrets, SmtpTarget};
use crate::error::{Error, Result};
use crate::oauth2::{self, ClientRegistration, TokenHttpClient, TokenSet};
use crate::secret::Secret;
use crate::settings::Settings;
use crate::state::{now, OAuth2State, SaveOutcome, StateStore, TargetLock};
use std::time::Instant;

/// An access token and where it came from.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The bearer token.
    pub token: Secret,
    /// True if it came from the cache (a rejection then warrants one refresh and retry).
    pub from_cache: bool,
}

/// Result of a refresh grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// The refresh token stayed the same (Google style).
    InPlace,
    /// The provider rotated the refresh token; the new one is stored.
    Rotated,
    /// Cluster store: another node (or this one) refreshed within the refresh window; no
    /// request was made.
    NotDue,
}

/// Gets access tokens for targets. Every lock wait and token request it makes ends by its
/// deadline.
pub struct TokenManager<'a> {
    settings: &'a Settings,
    http: &'a dyn TokenHttpClient,
    store: StateStore,
    deadline: Instant,
}

impl<'a> TokenManager<'a> {
    /// A manager using `http` for token requests; its deadline is the settings' HTTP timeout
    /// from now (one token request, retries and the lock wait included).
    pub fn new(settings: &'a Settings, http: &'a dyn TokenHttpClient) -> Self {
        TokenManager {
            settings,
            http,
            store: StateStore::new(settings),
            deadline: Instant::now() + settings.http_timeout,
        }
    }

    /// The same manager with an earlier deadline (a delivery's), never a later one.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = self.deadline.min(deadline);
        self
    }

    fn lock(&self, target: &str) -> Result<TargetLock> {
        let lock_deadline = Instant::now() + self.settings.lock_timeout;
        self.store
            .lock_until(target, self.deadline.min(lock_deadline))
    }

    /// An access token for `target`: the cached one if it is valid for longer than the
    /// margin (unless `force_refresh`), else a fresh one from a refresh grant.
    pub fn access_token(
        &self,
        target: &SmtpTarget,
        secrets: &SmtpSecrets,
        force_refresh: bool,
    ) -> Result<AccessToken> {
        let binding = Binding::of(target);
        if target.flow().mints() {
            // no refresh token: minted on demand under the lock, cached like any other
            let lock = self.lock(&target.name)?;
            return self.minted(target, secrets, &binding, force_refresh, &lock);
        }
        let margin = self.settings.token_expiry_margin.as_secs() as i64;
        // Cluster store: a valid cached token needs no lock (a lock directory is a write to
        // the shared file system, which has no quorum at times). Only a refresh takes the
        // lock, and looks at the cache again under it: a burst of sends from several nodes
        // after expiry costs one token request, the others wait for the lock and reuse it.
        let cluster_lock = if self.store.store().is_shared() && !force_refresh {
            match self.cached_or_cluster_lock(target, &binding, margin)? {
                Ok(token) => {
                    return Ok(AccessToken {
                        token,
                        from_cache: true,
                    })
                }
                Err(lock) => Some(lock),
            }
        } else {
            None
        };
        let lock = match cluster_lock.map_or_else(|| self.lock(&target.name), Ok) {
            Ok(lock) => lock,
            // The lock file cannot be created: the state directory is read-only or full. The
            // lock serialises writers of the state, and no process can write it now, so
            // reading it unlocked races with nothing, and a valid cached access token is safe
            // to use. A refresh is not: unlocked, two processes could redeem the same refresh
            // token, which providers with reuse detection punish by revoking the grant.
            Err(e) if !force_refresh && lock_file_unavailable(&e) => {
                return match self.cached_unlocked(target, &binding, margin) {
                    Some(token) => Ok(AccessToken {
                        token,
                        from_cache: true,
                    }),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let mut state = self.load_authorized(target, &binding, &lock)?;
        if !force_refresh {
            if let Some(t) = state.cached_access_token(margin) {
                return Ok(AccessToken {
                    token: t.clone(),
                    from_cache: true,
                });
            }
        }
        let (tokens, _, not_saved) = self.refresh_locked(target, secrets, &mut state, &lock)?;
        if let Some(e) = not_saved {
            // the send goes on with the good access token; say loudly what is at stake
            eprintln!("oxnotify: {e}");
        }
        Ok(AccessToken {
            token: tokens.access_token,
            from_cache: false,
        })
    }

    /// Cluster store: the valid cached token (`Ok`), else the target's lock (`Err`). While
    /// another node holds the lock (refreshing), the cache is looked at again between the
    /// attempts, so waiters take the new token as soon as it is stored instead of queueing for
    /// the lock one by one. Bounded like [`TokenManager::lock`].
    fn cached_or_cluster_lock(
        &self,
        target: &SmtpTarget,
        binding: &Binding,
        margin: i64,
    ) -> Result<std::result::Result<Secret, TargetLock>> {
        let deadline = self
            .deadline
            .min(Instant::now() + self.settings.lock_timeout);
        let found =
            crate::store::poll_until(deadline, std::time::Duration::from_millis(50), || {
                if let Some(token) = self.cached_unlocked(target, binding, margin) {
                    return Ok(Some(Ok(token)));
                }
                Ok(self.store.try_lock(&target.name)?.map(Err))
            })?;
        match found {
            Some(found) => Ok(found),
            // one last attempt, which names the holder when it fails
            None => self.store.lock_until(&target.name, deadline).map(Err),
        }
    }

    /// The cached access token of `target`, read without the lock and without writing (state
    /// file, recovery file or memory copy, the newest), if it is bound to the target as
    /// configured now and valid for longer than `margin` seconds.
    fn cached_unlocked(
        &self,
        target: &SmtpTarget,
        binding: &Binding,
        margin: i64,
    ) -> Option<Secret> {
        self.store
            .load_unlocked_newest(&target.name)
            .ok()
            .flatten()
            // a state bound elsewhere is not used here either
            .filter(|s| !matches!(binding.admits(s), Fit::Elsewhere(_)))
            .and_then(|s| s.cached_access_token(margin).cloned())
    }

    /// The daily job's refresh: [`TokenManager::refresh`], except that in the cluster store a
    /// target that any node refreshed within [`Settings::refresh_window`] is left alone
    /// ([`Refreshed::NotDue`]), so a cluster rotates each refresh token once a day, not once per
    /// node. The check is made under the target's lock, so concurrent daily jobs on several
    /// nodes refresh it exactly once.
    pub fn refresh_if_due(&self, target: &SmtpTarget, secrets: &SmtpSecrets) -> Result<Refreshed> {
        if !self.store.store().is_shared() || target.flow().mints() {
            return self.refresh(target, secrets);
        }
        let lock = self.lock(&target.name)?;
        let binding = Binding::of(target);
        let mut state = self.load_authorized(target, &binding, &lock)?;
        let window = self.settings.refresh_window.as_secs() as i64;
        if state.last_refresh.is_some_and(|t| now() - t < window) && !state.needs_reauthorization {
            return Ok(Refreshed::NotDue);
        }
        match self.refresh_locked(target, secrets, &mut state, &lock)? {
            (_, r, None) => Ok(r),
            (_, _, Some(not_saved)) => Err(not_saved),
        }
    }

    /// Run a refresh grant now (the daily job), whatever the cache says. Targets whose flow
    /// mints tokens (no refresh token) mint one now, so a credential that stopped working
    /// (an expired client secret, a deleted key) is noticed before a notification needs it.
    pub fn refresh(&self, target: &SmtpTarget, secrets: &SmtpSecrets) -> Result<Refreshed> {
        let lock = self.lock(&target.name)?;
        let binding = Binding::of(target);
        if target.flow().mints() {
            return self
                .minted(target, secrets, &binding, true, &lock)
                .map(|_| Refreshed::InPlace);
        }
        let mut state = self.load_authorized(target, &binding, &lock)?;
        match self.refresh_locked(target, secrets, &mut state, &lock)? {
            (_, r, None) => Ok(r),
            // refreshed, but not saved: that is what the daily job must report
            (_, _, Some(not_saved)) => Err(not_saved),
        }
    }

    /// Store a newly obtained refresh token (and the access token that came with it) as the
    /// authorization of `target` as configured now, replacing any previous state.
    pub fn store_authorization(&self, target: &SmtpTarget, tokens: &TokenSet) -> Result<()> {
        let rt = tokens
            .refresh_token
            .clone()
            .ok_or_else(|| Error::param("refresh-token", "no refresh token to store"))?;
        let binding = Binding::of(target);
        let name = &target.name;
        let lock = self.lock(name)?;
        // continue the generation count, so that no older leftover outranks this state
        let previous = self.store.load_locked(name, &lock).ok().flatten();
        let mut state = OAuth2State::authorized(rt);
        state.generation = previous.map_or(0, |p| p.generation);
        binding.stamp(&mut state);
        cache_access_token(&mut state, tokens);
        match self.store.save_or_keep(name, &mut state, &lock) {
            SaveOutcome::Saved => Ok(()),
            SaveOutcome::Kept { kept_in, error } => Err(Error::StateNotSaved {
                target: name.to_string(),
                what: "the new authorization".into(),
                path: self.settings.oauth2_state_file(name),
                reason: error.to_string(),
                kept_in: kept_in.to_string(),
            }),
        }
    }

    /// The state of `target`, if it holds an authorization obtained for the target as
    /// configured now (its registration, and the server, mode and identity its tokens go to).
    /// A state bound to anything else is never used: its tokens stay where they are and the
    /// admin must authorize again.
    fn load_authorized(
        &self,
        target: &SmtpTarget,
        binding: &Binding,
        lock: &TargetLock,
    ) -> Result<OAuth2State> {
        let name = &target.name;
        let mut state = self.store.load_locked(name, lock)?.unwrap_or_default();
        if state.refresh_token.is_none() {
            return Err(Error::NeedsReauthorization {
                target: name.to_string(),
                reason: "it has not been authorized yet (no refresh token stored)".into(),
            });
        }
        match binding.admits(&state) {
            Fit::Here => {}
            Fit::Unbound => binding.stamp(&mut state),
            Fit::Elsewhere(reason) => {
                return Err(Error::NeedsReauthorization {
                    target: name.to_string(),
                    reason: reason.into(),
                })
            }
        }
        Ok(state)
    }

    /// An access token of a flow that mints them (client credentials, service account,
    /// password): the cached one unless `force` or it is close to expiry or bound to another
    /// configuration, else a new one, cached in the state file with the current bindings.
    fn minted(
        &self,
        target: &SmtpTarget,
        secrets: &SmtpSecrets,
        binding: &Binding,
        force: bool,
        lock: &TargetLock,
    ) -> Result<AccessToken> {
        let name = &target.name;
        let mut state = self.store.load_locked(name, lock)?.unwrap_or_default();
        match binding.admits(&state) {
            Fit::Here => {}
            // nothing minted yet, or cached before bindings existed: mint anew
            Fit::Unbound => state = OAuth2State::default(),
            // the credential was last used for another configuration, and the target was
            // changed without the API (which drops the credential then): minting now would
            // send a fresh token to the new destination on the strength of an edit right
            Fit::Elsewhere(reason) => {
                return Err(Error::CredentialNotConfirmed {
                    target: name.to_string(),
                    reason: reason.into(),
                })
            }
        }
        let margin = self.settings.token_expiry_margin.as_secs() as i64;
        if !force {
            if let Some(t) = state.cached_access_token(margin) {
                return Ok(AccessToken {
                    token: t.clone(),
                    from_cache: true,
                });
            }
        }
        let minted = ClientRegistration::of_target(target, secrets)
            .and_then(|reg| self.mint(target, secrets, &reg, lock));
        binding.stamp(&mut state);
        let tokens = match minted {
            Ok(t) => t,
            Err(e) => {
                state.drop_access_token();
                state.record_failure(&e);
                // the credential's failure is what the admin must see; a failed save of the
                // record must not hide it
                let _ = self.store.save(name, &state, lock);
                return Err(e);
            }
        };
        if state.authorized_at.is_none() {
            state.authorized_at = Some(now());
        }
        state.last_refresh = Some(now());
        state.refreshed_by = Some(self.settings.node_name.clone());
        state.last_error = None;
        state.needs_reauthorization = false;
        cache_access_token(&mut state, &tokens);
        // a minted token can be minted again: if it cannot be cached, the send still goes on
        if let SaveOutcome::Kept { error, .. } = self.store.save_or_keep(name, &mut state, lock) {
            eprintln!(
                "oxnotify: target '{name}': the minted access token could not be cached: {error}"
            );
        }
        Ok(AccessToken {
            token: tokens.access_token,
            from_cache: false,
        })
    }

    /// One token request of a minting flow.
    fn mint(
        &self,
        target: &SmtpTarget,
        secrets: &SmtpSecrets,
        reg: &ClientRegistration,
        lock: &TargetLock,
    ) -> Result<TokenSet> {
        let name = &target.name;
        // a cluster lock bounds the work under it (the token request included)
        let deadline = lock.bound(self.deadline);
        match target.flow() {
            OAuth2Flow::ServiceAccount => {
                oauth2::service_account(self.http, reg, target.auth_identity(), name, deadline)
            }
            OAuth2Flow::Password => {
                let password = secrets.password.as_ref().ok_or_else(|| {
                    Error::param(
                        "password",
                        "oauth2-flow password needs the mailbox's password",
                    )
                })?;
                oauth2::password(
                    self.http,
                    reg,
                    target.auth_identity(),
                    password,
                    name,
                    deadline,
                )
            }
            _ => oauth2::client_credentials(self.http, reg, name, deadline),
        }
    }

    fn refresh_locked(
        &self,
        target: &SmtpTarget,
        secrets: &SmtpSecrets,
        state: &mut OAuth2State,
        lock: &TargetLock,
    ) -> Result<(TokenSet, Refreshed, Option<Error>)> {
        let name = &target.name;
        let old = state
            .refresh_token
            .clone()
            .ok_or_else(|| Error::NeedsReauthorization {
                target: name.clone(),
                reason: "no refresh token stored".into(),
            })?;
        // a cluster lock bounds the work under it (a token request included)
        let deadline = lock.bound(self.deadline);
        let result = ClientRegistration::of_target(target, secrets)
            .and_then(|reg| oauth2::refresh(self.http, &reg, &old, name, deadline));
        let tokens = match result {
            Ok(t) => t,
            Err(e) => {
                // the stored refresh token stays as it is: only the error is recorded
                if matches!(e, Error::NeedsReauthorization { .. }) {
                    state.needs_reauthorization = true;
                }
                state.record_failure(&e);
                if let Err(save) = self.store.save(name, state, lock) {
                    return Err(match e {
                        Error::Token {
                            target,
                            problem,
                            message,
                            retry_after,
                        } => Error::Token {
                            target,
                            problem,
                            message: format!("{message} (and recording the error failed: {save})"),
                            retry_after,
                        },
                        other => other,
                    });
                }
                return Err(e);
            }
        };
        let t = now();
        let rotated = match &tokens.refresh_token {
            Some(new) if *new != old => {
                state.refresh_token = Some(new.clone());
                state.refresh_token_issued_at = Some(t);
                state.rotations += 1;
                Refreshed::Rotated
            }
            _ => Refreshed::InPlace,
        };
        state.last_refresh = Some(t);
        state.refreshed_by = Some(self.settings.node_name.clone());
        state.last_error = None;
        state.needs_reauthorization = false;
        cache_access_token(state, &tokens);
        // the provider has issued these tokens: they are kept whatever the file system says
        match self.store.save_or_keep(name, state, lock) {
            SaveOutcome::Saved => Ok((tokens, rotated, None)),
            SaveOutcome::Kept { kept_in, error } => {
                let what = match rotated {
                    Refreshed::Rotated => {
                        "the rotated refresh token (the old one is no longer valid) and the new \
                         access token"
                    }
                    Refreshed::InPlace | Refreshed::NotDue => "the new access token",
                };
                let not_saved = Error::StateNotSaved {
                    target: name.clone(),
                    what: what.into(),
                    path: self.settings.oauth2_state_file(name),
                    reason: error.to_string(),
                    kept_in: kept_in.to_string(),
                };
                Ok((tokens, rotated, Some(not_saved)))
            }
        }
    }
}

/// True if `e` is the failure to open a lock file in a read-only or full directory.
fn lock_file_unavailable(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if crate::store::local::is_unwritable(source))
}

/// Cache the access token only when we know when it expires; without `expires_in` it is used
/// for the current send and fetched again next time. An empty token (a refresh token stored
/// by hand) is not cached.
fn cache_access_token(state: &mut OAuth2State, tokens: &TokenSet) {
    match tokens.expires_in {
        Some(d) if !tokens.access_token.is_empty() => {
            state.access_token = Some(tokens.access_token.clone());
            state.access_token_expires_at = Some(now() + d.as_secs() as i64);
        }
        _ => state.drop_access_token(),
    }
}
