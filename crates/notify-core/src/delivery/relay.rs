//! Relaying ready messages for the host's MTA (`oxnotify-relay`): a message that already has
//! its envelope and MIME bytes goes through a target, and the caller learns only after the
//! upstream server took it (or after it is durably in the outbox, in that mode), so an MTA
//! answers its own client on the truth and never loses or duplicates by design.
//!
//! One [`RelayPool`] per process: every message for a target joins that target's queue, and
//! a few workers (at most the target's `max-connections`, taken as connection [`slots`] like
//! every other path) each hold ONE upstream session open while messages keep coming, so a
//! burst of a mail queue goes over few sessions with one AUTH each. Credentials come from the
//! token cache through [`TokenManager`] (one refresh per burst under the per-target lock; a
//! cached token the server rejects is refreshed once); errors are the ordinary typed
//! [`Error`]s, redacted like every SMTP error.
//!
//! A message waits in the queue at most [`Settings::delivery_deadline`]; one no session took
//! by then is withdrawn (never sent later), so "not accepted" always means "not sent".

use super::smtp::stream::OpenSession;
use super::smtp::{Credential, Outgoing};
use super::{outbox, slots, usable_target, Delivery};
use crate::config::smtp::{AuthMethod, SmtpSecrets, SmtpTarget};
use crate::config::NotificationConfig;
use crate::error::{Error, Result, SmtpStep};
use crate::oauth2::TokenHttpClient;
use crate::secret::Secret;
use crate::settings::Settings;
use crate::state::now;
use crate::tokens::TokenManager;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an idle upstream session stays open for the next message of a queue run.
const IDLE_QUIT: Duration = Duration::from_secs(3);

/// Waiting messages per running worker before another worker (another session) starts.
const BACKLOG_PER_WORKER: usize = 8;

/// Where a relayed message goes before the caller hears "accepted".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Accepted once the upstream server took it (the default).
    Upstream,
    /// Accepted once it is durably in the outbox; the outbox flush sends it.
    Outbox,
}

/// Counters of a pool (for the relay's log and the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Upstream sessions opened (AUTH done).
    pub sessions: u64,
    /// Messages the upstream server accepted.
    pub sent: u64,
    /// Messages refused or not sent.
    pub failed: u64,
}

/// The long-lived relay service of one process (see the module docs).
pub struct RelayPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RelayPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayPool").finish_non_exhaustive()
    }
}

struct Inner {
    settings: Settings,
    http: Arc<dyn TokenHttpClient>,
    queues: Mutex<HashMap<String, Queue>>,
    arrived: Condvar,
    sessions: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Arc<Job>>,
    workers: usize,
}

struct Job {
    message: Outgoing,
    state: Mutex<JobState>,
    changed: Condvar,
}

enum JobState {
    Waiting,
    Taken,
    Withdrawn,
    Done(Result<()>),
}

impl Job {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker takes it; false if its caller gave up waiting.
    fn take(&self) -> bool {
        let mut s = self.lock();
        if matches!(*s, JobState::Waiting) {
            *s = JobState::Taken;
            true
        } else {
            false
        }
    }

    fn finish(&self, result: Result<()>) {
        *self.lock() = JobState::Done(result);
        self.changed.notify_all();
    }
}

impl RelayPool {
    /// A pool with these settings, getting tokens with `http`.
    pub fn new(settings: Settings, http: Arc<dyn TokenHttpClient>) -> Self {
        RelayPool {
            inner: Arc::new(Inner {
                settings,
                http,
                queues: Mutex::new(HashMap::new()),
                arrived: Condvar::new(),
                sessions: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            sessions: self.inner.sessions.load(Ordering::Relaxed),
            sent: self.inner.sent.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
        }
    }

    /// Relay `message` through target `name`. [`Delivery::Sent`] once the upstream server
    /// accepted it; [`Delivery::Queued`] once it is durably in the outbox ([`RelayMode::Outbox`]);
    /// an error otherwise, transient ([`Error::is_transient`]: the caller should keep the
    /// message and retry) or permanent (the upstream refusal, redacted). Within
    /// [`Settings::delivery_deadline`] plus the end of a session already sending it.
    pub fn relay(&self, name: &str, message: Outgoing, mode: RelayMode) -> Result<Delivery> {
        let config = NotificationConfig::load(&self.inner.settings)?;
        let (target, _) = usable_target(&config, name)?;
        match mode {
            RelayMode::Outbox => self.to_outbox(&config, name, &message),
            RelayMode::Upstream => self
                .upstream(name, target.connection_limit().max(1) as usize, message)
                .map(|()| Delivery::Sent),
        }
    }

    fn to_outbox(
        &self,
        config: &NotificationConfig,
        name: &str,
        message: &Outgoing,
    ) -> Result<Delivery> {
        let settings = &self.inner.settings;
        let mut entry = outbox::Entry::new(name, &subject_of(&message.body), message, now(), "");
        entry.attempts = 0;
        entry.last_error = "relayed; not tried yet".into();
        outbox::save(settings, &entry)?;
        // the outbox timer would send it too; a flush now makes it leave at once
        let (settings, http, config, target) = (
            settings.clone(),
            self.inner.http.clone(),
            config.clone(),
            name.to_string(),
        );
        std::thread::spawn(move || {
            super::Deliverer::new(&settings, http.as_ref()).flush_target(&config, &target);
        });
        Ok(Delivery::Queued {
            id: entry.id,
            reason: "relayed into the outbox".into(),
        })
    }

    fn upstream(&self, name: &str, limit: usize, message: Outgoing) -> Result<()> {
        let job = Arc::new(Job {
            message,
            state: Mutex::new(JobState::Waiting),
            changed: Condvar::new(),
        });
        let inner = &self.inner;
        {
            let mut queues = inner.lock();
            let q = queues.entry(name.to_string()).or_default();
            q.jobs.push_back(job.clone());
            if q.workers == 0
                || (q.workers < limit && q.jobs.len() > q.workers * BACKLOG_PER_WORKER)
            {
                q.workers += 1;
                let (inner, name) = (inner.clone(), name.to_string());
                std::thread::Builder::new()
                    .name("oxnotify-relay-upstream".into())
                    .spawn(move || inner.work(&name))
                    .map_err(|e| Error::io(outbox::dir(&self.inner.settings, "?"), e))?;
            }
        }
        inner.arrived.notify_all();
        let wait_until = Instant::now() + inner.settings.delivery_deadline;
        let mut state = job.lock();
        loop {
            match &*state {
                JobState::Done(_) => break,
                JobState::Waiting if Instant::now() >= wait_until => {
                    *state = JobState::Withdrawn;
                    return Err(Error::Smtp {
                        target: name.to_string(),
                        step: SmtpStep::Connect,
                        message: format!(
                            "no upstream session could take the message within {} s (all \
                             max-connections sessions busy or failing); it was not sent, \
                             try again later",
                            inner.settings.delivery_deadline.as_secs()
                        ),
                        code: None,
                        transient: true,
                    });
                }
                _ => {}
            }
            // a taken message is bounded by its session's own deadline
            let left = wait_until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(200));
            state = job
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        match std::mem::replace(&mut *state, JobState::Withdrawn) {
            JobState::Done(r) => r,
            _ => unreachable_done(name),
        }
    }
}

/// The loop above leaves only on `Done`; this keeps the match total without a panic.
fn unreachable_done(name: &str) -> Result<()> {
    Err(Error::Smtp {
        target: name.to_string(),
        step: SmtpStep::Data,
        message: "internal: relay result missing; the message may not have been sent".into(),
        code: None,
        transient: true,
    })
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Queue>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next waiting message of `name`, waiting up to `wait` for one. `None` means this
    /// worker is done: it has left the queue's count under the same lock, so a message that
    /// arrives later starts a new worker.
    fn next_job(&self, name: &str, wait: Duration) -> Option<Arc<Job>> {
        let until = Instant::now() + wait;
        let mut queues = self.lock();
        loop {
            let q = queues.entry(name.to_string()).or_default();
            if let Some(j) = q.jobs.pop_front() {
                return Some(j);
            }
            let now = Instant::now();
            if now >= until {
                q.workers = q.workers.saturating_sub(1);
                return None;
            }
            queues = self
                .arrived
                .wait_timeout(queues, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn finish(&self, job: &Job, result: Result<()>) {
        let counter = if result.is_ok() {
            &self.sent
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        job.finish(result);
    }

    /// One worker of target `name`: sessions while messages keep coming.
    fn work(&self, name: &str) {
        while let Some(first) = self.next_job(name, Duration::ZERO) {
            if !first.take() {
                continue;
            }
            let deadline = Instant::now() + self.settings.delivery_deadline;
            let opened = NotificationConfig::load(&self.settings)
                .and_then(|c| usable_target(&c, name))
                .and_then(|(target, secrets)| {
                    let slot =
                        slots::acquire(&self.settings, name, target.connection_limit(), deadline)?;
                    Ok((target, secrets, slot))
                });
            let (target, secrets, _slot) = match opened {
                Ok(x) => x,
                Err(e) => {
                    self.fail_waiting(name, &first, e);
                    continue;
                }
            };
            let mut session = match self.open(&target, &secrets, deadline) {
                Ok(s) => s,
                Err(e) => {
                    self.fail_waiting(name, &first, e);
                    continue;
                }
            };
            let mut job = first;
            loop {
                let r = session.send(&job.message);
                self.finish(&job, r);
                // stop taking messages while a slow one could still finish in time
                let left = session.deadline().saturating_duration_since(Instant::now());
                if !session.usable() || left < self.settings.smtp_timeout * 2 {
                    break;
                }
                // the next message whose caller still waits
                let next = loop {
                    match self.next_job(name, IDLE_QUIT) {
                        Some(j) if j.take() => break Some(j),
                        Some(_) => {}
                        None => break None,
                    }
                };
                match next {
                    Some(j) => job = j,
                    None => {
                        session.close();
                        return;
                    }
                }
            }
            session.close();
        }
    }

    /// The session could not start: `first` and everything waiting now get `error` (they
    /// would meet the same one), so a dead upstream answers a whole queue run at once.
    fn fail_waiting(&self, name: &str, first: &Job, error: Error) {
        self.finish(first, Err(error.clone()));
        let waiting: Vec<Arc<Job>> = self
            .lock()
            .get_mut(name)
            .map(|q| q.jobs.drain(..).collect())
            .unwrap_or_default();
        for j in waiting.iter().filter(|j| j.take()) {
            self.finish(j, Err(error.clone()));
        }
    }

    /// Credentials (cache, else one refresh under the target's lock), then an open session;
    /// a cached token the server rejects is refreshed once and the login tried once more.
    fn open<'t>(
        &'t self,
        target: &'t SmtpTarget,
        secrets: &SmtpSecrets,
        deadline: Instant,
    ) -> Result<OpenSession<'t>> {
        let user = target.auth_identity();
        let tokens = TokenManager::new(&self.settings, self.http.as_ref()).with_deadline(deadline);
        let session = |c: &Credential<'_>| {
            let s = OpenSession::open(&self.settings, target, c, deadline);
            if s.is_ok() {
                self.sessions.fetch_add(1, Ordering::Relaxed);
            }
            s
        };
        match target.auth_method {
            AuthMethod::None => session(&Credential::None),
            AuthMethod::Plain => {
                let password: &Secret = secrets
                    .password
                    .as_ref()
                    .ok_or_else(|| Error::param("password", "missing"))?;
                session(&Credential::Password { user, password })
            }
            AuthMethod::GoogleOAuth2 | AuthMethod::MicrosoftOAuth2 | AuthMethod::OAuth2 => {
                let first = tokens.access_token(target, secrets, false)?;
                match session(&Credential::Bearer {
                    user,
                    token: &first.token,
                }) {
                    Err(e) if e.is_auth_rejected() && first.from_cache => {
                        let fresh = tokens.access_token(target, secrets, true)?;
                        session(&Credential::Bearer {
                            user,
                            token: &fresh.token,
                        })
                    }
                    other => other,
                }
            }
        }
    }
}

/// The Subject header of a raw message (the outbox lists it), or a placeholder.
fn subject_of(body: &[u8]) -> String {
    let head = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(body, |i| &body[..i]);
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("subject")
                .then(|| crate::redact::one_line(v.trim(), 200))
        })
        .unwrap_or_else(|| "(relayed message without subject)".into())
}

#[cfg(test)]
mod tests {
    use super::subject_of;

    #[test]
    fn subject_comes_from_the_header_only() {
        assert_eq!(
            subject_of(b"From: a@b\r\nSubject: disk full\r\n\r\nSubject: no"),
            "disk full"
        );
        assert_eq!(
            subject_of(b"From: a@b\r\n\r\nSubject: body"),
            "(relayed message without subject)"
        );
    }
}
