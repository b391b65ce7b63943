//! Typed errors of the library. Every message names the target (where there is one) and says
//! what to do; none ever contains a secret (tests check this).

use std::path::PathBuf;

/// Which step of an SMTP delivery failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpStep {
    /// TCP connect, greeting or EHLO.
    Connect,
    /// TLS handshake (implicit TLS or STARTTLS).
    Tls,
    /// SMTP AUTH.
    Auth,
    /// MAIL FROM.
    Sender,
    /// RCPT TO.
    Recipient,
    /// DATA and the message itself.
    Data,
    /// Building the message from the notification.
    Message,
}

impl std::fmt::Display for SmtpStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SmtpStep::Connect => "connect",
            SmtpStep::Tls => "TLS",
            SmtpStep::Auth => "authentication",
            SmtpStep::Sender => "sender (MAIL FROM)",
            SmtpStep::Recipient => "recipient (RCPT TO)",
            SmtpStep::Data => "data",
            SmtpStep::Message => "message",
        })
    }
}

/// Errors returned by notify-core. [`Error::http_code`] maps each to the HTTP-style status an
/// API handler returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file is malformed or a value is invalid (400).
    #[error("{}", config_message(.file, *.line, .section.as_deref(), .key.as_deref(), .message))]
    Config {
        /// The file the problem is in.
        file: PathBuf,
        /// 1-based line number, where known.
        line: Option<usize>,
        /// The section (target) name, where known.
        section: Option<String>,
        /// The offending key, where known.
        key: Option<String>,
        /// What is wrong and what to do.
        message: String,
    },
    /// A parameter given by a caller (API, CLI) is invalid (400).
    #[error("invalid parameter '{param}': {message}")]
    Parameter {
        /// Parameter name.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// The named target does not exist (404).
    #[error("notification target '{0}' does not exist")]
    NotFound(String),
    /// Creating a target whose name is taken (400, as PVE does).
    #[error("notification target '{0}' already exists")]
    AlreadyExists(String),
    /// The config changed since the caller read it (409).
    #[error("configuration was modified by someone else (digest mismatch): reload and try again")]
    DigestMismatch,
    /// The target has no usable OAuth2 authorization: the admin must authorize again (400).
    #[error("target '{target}': {reason}; re-authorize the target (Authorize button, or `oxnotify authorize {target}`)")]
    NeedsReauthorization {
        /// Target name.
        target: String,
        /// Why (e.g. "the refresh token was revoked or has expired (invalid_grant)").
        reason: String,
    },
    /// Talking to the token endpoint failed: unreachable, timeout, bad answer (502).
    #[error("{}: {message}", token_context(.target.as_deref()))]
    Token {
        /// Target name, if the request was for a configured target.
        target: Option<String>,
        /// What happened and what to do.
        message: String,
    },
    /// An SMTP delivery failed at `step` (502).
    #[error("target '{target}': SMTP {step} failed: {message}")]
    Smtp {
        /// Target name.
        target: String,
        /// The step that failed.
        step: SmtpStep,
        /// Server reply or local error, never a credential.
        message: String,
        /// SMTP reply code, when the server gave one.
        code: Option<u16>,
    },
    /// Reading or writing a file failed (500).
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A state file exists but cannot be parsed (500); it is left untouched.
    #[error("state file {} is corrupt ({message}); it was left untouched: fix or remove it and re-authorize", .path.display())]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// Parser message (never contains file content).
        message: String,
    },
}

fn config_message(
    file: &std::path::Path,
    line: Option<usize>,
    section: Option<&str>,
    key: Option<&str>,
    message: &str,
) -> String {
    let mut out = file.display().to_string();
    if let Some(line) = line {
        out.push_str(&format!(" line {line}"));
    }
    if let Some(section) = section {
        out.push_str(&format!(", target '{section}'"));
    }
    if let Some(key) = key {
        out.push_str(&format!(", key '{key}'"));
    }
    out.push_str(": ");
    out.push_str(message);
    out
}

fn token_context(target: Option<&str>) -> String {
    match target {
        Some(t) => format!("target '{t}': OAuth2 token request failed"),
        None => "OAuth2 token request failed".to_string(),
    }
}

impl Error {
    /// The HTTP-style status code an API handler should answer with.
    pub fn http_code(&self) -> u16 {
        match self {
            Error::Config { .. }
            | Error::Parameter { .. }
            | Error::AlreadyExists(_)
            | Error::NeedsReauthorization { .. } => 400,
            Error::NotFound(_) => 404,
            Error::DigestMismatch => 409,
            Error::Token { .. } | Error::Smtp { .. } => 502,
            Error::Io { .. } | Error::CorruptState { .. } => 500,
        }
    }

    /// Shorthand for an invalid caller parameter.
    pub fn param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Parameter {
            param: param.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
