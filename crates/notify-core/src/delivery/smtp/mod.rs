//! SMTP delivery over lettre's `SmtpConnection`: connect (implicit TLS, or STARTTLS which is
//! then mandatory), authenticate, MAIL/RCPT/DATA, each step with its own error.
//!
//! XOAUTH2 is sent in the two-step form (`AUTH XOAUTH2`, wait for 334, then the response)
//! rather than as an initial response on the AUTH line: Dovecot accepts at most 1024 bytes on
//! that line and Postfix cuts it at 2048, while real Microsoft access tokens are 1.5-2.5 KB.
//!
//! One session can carry several messages ([`deliver_batch`]: the outbox flush and bursts), so
//! a burst costs one connection and one AUTH instead of one each.
//!
//! The whole session ends by its deadline ([`deadline::DeadlineRelay`]). Every error leaves
//! through one place ([`deliver`]), which removes the credential in any encoding the server
//! may have echoed, strips control characters, caps the length and adds the admin hint for
//! the reply ([`replies`]).

mod deadline;
mod replies;
pub mod stream;

use crate::config::smtp::{SmtpMode, SmtpTarget};
use crate::error::{Error, Result, SmtpStep};
use crate::redact::{self, Redactor};
use crate::secret::Secret;
use crate::settings::Settings;
use base64::Engine;
use deadline::DeadlineRelay;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::{Address, Message};
use std::fmt;
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
            message.push_str(&format!(": {s}"));
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
    let relay = match DeadlineRelay::start(server, settings.smtp_timeout, deadline) {
        Ok(r) => r,
        Err(e) => {
            return Batch {
                done: Vec::new(),
                stopped: Some(Error::Smtp {
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
                }),
            }
        }
    };
    let mut batch = session(
        settings,
        target,
        credential,
        messages,
        relay.local_addr(),
        accepted,
    );
    let fix = |e: Error| explain(e, target, &redactor, relay.expired(), settings);
    batch.done = std::mem::take(&mut batch.done)
        .into_iter()
        .map(|r| r.map_err(fix))
        .collect();
    batch.stopped = batch.stopped.take().map(fix);
    batch
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

/// One SMTP session with lettre, connected through the relay at `addr`.
fn session(
    settings: &Settings,
    target: &SmtpTarget,
    credential: &Credential<'_>,
    messages: &[Outgoing],
    addr: std::net::SocketAddr,
    accepted: &mut dyn FnMut(usize),
) -> Batch {
    let mut conn = match open(settings, target, credential, addr) {
        Ok(c) => c,
        Err(e) => {
            return Batch {
                done: Vec::new(),
                stopped: Some(e),
            }
        }
    };
    let mut batch = Batch::default();
    for (i, m) in messages.iter().enumerate() {
        match transfer(&mut conn, target, m) {
            Ok(()) => {
                accepted(i);
                batch.done.push(Ok(()));
            }
            Err(e) if !e.is_transient() => {
                batch.done.push(Err(e));
                // end the failed transaction; the connection itself is still good
                if let Err(e) = conn.command(Rset) {
                    batch.stopped = Some(smtp_error(target, SmtpStep::Sender, e));
                    break;
                }
            }
            Err(e) => {
                batch.stopped = Some(e);
                break;
            }
        }
    }
    if batch.stopped.is_none() {
        let _ = conn.quit();
    } else {
        conn.abort();
    }
    batch
}

/// Connect, TLS, AUTH: a session ready for MAIL FROM.
fn open(
    settings: &Settings,
    target: &SmtpTarget,
    credential: &Credential<'_>,
    addr: std::net::SocketAddr,
) -> Result<SmtpConnection> {
    let hello = ClientId::Domain(settings.hello_name.clone());
    let timeout = Some(settings.smtp_timeout);
    let tls = || {
        TlsParameters::builder(target.server.clone())
            .build_rustls()
            .map_err(|e| smtp_error(target, SmtpStep::Tls, e))
    };
    let mut conn = match target.mode {
        SmtpMode::Tls => {
            let params = tls()?;
            SmtpConnection::connect(addr, timeout, &hello, Some(&params), None)
                .map_err(|e| smtp_error(target, SmtpStep::Tls, e))?
        }
        SmtpMode::Starttls | SmtpMode::Insecure => {
            SmtpConnection::connect(addr, timeout, &hello, None, None)
                .map_err(|e| smtp_error(target, SmtpStep::Connect, e))?
        }
    };
    if target.mode == SmtpMode::Starttls {
        if !conn.can_starttls() {
            conn.abort();
            return Err(Error::Smtp {
                target: target.name.clone(),
                step: SmtpStep::Tls,
                message: "the server does not offer STARTTLS; refusing to continue without TLS \
                          (check the port: 587 is STARTTLS, 465 is implicit TLS = mode tls)"
                    .into(),
                code: None,
                transient: false,
            });
        }
        let params = tls()?;
        conn.starttls(&params, &hello)
            .map_err(|e| smtp_error(target, SmtpStep::Tls, e))?;
    }
    if let Err(e) = authenticate(&mut conn, target, credential) {
        conn.abort();
        return Err(e);
    }
    Ok(conn)
}

fn authenticate(
    conn: &mut SmtpConnection,
    target: &SmtpTarget,
    credential: &Credential<'_>,
) -> Result<()> {
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
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
                .map(|_| ())
                .map_err(|e| smtp_error(target, SmtpStep::Auth, e))
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
            let first = conn
                .command(Line("AUTH XOAUTH2"))
                .map_err(|e| smtp_error(target, SmtpStep::Auth, e))?;
            if !first.has_code(334) {
                return Err(fail(
                    format!("unexpected reply to AUTH XOAUTH2: {}", first.code()),
                    Some(first.code().into()),
                ));
            }
            let ir = xoauth2_response(user, token);
            let reply = conn
                .command(Line(ir.expose()))
                .map_err(|e| smtp_error(target, SmtpStep::Auth, e))?;
            if reply.has_code(334) {
                // an error challenge (base64 JSON); RFC 7628: answer with an empty line, the
                // server then sends the final 535
                let challenge = reply
                    .first_line()
                    .and_then(replies::xoauth2_challenge)
                    .unwrap_or_else(|| "the server sent an error challenge".into());
                return match conn.command(Line("")) {
                    Err(e) => {
                        let mut err = smtp_error(target, SmtpStep::Auth, e);
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

fn transfer(conn: &mut SmtpConnection, target: &SmtpTarget, message: &Outgoing) -> Result<()> {
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
    conn.command(Mail::new(message.from.clone(), params))
        .map_err(|e| smtp_error(target, SmtpStep::Sender, e))?;
    for to in &message.to {
        conn.command(Rcpt::new(to.clone(), vec![])).map_err(|e| {
            let mut err = smtp_error(target, SmtpStep::Recipient, e);
            if let Error::Smtp { message, .. } = &mut err {
                *message = format!("{to}: {message}");
            }
            err
        })?;
    }
    conn.command(Data)
        .map_err(|e| smtp_error(target, SmtpStep::Data, e))?;
    // body and terminator in one write: lettre's `message()` writes them separately, and the
    // small second write then waits for the peer's delayed ACK (Nagle), ~40 ms per message
    let sent = match std::str::from_utf8(body) {
        Ok(text) => conn.command(Line(&dot_stuffed(text))),
        Err(_) => conn.message(body),
    };
    sent.map_err(|e| smtp_error(target, SmtpStep::Data, e))?;
    Ok(())
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
