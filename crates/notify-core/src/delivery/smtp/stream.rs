//! An SMTP session that stays open between messages: the relay ([`crate::delivery::relay`])
//! hands it messages one at a time as they arrive, instead of a list known up front
//! ([`super::deliver_batch`]). Same connect, TLS, AUTH and transfer steps, the same deadline on
//! the session's own connection and the same redaction of every error as a batch session: the
//! session keeps its single-threaded runtime, and every step runs in it under the deadline.

use super::deadline;
use super::{
    cannot_connect, expired_in, explain, redactor_for, Credential, Outgoing, Sent, Session,
};
use crate::config::smtp::SmtpTarget;
use crate::error::{Error, Result, SmtpStep};
use crate::redact::Redactor;
use crate::settings::Settings;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use std::time::Instant;

/// An open, authenticated session to a target, ready for the next message.
pub struct OpenSession<'a> {
    session: Session<'a>,
    runtime: tokio::runtime::Runtime,
    conn: Option<AsyncSmtpConnection>,
    redactor: Redactor,
    broken: bool,
}

impl std::fmt::Debug for OpenSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSession")
            .field("target", &self.session.target.name)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<'a> OpenSession<'a> {
    /// Connect, TLS and AUTH with `credential`; the whole session ends by `deadline`.
    pub fn open(
        settings: &'a Settings,
        target: &'a SmtpTarget,
        credential: &Credential<'_>,
        deadline: Instant,
    ) -> Result<Self> {
        let redactor = redactor_for(credential);
        let server = (target.server.as_str(), target.effective_port());
        let addrs = deadline::resolve(server).map_err(|e| cannot_connect(target, &e))?;
        let runtime = deadline::runtime().map_err(|e| cannot_connect(target, &e))?;
        let session = Session::new(settings, target, deadline);
        let opened = runtime.block_on(async {
            tokio::time::timeout_at(deadline.into(), session.open(credential, &addrs)).await
        });
        let conn = match opened {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(explain(e, target, &redactor, false, settings)),
            Err(_) => {
                let e = expired_in(target, session.step.get());
                return Err(explain(e, target, &redactor, true, settings));
            }
        };
        Ok(OpenSession {
            session,
            runtime,
            conn: Some(conn),
            redactor,
            broken: false,
        })
    }

    /// When the session will be cut.
    pub fn deadline(&self) -> Instant {
        self.session.deadline
    }

    /// False once a message got a temporary reply, the connection broke or the deadline
    /// passed: open a new one.
    pub fn usable(&self) -> bool {
        !self.broken && self.conn.is_some() && Instant::now() < self.session.deadline
    }

    /// Send one message. `Ok` once the server accepted it (250 after DATA). A permanent
    /// refusal leaves the session usable (RSET); a transient one ends it.
    pub fn send(&mut self, message: &Outgoing) -> Result<()> {
        let OpenSession {
            session,
            runtime,
            conn,
            redactor,
            broken,
        } = self;
        let Some(c) = conn.as_mut() else {
            return Err(Error::Smtp {
                target: session.target.name.clone(),
                step: SmtpStep::Connect,
                message: "the session is closed".into(),
                code: None,
                transient: true,
            });
        };
        let outcome = runtime.block_on(async {
            tokio::time::timeout_at(session.deadline.into(), async {
                match session.send_one(c, message).await {
                    Sent::Accepted => Ok(()),
                    Sent::Refused(e, ended) => {
                        if ended.is_some() {
                            *broken = true;
                        }
                        Err(e)
                    }
                    Sent::Broke(e) => {
                        *broken = true;
                        Err(e)
                    }
                }
            })
            .await
        });
        let (result, expired) = match outcome {
            Ok(r) => (r, false),
            Err(_) => {
                // the deadline cut the session: its connection is gone
                *broken = true;
                *conn = None;
                (Err(expired_in(session.target, session.step.get())), true)
            }
        };
        result.map_err(|e| explain(e, session.target, redactor, expired, session.settings))
    }

    /// End the session: QUIT if it is still good, else drop the connection.
    pub fn close(mut self) {
        let usable = self.usable();
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // bounded by the SMTP timeout alone: the deadline may have passed already
        let wait = self.session.settings.smtp_timeout;
        self.runtime.block_on(async {
            if usable {
                let _ = tokio::time::timeout(wait, conn.quit()).await;
            } else {
                let _ = tokio::time::timeout(wait, conn.abort()).await;
            }
        });
    }
}
