//! # notify-core
//!
//! Notification delivery for Perl-based server management stacks, with SMTP targets that
//! authenticate with OAuth2 (SASL XOAUTH2) as well as none / PLAIN / LOGIN.
//!
//! One room per concern, arrows pointing down:
//! [`store`] (local or cluster files and locks) <- [`config`] (targets, public + private
//! file) <- [`state`] (per-target OAuth2 state) <- [`binding`] (what stored secrets belong
//! to) <- [`oauth2`] (providers, flows) <- [`tokens`] (cached access tokens, refresh,
//! minting) <- [`delivery`] (sessions, slots, retries, outbox) <- [`status`] <- [`alerts`]
//! (second-channel alerts; delivery and refresh call its one hook after a failure) <-
//! [`refresh`] and [`authorization`]. [`Notifier`] only hands out the services: [`Notifier::delivery`],
//! [`Notifier::authorization`], [`Notifier::refresh`], [`Notifier::status`],
//! [`Notifier::alerts`] and [`Notifier::tokens`]; [`api`] is the management front door (list/get/create/update/delete/
//! test) that the Perl binding and the broker share.
//!
//! Locking: config writers hold [`config::ConfigLock`]; token refreshes and state writes hold
//! the per-target lock inside [`tokens::TokenManager`], so any number of processes may send
//! and refresh at once without losing a rotated refresh token. Both are [`store::StoreLock`]s:
//! `flock` in the local store, lock directories in the cluster store (several nodes sharing one
//! state directory; see [`state`] for its guarantees and the window no client can close).

pub mod alerts;
pub mod api;
pub mod authorization;
pub mod binding;
pub mod config;
pub mod context;
pub mod delivery;
pub mod digest;
pub mod error;
pub mod notification;
pub mod oauth2;
pub mod redact;
pub mod refresh;
pub mod secret;
pub mod settings;
pub mod state;
pub mod status;
pub mod store;
pub mod tokens;

pub use authorization::{Authorizer, CodeExchange};
pub use config::smtp::{AuthMethod, SmtpMode, SmtpSecrets, SmtpTarget};
pub use config::NotificationConfig;
pub use context::Context;
pub use delivery::{Deliverer, Delivery, FailureWatch, FlushReport, SendReport, Verification};
pub use error::{Error, ErrorKind, GraphProblem, Result, SmtpStep, TokenProblem};
pub use notification::{Notification, Severity};
pub use refresh::{DailyRun, RefreshOutcome, RefreshReport, Refresher};
pub use secret::Secret;
pub use settings::Settings;
pub use status::{Forecast, ForecastKind, StatusReader, TargetStatus};

use oauth2::{LazyHttp, TokenHttpClient};
use std::sync::Arc;
use tokens::TokenManager;

/// The entry point: settings plus the HTTP client for token requests. It holds nothing else
/// and only hands out the services, each a short-lived borrow of the two.
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
    /// A notifier with the default HTTP client (ureq, system trust store), built on its first
    /// token request: a send with a cached token or a password makes none.
    pub fn new(settings: Settings) -> Result<Self> {
        let http = LazyHttp::new(&settings);
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

    /// Access tokens of targets (the token broker, `oxnotify token`).
    pub fn tokens(&self) -> TokenManager<'_> {
        TokenManager::new(&self.settings, self.http.as_ref())
    }

    /// Sending notifications and the outbox; a target that fails alerts through its
    /// `alert-target` ([`alerts`]).
    pub fn delivery(&self) -> Deliverer<'_> {
        Deliverer::new(&self.settings, self.http.as_ref()).watched_by(&alerts::ALERT_ON_FAILURE)
    }

    /// Authorizing targets: code flow with PKCE, device flow, stored refresh tokens.
    pub fn authorization(&self) -> Authorizer<'_> {
        Authorizer::new(&self.settings, self.http.as_ref())
    }

    /// Refreshing stored authorizations, and the daily run.
    pub fn refresh(&self) -> Refresher<'_> {
        Refresher::new(&self.settings, self.http.as_ref())
    }

    /// The health of targets.
    pub fn status(&self) -> StatusReader<'_> {
        StatusReader::new(&self.settings)
    }

    /// Alerts about failing targets through their `alert-target`.
    pub fn alerts(&self) -> alerts::Alerter<'_> {
        alerts::Alerter::new(&self.settings, self.http.as_ref())
    }
}
