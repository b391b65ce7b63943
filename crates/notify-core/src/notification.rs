//! A notification and how it becomes an e-mail.
//!
//! Message hygiene (RFC 5322): every line break in a body becomes CRLF (no bare CR or LF
//! reaches the wire), no header line exceeds 998 bytes (a subject with a word too long to
//! fold is sent as RFC 2047 encoded words on folded lines), and the recipients are capped
//! ([`MAX_RECIPIENTS`]) and added in linear time.

use crate::config::smtp::SmtpTarget;
use crate::config::validate;
use crate::error::{Error, Result};
use base64::Engine;
use lettre::address::{Address, Envelope};
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::config::smtp::MAX_RECIPIENTS;

/// Longest word of a subject that lettre may write as it is; a longer one cannot be folded.
const MAX_SUBJECT_WORD: usize = 70;

/// Bytes of subject per RFC 2047 encoded word: 42 bytes are 56 base64 characters, and with
/// `=?utf-8?b?` and `?=` the word stays within 75 characters (RFC 2047 section 2).
const ENCODED_WORD_BYTES: usize = 42;

/// How serious a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    #[default]
    Info,
    /// Worth a look.
    Notice,
    /// Something may go wrong.
    Warning,
    /// Something went wrong.
    Error,
    /// Not classified.
    Unknown,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Unknown => "unknown",
        }
    }
}

/// A notification to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Notification {
    /// Becomes the Subject (one line).
    pub title: String,
    /// Plain-text body.
    pub body: String,
    /// Optional HTML body (sent as multipart/alternative with the text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html_body: Option<String>,
    /// Severity (also in the `X-OxNotify-Severity` header).
    #[serde(default)]
    pub severity: Severity,
    /// Metadata (hostname, job id, ...), listed below the body.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// E-mail addresses of the host stack's users, for targets with `mailto-user` (user id ->
    /// address), as the host's resolver returned them. `None`: the host has no resolver, and
    /// a target with `mailto-user` fails with an error saying so. Users missing from the map
    /// (no address configured) are skipped, as proxmox-notify does; no recipient at all is
    /// an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_emails: Option<BTreeMap<String, String>>,
}

#[derive(Clone)]
struct SeverityHeader(Severity);

impl Header for SeverityHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-OxNotify-Severity")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(SeverityHeader(match s {
            "notice" => Severity::Notice,
            "warning" => Severity::Warning,
            "error" => Severity::Error,
            "unknown" => Severity::Unknown,
            _ => Severity::Info,
        }))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.as_str().to_string())
    }
}

/// The Subject; see [`subject_value`].
#[derive(Clone)]
struct FoldedSubject(String);

impl Header for FoldedSubject {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Subject")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(FoldedSubject(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        subject_value(&self.0)
    }
}

/// The To header: the recipients separated by `,` and a fold, one per line.
#[derive(Clone)]
struct FoldedTo(Vec<String>);

impl Header for FoldedTo {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("To")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(FoldedTo(
            s.split(',').map(|a| a.trim().to_string()).collect(),
        ))
    }

    fn display(&self) -> HeaderValue {
        // addresses are validated (no blanks, no control characters, at most 254 bytes)
        HeaderValue::dangerous_new_pre_encoded(
            Self::name(),
            self.0.join(", "),
            self.0.join(",\r\n "),
        )
    }
}

/// lettre folds a subject at blanks and encodes non-ASCII words, but writes an ASCII word
/// as it is, however long. A subject with a word longer than [`MAX_SUBJECT_WORD`] is
/// therefore sent as base64 encoded words of [`ENCODED_WORD_BYTES`] bytes each, one per
/// folded line (the blanks between encoded words are not part of the decoded text).
fn subject_value(title: &str) -> HeaderValue {
    if title
        .split([' ', '\t'])
        .all(|w| w.len() <= MAX_SUBJECT_WORD)
    {
        return HeaderValue::new(FoldedSubject::name(), title.to_string());
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut words = Vec::with_capacity(title.len() / ENCODED_WORD_BYTES + 1);
    let mut rest = title;
    while !rest.is_empty() {
        let mut end = rest.len().min(ENCODED_WORD_BYTES);
        // never split a character
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (chunk, tail) = rest.split_at(end);
        words.push(format!("=?utf-8?b?{}?=", b64.encode(chunk)));
        rest = tail;
    }
    HeaderValue::dangerous_new_pre_encoded(
        FoldedSubject::name(),
        title.to_string(),
        words.join("\r\n "),
    )
}

/// Every line break (CRLF, a bare CR, a bare LF) as LF; lettre writes LF as CRLF.
fn normalize_newlines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    out
}

impl Notification {
    /// Reject what would break or inject into the message: CR/LF or other control characters
    /// in the title (a header) and in field names/values.
    pub fn validate(&self) -> Result<()> {
        validate::no_control_chars(&self.title).map_err(|m| Error::param("title", m))?;
        if self.title.trim().is_empty() {
            return Err(Error::param("title", "must not be empty"));
        }
        for (k, v) in &self.fields {
            if k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(Error::param(
                    "fields",
                    format!(
                        "field name '{}' must be letters, digits, '-', '_' or '.'",
                        k.escape_debug()
                    ),
                ));
            }
            validate::no_control_chars(v)
                .map_err(|m| Error::param("fields", format!("{k}: {m}")))?;
        }
        Ok(())
    }

    fn text(&self) -> String {
        let mut text = normalize_newlines(&self.body);
        if !self.fields.is_empty() {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("\n--\n");
            for (k, v) in &self.fields {
                text.push_str(&format!("{k}: {v}\n"));
            }
        }
        text
    }

    /// `mailto` plus the resolved `mailto-user` addresses of `target`, without duplicates.
    pub fn recipients<'a>(&'a self, target: &'a SmtpTarget) -> Result<Vec<&'a str>> {
        let mut out: Vec<&str> = target.mailto.iter().map(String::as_str).collect();
        let mut seen: std::collections::HashSet<&str> = out.iter().copied().collect();
        if !target.mailto_user.is_empty() {
            let Some(emails) = &self.user_emails else {
                return Err(Error::param(
                    "mailto-user",
                    format!(
                        "target '{}' sends to users ({}), but no user e-mail resolver is \
                         registered: the host stack must register one \
                         (OxNotify::Core::set_user_email_resolver), or use mailto",
                        target.name,
                        target.mailto_user.join(", ")
                    ),
                ));
            };
            for user in &target.mailto_user {
                if let Some(addr) = emails.get(user) {
                    validate::email(addr).map_err(|m| {
                        Error::param(
                            "mailto-user",
                            format!("target '{}': user {user}: {m}", target.name),
                        )
                    })?;
                    if seen.insert(addr.as_str()) {
                        out.push(addr);
                    }
                }
            }
        }
        if out.is_empty() {
            return Err(Error::param(
                "mailto-user",
                format!(
                    "target '{}' has no recipient: none of its users ({}) has an e-mail address; \
                     set one for them, or add mailto",
                    target.name,
                    target.mailto_user.join(", ")
                ),
            ));
        }
        Ok(out)
    }

    /// The e-mail for `target` (From: author <from-address>, To: mailto and mailto-user).
    pub fn to_message(&self, target: &SmtpTarget) -> Result<Message> {
        self.validate()?;
        let fail = |m: String| Error::Smtp {
            target: target.name.clone(),
            step: crate::error::SmtpStep::Message,
            message: m,
            code: None,
            transient: false,
        };
        let from_addr: Address = target
            .from_address
            .parse()
            .map_err(|e| fail(format!("from-address: {e}")))?;
        // one To header, one recipient per folded line, and the envelope given directly:
        // lettre's `to()` re-parses the header built so far on every call (8,000 recipients
        // took 23 s) and writes all recipients on one line (100 long addresses: 6.7 KB)
        let to: Vec<Address> = self
            .recipients(target)?
            .into_iter()
            .map(|m| m.parse().map_err(|e| fail(format!("mailto {m}: {e}"))))
            .collect::<Result<_>>()?;
        let envelope = Envelope::new(Some(from_addr.clone()), to.clone())
            .map_err(|e| fail(format!("envelope: {e}")))?;
        let builder = Message::builder()
            .from(Mailbox::new(target.author.clone(), from_addr))
            .header(FoldedTo(to.iter().map(|a| a.to_string()).collect()))
            .envelope(envelope)
            .header(FoldedSubject(self.title.clone()))
            .header(SeverityHeader(self.severity))
            .user_agent(concat!("oxnotify/", env!("CARGO_PKG_VERSION")).to_string());
        let message = match &self.html_body {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                self.text(),
                normalize_newlines(html),
            )),
            None => builder.body(self.text()),
        };
        message.map_err(|e| fail(e.to_string()))
    }
}
