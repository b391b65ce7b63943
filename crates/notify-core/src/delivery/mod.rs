//! Delivery that loses nothing: every send runs within one deadline
//! ([`Settings::delivery_deadline`]), waits for one of the target's connection slots
//! ([`slots`]), retries transient failures with backoff, and what still could not be
//! delivered for a transient reason goes to the durable [`outbox`] ("queued", not
//! "failed"). A flush sends a target's queue oldest first over one SMTP session; it runs from
//! the timer, the daily job, the CLI, and after every successful send to the same target.
//!
//! Semantics: at-least-once. A message leaves the spool only after the server accepted it
//! (250 after DATA); a crash between that reply and the removal of the spool file sends it
//! again on the next flush (a duplicate). A crash anywhere else loses nothing: a send that has
//! not returned "sent" or "queued" has not promised anything, and the spool files are written
//! atomically.

pub mod graph;
pub mod outbox;
pub mod relay;
pub mod slots;
pub mod smtp;

use crate::config::smtp::{AuthMethod, SmtpSecrets, SmtpTarget, Transport};
use crate::config::NotificationConfig;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::notification::Notification;
use crate::oauth2::TokenHttpClient;
use crate::settings::Settings;
use crate::state::now;
use crate::store::local::FileLock;
use crate::tokens::TokenManager;
use outbox::Entry;
use serde::Serialize;
use smtp::{Batch, Credential, Outgoing};
use std::time::{Duration, Instant};

/// Sends notifications and flushes the outbox ([`crate::Notifier::delivery`]).
pub struct Deliverer<'a> {
    settings: &'a Settings,
    http: &'a dyn TokenHttpClient,
    context: Option<&'a dyn Context>,
    watch: Option<&'a dyn FailureWatch>,
}

/// Told about each target whose send or flush failed. What to do about it (alerts through
/// another channel) lives above delivery ([`crate::alerts`]); the notifier wires it in, so
/// delivery never calls up.
pub trait FailureWatch: Sync {
    /// Target `name` of `config` failed: `error` is a send's, `None` a flush's (its report has
    /// the details). May take until `deadline`.
    fn failed(
        &self,
        settings: &Settings,
        http: &dyn TokenHttpClient,
        config: &NotificationConfig,
        name: &str,
        error: Option<&Error>,
        deadline: Instant,
    );
}

/// How a notification left [`Deliverer::send`] for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The server accepted it.
    Sent,
    /// Not delivered within the deadline for a transient reason: it waits in the outbox and
    /// a flush delivers it later.
    Queued {
        /// The outbox id (`oxnotify outbox list|drop`).
        id: String,
        /// Why it could not be delivered now (secret-free).
        reason: String,
    },
}

/// Result of sending to one target.
#[derive(Debug)]
pub struct SendReport {
    /// Target name.
    pub target: String,
    /// Sent or queued, or the error (a permanent failure, or one the outbox could not take).
    pub result: Result<Delivery>,
}

/// What a flush of one target did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlushReport {
    /// Target name.
    pub target: String,
    /// Another flush of this target was running; this one did nothing.
    pub busy: bool,
    /// Messages delivered.
    pub delivered: usize,
    /// SMTP sessions used (0 if nothing was due or the target could not be used).
    pub sessions: usize,
    /// Messages refused for good by the server (id, error): removed and recorded.
    pub failed: Vec<(String, String)>,
    /// Messages older than the outbox's maximum age (id, title): removed and recorded.
    pub expired: Vec<(String, String)>,
    /// Messages still waiting.
    pub remaining: usize,
    /// Why the remaining ones were not delivered, if a flush was tried.
    pub error: Option<String>,
}

/// What [`Deliverer::verify`] found: each step with its time, and the failure if one.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Target name.
    pub target: String,
    /// True if the server accepted the login (or, without auth, the session).
    pub ok: bool,
    /// Where the credential came from: `cached token`, `new token`, `password` or `none`.
    pub credential: &'static str,
    /// The steps made, in order, each with its time in milliseconds.
    pub steps: Vec<VerifyStep>,
    /// Why it failed (secret-free; names the step and what to do), if it did.
    pub error: Option<String>,
    /// What must happen next, if it failed.
    pub kind: Option<crate::error::ErrorKind>,
}

/// One step of a [`Verification`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyStep {
    /// `token` (getting the access token), `smtp` (connect, EHLO, TLS, AUTH, QUIT) or `graph`
    /// (a sendMail without recipients, which Graph refuses after its permission checks).
    pub step: &'static str,
    /// How long it took.
    pub ms: u64,
}

/// At most one login check per target in this many seconds (it costs the SMTP server and the
/// provider a login each time, and the audit role may ask for it).
pub const VERIFY_INTERVAL_SECS: u64 = 10;

/// A target's messages of one call, accepted: resolved, and spooled where the outbox took them.
struct Accepted {
    target: SmtpTarget,
    secrets: SmtpSecrets,
    messages: Vec<Outgoing>,
    /// The spool entry of each message (`None`: the outbox could not take it).
    entries: Vec<Option<Entry>>,
    /// Each message's title (for an entry written only after a failed attempt).
    titles: Vec<String>,
    started: i64,
}

/// What [`Deliverer::deliver_now`] did: one fate per message, and the SMTP sessions it opened.
struct Run {
    fates: Vec<Fate>,
    sessions: usize,
}

/// The fate of one message after a delivery run.
enum Fate {
    /// The server took it.
    Sent,
    /// The server refused this message for good (5xx to MAIL, RCPT or DATA).
    Failed(Error),
    /// Not sent: the session could not start or go on, for a reason retrying does not fix
    /// (login rejected, re-authorization needed, TLS, config).
    Blocked(Error),
    /// Not sent for a transient reason.
    Pending(Error),
}

impl<'a> Deliverer<'a> {
    /// A deliverer with these settings, getting tokens with `http`.
    pub fn new(settings: &'a Settings, http: &'a dyn TokenHttpClient) -> Self {
        Deliverer {
            settings,
            http,
            context: None,
            watch: None,
        }
    }

    /// The same deliverer, telling `watch` about every target whose send or flush failed.
    pub fn watched_by(mut self, watch: &'a dyn FailureWatch) -> Self {
        self.watch = Some(watch);
        self
    }

    /// Tell the watch, if any, that `name` failed.
    fn tell_failed(
        &self,
        config: &NotificationConfig,
        name: &str,
        error: Option<&Error>,
        deadline: Instant,
    ) {
        if let Some(w) = self.watch {
            w.failed(self.settings, self.http, config, name, error, deadline);
        }
    }

    /// The same deliverer, resolving `mailto-user` through the host's `context` (for the
    /// notifications that do not carry their own `user_emails`).
    pub fn with_context(mut self, context: &'a dyn Context) -> Self {
        self.context = Some(context);
        self
    }

    /// The messages of `notifications` for `target`, with its `mailto-user` entries
    /// resolved through the context where the notification does not carry them.
    fn messages(
        &self,
        config: &NotificationConfig,
        target: &SmtpTarget,
        notifications: &[Notification],
    ) -> Result<Vec<Outgoing>> {
        let resolved = match self.context {
            Some(c) if !target.mailto_user.is_empty() => {
                Some(crate::context::user_emails(c, &target.mailto_user))
            }
            _ => None,
        };
        notifications
            .iter()
            .map(|n| match (&resolved, &n.user_emails) {
                (Some(emails), None) => {
                    let n = Notification {
                        user_emails: Some(emails.clone()),
                        ..n.clone()
                    };
                    n.to_message(target).map(|m| Outgoing::of(&m))
                }
                _ => n.to_message(target).map(|m| Outgoing::of(&m)),
            })
            .collect::<Result<Vec<_>>>()
            .map_err(|e| match e {
                // say where the admin set the users that could not be resolved
                Error::Parameter { param, message } if param == "mailto-user" => {
                    let at = config
                        .key_location(&target.name, "mailto-user")
                        .map(|l| format!(" (mailto-user is set in {l})"))
                        .unwrap_or_default();
                    Error::param(param, format!("{message}{at}"))
                }
                other => other,
            })
    }

    fn load_config(&self) -> Result<NotificationConfig> {
        NotificationConfig::load(self.settings)
    }

    /// Send `notification` to each of `targets`; one report per target, failures do not stop
    /// the others. The message is in the outbox from the moment it is accepted; the targets
    /// are tried at the same time, and the call returns within [`Settings::caller_wait`]: what
    /// failed for a transient reason by then stays queued ([`Delivery::Queued`]) and the
    /// outbox timer goes on trying. Disabled targets fail with a clear error.
    pub fn send(&self, targets: &[&str], notification: &Notification) -> Result<Vec<SendReport>> {
        notification.validate()?;
        let config = self.load_config()?;
        let deadline = self.caller_deadline();
        // resolved and spooled on the calling thread (the host's lookups are asked here)
        let accepted: Vec<Result<Accepted>> = targets
            .iter()
            .map(|t| self.accept(&config, t, std::slice::from_ref(notification), deadline))
            .collect();
        let (settings, http, watch, config) = (self.settings, self.http, self.watch, &config);
        let results: Vec<Result<Vec<Result<Delivery>>>> = std::thread::scope(|s| {
            let running: Vec<_> = accepted
                .into_iter()
                .map(|a| {
                    s.spawn(move || {
                        a.map(|a| {
                            let d = Deliverer {
                                watch,
                                ..Deliverer::new(settings, http)
                            };
                            d.deliver_accepted(config, a, deadline)
                        })
                    })
                })
                .collect();
            running
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::io(
                            outbox::dir(settings, "?"),
                            std::io::Error::other(
                                "a delivery thread panicked; the message stays in the outbox",
                            ),
                        ))
                    })
                })
                .collect()
        });
        Ok(targets
            .iter()
            .zip(results)
            .map(|(t, r)| SendReport {
                target: t.to_string(),
                result: r.and_then(|mut r| r.pop().unwrap_or(Ok(Delivery::Sent))),
            })
            .collect())
    }

    /// Send several notifications to one target over one SMTP session (one connect, one
    /// AUTH), as far as the server lets us; one result per notification, in order. Like
    /// [`Deliverer::send`]: spooled first, the caller waits at most [`Settings::caller_wait`],
    /// what could not be delivered for a transient reason by then stays queued.
    pub fn send_burst(
        &self,
        target: &str,
        notifications: &[Notification],
    ) -> Result<Vec<Result<Delivery>>> {
        for n in notifications {
            n.validate()?;
        }
        let config = self.load_config()?;
        let deadline = self.caller_deadline();
        let accepted = self.accept(&config, target, notifications, deadline)?;
        Ok(self.deliver_accepted(&config, accepted, deadline))
    }

    /// Check that target `name` can log in, sending nothing: an access token (from the cache
    /// or new, which it says), then connect, EHLO, STARTTLS/TLS, AUTH and QUIT, no MAIL FROM;
    /// for `transport graph` a sendMail without recipients, which Graph refuses after checking
    /// the token, the permission, the mailbox and From ([`graph`]).
    /// Each step is reported with its time; a failure names the step, its kind and the hint.
    /// At most once per [`VERIFY_INTERVAL_SECS`] per target (a 503-style transient error).
    pub fn verify(&self, name: &str) -> Result<Verification> {
        let config = self.load_config()?;
        let (target, secrets) = usable_target(&config, name)?;
        self.verify_rate_limit(name)?;
        let deadline = self.caller_deadline();
        let mut v = Verification {
            target: name.to_string(),
            ok: false,
            credential: "none",
            steps: Vec::new(),
            error: None,
            kind: None,
        };
        let t0 = Instant::now();
        let ms = |t: Instant| t.elapsed().as_millis() as u64;
        let token;
        let credential = match target.auth_method {
            AuthMethod::None => Credential::None,
            AuthMethod::Plain => {
                v.credential = "password";
                let Some(password) = secrets.password.as_ref() else {
                    return Err(Error::param("password", "missing"));
                };
                Credential::Password {
                    user: target.auth_identity(),
                    password,
                }
            }
            _ => {
                self.destination_allowed(&target)?;
                let got = TokenManager::new(self.settings, self.http)
                    .with_deadline(deadline)
                    .access_token(&target, &secrets, false);
                v.steps.push(VerifyStep {
                    step: "token",
                    ms: ms(t0),
                });
                match got {
                    Ok(t) => {
                        v.credential = if t.from_cache {
                            "cached token"
                        } else {
                            "new token"
                        };
                        token = t.token;
                        Credential::Bearer {
                            user: target.auth_identity(),
                            token: &token,
                        }
                    }
                    Err(e) => {
                        v.kind = Some(e.kind());
                        v.error = Some(e.to_string());
                        return Ok(v);
                    }
                }
            }
        };
        let t1 = Instant::now();
        let batch = self.hand_over(&target, &credential, &[], deadline, &mut |_| {});
        v.steps.push(VerifyStep {
            step: target.transport().as_str(),
            ms: ms(t1),
        });
        match batch.stopped {
            None => v.ok = true,
            Some(e) => {
                v.kind = Some(e.kind());
                v.error = Some(e.to_string());
            }
        }
        Ok(v)
    }

    /// Refuse a second login check of `name` within [`VERIFY_INTERVAL_SECS`] (any process of
    /// the host: a stamp file's time).
    fn verify_rate_limit(&self, name: &str) -> Result<()> {
        let dir = self.settings.local_dir().join("verify");
        crate::store::local::ensure_dir(&self.settings.local_dir(), 0o700, false)?;
        crate::store::local::ensure_dir(&dir, 0o700, true)?;
        let stamp = dir.join(format!("{name}.stamp"));
        let age = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map(|age| age.as_secs());
        if let Some(age) = age.filter(|a| *a < VERIFY_INTERVAL_SECS) {
            return Err(Error::RateLimited {
                what: format!("the login check of target '{name}'"),
                interval_secs: VERIFY_INTERVAL_SECS,
                retry_after_secs: VERIFY_INTERVAL_SECS - age,
            });
        }
        crate::store::local::write_atomic(&stamp, b"", 0o600)
    }

    /// When a sender stops waiting: [`Settings::caller_wait`] from now, never later than the
    /// delivery deadline.
    fn caller_deadline(&self) -> Instant {
        Instant::now()
            + self
                .settings
                .caller_wait
                .min(self.settings.delivery_deadline)
    }

    /// Send `notification` to one target now, without the outbox: the test button and callers
    /// that want the error of a transient failure rather than a queued message.
    pub fn send_to_target(&self, target: &str, notification: &Notification) -> Result<()> {
        let config = self.load_config()?;
        let (target, secrets) = usable_target(&config, target)?;
        let message = self
            .messages(&config, &target, std::slice::from_ref(notification))?
            .remove(0);
        let deadline = Instant::now() + self.settings.delivery_deadline;
        match self
            .deliver_now(&target, &secrets, &[message], deadline, &mut |_| {})
            .fates
            .pop()
        {
            Some(Fate::Failed(e)) | Some(Fate::Blocked(e)) | Some(Fate::Pending(e)) => Err(e),
            Some(Fate::Sent) | None => Ok(()),
        }
    }

    /// Take `notifications` for target `name`: its messages, each spooled in the outbox
    /// before its first attempt (marked in flight until `deadline`, so no flush sends it
    /// meanwhile). A message the outbox cannot take is still sent, only not kept.
    fn accept(
        &self,
        config: &NotificationConfig,
        name: &str,
        notifications: &[Notification],
        deadline: Instant,
    ) -> Result<Accepted> {
        let (target, secrets) = usable_target(config, name)?;
        let messages = self.messages(config, &target, notifications)?;
        // a little past the caller's deadline: the sender updates the entry after it
        let until = now() + deadline.saturating_duration_since(Instant::now()).as_secs() as i64 + 2;
        let entries = notifications
            .iter()
            .zip(&messages)
            .map(|(n, m)| {
                let e = Entry::accepted(name, &n.title, m, until);
                outbox::spool(self.settings, &e).ok().map(|()| e)
            })
            .collect();
        Ok(Accepted {
            target,
            secrets,
            messages,
            entries,
            titles: notifications.iter().map(|n| n.title.clone()).collect(),
            started: now(),
        })
    }

    /// Deliver what [`Deliverer::accept`] took, by `deadline`: a delivered message leaves the
    /// outbox as soon as the server took it, one refused for good leaves it with the error for
    /// the caller, one that failed for a transient reason stays, durably, for the outbox timer.
    fn deliver_accepted(
        &self,
        config: &NotificationConfig,
        accepted: Accepted,
        deadline: Instant,
    ) -> Vec<Result<Delivery>> {
        let Accepted {
            target,
            secrets,
            messages,
            entries,
            titles,
            started,
        } = accepted;
        let name = target.name.as_str();
        let settings = self.settings;
        let fates = self
            .deliver_now(&target, &secrets, &messages, deadline, &mut |i| {
                if let Some(e) = &entries[i] {
                    let _ = outbox::remove(settings, name, &e.id);
                }
            })
            .fates;
        let mut any_sent = false;
        let results: Vec<Result<Delivery>> = fates
            .into_iter()
            .zip(entries.into_iter().zip(messages.iter().zip(&titles)))
            .map(|(fate, (entry, (m, title)))| match fate {
                Fate::Sent => {
                    any_sent = true;
                    Ok(Delivery::Sent)
                }
                Fate::Failed(e) | Fate::Blocked(e) => {
                    // the caller gets the error: nothing waits for the timer
                    if let Some(entry) = entry {
                        let _ = outbox::remove(settings, name, &entry.id);
                    }
                    Err(e)
                }
                Fate::Pending(e) => {
                    let reason = e.to_string();
                    let mut entry =
                        entry.unwrap_or_else(|| Entry::new(name, title, m, started, ""));
                    entry.attempts = 1;
                    entry.last_attempt = now();
                    entry.last_error = reason.clone();
                    entry.in_flight_until = None;
                    match outbox::save(settings, &entry) {
                        Ok(()) => Ok(Delivery::Queued {
                            id: entry.id,
                            reason,
                        }),
                        // the outbox cannot take it: the caller must know it was not kept
                        Err(q) => {
                            let _ = outbox::remove(settings, name, &entry.id);
                            Err(Error::io(
                                outbox::dir(settings, name),
                                std::io::Error::other(format!(
                                    "{reason}; the message could not be queued in the outbox \
                                     either ({q}), so it was NOT kept: fix the state directory"
                                )),
                            ))
                        }
                    }
                }
            })
            .collect();
        if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
            self.tell_failed(config, name, Some(e), deadline);
        }
        // the target works again: send what waited for it, within what is left of this
        // send's deadline (the caller waits for it)
        if any_sent && outbox::has_entries(settings, name) {
            let _ = self.flush_until(config, name, deadline);
        }
        results
    }

    /// Flush the outbox of every target that has one (the timer, the daily job,
    /// `oxnotify outbox flush`).
    pub fn flush_outbox(&self) -> Result<Vec<FlushReport>> {
        Ok(self.flush_configured(&self.load_config()?))
    }

    /// [`Deliverer::flush_outbox`] with a config the caller has read.
    pub fn flush_configured(&self, config: &NotificationConfig) -> Vec<FlushReport> {
        outbox::targets(self.settings)
            .iter()
            .map(|t| self.flush_target(config, t))
            .collect()
    }

    /// Flush one target's outbox: give up what is too old, then send the rest oldest first
    /// over one SMTP session, removing each spool file as soon as the server took it; within
    /// one delivery deadline.
    pub fn flush_target(&self, config: &NotificationConfig, name: &str) -> FlushReport {
        let deadline = Instant::now() + self.settings.delivery_deadline;
        self.flush_until(config, name, deadline)
    }

    fn flush_until(
        &self,
        config: &NotificationConfig,
        name: &str,
        deadline: Instant,
    ) -> FlushReport {
        let mut report = FlushReport {
            target: name.to_string(),
            ..Default::default()
        };
        if let Err(e) = outbox::ensure_meta_dir(self.settings) {
            report.error = Some(e.to_string());
            return report;
        }
        let _lock = match FileLock::try_exclusive(&outbox::flush_lock_file(self.settings, name)) {
            Ok(Some(l)) => l,
            Ok(None) => {
                report.busy = true;
                return report;
            }
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        let (entries, bad) = match outbox::entries(self.settings, name) {
            Ok(x) => x,
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        let max_age = self.settings.outbox_max_age.as_secs() as i64;
        let mut due = Vec::with_capacity(entries.len());
        // a live sender is still trying these: not ours to send (it would be sent twice)
        for e in entries.into_iter().filter(|e| !e.in_flight()) {
            if e.age_secs() > max_age {
                let reason = format!(
                    "not delivered within {} (last error: {})",
                    outbox::human_age(max_age),
                    e.last_error
                );
                let _ = outbox::record_given_up(self.settings, name, &e.title, &reason);
                if outbox::remove(self.settings, name, &e.id).is_ok() {
                    report.expired.push((e.id.clone(), e.title.clone()));
                }
            } else {
                due.push(e);
            }
        }
        let mut messages = Vec::with_capacity(due.len());
        let mut kept = Vec::with_capacity(due.len());
        let mut unreadable: Vec<String> = bad.iter().map(Error::to_string).collect();
        for e in due {
            match e.outgoing() {
                Ok(m) => {
                    messages.push(m);
                    kept.push(e);
                }
                Err(err) => unreadable.push(err.to_string()),
            }
        }
        // unreadable files stay where they are for the admin to look at
        report.remaining = kept.len() + unreadable.len();
        report.error = unreadable.first().cloned();
        if kept.is_empty() {
            if report.remaining == 0 {
                outbox::remove_dir_if_empty(self.settings, name);
            }
            return report;
        }
        let (target, secrets) = match usable_target(config, name) {
            Ok(x) => x,
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        let settings = self.settings;
        let mut removal_errors = Vec::new();
        let run = self.deliver_now(&target, &secrets, &messages, deadline, &mut |i| {
            if let Err(e) = outbox::remove(settings, name, &kept[i].id) {
                removal_errors.push(e.to_string());
            }
        });
        report.sessions = run.sessions;
        let fates = run.fates;
        for (fate, mut e) in fates.into_iter().zip(kept) {
            match fate {
                Fate::Sent => {
                    report.delivered += 1;
                    report.remaining -= 1;
                }
                Fate::Failed(err) => {
                    let why = err.to_string();
                    let _ = outbox::record_given_up(settings, name, &e.title, &why);
                    if outbox::remove(settings, name, &e.id).is_ok() {
                        report.remaining -= 1;
                    }
                    report.failed.push((e.id, why));
                }
                // a session that cannot start for good (a rejected login, a token that needs
                // re-authorization, a TLS problem) says nothing about the messages: they wait
                // for the admin's fix, until their maximum age
                Fate::Pending(err) | Fate::Blocked(err) => {
                    e.attempts += 1;
                    e.last_attempt = now();
                    e.last_error = err.to_string();
                    report.error.get_or_insert_with(|| e.last_error.clone());
                    let _ = outbox::save(settings, &e);
                }
            }
        }
        if let Some(e) = removal_errors.first() {
            // the message was delivered but its file stays: it will be sent again
            report.error = Some(format!("delivered, but the spool file stays ({e})"));
        }
        if report.remaining == 0 {
            outbox::remove_dir_if_empty(settings, name);
        }
        if report.error.is_some() || !report.failed.is_empty() || !report.expired.is_empty() {
            self.tell_failed(config, name, None, deadline);
        }
        report
    }

    /// Deliver `messages` to `target` by `deadline`: wait for a connection slot, one session
    /// for all of them, retry what failed transiently with backoff while time is left.
    fn deliver_now(
        &self,
        target: &SmtpTarget,
        secrets: &SmtpSecrets,
        messages: &[Outgoing],
        deadline: Instant,
        accepted: &mut dyn FnMut(usize),
    ) -> Run {
        let mut fates: Vec<Option<Fate>> = messages.iter().map(|_| None).collect();
        let mut backoff = Duration::from_secs(1);
        let mut sessions = 0;
        loop {
            let todo: Vec<usize> = (0..messages.len())
                .filter(|i| fates[*i].is_none())
                .collect();
            if todo.is_empty() {
                break;
            }
            let batch: Vec<Outgoing> = todo.iter().map(|i| messages[*i].clone()).collect();
            let stopped = match slots::acquire(
                self.settings,
                &target.name,
                target.connection_limit(),
                deadline,
            ) {
                Err(e) => Some(e),
                Ok(_slot) => {
                    let b =
                        self.attempt(target, secrets, &batch, deadline, &mut sessions, &mut |j| {
                            accepted(todo[j])
                        });
                    for (j, r) in b.done.into_iter().enumerate() {
                        fates[todo[j]] = Some(match r {
                            Ok(()) => Fate::Sent,
                            Err(e) => Fate::Failed(e),
                        });
                    }
                    b.stopped
                }
            };
            let Some(err) = stopped else { continue };
            let left = deadline.saturating_duration_since(Instant::now());
            // the server's Retry-After (Graph's 429/503) if it sent one, else the backoff
            let wait = err.retry_after().unwrap_or(backoff);
            // another attempt only if it can still finish: the wait plus a few seconds
            if !err.is_transient() || wait + Duration::from_secs(2) >= left {
                for f in fates.iter_mut().filter(|f| f.is_none()) {
                    *f = Some(if err.is_transient() {
                        Fate::Pending(err.clone())
                    } else {
                        Fate::Blocked(err.clone())
                    });
                }
                break;
            }
            std::thread::sleep(wait);
            backoff = (backoff * 2).min(Duration::from_secs(16));
        }
        Run {
            fates: fates.into_iter().map(|f| f.unwrap_or(Fate::Sent)).collect(),
            sessions,
        }
    }

    /// One attempt: credentials, then one SMTP session for all of `messages`. A cached access
    /// token the server rejects is refreshed once.
    fn attempt(
        &self,
        target: &SmtpTarget,
        secrets: &SmtpSecrets,
        messages: &[Outgoing],
        deadline: Instant,
        sessions: &mut usize,
        accepted: &mut dyn FnMut(usize),
    ) -> Batch {
        let failed = |e: Error| Batch {
            done: Vec::new(),
            stopped: Some(e),
        };
        let mut run = |c: &Credential<'_>, accepted: &mut dyn FnMut(usize)| {
            *sessions += 1;
            self.hand_over(target, c, messages, deadline, accepted)
        };
        match target.auth_method {
            AuthMethod::None => run(&Credential::None, accepted),
            AuthMethod::Plain => match secrets.password.as_ref() {
                None => failed(Error::param("password", "missing")),
                Some(password) => run(
                    &Credential::Password {
                        user: target.auth_identity(),
                        password,
                    },
                    accepted,
                ),
            },
            AuthMethod::GoogleOAuth2 | AuthMethod::MicrosoftOAuth2 | AuthMethod::OAuth2 => {
                if let Err(e) = self.destination_allowed(target) {
                    return failed(e);
                }
                let tokens = TokenManager::new(self.settings, self.http).with_deadline(deadline);
                let user = target.auth_identity();
                let first = match tokens.access_token(target, secrets, false) {
                    Ok(t) => t,
                    Err(e) => return failed(e),
                };
                let b = run(
                    &Credential::Bearer {
                        user,
                        token: &first.token,
                    },
                    accepted,
                );
                // a cached token may have been revoked: refresh once and retry once
                let rejected =
                    b.done.is_empty() && b.stopped.as_ref().is_some_and(Error::is_auth_rejected);
                if !(rejected && first.from_cache) {
                    return b;
                }
                match tokens.access_token(target, secrets, true) {
                    Ok(fresh) => run(
                        &Credential::Bearer {
                            user,
                            token: &fresh.token,
                        },
                        accepted,
                    ),
                    Err(e) => failed(e),
                }
            }
        }
    }

    /// Refuse a Graph target whose host is not Graph's before any token is got for it (a
    /// minting flow would otherwise mint one for nothing); SMTP hosts are bound instead.
    fn destination_allowed(&self, target: &SmtpTarget) -> Result<()> {
        if target.is_graph() {
            crate::oauth2::provider::graph_url(target, &self.settings.provider_hosts)?;
        }
        Ok(())
    }

    /// The one place that chooses the transport: one SMTP session, or the Graph requests, for
    /// `messages` (none: log in only, the login check).
    fn hand_over(
        &self,
        target: &SmtpTarget,
        credential: &Credential<'_>,
        messages: &[Outgoing],
        deadline: Instant,
        accepted: &mut dyn FnMut(usize),
    ) -> Batch {
        match (target.transport(), credential) {
            (Transport::Smtp, _) => smtp::deliver_batch(
                self.settings,
                target,
                credential,
                messages,
                deadline,
                accepted,
            ),
            (Transport::Graph, Credential::Bearer { token, .. }) => graph::deliver_batch(
                self.settings,
                self.http,
                target,
                token,
                messages,
                deadline,
                accepted,
            ),
            (Transport::Graph, _) => Batch {
                done: Vec::new(),
                stopped: Some(Error::param(
                    "transport",
                    format!(
                        "target '{}': transport graph needs auth-method microsoft-oauth2",
                        target.name
                    ),
                )),
            },
        }
    }

    /// The waiting messages of `target` (or of every target), oldest first per target.
    pub fn outbox_list(&self, target: Option<&str>) -> Result<Vec<outbox::Listed>> {
        let names = match target {
            Some(t) => {
                crate::config::validate::target_name(t).map_err(|m| Error::param("target", m))?;
                vec![t.to_string()]
            }
            None => outbox::targets(self.settings),
        };
        let mut out = Vec::new();
        for t in names {
            let (entries, _) = outbox::entries(self.settings, &t)?;
            out.extend(entries.iter().map(outbox::Listed::from));
        }
        Ok(out)
    }

    /// Remove every waiting message of target `name` without sending it, each recorded as
    /// given up with `reason`: the target was deleted, and a new target of the same name must
    /// not deliver them. Returns how many there were.
    pub fn discard_outbox(&self, name: &str, reason: &str) -> Result<usize> {
        let _lock = self.outbox_lock(name)?;
        let (entries, _) = outbox::entries(self.settings, name)?;
        for e in &entries {
            outbox::remove(self.settings, name, &e.id)?;
            let _ = outbox::record_given_up(self.settings, name, &e.title, reason);
        }
        outbox::remove_dir_if_empty(self.settings, name);
        Ok(entries.len())
    }

    /// The lock a flush of target `name` holds while it sends: whoever removes a waiting
    /// message without sending it takes it too, so nothing on the wire is dropped.
    fn outbox_lock(&self, name: &str) -> Result<FileLock> {
        outbox::ensure_meta_dir(self.settings)?;
        FileLock::exclusive_until(
            &outbox::flush_lock_file(self.settings, name),
            Instant::now() + self.settings.lock_timeout,
            &format!("the outbox of target '{name}'"),
        )
    }

    /// Remove a waiting message without sending it (the admin's decision; recorded as given
    /// up). 404 if there is no such entry.
    pub fn outbox_drop(&self, id: &str) -> Result<outbox::Listed> {
        let entry = outbox::find(self.settings, id)?.ok_or_else(|| {
            Error::param(
                "id",
                format!("no outbox entry {id} (see `oxnotify outbox list`)"),
            )
        })?;
        let _lock = self.outbox_lock(&entry.target)?;
        outbox::remove(self.settings, &entry.target, &entry.id)?;
        outbox::remove_dir_if_empty(self.settings, &entry.target);
        let _ = outbox::record_given_up(
            self.settings,
            &entry.target,
            &entry.title,
            "dropped by the admin",
        );
        Ok(outbox::Listed::from(&entry))
    }
}

/// The enabled target `name` and its secrets.
fn usable_target(config: &NotificationConfig, name: &str) -> Result<(SmtpTarget, SmtpSecrets)> {
    let target = config.smtp_target(name)?;
    if target.disable {
        return Err(Error::param(
            "target",
            format!("target '{name}' is disabled (set disable 0 to use it)"),
        ));
    }
    let secrets = config.smtp_secrets(name)?;
    Ok((target, secrets))
}
