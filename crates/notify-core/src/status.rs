//! Health of an OAuth2 target, derived from its state file and the provider's documented
//! token lifetimes: when it was authorized and refreshed, how old the refresh token is, when
//! it probably expires, and a concrete warning before it does.

use crate::config::smtp::SmtpTarget;
use crate::config::NotificationConfig;
use crate::delivery::outbox::{self, OutboxStatus};
use crate::error::{Error, Result};
use crate::oauth2::provider;
use crate::settings::Settings;
use crate::state::{now, LastError, OAuth2State, StateStore};
use serde::Serialize;

/// Reads the health of targets ([`crate::Notifier::status`]).
pub struct StatusReader<'a> {
    settings: &'a Settings,
}

impl<'a> StatusReader<'a> {
    /// A reader over the files of `settings`.
    pub fn new(settings: &'a Settings) -> Self {
        StatusReader { settings }
    }

    /// OAuth2 health of target `name` (404 if missing; 400 if not an OAuth2 target).
    pub fn target(&self, name: &str) -> Result<TargetStatus> {
        let target = NotificationConfig::load(self.settings)?.smtp_target(name)?;
        if !target.auth_method.is_oauth2() {
            return Err(Error::param(
                "target",
                format!(
                    "target '{name}' does not use OAuth2 (auth-method {})",
                    target.auth_method.as_str()
                ),
            ));
        }
        self.of(&target)
    }

    /// The health of configured `target`: its state, the store's writability (shared store)
    /// and its outbox, whose warning (a waiting or lost notification) comes first.
    pub fn of(&self, target: &SmtpTarget) -> Result<TargetStatus> {
        let store = StateStore::new(self.settings);
        let state = store.load(&target.name)?;
        let mut status = TargetStatus::of(target, state.as_ref());
        if store.store().is_shared() {
            status.note_cluster_writable(store.store().probe_writable());
        }
        let outbox = outbox::status(self.settings, &target.name);
        status.warning = first_warning(outbox.warning.clone(), status.warning.take());
        status.forecast.extend(outbox_forecast(&outbox));
        status.outbox = Some(outbox);
        Ok(status)
    }

    /// The outbox of target `name` (any auth method; 404 if the target does not exist).
    pub fn outbox(&self, name: &str) -> Result<OutboxStatus> {
        NotificationConfig::load(self.settings)?.smtp_target(name)?;
        Ok(outbox::status(self.settings, name))
    }
}

/// Two warnings as one, the more urgent first.
pub fn first_warning(urgent: Option<String>, other: Option<String>) -> Option<String> {
    match (urgent, other) {
        (Some(u), Some(o)) => Some(format!("{u}; {o}")),
        (u, o) => u.or(o),
    }
}

/// Warn this many days before a refresh token's estimated expiry.
pub const EXPIRY_WARNING_DAYS: i64 = 14;
const DAY: i64 = 86_400;

/// OAuth2 health of a target. Never contains a token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TargetStatus {
    /// Target name.
    pub target: String,
    /// Auth method.
    pub auth_method: &'static str,
    /// A refresh token is stored.
    pub authorized: bool,
    /// When the admin authorized.
    pub authorized_at: Option<i64>,
    /// Last successful refresh.
    pub last_refresh: Option<i64>,
    /// When the current refresh token was issued.
    pub refresh_token_issued_at: Option<i64>,
    /// Age of the current refresh token in days.
    pub refresh_token_age_days: Option<i64>,
    /// Rotations since authorization.
    pub rotations: u64,
    /// Estimated expiry of the refresh token, if the provider documents its lifetime.
    pub estimated_expiry: Option<i64>,
    /// A cached access token is valid until then.
    pub access_token_valid_until: Option<i64>,
    /// The provider said the grant is gone.
    pub needs_reauthorization: bool,
    /// Last error.
    pub last_error: Option<LastError>,
    /// What the admin should do, if anything.
    pub warning: Option<String>,
    /// The target's outbox: queue depth, oldest age, messages given up.
    pub outbox: Option<OutboxStatus>,
    /// The node that made the last successful refresh (cluster store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh_by: Option<String>,
    /// Cluster store: whether the shared file system takes writes now (absent: local store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_writable: Option<bool>,
    /// What is coming or already wrong, each with a ready sentence ("client secret expires in
    /// 12 day(s) ..."); the ones marked `alert` are what [`crate::alerts`] reports.
    pub forecast: Vec<Forecast>,
    /// Where alerts about this target go (`alert-target`: a target or `sendmail`), if set.
    pub alert_target: Option<String>,
}

/// What a [`Forecast`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ForecastKind {
    /// The provider rejected the grant, or the target changed since it was authorized.
    NeedsReauthorization,
    /// The app registration, the target or the provider needs an admin's fix.
    NeedsAdminFix,
    /// The refresh token reaches its documented end soon.
    RefreshTokenExpires,
    /// Google: a refresh token of an app in "Testing" status dies 7 days after issue.
    GoogleTestingLimit,
    /// No successful refresh for days: a token kept alive by the daily job is dying.
    RefreshStalled,
    /// `oauth2-credential-expires`: the client secret or certificate expires.
    CredentialExpires,
    /// A message waits in the outbox for longer than an hour.
    OutboxWaiting,
    /// Messages were given up (too old, or refused for good).
    MessagesGivenUp,
}

impl ForecastKind {
    /// The kind as it is written in JSON and in alert state files.
    pub fn as_str(self) -> &'static str {
        match self {
            ForecastKind::NeedsReauthorization => "needs-reauthorization",
            ForecastKind::NeedsAdminFix => "needs-admin-fix",
            ForecastKind::RefreshTokenExpires => "refresh-token-expires",
            ForecastKind::GoogleTestingLimit => "google-testing-limit",
            ForecastKind::RefreshStalled => "refresh-stalled",
            ForecastKind::CredentialExpires => "credential-expires",
            ForecastKind::OutboxWaiting => "outbox-waiting",
            ForecastKind::MessagesGivenUp => "messages-given-up",
        }
    }
}

/// One thing coming or wrong for a target, for the status, the list, the CLI and alerts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Forecast {
    /// What it is about.
    pub kind: ForecastKind,
    /// Whole days left until it happens (0 or less: it has happened), where known.
    pub days_left: Option<i64>,
    /// One sentence for a person: what, when, and what to do.
    pub text: String,
    /// Whether it is a problem to alert about now (a forecast far ahead is only shown).
    pub alert: bool,
}

/// Days before a client secret or certificate expires at which an alert goes out.
pub const CREDENTIAL_ALERT_DAYS: [i64; 3] = [30, 7, 1];
/// Alert when a refresh token's estimated end is this many days away or less.
pub const REFRESH_TOKEN_ALERT_DAYS: i64 = 7;
/// Alert when the last successful refresh of a stored refresh token is this many days old
/// (the daily job keeps such tokens alive; two missed runs are worth a look).
pub const STALLED_AFTER_DAYS: i64 = 3;
/// Google: a refresh token of an app whose consent screen is in "Testing" lives this long.
pub const GOOGLE_TESTING_DAYS: i64 = 7;
/// Alert when a message has waited in the outbox for this long.
pub const OUTBOX_ALERT_SECS: i64 = 3600;

/// The forecasts of an outbox: a message waiting for over an hour, messages given up lately.
pub fn outbox_forecast(outbox: &OutboxStatus) -> Vec<Forecast> {
    let mut out = Vec::new();
    if let Some(age) = outbox.oldest_age_secs {
        out.push(Forecast {
            kind: ForecastKind::OutboxWaiting,
            days_left: None,
            text: format!(
                "{} message(s) waiting in the outbox, the oldest for {}; last error: {}",
                outbox.queued,
                outbox::human_age(age),
                outbox.last_error.as_deref().unwrap_or("-")
            ),
            alert: age >= OUTBOX_ALERT_SECS,
        });
    }
    let g = &outbox.given_up;
    if let Some(at) = g
        .last_at
        .filter(|at| now() - at < outbox::GIVEN_UP_WARNING_SECS)
    {
        out.push(Forecast {
            kind: ForecastKind::MessagesGivenUp,
            days_left: None,
            text: format!(
                "{} message(s) given up so far, the last {} ago ('{}': {})",
                g.count,
                outbox::human_age(now() - at),
                g.last_title.as_deref().unwrap_or(""),
                g.last_reason.as_deref().unwrap_or("")
            ),
            alert: true,
        });
    }
    out
}

/// The day number (since 1970-01-01, UTC) of Unix time `t`.
fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY)
}

/// The forecasts of `target` with `state` at time `t` (the outbox's come from
/// [`outbox_forecast`]).
fn forecast_of(
    target: &SmtpTarget,
    s: &OAuth2State,
    t: i64,
    (reauth, confirm): (Option<String>, Option<String>),
    estimated_expiry: Option<i64>,
) -> Vec<Forecast> {
    let mut out = Vec::new();
    if !target.auth_method.is_oauth2() {
        return out;
    }
    let p = provider::provider(target.auth_method);
    let hint = p.map(|p| p.reauth_hint).unwrap_or_default();
    let name = &target.name;
    if let Some(text) = reauth {
        out.push(Forecast {
            kind: ForecastKind::NeedsReauthorization,
            days_left: Some(0),
            text,
            alert: true,
        });
    } else if let Some(text) = confirm.or_else(|| {
        s.last_error
            .as_ref()
            .filter(|e| e.kind == Some(crate::error::ErrorKind::NeedsAdminFix))
            .map(|e| format!("needs an admin's fix: {}", e.message))
    }) {
        out.push(Forecast {
            kind: ForecastKind::NeedsAdminFix,
            days_left: Some(0),
            text,
            alert: true,
        });
    }
    let has_grant = s.refresh_token.is_some() && !target.flow().mints();
    if has_grant && !s.needs_reauthorization {
        if let Some(exp) = estimated_expiry {
            let days = day_of(exp) - day_of(t);
            out.push(Forecast {
                kind: ForecastKind::RefreshTokenExpires,
                days_left: Some(days),
                text: if days <= 0 {
                    format!("the refresh token has probably expired: re-authorize ({hint})")
                } else {
                    format!(
                        "the refresh token probably expires in {days} day(s) (make sure the \
                         daily job runs, or re-authorize: `oxnotify authorize {name}`)"
                    )
                },
                alert: days <= REFRESH_TOKEN_ALERT_DAYS,
            });
        }
        if let Some(ok) = s.last_refresh.or(s.refresh_token_issued_at) {
            let idle = day_of(t) - day_of(ok);
            if idle >= STALLED_AFTER_DAYS {
                let dies = estimated_expiry
                    .map(|e| {
                        format!(
                            ", and it dies in {} day(s) without one",
                            day_of(e) - day_of(t)
                        )
                    })
                    .unwrap_or_default();
                out.push(Forecast {
                    kind: ForecastKind::RefreshStalled,
                    days_left: estimated_expiry.map(|e| day_of(e) - day_of(t)),
                    text: format!(
                        "no successful refresh for {idle} day(s): the daily job keeps the \
                         refresh token alive{dies}; check that the daily job runs and what \
                         its last error says"
                    ),
                    alert: true,
                });
            }
        }
        if target.auth_method == crate::config::smtp::AuthMethod::GoogleOAuth2 {
            if let Some(issued) = s.refresh_token_issued_at {
                let days = day_of(issued) + GOOGLE_TESTING_DAYS - day_of(t);
                if days > 0 {
                    out.push(Forecast {
                        kind: ForecastKind::GoogleTestingLimit,
                        days_left: Some(days),
                        text: format!(
                            "if the app's OAuth consent screen is in 'Testing' status, the \
                             refresh token dies in {days} day(s): publish the app ('In \
                             production') in the Google Cloud console, or authorize again then"
                        ),
                        alert: days <= 1,
                    });
                }
            }
        }
    }
    if let Some(day) = target
        .oauth2_credential_expires
        .as_deref()
        .and_then(|d| crate::config::validate::date(d).ok())
    {
        let what = match (target.flow(), target.oauth2_client_auth) {
            (crate::config::smtp::OAuth2Flow::ServiceAccount, _) => "service account key",
            (_, Some(crate::config::smtp::ClientAuthMethod::PrivateKeyJwt)) => "certificate",
            _ => "client secret",
        };
        let days = day - day_of(t);
        let on = target.oauth2_credential_expires.as_deref().unwrap_or("");
        out.push(Forecast {
            kind: ForecastKind::CredentialExpires,
            days_left: Some(days),
            text: if days <= 0 {
                format!(
                    "the {what} expired on {on}: create a new one in the app registration, \
                     store it (`oxnotify target update {name}`) and set \
                     oauth2-credential-expires to its new date"
                )
            } else {
                format!(
                    "{what} expires in {days} day(s) ({on}): create a new one in the app \
                     registration, store it (`oxnotify target update {name}`) and set \
                     oauth2-credential-expires to its new date"
                )
            },
            alert: days <= CREDENTIAL_ALERT_DAYS[0],
        });
    }
    out
}

impl TargetStatus {
    /// Derive the status of `target` from `state` (absent state: not authorized).
    pub fn of(target: &SmtpTarget, state: Option<&OAuth2State>) -> Self {
        let t = now();
        let empty = OAuth2State::default();
        let s = state.unwrap_or(&empty);
        let p = provider::provider(target.auth_method);
        let lifetime_expiry = p
            .and_then(|p| p.refresh_token_lifetime_days)
            .zip(s.refresh_token_issued_at)
            .map(|(days, issued)| issued + days * DAY);
        let idle_expiry = p
            .and_then(|p| p.refresh_token_idle_days)
            .zip(s.last_refresh.or(s.refresh_token_issued_at))
            .map(|(days, used)| used + days * DAY);
        let estimated_expiry = match (lifetime_expiry, idle_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let bound_elsewhere = matches!(
            crate::binding::Binding::of(target).admits(s),
            crate::binding::Fit::Elsewhere(_)
        );
        let mints = target.auth_method.is_oauth2() && target.flow().mints();
        // flows that mint their tokens need no authorization: they are ready unless the last
        // token request (since the last success) failed, or the target was changed by hand
        // since the credential was last used (then it must be confirmed first)
        let authorized = !bound_elsewhere && (mints || s.refresh_token.is_some());
        let mint_failed = s
            .last_error
            .as_ref()
            .filter(|e| !bound_elsewhere && s.last_refresh.is_none_or(|ok| e.time >= ok));
        let hint = p.map(|p| p.reauth_hint).unwrap_or_default();
        let warning = if mints && bound_elsewhere {
            Some(format!(
                "confirm the credential: the target's OAuth2 or SMTP settings changed since its \
                 credential was last used, so it is not used for them until an admin supplies \
                 it again (`oxnotify target update {}`)",
                target.name
            ))
        } else if mints {
            mint_failed
                .map(|e| {
                    format!(
                        "the last token request failed: {} (fix the credential; the daily job \
                         checks it again)",
                        e.message
                    )
                })
                .or_else(|| target.insecure_auth_warning())
        } else if bound_elsewhere && s.refresh_token.is_some() {
            Some(format!(
                "re-authorize: the target's OAuth2 or SMTP settings changed since it was \
                 authorized, so the stored authorization is not used (`oxnotify authorize {}`)",
                target.name
            ))
        } else if !authorized {
            Some(format!(
                "not authorized yet: authorize the target (Authorize button or `oxnotify authorize {}`)",
                target.name
            ))
        } else if s.needs_reauthorization {
            Some(format!(
                "re-authorize: the provider rejected the refresh token ({hint})"
            ))
        } else if let Some(exp) = estimated_expiry.filter(|e| *e - t < EXPIRY_WARNING_DAYS * DAY) {
            let days = (exp - t).div_euclid(DAY);
            Some(if exp <= t {
                format!("the refresh token has probably expired: re-authorize ({hint})")
            } else {
                format!(
                    "the refresh token probably expires in {days} day(s): make sure the daily \
                     refresh job runs, or re-authorize ({hint})"
                )
            })
        } else {
            target.insecure_auth_warning()
        };
        // a minted credential that must be confirmed is an admin's fix, not a re-authorization
        let confirm = warning.clone().filter(|_| mints && bound_elsewhere);
        let reauth = if !mints && bound_elsewhere && s.refresh_token.is_some() {
            warning.clone()
        } else if !mints
            && (s.needs_reauthorization
                || s.last_error
                    .as_ref()
                    .is_some_and(|e| e.kind == Some(crate::error::ErrorKind::NeedsReauthorization)))
        {
            Some(format!(
                "re-authorize (`oxnotify authorize {}`): the provider rejected the refresh \
                 token ({hint})",
                target.name
            ))
        } else {
            None
        };
        let forecast = forecast_of(target, s, t, (reauth, confirm), estimated_expiry);
        TargetStatus {
            target: target.name.clone(),
            auth_method: target.auth_method.as_str(),
            authorized,
            authorized_at: s.authorized_at,
            last_refresh: s.last_refresh,
            refresh_token_issued_at: s.refresh_token_issued_at,
            refresh_token_age_days: s.refresh_token_issued_at.map(|i| (t - i).div_euclid(DAY)),
            rotations: s.rotations,
            estimated_expiry,
            access_token_valid_until: s.access_token.as_ref().and(s.access_token_expires_at),
            needs_reauthorization: s.needs_reauthorization,
            last_error: s.last_error.clone(),
            warning,
            outbox: None,
            last_refresh_by: s.refreshed_by.clone(),
            store_writable: None,
            forecast,
            alert_target: target.alert_target.clone(),
        }
    }

    /// Cluster store: record whether the shared file system takes writes (`probe`); if not,
    /// the warning says so first (refreshes wait, sends use the cached token while it lasts).
    pub fn note_cluster_writable(&mut self, probe: crate::error::Result<()>) {
        self.store_writable = Some(probe.is_ok());
        if let Err(e) = probe {
            let until = match self.access_token_valid_until {
                Some(t) if t > now() => {
                    format!("the cached access token is valid {}s more", t - now())
                }
                _ => "no valid cached access token, so sends fail until then".into(),
            };
            let msg = format!("{e}; {until}");
            self.warning = Some(match self.warning.take() {
                Some(w) => format!("{msg}; also: {w}"),
                None => msg,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::smtp::AuthMethod;
    use crate::secret::Secret;

    #[test]
    fn the_warning_of_a_state_bound_elsewhere_is_one_readable_sentence() {
        let target = microsoft();
        let mut state = OAuth2State::authorized(Secret::new("rt"));
        state.registration_binding = Some("another registration".into());
        state.delivery_binding = Some("another destination".into());
        let w = TargetStatus::of(&target, Some(&state)).warning.unwrap();
        assert!(
            w.contains("changed since it was authorized, so the stored authorization"),
            "{w}"
        );
        assert!(!w.contains("  "), "stray spaces in: {w}");
    }

    fn microsoft() -> SmtpTarget {
        SmtpTarget {
            auth_method: AuthMethod::MicrosoftOAuth2,
            oauth2_client_id: Some("cid".into()),
            oauth2_tenant_id: Some("contoso.com".into()),
            ..SmtpTarget::new(
                "t",
                "smtp.example.com",
                "a@example.com",
                vec!["b@example.com".into()],
            )
        }
    }

    fn kinds(f: &[Forecast]) -> Vec<(ForecastKind, Option<i64>, bool)> {
        f.iter().map(|f| (f.kind, f.days_left, f.alert)).collect()
    }

    #[test]
    fn a_client_secret_is_forecast_and_alerted_from_30_days_on() {
        let mut t = microsoft();
        let today = now().div_euclid(DAY);
        let date = |days: i64| {
            let d = time::Date::from_julian_day((today + days + 2_440_588) as i32).unwrap();
            format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        };
        for (days, alert) in [(45, false), (30, true), (12, true), (0, true), (-3, true)] {
            t.oauth2_credential_expires = Some(date(days));
            let f = TargetStatus::of(&t, None).forecast;
            assert_eq!(
                kinds(&f),
                [(ForecastKind::CredentialExpires, Some(days), alert)]
            );
            if days > 0 {
                assert!(
                    f[0].text
                        .starts_with(&format!("client secret expires in {days} day(s)")),
                    "{}",
                    f[0].text
                );
            } else {
                assert!(f[0].text.starts_with("the client secret expired on"));
            }
        }
        t.oauth2_client_auth = Some(crate::config::smtp::ClientAuthMethod::PrivateKeyJwt);
        let f = TargetStatus::of(&t, None).forecast;
        assert!(
            f[0].text.starts_with("the certificate expired"),
            "{}",
            f[0].text
        );
    }

    #[test]
    fn a_refresh_token_kept_alive_by_the_daily_job_is_forecast_when_the_job_stops() {
        let t = microsoft();
        let mut s = OAuth2State::authorized(Secret::new("rt"));
        // refreshed (and rotated) today: 90 days ahead, nothing to alert
        s.refresh_token_issued_at = Some(now());
        s.last_refresh = Some(now());
        assert_eq!(
            kinds(&TargetStatus::of(&t, Some(&s)).forecast),
            [(ForecastKind::RefreshTokenExpires, Some(90), false)]
        );
        // the daily job has not succeeded for 4 days
        s.refresh_token_issued_at = Some(now() - 4 * DAY);
        s.last_refresh = Some(now() - 4 * DAY);
        let f = TargetStatus::of(&t, Some(&s)).forecast;
        assert_eq!(
            kinds(&f),
            [
                (ForecastKind::RefreshTokenExpires, Some(86), false),
                (ForecastKind::RefreshStalled, Some(86), true)
            ]
        );
        assert!(
            f[1].text.starts_with("no successful refresh for 4 day(s)")
                && f[1].text.contains("dies in 86 day(s)"),
            "{}",
            f[1].text
        );
        // the provider rejected it: re-authorize, nothing about its end
        s.needs_reauthorization = true;
        let f = TargetStatus::of(&t, Some(&s)).forecast;
        assert_eq!(
            kinds(&f),
            [(ForecastKind::NeedsReauthorization, Some(0), true)]
        );
        assert!(f[0].text.contains("oxnotify authorize t"), "{}", f[0].text);
    }

    #[test]
    fn a_google_token_is_forecast_against_the_testing_limit_for_its_first_week() {
        let t = SmtpTarget {
            auth_method: AuthMethod::GoogleOAuth2,
            oauth2_tenant_id: None,
            ..microsoft()
        };
        let mut s = OAuth2State::authorized(Secret::new("rt"));
        s.last_refresh = Some(now());
        let testing = |issued_days_ago: i64| {
            let mut s = s.clone();
            s.refresh_token_issued_at = Some(now() - issued_days_ago * DAY);
            TargetStatus::of(&t, Some(&s))
                .forecast
                .into_iter()
                .find(|f| f.kind == ForecastKind::GoogleTestingLimit)
                .map(|f| (f.days_left, f.alert))
        };
        assert_eq!(testing(0), Some((Some(7), false)));
        assert_eq!(testing(6), Some((Some(1), true)));
        assert_eq!(testing(7), None);
    }
}
