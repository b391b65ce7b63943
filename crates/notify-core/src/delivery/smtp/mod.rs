//! SMTP delivery over lettre's `AsyncSmtpConnection`: connect (implicit TLS, or STARTTLS which is
//! then mandatory), authenticate, MAIL/RCPT/DATA, each step with its own error.
//!
//! XOAUTH2 is sent in the two-step form (`AUTH XOAUTH2`, wait for 334, then the response)
//! rather than as an initial response on the AUTH line: Dovecot accepts at most 1024 bytes on
//! that line and Postfix cuts it at 2048, while real Microsoft access tokens are 1.5-2.5 KB.
//!
//! One session can carry several messages ([`deliver_batch`]: the outbox flush and bursts), so
//! a burst costs one connection and one AUTH instead of one each.
//!
//! The whole session ends by its deadline ([`deadline::run`]), each step by the SMTP timeout. Every error leaves
//! through one place ([`deliver`]), which removes the credential in any encoding the server
//! may have echoed, strips control characters, caps the length and adds the admin hint for
//! the reply ([`replies`]).

mod deadline;
mod replies;
pub mod stream;
mod tls;

use crate::config::smtp::{SmtpMode, SmtpTarget};
use crate::error::{Error, Result, SmtpStep};
use crate::redact::{self, Redactor};
use crate::secret::Secret;
use crate::settings::Settings;
use base64::Engine;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::{Address, Message};
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

/// How to authenticate.
#[derive(Debug)]
pub enum Credential<'a> {
    /// No AUTH.
    None,
    /// PLAIN or LOGIN.
    Password {
        /// Login.
        user: &'a str,
        /// Password.
        password: &'a Secret,
    },
    /// XOAUTH2 with a bearer token.
    Bearer {
        /// SASL identity (`user=`).
        user: &'a str,
        /// Access token.
        token: &'a Secret,
    },
}

/// One raw command line; `Debug` never shows it because it may carry a credential.
struct Line<'a>(&'a str);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

/// The base64 XOAUTH2 initial response: `user=<id>^Aauth=Bearer <token>^A^A`.
pub fn xoauth2_response(user: &str, token: &Secret) -> Secret {
    Secret::new(
        base64::engine::general_purpose::STANDARD.encode(xoauth2_string(user, token).expose()),
    )
}

/// The XOAUTH2 initial response before base64: `user=<id>^Aauth=Bearer <token>^A^A` (what
/// the token broker hands an MTA that base64-encodes it itself).
pub fn xoauth2_string(user: &str, token: &Secret) -> Secret {
    Secret::new(format!(
        "user={user}\x01auth=Bearer {}\x01\x01",
        token.expose()
    ))
}

fn smtp_error(target: &SmtpTarget, step: SmtpStep, e: lettre::transport::smtp::Error) -> Error {
    let code = e.status().map(u16::from);
    // 4xx replies, and failures without a reply (connection refused or reset, timeouts, a
    // connection closed mid-way), may go away on a later attempt; 5xx replies and TLS
    // certificate problems do not
    let transient = match code {
        Some(c) => (400..500).contains(&c),
        None => !e.is_tls() && !e.is_client() && !e.is_permanent(),
    };
    let mut message = e.to_string();
    if step == SmtpStep::Tls || step == SmtpStep::Connect {
        // lettre's TLS errors hide the cause in the source chain
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            let text = s.to_string();
            // lettre's own text may already carry its source's
            if !message.contains(&text) {
                message.push_str(&format!(": {text}"));
            }
            src = s.source();
        }
    }
    Error::Smtp {
        target: target.name.clone(),
        step,
        message,
        code,
        transient,
    }
}

/// A message ready for the wire: its envelope and its formatted bytes (what the outbox
/// spools, and what one session can carry several of).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Envelope sender (MAIL FROM); `None` is the null sender.
    pub from: Option<Address>,
    /// Envelope recipients (RCPT TO).
    pub to: Vec<Address>,
    /// The formatted message (headers and body, CRLF line ends).
    pub body: Vec<u8>,
}

impl Outgoing {
    /// Envelope and bytes of a built message.
    pub fn of(message: &Message) -> Self {
        let envelope = message.envelope();
        Outgoing {
            from: envelope.from().cloned(),
            to: envelope.to().to_vec(),
            body: message.formatted(),
        }
    }
}

/// What one SMTP session did with a list of messages.
#[derive(Debug, Default)]
pub struct Batch {
    /// Results of the first `done.len()` messages, in order: accepted by the server, or
    /// refused for good (a 5xx reply to MAIL, RCPT or DATA; the session went on after RSET).
    pub done: Vec<Result<()>>,
    /// Why the session ended before the remaining messages: connect, TLS or AUTH failed, or a
    /// message got a temporary reply or lost the connection (that message is not in `done`).
    pub stopped: Option<Error>,
}

impl Batch {
    /// The result of a one-message session.
    pub fn into_single(self) -> Result<()> {
        match (self.done.into_iter().next(), self.stopped) {
            (Some(r), _) => r,
            (None, Some(e)) => Err(e),
            (None, None) => Ok(()),
        }
    }
}

/// Deliver `message` to `target` with `credential`, in one SMTP session that ends by
/// `deadline`. Errors say the step, whether they are transient, and what to do; they carry no
/// credential, however the server echoed it.
pub fn deliver(
    settings: &Settings,
    target: &SmtpTarget,
    credential: &Credential<'_>,
    message: &Message,
    deadline: Instant,
) -> Result<()> {
    deliver_batch(
        settings,
        target,
        credential,
        &[Outgoing::of(message)],
        deadline,
        &mut |_| {},
    )
    .into_single()
}

/// Deliver `messages` in order over ONE SMTP session (one connect, one AUTH, then MAIL / RCPT /
/// DATA per message) that ends by `deadline`. `accepted(i)` runs as soon as the server has
/// taken message `i` (the outbox removes its spool file there, so a crash later in the session
/// does not send it again). A message refused for good is reported and the session goes on
/// with the next; a temporary reply or a lost connection ends the session.
pub fn deliver_batch(
    settings: &Settings,
    target: &SmtpTarget,
    credential: &Credential<'_>,
    messages: &[Outgoing],
    deadline: Instant,
    accepted: &mut dyn FnMut(usize),
) -> Batch {
    let redactor = redactor_for(credential);
    let server = (target.server.as_str(), target.effective_port());
    let addrs = match deadline::resolve(server) {
        Ok(a) => a,
        Err(e) => {
            return Batch {
                done: Vec::new(),
                stopped: Some(cannot_connect(target, &e)),
            }
        }
    };
    let mut batch = Batch::default();
    let s = Session::new(settings, target, deadline);
    let cut = deadline::run(
        deadline,
        s.run(credential, &addrs, messages, accepted, &mut batch),
    );
    let mut expired = false;
    match cut {
        Ok(()) => {}
        Err(deadline::Cut::Expired) => {
            expired = true;
            batch.stopped = Some(expired_in(target, s.step.get()));
        }
        Err(deadline::Cut::Runtime(e)) => batch.stopped = Some(cannot_connect(target, &e)),
    }
    let fix = |e: Error| explain(e, target, &redactor, expired, settings);
    batch.done = std::mem::take(&mut batch.done)
        .into_iter()
        .map(|r| r.map_err(fix))
        .collect();
    batch.stopped = batch.stopped.take().map(fix);
    batch
}

/// The cause when `e` is a failed TCP connection (refused, unreachable, timed out), as
/// opposed to a failed greeting or TLS handshake on a connection that was made.
fn tcp_failure(e: &lettre::transport::smtp::Error) -> Option<String> {
    use std::io::ErrorKind::*;
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ConnectionRefused
                    | TimedOut
                    | HostUnreachable
                    | NetworkUnreachable
                    | AddrNotAvailable
            )
            .then(|| io.to_string());
        }
        src = s.source();
    }
    None
}

/// The session to `target` could not start: the server's name does not resolve, or no
/// runtime for the session (out of file descriptors, say).
fn cannot_connect(target: &SmtpTarget, e: &dyn fmt::Display) -> Error {
    Error::Smtp {
        target: target.name.clone(),
        step: SmtpStep::Connect,
        message: format!(
            "cannot connect to {}:{}: {}",
            target.server,
            target.effective_port(),
            redact::one_line(&e.to_string(), redact::MAX_PEER_TEXT)
        ),
        code: None,
        transient: true,
    }
}

/// The deadline cut the session in `step`; [`explain`] words it as such.
fn expired_in(target: &SmtpTarget, step: SmtpStep) -> Error {
    Error::Smtp {
        target: target.name.clone(),
        step,
        message: String::new(),
        code: None,
        transient: true,
    }
}

/// Everything that could echo a credential back to us.
fn redactor_for(credential: &Credential<'_>) -> Redactor {
    match credential {
        Credential::None => Redactor::new(),
        Credential::Password { user, password } => {
            Redactor::new().secret(Some(password)).sasl(&Secret::new(
                base64::engine::general_purpose::STANDARD
                    .encode(format!("\0{user}\0{}", password.expose())),
            ))
        }
        Credential::Bearer { user, token } => Redactor::new()
            .secret(Some(token))
            .sasl(&xoauth2_response(user, token)),
    }
}

/// The final form of an SMTP error: redacted, one line, a deadline cut named as such, and
/// the admin hint for the reply.
fn explain(
    e: Error,
    target: &SmtpTarget,
    redactor: &Redactor,
    expired: bool,
    settings: &Settings,
) -> Error {
    let Error::Smtp {
        target: name,
        step,
        message,
        code,
        transient,
    } = e
    else {
        return e;
    };
    if expired {
        return Error::Smtp {
            target: name,
            step,
            message: format!(
                "the session did not finish within the delivery deadline of {} s (the server \
                 is too slow or stalls); oxnotify gave up and it is worth trying again later",
                settings.delivery_deadline.as_secs()
            ),
            code: None,
            transient: true,
        };
    }
    let mut message = redactor.peer_text(&message);
    if let Some(h) = code.and_then(|c| replies::hint(target, step, c, &message)) {
        message = format!("{message}; {h}");
    }
    Error::Smtp {
        target: name,
        step,
        message,
        code,
        transient,
    }
}

/// What became of one message on an open session.
enum Sent {
    /// The server took it (250 after DATA).
    Accepted,
    /// Refused for good (5xx); the session goes on, unless ending the transaction (RSET)
    /// failed, which is the second error.
    Refused(Error, Option<Error>),
    /// A temporary reply or a lost connection: the message is not sent and the session is over.
    Broke(Error),
}

/// One SMTP session with lettre's async client (run under the deadline by [`deadline::run`]);
/// `step` is where it is, so a deadline cut can name it.
struct Session<'a> {
    settings: &'a Settings,
    target: &'a SmtpTarget,
    deadline: Instant,
    step: Cell<SmtpStep>,
}

impl<'a> Session<'a> {
    /// A session to `target` that ends by `deadline`, not connected yet.
    fn new(settings: &'a Settings, target: &'a SmtpTarget, deadline: Instant) -> Self {
        Session {
            settings,
            target,
            deadline,
            step: Cell::new(SmtpStep::Connect),
        }
    }

    fn error(&self, step: SmtpStep, e: lettre::transport::smtp::Error) -> Error {
        smtp_error(self.target, step, e)
    }

    /// `fut` under the SMTP timeout, unless the session's deadline comes first (then the
    /// deadline cuts it, and says so). `Err(())`: the SMTP timeout.
    async fn timed<T>(&self, fut: impl Future<Output = T>) -> std::result::Result<T, ()> {
        let step_end = Instant::now() + self.settings.smtp_timeout;
        if step_end >= self.deadline {
            return Ok(fut.await);
        }
        tokio::time::timeout_at(step_end.into(), fut)
            .await
            .map_err(|_| ())
    }

    /// One network step of the session: lettre's result, or a timeout after the SMTP timeout
    /// (the deadline of the whole session is the outer bound).
    async fn within<T>(
        &self,
        step: SmtpStep,
        fut: impl Future<Output = std::result::Result<T, lettre::transport::smtp::Error>>,
    ) -> Result<T> {
        self.step.set(step);
        match self.timed(fut).await {
            Ok(r) => r.map_err(|e| self.error(step, e)),
            Err(_) => Err(Error::Smtp {
                target: self.target.name.clone(),
                step,
                message: format!(
                    "no reply within {} s (the SMTP timeout)",
                    self.settings.smtp_timeout.as_secs()
                ),
                code: None,
                transient: true,
            }),
        }
    }

    async fn run(
        &self,
        credential: &Credential<'_>,
        addrs: &[SocketAddr],
        messages: &[Outgoing],
        accepted: &mut dyn FnMut(usize),
        batch: &mut Batch,
    ) {
        let mut conn = match self.open(credential, addrs).await {
            Ok(c) => c,
            Err(e) => {
                batch.stopped = Some(e);
                return;
            }
        };
        for (i, m) in messages.iter().enumerate() {
            match self.send_one(&mut conn, m).await {
                Sent::Accepted => {
                    accepted(i);
                    batch.done.push(Ok(()));
                }
                Sent::Refused(e, ended) => {
                    batch.done.push(Err(e));
                    if let Some(r) = ended {
                        batch.stopped = Some(r);
                        break;
                    }
                }
                Sent::Broke(e) => {
                    batch.stopped = Some(e);
                    break;
                }
            }
        }
        if batch.stopped.is_none() {
            let _ = self.timed(conn.quit()).await;
        } else {
            let _ = self.timed(conn.abort()).await;
        }
    }

    /// One message on the open session `conn`: what became of it, and whether the session can
    /// go on (the batch and the relay's long-lived session decide alike).
    async fn send_one(&self, conn: &mut AsyncSmtpConnection, message: &Outgoing) -> Sent {
        match self.transfer(conn, message).await {
            Ok(()) => Sent::Accepted,
            Err(e) if !e.is_transient() => {
                // end the failed transaction; the connection itself is still good
                let ended = self
                    .within(SmtpStep::Sender, conn.command(Rset))
                    .await
                    .err();
                Sent::Refused(e, ended)
            }
            Err(e) => Sent::Broke(e),
        }
    }

    /// Connect (each address of the server in turn), TLS, AUTH: a session ready for MAIL FROM.
    async fn open(
        &self,
        credential: &Credential<'_>,
        addrs: &[SocketAddr],
    ) -> Result<AsyncSmtpConnection> {
        let (settings, target) = (self.settings, self.target);
        let hello = ClientId::Domain(settings.hello_name.clone());
        let tls = || tls::parameters(&target.server).map_err(|e| self.error(SmtpStep::Tls, e));
        let step = match target.mode {
            SmtpMode::Tls => SmtpStep::Tls,
            SmtpMode::Starttls | SmtpMode::Insecure => SmtpStep::Connect,
        };
        let mut last = None;
        let mut conn = None;
        for addr in addrs {
            let params = match target.mode {
                SmtpMode::Tls => Some(tls()?),
                SmtpMode::Starttls | SmtpMode::Insecure => None,
            };
            let attempt = AsyncSmtpConnection::connect_tokio1(
                *addr,
                Some(settings.smtp_timeout),
                &hello,
                params,
                None,
            );
            self.step.set(step);
            match self.timed(attempt).await {
                Ok(Ok(c)) => {
                    conn = Some(c);
                    break;
                }
                Ok(Err(e)) => match tcp_failure(&e) {
                    // the TCP connection itself failed: say where to, as the admin checks it
                    Some(cause) => {
                        last = Some(Error::Smtp {
                            target: target.name.clone(),
                            step: SmtpStep::Connect,
                            message: format!(
                                "cannot connect to {}:{} ({addr}): {cause}",
                                target.server,
                                target.effective_port()
                            ),
                            code: None,
                            transient: true,
                        })
                    }
                    None => last = Some(self.error(step, e)),
                },
                Err(_) => {
                    last = Some(Error::Smtp {
                        target: target.name.clone(),
                        step,
                        message: format!(
                            "no greeting from {addr} within {} s (the SMTP timeout)",
                            settings.smtp_timeout.as_secs()
                        ),
                        code: None,
                        transient: true,
                    })
                }
            }
        }
        let mut conn = match (conn, last) {
            (Some(c), _) => c,
            (None, Some(e)) => return Err(e),
            (None, None) => {
                return Err(Error::Smtp {
                    target: target.name.clone(),
                    step: SmtpStep::Connect,
                    message: "the server name resolves to no address".into(),
                    code: None,
                    transient: true,
                })
            }
        };
        if target.mode == SmtpMode::Starttls {
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(Error::Smtp {
                    target: target.name.clone(),
                    step: SmtpStep::Tls,
                    message:
                        "the server does not offer STARTTLS; refusing to continue without TLS \
                              (check the port: 587 is STARTTLS, 465 is implicit TLS = mode tls)"
                            .into(),
                    code: None,
                    transient: false,
                });
            }
            let params = tls()?;
            self.within(SmtpStep::Tls, conn.starttls(params, &hello))
                .await?;
        }
        if let Err(e) = self.authenticate(&mut conn, credential).await {
            conn.abort().await;
            return Err(e);
        }
        Ok(conn)
    }

    async fn authenticate(
        &self,
        conn: &mut AsyncSmtpConnection,
        credential: &Credential<'_>,
    ) -> Result<()> {
        let target = self.target;
        let fail = |message: String, code: Option<u16>| Error::Smtp {
            target: target.name.clone(),
            step: SmtpStep::Auth,
            message,
            code,
            transient: code.is_some_and(|c| (400..500).contains(&c)),
        };
        match credential {
            Credential::None => Ok(()),
            Credential::Password { user, password } => {
                let creds = Credentials::new(user.to_string(), password.expose().to_string());
                self.within(
                    SmtpStep::Auth,
                    conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds),
                )
                .await
                .map(|_| ())
            }
            Credential::Bearer { user, token } => {
                if !conn
                    .server_info()
                    .supports_auth_mechanism(Mechanism::Xoauth2)
                {
                    return Err(fail(
                        format!(
                            "the server does not offer AUTH XOAUTH2 (it offers: {}); check server and port{}",
                            conn.server_info(),
                            if target.mode == SmtpMode::Insecure { ", and use TLS" } else { "" }
                        ),
                        None,
                    ));
                }
                let first = self
                    .within(SmtpStep::Auth, conn.command(Line("AUTH XOAUTH2")))
                    .await?;
                if !first.has_code(334) {
                    return Err(fail(
                        format!("unexpected reply to AUTH XOAUTH2: {}", first.code()),
                        Some(first.code().into()),
                    ));
                }
                let ir = xoauth2_response(user, token);
                let reply = self
                    .within(SmtpStep::Auth, conn.command(Line(ir.expose())))
                    .await?;
                if reply.has_code(334) {
                    // an error challenge (base64 JSON); RFC 7628: answer with an empty line, the
                    // server then sends the final 535
                    let challenge = reply
                        .first_line()
                        .and_then(replies::xoauth2_challenge)
                        .unwrap_or_else(|| "the server sent an error challenge".into());
                    return match self.within(SmtpStep::Auth, conn.command(Line(""))).await {
                        Err(mut err) => {
                            if let Error::Smtp { message, .. } = &mut err {
                                *message = format!("{challenge}; {message}");
                            }
                            Err(err)
                        }
                        Ok(r) => Err(fail(
                            format!("{challenge}; then reply {}", r.code()),
                            Some(r.code().into()),
                        )),
                    };
                }
                Ok(())
            }
        }
    }

    async fn transfer(&self, conn: &mut AsyncSmtpConnection, message: &Outgoing) -> Result<()> {
        let target = self.target;
        let body = &message.body;
        let mut params = Vec::new();
        let non_ascii_addr = message
            .from
            .as_ref()
            .is_some_and(|a| !AsRef::<str>::as_ref(a).is_ascii())
            || message
                .to
                .iter()
                .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii_addr {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(Error::Smtp {
                    target: target.name.clone(),
                    step: SmtpStep::Sender,
                    message: "non-ASCII addresses need SMTPUTF8, which the server does not offer"
                        .into(),
                    code: None,
                    transient: false,
                });
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        if !body.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        self.within(
            SmtpStep::Sender,
            conn.command(Mail::new(message.from.clone(), params)),
        )
        .await?;
        for to in &message.to {
            if let Err(mut err) = self
                .within(
                    SmtpStep::Recipient,
                    conn.command(Rcpt::new(to.clone(), vec![])),
                )
                .await
            {
                if let Error::Smtp { message, .. } = &mut err {
                    *message = format!("{to}: {message}");
                }
                return Err(err);
            }
        }
        self.within(SmtpStep::Data, conn.command(Data)).await?;
        // body and terminator in one write: lettre's `message()` writes them separately, and the
        // small second write then waits for the peer's delayed ACK (Nagle), ~40 ms per message
        match std::str::from_utf8(body) {
            Ok(text) => {
                self.within(SmtpStep::Data, conn.command(Line(&dot_stuffed(text))))
                    .await?
            }
            Err(_) => self.within(SmtpStep::Data, conn.message(body)).await?,
        };
        Ok(())
    }
}

/// The DATA payload without the final CRLF that [`Line`] adds: every line break (CRLF, a
/// bare CR, a bare LF) becomes CRLF (RFC 5321 section 2.3.8: no bare CR or LF on the wire),
/// lines starting with '.' get another '.' (section 4.5.2), then the end-of-data line '.'.
/// One pass over the text.
fn dot_stuffed(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32 + 16);
    let mut rest = text;
    while !rest.is_empty() {
        let (line, tail) = match rest.find(['\r', '\n']) {
            Some(i) => {
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                (&rest[..i], Some(&rest[i + skip..]))
            }
            None => (rest, None),
        };
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
        rest = tail.unwrap_or("");
    }
    out.push('.');
    out
}

#[cfg(test)]
mod tests {
    use super::dot_stuffed;

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            dot_stuffed("a\r\n.b\r\n.\r\nc\r\n"),
            "a\r\n..b\r\n..\r\nc\r\n."
        );
        assert_eq!(dot_stuffed(".x"), "..x\r\n.");
        assert_eq!(dot_stuffed(""), ".");
    }

    #[test]
    fn bare_cr_and_lf_become_crlf() {
        assert_eq!(
            dot_stuffed("a\rb\nc\r\n\r.d\n\ne"),
            "a\r\nb\r\nc\r\n\r\n..d\r\n\r\ne\r\n."
        );
        let wire = dot_stuffed("x\ry\r\r\nz\n");
        assert!(!wire.replace("\r\n", "").contains(['\r', '\n']), "{wire:?}");
    }
}
