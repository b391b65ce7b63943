//! Access tokens for OAuth2 targets: served from the state file's cache until shortly before
//! expiry, otherwise refreshed under the per-target lock. A rotated refresh token is written
//! to the state file (atomically, fsynced) before the new access token is used, so no rotation
//! is ever lost, even with providers that revoke the grant when an old token is replayed.

use crate::binding::Binding;
use crate::config::smtp::{OAuth2Flow, SmtpSecrets, SmtpTarget};
use crate::error::{Error, Result};
use crate::oauth2::{self, ClientRegistration, TokenHttpClient, TokenSet};
use crate::secret::Secret;
use crate::settings::Settings;
use crate::state::{now, OAuth2State, StateStore, TargetLock};
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
        let lock = self.lock(&target.name)?;
        let binding = Binding::of(target);
        if target.flow().mints() {
            return self.minted(target, secrets, &binding, force_refresh, &lock);
        }
        let mut state = self.load_authorized(target, &binding)?;
        let margin = self.settings.token_expiry_margin.as_secs() as i64;
        if !force_refresh {
            if let Some(t) = state.cached_access_token(margin) {
                return Ok(AccessToken {
                    token: t.clone(),
                    from_cache: true,
                });
            }
        }
        let (tokens, _) = self.refresh_locked(target, secrets, &mut state, &lock)?;
        Ok(AccessToken {
            token: tokens.access_token,
            from_cache: false,
        })
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
        let mut state = self.load_authorized(target, &binding)?;
        self.refresh_locked(target, secrets, &mut state, &lock)
            .map(|(_, r)| r)
    }

    /// Store a newly obtained refresh token (and the access token that came with it) as the
    /// authorization of `target` as configured now, replacing any previous state.
    pub fn store_authorization(&self, target: &SmtpTarget, tokens: &TokenSet) -> Result<()> {
        let rt = tokens
            .refresh_token
            .clone()
            .ok_or_else(|| Error::param("refresh-token", "no refresh token to store"))?;
        let binding = Binding::of(target);
        let lock = self.lock(&target.name)?;
        let mut state = OAuth2State::authorized(rt);
        state.registration_binding = binding.registration.clone();
        state.delivery_binding = Some(binding.delivery.clone());
        cache_access_token(&mut state, tokens);
        self.store.save(&target.name, &state, &lock)
    }

    /// The state of `target`, if it holds an authorization obtained for the target as
    /// configured now (its registration, and the server, mode and identity its tokens go to).
    /// A state bound to anything else is never used: its tokens stay where they are and the
    /// admin must authorize again.
    fn load_authorized(&self, target: &SmtpTarget, binding: &Binding) -> Result<OAuth2State> {
        let name = &target.name;
        let mut state = self.store.load(name)?.unwrap_or_default();
        if state.refresh_token.is_none() {
            return Err(Error::NeedsReauthorization {
                target: name.to_string(),
                reason: "it has not been authorized yet (no refresh token stored)".into(),
            });
        }
        if state.registration_binding.is_none() && state.delivery_binding.is_none() {
            // written before bindings existed: it belongs to the target it is used with
            state.registration_binding = binding.registration.clone();
            state.delivery_binding = Some(binding.delivery.clone());
        }
        let same_registration =
            binding.registration.is_some() && state.registration_binding == binding.registration;
        let same_delivery = state.delivery_binding.as_deref() == Some(binding.delivery.as_str());
        match (same_registration, same_delivery) {
            (true, true) => {}
            (false, _) => {
                return Err(Error::NeedsReauthorization {
                    target: name.to_string(),
                    reason: "its OAuth2 settings (auth method, client ID, tenant, endpoints or \
                             scope) changed since it was authorized, so the stored \
                             authorization is not used with them"
                        .into(),
                })
            }
            (true, false) => {
                return Err(Error::NeedsReauthorization {
                    target: name.to_string(),
                    reason: "its SMTP server, port, mode or identity changed since it was \
                             authorized, so its tokens are not sent there"
                        .into(),
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
        let mut state = self.store.load(name)?.unwrap_or_default();
        let bound_here = binding.registration.is_some()
            && state.registration_binding == binding.registration
            && state.delivery_binding.as_deref() == Some(binding.delivery.as_str());
        if !bound_here {
            // whatever is stored belongs to another configuration: it is never sent here
            state = OAuth2State::default();
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
            .and_then(|reg| self.mint(target, secrets, &reg));
        state.registration_binding = binding.registration.clone();
        state.delivery_binding = Some(binding.delivery.clone());
        let tokens = match minted {
            Ok(t) => t,
            Err(e) => {
                state.drop_access_token();
                state.record_error(&e.to_string());
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
        state.last_error = None;
        state.needs_reauthorization = false;
        cache_access_token(&mut state, &tokens);
        self.store.save(name, &state, lock)?;
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
    ) -> Result<TokenSet> {
        let name = &target.name;
        match target.flow() {
            OAuth2Flow::ServiceAccount => {
                oauth2::service_account(self.http, reg, target.auth_identity(), name, self.deadline)
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
                    self.deadline,
                )
            }
            _ => oauth2::client_credentials(self.http, reg, name, self.deadline),
        }
    }

    fn refresh_locked(
        &self,
        target: &SmtpTarget,
        secrets: &SmtpSecrets,
        state: &mut OAuth2State,
        lock: &TargetLock,
    ) -> Result<(TokenSet, Refreshed)> {
        let name = &target.name;
        let old = state
            .refresh_token
            .clone()
            .ok_or_else(|| Error::NeedsReauthorization {
                target: name.clone(),
                reason: "no refresh token stored".into(),
            })?;
        let result = ClientRegistration::of_target(target, secrets)
            .and_then(|reg| oauth2::refresh(self.http, &reg, &old, name, self.deadline));
        let tokens = match result {
            Ok(t) => t,
            Err(e) => {
                // the stored refresh token stays as it is: only the error is recorded
                if matches!(e, Error::NeedsReauthorization { .. }) {
                    state.needs_reauthorization = true;
                }
                state.record_error(&e.to_string());
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
        state.last_error = None;
        state.needs_reauthorization = false;
        cache_access_token(state, &tokens);
        self.store.save(name, state, lock).map_err(|e| Error::Io {
            path: self.settings.oauth2_state_file(name),
            source: std::io::Error::other(if rotated == Refreshed::Rotated {
                format!(
                    "the provider rotated the refresh token but it could not be saved ({e}); \
                     fix the state directory and re-authorize if the next refresh fails"
                )
            } else {
                format!("saving the refreshed token failed: {e}")
            }),
        })?;
        Ok((tokens, rotated))
    }
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
