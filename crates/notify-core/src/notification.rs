//! A notification and how it becomes an e-mail.

use crate::config::smtp::SmtpTarget;
use crate::config::validate;
use crate::error::{Error, Result};
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
        let mut text = self.body.clone();
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
                    if !out.contains(&addr.as_str()) {
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
        let from_addr = target
            .from_address
            .parse()
            .map_err(|e| fail(format!("from-address: {e}")))?;
        let mut builder = Message::builder()
            .from(Mailbox::new(target.author.clone(), from_addr))
            .subject(self.title.clone())
            .header(SeverityHeader(self.severity))
            .user_agent(concat!("oxnotify/", env!("CARGO_PKG_VERSION")).to_string());
        for to in self.recipients(target)? {
            builder = builder.to(Mailbox::new(
                None,
                to.parse().map_err(|e| fail(format!("mailto {to}: {e}")))?,
            ));
        }
        let message = match &self.html_body {
            Some(html) => {
                builder.multipart(MultiPart::alternative_plain_html(self.text(), html.clone()))
            }
            None => builder.body(self.text()),
        };
        message.map_err(|e| fail(e.to_string()))
    }
}
