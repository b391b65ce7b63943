//! The refresh of stored authorizations: one target ([`Refresher::target`]), every OAuth2
//! target a few at a time ([`Refresher::configured`]), and the daily run the daily job makes
//! ([`Refresher::daily`]: one run at a time, one config read, the refresh, the outbox flush
//! and every warning an admin must see, in one report).

use crate::alerts::{AlertReport, Alerter};
use crate::config::NotificationConfig;
use crate::config::{smtp::SmtpTarget, ConfigLock};
use crate::delivery::{Deliverer, FlushReport};
use crate::error::{Error, ErrorKind, Result};
use crate::oauth2::TokenHttpClient;
use crate::settings::Settings;
use crate::status::{first_warning, StatusReader, TargetStatus};
use crate::store::Access;
use crate::tokens::{Refreshed, TokenManager};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Outcome of refreshing one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
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
            _ => RefreshOutcome::Failed,
        }
    }
}

/// Report for one target of a refresh.
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
    /// The alert a failed refresh sent through the target's `alert-target`, if one was due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertReport>,
}

/// What one daily run did.
#[derive(Debug, Serialize)]
pub struct DailyRun {
    /// Another run held the daily lock for longer than the caller would wait: nothing done.
    pub busy: bool,
    /// Who holds the daily lock, when `busy` (pid or node, since when).
    pub holder: Option<String>,
    /// For how long the holder has held it, when `busy` and known (a run that holds it for
    /// hours is stuck, and the job must say so rather than skip quietly).
    pub held_for_secs: Option<u64>,
    /// One report per OAuth2 target.
    pub reports: Vec<RefreshReport>,
    /// Malformed config lines that belong to no target (file and line, never their text).
    pub problems: Vec<String>,
    /// Warnings of targets that were not refreshed (no OAuth2: an insecure password login, a
    /// waiting outbox), as (target, warning).
    pub warnings: Vec<(String, String)>,
    /// What the outbox flush did, one report per target with an outbox.
    pub flush: Vec<FlushReport>,
    /// Alerts sent (or failed) through targets' `alert-target`s, one report per target whose
    /// check alerted or noted a recovery.
    pub alerts: Vec<AlertReport>,
}

/// Refreshes stored authorizations ([`crate::Notifier::refresh`]).
pub struct Refresher<'a> {
    settings: &'a Settings,
    http: &'a dyn TokenHttpClient,
}

impl<'a> Refresher<'a> {
    /// A refresher with these settings, making token requests with `http`.
    pub fn new(settings: &'a Settings, http: &'a dyn TokenHttpClient) -> Self {
        Refresher { settings, http }
    }

    /// Run a refresh grant for every enabled OAuth2 target of the config now on disk.
    pub fn all(&self) -> Result<Vec<RefreshReport>> {
        Ok(self.configured(&NotificationConfig::load(self.settings)?))
    }

    /// Run a refresh grant for every enabled OAuth2 target of `config`, a few at a time
    /// ([`Settings::refresh_parallelism`]), and report each. Failures are recorded in the
    /// target's state and do not stop the others.
    pub fn configured(&self, config: &NotificationConfig) -> Vec<RefreshReport> {
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
                    let report = self.target(config, name);
                    if let Ok(mut r) = reports.lock() {
                        r.push((i, report));
                    }
                });
            }
        });
        let mut reports = reports.into_inner().unwrap_or_else(|p| p.into_inner());
        reports.sort_by_key(|(i, _)| *i);
        reports.into_iter().map(|(_, r)| r).collect()
    }

    /// Refresh target `name` of `config` (in a shared store only if no node did within the
    /// refresh window), and report it with its health afterwards.
    pub fn target(&self, config: &NotificationConfig, name: &str) -> RefreshReport {
        let tokens = TokenManager::new(self.settings, self.http);
        let result = config.smtp_target(name).and_then(|t| {
            let secrets = config.smtp_secrets(name)?;
            Ok((tokens.refresh_if_due(&t, &secrets), t))
        });
        let (outcome, error, target) = match result {
            Err(e) => (RefreshOutcome::of_error(&e), Some(e), None),
            Ok((Ok(Refreshed::InPlace), t)) => (RefreshOutcome::Refreshed, None, Some(t)),
            Ok((Ok(Refreshed::Rotated), t)) => (RefreshOutcome::Rotated, None, Some(t)),
            Ok((Ok(Refreshed::NotDue), t)) => (RefreshOutcome::NotDue, None, Some(t)),
            Ok((Err(e), t)) => (RefreshOutcome::of_error(&e), Some(e), Some(t)),
        };
        let alert = if matches!(
            outcome,
            RefreshOutcome::NeedsReauthorization | RefreshOutcome::NeedsAdminFix
        ) {
            let deadline = Instant::now() + self.settings.caller_wait;
            let cause = error.as_ref();
            crate::alerts::after_failure(self.settings, self.http, config, name, cause, deadline)
        } else {
            None
        };
        let status = target.and_then(|t| StatusReader::new(self.settings).of(&t).ok());
        RefreshReport {
            target: name.to_string(),
            outcome,
            kind: error.as_ref().map(Error::kind),
            error: error.map(|e| e.to_string()),
            status,
            alert,
        }
    }

    /// The daily run. One at a time (per node): waits up to `lock_timeout` for another run to
    /// end and reports `busy` with the holder if it is still running then. The config is read
    /// once, under the config lock only while it is read (config edits never wait for the
    /// network); then every OAuth2 target is refreshed and every outbox flushed.
    pub fn daily(&self, lock_timeout: Duration) -> Result<DailyRun> {
        self.run(lock_timeout, true)
    }

    /// [`Refresher::daily`] without the outbox flush (`oxnotify refresh`).
    pub fn locked(&self, lock_timeout: Duration) -> Result<DailyRun> {
        self.run(lock_timeout, false)
    }

    fn run(&self, lock_timeout: Duration, flush: bool) -> Result<DailyRun> {
        let settings = self.settings;
        let store = settings.store();
        store.ensure_dir(&settings.state_dir, Access::Private, false)?;
        let deadline = Instant::now() + lock_timeout;
        let (lock_file, lock_name) = (
            settings.daily_lock_file(),
            format!("daily-{}", settings.node_name),
        );
        // a read-only shared file system fails here, before any token request
        let _run = match store.lock_until(
            &lock_file,
            &lock_name,
            deadline,
            "the daily refresh of this node",
        ) {
            Ok(l) => l,
            Err(Error::LockTimeout { holder, .. }) => {
                return Ok(DailyRun {
                    busy: true,
                    holder,
                    held_for_secs: store.held_for(&lock_file, &lock_name).map(|d| d.as_secs()),
                    reports: Vec::new(),
                    problems: NotificationConfig::load(settings)
                        .map(|c| config_problems(&c))
                        .unwrap_or_default(),
                    warnings: Vec::new(),
                    flush: Vec::new(),
                    alerts: Vec::new(),
                })
            }
            Err(e) => return Err(e),
        };
        let config = {
            let _read = ConfigLock::acquire(settings)?;
            NotificationConfig::load(settings)?
        };
        let reports = self.configured(&config);
        let warnings = config
            .smtp_targets()
            .into_iter()
            .filter(|(name, _)| !reports.iter().any(|r| &r.target == name))
            .filter_map(|(name, t)| {
                let t: SmtpTarget = t.ok()?;
                let outbox = crate::delivery::outbox::status(settings, &name);
                first_warning(outbox.warning, t.insecure_auth_warning()).map(|w| (name, w))
            })
            .collect();
        let flush = if flush {
            Deliverer::new(settings, self.http)
                .watched_by(&crate::alerts::ALERT_ON_FAILURE)
                .flush_configured(&config)
        } else {
            Vec::new()
        };
        // after the refresh and the flush: alerts say what is still wrong, and what is fixed
        let alerts = reports
            .iter()
            .filter_map(|r| r.alert.clone())
            .chain(Alerter::new(settings, self.http).check_configured(&config))
            .collect();
        Ok(DailyRun {
            busy: false,
            holder: None,
            held_for_secs: None,
            reports,
            problems: config_problems(&config),
            warnings,
            flush,
            alerts,
        })
    }
}

/// The config's problems as messages (see [`NotificationConfig::problems`]).
pub fn config_problems(config: &NotificationConfig) -> Vec<String> {
    config.problems().iter().map(ToString::to_string).collect()
}
