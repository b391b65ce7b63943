//! An SMTP session that stays open between messages: the relay ([`crate::delivery::relay`])
//! hands it messages one at a time as they arrive, instead of a list known up front
//! ([`super::deliver_batch`]). Same connect, TLS, AUTH and transfer steps, same deadline relay
//! and the same redaction of every error as a batch session.

use super::deadline::DeadlineRelay;
use super::{explain, open, redactor_for, transfer, Credential, Outgoing};
use crate::config::smtp::SmtpTarget;
use crate::error::{Error, Result, SmtpStep};
use crate::redact::{self, Redactor};
use crate::settings::Settings;
use lettre::transport::smtp::client::SmtpConnection;
use lettre::transport::smtp::commands::Rset;
use std::time::Instant;

/// An open, authenticated session to a target, ready for the next message.
pub struct OpenSession<'a> {
    settings: &'a Settings,
    target: &'a SmtpTarget,
    conn: SmtpConnection,
    relay: DeadlineRelay,
    redactor: Redactor,
    deadline: Instant,
    broken: bool,
}

impl std::fmt::Debug for OpenSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSession")
            .field("target", &self.target.name)
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
        let relay = DeadlineRelay::start(server, settings.smtp_timeout, deadline).map_err(|e| {
            Error::Smtp {
                target: target.name.clone(),
                step: SmtpStep::Connect,
                message: format!(
                    "cannot connect to {}:{}: {}",
                    server.0,
                    server.1,
                    redact::one_line(&e.to_string(), redact::MAX_PEER_TEXT)
                ),
                code: None,
                transient: true,
            }
        })?;
        match open(settings, target, credential, relay.local_addr()) {
            Ok(conn) => Ok(OpenSession {
                settings,
                target,
                conn,
                relay,
                redactor,
                deadline,
                broken: false,
            }),
            Err(e) => Err(explain(e, target, &redactor, relay.expired(), settings)),
        }
    }

    /// When the session will be cut.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// False once a message got a temporary reply or the connection broke: open a new one.
    pub fn usable(&self) -> bool {
        !self.broken && !self.relay.expired()
    }

    /// Send one message. `Ok` once the server accepted it (250 after DATA). A permanent
    /// refusal leaves the session usable (RSET); a transient one ends it.
    pub fn send(&mut self, message: &Outgoing) -> Result<()> {
        let r = transfer(&mut self.conn, self.target, message);
        if let Err(e) = &r {
            // a transient failure ends the session; a permanent one ends only the transaction
            self.broken = e.is_transient() || self.conn.command(Rset).is_err();
        }
        r.map_err(|e| {
            explain(
                e,
                self.target,
                &self.redactor,
                self.relay.expired(),
                self.settings,
            )
        })
    }

    /// End the session: QUIT if it is still good, else drop the connection.
    pub fn close(mut self) {
        if self.usable() {
            let _ = self.conn.quit();
        } else {
            self.conn.abort();
        }
    }
}
