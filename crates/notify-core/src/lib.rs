//! # notify-core
//!
//! Notification delivery for Perl-based server management stacks, with SMTP targets that
//! authenticate with OAuth2 (SASL XOAUTH2) as well as none / PLAIN / LOGIN.
//!
//! The modules build on each other in one direction:
//! [`config`] (targets, public + private file) -> [`state`] (per-target OAuth2 state files)
//! -> [`oauth2`] (providers, flows) -> [`tokens`] (cached access tokens, refresh, rotation)
//! -> [`smtp`] (sessions) -> [`delivery`] (deadline, [`slots`], retries, the [`outbox`]).
//! [`Notifier`] ties them together for the Perl binding and the daily job: [`Notifier::send`],
//! [`Notifier::send_burst`], [`Notifier::flush_outbox`], [`Notifier::refresh_targets`],
//! [`Notifier::exchange_smtp_oauth2_code`], [`Notifier::authorize_url`],
//! [`Notifier::target_status`].
//!
//! Locking: config writers hold [`config::ConfigLock`]; token refreshes and state writes hold
//! the per-target lock inside [`tokens::TokenManager`], so any number of processes may send
//! and refresh at once without losing a rotated refresh token. Both locks are [`lock::StoreLock`]s:
//! `flock` in the local store, lock directories in the cluster store (several nodes sharing one
//! state directory; see [`state`] for its guarantees and the window no client can close).

pub mod api;
pub mod binding;
pub mod config;
pub mod delivery;
pub mod error;
pub mod fsutil;
pub mod lock;
pub mod notification;
pub mod oauth2;
pub mod outbox;
pub mod pending;
pub mod redact;
pub mod secret;
pub mod settings;
pub mod slots;
pub mod smtp;
pub mod state;
pub mod status;
pub mod tokens;

pub use config::smtp::{AuthMethod, SmtpMode, SmtpSecrets, SmtpTarget};
pub use config::NotificationConfig;
pub use delivery::{Delivery, FlushReport, SendReport};
pub use error::{Error, ErrorKind, Result, SmtpStep, TokenProblem};
pub use notification::{Notification, Severity};
pub use secret::Secret;
pub use settings::Settings;
pub use status::TargetStatus;

use oauth2::{AuthorizeRequest, ClientRegistration, EndpointParams, TokenHttpClient, UreqClient};
use serde::Serialize;
use state::StateStore;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokens::{Refreshed, TokenManager};

/// Parameters of an authorization-code exchange (the `smtp-oauth2-token` API call).
#[derive(Debug, Clone)]
pub struct CodeExchange<'a> {
    /// OAuth2 auth method (selects the provider).
    pub auth_method: AuthMethod,
    /// Client (application) ID.
    pub client_id: &'a str,
    /// Client secret, if the app has one.
    pub client_secret: Option<Secret>,
    /// The code from the provider's redirect.
    pub code: &'a str,
    /// The redirect URI used in the authorize request.
    pub redirect_uri: &'a str,
    /// The PKCE verifier of the authorize request.
    pub pkce_verifier: Option<Secret>,
    /// Microsoft tenant and the authorize/token URL and scope overrides (generic provider,
    /// sovereign clouds, tests).
    pub endpoints: EndpointParams<'a>,
    /// If set, the new authorization is stored in this target's state.
    pub target: Option<&'a str>,
}

/// Outcome of refreshing one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefreshOutcome {
    /// Refreshed; the refresh token stayed the same.
    Refreshed,
    /// Refreshed; the provider rotated the refresh token and the new one is stored.
    Rotated,
    /// Cluster store: a node refreshed it within the refresh window; nothing to do.
    NotDue,
    /// The provider rejected the refresh token: the admin must authorize again.
    NeedsReauthorization,
    /// The app registration, the target's config or the provider settings need an admin's fix
    /// before a refresh can work (retrying does not help).
    NeedsAdminFix,
    /// A network problem, timeout or provider outage: the next run will try again.
    Transient,
    /// A local fault (state file, file system): see the error.
    Failed,
}

impl RefreshOutcome {
    /// The outcome for a refresh that failed with `e`.
    pub fn of_error(e: &Error) -> Self {
        match e.kind() {
            ErrorKind::NeedsReauthorization => RefreshOutcome::NeedsReauthorization,
            ErrorKind::Transient => RefreshOutcome::Transient,
            ErrorKind::NeedsAdminFix | ErrorKind::InvalidInput => RefreshOutcome::NeedsAdminFix,
            ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Internal => {
                RefreshOutcome::Failed
            }
        }
    }
}

/// Report for one target of [`Notifier::refresh_targets`].
#[derive(Debug, Clone, Serialize)]
pub struct RefreshReport {
    /// Target name.
    pub target: String,
    /// What happened.
    pub outcome: RefreshOutcome,
    /// The error, if any (secret-free).
    pub error: Option<String>,
    /// The error's kind, if any (what must happen next).
    pub kind: Option<ErrorKind>,
    /// The target's health after the refresh (absent if its config is invalid).
    pub status: Option<TargetStatus>,
}

/// The entry point: settings plus the HTTP client for token requests.
pub struct Notifier {
    settings: Settings,
    http: Arc<dyn TokenHttpClient>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier with the default HTTP client (ureq, system trust store).
    pub fn new(settings: Settings) -> Result<Self> {
        let http = UreqClient::new(&settings)
            .map_err(|e| Error::token(None, error::TokenProblem::Setup, e.to_string()))?;
        Ok(Self::with_http_client(settings, Arc::new(http)))
    }

    /// A notifier with a caller-supplied HTTP client (instrumentation, tests).
    pub fn with_http_client(settings: Settings, http: Arc<dyn TokenHttpClient>) -> Self {
        Notifier { settings, http }
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Read the config.
    pub fn load_config(&self) -> Result<NotificationConfig> {
        NotificationConfig::load(&self.settings)
    }

    pub(crate) fn tokens(&self) -> TokenManager<'_> {
        TokenManager::new(&self.settings, self.http.as_ref())
    }

    /// Run a refresh grant for every enabled OAuth2 target, a few at a time, and report each.
    /// Failures are recorded in the target's state and do not stop the others. The daily job
    /// calls this (holding the config lock so it does not race with config edits).
    pub fn refresh_targets(&self) -> Result<Vec<RefreshReport>> {
        self.refresh_configured(&self.load_config()?)
    }

    /// [`Notifier::refresh_targets`] over a config the caller has read (so that it need not
    /// hold the config lock through the network requests).
    pub fn refresh_configured(&self, config: &NotificationConfig) -> Result<Vec<RefreshReport>> {
        let names: Vec<String> = config
            .smtp_targets()
            .into_iter()
            .filter(|(_, t)| match t {
                Ok(t) => t.auth_method.is_oauth2() && !t.disable,
                Err(_) => true, // reported as failed
            })
            .map(|(n, _)| n)
            .collect();
        let next = AtomicUsize::new(0);
        let reports = Mutex::new(Vec::with_capacity(names.len()));
        let workers = self
            .settings
            .refresh_parallelism
            .clamp(1, names.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(name) = names.get(i) else { break };
                    let report = self.refresh_one(config, name);
                    if let Ok(mut r) = reports.lock() {
                        r.push((i, report));
                    }
                });
            }
        });
        let mut reports = reports.into_inner().unwrap_or_else(|p| p.into_inner());
        reports.sort_by_key(|(i, _)| *i);
        Ok(reports.into_iter().map(|(_, r)| r).collect())
    }

    fn refresh_one(&self, config: &NotificationConfig, name: &str) -> RefreshReport {
        let result = config.smtp_target(name).and_then(|t| {
            let secrets = config.smtp_secrets(name)?;
            Ok((self.tokens().refresh_if_due(&t, &secrets), t))
        });
        let (outcome, error, target) = match result {
            Err(e) => (RefreshOutcome::of_error(&e), Some(e), None),
            Ok((Ok(Refreshed::InPlace), t)) => (RefreshOutcome::Refreshed, None, Some(t)),
            Ok((Ok(Refreshed::Rotated), t)) => (RefreshOutcome::Rotated, None, Some(t)),
            Ok((Ok(Refreshed::NotDue), t)) => (RefreshOutcome::NotDue, None, Some(t)),
            Ok((Err(e), t)) => (RefreshOutcome::of_error(&e), Some(e), Some(t)),
        };
        let status = target.and_then(|t| self.status_of(&t).ok());
        RefreshReport {
            target: name.to_string(),
            outcome,
            kind: error.as_ref().map(Error::kind),
            error: error.map(|e| e.to_string()),
            status,
        }
    }

    /// OAuth2 health of target `name` (404 if missing; 400 if not an OAuth2 target).
    pub fn target_status(&self, name: &str) -> Result<TargetStatus> {
        let target = self.load_config()?.smtp_target(name)?;
        if !target.auth_method.is_oauth2() {
            return Err(Error::param(
                "target",
                format!(
                    "target '{name}' does not use OAuth2 (auth-method {})",
                    target.auth_method.as_str()
                ),
            ));
        }
        self.status_of(&target)
    }

    fn status_of(&self, target: &SmtpTarget) -> Result<TargetStatus> {
        let state = StateStore::new(&self.settings).load(&target.name)?;
        let mut status = TargetStatus::of(target, state.as_ref());
        if self.settings.store == settings::StoreKind::Cluster {
            status.note_cluster_writable(lock::cluster::probe_writable(&self.settings));
        }
        let outbox = outbox::status(&self.settings, &target.name);
        // a waiting or lost notification matters more than a later token expiry
        if let Some(w) = &outbox.warning {
            status.warning = Some(match status.warning.take() {
                Some(t) => format!("{w}; {t}"),
                None => w.clone(),
            });
        }
        status.outbox = Some(outbox);
        Ok(status)
    }

    /// The outbox of target `name` (any auth method; 404 if the target does not exist).
    pub fn outbox_status(&self, name: &str) -> Result<outbox::OutboxStatus> {
        self.load_config()?.smtp_target(name)?;
        Ok(outbox::status(&self.settings, name))
    }

    /// The authorize URL for configured target `name`, with fresh `state` and PKCE verifier.
    /// The caller keeps both until the redirect comes back.
    pub fn authorize_url(&self, name: &str, redirect_uri: &str) -> Result<AuthorizeRequest> {
        let config = self.load_config()?;
        let target = config.smtp_target(name)?;
        let secrets = config.smtp_secrets(name)?;
        oauth2::flow::interactive_flow_only(&target)?;
        let reg = ClientRegistration::of_target(&target, &secrets)?;
        oauth2::authorize_url(&reg, redirect_uri, Some(target.auth_identity()))
    }

    /// Exchange an authorization code for a refresh token (backend side, as Microsoft
    /// requires for Web apps). With `req.target` set, the target must exist and the request
    /// must describe its registration (parameters left out are taken from the target); the
    /// new authorization is then stored in the target's state, bound to that registration.
    /// Without a target only the provider table's endpoints are used (a caller cannot make
    /// the server send a code and client secret to a URL of its choosing); the generic
    /// provider therefore needs a target.
    pub fn exchange_smtp_oauth2_code(&self, req: &CodeExchange<'_>) -> Result<Secret> {
        let target = match req.target {
            Some(t) => {
                config::validate::target_name(t).map_err(|m| Error::param("target", m))?;
                let config = self.load_config()?;
                Some((config.smtp_target(t)?, config.smtp_secrets(t)?))
            }
            None => None,
        };
        let reg = match &target {
            Some((t, secrets)) => {
                oauth2::flow::interactive_flow_only(t)?;
                let mut reg = Self::registration_for(req, t)?;
                // the code goes to the token endpoint authenticated as the target is configured
                reg.apply_client_auth(t, secrets);
                reg
            }
            None => {
                for (param, given) in [
                    ("token-url", req.endpoints.token_url),
                    ("authorize-url", req.endpoints.authorize_url),
                    ("scope", req.endpoints.scope),
                ] {
                    if given.is_some_and(|v| !v.is_empty()) {
                        return Err(Error::param(
                            param,
                            "only allowed together with 'target' (the target's configured value \
                             is used); without a target the provider's own endpoints apply",
                        ));
                    }
                }
                if req.auth_method == AuthMethod::OAuth2 {
                    return Err(Error::param(
                        "target",
                        "the generic oauth2 method needs the target whose token URL and scope \
                         to use: create the target first",
                    ));
                }
                ClientRegistration::new(
                    req.auth_method,
                    req.client_id,
                    req.client_secret.clone(),
                    &req.endpoints,
                )?
            }
        };
        let tokens = oauth2::exchange_code(
            self.http.as_ref(),
            &reg,
            req.code,
            req.redirect_uri,
            req.pkce_verifier.as_ref(),
            std::time::Instant::now() + self.settings.http_timeout,
        )?;
        if let Some((t, _)) = &target {
            self.tokens().store_authorization(t, &tokens)?;
        }
        tokens.refresh_token.ok_or_else(|| {
            Error::token(
                None,
                error::TokenProblem::NoRefreshToken,
                "no refresh token issued",
            )
        })
    }

    /// The registration of an exchange for configured `target`: the request's values where
    /// given, else the target's; 400 unless the result is the target's registration.
    fn registration_for(req: &CodeExchange<'_>, target: &SmtpTarget) -> Result<ClientRegistration> {
        if !target.auth_method.is_oauth2() {
            return Err(Error::param(
                "target",
                format!("target '{}' does not use OAuth2", target.name),
            ));
        }
        let configured = EndpointParams::of_target(target);
        let params = EndpointParams {
            tenant_id: req.endpoints.tenant_id.or(configured.tenant_id),
            authorize_url: req.endpoints.authorize_url.or(configured.authorize_url),
            token_url: req.endpoints.token_url.or(configured.token_url),
            scope: req.endpoints.scope.or(configured.scope),
            flow: configured.flow,
            device_authorize_url: configured.device_authorize_url,
        };
        let client_id = if req.client_id.is_empty() {
            target.oauth2_client_id.as_deref().unwrap_or_default()
        } else {
            req.client_id
        };
        let reg = ClientRegistration::new(
            req.auth_method,
            client_id,
            req.client_secret.clone(),
            &params,
        )?;
        let mut as_requested = target.clone();
        as_requested.auth_method = req.auth_method;
        as_requested.oauth2_client_id = Some(client_id.to_string());
        as_requested.oauth2_tenant_id = params.tenant_id.map(str::to_string);
        as_requested.oauth2_authorize_url = params.authorize_url.map(str::to_string);
        as_requested.oauth2_token_url = params.token_url.map(str::to_string);
        as_requested.oauth2_scope = params.scope.map(str::to_string);
        if binding::Binding::of(&as_requested).registration_changed(&binding::Binding::of(target)) {
            return Err(Error::param(
                "target",
                format!(
                    "the request's auth method, client ID, tenant or endpoints differ from target \
                     '{}': update the target first, then authorize it",
                    target.name
                ),
            ));
        }
        Ok(reg)
    }

    /// Start a device authorization for target `name` (`oauth2-flow device-code`): the
    /// verification URL and user code to show, and the provider's answer for
    /// [`Notifier::device_authorization_finish`].
    pub fn device_authorization_start(&self, name: &str) -> Result<oauth2::DeviceAuthorization> {
        let config = self.load_config()?;
        let target = config.smtp_target(name)?;
        let reg = self.device_registration(&config, &target)?;
        oauth2::device_start(
            self.http.as_ref(),
            &reg,
            std::time::Instant::now() + self.settings.http_timeout,
        )
    }

    /// Poll (for at most `max_wait`) until the device authorization `details` of target
    /// `name`, issued at `started` (Unix seconds), is approved, and store the resulting refresh
    /// token, bound to the target as configured now. `Ok(false)`: still waiting for the user.
    pub fn device_authorization_finish(
        &self,
        name: &str,
        details: &Secret,
        started: i64,
        max_wait: std::time::Duration,
    ) -> Result<bool> {
        let config = self.load_config()?;
        let target = config.smtp_target(name)?;
        let reg = self.device_registration(&config, &target)?;
        let Some(tokens) =
            oauth2::device_finish(self.http.as_ref(), &reg, details, started, max_wait, name)?
        else {
            return Ok(false);
        };
        if tokens.refresh_token.is_none() {
            return Err(Error::token(
                Some(name),
                error::TokenProblem::NoRefreshToken,
                "the provider issued no refresh token: the scope must include offline access \
                 (Microsoft: offline_access)",
            ));
        }
        self.tokens().store_authorization(&target, &tokens)?;
        Ok(true)
    }

    fn device_registration(
        &self,
        config: &NotificationConfig,
        target: &SmtpTarget,
    ) -> Result<ClientRegistration> {
        if !target.auth_method.is_oauth2() || target.flow() != config::smtp::OAuth2Flow::DeviceCode
        {
            return Err(Error::param(
                "target",
                format!(
                    "target '{}' does not use oauth2-flow device-code",
                    target.name
                ),
            ));
        }
        let secrets = config.smtp_secrets(&target.name)?;
        ClientRegistration::of_target(target, &secrets)
    }

    /// Store a refresh token obtained elsewhere (the `oauth2-refresh-token` parameter of
    /// create/update) as the authorization of `target` as configured now.
    pub fn store_refresh_token(&self, target: &SmtpTarget, refresh_token: Secret) -> Result<()> {
        if refresh_token.is_empty() || refresh_token.expose().chars().any(char::is_control) {
            return Err(Error::param(
                "oauth2-refresh-token",
                "empty or contains control characters",
            ));
        }
        self.tokens().store_authorization(
            target,
            &oauth2::TokenSet {
                access_token: Secret::new(""),
                expires_in: None,
                refresh_token: Some(refresh_token),
            },
        )
    }
}
