//! Alerts through a second channel: before a target dies and when it does, its admin hears of
//! it through its `alert-target` (another target, or `sendmail`, the host's own MTA), never
//! through the target itself.
//!
//! What is alerted are the [`Forecast`]s of the target's status marked `alert` (needs
//! re-authorization, needs an admin's fix, a refresh token near its end or no longer kept
//! alive, a client secret or certificate near its expiry, a message waiting for over an hour,
//! messages given up), plus the kind of a failed send's error. The daily run checks every
//! target; a failed refresh and a failed send or flush check theirs.
//!
//! One alert per problem per target per day: the alert state (`<state>/alerts/<target>.json`)
//! says when each problem was last alerted. It is read, decided on and written under the
//! store's lock (`flock` locally, a lock directory in the cluster store), so processes and
//! nodes agree; the mail goes out after the lock is released (a cluster lock must not be held
//! for a delivery), and a send that fails gives its claim back so a later run tries again.
//! Stages instead of days for expiry dates: 30, 7 and 1 day(s) before a credential expires,
//! one alert each. When a problem is gone, one recovery note says so.
//!
//! "A day" is [`ALERT_INTERVAL_SECS`] (20 h): a daily timer with a random delay still alerts
//! once every day, and no two alerts of one problem come closer than that.

use crate::config::smtp::SmtpTarget;
use crate::config::validate::ALERT_VIA_SENDMAIL;
use crate::config::NotificationConfig;
use crate::delivery::outbox::{self, OutboxStatus};
use crate::delivery::{Deliverer, Delivery, FailureWatch};
use crate::error::{Error, ErrorKind, Result};
use crate::notification::{Notification, Severity};
use crate::oauth2::TokenHttpClient;
use crate::settings::Settings;
use crate::state::{now, StateStore};
use crate::status::{outbox_forecast, Forecast, ForecastKind, TargetStatus, CREDENTIAL_ALERT_DAYS};
use crate::store::Access;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// No two alerts of one problem of one target within this time ("once a day").
pub const ALERT_INTERVAL_SECS: i64 = 20 * 3600;

/// What the alert check of one target did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AlertReport {
    /// The target the alert is about.
    pub target: String,
    /// Where it went: a target's name or `sendmail`.
    pub via: String,
    /// The problems alerted now.
    pub alerted: Vec<ForecastKind>,
    /// The problems that are gone, said in a recovery note now.
    pub recovered: Vec<ForecastKind>,
    /// Why the alert or note could not be sent (it is tried again by the next check).
    pub error: Option<String>,
}

/// When a problem of a target was seen and alerted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    kind: ForecastKind,
    /// First seen.
    since: i64,
    /// Last alerted (0: not yet, or the send failed).
    alerted_at: i64,
    /// The expiry stage alerted last (30, 7, 1, 0 days), for staged problems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stage: Option<i64>,
    /// Seen only in a failed send's error, not in the state: no recovery note is sent for it
    /// (nothing would show that it is fixed).
    #[serde(default)]
    from_error: bool,
    /// What was said.
    text: String,
}

/// The alert state of one target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AlertState {
    #[serde(default)]
    version: u32,
    /// Problem key (the kind; `kind@node` for a node's own outbox) -> record.
    #[serde(default)]
    problems: BTreeMap<String, Record>,
    /// Per node: how many given-up messages were alerted already.
    #[serde(default)]
    given_up_seen: BTreeMap<String, u64>,
}

/// What one check found, before the lock.
struct Seen<'f> {
    /// The problems to alert now.
    forecast: &'f [Forecast],
    /// The kind only the failed send's error shows (the state does not).
    only_in_error: Option<ForecastKind>,
    /// This node's count of given-up messages.
    given_up: u64,
}

/// What one check decided, under the lock.
struct Decision {
    alert: Vec<(String, Record)>,
    recover: Vec<(String, Record)>,
    given_up: Option<(u64, u64)>,
}

/// Checks targets and sends their alerts ([`crate::Notifier::alerts`]).
pub struct Alerter<'a> {
    settings: &'a Settings,
    http: &'a dyn TokenHttpClient,
}

/// A failed refresh, send or flush of target `name`: alert if a problem is due (the hook of
/// [`crate::refresh`] and [`crate::delivery`]). Waits at most until `deadline` (at least a
/// second) for the lock and the alert's own delivery; what is not delivered by then waits in
/// the alert target's outbox.
pub fn after_failure(
    settings: &Settings,
    http: &dyn TokenHttpClient,
    config: &NotificationConfig,
    name: &str,
    error: Option<&Error>,
    deadline: Instant,
) -> Option<AlertReport> {
    let target = config.smtp_target(name).ok()?;
    target.alert_target.as_ref()?;
    Alerter::new(settings, http).check(config, &target, error, deadline)
}

/// Alerts after a failed send or flush: the [`FailureWatch`] the notifier gives its
/// deliverers ([`after_failure`] for each failure).
pub struct AlertOnFailure;

/// The one instance (it holds nothing).
pub static ALERT_ON_FAILURE: AlertOnFailure = AlertOnFailure;

impl FailureWatch for AlertOnFailure {
    fn failed(
        &self,
        settings: &Settings,
        http: &dyn TokenHttpClient,
        config: &NotificationConfig,
        name: &str,
        error: Option<&Error>,
        deadline: Instant,
    ) {
        after_failure(settings, http, config, name, error, deadline);
    }
}

impl<'a> Alerter<'a> {
    /// An alerter with these settings, delivering with `http` for token requests.
    pub fn new(settings: &'a Settings, http: &'a dyn TokenHttpClient) -> Self {
        Alerter { settings, http }
    }

    /// Check every enabled target of `config` that has an `alert-target` (the daily run);
    /// one report per target whose check alerted, recovered or failed.
    pub fn check_configured(&self, config: &NotificationConfig) -> Vec<AlertReport> {
        config
            .smtp_targets()
            .into_iter()
            .filter_map(|(_, t)| t.ok())
            .filter(|t| t.alert_target.is_some() && !t.disable)
            .filter_map(|t| {
                let deadline = Instant::now() + self.settings.caller_wait;
                self.check(config, &t, None, deadline)
            })
            .collect()
    }

    /// Check `target` now (`error`: the failure that caused the check, if any): alert its
    /// due problems and note the ones that are gone. `None` if nothing was due.
    pub fn check(
        &self,
        config: &NotificationConfig,
        target: &SmtpTarget,
        error: Option<&Error>,
        deadline: Instant,
    ) -> Option<AlertReport> {
        let via = target.alert_target.clone()?;
        let mut report = AlertReport {
            target: target.name.clone(),
            via: via.clone(),
            alerted: Vec::new(),
            recovered: Vec::new(),
            error: None,
        };
        let fail = |mut r: AlertReport, e: Error| {
            r.error = Some(e.to_string());
            Some(r)
        };
        if let Err(e) = config.alert_chain(&target.name) {
            return fail(report, e);
        }
        let outbox = outbox::status(self.settings, &target.name);
        let (forecast, only_in_error) = match self.forecast(target, &outbox, error) {
            Ok(f) => f,
            Err(e) => return fail(report, e),
        };
        let at = now();
        let seen = Seen {
            forecast: &forecast,
            only_in_error,
            given_up: outbox.given_up.count,
        };
        let decision = match self.decide(target, &seen, at, deadline) {
            Ok(d) => d,
            Err(e) => return fail(report, e),
        };
        if decision.alert.is_empty() && decision.recover.is_empty() {
            return None;
        }
        if !decision.alert.is_empty() {
            let sent = self.send(
                target,
                &via,
                &alert_message(target, &decision, &self.settings.node_name),
                deadline,
            );
            report.alerted = decision.alert.iter().map(|(_, r)| r.kind).collect();
            if let Err(e) = sent {
                report.error = Some(e.to_string());
                let _ = self.give_back(target, &decision.alert, decision.given_up, at, deadline);
            }
        }
        if !decision.recover.is_empty() {
            let sent = self.send(
                target,
                &via,
                &recovery_message(target, &decision.recover),
                deadline,
            );
            report.recovered = decision.recover.iter().map(|(_, r)| r.kind).collect();
            if let Err(e) = sent {
                report.error.get_or_insert(e.to_string());
                let _ = self.restore(target, &decision.recover, deadline);
            }
        }
        Some(report)
    }

    /// The target's forecasts (its OAuth2 state and its outbox), plus the kind of `error`
    /// where that says more than the state.
    fn forecast(
        &self,
        target: &SmtpTarget,
        outbox: &OutboxStatus,
        error: Option<&Error>,
    ) -> Result<(Vec<Forecast>, Option<ForecastKind>)> {
        let state = if target.auth_method.is_oauth2() {
            StateStore::new(self.settings).load(&target.name)?
        } else {
            None
        };
        let mut f = TargetStatus::of(target, state.as_ref()).forecast;
        f.extend(outbox_forecast(outbox));
        let from_error = match error.map(Error::kind) {
            Some(ErrorKind::NeedsReauthorization) => Some(ForecastKind::NeedsReauthorization),
            Some(ErrorKind::NeedsAdminFix) => Some(ForecastKind::NeedsAdminFix),
            _ => None,
        };
        let mut only_in_error = None;
        if let (Some(kind), Some(e)) = (from_error, error) {
            if !f.iter().any(|x| x.kind == kind) {
                f.push(Forecast {
                    kind,
                    days_left: None,
                    text: format!("the last attempt failed: {e}"),
                    alert: true,
                });
                only_in_error = Some(kind);
            }
        }
        Ok((f.into_iter().filter(|x| x.alert).collect(), only_in_error))
    }

    fn state_dir(&self) -> PathBuf {
        self.settings.state_dir.join("alerts")
    }

    fn state_file(&self, target: &str) -> PathBuf {
        self.state_dir().join(format!("{target}.json"))
    }

    /// Run `f` on the alert state of `target` under its lock, and save what it changed.
    fn with_state<T>(
        &self,
        target: &str,
        deadline: Instant,
        f: impl FnOnce(&mut AlertState) -> T,
    ) -> Result<T> {
        let store = self.settings.store();
        store.ensure_dir(&self.state_dir(), Access::Private, false)?;
        let lock_deadline = deadline
            .max(Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + self.settings.lock_timeout);
        let _lock = store.lock_until(
            &self.state_dir().join(format!("{target}.lock")),
            &format!("alert-{target}"),
            lock_deadline,
            &format!("the alert state of target '{target}'"),
        )?;
        let path = self.state_file(target);
        // an unreadable state only costs a repeated alert: start again
        let mut state: AlertState = crate::store::local::read_regular(&path)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let before = serde_json::to_vec(&state).unwrap_or_default();
        let out = f(&mut state);
        let after = serde_json::to_vec(&state).map_err(|e| Error::CorruptState {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if after != before {
            store.write(&path, &after, Access::Private, ".tmp-")?;
        }
        Ok(out)
    }

    /// Under the lock: which problems are due (claimed as alerted at `at`), which are gone
    /// (their records removed).
    fn decide(
        &self,
        target: &SmtpTarget,
        seen: &Seen<'_>,
        at: i64,
        deadline: Instant,
    ) -> Result<Decision> {
        let (forecast, given_up) = (seen.forecast, seen.given_up);
        let node = self.settings.node_name.clone();
        let shared = self.settings.store().is_shared();
        let key = |k: ForecastKind| match k {
            // a node's outbox is its own: in a shared store each node alerts its own
            ForecastKind::OutboxWaiting | ForecastKind::MessagesGivenUp if shared => {
                format!("{}@{node}", k.as_str())
            }
            k => k.as_str().to_string(),
        };
        let own_key = |k: &str| !k.contains('@') || k.ends_with(&format!("@{node}"));
        self.with_state(&target.name, deadline, |state| {
            let mut d = Decision {
                alert: Vec::new(),
                recover: Vec::new(),
                given_up: None,
            };
            for f in forecast {
                let k = key(f.kind);
                let stage = staged(f);
                let alerted = state.given_up_seen.get(&node).copied().unwrap_or(0);
                if f.kind == ForecastKind::MessagesGivenUp {
                    if given_up <= alerted {
                        continue;
                    }
                    d.given_up = Some((alerted, given_up));
                }
                let from_error = seen.only_in_error == Some(f.kind);
                let rec = state.problems.entry(k.clone()).or_insert_with(|| Record {
                    kind: f.kind,
                    since: at,
                    alerted_at: 0,
                    stage: None,
                    from_error,
                    text: f.text.clone(),
                });
                // seen in the state now: its absence will prove the fix
                rec.from_error = from_error;
                let due = match (stage, rec.stage) {
                    // a new, closer stage (30 -> 7 -> 1 -> expired) is news at once
                    (Some(s), Some(old)) if s < old => true,
                    (Some(s), _) if s > 0 => rec.alerted_at == 0,
                    _ => at - rec.alerted_at >= ALERT_INTERVAL_SECS,
                };
                if f.kind == ForecastKind::MessagesGivenUp && !due {
                    d.given_up = None;
                }
                if !due {
                    continue;
                }
                rec.alerted_at = at;
                rec.stage = stage;
                rec.text = f.text.clone();
                d.alert.push((k, rec.clone()));
            }
            if let Some((_, count)) = d.given_up {
                state.given_up_seen.insert(node.clone(), count);
            }
            let now_keys: Vec<String> = forecast.iter().map(|f| key(f.kind)).collect();
            let gone: Vec<String> = state
                .problems
                .keys()
                .filter(|k| own_key(k) && !now_keys.contains(k))
                .cloned()
                .collect();
            for k in gone {
                // a problem only a failed attempt showed is not seen by a check without one:
                // its record stays for a day, so the next failure does not alert again
                if state
                    .problems
                    .get(&k)
                    .is_some_and(|r| r.from_error && at - r.alerted_at < ALERT_INTERVAL_SECS)
                {
                    continue;
                }
                if let Some(r) = state.problems.remove(&k) {
                    if r.alerted_at > 0 && !r.from_error && recovers(r.kind) {
                        d.recover.push((k, r));
                    }
                }
            }
            d
        })
    }

    /// The alert could not be sent: its problems count as not alerted (a later check sends
    /// it), unless another process alerted them meanwhile.
    fn give_back(
        &self,
        target: &SmtpTarget,
        alerted: &[(String, Record)],
        given_up: Option<(u64, u64)>,
        at: i64,
        deadline: Instant,
    ) -> Result<()> {
        let node = self.settings.node_name.clone();
        self.with_state(&target.name, deadline, |state| {
            for (k, _) in alerted {
                if let Some(r) = state.problems.get_mut(k).filter(|r| r.alerted_at == at) {
                    r.alerted_at = 0;
                    r.stage = None;
                }
            }
            if let Some((seen, count)) = given_up {
                if state.given_up_seen.get(&node) == Some(&count) {
                    state.given_up_seen.insert(node, seen);
                }
            }
        })
    }

    /// The recovery note could not be sent: keep the records, so a later check notes it.
    fn restore(
        &self,
        target: &SmtpTarget,
        gone: &[(String, Record)],
        deadline: Instant,
    ) -> Result<()> {
        self.with_state(&target.name, deadline, |state| {
            for (k, r) in gone {
                state.problems.entry(k.clone()).or_insert_with(|| r.clone());
            }
        })
    }

    /// Deliver `message` about `target` through `via`: accepted by the target (sent or
    /// queued in its outbox) or by the host's `sendmail`.
    fn send(
        &self,
        target: &SmtpTarget,
        via: &str,
        message: &Notification,
        deadline: Instant,
    ) -> Result<()> {
        if via == target.name {
            // refused by the config too; a file edited by hand must not bring it back
            return Err(Error::param(
                "alert-target",
                format!("target '{via}' cannot alert through itself"),
            ));
        }
        if via == ALERT_VIA_SENDMAIL {
            return sendmail(self.settings, target, message, deadline);
        }
        // the caller's bound: what is not delivered by then waits in the alert target's outbox
        let mut settings = self.settings.clone();
        settings.caller_wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let report = Deliverer::new(&settings, self.http)
            .send(&[via], message)?
            .pop()
            .map(|r| r.result)
            .unwrap_or(Ok(Delivery::Sent));
        report.map(|_| ())
    }
}

/// Expiry stage of a forecast: the closest of 30, 7, 1 day(s) reached, 0 once expired;
/// `None` for problems that are alerted every day while they last.
fn staged(f: &Forecast) -> Option<i64> {
    let days = f.days_left?;
    match f.kind {
        ForecastKind::CredentialExpires => Some(if days <= 0 {
            0
        } else {
            CREDENTIAL_ALERT_DAYS
                .iter()
                .copied()
                .filter(|s| days <= *s)
                .min()
                .unwrap_or(days)
        }),
        ForecastKind::GoogleTestingLimit => Some(1),
        _ => None,
    }
}

/// Whether a problem that is gone gets a recovery note: not a forecast that merely passed
/// (the Google Testing limit) or an event (messages given up).
fn recovers(kind: ForecastKind) -> bool {
    !matches!(
        kind,
        ForecastKind::GoogleTestingLimit | ForecastKind::MessagesGivenUp
    )
}

/// A short name of a problem, for subjects.
fn headline(kind: ForecastKind) -> &'static str {
    match kind {
        ForecastKind::NeedsReauthorization => "needs re-authorization",
        ForecastKind::NeedsAdminFix => "needs an admin's fix",
        ForecastKind::RefreshTokenExpires => "refresh token expires soon",
        ForecastKind::GoogleTestingLimit => "refresh token may die (Google 'Testing' app)",
        ForecastKind::RefreshStalled => "refresh token no longer refreshed",
        ForecastKind::CredentialExpires => "client credential expires",
        ForecastKind::OutboxWaiting => "messages wait in the outbox",
        ForecastKind::MessagesGivenUp => "messages given up",
    }
}

fn alert_message(target: &SmtpTarget, d: &Decision, node: &str) -> Notification {
    let name = &target.name;
    let first = d.alert.first().map(|(_, r)| r.kind);
    let title = format!(
        "oxnotify alert: target '{name}' {}",
        first.map_or("needs attention", headline)
    );
    let mut body = format!(
        "The notification target '{name}' ({}, sending as {}) has a problem that stops or will \
         stop its notifications:\n\n",
        target.auth_method.as_str(),
        target.from_address
    );
    for (_, r) in &d.alert {
        let extra = match (r.kind, d.given_up) {
            (ForecastKind::MessagesGivenUp, Some((seen, count))) => {
                format!(" ({} since the last alert)", count - seen)
            }
            _ => String::new(),
        };
        body.push_str(&format!("- {}: {}{extra}\n", headline(r.kind), r.text));
    }
    body.push_str(&format!(
        "\nSent by oxnotify on {node} through this target's alert-target, at most once a day \
         per problem while it lasts; a note follows when it is fixed.\n"
    ));
    Notification {
        title,
        body,
        severity: Severity::Error,
        fields: [
            ("target".to_string(), name.clone()),
            (
                "problems".to_string(),
                d.alert
                    .iter()
                    .map(|(_, r)| r.kind.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ]
        .into(),
        ..Default::default()
    }
}

fn recovery_message(target: &SmtpTarget, gone: &[(String, Record)]) -> Notification {
    let name = &target.name;
    let mut body = format!("The notification target '{name}' is fine again:\n\n");
    for (_, r) in gone {
        body.push_str(&format!(
            "- resolved: {} (alerted as: {})\n",
            headline(r.kind),
            r.text
        ));
    }
    Notification {
        title: format!(
            "oxnotify: target '{name}' works again ({} resolved)",
            gone.iter()
                .map(|(_, r)| headline(r.kind))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        body,
        severity: Severity::Info,
        fields: [("target".to_string(), name.clone())].into(),
        ..Default::default()
    }
}

/// Hand `message` about `target` to the host's MTA ([`Settings::sendmail_command`]), to the
/// target's own `mailto` recipients (root of this host if it has none), by `deadline`.
fn sendmail(
    settings: &Settings,
    target: &SmtpTarget,
    message: &Notification,
    deadline: Instant,
) -> Result<()> {
    let program = settings
        .sendmail_command
        .first()
        .cloned()
        .unwrap_or_else(|| crate::settings::DEFAULT_SENDMAIL.into());
    let fail = |m: String| {
        Error::io(
            &program,
            std::io::Error::other(format!("the alert via sendmail failed: {m}")),
        )
    };
    let from = format!("root@{}", settings.hello_name);
    let rcpts = if target.mailto.is_empty() {
        vec![from.clone()]
    } else {
        target.mailto.clone()
    };
    let mut envelope_target = SmtpTarget::new(&target.name, "localhost", &from, rcpts.clone());
    envelope_target.author = Some("oxnotify".into());
    let bytes = message.to_message(&envelope_target)?.formatted();
    let mut child = Command::new(&program)
        .args(settings.sendmail_command.iter().skip(1))
        .args(["-i", "--"])
        .args(&rcpts)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    let written = child
        .stdin
        .take()
        .map(|mut i| i.write_all(&bytes))
        .unwrap_or(Ok(()));
    // the whole wait is bounded: a hung MTA is killed at the deadline
    let deadline = deadline.max(Instant::now() + Duration::from_secs(5));
    let status = crate::store::poll_until(deadline, Duration::from_millis(100), || {
        child.try_wait().map_err(|e| fail(e.to_string()))
    })?;
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(fail(format!("{program} did not finish in time; killed")));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    written.map_err(|e| fail(format!("writing the message to {program}: {e}")))?;
    if !status.success() {
        let said: String = stderr.trim().chars().take(300).collect();
        return Err(fail(format!("{program} exited with {status}: {said}")));
    }
    Ok(())
}
