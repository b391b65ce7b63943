//! One client connection: `mailin`'s SMTP state machine ([`mailin::Session`]) parses the
//! commands and keeps the protocol state; this module owns the socket, the deadlines, the
//! size limit and the answers. AUTH PLAIN is required before MAIL (no open relaying); the
//! answer to the end of DATA is given only after the upstream server answered
//! ([`notify_core::delivery::relay::RelayPool::relay`]):
//!
//! - 250 when it accepted (or the message is durably in the outbox, in that mode);
//! - the upstream 5xx with its text (redacted, one line) when it refused this message for
//!   good, so the MTA bounces with the real reason;
//! - 4xx for everything else (the upstream's 4xx, an unreachable server, a token that needs
//!   re-authorization, a config problem), so the MTA keeps the message queued and retries.

use crate::config::RelayConfig;
use crate::route::{self, NoRoute};
use lettre::Address;
use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder};
use notify_core::delivery::relay::RelayPool;
use notify_core::{Delivery, Error, NotificationConfig, SmtpStep};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::rc::Rc;
use std::str::FromStr;
use std::time::Duration;

/// What every connection shares.
pub struct Shared {
    /// The upstream side.
    pub pool: RelayPool,
    /// relay.conf.
    pub relay: RelayConfig,
    /// The name in the greeting.
    pub hostname: String,
}

/// How long a client may be silent (Postfix's own smtpd_timeout).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest line read (RFC 5321 allows 1000 octets; some clients send more).
const MAX_LINE: u64 = 64 * 1024;
/// Recipients per message.
const MAX_RECIPIENTS: usize = 1000;
/// mailin's parser needs a path inside `<>`: the null sender goes through it as this.
const NULL_SENDER: &str = "null-sender@oxnotify-relay.invalid";

/// One line on stderr (journald), never a credential.
pub fn log(line: &str) {
    let mut l = line.to_string();
    l.push('\n');
    let _ = std::io::stderr().write_all(l.as_bytes());
}

struct RelayHandler<'a> {
    shared: &'a Shared,
    peer: IpAddr,
    sender: Option<String>,
    recipients: Vec<Address>,
    body: Vec<u8>,
    too_big: bool,
    /// Set by the driver to end a failed DATA inside mailin (see [`serve`]).
    resetting: Rc<Cell<bool>>,
    /// Set by the driver to restore the login after RSET inside mailin (see [`serve`]).
    reauthing: Rc<Cell<bool>>,
}

impl RelayHandler<'_> {
    fn answer(&mut self) -> Response {
        let body = std::mem::take(&mut self.body);
        let sender = self.sender.take();
        let recipients = std::mem::take(&mut self.recipients);
        let size = body.len();
        if std::mem::take(&mut self.too_big) {
            return Response::custom(
                552,
                format!(
                    "5.3.4 Message too big: this relay takes at most {} bytes (max-message-size)",
                    self.shared.relay.max_message_size
                ),
            );
        }
        let settings = self.shared.pool.settings();
        let routed = NotificationConfig::load(settings)
            .map_err(|e| NoRoute(e.to_string()))
            .and_then(|c| {
                route::route(&c, &self.shared.relay, sender.as_deref(), &recipients, body)
            });
        let who = sender.as_deref().unwrap_or("<>");
        let routed = match routed {
            Ok(r) => r,
            Err(NoRoute(why)) => {
                log(&format!("from {who}: no target ({why}); answered 451"));
                return reply(451, "4.3.5", &format!("oxnotify-relay: {why}"));
            }
        };
        let target = routed.target.clone();
        let started = std::time::Instant::now();
        let result = self
            .shared
            .pool
            .relay(&target, routed.message, self.shared.relay.accept);
        let response = match &result {
            Ok(Delivery::Sent) => {
                reply(250, "2.0.0", &format!("relayed through target '{target}'"))
            }
            Ok(Delivery::Queued { id, .. }) => reply(
                250,
                "2.0.0",
                &format!("queued in the outbox of target '{target}' as {id}"),
            ),
            Err(e) => refusal(e),
        };
        log(&format!(
            "from {who} via target '{target}' ({} recipient(s), {size} bytes, {} ms): {}",
            recipients.len(),
            started.elapsed().as_millis(),
            String::from_utf8_lossy(&response.buffer().unwrap_or_default()).trim_end()
        ));
        response
    }
}

/// `code enhanced text`, the text one line and bounded.
fn reply(code: u16, enhanced: &str, text: &str) -> Response {
    let text = notify_core::redact::one_line(text, 400);
    Response::custom(code, format!("{enhanced} {text}"))
}

/// The answer for a relay error: the upstream's 5xx for a message refused for good, else 4xx.
fn refusal(e: &Error) -> Response {
    let text = e.to_string();
    match e {
        Error::Smtp {
            code: Some(code),
            step: SmtpStep::Sender | SmtpStep::Recipient | SmtpStep::Data,
            transient: false,
            ..
        } if (500..600).contains(code) => reply(*code, "5.0.0", &format!("upstream: {text}")),
        Error::Smtp {
            code: Some(code), ..
        } if (400..500).contains(code) => reply(*code, "4.0.0", &format!("upstream: {text}")),
        _ => reply(451, "4.4.0", &format!("not relayed yet: {text}")),
    }
}

impl Handler for RelayHandler<'_> {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        Response::custom(250, "OK".into())
    }

    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.sender = (from != NULL_SENDER).then(|| from.to_string());
        self.recipients.clear();
        self.body.clear();
        self.too_big = false;
        Response::custom(250, "2.1.0 Ok".into())
    }

    fn rcpt(&mut self, to: &str) -> Response {
        if self.recipients.len() >= MAX_RECIPIENTS {
            return Response::custom(452, "4.5.3 Too many recipients".into());
        }
        match Address::from_str(to) {
            Ok(a) => {
                self.recipients.push(a);
                Response::custom(250, "2.1.5 Ok".into())
            }
            Err(_) => Response::custom(501, "5.1.3 Bad recipient address syntax".into()),
        }
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.body.len() + buf.len() > self.shared.relay.max_message_size {
            // keep reading to the end of DATA, then refuse (552)
            self.too_big = true;
            self.body.clear();
        } else if !self.too_big {
            self.body.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if self.resetting.get() {
            return Response::custom(250, "reset".into());
        }
        self.answer()
    }

    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        if self.reauthing.get() {
            return Response::custom(235, "restored".into());
        }
        if self.shared.relay.admits(user, password) {
            Response::custom(235, "2.7.0 Authentication successful".into())
        } else {
            log(&format!(
                "client {}: AUTH refused for user '{user}'",
                self.peer
            ));
            Response::custom(535, "5.7.8 Authentication credentials invalid".into())
        }
    }
}

/// Serve one client until QUIT, a dropped connection or [`IDLE_TIMEOUT`] of silence.
pub fn serve(stream: TcpStream, shared: &Shared) {
    let peer = match stream.peer_addr() {
        Ok(a) => a.ip(),
        Err(_) => return,
    };
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut out = stream;
    let mut input = BufReader::new(read_half);
    let resetting = Rc::new(Cell::new(false));
    let reauthing = Rc::new(Cell::new(false));
    let handler = RelayHandler {
        shared,
        peer,
        sender: None,
        recipients: Vec::new(),
        body: Vec::new(),
        too_big: false,
        resetting: resetting.clone(),
        reauthing: reauthing.clone(),
    };
    let mut builder = SessionBuilder::new(shared.hostname.clone());
    builder
        .enable_auth(AuthMechanism::Plain)
        // loopback only (see config::RelayConfig::listen): the password never leaves the host
        .insecure_enable_plaintext_auth();
    let mut session = builder.build(peer, handler);
    if session.greeting().write_to(&mut out).is_err() {
        return;
    }
    let mut in_data = false;
    let mut authenticated = false;
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        match Read::by_ref(&mut input)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with(b"\n") {
            // a line longer than MAX_LINE, or EOF inside one
            let _ = Response::custom(500, "5.5.2 Line too long".into()).write_to(&mut out);
            return;
        }
        if !in_data {
            null_sender(&mut line);
        }
        let ending_data = in_data && line == b".\r\n";
        let rset = !in_data && line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"RSET");
        let response = session.process(&line);
        if response.code == 235 {
            authenticated = true;
        }
        if rset && authenticated && !response.is_error {
            // mailin forgets the login on RSET (it goes back to "AUTH required"), while RFC
            // 5321 keeps it, and Postfix sends RSET before it reuses a cached connection:
            // restore the login inside mailin (our handler accepts it without a password)
            reauthing.set(true);
            let _ = session.process(b"AUTH PLAIN AHJlbGF5AHJlbGF5\r\n");
            reauthing.set(false);
        }
        if response.code == 354 {
            in_data = true;
        }
        if ending_data {
            in_data = false;
            if response.is_error {
                // mailin stays in its DATA state after a refused message: end it there
                // (our handler answers 250 without sending) so the client may go on
                resetting.set(true);
                let _ = session.process(b".\r\n");
                resetting.set(false);
            }
        }
        match response.action {
            Action::NoReply => {}
            Action::Reply => {
                if response.write_to(&mut out).is_err() {
                    return;
                }
            }
            Action::Close | Action::UpgradeTls => {
                let _ = response.write_to(&mut out);
                return;
            }
        }
    }
}

/// `MAIL FROM:<>` as mailin can parse it.
fn null_sender(line: &mut Vec<u8>) {
    let upper = line.to_ascii_uppercase();
    if upper.starts_with(b"MAIL FROM:<>") {
        let mut fixed = b"MAIL FROM:<".to_vec();
        fixed.extend_from_slice(NULL_SENDER.as_bytes());
        fixed.extend_from_slice(&line[11..]);
        *line = fixed;
    }
}
